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

from ragkit.errors import ConfigError, InputTypeError, IntegrityError, InvalidInputError
from ragkit.persistence import write_atomic

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FilesMixin",
    "READABLE_VERSIONS",
    "read_binary",
    "read_sidecar",
    "sidecar_path",
    "stored_ids",
    "write_files",
]

FORMAT = "ragkit-faiss"
FORMAT_VERSION = 2
# Version 1 sidecars also held the binary's sha256; it is ignored (checksums are the manifest's).
READABLE_VERSIONS = (1, 2)


def sidecar_path(path: Path) -> Path:
    """The sidecar of a FAISS file: ``path + ".json"``."""
    return path.with_name(path.name + ".json")


def write_files(path: Path, index: Any, faiss_module: Callable[[], Any] | None, sidecar: dict) -> None:
    """Write ``index`` to ``path`` (empty when ``None``), then its sidecar, each atomically.

    ``sidecar`` holds the index's own entries (spec, kinds, counts, tombstones); the format, the
    binary's ``ntotal`` and size are added here.
    """
    if path.is_dir():
        raise InvalidInputError(f"save takes a file path, {path} is a directory")
    if index is None or faiss_module is None:
        write_atomic(path, lambda tmp: tmp.write_bytes(b""))
    else:
        faiss = faiss_module()
        write_atomic(path, lambda tmp: faiss.write_index(index, str(tmp)))
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **sidecar}
    full["ntotal"] = 0 if index is None else int(index.ntotal)
    full["bytes"] = path.stat().st_size
    text = json.dumps(full, indent=1)
    write_atomic(sidecar_path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_sidecar(path: Path, *, check_size: bool = False) -> dict[str, Any]:
    """The validated sidecar of ``path``; :class:`IntegrityError` when it is missing or damaged.

    ``check_size``: also require the binary to exist (:class:`FileNotFoundError`) with the size
    the sidecar records.
    """
    if check_size and not path.is_file():
        raise FileNotFoundError(f"no FAISS index at {path}")
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
    if check_size and path.stat().st_size != meta["bytes"]:
        raise IntegrityError(
            f"{path} has {path.stat().st_size} bytes, its sidecar says {meta['bytes']}: truncated?"
        )
    return meta


def _types(faiss: Any, active: str, compression: str | None) -> tuple[Any, Any]:
    """The FAISS classes of an ``active`` structure holding ``compression`` codes (``None``: float32)."""
    if active == "ivf":
        return {None: faiss.IndexIVFFlat, "int8": faiss.IndexIVFScalarQuantizer, "pq": faiss.IndexIVFPQ}[
            compression
        ], None
    if active == "flat":
        return (faiss.IndexFlat if compression is None else faiss.IndexScalarQuantizer), None
    storage = {None: faiss.IndexFlat, "int8": faiss.IndexScalarQuantizer, "pq": faiss.IndexPQ}[compression]
    return faiss.IndexHNSW, storage


def stored_ids(
    faiss: Any, index: Any, active: str, dim: int | None, ntotal: int, compression: str | None = None
) -> np.ndarray | None:
    """The ids a freshly read FAISS index holds, or ``None`` when it is not what the sidecar says.

    ``compression`` is that of the codes the structure holds (``None``: float32 vectors).
    """
    metric = faiss.METRIC_L2 if compression == "pq" else faiss.METRIC_INNER_PRODUCT
    if index.d != dim or index.ntotal != ntotal or index.metric_type != metric:
        return None
    wanted, storage = _types(faiss, active, compression)
    if active == "ivf":
        if not isinstance(index, wanted):
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
        if not isinstance(inner, wanted):
            return None
        if storage is not None and not isinstance(faiss.downcast_index(inner.storage), storage):
            return None
        ids = faiss.vector_to_array(index.id_map)
    ids = np.sort(ids.astype(np.int64))
    if len(ids) != ntotal or (len(ids) > 1 and (np.diff(ids) == 0).any()):
        return None
    return ids


def read_binary(
    path: Path,
    meta: dict[str, Any],
    dim: int | None,
    faiss_module: Callable[[], Any] | None,
    *,
    compression: str | None = None,
) -> tuple[Any, str, np.ndarray, np.ndarray]:
    """Read the FAISS binary ``path`` described by its sidecar ``meta``.

    Returns ``(index or None, active kind, live ids, tombstones)``; an empty binary (no vectors yet)
    is read with ``faiss_module=None``. ``compression`` is the index's setting; the sidecar's
    ``compressed`` says whether the structure holds its codes yet. Raises :class:`IntegrityError`
    when the binary is not what the sidecar describes.
    """
    active = meta["active_kind"]
    coded = meta.get("compressed", False)
    if not isinstance(coded, bool) or (coded and compression is None):
        raise IntegrityError(f"the sidecar of {path} has an invalid 'compressed' entry")
    tombs = np.unique(np.asarray(meta["tombstones"], dtype=np.int64))
    index = None
    if faiss_module is not None:
        faiss = faiss_module()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise IntegrityError(f"FAISS cannot read {path}: {e}") from e
        stored = stored_ids(faiss, index, active, dim, meta["ntotal"], compression if coded else None)
        if stored is None:
            raise IntegrityError(f"{path} does not hold the {active} index its sidecar describes")
        live = np.setdiff1d(stored, tombs)
    else:
        live = np.empty(0, dtype=np.int64)
    if len(live) != meta["live"] or (len(tombs) and active != "hnsw"):
        raise IntegrityError(f"{path} holds {len(live)} live vectors, its sidecar says {meta['live']}")
    return index, active, live, tombs


class FilesMixin:
    """``save`` and ``load`` of :class:`~ragkit.index.FaissIndex` (its state attributes are set there)."""

    _lock: Any
    _index: Any
    _active: str
    _live: np.ndarray
    _tombs: np.ndarray
    _ivf_nlist: int | None
    _coded: bool

    @staticmethod
    def _faiss_module() -> Any:
        from ragkit.index.faiss import _faiss

        return _faiss()

    def spec(self) -> dict[str, Any]:  # FaissIndex's
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: Any) -> Any:  # FaissIndex's
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` (FAISS binary) and ``path + ".json"`` (the sidecar).

        Each file is replaced atomically, the sidecar last; it records the binary's size and
        structure (kind, counts, tombstones), so a crash between the two or a truncated file is
        caught by :meth:`load`. Content checksums are the caller's layer: a saved pipeline's
        manifest records the sha256 of both files (:mod:`ragkit.persistence`).

        Example:
            >>> import numpy as np, tempfile, os
            >>> from ragkit.index import FaissIndex
            >>> index = FaissIndex()
            >>> index.add([1], np.float32([[1, 0]]))
            >>> path = os.path.join(tempfile.mkdtemp(), "index.faiss")
            >>> index.save(path)
            >>> copy = FaissIndex()
            >>> copy.load(path)
            >>> copy.ids().tolist()
            [1]
        """
        with self._lock.read():
            sidecar = {
                "spec": self.spec(),
                "active_kind": self._active,
                "ivf_nlist": self._ivf_nlist,
                "compressed": self._coded,
                "live": len(self._live),
                "tombstones": self._tombs.tolist(),
            }
            write_files(
                Path(path), self._index, self._faiss_module if self._index is not None else None, sidecar
            )

    def load(self, path: str | Path) -> None:
        """Replace this index's contents (and kind, parameters, dim) with a saved one.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            IntegrityError: the sidecar is missing or unreadable, or the binary's size, type or
                counts do not match it (a truncated or corrupted file).

        Example:
            >>> import numpy as np, tempfile, os
            >>> from ragkit.index import FaissIndex
            >>> path = os.path.join(tempfile.mkdtemp(), "index.faiss")
            >>> FaissIndex("flat", dim=2).save(path)
            >>> index = FaissIndex()
            >>> index.load(path)
            >>> index.kind, index.dim
            ('flat', 2)
        """
        path = Path(path)
        meta = read_sidecar(path, check_size=True)
        size = meta["bytes"]
        try:
            fresh = type(self).from_spec(meta["spec"])
        except (ConfigError, InputTypeError, TypeError) as e:
            raise IntegrityError(f"the sidecar of {path} holds an invalid spec: {e}") from e
        index, active, live, tombs = read_binary(
            path, meta, fresh.dim, self._faiss_module if size else None, compression=fresh.compression
        )
        with self._lock.write():
            self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "_lock"})
            self._index, self._active, self._live, self._tombs = index, active, live, tombs
            self._ivf_nlist = meta["ivf_nlist"]
            self._coded = bool(meta.get("compressed", False))
