"""Dynamic batching with fair scheduling: one worker thread per model, requests split into sub-batches.

Each model has one :class:`Worker` thread, so torch runs one batch at a time. A request is a
:class:`Job`: its texts, counted in tokens by the worker thread when it first takes them (a big job
is counted before it is queued, see :data:`INLINE_COUNT_CHARS`). Jobs wait in a bounded queue. For
every model call the worker fills a batch of at most ``max_batch_tokens`` tokens, taking texts from
the jobs that have been served the fewest tokens so far (oldest first among equals), so a job is
served in sub-batches and a huge job cannot hold back a small one: a small job that arrives while a
huge one runs goes into the next batch. With batching on, a batch that is not full waits up
to ``batch_wait`` seconds for more jobs, and keeps taking the jobs that arrive while it is gathered.
A batch is run as one model call per :attr:`Job.key`, and each job is answered as soon as its last
texts are run, not when the whole batch is.

A job whose future is cancelled (its client disconnected) is dropped between sub-batches: its
remaining texts are never run. A failing model call that held several jobs is retried job by job,
so a request can only ever fail on its own inputs.

The worker reports to an :class:`Observer` (metrics): every model call, the queue depth, and (from
the service) the time models took to load.

Example:
    >>> def call(key, texts):
    ...     return np.zeros((len(texts), 4), dtype=np.float32)
    >>> worker = Worker("m", None, run=call, task="embedding", max_batch_tokens=8192, max_queue=256)
    >>> worker.submit(Job("document", ["a text", "another"], tokens=[3, 2])).result().shape
    (2, 4)
    >>> worker.close()
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ragkit.errors import RagkitError
from ragkit.serve.errors import ApiError, ClientGone, Overloaded
from ragkit.serve.hangups import Hangup, watch

__all__ = [
    "DEVICE_BATCH_TOKENS",
    "INLINE_COUNT_CHARS",
    "Job",
    "NullObserver",
    "Observer",
    "Worker",
    "device_budget",
    "estimate_tokens",
]

logger = logging.getLogger("ragkit")

INLINE_COUNT_CHARS = 16384
"""Jobs of at most this many characters are counted by the model's worker thread when it first takes
them (a few milliseconds at most with a fast tokenizer); bigger ones are counted before they are
queued, in a thread beside the event loop, so that neither the loop nor the model waits long on a
tokenizer."""

_COUNT_CHARS_PER_TOKEN = 4
"""Per model call, the worker counts queued jobs of up to this many characters per token of its budget
(and at least one job), so a flood of small jobs delays a model call by a few milliseconds at most;
the rest are counted for the next calls. Once the allowance is spent the batch stops gathering."""

_GATHER_WAITS = 25
"""A batch that keeps finding new jobs stops gathering after this many ``batch_wait`` periods (50 ms at
the default 2 ms), so a stream of requests (or of clients that hang up at once) cannot hold a call back."""

DEVICE_BATCH_TOKENS = {"cpu": 8192, "cuda": 65536}
"""Tokens gathered into one model call when ``max_batch_tokens`` is not given: a GPU wants big batches, a
CPU gains little above a few thousand tokens (the local embedders' own defaults agree)."""


class Observer(Protocol):
    """What the workers tell a metrics collector; every method must be cheap and must not raise.

    ``kind`` is the worker's task (``"embedding"`` or ``"rerank"``).

    Example:
        >>> class Printer:
        ...     def on_batch(self, kind, size, tokens, seconds): logging.info("%s %d", kind, size)
        ...     def on_queue(self, kind, depth): pass
        ...     def on_model_load(self, kind, seconds): pass
    """

    def on_batch(self, kind: str, size: int, tokens: int, seconds: float) -> None:
        """One model call: ``size`` texts (or rerank pairs), ``tokens`` tokens, in ``seconds``."""

    def on_queue(self, kind: str, depth: int) -> None:
        """The number of requests waiting (or partly served) for the model, after it changed."""

    def on_model_load(self, kind: str, seconds: float) -> None:
        """A model was loaded (or built) in ``seconds``."""


class NullObserver:
    """The default :class:`Observer`: ignores everything."""

    def on_batch(self, kind: str, size: int, tokens: int, seconds: float) -> None:
        pass

    def on_queue(self, kind: str, depth: int) -> None:
        pass

    def on_model_load(self, kind: str, seconds: float) -> None:
        pass


def device_budget(model: Any) -> int:
    """The default batch budget for the device a model is on (:data:`DEVICE_BATCH_TOKENS`)."""
    device = getattr(getattr(model, "device", None), "type", None)
    return DEVICE_BATCH_TOKENS.get(str(device), DEVICE_BATCH_TOKENS["cpu"])


@dataclass(eq=False)
class Job:
    """One request for a model: its texts, their tokens, and how the model must be called.

    Attributes:
        kind: ``"document"``, ``"query"`` or ``"rerank"``.
        texts: the inputs (rerank: the documents).
        instruction: query jobs: the task; ``None`` means the model's default.
        query: rerank jobs: the query.
        tokens: tokens per text (see :meth:`Worker.prepare`); empty until counted.
        future: resolves to the rows of all texts, in order; cancel it to drop the job.
    """

    kind: str
    texts: list[str]
    instruction: str | None = None
    query: str | None = None
    tokens: list[int] = field(default_factory=list)
    future: Future = field(default_factory=Future)
    served: int = field(default=0, init=False)  # tokens run so far (the scheduling key)
    _next: int = field(default=0, init=False, repr=False)  # the first text not yet taken into a batch
    _rows: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _failed: bool = field(default=False, init=False, repr=False)

    @property
    def key(self) -> Hashable:
        """Jobs with the same key can share one model call."""
        return (self.kind, self.instruction, self.query)

    @property
    def pending(self) -> bool:
        return self._next < len(self.texts)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def counted(self) -> bool:
        """Whether :attr:`tokens` holds a count per text."""
        return len(self.tokens) == len(self.texts)


def _chars(job: Job) -> int:
    return sum(len(t) for t in job.texts) + (len(job.query) * len(job.texts) if job.query else 0)


def estimate_tokens(job: Job) -> list[int]:
    """One token per four characters (plus one): the count for models without a token-counting hook."""
    texts = job.texts if job.query is None else [job.query + t for t in job.texts]
    return [len(t) // 4 + 1 for t in texts]


@dataclass(eq=False)
class _Piece:
    job: Job
    start: int
    end: int


class Worker:
    """One thread that owns a model and runs its jobs in fair, token-budgeted batches.

    Args:
        name: the served model name (thread name, logs).
        model: the model object (kept for the service: ``dim``, ``max_length``...).
        run: one model call: ``run(key, texts) -> array`` with one row (or score) per text, where
            ``key`` is the :attr:`Job.key` shared by all texts of the call.
        task: ``"embedding"`` or ``"rerank"`` (the observer's ``kind``).
        max_batch_tokens: tokens per model call (a single text over it runs alone).
        max_queue: jobs waiting or partly served; beyond it :meth:`submit` raises :class:`Overloaded`.
        count: tokens per text of a job (see :mod:`ragkit.serve.runners`); by default an estimate of
            one token per four characters.
        max_request_tokens: the cost cap: a job of more tokens is refused with a 413.
        batching: gather several jobs into one call; ``False``: one job per call.
        batch_wait: seconds a batch that is not full waits for more jobs.
        observer: the metrics hook.

    Attributes:
        batches: model-call rounds so far (tests and benchmarks).
        requests: jobs completed so far.
    """

    def __init__(
        self,
        name: str,
        model: Any,
        *,
        run: Callable[[Hashable, list[str]], Any],
        task: str,
        max_batch_tokens: int,
        max_queue: int,
        count: Callable[[Job], list[int]] | None = None,
        max_request_tokens: int | None = None,
        batching: bool = True,
        batch_wait: float = 0.002,
        observer: Observer | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.task = task
        self.runner = run  # the model's runner (ragkit.serve.runners): accepts_instruction, count...
        self._count = count or estimate_tokens
        self.max_request_tokens = max_request_tokens
        self._budget = max_batch_tokens
        self._max_queue = max_queue
        self._batching = batching
        self._wait = batch_wait
        self._observer: Observer = observer or NullObserver()
        self._cv = threading.Condition()
        self._queue: list[Job] = []  # jobs with texts not yet taken into a batch, in arrival order
        self._arrivals = 0  # jobs queued so far: tells the batch gathering that new ones came in
        self._closing = False
        self.batches = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._loop, name=f"ragkit-{task}-{name}", daemon=True)
        self._thread.start()

    # -- callers' side

    def prepare(self, job: Job) -> Job:
        """Count the tokens of ``job`` (once) and check them against the cost cap.

        Raises:
            ApiError: 413, the job has more than ``max_request_tokens`` tokens.
        """
        if len(job.tokens) != len(job.texts):
            try:
                tokens = [int(n) for n in self._count(job)]
                if len(tokens) != len(job.texts):
                    raise ValueError(f"{len(tokens)} token counts for {len(job.texts)} texts")
            except Exception:  # counting is bookkeeping: fall back to an estimate rather than fail
                logger.debug("ragkit serve: token count failed; estimating from characters", exc_info=True)
                tokens = estimate_tokens(job)
            job.tokens = tokens
        cap = self.max_request_tokens
        if cap is not None and job.total_tokens > cap:
            raise ApiError(
                413,
                f"the request has {job.total_tokens} tokens; at most {cap} per request are accepted "
                "(max_request_tokens)",
                code="request_too_costly",
            )
        return job

    def submit(self, job: Job) -> Future:
        """Queue ``job``; its future resolves to the rows of its texts (or raises a 413 over the cap).

        A job of at most :data:`INLINE_COUNT_CHARS` characters is queued uncounted: the worker thread
        counts it when it first takes it into a batch. A bigger one is counted here, in the caller's
        thread, before it is queued (:meth:`run` does that in a thread beside the event loop), so that
        the worker never spends long on a tokenizer.

        Raises:
            ApiError: 413, a big job over ``max_request_tokens`` (a small one gets it on its future).
            Overloaded: the queue is full, or the worker is shutting down.
        """
        if not job.counted and _chars(job) > INLINE_COUNT_CHARS:
            self.prepare(job)
        if not job.texts:
            job.future.set_result(np.zeros((0,), dtype=np.float32))
            return job.future
        with self._cv:
            if self._closing:
                raise Overloaded("the server is shutting down")
            if len(self._queue) >= self._max_queue:
                raise Overloaded(f"{self.name}: {len(self._queue)} requests are queued (max_queue)")
            self._queue.append(job)
            self._arrivals += 1
            depth = len(self._queue)
            self._cv.notify()
        self._observe_queue(depth)
        return job.future

    async def run(self, job: Job, *, gone: Callable[[], Awaitable[Any]] | Hangup | None = None) -> Any:
        """Submit ``job`` and await its rows; the job is cancelled once its client is gone.

        ``gone`` tells when the client has left: a :class:`Hangup` (fired by the transport: nothing runs
        while the client stays), or a coroutine function that returns when the client has left (for an
        HTTP request behind another server, :func:`ragkit.serve.hangups.client_left`), run beside the job
        and cancelled when the job is done. The job is also cancelled when the awaiting task is.

        Tokens are never counted on the event loop: a small job is counted by the worker thread (no
        thread hop on the way), a big one in a thread beside the loop before it is queued. Counting a
        small job on the loop made the loop about twice as busy per request as everything else it
        does (``benchmarks/server_load.py``).

        Raises:
            ClientGone: the client left before the job was done.
            ApiError: 413, the job is over ``max_request_tokens``.
        """
        if not job.counted and _chars(job) > INLINE_COUNT_CHARS:
            await asyncio.to_thread(self.prepare, job)
        future = asyncio.wrap_future(self.submit(job))
        if gone is None:
            return await future  # cancelling the awaiting task cancels the job (wrap_future chains it)
        left: list[bool] = []
        stop = watch(gone, future, left)
        try:
            return await future  # the watch cancels it when the client leaves
        except asyncio.CancelledError:
            if left:
                job.future.cancel()
                raise ClientGone() from None
            raise
        finally:
            stop()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, finish the queued ones, and end the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        """Jobs waiting or partly served."""
        return len(self._queue)

    # -- the worker thread

    def _loop(self) -> None:
        while True:
            pieces = self._next_batch()
            if pieces is None:
                return
            if not pieces:
                continue
            self.batches += 1
            start = time.perf_counter()
            try:
                self._execute(pieces)
            except Exception as e:  # a bug here must not kill the thread or strand the callers
                logger.exception("ragkit serve: %s worker failed on a batch", self.name)
                for piece in pieces:
                    self._fail(piece.job, e)
            seconds = time.perf_counter() - start
            size = sum(p.end - p.start for p in pieces)
            tokens = sum(sum(p.job.tokens[p.start : p.end]) for p in pieces)
            try:
                self._observer.on_batch(self.task, size, tokens, seconds)
            except Exception:  # metrics must never break serving
                logger.debug("ragkit serve: the observer failed", exc_info=True)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "ragkit serve: %s: %d requests, %d texts, %d tokens in %.1f ms (%d queued)",
                    self.name,
                    len({id(p.job) for p in pieces}),
                    size,
                    tokens,
                    seconds * 1000,
                    len(self._queue),
                )

    def _next_batch(self) -> list[_Piece] | None:
        """The pieces of the next model call (``[]``: only cancelled or refused jobs were found; ``None``:
        closed). Jobs queued uncounted are counted here, outside the lock.

        With batching on, a batch that is not full waits up to ``batch_wait`` for more jobs, and past
        that keeps taking jobs for as long as each look finds one that arrived since the last (up to
        :data:`_GATHER_WAITS` waits in all): under a steady load the answers of one call come back as a
        stream of new requests, and cutting the stream at a fixed deadline splits the clients into groups
        that take turns in small calls (``benchmarks/server_load.py`` measured about 60% more model
        calls, and fewer requests per second, that way).
        """
        with self._cv:
            while not self._queue:
                if self._closing:
                    return None
                self._cv.wait()
        pieces: list[_Piece] = []
        used = 0
        deadline = last = 0.0
        allowance = self._budget * _COUNT_CHARS_PER_TOKEN  # characters to count for this call
        while True:
            with self._cv:
                seen = self._arrivals
            allowance = self._count_waiting(allowance)
            with self._cv:
                pieces, used = self._fill(pieces, used)
                if not self._batching or used >= self._budget or self._closing or allowance <= 0:
                    break
                now = time.monotonic()
                if not deadline:
                    deadline, last = now + self._wait, now + _GATHER_WAITS * self._wait
                if self._arrivals != seen and now < last:
                    continue  # jobs came in while the others were counted: take them too
                if now >= deadline:
                    break
                self._cv.wait(deadline - now)
                if self._arrivals == seen:
                    break  # the wait ran out with nothing new
        self._observe_queue(len(self._queue))
        return pieces

    def _count_waiting(self, allowance: int) -> int:
        """Count the queued jobs that are not (outside the lock: submitters never wait on a tokenizer),
        in arrival order, until ``allowance`` characters are counted (at least one job while any is left);
        return what is left of it. A job over the cost cap gets its 413 and leaves the queue before any
        of it runs."""
        with self._cv:
            todo = [j for j in self._queue if not j.counted and not j.future.cancelled()]
        for job in todo:
            try:
                self.prepare(job)
            except Exception as e:  # the cost cap
                self._fail(job, e)
            allowance -= _chars(job)
            if allowance <= 0:
                break
        return allowance

    def _fill(self, pieces: list[_Piece], used: int) -> tuple[list[_Piece], int]:
        """Add texts to ``pieces`` under the budget, least-served jobs first (holds the lock).

        Two passes: first every waiting job may take an equal share of what is left of the budget (so
        several newcomers share the next call), then the leftover goes to the same jobs in order (to the
        new ones only, when there are new ones).
        """
        for job in [j for j in self._queue if j.future.cancelled()]:
            self._queue.remove(job)  # the client left: the remaining sub-batches are never run
            logger.debug("ragkit serve: %s: dropped a cancelled request", self.name)
        mine = {id(p.job): p for p in pieces}
        # Least served first; sorted() is stable, so among equals the oldest job comes first.
        # Jobs not counted yet (queued after the count) wait for the next call.
        candidates = sorted(
            (j for j in self._queue if id(j) not in mine and j.counted), key=lambda j: j.served
        )
        if not self._batching:
            candidates = candidates[:1] if not pieces else []
        if not candidates:
            return pieces, used
        share = max(1, (self._budget - used) // len(candidates))
        # A call that holds a new request is not topped up with requests served before: it stays as
        # short as it can, while every older request still gets its share (so none of them starves).
        fresh = any(j.served == 0 for j in candidates)
        older = {id(j) for j in candidates if j.served > 0}
        for limit in (share, self._budget):
            for job in candidates:
                if used >= self._budget:
                    break
                if not job.pending or (limit != share and fresh and id(job) in older):
                    continue
                start = end = job._next
                taken = 0
                while end < len(job.texts):
                    cost = job.tokens[end]
                    fits = used + cost <= self._budget and taken + cost <= limit
                    if not (fits or used == 0):  # a text over the whole budget runs alone
                        break
                    used += cost
                    taken += cost
                    end += 1
                if end == start:
                    continue
                job._next = end
                job.served += taken
                if id(job) in mine:
                    mine[id(job)].end = end  # contiguous with what this call already holds
                else:
                    mine[id(job)] = _Piece(job, start, end)
                    pieces.append(mine[id(job)])
                if not job.pending:
                    self._queue.remove(job)
        return pieces, used

    def _execute(self, pieces: list[_Piece]) -> None:
        groups: dict[Hashable, list[_Piece]] = {}
        for piece in pieces:
            groups.setdefault(piece.job.key, []).append(piece)
        for key, group in groups.items():
            self._run_group(key, group)
            for piece in group:  # answer each job as soon as its last texts are run, not at the round's end
                if not piece.job.pending:
                    self._finish(piece.job)

    def _run_group(self, key: Hashable, pieces: list[_Piece]) -> None:
        """One model call for all texts of ``pieces``; each job gets its own rows."""
        texts = [t for p in pieces for t in p.job.texts[p.start : p.end]]
        try:
            out = np.asarray(self.runner(key, texts))
            if len(out) != len(texts):
                raise RagkitError(f"the model returned {len(out)} results for {len(texts)} inputs")
        except Exception as e:
            if len(pieces) == 1:
                self._fail(pieces[0].job, e)
                return
            logger.info(
                "ragkit serve: a batch of %d requests failed (%r); running them one by one", len(pieces), e
            )
            for piece in pieces:
                self._run_group(key, [piece])
            return
        start = 0
        for piece in pieces:
            end = start + piece.end - piece.start
            piece.job._rows.append(out[start:end].copy())
            start = end

    def _fail(self, job: Job, error: BaseException) -> None:
        if job._failed:
            return
        job._failed = True
        with self._cv:
            if job in self._queue:
                self._queue.remove(job)  # its remaining sub-batches are not run
        job._next = len(job.texts)
        if not job.future.done() and job.future.set_running_or_notify_cancel():  # done: answered already
            job.future.set_exception(error)

    def _finish(self, job: Job) -> None:
        if job._failed:
            return
        self.requests += 1
        rows = np.concatenate(job._rows) if len(job._rows) > 1 else job._rows[0]
        job._rows = []
        if job.future.set_running_or_notify_cancel():
            job.future.set_result(rows)

    def _observe_queue(self, depth: int) -> None:
        try:
            self._observer.on_queue(self.task, depth)
        except Exception:
            logger.debug("ragkit serve: the observer failed", exc_info=True)
