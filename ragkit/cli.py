"""The ``ragkit`` command: ``index``, ``search``, ``eval``, ``serve`` and ``demo``.

Example:
    $ ragkit index docs/ --out my-index/ --sync
    $ ragkit search my-index/ "how do I rotate the keys?" -k 5
    $ ragkit search my-index/ "rotate keys" --json | jq '.hits[0].text'
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ragkit.errors import RagkitError

__all__ = ["main"]

logger = logging.getLogger("ragkit")


def _say(text: str = "", stream: TextIO | None = None) -> None:
    """Write a line of the command's output (commands talk to the terminal; the library logs)."""
    (stream or sys.stdout).write(text + "\n")


def _embedder(name: str, dim: int | None) -> Any:
    from ragkit.models import load_embedder

    # "auto" falls back to the offline MiniLM without the hub: every command says so (on stderr).
    return load_embedder(name, dim=dim, announce=sys.stderr)


def _dump(payload: Any) -> None:
    json.dump(payload, sys.stdout, ensure_ascii=False, indent=2)
    _say()


def _index_paths(paths: Sequence[str], out: Path) -> list[str]:
    """The paths to index, each checked before anything is written (a mistake in the last one must
    not leave the first ones written and the manifest stale), each folder or file once."""
    from ragkit.folder import check_root

    kept: dict[Path, str] = {}
    for raw in paths:
        folder = check_root(raw)
        if Path(raw).is_dir() and folder == out.resolve():
            raise RagkitError(f"--out {out} is the folder being indexed: give it its own directory")
        kept.setdefault(Path(raw).resolve(), raw)  # the same folder twice is indexed (and reported) once
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            raw_manifest = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw_manifest = None  # unreadable or damaged: Pipeline.load says what is wrong
        if isinstance(raw_manifest, dict) and "format_version" not in raw_manifest:
            raise RagkitError(
                f"--out {out} holds a manifest.json that is not a ragkit index's: give --out a new "
                "directory (or an existing ragkit index)"
            )
    return list(kept.values())


def _cmd_index(args: argparse.Namespace) -> int:
    from ragkit.folder import index_folder
    from ragkit.pipeline import Pipeline

    out = Path(args.out)
    paths = _index_paths(args.paths, out)
    if (out / "manifest.json").exists():
        pipe = Pipeline.load(
            out,
            embedder=_embedder(args.embedder, args.dim) if args.embedder != "auto" else None,
            trust_hosts=args.trust_hosts,
        )
    else:
        pipe = Pipeline(_embedder(args.embedder, args.dim))
    progress = False if (args.quiet or args.json) else None  # None: a bar on a terminal
    reports = []
    try:
        for raw in paths:
            reports.append(
                index_folder(
                    pipe,
                    raw,
                    sync=args.sync and Path(raw).is_dir(),  # a file named on its own is just indexed
                    follow_symlinks=args.follow_symlinks,
                    show_progress=progress,
                )
            )
        pipe.save(out)
        documents, chunks = len(pipe), pipe.backend.count_chunks()
    finally:
        pipe.close()
    failed = sum(len(r.failed) for r in reports)
    if args.json:
        totals = {
            name: sum(getattr(r, name) for r in reports)
            for name in ("files", "added", "updated", "unchanged", "removed", "chunks", "embedded")
        }
        totals |= {name: sum(len(getattr(r, name)) for r in reports) for name in ("skipped", "empty")}
        totals |= {"failed": failed, "warnings": sum(len(r.warnings) for r in reports)}
        _dump(
            {
                "index": str(out),
                "documents": documents,
                "chunks": chunks,
                "totals": totals,
                "folders": [r.to_dict() for r in reports],
            }
        )
    else:
        for report in reports:
            _say(str(report))
        tail = f"; {failed} file{'s' if failed != 1 else ''} failed" if failed else ""
        _say(f"{out}: {documents} documents, {chunks} chunks{tail}")
    # 1: indexed, but some files could not be read (listed above); empty and warned files were indexed.
    return 1 if failed else 0


