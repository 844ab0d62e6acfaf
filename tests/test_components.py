"""The closed component registry (ragkit.components): what a saved directory may name, and the host rule."""

from __future__ import annotations

import builtins
import importlib
import json
import logging
import os
import subprocess
import sys

import pytest
from fake_api import FakeAPI

from ragkit import components
from ragkit.chunking import RecursiveChunker
from ragkit.components import ROLES, build_component, component_entry, register_component
from ragkit.embedders import OpenAIEmbedder
from ragkit.errors import ConfigError
from ragkit.providers import EMBEDDING_PROVIDERS, RERANK_PROVIDERS
from ragkit.rerankers import RemoteReranker

KEY_VARS = sorted(
    {v for p in (*EMBEDDING_PROVIDERS.values(), *RERANK_PROVIDERS.values()) for v in p.key_env}
    | {"AWS_SECRET_ACCESS_KEY"}
)
BUILTIN_PATHS = {
    "ragkit.embedders.remote.OpenAIEmbedder": "OpenAIEmbedder",
    "ragkit.embedders.transformers.Qwen3Embedder": "Qwen3Embedder",
    "ragkit.embedders.transformers.TransformersEmbedder": "TransformersEmbedder",
    "ragkit.rerankers.qwen3.Qwen3Reranker": "Qwen3Reranker",
    "ragkit.rerankers.remote.RemoteReranker": "RemoteReranker",
    "ragkit.chunking.RecursiveChunker": "RecursiveChunker",
    "ragkit.index.faiss.FaissIndex": "FaissIndex",
}
ROLE_OF = {
    "OpenAIEmbedder": "embedder",
    "Qwen3Embedder": "embedder",
    "TransformersEmbedder": "embedder",
    "Qwen3Reranker": "reranker",
    "RemoteReranker": "reranker",
    "RecursiveChunker": "chunker",
    "FaissIndex": "index",
}


@pytest.fixture(scope="module")
def api():
    with FakeAPI() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(api, monkeypatch):
    api.reset()
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(components, "_USER", {})


def _auth_headers(api) -> list[str | None]:
    return [r.headers.get("authorization") for r in api.requests]


# -- what a directory cannot name ---------------------------------------------------------------------

DANGEROUS = ["ragkit.cli.main", "os.system", "builtins.eval", "subprocess.Popen", "ragkit.pipeline.Pipeline"]


