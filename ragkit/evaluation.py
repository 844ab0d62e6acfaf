"""Retrieval evaluation: the standard ranking metrics, and ``evaluate(pipeline, dataset)``.

Test collections (:class:`RetrievalDataset`, :func:`load_dataset` and the loaders of each layout)
live in :mod:`ragkit.testsets` and are re-exported here. The metrics follow trec_eval / pytrec_eval (what BEIR
reports): graded gains for nDCG, binary relevance (``rel > 0``) for the others. A chunked pipeline
returns several hits per document: every metric first keeps each document's first (best) hit only.

Example:
    >>> dataset = load_dataset("data/cisi")                    # doctest: +SKIP
    >>> report = evaluate(pipe, dataset, modes=("dense", "hybrid"))      # doctest: +SKIP
    >>> print(report)                                                    # doctest: +SKIP
    >>> ndcg_at_k(["d3", "d1", "d3"], {"d1": 1}, k=2)
    0.6309297535714575
"""

from __future__ import annotations

import html
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field, model_validator

from ragkit.errors import InputTypeError, InvalidInputError
from ragkit.testsets import RetrievalDataset, load_beir, load_dataset, load_hf_beir, load_smart

__all__ = [
    "EvaluationReport",
    "EvaluationRow",
    "RetrievalDataset",
    "average_precision",
    "evaluate",
    "evaluate_run",
    "load_beir",
    "load_dataset",
    "load_hf_beir",
    "load_smart",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
]

logger = logging.getLogger("ragkit")

# A document is usually split into a few chunks; asking for this many chunk hits per wanted document
# leaves k distinct documents after de-duplication in practice.
_CHUNK_OVERSAMPLING = 3
# Searched once, untimed, before each mode is timed; a text no test collection asks.
_WARM_UP_QUERY = "ragkit evaluation warm-up query"