def _print_hits(results: Any, stream: TextIO) -> None:
    from ragkit.display import location_label

    width = 100
    _say(f"query: {results.query}", stream)
    if not results:
        _say("  (no hits)", stream)
    for hit in results:
        snippet = " ".join(hit.text.split())
        if len(snippet) > width:
            snippet = snippet[: width - 1] + "…"
        where = location_label(hit.location)
        where = f"  ({where})" if where else ""
        _say(f"  {hit.rank:>2}. {hit.score:7.4f}  {hit.doc_id}  [{hit.start}:{hit.end}]{where}", stream)
        _say(f"      {snippet}", stream)
    timing = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in results.timings.items())
    _say(f"  ({timing})", stream)


def _cmd_search(args: argparse.Namespace) -> int:
    from ragkit.pipeline import Pipeline

    flt = None
    if args.filter:
        try:
            flt = json.loads(args.filter)
        except ValueError as e:
            raise RagkitError(f'--filter must be JSON, e.g. \'{{"lang": "en"}}\': {e}') from e
    embedder = None if args.embedder == "auto" else _embedder(args.embedder, None)
    pipe = Pipeline.load(args.index, embedder=embedder, read_only=True, trust_hosts=args.trust_hosts)
    results = pipe.search(
        args.query,
        k=args.k,
        mode=args.mode,
        filter=flt,
        candidates=args.candidates,
        diversity=args.diversity,
        fusion=args.fusion,
        alpha=args.alpha,
    )
    if args.json:
        _dump({"query": results.query, "timings": results.timings, "hits": [h.model_dump() for h in results]})
    else:
        _print_hits(results, sys.stdout)
    pipe.close()
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ragkit.evaluation import evaluate, load_dataset
    from ragkit.pipeline import Pipeline

    dataset = load_dataset(args.dataset)
    reranker = None
    if args.reranker:
        from ragkit.demo import load_reranker

        reranker = load_reranker(args.reranker)
    # No query-embedding cache: every mode embeds its own queries, so queries/s compare like with like.
    options: dict[str, Any] = {"reranker": reranker, "query_cache_size": 0}
    if args.index:
        embedder = None if args.embedder == "auto" else _embedder(args.embedder, args.dim)
        pipe = Pipeline.load(
            args.index, embedder=embedder, read_only=True, trust_hosts=args.trust_hosts, **options
        )
        sample = [d.id for d in dataset.corpus[:50]]
        if not any(pipe.get(doc_id) is not None for doc_id in sample):
            pipe.close()
            raise RagkitError(
                f"{args.index} does not hold {dataset.name}'s documents (none of its first {len(sample)} "
                "ids): index the collection's corpus there first, or leave out --index"
            )
    else:
        pipe = Pipeline(_embedder(args.embedder, args.dim), **options)
        pipe.add(dataset.corpus, show_progress=not (args.quiet or args.json))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    ks = [c for c in (1, 3, 10) if c < args.k] + [args.k]  # cut-offs up to -k (-k 5: 1, 3, 5)
    report = evaluate(
        pipe, dataset, modes=modes, k=args.k, ks=ks, show_progress=not (args.quiet or args.json)
    )
    if args.json:
        _dump(report.to_dict())
    else:
        _say(report.to_markdown() if args.markdown else str(report))
        _say("queries/s: search time per mode with the query cache off (each mode embeds its queries)")
    pipe.close()
    return 0


def _cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from ragkit.serve import serve_main

    return serve_main(rest)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ragkit.demo import run_demo

    return run_demo(embedder=args.embedder, reranker=args.reranker, offline=args.offline)


def _common(p: argparse.ArgumentParser) -> None:
    """Options every subcommand accepts, before or after its name."""
    p.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log what ragkit does (INFO)"
    )


