"""How the server calls and counts a model: embedding and rerank runners, and the pipeline's batched views.

The server imports no concrete model class: what differs between models comes from the models.

* **Token counts** (batch budgets, ``usage``, the ``max_request_tokens`` cost cap): an embedder's
  ``token_counts(texts, *, query=False, instruction=None) -> list[int]`` and a reranker's
  ``token_counts(query, documents) -> list[int]`` (tokens the model reads, templates and special
  tokens included). Without it, ``count_tokens(text) -> int`` per text (an embedder's query template
  from its ``fingerprint`` filled in; a reranker's query plus each document), capped at
  ``max_length``. Without either (remote models, a user's own object): one token per four
  characters, plus one.
* **Instructions**: an embedder whose ``fingerprint["query_template"]`` has no ``{instruction}``
  slot takes none; one that does not say is trusted.
* **Hang-ups**: the pipeline's async calls (``aembed_*``, ``ascore``) watch :data:`CLIENT_GONE`, set
  by the ``/v1/search`` handler for its request, and drop their job's remaining sub-batches once the
  client has gone (:class:`~ragkit.serve.errors.ClientGone`).

Example:
    >>> worker = embed_worker("bge", model, max_batch_tokens=8192, max_queue=256)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np

from ragkit.serve.batching import Job, Worker
from ragkit.serve.hangups import Hangup

__all__ = [
    "BatchedEmbedder",
    "BatchedReranker",
    "CLIENT_GONE",
    "EmbedRunner",
    "RerankRunner",
    "embed_worker",
    "rerank_worker",
]

CLIENT_GONE: ContextVar[Callable[[], Awaitable[Any]] | Hangup | None] = ContextVar(
    "ragkit_client_gone", default=None
)
"""For the pipeline's model calls: how to tell that the current request's client has left, a
:class:`~ragkit.serve.hangups.Hangup` or a coroutine function that returns then (see
:meth:`ragkit.serve.batching.Worker.run`)."""

_SLOT = re.compile(r"\{(text|instruction)\}")


def _fill(template: str, text: str, instruction: str | None) -> str:
    # One pass, so that braces inside the text or the instruction are never read as placeholders.
    return _SLOT.sub(lambda m: text if m.group(1) == "text" else (instruction or ""), template)


def _max_length(model: Any) -> int | None:
    length = getattr(model, "max_length", None)
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None


def _per_text(model: Any, texts: Sequence[str]) -> list[int]:
    """``count_tokens`` per text capped at ``max_length``, else the characters/4 estimate."""
    count = getattr(model, "count_tokens", None)
    if not callable(count):
        return [len(t) // 4 + 1 for t in texts]
    cap = _max_length(model)
    return [min(int(count(t)), cap) if cap else int(count(t)) for t in texts]


class EmbedRunner:
    """Counts and calls an embedder; a job's key is ``(kind, instruction, None)``."""

    task = "embedding"

    def __init__(self, model: Any) -> None:
        self.model = model
        fingerprint = getattr(model, "fingerprint", None)
        fingerprint = fingerprint if isinstance(fingerprint, dict) else {}
        template = fingerprint.get("query_template")
        self._query_template = template if isinstance(template, str) and "{text}" in template else None
        task = fingerprint.get("instruction")
        self._default_task = task if isinstance(task, str) else None
        self.accepts_instruction = self._query_template is None or "{instruction}" in self._query_template
        self._hook = getattr(model, "token_counts", None)

    def count(self, job: Job) -> list[int]:
        """Tokens per text of ``job`` as the model reads them."""
        query = job.kind == "query"
        if callable(self._hook):
            return list(self._hook(job.texts, query=query, instruction=job.instruction))
        texts = job.texts
        if query and self._query_template is not None:
            task = job.instruction if job.instruction is not None else self._default_task
            texts = [_fill(self._query_template, t, task) for t in texts]
        return _per_text(self.model, texts)

    def __call__(self, key: Hashable, texts: list[str]) -> np.ndarray:
        kind, instruction, _ = key  # type: ignore[misc]
        if kind == "document":
            return self.model.embed_documents(texts)
        if instruction is None:
            return self.model.embed_queries(texts)
        return self.model.embed_queries(texts, instruction=instruction)


class RerankRunner:
    """Counts and calls a reranker; a job's key is ``("rerank", None, query)``: one query per call."""

    task = "rerank"

    def __init__(self, model: Any) -> None:
        self.model = model
        self._hook = getattr(model, "token_counts", None)

    def count(self, job: Job) -> list[int]:
        """Tokens per (query, document) pair of ``job``."""
        query = job.query or ""
        if callable(self._hook):
            return list(self._hook(query, job.texts))
        (q,) = _per_text(self.model, [query])
        cap = _max_length(self.model)
        pairs = [q + n for n in _per_text(self.model, job.texts)]
        return [min(n, cap) for n in pairs] if cap else pairs

    def __call__(self, key: Hashable, texts: list[str]) -> np.ndarray:
        _, _, query = key  # type: ignore[misc]
        return self.model.score(query or "", texts)


def _worker(runner: EmbedRunner | RerankRunner, name: str, **options: Any) -> Worker:
    return Worker(name, runner.model, run=runner, task=runner.task, count=runner.count, **options)


def embed_worker(name: str, model: Any, **options: Any) -> Worker:
    """A :class:`~ragkit.serve.batching.Worker` for an embedder (``options``: the Worker's)."""
    return _worker(EmbedRunner(model), name, **options)


def rerank_worker(name: str, model: Any, **options: Any) -> Worker:
    """A :class:`~ragkit.serve.batching.Worker` for a reranker (``options``: the Worker's)."""
    return _worker(RerankRunner(model), name, **options)


class BatchedEmbedder:
    """The served embedder as the loaded pipeline sees it: every call goes through the model's worker."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._model = worker.model

    def __getattr__(self, name: str) -> Any:  # count_tokens, max_length, spec, ...
        return getattr(self._model, name)

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self._model.fingerprint

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._worker.submit(Job("document", list(texts))).result()

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._worker.submit(Job("query", list(texts), instruction=instruction)).result()

    async def aembed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await self._worker.run(Job("document", list(texts)), gone=CLIENT_GONE.get())

    async def aembed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        job = Job("query", list(texts), instruction=instruction)
        return await self._worker.run(job, gone=CLIENT_GONE.get())


class BatchedReranker:
    """The served reranker as the loaded pipeline sees it (``score`` and ``ascore`` via the worker)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._model = worker.model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return self._worker.submit(Job("rerank", list(documents), query=query)).result()

    async def ascore(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return await self._worker.run(Job("rerank", list(documents), query=query), gone=CLIENT_GONE.get())