@pytest.fixture
def sentinels(monkeypatch):
    """Every dangerous callable replaced by one that records a call, and imports recorded."""
    calls: list[str] = []
    for module, attr in (("os", "system"), ("builtins", "eval"), ("subprocess", "Popen")):
        monkeypatch.setattr(importlib.import_module(module), attr, lambda *a, _n=attr, **k: calls.append(_n))
    real = importlib.import_module

    def recording(name, *args, **kwargs):
        calls.append(f"import {name}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(components.importlib, "import_module", recording)
    yield calls
    monkeypatch.setattr(components.importlib, "import_module", real)


@pytest.mark.parametrize("path", DANGEROUS)
@pytest.mark.parametrize("role", ROLES)
def test_arbitrary_paths_are_refused_and_never_imported(path, role, sentinels):
    for entry in ({"class": path, "spec": {"command": "touch /tmp/pwned"}}, {"component": path, "spec": {}}):
        with pytest.raises(ConfigError) as info:
            build_component(entry, role=role)
        message = str(info.value)
        assert path in message and f"Pipeline.load(path, {role}=...)" in message
        assert "register_component" in message
    assert sentinels == []


def test_a_refused_entry_imports_nothing_in_a_fresh_interpreter():
    code = (
        "import sys\n"
        "from ragkit.components import build_component\n"
        "from ragkit.errors import ConfigError\n"
        "for path in ('ragkit.cli.main', 'ragkit.serve.cli.serve_main', 'os.system'):\n"
        "    try:\n"
        "        build_component({'class': path, 'spec': {}}, role='chunker')\n"
        "    except ConfigError:\n"
        "        pass\n"
        "heavy = ('ragkit.cli', 'ragkit.serve', 'ragkit.embedders.remote', 'httpx', 'torch', 'faiss')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "entry",
    [
        None,
        "ragkit.chunking.RecursiveChunker",
        ["RecursiveChunker"],
        {},
        {"spec": {}},
        {"component": "RecursiveChunker", "class": "ragkit.chunking.RecursiveChunker", "spec": {}},
        {"component": "RecursiveChunker", "spec": {}, "extra": 1},
        {"component": ["RecursiveChunker"], "spec": {}},
        {"component": "RecursiveChunker", "spec": ["chunk_size", 10]},
        {"component": "RecursiveChunker", "spec": {"class": 3}},
        {"class": 42, "spec": {}},
    ],
)
def test_malformed_entries_are_refused(entry):
    with pytest.raises(ConfigError, match="cannot rebuild the saved chunker"):
        build_component(entry, role="chunker")


def test_role_mismatch_is_refused():
    with pytest.raises(ConfigError, match="registered as a chunker, not an embedder"):
        build_component({"component": "RecursiveChunker", "spec": {}}, role="embedder")
    with pytest.raises(ConfigError, match="registered as an embedder, not a chunker"):
        build_component(
            {"class": "ragkit.embedders.remote.OpenAIEmbedder", "spec": {"model": "m"}}, role="chunker"
        )
    with pytest.raises(ConfigError, match="registered as an index, not a reranker"):
        build_component({"component": "FaissIndex", "spec": {}}, role="reranker")
    with pytest.raises(ConfigError, match="role must be one of"):
        build_component({"component": "FaissIndex", "spec": {}}, role="tokenizer")


@pytest.mark.parametrize(
    ("entry", "role"),
    [
        ({"component": "RecursiveChunker", "spec": {"chunk_size": 10, "exec": "x"}}, "chunker"),
        ({"component": "FaissIndex", "spec": {"kind": "flat", "metric": "l2"}}, "index"),
        (
            {"component": "OpenAIEmbedder", "spec": {"model": "m", "provider": "tei", "hook": "os.system"}},
            "embedder",
        ),
        (
            {"component": "RemoteReranker", "spec": {"model": "m", "provider": "tei", "headers": {}}},
            "reranker",
        ),
    ],
)
def test_unknown_spec_keys_are_refused(entry, role):
    with pytest.raises(ConfigError, match="unknown keys"):
        build_component(entry, role=role)


# -- what a directory may name -------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), sorted(BUILTIN_PATHS.items()))
def test_format_1_paths_are_the_ones_ragkit_0_1_wrote(path, name):
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:  # a module another change has broken for now, or a missing extra
        pytest.skip(f"{module_name}: {e}")
    cls = getattr(module, attr)
    assert f"{cls.__module__}.{cls.__qualname__}" == path  # what 0.1's _component_spec wrote
    assert components._LEGACY[path] == name
    assert components._BUILTINS[name].role == ROLE_OF[name]


@pytest.mark.parametrize(("path", "name"), sorted(BUILTIN_PATHS.items()))
def test_format_1_entries_build_the_right_class(path, name, monkeypatch):
    """Every built-in through its 0.1 path, with the class replaced by a recorder (no weights, no server)."""
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        pytest.skip(f"{module_name}: {e}")
    made = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            made.append((args, kwargs))

        @classmethod
        def for_embedder(cls, embedder, chunk_size=None, overlap=None):
            return cls(chunk_size, overlap, count=embedder)

    Recorder.__name__ = Recorder.__qualname__ = attr
    monkeypatch.setattr(module, attr, Recorder)
    spec = {"unit": "characters", "chunk_size": 9, "overlap": 1} if name == "RecursiveChunker" else {}
    for entry in ({"class": path, "spec": spec}, {"component": name, "spec": spec}):
        assert isinstance(build_component(entry, role=ROLE_OF[name]), Recorder)
    assert len(made) == 2


def test_public_alias_paths_are_accepted():
    chunker = build_component(
        {"class": "ragkit.RecursiveChunker", "spec": {"chunk_size": 50}}, role="chunker"
    )
    assert isinstance(chunker, RecursiveChunker) and chunker.chunk_size == 50
    emb = build_component(
        {"class": "ragkit.embedders.OpenAIEmbedder", "spec": {"model": "m", "provider": "tei"}},
        role="embedder",
    )
    assert isinstance(emb, OpenAIEmbedder)


def test_round_trips_through_json(api):
    faiss_index = pytest.importorskip("ragkit.index.faiss")
    objects = {
        "chunker": RecursiveChunker(300, 30),
        "index": faiss_index.FaissIndex("hnsw", dim=8, ef_search=99),
        "embedder": OpenAIEmbedder("bge-m3", provider="tei", base_url=api.url + "/v1", dim=8, batch_size=5),
        "reranker": RemoteReranker("bge-reranker", provider="tei", base_url=api.url, batch_size=4),
    }
    for role, obj in objects.items():
        entry = json.loads(json.dumps(component_entry(obj)))
        assert entry["component"] == type(obj).__name__ and "class" not in entry["spec"]
        rebuilt = build_component(entry, role=role)
        assert type(rebuilt) is type(obj) and rebuilt.spec() == obj.spec()
    # the 0.1 shape of the same entries, with the spec's own "class"
    legacy = {"class": "ragkit.embedders.remote.OpenAIEmbedder", "spec": objects["embedder"].spec()}
    assert build_component(legacy, role="embedder").spec() == objects["embedder"].spec()
    assert api.count == 0  # building makes no request


def test_component_entry_is_none_for_unregistered_objects():
    class Mine:
        def spec(self):
            return {}

    class SubChunker(RecursiveChunker):
        pass

    class NoSpec(RecursiveChunker):
        def spec(self):
            return None

    assert component_entry(Mine()) is None
    assert component_entry(SubChunker(100, 10)) is None  # a subclass may behave differently
    assert component_entry(object()) is None
    register_component("nospec", NoSpec, role="chunker")
    assert component_entry(NoSpec(100, 10)) is None


# -- user components ---------------------------------------------------------------------------------


class Letters:
    """A toy user embedder rebuilt with Letters(**spec)."""

    def __init__(self, letters: str = "ae", *, api_key: str | None = None, dsn: str = "", url: str = ""):
        self.letters, self.api_key, self.dsn, self.url = letters, api_key, dsn, url

    def spec(self):
        return {
            "letters": self.letters,
            "api_key": self.api_key,
            "dsn": self.dsn,
            "url": self.url,
            "nested": {"password": "pw-S3CRET", "keep": ["http://u:pw-S3CRET@h/x?token=T-S3CRET"]},
        }


def test_user_component_round_trip_without_credentials(caplog):
    register_component("letters", Letters, role="embedder")
    obj = Letters(
        "xyz",
        api_key="sk-S3CRET",
        dsn="host=db user=app password='pw S3CRET'",
        url="https://me:pw-S3CRET@h.example/v1?api-key=K-S3CRET&v=2",
    )
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        entry = component_entry(obj)
    assert "S3CRET" not in json.dumps(entry)
    assert entry == {
        "component": "letters",
        "spec": {
            "dsn": "host=db user=app",
            "letters": "xyz",
            "nested": {"keep": ["http://h/x?token=***"]},
            "url": "https://h.example/v1?api-key=***&v=2",
        },
    }
    assert "api_key" in caplog.text and "password" in caplog.text
    with pytest.raises(ConfigError, match="unknown keys \\['nested'\\]"):
        build_component(entry, role="embedder")
    del entry["spec"]["nested"]
    rebuilt = build_component(entry, role="embedder")
    assert isinstance(rebuilt, Letters) and rebuilt.letters == "xyz" and rebuilt.api_key is None
    with pytest.raises(ConfigError, match="registered as an embedder, not a reranker"):
        build_component(entry, role="reranker")


def test_user_from_spec_and_callables():
    seen = []

    class WithFromSpec:
        @classmethod
        def from_spec(cls, spec, *, trust_hosts=False):
            seen.append((dict(spec), trust_hosts))
            return cls()

    register_component("with-from-spec", WithFromSpec, role="reranker")
    assert isinstance(
        build_component({"component": "with-from-spec", "spec": {"any": 1}}, role="reranker"), WithFromSpec
    )
    build_component({"component": "with-from-spec", "spec": {}}, role="reranker", trust_hosts=True)
    assert seen == [({"any": 1}, False), ({}, True)]

    def make_chunker(size: int = 10):
        return RecursiveChunker(size, 0)

    register_component("small-chunks", make_chunker, role="chunker")
    assert build_component({"component": "small-chunks", "spec": {"size": 7}}, role="chunker").chunk_size == 7

    def broken(**kwargs):
        raise TypeError("broken factory")

    register_component("broken", broken, role="index")
    with pytest.raises(ConfigError, match="broken factory"):
        build_component({"component": "broken", "spec": {}}, role="index")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("OpenAIEmbedder", Letters, "embedder"), "ragkit's own"),
        (("", Letters, "embedder"), "non-empty"),
        ((" x", Letters, "embedder"), "non-empty"),
        ((3, Letters, "embedder"), "non-empty"),
        (("x", Letters, "model"), "role must be"),
        (("x", "Letters", "embedder"), "class or a callable"),
        (("x", RecursiveChunker, "chunker"), "needs no registration"),
        (("x", OpenAIEmbedder, "embedder"), "needs no registration"),
    ],
)
def test_register_component_checks(args, message):
    name, factory, role = args
    with pytest.raises(ConfigError, match=message):
        register_component(name, factory, role=role)


