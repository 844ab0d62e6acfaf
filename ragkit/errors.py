"""The errors ragkit raises.

Every error derives from one root, so ``except RagkitError`` catches them all. Where a built-in
exception means the same thing, the ragkit error derives from it too (a wrong type is also a
``TypeError``, a bad value also a ``ValueError``), so code written against the built-ins keeps working.

::

    RagkitError
    ├── InputTypeError            (also TypeError)   None, bytes or a number where text was expected
    ├── InvalidInputError         (also ValueError)  a value out of range: k=0, NaN vectors, unknown mode
    │   └── InputTooLongError                        a text over max_length with on_truncate="error"
    ├── ConfigError               (also ValueError)  a setting that cannot work: unknown device, bad dim
    ├── MissingDependencyError    (also ImportError) an optional package is absent; names the extra
    ├── IndexMismatchError                           vectors from another embedder (fingerprints differ)
    ├── IntegrityError                               a saved pipeline fails its checksums or counts
    ├── LockError                                    another process already writes to that directory
    ├── ReadOnlyError                                a write to a pipeline loaded with read_only=True
    ├── StorageError              (also OSError)     the disk refused a write: full, read-only, no access
    ├── LoaderError                                  a file ragkit.loaders cannot read; has path, reason
    │   ├── UnsupportedFormatError                   a suffix no loader reads (.doc, .xls, ...)
    │   ├── EncryptedFileError                       a PDF or Word file that needs a password
    │   └── CorruptFileError                         a damaged file, or records without 'text'
    └── RemoteError                                  an HTTP backend failed; has status_code, body, ...
        ├── AuthenticationError                      401 / 403: a missing or wrong API key
        ├── RateLimitError                           429, still after every retry
        ├── BadRequestError                          400 / 413 / 422: the server's message says why
        └── UnavailableError                         5xx, timeouts, refused connections, after retries

Warnings derive from :class:`RagkitWarning` (for example a text truncated to ``max_length``).
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "CorruptFileError",
    "EncryptedFileError",
    "IndexMismatchError",
    "InputTooLongError",
    "InputTypeError",
    "IntegrityError",
    "InvalidInputError",
    "LoaderError",
    "LockError",
    "MissingDependencyError",
    "RagkitError",
    "RagkitWarning",
    "RateLimitError",
    "ReadOnlyError",
    "RemoteError",
    "StorageError",
    "UnavailableError",
    "UnsupportedFormatError",
]


class RagkitError(Exception):
    """Root of every error ragkit raises.

    Example:
        >>> try:
        ...     raise ConfigError("dim must be >= 32")
        ... except RagkitError as e:
        ...     print(e)
        dim must be >= 32
    """


class InputTypeError(RagkitError, TypeError):
    """An input has the wrong type (``None``, ``bytes`` or a number where a ``str`` belongs)."""


class InvalidInputError(RagkitError, ValueError):
    """An input has the right type but an unusable value (``k=0``, NaN in a vector, unknown mode)."""


class InputTooLongError(InvalidInputError):
    """A text is longer than the model's ``max_length`` and ``on_truncate="error"`` was asked for."""


class ConfigError(RagkitError, ValueError):
    """A configuration that cannot work, such as an unknown device or a ``dim`` out of range."""


class MissingDependencyError(RagkitError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it.

    Example:
        >>> err = MissingDependencyError("torch", extra="local")
        >>> "pip install 'ragkit[local]'" in str(err)
        True
    """

    def __init__(self, package: str, *, extra: str, purpose: str | None = None) -> None:
        self.package = package
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"{package!r} is required{what} but is not installed: pip install 'ragkit[{extra}]'")


class IndexMismatchError(RagkitError):
    """Vectors were made by a different embedder (another model, dimension or template)."""


class IntegrityError(RagkitError):
    """A saved pipeline is damaged: a checksum, a count or the manifest does not match."""


class LockError(RagkitError):
    """Another process holds the write lock of a pipeline directory."""


class ReadOnlyError(RagkitError):
    """A write was attempted on a pipeline loaded with ``read_only=True``."""


class StorageError(RagkitError, OSError):
    """The filesystem refused a write (disk full, no permission, a read-only mount).

    Raised with the ``OSError`` chained. A save that fails this way leaves the previous save of the
    directory loadable.

    Example:
        >>> isinstance(StorageError("the disk is full"), OSError)
        True
    """


class LoaderError(RagkitError):
    """A file that :mod:`ragkit.loaders` cannot turn into documents.

    Attributes:
        path: the file, as given.
        reason: what is wrong with it, without the path (the message is ``"{path}: {reason}"``).

    Example:
        >>> err = CorruptFileError("notes.pdf", "not a PDF (no header)")
        >>> err.path, err.reason, isinstance(err, LoaderError)
        ('notes.pdf', 'not a PDF (no header)', True)
        >>> str(err)
        'notes.pdf: not a PDF (no header)'
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # The default rebuilds from args (the message alone); a worker process must send both fields.
        return type(self), (self.path, self.reason)


class UnsupportedFormatError(LoaderError):
    """No loader reads files with this suffix (``.doc``, ``.xlsx``, ...); the reason says what to do."""


class EncryptedFileError(LoaderError):
    """The file is encrypted and does not open without a password."""


class CorruptFileError(LoaderError):
    """The file is damaged or truncated, or its content is not what its suffix promises."""


class RemoteError(RagkitError):
    """An HTTP backend answered with an error or could not be reached.

    Attributes:
        status_code: the HTTP status, or ``None`` when no response came (connection error, timeout).
        body: the response body as text (truncated), or ``None``.
        provider: the provider preset's name, such as ``"openrouter"``.
        request_id: the server's request id header, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: str | None = None,
        provider: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.provider = provider
        self.request_id = request_id


class AuthenticationError(RemoteError):
    """The server refused the credentials (HTTP 401 or 403)."""


class RateLimitError(RemoteError):
    """The server kept answering 429 after every retry."""


class BadRequestError(RemoteError):
    """The server rejected the request (HTTP 400, 413 or 422); the message carries its reason."""


class UnavailableError(RemoteError):
    """The server failed (5xx), timed out or could not be reached, after every retry."""


class RagkitWarning(UserWarning):
    """Base class of the warnings ragkit emits."""
