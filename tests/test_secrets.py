"""Redaction of URLs, DSNs and messages (ragkit._secrets), and that the remote clients show no secret."""

from __future__ import annotations

import json
import logging
import socket
import string
import traceback

import pytest
from fake_api import FakeAPI, Reply
from hypothesis import given, settings
from hypothesis import strategies as st

from ragkit._http import HTTPClient, public_url
from ragkit._secrets import (
    DSN_PLACEHOLDER,
    is_secret_name,
    redact_dsn,
    redact_text,
    redact_url,
    url_secrets,
)
from ragkit.embedders import OpenAIEmbedder
from ragkit.errors import AuthenticationError, ConfigError, RemoteError, UnavailableError
from ragkit.rerankers import RemoteReranker

# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://me:secret@example.com/v1", "https://example.com/v1"),
        ("https://ghp_token123@github.com/x", "https://github.com/x"),  # a username alone is often a token
        ("http://user:pw@[::1]:8080/v1", "http://[::1]:8080/v1"),
        ("http://[2001:db8::1]:8000/v1?x=1", "http://[2001:db8::1]:8000/v1?x=1"),
        ("me:secret@example.com/v1", "example.com/v1"),  # no scheme
        ("//me:secret@example.com/v1", "//example.com/v1"),  # scheme-relative
        ("example.com:8000/v1?api_key=k1", "example.com:8000/v1?api_key=***"),
        ("http://u:p#w@host/v1", "http://host/v1"),  # a raw '#' in the password
        ("http://u:p?w@host/v1", "http://host/v1"),  # a raw '?' in the password
        ("http://u:pa/ss@host/v1", "http://host/v1"),  # a raw '/' in the password
        ("http://u:p@ss@host/v1", "http://host/v1"),  # a raw '@' in the password
        ("https://host/users/@me", "https://host/users/@me"),  # an '@' in the path is no userinfo
        ("https://host/v1#access_token=t1&state=s", "https://host/v1#access_token=***&state=s"),
        ("https://host/v1#section-2", "https://host/v1#section-2"),
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert public_url(url) == expected


@pytest.mark.parametrize(
    "name",
    [
        "api-key",
        "api_key",
        "apikey",
        "Api-Key",
        "Api%2DKey",
        "key",
        "subscription-key",
        "access_token",
        "token",
        "id_token",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Goog-Signature",
        "sig",
        "code",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "pass",
        "auth",
        "authorization",
        "PHPSESSID",
        "session_id",
        "jwt",
    ],
)
def test_credential_parameters_are_masked(name):
    url = f"https://h.example/v1?api-version=2024-02-01&{name}=S3CRET-VALUE&model=m"
    assert redact_url(url) == f"https://h.example/v1?api-version=2024-02-01&{name}=***&model=m"
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["api-version", "model", "design", "signal", "format", "x", "region"])
def test_other_parameters_are_kept(name):
    url = f"https://h.example/v1?{name}=visible"
    assert redact_url(url) == url
    assert not is_secret_name(name)


def test_redact_url_never_raises_and_shows_no_unparsable_secret():
    for odd in [
        "http://[::1/",
        "http://u:pw@[::1",
        "http://h:notaport/v1",
        "?",
        "#",
        "@",
        "http://@/",
        "a" * 5000,
    ]:
        assert isinstance(redact_url(odd), str)
    assert "S3CRET" not in redact_url("http://u:S3CRET@[::1")
    assert redact_url(None) == "None"  # type: ignore[arg-type]

    class Odd:
        def __str__(self):
            raise RuntimeError("no")

    assert redact_url(Odd()) == "<redacted url>"  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_redact_url_accepts_any_text(text):
    assert isinstance(redact_url(text), str)
    assert isinstance(redact_dsn(text), str)


_PASSWORD = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + "!$%&'()*+,;=:#?[]~-._ @"),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(user=st.text(alphabet=string.ascii_letters + string.digits + "-._~", max_size=10), password=_PASSWORD)
def test_no_password_survives(user, password):
    assert redact_url(f"https://{user}:{password}@example.com/v1") == "https://example.com/v1"
    assert redact_dsn(f"postgresql://{user}:{password}@db:5432/rag") == (
        f"postgresql://{user}@db:5432/rag" if user else "postgresql://db:5432/rag"
    )


