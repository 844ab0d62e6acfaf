"""The public surface and the quality bar: pinned __all__, light import, no print, no pickle, ruff."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ragkit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ragkit"

PUBLIC = [
    "AuthenticationError",
    "BadRequestError",
    "Chunk",
    "ConfigError",
    "CorruptFileError",
    "Document",
    "EncryptedFileError",
    "Hit",
    "IndexMismatchError",
    "InputTooLongError",
    "InputTypeError",
    "IntegrityError",
    "InvalidInputError",
    "LoaderError",
    "LockError",
    "MissingDependencyError",
    "Pipeline",
    "RagkitError",
    "RagkitWarning",
    "RateLimitError",
    "ReadOnlyError",
    "RecursiveChunker",
    "RemoteError",
    "SearchResults",
    "Section",
    "StorageError",
    "UnavailableError",
    "UnsupportedFormatError",
    "__version__",
]


def test_all_is_pinned_sorted_and_resolvable():
    assert ragkit.__all__ == PUBLIC
    assert ragkit.__all__ == sorted(ragkit.__all__)
    for name in ragkit.__all__:
        assert getattr(ragkit, name) is not None


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "ragkit.embedders",
            ["DEFAULT_QWEN3_TASK", "Embedder", "OpenAIEmbedder", "Qwen3Embedder", "TransformersEmbedder"],
        ),
        ("ragkit.rerankers", ["Qwen3Reranker", "RemoteReranker", "Reranker", "rerank"]),
        ("ragkit.index", ["FaissIndex", "VectorIndex"]),
        ("ragkit.backends", ["Backend", "LocalBackend", "PostgresBackend", "open_saved"]),
        ("ragkit.components", ["ROLES", "build_component", "component_entry", "register_component"]),
        ("ragkit.loaders", ["SUPPORTED_SUFFIXES", "format_of", "is_supported", "load_file"]),
        (
            "ragkit.folder",
            ["EmptyFile", "FailedFile", "FileWarning", "FolderReport", "SkippedFile", "index_folder"],
        ),
        (
            "ragkit.serve",
            ["BackgroundServer", "MIN_DIMENSIONS", "NullObserver", "Observer", "create_app", "serve_main"],
        ),
        ("ragkit.serve.hangups", ["HANGUP_SCOPE_KEY", "Hangup", "client_left", "hangup_of", "watch"]),
        (
            "ragkit.serve.keys",
            ["ENV_VAR", "KeyRedactor", "bearer_matches", "collect_api_keys", "read_key_file"],
        ),
        ("ragkit.serve.metrics", ["LATENCY_BUCKETS", "Metrics", "MetricsMiddleware", "multiprocess_mode"]),
        (
            "ragkit.serve.transport",
            [
                "CLOSE_REASONS",
                "ConnectionGuard",
                "DEFAULT_BODY_TIMEOUT",
                "DEFAULT_HEADER_TIMEOUT",
                "DEFAULT_MAX_CONNECTIONS",
                "DEFAULT_WRITE_TIMEOUT",
                "RateLimitFilter",
                "limit_log_floods",
                "raise_nofile_limit",
            ],
        ),
        (
            "ragkit.serve.workers",
            ["WORKER_HEADER", "WorkerApp", "multiprocess_dir", "run_workers", "threads_per_worker"],
        ),
        (
            "ragkit.models",
            [
                "KEYWORDS",
                "OFFLINE_MODEL",
                "QWEN3_EMBEDDING",
                "QWEN3_RERANKER",
                "hub_available",
                "load_embedder",
                "load_reranker",
                "model_type",
                "offline_model_dir",
            ],
        ),
    ],
)
def test_subpackage_surfaces(module, names):
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__ == names == sorted(names)
    for name in names:
        assert getattr(mod, name) is not None


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_import_needs_no_heavy_dependency():
    heavy = ("torch", "transformers", "faiss", "bm25s", "fastapi", "psycopg", "datasets")
    out = _run(
        "import sys, ragkit, ragkit.embedders, ragkit.rerankers, ragkit.index, ragkit.backends, "
        "ragkit.components, ragkit.filters, ragkit.persistence, ragkit.loaders, ragkit.folder; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    assert out == "[]"


def test_missing_optional_dependency_names_the_extra():
    out = _run(
        "import sys; sys.modules['torch'] = None\n"
        "from ragkit.errors import MissingDependencyError\n"
        "from ragkit.embedders import Qwen3Embedder\n"
        "try:\n"
        "    Qwen3Embedder('Qwen/Qwen3-Embedding-0.6B')\n"
        "except MissingDependencyError as e:\n"
        "    print(e)\n"
    )
    assert "pip install 'ragkit[local]'" in out


def _library_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_print_in_library_code():
    offenders = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_no_pickle_anywhere_in_the_library():
    offenders = []
    for path in _library_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno} allow_pickle")
    assert not offenders, offenders


def test_py_typed_marker_ships():
    assert (PACKAGE / "py.typed").exists()


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
    reason="ruff not installed",
)
def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run(
        [ruff, "check", "--quiet", "ragkit", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _public_modules() -> list[str]:
    names = []
    for path in _library_files():
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts) or parts[-1] == "__main__":
            continue
        names.append(".".join(parts))
    return names


@pytest.mark.parametrize("module", _public_modules())
def test_every_public_module_has_an_explicit_sorted_all(module):
    import importlib

    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    assert names is not None, f"{module} has no __all__"
    assert list(names) == sorted(names), module
    for name in names:
        assert getattr(mod, name) is not None, (module, name)


@pytest.mark.parametrize(
    "module",
    [
        "ragkit._folder_report",
        "ragkit._secrets",
        "ragkit.backends.base",
        "ragkit.backends.local",
        "ragkit.backends.local_files",
        "ragkit.backends.postgres_filter",
        "ragkit.backends.rows",
        "ragkit.backends.sqlite_files",
        "ragkit.backends.sqlite_filter",
        "ragkit.backends.sqlite_schema",
        "ragkit.chunking",
        "ragkit.components",
        "ragkit.display",
        "ragkit.diversity",
        "ragkit.errors",
        "ragkit.embedders._pooling",
        "ragkit.embedders.st_layout",
        "ragkit.filter_tree",
        "ragkit.filters",
        "ragkit.folder",
        "ragkit.fusion",
        "ragkit.index.base",
        "ragkit.index.faiss",
        "ragkit.index.faiss_build",
        "ragkit.index.faiss_files",
        "ragkit.index.faiss_search",
        "ragkit.index.flat_scoring",
        "ragkit.index.rescore",
        "ragkit.loaders",
        "ragkit.loaders._markup",
        "ragkit.persistence",
        "ragkit.runtime",
        "ragkit.store",
        "ragkit.structure",
        "ragkit.testsets",
        "ragkit.types",
    ],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"
