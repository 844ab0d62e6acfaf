"""Builders of tiny random Qwen3 models and tokenizers, saved to disk and loaded with ``from_pretrained``.

Shared by the test fixtures (tests/conftest.py) and the benchmarks, which build real-width models the same
way. The tokenizer mimics the real Qwen3 one where it matters: byte-level BPE, ``<|endoftext|>`` is the
pad token, ``<|im_end|>`` the eos token, ``<|im_start|>``/``<|im_end|>`` chat markers, and "yes"/"no"
single tokens. ``eos_postprocessor=True`` appends ``<|endoftext|>`` in the post-processor as the current
hub tokenizers of Qwen3-Embedding do; ``False`` behaves like older or converted tokenizers.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_CORPUS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "Given a web search query, retrieve relevant passages that answer the query",
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided.",
    'Note that the answer can only be "yes" or "no".',
    "Instruct: Query: Document: system user assistant yes no",
    "Retrieval augmented generation combines search with language models.",
    "def add(a, b):\n    return a + b\n",
    "中文文本没有空格。日本語のテキスト。",
    "Embeddings are vectors; rerankers score pairs of query and document.",
]


def build_tokenizer(path: str | Path, *, eos_postprocessor: bool, vocab_size: int = 600):
    """Train a small byte-level BPE tokenizer in memory and save it, Qwen-style, to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    for word in ("yes", "no"):
        if tok.token_to_id(word) is None:
            tok.add_tokens([word])
    if eos_postprocessor:
        eot = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>",
            pair="$A <|endoftext|> $B <|endoftext|>",
            special_tokens=[("<|endoftext|>", eot)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=32768,
    )
    fast.save_pretrained(str(path))
    return fast


def qwen3_config(vocab_size: int, **overrides):
    """A small Qwen3 configuration; ``overrides`` set real widths for benchmarks."""
    from transformers import Qwen3Config

    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    cfg.update(overrides)
    return Qwen3Config(**cfg)


def build_qwen3(
    path: str | Path, *, kind: str = "embedding", eos_postprocessor: bool = True, seed: int = 0, **overrides
) -> Path:
    """Save a random Qwen3 model plus tokenizer at ``path``.

    ``kind="embedding"`` saves a ``Qwen3Model`` (as Qwen3-Embedding ships), ``"reranker"`` a
    ``Qwen3ForCausalLM`` (as Qwen3-Reranker ships).
    """
    import torch
    from transformers import Qwen3ForCausalLM, Qwen3Model

    path = Path(path)
    tok = build_tokenizer(path, eos_postprocessor=eos_postprocessor)
    # A vocab_size override (benchmarks: the real 151,936) may exceed the small tokenizer's vocabulary.
    config = qwen3_config(overrides.pop("vocab_size", len(tok)), **overrides)
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(seed)
    cls = Qwen3Model if kind == "embedding" else Qwen3ForCausalLM
    model = cls(config)
    # Random init gives near-identical hidden states at every position; widen the spread so that the
    # tests can tell positions and tokens apart.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    model.eval()
    model.save_pretrained(str(path))
    return path
