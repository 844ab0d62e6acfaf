"""The files of a saved :class:`~ragkit.index.FaissIndex`: the JSON sidecar beside the FAISS binary.

The sidecar records the kind, parameters, counts and tombstones, and the binary's size, so that
``load`` can check a binary's structure before trusting it. Content checksums are the caller's layer
(a saved pipeline's manifest, :mod:`ragkit.persistence`).

Example:
    >>> from pathlib import Path
    >>> sidecar_path(Path("vectors.faiss")).name
    'vectors.faiss.json'
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.errors import IntegrityError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "read_binary",
    "read_sidecar",
    "sidecar_path",
    "stored_ids",
]

FORMAT = "ragkit-faiss"
FORMAT_VERSION = 2
# Version 1 sidecars also held the binary's sha256; it is ignored (checksums are the manifest's).
READABLE_VERSIONS = (1, 2)


def sidecar_path(path: Path) -> Path:
    """The sidecar of a FAISS file: ``path + ".json"``."""
    return path.with_name(path.name + ".json")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The validated sidecar of ``path``; :class:`IntegrityError` when it is missing or damaged."""
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise IntegrityError(f"{side} is missing: FaissIndex.save writes it beside {path.name}") from e
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{side} is not readable JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IntegrityError(f"{side} is not a ragkit FAISS sidecar")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise IntegrityError(
            f"{side} has format_version {meta.get('format_version')!r}; this ragkit reads "
            f"{FORMAT_VERSION}: rebuild the index from the store (Pipeline.load does it)"
        )
    expected = {
        "spec": dict,
        "active_kind": str,
        "ntotal": int,
        "live": int,
        "tombstones": list,
        "bytes": int,
    }
    for key, typ in expected.items():
        if not isinstance(meta.get(key), typ):
            raise IntegrityError(f"{side} lacks a valid {key!r}")
    if meta["active_kind"] not in ("flat", "hnsw", "ivf"):
        raise IntegrityError(f"{side} names an unknown index kind {meta['active_kind']!r}")
    return meta


def stored_ids(faiss: Any, index: Any, active: str, dim: int | None, ntotal: int) -> np.ndarray | None:
    """The ids a freshly read FAISS index holds, or ``None`` when it is not what the sidecar says."""
    if index.d != dim or index.ntotal != ntotal or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    if active == "ivf":
        if not isinstance(index, faiss.IndexIVFFlat):
            return None
        invlists = index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(j), invlists.list_size(j)).copy()
            for j in range(index.nlist)
            if invlists.list_size(j)
        ]
        ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    else:
        if not isinstance(index, faiss.IndexIDMap2):
            return None
        inner = faiss.downcast_index(index.index)
        wanted = faiss.IndexHNSWFlat if active == "hnsw" else faiss.IndexFlat
        if not isinstance(inner, wanted):
            return None
        ids = faiss.vector_to_array(index.id_map)
    ids = np.sort(ids.astype(np.int64))
    if len(ids) != ntotal or (len(ids) > 1 and (np.diff(ids) == 0).any()):
        return None
    return ids


def read_binary(
    path: Path, meta: dict[str, Any], dim: int | None, faiss_module: Callable[[], Any] | None
) -> tuple[Any, str, np.ndarray, np.ndarray]:
    """Read the FAISS binary ``path`` described by its sidecar ``meta``.

    Returns ``(index or None, active kind, live ids, tombstones)``; an empty binary (no vectors yet)
    is read with ``faiss_module=None``. Raises :class:`IntegrityError` when the binary is not what
    the sidecar describes.
    """
    active = meta["active_kind"]
    tombs = np.unique(np.asarray(meta["tombstones"], dtype=np.int64))
    index = None
    if faiss_module is not None:
        faiss = faiss_module()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise IntegrityError(f"FAISS cannot read {path}: {e}") from e
        stored = stored_ids(faiss, index, active, dim, meta["ntotal"])
        if stored is None:
            raise IntegrityError(f"{path} does not hold the {active} index its sidecar describes")
        live = np.setdiff1d(stored, tombs)
    else:
        live = np.empty(0, dtype=np.int64)
    if len(live) != meta["live"] or (len(tombs) and active != "hnsw"):
        raise IntegrityError(f"{path} holds {len(live)} live vectors, its sidecar says {meta['live']}")
    return index, active, live, tombs
