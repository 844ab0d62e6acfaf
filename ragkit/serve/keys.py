"""API keys of ``ragkit serve``: from ``--api-key``, ``RAGKIT_API_KEYS`` or ``--api-key-file``; never logged.

A key on the command line shows in ``ps`` and ``/proc/PID/cmdline`` to every user of the machine, so
for anything but a quick test the keys come from the environment or a file:

* ``RAGKIT_API_KEYS``: comma-separated keys (spaces around them are dropped). Set but empty is an
  error, not "no authentication": an unset variable in a deployment template must not open the server.
* ``--api-key-file PATH``: one key per line; blank lines and lines starting with ``#`` are ignored. A
  file that cannot be read, or that holds no key, is an error; a file that every user may read gets a
  warning.

All sources add up (duplicates once). :class:`KeyRedactor` replaces every key by ``***`` in the log
records that pass through a handler, as a safety net: the server itself never logs a key, a header or
a request body, and uvicorn's access log shows the path (with its query string) but no header.

Example:
    >>> collect_api_keys(["k-cli"], environ={"RAGKIT_API_KEYS": "k-env1, k-env2"})
    ['k-cli', 'k-env1', 'k-env2']
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
from collections.abc import Iterable, Mapping, Sequence

from ragkit._secrets import redact_text
from ragkit.errors import ConfigError

__all__ = ["ENV_VAR", "KeyRedactor", "bearer_matches", "collect_api_keys", "read_key_file"]

logger = logging.getLogger("ragkit")

ENV_VAR = "RAGKIT_API_KEYS"
"""The environment variable holding comma-separated API keys."""

_SERVER_LOGGERS = ("", "ragkit", "uvicorn", "uvicorn.error", "uvicorn.access")  # "": the root logger


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """The keys in ``path``: one per line, ``#`` comment lines and blank lines skipped, spaces stripped.

    Raises:
        ConfigError: the file cannot be read or decoded as UTF-8, or holds no key.

    Example:
        >>> read_key_file("/run/secrets/ragkit-keys")  # doctest: +SKIP
        ['k-1', 'k-2']
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            raw = f.read()
        text = raw.decode("utf-8-sig")
    except OSError as e:
        raise ConfigError(f"cannot read the API key file {name!r}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"the API key file {name!r} is not UTF-8 text") from e
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise ConfigError(f"the API key file {name!r} holds no key (one key per line; '#' starts a comment)")
    if os.name == "posix" and mode & stat.S_IROTH:
        logger.warning(
            "ragkit serve: the API key file %r can be read by every user of this machine: chmod 600 it", name
        )
    return keys


def collect_api_keys(
    keys: Iterable[str] = (),
    *,
    key_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The server's keys: ``keys`` (``--api-key``), then ``RAGKIT_API_KEYS``, then ``key_file``; each once.

    Args:
        keys: keys given directly.
        key_file: a file of keys (see :func:`read_key_file`).
        environ: where to look for ``RAGKIT_API_KEYS``; ``os.environ`` by default.

    Raises:
        ConfigError: an empty key, a key that is not visible ASCII (a space inside, an accent: HTTP
            clients send header bytes such a key would not match), ``RAGKIT_API_KEYS`` set without
            a key, an unusable key file.

    Example:
        >>> collect_api_keys(environ={})
        []
    """
    env = os.environ if environ is None else environ
    found: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("an API key must be a non-empty string")
        found.append(key.strip())
    if ENV_VAR in env:
        from_env = [k.strip() for k in env[ENV_VAR].split(",") if k.strip()]
        if not from_env:
            raise ConfigError(f"{ENV_VAR} is set but holds no key: unset it, or give comma-separated keys")
        found += from_env
    if key_file is not None:
        found += read_key_file(key_file)
    for key in found:
        if not all("!" <= c <= "~" for c in key):
            raise ConfigError(
                "an API key must be visible ASCII characters only (letters, digits, punctuation; no "
                "spaces or accents): HTTP clients send header bytes that a non-ASCII key would not match"
            )
    return list(dict.fromkeys(found))


def bearer_matches(header: str | None, keys: Sequence[bytes]) -> bool:
    """Whether an ``Authorization`` header carries one of ``keys`` as a bearer token (constant time).

    Every key is compared, so the time taken does not tell which one matched or how much of it. The
    token is compared as the bytes the client sent (the ASGI server decodes header bytes as latin-1),
    so ``keys`` are the keys' UTF-8 bytes.

    Example:
        >>> bearer_matches("Bearer s3cret", [b"other", b"s3cret"]), bearer_matches("s3cret", [b"s3cret"])
        (True, False)
    """
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    token = token.strip()
    try:
        given = token.encode("latin-1")  # back to the bytes on the wire
    except UnicodeEncodeError:  # not a header as an ASGI server passes it: compare its UTF-8
        given = token.encode("utf-8", "surrogateescape")
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key)
    return ok


class KeyRedactor(logging.Filter):
    """A logging filter (for handlers) that replaces each API key in a record's text by ``***``.

    The message is formatted once with its arguments and the result kept, so a key passed as an
    argument is caught too; so is a key inside the traceback text of an exception.

    Args:
        keys: the secrets to hide (those shorter than 4 characters are not worth a mask).

    Example:
        >>> handler = logging.StreamHandler()
        >>> handler.addFilter(KeyRedactor(["s3cret-key"]))
    """

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__()
        self.keys = [k for k in keys if isinstance(k, str) and k]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.keys:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's problem, not a leak
            return True
        clean = redact_text(message, self.keys)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.keys)
        return True

    def install(self, loggers: Sequence[str] = _SERVER_LOGGERS) -> None:
        """Add this filter to every handler of ``loggers`` (the root logger is ``""``), once each."""
        for name in loggers:
            for handler in logging.getLogger(name).handlers:
                if self not in handler.filters:
                    handler.addFilter(self)