# -- metrics ---------------------------------------------------------------------------------------


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain at ``k``, with graded gains.

    ``DCG@k = Σ_{i=1..k} rel_i / log2(i + 1)``, divided by the DCG of the ideal ordering of all judged
    documents (trec_eval's ``ndcg_cut``, as BEIR reports it). Relevance ``<= 0`` gains nothing. A
    document repeated in ``ranked`` counts at its first position only. 0 when nothing is relevant.

    Example:
        >>> # (2 / log2(3) + 1 / log2(4)) / (2 / log2(2) + 1 / log2(3))
        >>> round(ndcg_at_k(["a", "b", "c"], {"b": 2, "c": 1}, k=3), 4)
        0.6697
    """
    k = _check_cutoff(k)
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    if idcg == 0:
        return 0.0
    dcg = sum(max(qrels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(_unique(ranked)[:k]))
    return dcg / idcg


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """The fraction of the relevant documents found in the first ``k`` distinct documents.

    Example:
        >>> recall_at_k(["a", "a", "b", "c"], {"b": 1, "z": 1}, k=2)
        0.5
    """
    k = _check_cutoff(k)
    relevant = {d for d, r in qrels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_unique(ranked)[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document among the first ``k`` distinct ones (else 0).

    Example:
        >>> mrr_at_k(["a", "a", "b"], {"b": 1}, k=10)
        0.5
    """
    k = _check_cutoff(k)
    for i, d in enumerate(_unique(ranked)[:k]):
        if qrels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def average_precision(ranked: Sequence[str], qrels: Mapping[str, int], k: int | None = None) -> float:
    """Average precision of one ranking; its mean over queries is MAP.

    ``AP = Σ_{i: doc i relevant, i <= k} precision@i / R``, with R the number of relevant documents
    (all of them, not only those within ``k``: trec_eval's ``map`` and ``map_cut_k``). ``k=None``
    uses the whole ranking. Repeated documents count at their first position only.

    Example:
        >>> average_precision(["a", "b", "c", "d"], {"a": 1, "c": 1, "x": 1})  # (1/1 + 2/3) / 3
        0.5555555555555555
    """
    if k is not None:
        k = _check_cutoff(k)
    relevant = {d for d, r in qrels.items() if r > 0}
    if not relevant:
        return 0.0
    found = 0
    total = 0.0
    for i, d in enumerate(_unique(ranked)[:k]):
        if d in relevant:
            found += 1
            total += found / (i + 1)
    return total / len(relevant)


def evaluate_run(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    k: int = 10,
    ks: Sequence[int] = (1, 3, 10),
) -> dict[str, float]:
    """Mean metrics of a run (query id → ranked document ids) over the queries with a relevant document.

    Returns ``ndcg@c`` and ``recall@c`` for each cut-off ``c`` in ``ks``, ``mrr@k`` and ``map@k``.
    Queries whose judgements are all ``<= 0`` are skipped (no metric is defined for them); a judged
    query missing from ``run`` scores 0. This is how peers that are not a ragkit pipeline are scored
    in the same way (see ``benchmarks/quality.py``).

    Example:
        >>> evaluate_run({"q1": ["d2", "d1"]}, {"q1": {"d1": 1}}, k=2, ks=(1, 2))["mrr@2"]
        0.5
    """
    k, ks = _check_ks(k, ks)
    judged = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not judged:
        raise InvalidInputError("no query has a relevant document: nothing to evaluate")
    sums: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value

    for q in judged:
        ranked = list(run.get(q, ()))
        rels = qrels[q]
        for c in ks:
            add(f"ndcg@{c}", ndcg_at_k(ranked, rels, c))
        for c in ks:
            add(f"recall@{c}", recall_at_k(ranked, rels, c))
        add(f"mrr@{k}", mrr_at_k(ranked, rels, k))
        add(f"map@{k}", average_precision(ranked, rels, k))
    return {name: total / len(judged) for name, total in sums.items()}


# -- evaluating a pipeline -------------------------------------------------------------------------


class _Searchable(Protocol):
    def __len__(self) -> int: ...

    def add(self, documents: Any) -> Any: ...

    def search_many(
        self, queries: list[str], *, k: int, mode: str, candidates: int | None, **kwargs: Any
    ) -> Any: ...


class EvaluationRow(BaseModel):
    """One system's scores in an :class:`EvaluationReport`.

    Attributes:
        name: the search mode for a pipeline ("dense", "lexical", "hybrid"), or a peer's label.
        metrics: metric name ("ndcg@10", "recall@10", "mrr@10", "map@10") → mean over queries.
        queries: how many queries were scored.
        seconds: wall-clock time of the searches.
        queries_per_second: ``queries / seconds``.

    Example:
        >>> EvaluationRow(name="dense", metrics={"ndcg@10": 0.4}, queries=2, seconds=0.5).queries_per_second
        4.0
    """

    name: str
    metrics: dict[str, float]
    queries: int
    seconds: float
    queries_per_second: float = 0.0

    @model_validator(mode="after")
    def _rate(self) -> EvaluationRow:
        if self.queries_per_second == 0.0 and self.seconds > 0:
            self.queries_per_second = self.queries / self.seconds
        return self


class EvaluationReport(BaseModel):
    """Scores of one or more systems on one dataset; prints as a table.

    ``str(report)`` is a fixed-width table, :meth:`to_markdown` a Markdown table, and notebooks render
    :meth:`_repr_html_`. :meth:`to_dict` / :meth:`to_json` give the raw values.

    Example:
        >>> report = EvaluationReport(
        ...     dataset="toy", documents=3, k=10,
        ...     rows=[EvaluationRow(name="dense", metrics={"ndcg@10": 0.5}, queries=4, seconds=2.0)],
        ... )
        >>> print(report)
        toy: 4 queries, 3 documents
        system  ndcg@10  queries/s
        ------  -------  ---------
        dense    0.5000        2.0
        >>> report.row("dense").metrics["ndcg@10"]
        0.5
    """

    dataset: str
    documents: int
    k: int
    rows: list[EvaluationRow] = Field(default_factory=list)
    index_seconds: float | None = None

    def row(self, name: str) -> EvaluationRow:
        """The row of the system called ``name``; ``KeyError`` if there is none."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-compatible values."""
        return self.model_dump()

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as a JSON string."""
        return self.model_dump_json(indent=indent)

    def _table(self) -> tuple[list[str], list[list[str]]]:
        metrics: list[str] = []
        for r in self.rows:
            metrics += [m for m in r.metrics if m not in metrics]
        header = ["system", *metrics, "queries/s"]
        body = [
            [
                r.name,
                *(f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics),
                f"{r.queries_per_second:.1f}",
            ]
            for r in self.rows
        ]
        return header, body

    def __repr__(self) -> str:  # the table, not pydantic's one-line dump of every float
        return str(self)

    def _title(self) -> str:
        queries = max((r.queries for r in self.rows), default=0)
        return f"{self.dataset}: {queries} queries, {self.documents} documents"

    def __str__(self) -> str:
        header, body = self._table()
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        lines = [self._title(), line(header), "  ".join("-" * w for w in widths)]
        return "\n".join(lines + [line(row) for row in body])

    def to_markdown(self) -> str:
        """The table in GitHub Markdown.

        Example:
            >>> EvaluationReport(dataset="toy", documents=0, k=10).to_markdown().splitlines()[2]
            '| system | queries/s |'
        """
        header, body = self._table()
        lines = [f"**{self._title()}**", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)

    def plot(self, metrics: Sequence[str] | str | None = None, *, ax: Any = None) -> Any:
        """A grouped bar chart: one group per metric, one bar per system (matplotlib).

        Args:
            metrics: the metrics to show; ``None`` is every ``ndcg@*`` and ``recall@*`` of the rows.
            ax: a matplotlib ``Axes`` to draw on; ``None`` makes a new figure.

        Returns:
            The ``Axes``.

        Raises:
            MissingDependencyError: matplotlib is not installed (``pip install 'ragkit[notebook]'``).

        Example:
            >>> report.plot(["ndcg@10", "recall@10"])  # doctest: +SKIP
        """
        plt = _pyplot()
        names = self._metric_names(metrics)
        if ax is None:
            _, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) * max(1, len(self.rows)) / 2), 3.5))
        width = 0.8 / max(1, len(self.rows))
        for i, row in enumerate(self.rows):
            xs = [j + (i - (len(self.rows) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, [row.metrics.get(m, 0.0) for m in names], width, label=row.name)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("score")
        ax.set_title(self._title())
        ax.legend(fontsize="small")
        return ax

    def plot_tradeoff(self, metric: str = "ndcg@10", *, ax: Any = None) -> Any:
        """Quality against speed: ``metric`` over queries per second (log scale), one point per system.

        Returns:
            The matplotlib ``Axes``.

        Example:
            >>> report.plot_tradeoff("ndcg@10")  # doctest: +SKIP
        """
        plt = _pyplot()
        (name,) = self._metric_names([metric])
        if ax is None:
            _, ax = plt.subplots(figsize=(5.0, 3.5))
        for row in self.rows:
            ax.scatter(row.queries_per_second, row.metrics.get(name, 0.0), label=row.name)
            ax.annotate(row.name, (row.queries_per_second, row.metrics.get(name, 0.0)), fontsize="small")
        ax.set_xscale("log")
        ax.set_xlabel("queries/s (log scale)")
        ax.set_ylabel(name)
        ax.set_title(self._title())
        return ax

    def _metric_names(self, metrics: Sequence[str] | str | None) -> list[str]:
        known: list[str] = []
        for r in self.rows:
            known += [m for m in r.metrics if m not in known]
        if metrics is None:
            return [m for m in known if m.startswith(("ndcg@", "recall@"))] or known
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in names if m not in known]
        if unknown or not names:
            raise InvalidInputError(f"unknown metrics {unknown or names}: the report has {known}")
        return names

    def _repr_html_(self) -> str:
        header, body = self._table()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        return (
            f"<p><b>{html.escape(self._title())}</b></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        )


def _pyplot() -> Any:
    from ragkit._deps import require

    require("matplotlib", purpose="EvaluationReport.plot()")
    import matplotlib.pyplot as plt

    return plt


def evaluate(
    pipeline: _Searchable,
    dataset: RetrievalDataset,
    *,
    modes: Sequence[str] = ("dense",),
    k: int = 10,
    ks: Sequence[int] = (1, 3, 10),
    candidates: int | None = None,
    batch_size: int = 64,
    ignore_identical_ids: bool = False,
    show_progress: bool | None = None,
    search_kwargs: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Search every judged query of ``dataset`` with ``pipeline`` in each mode, and score the results.

    An empty pipeline gets ``dataset.corpus`` added first (the time it took is ``index_seconds``); a
    pipeline that already holds documents is assumed to hold this corpus, so one index can be
    evaluated many times. For each query, ``3 * k`` chunk hits are requested, so that ``k`` distinct
    documents remain after a document's later chunks are dropped.

    ``queries_per_second`` times the ``search_many`` calls only. Before timing a mode, one untimed
    search of a fixed warm-up query lets the pipeline build what it builds lazily (the BM25 index on
    the first lexical search), so that is not counted as query time. A pipeline also caches query
    embeddings, so every mode after the first one that embeds the queries runs with warm
    embeddings: for comparable timings, build the pipeline with ``query_cache_size=0``.

    Args:
        pipeline: a :class:`ragkit.Pipeline`, or any object with ``__len__``, ``add`` and
            ``search_many(queries, k=, mode=, candidates=)``.
        dataset: the test collection.
        modes: the search modes to compare, one report row each.
        k: how many documents each query retrieves; MRR and MAP are cut there.
        ks: cut-offs for nDCG and Recall, each <= ``k``.
        candidates: passed to ``search_many`` (first-stage depth; ``None`` is the pipeline's default).
        batch_size: queries per ``search_many`` call.
        ignore_identical_ids: drop a hit whose document id equals the query id; set it for
            collections whose corpus holds the queries themselves (BEIR's ArguAna and Quora). Off by
            default: elsewhere query and document ids are separate namespaces (CISI numbers both from 1,
            and 7 of its queries judge their same-numbered document relevant).
        show_progress: a progress bar; ``None`` shows it only on a terminal.
        search_kwargs: more keyword arguments for every ``search_many`` call (for example
            ``{"fusion": "convex", "alpha": 0.6}`` or ``{"diversity": 0.3}``).

    Returns:
        An :class:`EvaluationReport` with one row per mode.

    Example:
        >>> report = evaluate(pipe, dataset, modes=("lexical", "dense", "hybrid"))  # doctest: +SKIP
        >>> report.row("hybrid").metrics["ndcg@10"]                                 # doctest: +SKIP
    """
    if not isinstance(dataset, RetrievalDataset):
        raise InputTypeError(f"dataset must be a RetrievalDataset, got {type(dataset).__name__}")
    if isinstance(modes, str):
        raise InputTypeError("modes must be a sequence of str, not a single str: wrap it as (mode,)")
    modes = list(modes)
    if not modes or not all(isinstance(m, str) for m in modes):
        raise InvalidInputError(f"modes must be a non-empty sequence of str, got {modes!r}")
    k, ks = _check_ks(k, ks)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")

    index_seconds = None
    if len(pipeline) == 0:
        logger.info("evaluate: adding %d documents of %s", len(dataset.corpus), dataset.name)
        start = time.perf_counter()
        pipeline.add(dataset.corpus)
        index_seconds = time.perf_counter() - start

    query_ids = [q for q, rels in dataset.qrels.items() if any(r > 0 for r in rels.values())]
    if not query_ids:
        raise InvalidInputError(f"{dataset.name} has no query with a relevant document")
    texts = [dataset.queries[q] for q in query_ids]

    from tqdm.auto import tqdm

    rows = []
    for mode in modes:
        run: dict[str, list[str]] = {}
        extra = dict(search_kwargs or {})
        pipeline.search_many(
            [_WARM_UP_QUERY], k=k * _CHUNK_OVERSAMPLING, mode=mode, candidates=candidates, **extra
        )
        seconds = 0.0
        bar = tqdm(total=len(texts), desc=f"evaluate {mode}", disable=_disable(show_progress), unit="q")
        for batch_ids, batch_texts in _batches(query_ids, texts, batch_size):
            start = time.perf_counter()
            results = pipeline.search_many(
                batch_texts, k=k * _CHUNK_OVERSAMPLING, mode=mode, candidates=candidates, **extra
            )
            seconds += time.perf_counter() - start
            if len(results) != len(batch_texts):
                raise InvalidInputError(f"search_many returned {len(results)} results for {len(batch_texts)}")
            for qid, hits in zip(batch_ids, results, strict=True):
                docs = [h.doc_id for h in hits if not (ignore_identical_ids and h.doc_id == qid)]
                run[qid] = _unique(docs)[:k]
            bar.update(len(batch_texts))
        bar.close()
        metrics = evaluate_run(run, dataset.qrels, k=k, ks=ks)
        rows.append(EvaluationRow(name=mode, metrics=metrics, queries=len(query_ids), seconds=seconds))
        logger.info("evaluate %s on %s: %s", mode, dataset.name, metrics)
    return EvaluationReport(
        dataset=dataset.name, documents=len(dataset.corpus), k=k, rows=rows, index_seconds=index_seconds
    )


# -- helpers ---------------------------------------------------------------------------------------


def _unique(ranked: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for d in ranked:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _check_cutoff(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"a cut-off k must be an int >= 1, got {k!r}")
    return k


def _check_ks(k: Any, ks: Any) -> tuple[int, list[int]]:
    k = _check_cutoff(k)
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Iterable):
        raise InputTypeError(f"ks must be a sequence of int, got {type(ks).__name__}")
    cutoffs = sorted({_check_cutoff(c) for c in ks})
    if not cutoffs:
        raise InvalidInputError("ks must name at least one cut-off")
    if cutoffs[-1] > k:
        raise InvalidInputError(f"cut-off {cutoffs[-1]} exceeds k={k}: retrieve at least as many documents")
    return k, cutoffs


def _disable(show_progress: bool | None) -> bool | None:
    # tqdm's disable=None means "only on a terminal".
    return None if show_progress is None else not show_progress


def _batches(ids: list[str], texts: list[str], size: int) -> Iterator[tuple[list[str], list[str]]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size], texts[start : start + size]
