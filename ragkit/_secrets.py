"""Redaction of credentials in URLs, PostgreSQL connection strings and messages (stdlib only).

Every ``spec()``, ``repr()``, log line and error message that shows an address goes through these, so
that a ``user:password@`` part, an ``?api-key=`` parameter or a libpq ``password`` never leaves the
process in text. None of them raises: odd input gives a redacted best effort or a fixed placeholder,
never the input unredacted.

Which query parameters are credentials: a name is one when, compared case-insensitively after
percent-decoding, it *contains* one of :data:`SECRET_WORDS` (``api-key``, ``apikey``, ``access_token``,
``X-Amz-Signature``, ``X-Amz-Security-Token``, ``client_secret``, ``PHPSESSID``, ...) or one of its
``-``/``_``/``.``-separated segments *is* one of :data:`SECRET_SEGMENTS` (``sig`` of Azure SAS URLs,
``code`` of Azure Functions keys, ``pass``, ``jwt``). Erring this way only hides a harmless value
from a message; the other way would show a key.

Example:
    >>> redact_url("https://me:pw@example.com/v1?api-version=2024-02-01&api-key=sk-1")
    'https://example.com/v1?api-version=2024-02-01&api-key=***'
    >>> redact_dsn("host=db user=app password='s 3cret'")
    'host=db user=app'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = [
    "DSN_PLACEHOLDER",
    "MASK",
    "SECRET_SEGMENTS",
    "SECRET_WORDS",
    "URL_PLACEHOLDER",
    "is_secret_name",
    "redact_dsn",
    "redact_text",
    "redact_url",
    "url_secrets",
]

MASK = "***"
"""What a redacted value is replaced with."""

URL_PLACEHOLDER = "<redacted url>"
"""What :func:`redact_url` returns for input it cannot even read as text."""

DSN_PLACEHOLDER = "<unparsable dsn>"
"""What :func:`redact_dsn` returns for a connection string it cannot parse."""

SECRET_WORDS = (
    "key",
    "token",
    "secret",
    "passw",
    "pwd",
    "auth",
    "signature",
    "credential",
    "session",
    "sessid",
)
"""A query parameter whose name contains one of these (case-insensitive) is a credential."""

SECRET_SEGMENTS = frozenset({"sig", "code", "pass", "jwt"})
"""A query parameter with one of these as a whole segment of its name is a credential."""

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*:)?//")
_SEGMENT_RE = re.compile(r"[^a-z0-9]+")
_HOSTPORT_RE = re.compile(r"(\[[^\]@/]*\]|[^:@\[\]/]*)(:\d*)?")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter called ``name`` holds a credential (the rule of this module).

    Example:
        >>> [is_secret_name(n) for n in ("api-key", "X-Amz-Signature", "sig", "api-version", "design")]
        [True, True, True, False, False]
    """
    lowered = unquote(name).strip().lower()
    if any(word in lowered for word in SECRET_WORDS):
        return True
    return any(segment in SECRET_SEGMENTS for segment in _SEGMENT_RE.split(lowered))


def _redact_params(text: str) -> str:
    """``a=1&api_key=x`` → ``a=1&api_key=***``; parts without ``=`` are kept as they are."""
    parts = []
    for part in text.split("&"):
        name, eq, _value = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and is_secret_name(name) else part)
    return "&".join(parts)


def _userinfo_end(text: str, start: int) -> int:
    """The index just past the ``@`` that ends the userinfo starting at ``start`` (``start``: none).

    The userinfo ends at the last ``@`` before the first ``/``. When there is none but what stands
    where the host should be is no ``host[:port]`` (``u:pa/ss@host``, ``u:p#w@host``: a raw ``/`` or
    ``#`` in a password), the ``@`` further on counts, so that no part of such a password is shown.
    """
    slash = text.find("/", start)
    end = len(text) if slash < 0 else slash
    at = text.rfind("@", start, end)
    if at < 0 and not _HOSTPORT_RE.fullmatch(re.split(r"[?#]", text[start:end], maxsplit=1)[0]):
        first = text.find("@", end)
        if first >= 0:
            after = text.find("/", first)
            at = text.rfind("@", start, len(text) if after < 0 else after)
    return start if at < 0 else at + 1


def _split_url(url: str) -> tuple[str, str, str, str, str, str]:
    """``(prefix, userinfo, host, path, query, fragment)``; each separator stays with what follows it.

    ``prefix`` is ``scheme://`` (or ``//``, or empty when the URL has neither); without it a leading
    ``userinfo@`` is still recognised (``me:pw@host/v1``). ``query`` starts with ``?`` and
    ``fragment`` with ``#`` when present.
    """
    match = _SCHEME_RE.match(url)
    start = match.end() if match else 0
    cut = _userinfo_end(url, start)
    rest, hash_, fragment = url[cut:].partition("#")
    rest, qmark, query = rest.partition("?")
    host, slash, path = rest.partition("/")
    return url[:start], url[start:cut], host, slash + path, qmark + query, hash_ + fragment