# -- the chunker -------------------------------------------------------------------------------------


class Words:
    """An embedder stand-in that counts words as tokens."""

    max_length = 64

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_token_chunker_counts_with_the_embedder(caplog):
    entry = {"component": "RecursiveChunker", "spec": {"unit": "tokens", "chunk_size": 5, "overlap": 1}}
    chunker = build_component(entry, role="chunker", embedder=Words())
    assert chunker.unit == "tokens" and (chunker.chunk_size, chunker.overlap) == (5, 1)
    assert [len(c.text.split()) <= 5 for c in chunker.chunk("one two three four five six seven eight")]
    assert len(chunker.chunk("one two three four five six seven eight")) == 2  # words, not characters
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        fallback = build_component(entry, role="chunker", embedder=object())
    assert fallback.unit == "characters" and fallback.chunk_size == 5 and "characters" in caplog.text
    legacy = {
        "class": "ragkit.chunking.RecursiveChunker",
        "spec": {"unit": "tokens", "chunk_size": 5, "overlap": 1},
    }
    assert build_component(legacy, role="chunker", embedder=Words()).unit == "tokens"


def test_chunker_spec_errors():
    for spec in ({"unit": "bytes", "chunk_size": 5}, {"chunk_size": 5, "overlap": 9}, {"chunk_size": "big"}):
        with pytest.raises(ConfigError, match="cannot rebuild the saved chunker 'RecursiveChunker'"):
            build_component({"component": "RecursiveChunker", "spec": spec}, role="chunker")