def _trust(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-hosts",
        action="store_true",
        help="let the index connect where its manifest says (remote models, PostgreSQL); off by default",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragkit", description="Retrieval for RAG: index, search, evaluate, serve."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what ragkit does (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "index",
        help="index folders of documents (PDF, HTML, Word, Markdown, text, JSON/JSONL records), kept in sync",
        description="Index every supported file of each folder. A file's id is its path relative to the "
        "folder; unchanged files are skipped by content hash. Exit status: 0 when every file was indexed "
        "(files without text, or with bytes that did not decode, are listed as empty or warnings), 1 when "
        "some could not be read (they are listed as failed), 2 on an error (every path is checked before "
        "anything is written).",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="folders (a file's id: its path inside the folder), or single files (id: the file's name)",
    )
    p.add_argument("--out", required=True, help="the index directory (created, or updated when it exists)")
    p.add_argument(
        "--sync",
        action="store_true",
        help="also remove documents of files gone from these folders (never other folders' or added ones)",
    )
    p.add_argument(
        "--follow-symlinks", action="store_true", help="follow symlinks that lead outside the folder"
    )
    p.add_argument(
        "--embedder", default="auto", help="hub id, local directory, or 'auto' (Qwen3 0.6B, else MiniLM)"
    )
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dimension of a Qwen3 embedder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the counts and the skipped, failed, empty and warned files as JSON",
    )
    _trust(p)
    _common(p)
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="search an index directory")
    p.add_argument("index", help="the index directory")
    p.add_argument("query", help="the question")
    p.add_argument("-k", type=int, default=5, help="how many hits (default 5)")
    p.add_argument(
        "--mode",
        default="dense",
        choices=["dense", "lexical", "hybrid"],
        help="retrieval mode (default dense)",
    )
    p.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"lang": "en"}\'')
    p.add_argument("--candidates", type=int, default=None, help="first-stage depth before reranking")
    p.add_argument(
        "--diversity",
        type=float,
        default=None,
        help="MMR λ in [0, 1]: 0 relevance order, larger more diverse",
    )
    p.add_argument("--fusion", choices=["rrf", "convex"], default=None, help="hybrid mode's fusion")
    p.add_argument("--alpha", type=float, default=None, help="convex fusion's weight of the dense side")
    p.add_argument("--embedder", default="auto", help="'auto' rebuilds the embedder saved with the index")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _trust(p)
    _common(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("eval", help="evaluate retrieval on a BEIR or SMART (e.g. CISI) dataset directory")
    p.add_argument(
        "dataset",
        help="a BEIR directory (corpus.jsonl, queries.jsonl, qrels/), a SMART collection or a hub id",
    )
    p.add_argument(
        "--index", metavar="DIR", help="a saved index of the dataset's corpus to evaluate (no re-embedding)"
    )
    p.add_argument(
        "--embedder",
        default="auto",
        help="hub id, local directory, or 'auto' (Qwen3 0.6B, else MiniLM; with --index: the saved one)",
    )
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dimension of a Qwen3 embedder")
    p.add_argument("--reranker", default=None, help="a Qwen3-Reranker hub id or directory (default: none)")
    p.add_argument(
        "--modes", default="dense,lexical,hybrid", help="comma-separated modes to compare (default all three)"
    )
    p.add_argument("-k", type=int, default=10, help="documents retrieved per query; metrics cut there")
    p.add_argument("--markdown", action="store_true", help="print the report as a Markdown table")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _trust(p)
    _common(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "serve", help="OpenAI-compatible /v1/embeddings, /v1/rerank and /v1/search", add_help=False
    )
    p.set_defaults(func=None)

    p = sub.add_parser("demo", help="index ragkit's own documentation and answer a few questions")
    p.add_argument("--embedder", default="auto", help="hub id, local directory, or 'auto'")
    p.add_argument("--reranker", default="auto", help="hub id, local directory, 'auto' or 'none'")
    p.add_argument("--offline", action="store_true", help="do not try the model hub")
    _common(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def _configure_logging(verbose: bool) -> None:
    """Warnings from everyone; ragkit's own INFO with ``-v``. Third-party INFO/DEBUG (faiss's loader,
    bm25s, transformers) stays off either way."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ragkit").setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ragkit`` console script (also ``python -m ragkit``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv and argv[0] == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _cmd_serve(argparse.Namespace(), argv[1:])
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (RagkitError, OSError) as e:
        # OSError: a model or file that is not there (transformers says so with an OSError).
        # -v shows the traceback too.
        if args.verbose:
            logger.exception("ragkit %s failed", args.command)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _say(f"ragkit {args.command}: error: {first}", sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