def redact_url(url: str) -> str:
    """``url`` for display and ``spec()``: no ``user:password@`` part, credential parameters masked.

    The whole userinfo goes (a username alone is often a token, as in ``https://ghp_x@github.com``).
    Query and fragment parameters named like credentials (see the module docstring) keep their name
    and get ``***`` as value. The rest is kept byte for byte, so a URL without secrets comes back
    unchanged. Works without a scheme, with IPv6 hosts and on malformed input; never raises.

    Example:
        >>> redact_url("http://user:pw@[::1]:8080/v1?sig=abc&x=1#access_token=t")
        'http://[::1]:8080/v1?sig=***&x=1#access_token=***'
        >>> redact_url("me:secret@example.com/v1")
        'example.com/v1'
    """
    try:
        text = url if isinstance(url, str) else str(url)
        prefix, _userinfo, host, path, query, fragment = _split_url(text)
        if query:
            query = "?" + _redact_params(query[1:])
        if fragment and "=" in fragment:
            fragment = "#" + _redact_params(fragment[1:])
        return prefix + host + path + query + fragment
    except Exception:  # noqa: BLE001 - a display helper must not fail (str() of an odd object)
        return URL_PLACEHOLDER


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: userinfo and credential parameter values, raw and percent-decoded.

    For :func:`redact_text`, when a message may repeat a part of the URL outside of it (an exception
    text, a redirect target, an echoing server).

    Example:
        >>> url_secrets("https://me:p%40ss@example.com/?api_key=k1&v=2")
        ['me', 'p%40ss', 'p@ss', 'k1']
    """
    try:
        _prefix, userinfo, _host, _path, query, fragment = _split_url(str(url))
        found = [part for part in userinfo[:-1].split(":", 1) if part] if userinfo else []
        for params in (query[1:], fragment[1:]):
            for part in params.split("&") if params else ():
                name, eq, value = part.partition("=")
                if eq and value and is_secret_name(name):
                    found.append(value)
        out: list[str] = []
        for value in found:
            for form in (value, unquote(value)):
                if form not in out:
                    out.append(form)
        return out
    except Exception:  # noqa: BLE001 - never fail while preparing an error message
        return []


def redact_text(text: str, secrets: Iterable[str | None], *, min_length: int = 4) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``, longest secret first.

    Secrets shorter than ``min_length`` are skipped: they are no secret worth the name, and replacing
    every ``"ab"`` of a message would make it unreadable. ``None`` and empty entries are ignored.

    Example:
        >>> redact_text("401 for key sk-abc123 (sk-abc123)", ["sk-abc123", None, "x"])
        '401 for key *** (***)'
    """
    try:
        out = text if isinstance(text, str) else str(text)
        for secret in sorted({s for s in secrets if isinstance(s, str) and len(s) >= min_length}, key=len)[
            ::-1
        ]:
            out = out.replace(secret, MASK)
        return out
    except Exception:  # noqa: BLE001 - never fail while preparing an error message
        return MASK


# -- PostgreSQL (libpq) connection strings ---------------------------------------------------------


def _dsn_secret(name: str) -> bool:
    return "password" in unquote(name).lower()


def _parse_conninfo(text: str) -> list[tuple[str, str]]:
    """libpq's ``keyword = value`` grammar: whitespace-separated, ``'quoted'`` values, ``\\`` escapes.

    Raises:
        ValueError: a keyword without ``=``, or an unterminated quote.
    """
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return pairs
        start = i
        while i < n and not text[i].isspace() and text[i] != "=":
            i += 1
        name = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if not name or i >= n or text[i] != "=":
            raise ValueError("missing '=' after a keyword")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        quoted = i < n and text[i] == "'"
        if quoted:
            i += 1
        while True:
            if i >= n:
                if quoted:
                    raise ValueError("unterminated quoted value")
                break
            ch = text[i]
            if ch == "\\":
                i += 1
                if i < n:
                    value.append(text[i])
                    i += 1
                continue
            if (quoted and ch == "'") or (not quoted and ch.isspace()):
                i += 1
                break
            value.append(ch)
            i += 1
        pairs.append((name, "".join(value)))


def _quote_conninfo(value: str) -> str:
    if value and not re.search(r"[\s'\\=]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _redact_dsn_url(dsn: str) -> str:
    start = dsn.index("://") + 3
    cut = _userinfo_end(dsn, start)
    user = dsn[start:cut].split(":", 1)[0].rstrip("@")
    rest, qmark, query = dsn[cut:].partition("?")
    kept = [p for p in query.split("&") if p and not _dsn_secret(p.partition("=")[0])] if qmark else []
    return dsn[:start] + (user + "@" if user else "") + rest + ("?" + "&".join(kept) if kept else "")


def redact_dsn(dsn: str) -> str:
    """A libpq connection string without ``password``, ``sslpassword`` or any other ``*password*``.

    Both forms are read without psycopg: URLs (``postgresql://user:pw@host/db?sslpassword=x``; the
    user is kept, the password and the password parameters are dropped) and ``keyword=value`` strings
    with libpq's quoting and backslash escapes (the rest is written back, quoted where needed). A
    ``dbname`` that is itself a connection string, which libpq expands, is redacted too. Anything
    that does not parse gives :data:`DSN_PLACEHOLDER`, never the input.

    Example:
        >>> redact_dsn("postgresql://app:pw@db:5432/rag?sslmode=require&sslpassword=x")
        'postgresql://app@db:5432/rag?sslmode=require'
        >>> redact_dsn(r"host=db password='it\\'s' application_name='my app'")
        "host=db application_name='my app'"
    """
    try:
        text = dsn if isinstance(dsn, str) else str(dsn)
        if re.match(r"^\s*postgres(ql)?://", text, re.I):
            return _redact_dsn_url(text.strip())
        kept = []
        for name, value in _parse_conninfo(text):
            if _dsn_secret(name):
                continue
            if name == "dbname" and ("=" in value or re.match(r"^postgres(ql)?://", value, re.I)):
                value = redact_dsn(value)
            kept.append(f"{name}={_quote_conninfo(value)}")
        return " ".join(kept)
    except Exception:  # noqa: BLE001 - unparsable: the placeholder, never the input
        return DSN_PLACEHOLDER