def test_url_secrets_and_redact_text():
    assert url_secrets("https://me:p%40ss@h/?api_key=k1&v=2#token=t2") == ["me", "p%40ss", "p@ss", "k1", "t2"]
    assert url_secrets("https://h/v1") == []
    assert redact_text("key sk-abc123, again sk-abc123", ["sk-abc123"]) == "key ***, again ***"
    # longest first: a secret that contains another is replaced whole
    assert redact_text("x sk-abc123456 y", ["sk-abc", "sk-abc123456"]) == "x *** y"
    # short strings are not secrets worth garbling a message for; None and "" are ignored
    assert redact_text("OK pw", ["pw", None, ""]) == "OK pw"
    assert redact_text("OK pw12", ["pw12"], min_length=1) == "OK ***"


# -- DSNs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://app:pw@db:5432/rag?sslmode=require&sslpassword=x&password=y",
            "postgresql://app@db:5432/rag?sslmode=require",
        ),
        ("postgres://app@db/rag", "postgres://app@db/rag"),
        ("postgresql://:pw@db/rag", "postgresql://db/rag"),
        ("postgresql://app:p@ss@h1:5432,h2:5433/rag", "postgresql://app@h1:5432,h2:5433/rag"),
        (
            "postgresql:///rag?host=/var/run/postgresql&password=y",
            "postgresql:///rag?host=/var/run/postgresql",
        ),
        ("postgresql://db/rag?pass%77ord=y&application_name=x", "postgresql://db/rag?application_name=x"),
        ("host=db user=app password='s 3cret' sslpassword=x", "host=db user=app"),
        (r"host=db password='it\'s' application_name='my app'", "host=db application_name='my app'"),
        (r"host = db   user=app\ x password=a\ b dbname=rag", r"host=db user='app x' dbname=rag"),
        ("host=db passfile=/home/app/.pgpass", "host=db passfile=/home/app/.pgpass"),  # a path, kept
        ("dbname='host=other password=inner' user=u", "dbname='host=other' user=u"),  # libpq expands it
        ("dbname=postgresql://u:inner@h/db", "dbname=postgresql://u@h/db"),
        ("password=only", ""),
        ("", ""),
    ],
)
def test_redact_dsn(dsn, expected):
    assert redact_dsn(dsn) == expected


@pytest.mark.parametrize(
    "dsn", ["host=db password='unterminated s3cret", "just-s3cret-words", "host=db =s3cret", "host"]
)
def test_unparsable_dsn_gives_the_placeholder(dsn):
    assert redact_dsn(dsn) == DSN_PLACEHOLDER


def test_redacted_dsn_means_the_same_to_libpq():
    conninfo = pytest.importorskip("psycopg.conninfo")
    for dsn in [
        r"host=db port=5433 user='app x' password='s 3\'cret' dbname=rag sslpassword=k "
        r"application_name='a\\b'",
        "postgresql://app:pw@db:5433/rag?sslmode=require&password=y&connect_timeout=3",
    ]:
        want = {k: v for k, v in conninfo.conninfo_to_dict(dsn).items() if "password" not in k}
        assert conninfo.conninfo_to_dict(redact_dsn(dsn)) == want


# -- what the remote clients show -------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _everything(exc: BaseException) -> str:
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc)) + str(getattr(exc, "body", ""))


