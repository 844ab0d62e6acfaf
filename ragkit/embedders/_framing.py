"""How the local embedder frames a text in tokens: templates, special tokens, end-of-text rule, truncation.

Truncation cuts the text, never the special tokens: the tokenizer's own prefix and suffix (found once on a
probe string) and ``<|endoftext|>`` where a model family's embeddings are defined on inputs ending in it
are re-added after the cut.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragkit.errors import ConfigError

logger = logging.getLogger("ragkit")

# Model families whose last-token embeddings are defined on inputs ending in <|endoftext|> (the Qwen3-
# Embedding reference; gte-Qwen2 follows the same rule). Data, not code: add a family here.
END_OF_TEXT = {"qwen2": "<|endoftext|>", "qwen3": "<|endoftext|>"}

_SLOT = re.compile(r"\{(text|instruction)\}")


def fill(template: str, text: str, instruction: str | None) -> str:
    """``template`` with ``{text}`` and ``{instruction}`` filled in one pass (braces in either are data)."""
    return _SLOT.sub(lambda m: text if m.group(1) == "text" else (instruction or ""), template)


def check_template(template: str | None, what: str) -> str | None:
    """``template`` validated: ``None`` or a str holding ``{text}``."""
    if template is None:
        return None
    if not isinstance(template, str):
        raise ConfigError(f"{what} must be a str holding '{{text}}', got {type(template).__name__}")
    if "{text}" not in template:
        raise ConfigError(f"{what}={template!r} has no '{{text}}' placeholder")
    return template


def positive_int(value: Any, what: str) -> int | None:
    """``value`` validated: ``None`` or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive int or None, got {value!r}")
    return value


def is_decoder(config: Any) -> bool:
    """A causal language model (last-token pooling) rather than a bidirectional encoder."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", "")
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


@dataclass
class Framing:
    """The token frame of every input: ``prefix + text ids (cut to budget) + suffix + extra``."""

    prefix: list[int]
    suffix: list[int]
    extra: list[int]
    padding_left: bool
    pad_id: int
    empty_id: int
    max_length: int
    lower_case: bool = False

    @property
    def budget(self) -> int:
        """Text tokens that fit after the special tokens."""
        return self.max_length - len(self.prefix) - len(self.suffix) - len(self.extra)

    @property
    def special(self) -> int:
        """How many special tokens each input carries."""
        return len(self.prefix) + len(self.suffix) + len(self.extra)

    def count(self, tokenizer: Any, texts: list[str], *, cap: bool = True) -> list[int]:
        """Tokens of each framed text, special tokens included (at least 1), capped at ``max_length``."""
        if self.lower_case:
            texts = [t.lower() for t in texts]
        if not texts:
            return []
        ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        counts = [max(1, len(row) + self.special) for row in ids]
        return [min(n, self.max_length) for n in counts] if cap else counts

    def pad(self, seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` of one batch, padded left for last-token pooling, else right."""
        n, width = len(seqs), max(len(s) for s in seqs)
        input_ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            span = slice(width - len(seq), width) if self.padding_left else slice(0, len(seq))
            input_ids[row, span] = seq
            mask[row, span] = 1
        return input_ids, mask

    def tokenize(self, tokenizer: Any, texts: list[str]) -> tuple[list[list[int]], int]:
        """Token ids with special tokens, cut to ``max_length``; and how many texts were cut."""
        if self.lower_case:
            texts = [t.lower() for t in texts]
        bodies = tokenizer(
            texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False
        )["input_ids"]
        head, tail, budget = self.prefix, self.suffix + self.extra, self.budget
        out: list[list[int]] = []
        cut = 0
        for ids in bodies:
            if len(ids) > budget:
                cut += 1
                ids = ids[:budget]
            seq = head + ids + tail if head or tail else list(ids)
            out.append(seq or [self.empty_id])
        return out, cut


def frame_tokens(
    tokenizer: Any,
    config: Any,
    *,
    model_ref: str,
    pooling: str,
    end_of_text: str | None,
    max_length: int | None,
    lower_case: bool = False,
) -> Framing:
    """Find the special tokens the tokenizer adds, apply the end-of-text rule, settle ``max_length``."""
    tok = tokenizer
    probe = "ragkit probe: 1 2 3"
    bare = tok(probe, add_special_tokens=False)["input_ids"]
    full = tok(probe)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), None)
    if not bare or start is None:
        raise ConfigError(
            f"{model_ref}: cannot locate the text inside the tokenizer's output "
            "(its post-processor rewrites the text), so truncation cannot be done exactly"
        )
    prefix, suffix = list(full[:start]), list(full[start + len(bare) :])

    # The end-of-text rule (Qwen3-Embedding): the last token of every input is <|endoftext|>. Tokenizers
    # whose post-processor appends it keep it through truncation here because the suffix is re-added
    # after cutting the text; for the others ragkit appends it.
    extra: list[int] = []
    eot = end_of_text
    if eot is None and pooling == "last":
        eot = END_OF_TEXT.get(getattr(config, "model_type", ""))
    if eot is not None:
        eot_id = tok.convert_tokens_to_ids(eot)
        if eot_id is None or tok.convert_ids_to_tokens(eot_id) != eot:
            raise ConfigError(f"{model_ref}: the tokenizer has no {eot!r} token")
        if suffix[-1:] != [eot_id]:
            extra = [eot_id]

    pad = tok.pad_token_id
    if pad is None:
        pad = tok.eos_token_id if tok.eos_token_id is not None else 0
    # An empty text with no special tokens would be a zero-length input: give it one token.
    empty = tok.eos_token_id if tok.eos_token_id is not None else int(pad)

    limits = [int(getattr(config, "max_position_embeddings", 0) or 0)]
    model_max = getattr(tok, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 10**7:
        limits.append(model_max)
    limit = min((x for x in limits if x > 0), default=None)
    if max_length is None:
        max_length = limit or 512
    elif limit is not None and max_length > limit:
        logger.info("%s: max_length=%d lowered to the model's limit %d", model_ref, max_length, limit)
        max_length = limit
    framing = Framing(
        prefix=prefix,
        suffix=suffix,
        extra=extra,
        padding_left=pooling == "last",
        pad_id=int(pad),
        empty_id=int(empty),
        max_length=int(max_length),
        lower_case=lower_case,
    )
    if framing.budget < 1:
        raise ConfigError(f"max_length={framing.max_length} leaves no room for text after the special tokens")
    return framing