# -- hosts and credentials ---------------------------------------------------------------------------


def _embedder_entry(api, **spec):
    spec.setdefault("model", "m")
    spec.setdefault("dim", 8)
    spec.setdefault("max_retries", 0)
    return {"component": "OpenAIEmbedder", "spec": spec}


def test_env_key_is_not_sent_to_a_host_the_directory_names(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    entry = _embedder_entry(api, provider="openai", base_url=api.url + "/v1")
    for e in (entry, {"class": "ragkit.embedders.remote.OpenAIEmbedder", "spec": entry["spec"]}):
        with pytest.raises(ConfigError) as info:
            build_component(e, role="embedder")
        message = str(info.value)
        assert "OPENAI_API_KEY" in message and api.url in message
        assert "Pipeline.load(path, embedder=...)" in message and "trust_hosts=True" in message
        assert "sk-test" not in message
    assert api.count == 0
    emb = build_component(entry, role="embedder", trust_hosts=True)
    assert isinstance(emb, OpenAIEmbedder) and api.count == 0  # built, and no request yet
    emb.embed_documents(["a"])
    assert _auth_headers(api) == ["Bearer sk-test"]  # what the refusal protects


def test_the_refusal_message_shows_the_host_redacted(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    port = api.url.rsplit(":", 1)[1]
    entry = _embedder_entry(
        api, provider="openai", base_url=f"http://u:pw-S3CRET@127.0.0.1:{port}/v1?api-key=K1"
    )
    with pytest.raises(ConfigError) as info:
        build_component(entry, role="embedder")
    assert "S3CRET" not in str(info.value) and "api-key=***" in str(info.value)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://api.openai.com/v1",  # the preset's host without TLS
        "https://api.openai.com:8443/v1",  # another port
        "https://api.openai.com@127.0.0.1:9/v1",  # the preset's host as userinfo
        "https://api.openai.com.evil.example/v1",
    ],
)
def test_lookalike_hosts_are_refused(base_url, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    spec = {"model": "m", "provider": "openai", "base_url": base_url}
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_component({"component": "OpenAIEmbedder", "spec": spec}, role="embedder")
    # Without provider= a URL elsewhere selects "openai-compatible", which reads no variable at all.
    if "api.openai.com/" not in base_url:
        del spec["provider"]
        emb = build_component({"component": "OpenAIEmbedder", "spec": spec}, role="embedder")
        assert emb.spec()["provider"] == "openai-compatible"


def test_the_presets_own_hosts_are_fine(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or")
    monkeypatch.setenv("JINA_API_KEY", "jina-k")
    for spec in (
        {"model": "m", "provider": "openai"},
        {"model": "m", "provider": "openai", "base_url": "https://api.openai.com/v1/"},
        {"model": "m", "provider": "openai", "base_url": "https://API.openai.com:443/other"},  # same origin
        {"model": "m", "base_url": "https://openrouter.ai/api/v1"},  # the host selects its preset
    ):
        assert isinstance(
            build_component({"component": "OpenAIEmbedder", "spec": spec}, role="embedder"), OpenAIEmbedder
        )
    rr = build_component(
        {"component": "RemoteReranker", "spec": {"model": "r", "provider": "jina"}}, role="reranker"
    )
    assert isinstance(rr, RemoteReranker)


def test_presets_that_read_no_key_may_point_anywhere(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for spec in (
        {"base_url": api.url + "/v1"},  # no provider: "openai-compatible", which reads no variable
        {"provider": "openai-compatible", "base_url": api.url + "/v1"},
        {"provider": "tei", "base_url": api.url + "/v1"},
        {"provider": "vllm", "base_url": api.url + "/v1"},  # VLLM_API_KEY is not set: nothing to send
    ):
        build_component(_embedder_entry(api, **spec), role="embedder").embed_documents(["a"])
    assert _auth_headers(api)[-4:] == [None] * 4


def test_an_optional_key_that_is_set_is_not_sent_elsewhere(api, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "vllm-secret")
    entry = _embedder_entry(api, provider="vllm", base_url=api.url + "/v1")
    with pytest.raises(ConfigError, match="VLLM_API_KEY"):
        build_component(entry, role="embedder")
    local = _embedder_entry(api, provider="vllm", base_url="http://localhost:8000/v1/")
    assert isinstance(build_component(local, role="embedder"), OpenAIEmbedder)  # the preset's own default
    assert api.count == 0


def test_inline_provider_dicts_do_not_choose_variables(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    mine = {"name": "mine", "base_url": api.url + "/v1", "key_required": False}
    for key_env in (["OPENAI_API_KEY"], ["AWS_SECRET_ACCESS_KEY"], ["UNSET_VAR", "AWS_SECRET_ACCESS_KEY"]):
        entry = _embedder_entry(api, provider={**mine, "key_env": key_env})
        with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY|OPENAI_API_KEY"):
            build_component(entry, role="embedder")
    # the OpenAI preset, tweaked, at OpenAI's own address: the key goes where ragkit sends it anyway
    tweaked = {**EMBEDDING_PROVIDERS["openai"].to_dict(), "max_batch": 100}
    assert isinstance(
        build_component(_embedder_entry(api, provider=tweaked), role="embedder"), OpenAIEmbedder
    )
    tweaked_elsewhere = {**tweaked, "base_url": api.url + "/v1"}
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_component(_embedder_entry(api, provider=tweaked_elsewhere), role="embedder")
    # no variable: fine, and nothing is sent
    build_component(_embedder_entry(api, provider={**mine, "key_env": []}), role="embedder").embed_documents(
        ["a"]
    )
    assert _auth_headers(api) == [None]
    emb = build_component(
        _embedder_entry(api, provider={**mine, "key_env": ["AWS_SECRET_ACCESS_KEY"]}),
        role="embedder",
        trust_hosts=True,
    )
    emb.embed_documents(["b"])
    assert _auth_headers(api) == [None, "Bearer aws-secret"]


def test_a_saved_api_key_is_refused_unless_trusted(api):
    entry = _embedder_entry(api, provider="tei", base_url=api.url + "/v1", api_key="sk-in-directory")
    with pytest.raises(ConfigError, match="api_key") as info:
        build_component(entry, role="embedder")
    assert "sk-in-directory" not in str(info.value)
    build_component(entry, role="embedder", trust_hosts=True).embed_documents(["a"])
    assert _auth_headers(api) == ["Bearer sk-in-directory"]


def test_reranker_host_rule(api, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "co-secret")
    entry = {"component": "RemoteReranker", "spec": {"model": "r", "provider": "cohere", "base_url": api.url}}
    with pytest.raises(ConfigError) as info:
        build_component(entry, role="reranker")
    assert "CO_API_KEY" in str(info.value) and "Pipeline.load(path, reranker=...)" in str(info.value)
    assert api.count == 0
    legacy = {"class": "ragkit.rerankers.remote.RemoteReranker", "spec": entry["spec"]}
    with pytest.raises(ConfigError, match="CO_API_KEY"):
        build_component(legacy, role="reranker")
    rr = build_component(entry, role="reranker", trust_hosts=True)
    assert api.count == 0
    rr.score("q", ["a", "b"])
    assert _auth_headers(api) == ["Bearer co-secret"]
    # a rerank preset that reads no variable may point anywhere
    tei = {"component": "RemoteReranker", "spec": {"model": "r", "provider": "tei", "base_url": api.url}}
    build_component(tei, role="reranker").score("q", ["a"])
    assert _auth_headers(api)[-1] is None


def test_the_host_rule_lives_in_one_place():
    assert OpenAIEmbedder.check_hosts.__func__ is RemoteReranker.check_hosts.__func__
    assert OpenAIEmbedder.from_spec.__func__ is RemoteReranker.from_spec.__func__


def test_from_spec_trusts_its_caller_by_default(api, monkeypatch):
    """A spec you hold (not a directory's) builds as before; trust_hosts=False opts into the check."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    spec = {"model": "m", "provider": "openai", "base_url": api.url + "/v1", "dim": 8}
    assert isinstance(OpenAIEmbedder.from_spec(spec), OpenAIEmbedder)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIEmbedder.from_spec(spec, trust_hosts=False)


def test_importing_the_registry_is_light():
    code = (
        "import sys, ragkit.components as c\n"
        "from ragkit.chunking import RecursiveChunker\n"
        "c.build_component(c.component_entry(RecursiveChunker(10, 1)), role='chunker')\n"
        "heavy = ('torch', 'transformers', 'faiss', 'httpx', 'psycopg', 'ragkit.embedders.remote')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_sentinels_are_untouched_by_a_normal_build(sentinels):
    build_component({"component": "RecursiveChunker", "spec": {"chunk_size": 10}}, role="chunker")
    assert sentinels == ["import ragkit.chunking"]
    assert builtins.eval("1 + 1") is None  # the sentinel itself, still in place


def test_local_models_round_trip(qwen3_embedding_dir, qwen3_reranker_dir):
    """The real Qwen3 classes (tiny local weights): the spec they write is one the registry takes."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ragkit.embedders import Qwen3Embedder
    from ragkit.rerankers import Qwen3Reranker

    emb = Qwen3Embedder(qwen3_embedding_dir, device="cpu", max_length=64, dim=32)
    entry = json.loads(json.dumps(component_entry(emb)))
    assert entry["component"] == "Qwen3Embedder"
    rebuilt = build_component(entry, role="embedder")
    assert type(rebuilt) is Qwen3Embedder and rebuilt.fingerprint == emb.fingerprint
    legacy = {"class": "ragkit.embedders.transformers.Qwen3Embedder", "spec": emb.spec()}
    assert build_component(legacy, role="embedder").fingerprint == emb.fingerprint
    chunker_entry = component_entry(RecursiveChunker.for_embedder(emb, chunk_size=16, overlap=2))
    chunker = build_component(chunker_entry, role="chunker", embedder=rebuilt)
    assert chunker.unit == "tokens" and chunker.max_length == rebuilt.max_length
    text = "Paris is the capital of France. " * 20
    assert all(rebuilt.count_tokens(c.text) <= 16 for c in chunker.chunk(text))

    rr = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu")
    rr_entry = json.loads(json.dumps(component_entry(rr)))
    assert rr_entry["component"] == "Qwen3Reranker"
    assert build_component(rr_entry, role="reranker").fingerprint == rr.fingerprint