def test_connection_refused_message_has_no_secret(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    url = f"http://user:pw@127.0.0.1:{_closed_port()}/v1?api-key=K"
    emb = OpenAIEmbedder("m", base_url=url, api_key="sk-arg-secret", max_retries=1, backoff=0.001, dim=8)
    with caplog.at_level(logging.INFO, logger="ragkit"), pytest.raises(UnavailableError) as info:
        emb.embed_documents(["a"])
    message = str(info.value)
    assert "could not connect" in message and "api-key=***" in message
    assert "pw" not in message and "K" not in message
    text = _everything(info.value) + caplog.text + repr(emb) + json.dumps(emb.spec())
    for secret in ("user:pw", "api-key=K", "sk-arg-secret", "sk-env-secret"):
        assert secret not in text
    assert emb.spec()["base_url"].endswith("/v1?api-key=***")


def test_redirect_and_echoing_server_show_no_secret():
    with FakeAPI() as api:
        port = api.url.rsplit(":", 1)[1]
        base = f"http://user:pw-S3CRET@127.0.0.1:{port}/v1?api-version=1&api-key=KEY-S3CRET"
        emb = OpenAIEmbedder("m", base_url=base, api_key="sk-arg-S3CRET", max_retries=0, dim=8)
        api.script(
            Reply(status=307, headers={"location": "http://u:pw-S3CRET@evil.example/x?api-key=KEY-S3CRET"})
        )
        with pytest.raises(RemoteError) as info:
            emb.embed_documents(["a"])
        assert "redirected to http://evil.example/x?api-key=***" in str(info.value)
        assert "S3CRET" not in _everything(info.value)
        # the path goes before the query, which is kept
        assert api.requests[-1].path == "/v1/embeddings?api-version=1&api-key=KEY-S3CRET"

        echo = {"error": {"message": "bad key sk-arg-S3CRET for /v1?api-key=KEY-S3CRET", "type": "auth"}}
        api.script(Reply(status=401, json=echo))
        with pytest.raises(AuthenticationError) as info:
            emb.embed_documents(["a"])
        assert "bad key ***" in str(info.value)
        assert "S3CRET" not in _everything(info.value)

        api.script(Reply(status=200, json={"data": "sk-arg-S3CRET"}))
        with pytest.raises(RemoteError) as info:
            emb.embed_documents(["a"])
        assert "S3CRET" not in _everything(info.value)

        api.script(Reply(status=200, body="not json: sk-arg-S3CRET"))
        with pytest.raises(RemoteError) as info:
            emb.embed_documents(["a"])
        assert "not valid JSON" in str(info.value) and "S3CRET" not in _everything(info.value)

        rr = RemoteReranker("r", provider="tei", base_url=base, api_key="sk-arg-S3CRET", max_retries=0)
        api.script(Reply(status=200, json={"results": "sk-arg-S3CRET"}))
        with pytest.raises(RemoteError) as info:
            rr.score("q", ["d"])
        assert "S3CRET" not in _everything(info.value) + repr(rr) + json.dumps(rr.spec())


def test_http_client_repr_and_urls():
    client = HTTPClient("https://me:pw-S3CRET@h.example/v1/?key=K-S3CRET", provider="p", api_key="sk-S3CRET")
    assert "S3CRET" not in repr(client)
    assert client.url("/embeddings") == "https://me:pw-S3CRET@h.example/v1/embeddings?key=K-S3CRET"
    assert client.public_url("/embeddings") == "https://h.example/v1/embeddings?key=***"
    assert client.redact("x sk-S3CRET pw-S3CRET K-S3CRET") == "x *** *** ***"


def test_bad_scheme_message_is_redacted():
    with pytest.raises(ConfigError) as info:
        OpenAIEmbedder("m", base_url="ftp://me:pw-S3CRET@h/v1?api_key=K-S3CRET", api_key="k")
    assert "S3CRET" not in str(info.value) and "ftp://h/v1?api_key=***" in str(info.value)


def test_inline_provider_presets_are_redacted_in_specs():
    from ragkit.providers import Provider

    mine = Provider("mine", "http://me:pw-S3CRET@h.example/v1?api-key=K-S3CRET", key_required=False)
    emb = OpenAIEmbedder("m", provider=mine, dim=8)
    rr = RemoteReranker(
        "r", provider=Provider("mine", mine.base_url, path="/rerank", api="tei", key_required=False)
    )
    for client in (emb, rr):
        text = json.dumps(client.spec()) + repr(client)
        assert "S3CRET" not in text
        assert client.spec()["provider"]["base_url"] == "http://h.example/v1?api-key=***"
    assert Provider(**mine.to_dict()).to_dict() == mine.to_dict()
