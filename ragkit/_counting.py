"""Token counters for the chunker: whatever ``RecursiveChunker(count=...)`` accepts, as one function."""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

from ragkit.errors import ConfigError

logger = logging.getLogger("ragkit")

_COUNT_KINDS = "count must be a tokenizer, an object with count_tokens(text) or a Callable[[str], int]"


def make_counter(count: Any) -> tuple[Callable[[str], int], str, int]:
    """Normalise what ``count=`` accepts into a ``Callable[[str], int]``, the unit it measures and the
    count of the empty text (the special tokens a counter adds to any text)."""
    if count is None or count is len:
        return len, "characters", 0
    if isinstance(count, (str, bytes, int, float)):
        raise ConfigError(f"{_COUNT_KINDS}, got {type(count).__name__}")
    if callable(getattr(count, "count_tokens", None)):  # an embedder
        fn = count.count_tokens
    else:
        fn = _rust_counter(count) or _encode_counter(count)
    try:
        operator.index(fn("a"))
        empty = operator.index(fn(""))
    except Exception as e:  # the user's object is unusable in any way: say so at construction
        raise ConfigError(f"count(text) must return an int: {e!r}") from e
    return fn, "tokens", empty


def _rust_counter(tokenizer: Any) -> Callable[[str], int] | None:
    """A counter on a private copy of a ``tokenizers.Tokenizer`` (what a fast Hugging Face tokenizer
    wraps), or ``None`` when ``tokenizer`` holds none.

    The same tokens as ``tokenizer.encode(text, add_special_tokens=False)`` at a third of the cost per
    call. A copy, because padding and truncation settings live in the tokenizer (saved ones often pad to
    128) and any call elsewhere may change them; the copy has neither.
    """
    rust = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not type(rust).__module__.startswith("tokenizers"):
        return None
    try:
        from tokenizers import Tokenizer

        if not isinstance(rust, Tokenizer):
            return None
        private = Tokenizer.from_str(rust.to_str())
        private.no_padding()
        private.no_truncation()
    except Exception as e:  # an exotic build: the plain encode() path below still works
        logger.debug("counting with %s.encode: no private copy of its tokenizer (%r)", type(tokenizer), e)
        return None
    encode = private.encode
    return lambda text: len(encode(text, add_special_tokens=False))


def _encode_counter(count: Any) -> Callable[[str], int]:
    """A counter on ``count``'s own ``encode``, or ``count`` itself when it is a plain callable."""
    if callable(getattr(count, "encode_ordinary", None)):  # tiktoken: encode() refuses special tokens
        return _length_of(count.encode_ordinary)
    if callable(getattr(count, "encode", None)):  # a slow Hugging Face or a sentencepiece-like tokenizer
        encode = count.encode
        try:
            encode("", add_special_tokens=False)
        except TypeError:
            return _length_of(encode)
        # Specials are left out: they do not grow with the text, and the embedder adds its own.
        return lambda text: len(encode(text, add_special_tokens=False))
    if callable(count):
        return count
    raise ConfigError(f"{_COUNT_KINDS}, got {type(count).__name__}")


def _length_of(encode: Callable[[str], Any]) -> Callable[[str], int]:
    return lambda text: len(encode(text))
