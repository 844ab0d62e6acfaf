"""Local embedders on transformers + torch: any Hugging Face encoder, and the Qwen3-Embedding preset.

Inputs are tokenised once, sorted by token length and packed into batches under a token budget, so a
corpus of mostly short texts with a few long ones wastes almost nothing on padding; results come back
in input order. torch and transformers are imported when an embedder is built, never at import time.

Example:
    >>> from ragkit.embedders import Qwen3Embedder  # doctest: +SKIP
    >>> emb = Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B", dim=256)  # doctest: +SKIP
    >>> emb.embed_queries(["what is ragkit?"]).shape  # doctest: +SKIP
    (1, 256)
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.embedders._framing import check_template, fill, frame_tokens, is_decoder, positive_int
from ragkit.embedders._pooling import pool
from ragkit.embedders.aliases import alias_of, resolve_model
from ragkit.embedders.base import DEFAULT_QWEN3_TASK, canonical_model_name, check_texts, l2_normalize
from ragkit.embedders.st_layout import read_layout
from ragkit.errors import ConfigError, InputTooLongError, InputTypeError, InvalidInputError, RagkitWarning
from ragkit.runtime import Runtime

__all__ = ["QWEN3_QUERY_TEMPLATE", "Qwen3Embedder", "TransformersEmbedder"]

logger = logging.getLogger("ragkit")

QWEN3_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery:{text}"
"""The query format of the Qwen3-Embedding model card; documents are embedded bare."""

_POOLINGS = ("auto", "last", "mean", "cls")
_ON_TRUNCATE = ("warn", "error", "ignore")

# Token budget per batch (padded tokens) when max_batch_tokens is not given. On CPU, throughput was flat
# from 1k to 16k tokens per batch (0.6B width, one thread), a few per cent better at the low end where
# the working set stays in cache; on a GPU larger batches keep the device busy, and an out-of-memory
# batch is re-split anyway.
_DEFAULT_BATCH_TOKENS = {"cpu": 4096, "cuda": 65536}
_FALLBACK_BATCH_TOKENS = 16384
# Largest share of padding a batch may hold (pack_by_tokens' max_padding). On CPU, padding costs as much
# as real tokens and a batch of a few hundred tokens already runs at full speed, so batches are cut
# tightly; on a GPU fewer, larger batches matter more than some padding.
_MAX_PADDING = {"cpu": 0.1}
_FALLBACK_MAX_PADDING = 0.25

# Above this many full batches' worth of tokens a progress bar appears by default (stderr a terminal).
_PROGRESS_MIN_BATCHES = 8


class TransformersEmbedder:
    """Embed texts with a local Hugging Face model: token-budget batches, exact pooling, L2 norm.

    Args:
        model: a hub id or a local directory (a plain transformers checkpoint or a
            sentence-transformers layout).
        pooling: ``"last"`` (hidden state of the last token, left padding), ``"mean"`` (over real
            tokens) or ``"cls"`` (first token). ``"auto"`` reads the sentence-transformers layout when
            the directory has one (``modules.json``, ``1_Pooling/config.json``), else uses ``"last"``
            for decoder models (Qwen3 and other causal LMs) and ``"mean"`` for encoders.
        dim: keep the first ``dim`` components (Matryoshka), then re-normalise. ``None``: all.
        normalize: L2-normalise the vectors. ``None``: as the sentence-transformers layout says (a
            ``Normalize`` module), ``True`` for a plain checkpoint.
        device: ``"auto"`` (CUDA, then MPS, then CPU), or a torch device string.
        dtype: ``"auto"``: bfloat16 on CUDA, and on a CPU with native bfloat16 matrix units (``amx_bf16``
            or ``avx512_bf16`` in its flags: 2.8-3x faster there, vectors within 0.999 cosine of float32
            on real weights), float32 on other CPUs (see :mod:`ragkit.runtime`). ``"float32"`` is the
            exact mode (the reference formula to float noise); ``"bfloat16"``; ``"float16"`` (GPU only).
            Pooling and normalisation run in float32 either way, and float32 and bfloat16 vectors share
            a fingerprint.
        kernels: the float32 linear-layer kernels on CPU: ``"auto"`` times MKL and oneDNN on the model's
            layer shapes at load and keeps oneDNN only when it is clearly (1.2x) faster; ``"mkl"``
            (torch's default) or ``"onednn"`` fix it. The choice is ``runtime.kernels``.
        max_length: tokens per input, special tokens included; longer inputs are truncated. ``None``:
            ``max_seq_length`` of the sentence-transformers layout, else the model's limit. Values over
            the model's position limit are lowered to it.
        max_batch_tokens: padded tokens per batch (batch size x longest input). ``None``: 4096 on CPU,
            65536 on CUDA. On CUDA out-of-memory the batch is re-split with half the budget.
        query_template: how queries are written, with ``{text}`` and optionally ``{instruction}``.
            ``None``: the layout's ``"query"`` prompt when it has one, else the bare text.
        document_template: the same for documents.
        instruction: the task sentence that fills ``{instruction}`` in the query template.
        quantize: ``"int8"`` for int8 dynamic quantisation of the linear layers (torchao) on CPU.
            At the 0.6B width it ran 1.3x faster than ragkit's float32 (3.3x sentence-transformers)
            on the reference AMD EPYC; small models such as MiniLM gain nothing. Vectors stay within
            0.99 cosine of float32 on real weights. Opt-in only (``dtype="auto"`` means float32 with
            it). The fingerprint records it, so int8 and float32 vectors are never mixed in one index.
        revision: the hub revision (branch, tag or commit) to load.
        local_files_only: never contact the hub; use the local cache or directory.
        show_progress: a tqdm bar over texts. ``None``: shown when a call holds more than 8 full
            batches' worth of tokens and stderr is a terminal.
        on_truncate: what to do when a text is longer than ``max_length``: ``"warn"`` (a
            :class:`~ragkit.errors.RagkitWarning` saying how many), ``"error"``
            (:class:`~ragkit.errors.InputTooLongError`, raised before any computation) or
            ``"ignore"``. Truncation keeps the special tokens, including the end-of-text token.

    Example:
        >>> emb = TransformersEmbedder("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> emb.pooling, emb.dim, emb.max_length  # doctest: +SKIP
        ('mean', 384, 256)
        >>> emb.embed_documents(["hello", ""]).shape  # doctest: +SKIP
        (2, 384)
    """

    #: The smallest ``dim`` accepted (Qwen3-Embedding was trained for 32 and up).
    min_dim = 1
    # The token every input must end with, whatever the model type says (the Qwen3 preset sets it).
    _end_of_text: str | None = None

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        pooling: str = "auto",
        dim: int | None = None,
        normalize: bool | None = None,
        device: str | Any = "auto",
        dtype: str | Any = "auto",
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        query_template: str | None = None,
        document_template: str | None = None,
        instruction: str | None = None,
        quantize: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        show_progress: bool | None = None,
        on_truncate: str = "warn",
        kernels: str = "auto",
    ) -> None:
        if not isinstance(model, (str, os.PathLike)):
            raise ConfigError(f"model must be a hub id or a directory, got {type(model).__name__}")
        if pooling not in _POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}: use one of {list(_POOLINGS)}")
        if on_truncate not in _ON_TRUNCATE:
            raise ConfigError(f"unknown on_truncate {on_truncate!r}: use one of {list(_ON_TRUNCATE)}")
        if quantize not in (None, "int8"):
            raise ConfigError(f"unknown quantize {quantize!r}: use None or 'int8'")
        if instruction is not None and not isinstance(instruction, str):
            raise InputTypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise ConfigError(f"dim must be an int or None, got {dim!r}")
        max_length = positive_int(max_length, "max_length")
        max_batch_tokens = positive_int(max_batch_tokens, "max_batch_tokens")
        query_template = check_template(query_template, "query_template")
        document_template = check_template(document_template, "document_template")

        from ragkit._backbone import check_kernels, load_backbone
        from ragkit._deps import require

        kernels = check_kernels(kernels)
        require("torch", purpose="local embedders")
        require("transformers", purpose="local embedders")
        from transformers import AutoConfig, AutoTokenizer

        # _model_ref is what the spec records (an alias stays an alias, so a saved index is portable);
        # source is where this machine loads it from.
        alias = alias_of(model)
        if alias is not None:
            self._model_ref = alias
            source = resolve_model(alias)
        else:
            local = Path(os.fspath(model)).expanduser()
            self._model_ref = source = str(local.resolve()) if local.is_dir() else os.fspath(model)
        self._revision = revision
        self._quantize = quantize
        self._on_truncate = on_truncate
        self._show_progress = show_progress

        layout = read_layout(source, revision, local_files_only)
        hub_kwargs: dict[str, Any] = {"revision": revision, "local_files_only": local_files_only}
        if layout.subfolder:
            hub_kwargs["subfolder"] = layout.subfolder
        config = AutoConfig.from_pretrained(source, **hub_kwargs)

        # Pooling, normalisation and templates: explicit > sentence-transformers layout > model kind.
        if pooling == "auto":
            if layout.unsupported_pooling is not None:
                raise ConfigError(
                    f"{model}: sentence-transformers pooling {layout.unsupported_pooling!r} is not "
                    "supported; ragkit computes last-token, mean and CLS pooling (pass pooling='last', "
                    "'mean' or 'cls' to choose one)"
                )
            pooling = layout.pooling or ("last" if is_decoder(config) else "mean")
        self._pooling = pooling
        self._normalize = (
            bool(normalize) if normalize is not None else (layout.normalize or not layout.present)
        )
        if query_template is None and layout.prompts.get("query"):
            query_template = layout.prompts["query"] + "{text}"
        if document_template is None and layout.prompts.get("document"):
            document_template = layout.prompts["document"] + "{text}"
        self._query_template = query_template or "{text}"
        self._document_template = document_template or "{text}"
        self._instruction = instruction
        if "{instruction}" in self._query_template and instruction is None:
            raise ConfigError(f"query_template {self._query_template!r} needs an instruction")
        if "{instruction}" in self._document_template:
            raise ConfigError("document_template cannot hold '{instruction}': documents take no instruction")

        self._native_dim = int(config.hidden_size)
        if dim is not None and not self.min_dim <= dim <= self._native_dim:
            raise ConfigError(
                f"dim={dim} is out of range for {self._model_ref}: use {self.min_dim}..{self._native_dim}"
            )
        self._dim = dim if dim is not None else self._native_dim

        self._tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
        self._framing = frame_tokens(
            self._tokenizer,
            config,
            model_ref=self._model_ref,
            pooling=self._pooling,
            end_of_text=self._end_of_text,
            max_length=max_length if max_length is not None else layout.max_seq_length,
            lower_case=layout.do_lower_case,
        )
        self._padding_left = self._framing.padding_left

        backbone = load_backbone(
            source,
            name=self._model_ref,
            auto_class="AutoModel",
            purpose="local embedders",
            device=device,
            dtype=dtype,
            kernels=kernels,
            quantize=quantize,
            show_progress=self._show_progress,
            **hub_kwargs,
        )
        self._device, self._dtype, self._attn = backbone.device, backbone.dtype, backbone.attention
        self._max_batch_tokens = max_batch_tokens or _DEFAULT_BATCH_TOKENS.get(
            self._device.type, _FALLBACK_BATCH_TOKENS
        )
        self._net = net = backbone.model
        import inspect

        params = inspect.signature(net.forward).parameters
        # Left-padded rows get explicit positions 0..n-1, as when each text runs alone.
        self._pass_positions = self._padding_left and "position_ids" in params
        self._pass_no_cache = "use_cache" in params
        probe = self._tokenize(["ragkit checks that oneDNN agrees with the default kernels"])[0]
        self._runtime = backbone.finish(net, lambda: self._forward(probe))

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], int]:
        """Token ids with special tokens, cut to max_length; and how many texts were cut."""
        return self._framing.tokenize(self._tokenizer, texts)

    # -- public surface ---------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """The size of the vectors returned.

        Example:
            >>> emb.dim  # doctest: +SKIP
            1024
        """
        return self._dim

    @property
    def max_length(self) -> int:
        """Tokens per input, special tokens included; longer inputs are truncated.

        Example:
            >>> emb.max_length  # doctest: +SKIP
            8192
        """
        return self._framing.max_length

    @property
    def appends_end_token(self) -> bool:
        """Whether ragkit appends ``<|endoftext|>`` itself because the tokenizer does not.

        Example:
            >>> emb.appends_end_token  # doctest: +SKIP
            False
        """
        return bool(self._framing.extra)

    @property
    def pooling(self) -> str:
        """The resolved pooling: ``"last"``, ``"mean"`` or ``"cls"``.

        Example:
            >>> emb.pooling  # doctest: +SKIP
            'last'
        """
        return self._pooling

    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalised.

        Example:
            >>> emb.normalize  # doctest: +SKIP
            True
        """
        return self._normalize

    @property
    def instruction(self) -> str | None:
        """The default task sentence for queries.

        Example:
            >>> emb.instruction  # doctest: +SKIP
            'Given a web search query, retrieve relevant passages that answer the query'
        """
        return self._instruction

    @property
    def device(self) -> Any:
        """The torch device the model runs on.

        Example:
            >>> emb.device  # doctest: +SKIP
            device(type='cpu')
        """
        return self._device

    @property
    def runtime(self) -> Runtime:
        """How this model runs here: device, dtype, kernels, attention, threads, and why (logged at INFO).

        Example:
            >>> str(emb.runtime)  # doctest: +SKIP
            'cpu, bfloat16, default kernels, sdpa attention, 2 threads'
        """
        return self._runtime

    @property
    def dtype(self) -> Any:
        """The torch dtype of the weights (float32 before int8 quantisation).

        Example:
            >>> emb.dtype  # doctest: +SKIP
            torch.float32
        """
        return self._dtype

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What makes two vector sets comparable: model, dim, pooling, normalisation, templates.

        ``max_length``, device and dtype are left out; int8 quantisation is recorded
        (``"quantize": "int8"``) because it moves the vectors.

        Example:
            >>> emb.fingerprint["model"], emb.fingerprint["dim"]  # doctest: +SKIP
            ('qwen3-embedding-0.6b', 1024)
        """
        fp: dict[str, Any] = {
            "model": canonical_model_name(self._model_ref),
            "dim": self._dim,
            "pooling": self._pooling,
            "normalize": self._normalize,
            "query_template": self._query_template,
            "document_template": self._document_template,
            "instruction": self._instruction,
        }
        if self._quantize is not None:
            fp["quantize"] = self._quantize
        return fp

    def spec(self) -> dict[str, Any]:
        """The JSON-able ``class`` and keyword arguments that rebuild this embedder.

        Device, dtype, batch size and progress display are left out: they belong to the machine that
        loads it. The settings are the resolved ones, so the rebuilt embedder has the same fingerprint.

        Example:
            >>> spec = emb.spec()  # doctest: +SKIP
            >>> spec["class"]  # doctest: +SKIP
            'ragkit.embedders.TransformersEmbedder'
        """
        return {"class": f"ragkit.embedders.{type(self).__name__}", **self._spec_kwargs()}

    def _spec_kwargs(self) -> dict[str, Any]:
        return {
            "model": self._model_ref,
            "pooling": self._pooling,
            "dim": self._dim,
            "normalize": self._normalize,
            "max_length": self._framing.max_length,
            "query_template": self._query_template,
            "document_template": self._document_template,
            "instruction": self._instruction,
            "quantize": self._quantize,
            "revision": self._revision,
            "on_truncate": self._on_truncate,
        }

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes as a document, special tokens included, before truncation.

        A chunk with ``count_tokens(chunk) <= max_length`` is never truncated.

        Example:
            >>> emb.count_tokens("hello world")  # doctest: +SKIP
            3
        """
        if not isinstance(text, str):
            raise InputTypeError(f"text must be a str, got {type(text).__name__}")
        return self._framing.count(self._tokenizer, [fill(self._document_template, text, None)], cap=False)[0]

    def token_counts(
        self, texts: Sequence[str], *, query: bool = False, instruction: str | None = None
    ) -> list[int]:
        """Tokens the model reads per text, template and special tokens included, at most ``max_length``
        (``ragkit serve``'s batch budgets and cost cap). Example: ``emb.token_counts(["hi"]) == [3]``."""
        task = instruction if instruction is not None else self._instruction
        template = self._query_template if query else self._document_template
        return self._framing.count(self._tokenizer, [fill(template, t, task) for t in check_texts(texts)])

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents (the document template, no instruction).

        Returns:
            float32 array of shape ``(len(texts), dim)``, C-contiguous, rows L2-normalised when
            ``normalize``.

        Example:
            >>> emb.embed_documents(["Paris is the capital of France.", ""]).shape  # doctest: +SKIP
            (2, 1024)
        """
        items = check_texts(texts)
        return self._embed([fill(self._document_template, t, None) for t in items])

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Embed queries with the query template; ``instruction`` overrides the task for this call.

        Example:
            >>> emb.embed_queries(["capital of France?"], instruction="Find it").shape  # doctest: +SKIP
            (1, 1024)
        """
        items = check_texts(texts)
        if instruction is not None:
            if not isinstance(instruction, str):
                raise InputTypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
            if "{instruction}" not in self._query_template:
                raise InvalidInputError(
                    f"this embedder's query template {self._query_template!r} takes no instruction"
                )
        task = instruction if instruction is not None else self._instruction
        return self._embed([fill(self._query_template, t, task) for t in items])

    def __repr__(self) -> str:
        quant = f", quantize={self._quantize!r}" if self._quantize else ""
        return (
            f"{type(self).__name__}({self._model_ref!r}, pooling={self._pooling!r}, dim={self._dim}, "
            f"max_length={self._framing.max_length}, device={str(self._device)!r}, dtype={self._dtype}, "
            f"kernels={self._runtime.kernels!r}{quant})"
        )

    # -- the forward pass ----------------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> np.ndarray:
        from ragkit._torch import pack_by_tokens, run_with_oom_retry

        if not texts:
            return np.empty((0, self._dim), dtype=np.float32)
        ids, cut = self._tokenize(texts)
        if cut:
            message = (
                f"{cut} of {len(texts)} texts exceed max_length={self.max_length} tokens and were truncated"
            )
            if self._on_truncate == "error":
                raise InputTooLongError(message + " (on_truncate='error')")
            if self._on_truncate == "warn":
                warnings.warn(message, RagkitWarning, stacklevel=3)
        lengths = [len(x) for x in ids]
        max_padding = _MAX_PADDING.get(self._device.type, _FALLBACK_MAX_PADDING)
        batches = pack_by_tokens(lengths, self._max_batch_tokens, max_padding=max_padding)
        show = self._show_progress
        if show is None:
            show = sum(lengths) > _PROGRESS_MIN_BATCHES * self._max_batch_tokens and sys.stderr.isatty()
        pooled = np.empty((len(texts), self._native_dim), dtype=np.float32)
        from tqdm.auto import tqdm

        with tqdm(total=len(texts), disable=not show, unit="text", desc="embedding") as bar:
            runs = run_with_oom_retry(
                batches,
                lengths,
                lambda b: self._forward([ids[i] for i in b]),
                self._max_batch_tokens,
                max_padding=max_padding,
            )
            for batch, vectors in runs:
                pooled[batch] = vectors
                bar.update(len(batch))
        out = pooled[:, : self._dim]
        out = l2_normalize(out) if self._normalize else out
        return np.ascontiguousarray(out, dtype=np.float32)

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        """Pad one batch (left for last-token pooling, right otherwise), run the model, pool."""
        import torch

        input_ids, mask = self._framing.pad(seqs)
        dev = self._device
        inputs: dict[str, Any] = {
            "input_ids": torch.from_numpy(input_ids).to(dev),
            "attention_mask": torch.from_numpy(mask).to(dev),
        }
        if self._pass_positions:
            positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
            inputs["position_ids"] = torch.from_numpy(positions).to(dev)
        if self._pass_no_cache:
            inputs["use_cache"] = False
        with torch.inference_mode():
            # Pooling in float32 whatever the model's dtype (the L2 normalisation follows in numpy float32).
            hidden = self._net(**inputs).last_hidden_state
            return pool(hidden, inputs["attention_mask"], self._pooling).cpu().numpy()


class Qwen3Embedder(TransformersEmbedder):
    """Qwen3-Embedding (0.6B / 4B / 8B) exactly as its model card computes it.

    A preset of :class:`TransformersEmbedder`: last-token pooling with left padding, every input ending
    in ``<|endoftext|>`` (appended when the tokenizer does not, kept through truncation), queries
    written ``"Instruct: {instruction}\\nQuery:{text}"``, documents bare, L2-normalised.

    Args:
        model: a hub id or a local directory of a Qwen3-Embedding model.
        dim: Matryoshka size in ``[32, native]`` (native: 1024 / 2560 / 4096); the first ``dim``
            components are kept and re-normalised.
        instruction: the default task of queries; ``None`` means the model card's default,
            ``DEFAULT_QWEN3_TASK``. ``embed_queries(texts, instruction=...)`` overrides it per call.
        max_length: tokens per input including ``<|endoftext|>`` (8192; lowered to the model's limit).
        device, dtype, max_batch_tokens, quantize, revision, local_files_only, show_progress,
        on_truncate, kernels: as in :class:`TransformersEmbedder`.

    Example:
        >>> emb = Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B", dim=256)  # doctest: +SKIP
        >>> q = emb.embed_queries(["What is the capital of China?"])  # doctest: +SKIP
        >>> d = emb.embed_documents(["The capital of China is Beijing."])  # doctest: +SKIP
        >>> float(q @ d.T) > 0.5  # doctest: +SKIP
        True
    """

    min_dim = 32
    _end_of_text = "<|endoftext|>"

    def __init__(
        self,
        model: str | os.PathLike[str] = "Qwen/Qwen3-Embedding-0.6B",
        *,
        dim: int | None = None,
        instruction: str | None = DEFAULT_QWEN3_TASK,
        device: str | Any = "auto",
        dtype: str | Any = "auto",
        max_length: int = 8192,
        max_batch_tokens: int | None = None,
        quantize: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        show_progress: bool | None = None,
        on_truncate: str = "warn",
        kernels: str = "auto",
    ) -> None:
        super().__init__(
            model,
            pooling="last",
            dim=dim,
            normalize=True,
            device=device,
            dtype=dtype,
            max_length=max_length,
            max_batch_tokens=max_batch_tokens,
            query_template=QWEN3_QUERY_TEMPLATE,
            document_template="{text}",
            instruction=DEFAULT_QWEN3_TASK if instruction is None else instruction,
            quantize=quantize,
            revision=revision,
            local_files_only=local_files_only,
            show_progress=show_progress,
            on_truncate=on_truncate,
            kernels=kernels,
        )

    def _spec_kwargs(self) -> dict[str, Any]:
        return {
            "model": self._model_ref,
            "dim": self._dim,
            "instruction": self._instruction,
            "max_length": self._framing.max_length,
            "quantize": self._quantize,
            "revision": self._revision,
            "on_truncate": self._on_truncate,
        }
