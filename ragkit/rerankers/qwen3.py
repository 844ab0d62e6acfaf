"""Local Qwen3-Reranker: P("yes") of a causal LM asked whether a document meets a query.

The prompt, the truncation and the score are those of the Qwen3-Reranker model card, so scores equal the
reference code's to float noise. Three things make it faster without changing a score:

* Only the two logits that matter are computed: ``P(yes) = sigmoid(h · (W[yes] - W[no]))`` where ``h`` is
  the last hidden state at the last position, instead of projecting every position onto the 151,936-token
  vocabulary.
* Prompts are sorted by length and split into batches under a token budget so as to waste the fewest
  padded slots (a greedy fill of the budget pads short prompts to the longest one).
* The candidates of one query share a long token prefix (system prompt, instruction, query). Its key/value
  cache is computed once and only the per-document tails run through the model.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragkit.embedders.base import DEFAULT_QWEN3_TASK, canonical_model_name, check_texts
from ragkit.errors import ConfigError, InputTypeError, RagkitWarning
from ragkit.rerankers.base import rerank as _rerank
from ragkit.runtime import Runtime
from ragkit.types import Hit, check_text

__all__ = ["DEFAULT_INSTRUCTION", "PROMPT_PREFIX", "PROMPT_SUFFIX", "Qwen3Reranker", "format_body"]

logger = logging.getLogger("ragkit")

DEFAULT_INSTRUCTION = DEFAULT_QWEN3_TASK

PROMPT_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
PROMPT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

# Below this many shared tokens, one extra forward pass and the cache copies cost more than they save.
_MIN_SHARED_TOKENS = 16
# The fixed cost of one more forward pass, per decoder layer, in FLOPs of model work it could have done:
# on a GPU each layer launches some sixty small kernels from Python (~1 ms) while the device could run
# ~2e11 FLOPs; on a CPU the launches are nothing next to the matrix products. Divided by the FLOPs of one
# token it gives the padded slots worth saving a pass for: thousands for a 0.6B model on a large GPU
# (whose passes are launch-bound), hundreds for an 8B one, the floor on a CPU. Rough on purpose: it only
# decides how batches trade padding against passes, never a score.
_PASS_FLOPS_PER_LAYER = {"cuda": 2e11, "mps": 2e11}
_MIN_PASS_OVERHEAD, _MAX_PASS_OVERHEAD = 64, 8192
# dtype="auto" on a CPU with native bfloat16 units stays float32 for the reranker. Evidence (issue 12,
# benchmarks/reranker_bf16_check.py; random weights of the 0.6B width, as no trained reranker weights are
# available offline): bfloat16 moved P(yes) by up to 0.030 at 4 layers (mean 0.007, 125 pairs) and 0.033
# at 28 layers (mean 0.011, 39 pairs), over the 1e-2 bar, although it ran 2.6x faster. A reranker's
# probabilities feed thresholds, so bfloat16 stays opt-in (dtype="bfloat16") until trained weights show it
# within the bar.
_CPU_BFLOAT16 = False


def format_body(instruction: str, query: str, document: str) -> str:
    """The part of the Qwen3-Reranker prompt between the fixed prefix and suffix.

    Example:
        >>> format_body("Find answers", "capital of France", "Paris.")
        '<Instruct>: Find answers\\n<Query>: capital of France\\n<Document>: Paris.'
    """
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def _single_token_id(tokenizer: Any, word: str, model: str) -> int:
    """The vocabulary id of ``word`` as one token (how the model card looks up "yes" and "no")."""
    token_id = tokenizer.convert_tokens_to_ids(word)
    if token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id):
        raise ConfigError(
            f"the tokenizer of {model!r} has no single token {word!r}: a Qwen3-Reranker scores the "
            'logits of the tokens "yes" and "no", so this model cannot be used as one'
        )
    return int(token_id)


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token id sequences."""
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for s in sequences[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return n


def _pack(lengths: Sequence[int], budget: int, *, extra: int = 0, overhead: int = 0) -> list[list[int]]:
    """Batches of item indices, longest first, with the fewest padded tokens plus ``overhead`` per batch.

    A batch is a run of the length-sorted order; it costs ``count * longest + overhead`` and holds
    ``count * (longest + extra) <= budget`` tokens in memory (``extra``: the shared prefix every row
    carries in its cache). A single item always fits. Unlike a greedy fill of the budget, this does not put
    a 40-token tail into a batch padded to 400 because there was room: on a CPU every padded slot costs as
    much as a real token. Dynamic programming over the sorted order, O(n * largest batch).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    width = np.array([max(1, lengths[i]) for i in order], dtype=np.int64)
    n = len(order)
    best = np.zeros(n + 1, dtype=np.int64)
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        # Candidate batches order[j:i]; the longest item is order[j]. Every width from j on is at least
        # width[i - 1], so no batch of more than budget // (width[i - 1] + extra) items can fit.
        most = max(1, budget // int(width[i - 1] + extra))
        j = np.arange(max(0, i - most), i)
        count = i - j
        cost = best[j] + count * width[j] + overhead
        cost[(count * (width[j] + extra) > budget) & (count > 1)] = np.iinfo(np.int64).max
        k = int(np.argmin(cost))
        best[i], start[i] = cost[k], j[k]
    batches: list[list[int]] = []
    i = n
    while i > 0:
        batches.append(order[int(start[i]) : i])
        i = int(start[i])
    return batches[::-1]


class Qwen3Reranker:
    """Qwen3-Reranker run locally with transformers: ``score(query, documents)`` gives P("yes").

    Args:
        model: a hub id or a local directory of a Qwen3-Reranker (any causal LM whose tokenizer has
            single "yes" and "no" tokens and the Qwen chat tokens works the same way).
        instruction: the task sentence of the prompt; ``None`` uses the model card's default,
            ``"Given a web search query, retrieve relevant passages that answer the query"``.
        max_length: the most tokens of one prompt. The instruction + query + document part is cut from
            the right so that the fixed prefix and suffix always fit; a ``max_length`` too small to hold
            them raises :class:`~ragkit.errors.ConfigError`.
        device: ``"auto"`` (CUDA, then MPS, then CPU), or a torch device string.
        dtype: ``"auto"`` (bf16 on CUDA, float32 elsewhere, even on CPUs with native bfloat16 units: on
            a random model of the 0.6B width bfloat16 moved scores by up to 0.03, over the 0.01 bar, see
            ``benchmarks/reranker_bf16_check.py``), ``"float32"``, ``"bfloat16"``, ``"float16"`` (GPU).
            The yes/no log-odds and the sigmoid run in float32 / float64 whatever the dtype.
        max_batch_tokens: the padded tokens one forward pass may hold (batch size times the longest
            prompt, counting the shared prefix). ``None``: 32768 on CUDA, 4096 elsewhere. On CUDA
            out-of-memory a batch is split and retried with half the budget.
        share_prefix: compute the key/value cache of the tokens all prompts of a call share (system
            prompt, instruction, query) once. Scores are the same either way, to float noise.
        show_progress: show a progress bar over documents; ``None`` shows one when the ``"ragkit"``
            logger is enabled for INFO.
        revision: the hub revision (branch, tag or commit) to load.
        local_files_only: never reach the hub; load from the local cache or directory only.
        kernels: float32 linear-layer kernels on CPU: ``"auto"`` (measured at load: oneDNN only when
            clearly faster than MKL), ``"mkl"`` or ``"onednn"``; see :mod:`ragkit.runtime`.

    Example:
        >>> rr = Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
        >>> rr.score("capital of France", ["Paris is the capital of France.", "Bananas are yellow."])
        ... # doctest: +SKIP
        array([0.998, 0.0003], dtype=float32)
    """

    def __init__(
        self,
        model: str = "Qwen/Qwen3-Reranker-0.6B",
        *,
        instruction: str | None = None,
        max_length: int = 8192,
        device: str | Any = "auto",
        dtype: str | Any = "auto",
        max_batch_tokens: int | None = None,
        share_prefix: bool = True,
        show_progress: bool | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        kernels: str = "auto",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a hub id or a directory, got {model!r}")
        if instruction is not None and not isinstance(instruction, str):
            raise InputTypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ConfigError(f"max_length must be a positive int, got {max_length!r}")
        if max_batch_tokens is not None and (
            isinstance(max_batch_tokens, bool)
            or not isinstance(max_batch_tokens, int)
            or max_batch_tokens < 1
        ):
            raise ConfigError(f"max_batch_tokens must be a positive int or None, got {max_batch_tokens!r}")

        from ragkit._backbone import check_kernels, load_backbone
        from ragkit._deps import require

        kernels = check_kernels(kernels)
        torch = require("torch", purpose="Qwen3Reranker")
        transformers = require("transformers", purpose="Qwen3Reranker")

        self._model_name = model
        self._instruction_arg = instruction
        self._instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        self._max_length = max_length
        self._revision = revision
        self._share_prefix = bool(share_prefix)
        self._show_progress = show_progress

        load = {"revision": revision, "local_files_only": local_files_only}
        tokenizer = transformers.AutoTokenizer.from_pretrained(model, **load)
        # The model card truncates the document end; a tokenizer configured otherwise must not change that.
        tokenizer.truncation_side = "right"
        self._tokenizer = tokenizer
        self._prefix_ids = tokenizer(PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
        self._suffix_ids = tokenizer(PROMPT_SUFFIX, add_special_tokens=False)["input_ids"]
        fixed = len(self._prefix_ids) + len(self._suffix_ids)
        if max_length <= fixed:
            raise ConfigError(
                f"max_length={max_length} cannot hold the fixed parts of the Qwen3-Reranker prompt "
                f"({len(self._prefix_ids)} prefix + {len(self._suffix_ids)} suffix tokens): "
                f"use max_length > {fixed}"
            )
        self._body_budget = max_length - fixed
        self._yes_id = _single_token_id(tokenizer, "yes", model)
        self._no_id = _single_token_id(tokenizer, "no", model)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        backbone = load_backbone(
            model,
            name=model,
            auto_class="AutoModelForCausalLM",
            purpose="Qwen3Reranker",
            device=device,
            dtype=dtype,
            kernels=kernels,
            cpu_bfloat16=_CPU_BFLOAT16,
            show_progress=show_progress,
            **load,
        )
        self._device, self._dtype = backbone.device, backbone.dtype
        self._max_batch_tokens = max_batch_tokens or (32768 if self._device.type == "cuda" else 4096)
        causal = backbone.model
        head = causal.get_output_embeddings()
        if head is None:
            raise ConfigError(f"{model!r} has no language-model head: it is not a Qwen3-Reranker")
        weight = head.weight
        if max(self._yes_id, self._no_id) >= weight.shape[0]:
            raise ConfigError(
                f"the tokenizer of {model!r} does not match its model: 'yes'/'no' ids out of range"
            )
        with torch.no_grad():
            # Computed in float32: the one direction that separates "yes" from "no".
            self._direction = (weight[self._yes_id].float() - weight[self._no_id].float()).to(self._device)
        # Keep only the transformer body; an untied LM head (vocabulary x hidden) is freed with ``causal``.
        self._model = causal.base_model
        config = self._model.config
        layer_types = getattr(config, "layer_types", None) or []
        # Sliding-window layers see only part of the cached prefix; keep them on the plain path.
        self._can_share = not getattr(config, "use_sliding_window", False) and all(
            t == "full_attention" for t in layer_types
        )
        del causal
        embedding = self._model.get_input_embeddings().weight.numel()
        flops_per_token = 2 * max(1, sum(p.numel() for p in self._model.parameters()) - embedding)
        per_pass = _PASS_FLOPS_PER_LAYER.get(self._device.type, 0.0) * config.num_hidden_layers
        self._pass_overhead = int(
            min(_MAX_PASS_OVERHEAD, max(_MIN_PASS_OVERHEAD, per_pass / flops_per_token))
        )

        def probe() -> np.ndarray:
            with torch.inference_mode():  # two prompts of different lengths, so padding is covered
                return self._score_plain([self._prefix_ids + self._suffix_ids, list(self._suffix_ids)])

        self._runtime = backbone.finish(self._model, probe)

    # -- public surface ---------------------------------------------------------------------------

    @property
    def instruction(self) -> str:
        """The instruction sentence put into every prompt.

        Example:
            >>> Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B").instruction  # doctest: +SKIP
            'Given a web search query, retrieve relevant passages that answer the query'
        """
        return self._instruction

    @property
    def max_length(self) -> int:
        """The most tokens of one prompt, fixed prefix and suffix included.

        Example:
            >>> Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B", max_length=1024).max_length  # doctest: +SKIP
            1024
        """
        return self._max_length

    @property
    def device(self) -> Any:
        """The torch device the model runs on, resolved once at construction.

        Example:
            >>> Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B", device="cpu").device  # doctest: +SKIP
            device(type='cpu')
        """
        return self._device

    @property
    def dtype(self) -> Any:
        """The torch dtype of the weights, resolved once at construction.

        Example:
            >>> Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B", device="cpu").dtype  # doctest: +SKIP
            torch.float32
        """
        return self._dtype

    @property
    def runtime(self) -> Runtime:
        """How this model runs here: device, dtype, kernels, attention, threads, and why (logged at INFO).

        Example:
            >>> str(Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B", device="cpu").runtime)  # doctest: +SKIP
            'cpu, float32, onednn kernels, sdpa attention, 2 threads'
        """
        return self._runtime

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What decides the scores: the canonical model name and the instruction (not device or dtype).

        Example:
            >>> Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B").fingerprint  # doctest: +SKIP
            {'kind': 'qwen3-reranker', 'model': 'qwen3-reranker-0.6b', 'instruction': 'Given a web ...'}
        """
        return {
            "kind": "qwen3-reranker",
            "model": canonical_model_name(self._model_name),
            "instruction": self._instruction,
        }

    def spec(self) -> dict[str, Any]:
        """How to rebuild this reranker: JSON-able, no secrets. ``Qwen3Reranker(spec["model"], **rest)``.

        Device, dtype and batch size are left to the machine that rebuilds it.

        Example:
            >>> Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B").spec()["class"]  # doctest: +SKIP
            'ragkit.rerankers.Qwen3Reranker'
        """
        return {
            "class": "ragkit.rerankers.Qwen3Reranker",
            "model": self._model_name,
            "instruction": self._instruction_arg,
            "max_length": self._max_length,
            "revision": self._revision,
        }

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's tokenizer (no special tokens added).

        Example:
            >>> Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B").count_tokens("Paris")  # doctest: +SKIP
            1
        """
        check_text(text)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_counts(self, query: str, documents: Sequence[str]) -> list[int]:
        """Tokens of each (query, document) prompt as the model reads it, prefix and suffix included.

        The hook ``ragkit serve`` budgets batches and caps request costs with.

        Example:
            >>> rr.token_counts("capital of France", ["Paris.", ""])  # doctest: +SKIP
            [71, 69]
        """
        check_text(query, "query")
        docs = check_texts(documents, "documents")
        if not docs:
            return []
        bodies = self._tokenizer(
            [format_body(self._instruction, query, d) for d in docs],
            add_special_tokens=False,
            return_attention_mask=False,
        )["input_ids"]
        frame = len(self._prefix_ids) + len(self._suffix_ids)
        return [frame + min(len(body), self._body_budget) for body in bodies]

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """P("yes") for each document against ``query``, in input order.

        Args:
            query: the search query; any ``str``, the empty one included.
            documents: the candidate texts; empty strings are valid.

        Returns:
            A float32 array of shape ``(len(documents),)`` with values in ``[0, 1]``.

        Raises:
            InputTypeError: ``query`` is not a ``str``, ``documents`` is a bare ``str`` or holds a non-str.

        Example:
            >>> rr = Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
            >>> rr.score("capital of France", ["Paris is the capital.", "Bananas."])  # doctest: +SKIP
            array([0.998, 0.0003], dtype=float32)
        """
        check_text(query, "query")
        docs = check_texts(documents, "documents")
        if not docs:
            return np.zeros(0, dtype=np.float32)
        import torch

        prompts = self._prompt_ids(query, docs)
        with torch.inference_mode():
            shared = self._shared_length(prompts)
            if shared:
                logits = self._score_with_shared_prefix(prompts, shared)
            else:
                logits = self._score_plain(prompts)
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)

    def rerank(
        self, query: str, documents: Sequence[str] | Sequence[Hit], *, k: int | None = None
    ) -> list[Hit]:
        """Score ``documents`` (texts or hits) and return the best ``k`` as hits, best first.

        Example:
            >>> rr = Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
            >>> [h.text for h in rr.rerank("capital of France", ["Bananas.", "Paris."], k=1)]
            ... # doctest: +SKIP
            ['Paris.']
        """
        return _rerank(self, query, documents, k=k)

    def __repr__(self) -> str:
        return (
            f"Qwen3Reranker({self._model_name!r}, max_length={self._max_length}, "
            f"device={str(self._device)!r}, dtype={str(self._dtype).removeprefix('torch.')!r}, "
            f"kernels={self._runtime.kernels!r})"
        )

    # -- internals --------------------------------------------------------------------------------

    def _prompt_ids(self, query: str, docs: list[str]) -> list[list[int]]:
        """Token ids of the full prompts, built as the model card does: prefix + cut body + suffix."""
        tok = self._tokenizer
        head = tok(format_body(self._instruction, query, "").rstrip(), add_special_tokens=False)["input_ids"]
        if len(head) >= self._body_budget:
            warnings.warn(
                f"the instruction and query fill the {self._body_budget} tokens that "
                f"max_length={self._max_length} leaves for them and the document, so the documents are cut "
                "away entirely and all score alike; raise max_length or shorten the query",
                RagkitWarning,
                stacklevel=3,
            )
        bodies = tok(
            [format_body(self._instruction, query, d) for d in docs],
            add_special_tokens=False,
            truncation=True,
            max_length=self._body_budget,
        )["input_ids"]
        return [self._prefix_ids + body + self._suffix_ids for body in bodies]

    def _shared_length(self, prompts: list[list[int]]) -> int:
        """How many leading tokens to run once for all prompts, or 0 for the plain path.

        Taken from the exact token ids, so the result cannot depend on where a BPE merge crossed the
        boundary between the query and a document. Every prompt keeps at least its last token in the tail.
        Sharing costs one more forward pass, so it is used only when it saves more than a pass costs
        (on a CPU: from two documents on; for a small model on a large GPU: from several dozen).
        """
        if not (self._share_prefix and self._can_share) or len(prompts) < 2:
            return 0
        shared = min(_common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
        if shared < _MIN_SHARED_TOKENS or (len(prompts) - 1) * shared <= self._pass_overhead:
            return 0
        return shared

    def _progress(self, total: int):
        show = self._show_progress
        if show is None:
            show = logger.isEnabledFor(logging.INFO)
        if not show:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="Reranking", unit="doc")

    def _run_batches(self, lengths: list[int], run, *, extra: int = 0) -> np.ndarray:
        """Run ``run(batch) -> logits`` over padding-aware batches; return the logits in input order."""
        from ragkit._torch import run_with_oom_retry

        out = np.empty(len(lengths), dtype=np.float64)
        batches = _pack(lengths, self._max_batch_tokens, extra=extra, overhead=self._pass_overhead)
        memory = [n + extra for n in lengths]  # what an out-of-memory retry re-packs by
        bar = self._progress(len(lengths))
        try:
            for batch, logits in run_with_oom_retry(batches, memory, run, self._max_batch_tokens):
                out[batch] = logits
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return out

    def _left_pad(self, seqs: list[list[int]]):
        """Left-padded ids and their 0/1 mask, so that every row's last slot is its last token."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s) :] = 1
        return ids, mask

    def _logits(self, hidden_last) -> np.ndarray:
        """``h · (W[yes] - W[no])``, the log-odds of "yes", in float32."""
        return (hidden_last.float() @ self._direction).cpu().numpy()

    def _score_plain(self, prompts: list[list[int]]) -> np.ndarray:
        def run(batch: list[int]) -> np.ndarray:
            ids, mask = self._left_pad([prompts[i] for i in batch])
            # Positions count real tokens only, so padding never shifts a prompt's rotary positions.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self._model(
                input_ids=ids.to(self._device),
                attention_mask=mask.to(self._device),
                position_ids=positions.to(self._device),
                use_cache=False,
            )
            return self._logits(out.last_hidden_state[:, -1])

        return self._run_batches([len(p) for p in prompts], run)

    def _score_with_shared_prefix(self, prompts: list[list[int]], shared: int) -> np.ndarray:
        import torch

        prefix = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=self._device)
        cache_arg = _cache_argument(self._model)
        first = self._model(input_ids=prefix, use_cache=True)
        prefix_cache = first.cache if cache_arg == "cache" else first.past_key_values
        tails = [p[shared:] for p in prompts]

        def run(batch: list[int]) -> np.ndarray:
            ids, mask = self._left_pad([tails[i] for i in batch])
            # Layout of a row: [shared prefix | left padding | tail]. The prefix is visible to every tail
            # token; padded slots are masked out as keys, and positions continue from the prefix length
            # over real tokens only, so the rotary positions are those of the unpadded prompt.
            full_mask = torch.cat([torch.ones((len(batch), shared), dtype=torch.long), mask], dim=1)
            positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
            # The forward pass appends to the cache it is given: each batch gets its own expanded copy so
            # that the shared prefix cache is never mutated.
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(batch))
            out = self._model(
                input_ids=ids.to(self._device),
                attention_mask=full_mask.to(self._device),
                position_ids=positions.to(self._device),
                use_cache=True,
                **{cache_arg: cache},
            )
            return self._logits(out.last_hidden_state[:, -1])

        # The budget counts the prefix too: each row of a batch holds its own copy of the prefix cache.
        return self._run_batches([len(t) for t in tails], run, extra=shared)


def _cache_argument(model: Any) -> str:
    """The name under which this transformers release passes a KV cache to a forward call.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40);
    the 4.x releases ragkit supports know only ``past_key_values``.
    """
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

