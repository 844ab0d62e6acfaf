"""The default vector index: FAISS, embedded in the process (flat, HNSW or IVF, chosen by size).

Example:
    >>> import numpy as np
    >>> from ragkit.index import FaissIndex
    >>> index = FaissIndex()  # kind="auto": exact search while small, HNSW once large
    >>> index.add(np.array([10, 11]), np.float32([[1, 0], [0.6, 0.8]]))
    >>> scores, ids = index.search(np.float32([[1, 0]]), k=3)
    >>> ids.tolist(), [round(float(s), 2) for s in scores[0]]
    ([[10, 11, -1]], [1.0, 0.6, -inf])
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit._sync import RWLock
from ragkit.errors import ConfigError, InputTypeError, IntegrityError, InvalidInputError
from ragkit.index.base import as_ids, member, unit_rows
from ragkit.index.faiss_files import FORMAT, FORMAT_VERSION, read_binary, read_sidecar, sidecar_path
from ragkit.persistence import write_atomic

__all__ = ["FaissIndex"]

logger = logging.getLogger("ragkit")

_KINDS = ("auto", "flat", "hnsw", "ivf")
_SPEC_KEYS = (
    "kind",
    "dim",
    "hnsw_m",
    "ef_construction",
    "ef_search",
    "nlist",
    "nprobe",
    "auto_threshold",
    "rebuild_ratio",
)
# FAISS's k-means wants at least this many training points per centroid (it warns below it).
_MIN_POINTS_PER_CENTROID = 39
# A filtered HNSW/IVF search over this many allowed vectors or fewer is always computed exactly.
_EXACT_FILTER_MIN = 2048
# Vectors reconstructed at a time by the exact path (8192 x 1024 float32 = 32 MiB).
_GATHER_CHUNK = 8192


_faiss_module: Any = None


def _faiss() -> Any:
    global _faiss_module
    if _faiss_module is None:
        _faiss_module = require("faiss", purpose="FaissIndex")
    return _faiss_module


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class FaissIndex:
    """A FAISS nearest-neighbour index over L2-normalised float32 vectors with caller-given int64 ids.

    Vectors are scaled to unit length on the way in (a copy: the caller's array is untouched), and
    scored by inner product, so every score is a cosine. Ids are the caller's (the pipeline's store
    assigns them and never reuses one): adding an id that is already live raises, and ids never shift
    when others are deleted.

    Kinds:
        ``"flat"``: exact search, every query compares against every vector.
        ``"hnsw"``: a graph (``IndexHNSWFlat``); approximate, fast at any size, slower to build.
        ``"ivf"``: inverted lists (``IndexIVFFlat``); ``nlist`` centroids are trained by k-means on
        the vectors of the first ``add``, which must hold at least 39 vectors per centroid (FAISS's
        k-means needs that many to place them). With ``nlist=None`` it is ``4 * sqrt(n)``, capped
        so that the first batch suffices. Queries visit the ``nprobe`` nearest lists.
        ``"auto"`` (default): flat up to ``auto_threshold`` live vectors, converted to HNSW by the
        ``add`` that crosses it (and back to flat if a tombstone rebuild finds it small again).
        The default threshold of 20,000 is measured on the 2-core development machine: one flat
        query at dim 1024 costs about 0.12 ms per 1,000 vectors on one core, so 20,000 vectors take
        about 2.4 ms per query, and beyond that HNSW (a fraction of a millisecond, recall above
        0.95) wins by a growing factor, while below it exact search costs no build time at all.

    Deletion:
        Flat and IVF remove vectors for real. HNSW cannot: a deleted id becomes a tombstone,
        excluded from every search by an id selector, and the graph is rebuilt from the index's own
        stored vectors once tombstones exceed ``rebuild_ratio`` of it. Deleting an unknown (or
        already deleted) id is a no-op, so replaying a deletion is safe.

    Filtered search:
        ``allowed_ids`` pre-filters through a FAISS id selector, before the top-k cut. A search
        returns ``min(k, live allowed vectors)`` hits on every row, for every kind: a selective
        filter widens HNSW's ``ef_search`` and IVF's ``nprobe`` by the inverse of its selectivity;
        a small allowed set (at most ``max(2048, sqrt(ef_search * hnsw_m * n))`` vectors for HNSW,
        the break-even between scoring them all and a widened graph walk; ``max(2048,
        n * sqrt(nprobe / nlist))`` for IVF) is scored exactly from the reconstructed vectors; and
        any row that still comes back short is recomputed exactly.

    Thread safety:
        Searches run concurrently with each other; ``add``, ``delete``, ``clear``, ``load`` and
        rebuilds take a write lock (writers are not starved by a stream of searches).

    Persistence:
        ``save(path)`` writes the FAISS binary to ``path`` and a JSON sidecar to ``path + ".json"``
        (kind, parameters, dim, counts, tombstones, the binary's size). ``load`` checks
        the sidecar against the file before FAISS reads a byte of it. No pickle.

    Args:
        kind: ``"auto"``, ``"flat"``, ``"hnsw"`` or ``"ivf"``.
        dim: the vector size; ``None`` takes it from the first ``add``.
        hnsw_m: HNSW graph degree (FAISS's ``M``).
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (raised to ``k`` when smaller).
        nlist: IVF centroid count; ``None`` picks it from the first batch.
        nprobe: IVF lists visited per query (capped at ``nlist``).
        auto_threshold: live vectors above which ``kind="auto"`` uses HNSW.
        rebuild_ratio: HNSW is rebuilt when tombstones exceed this fraction of its vectors.

    Raises:
        ConfigError: an unknown kind or an out-of-range option.

    Example:
        >>> import numpy as np
        >>> index = FaissIndex("flat", dim=2)
        >>> index.add([1, 2, 3], np.float32([[1, 0], [0, 1], [1, 1]]))
        >>> index.delete([2])
        >>> index.search(np.float32([0, 1]), k=2, allowed_ids=[1, 2])[1].tolist()
        [[1, -1]]
    """

    def __init__(
        self,
        kind: str = "auto",
        *,
        dim: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int = 16,
        auto_threshold: int = 20_000,
        rebuild_ratio: float = 0.2,
    ) -> None:
        if kind not in _KINDS:
            raise ConfigError(f"kind must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}")
        self._kind = kind
        self._init_dim = None if dim is None else _check_positive_int("dim", dim)
        self._hnsw_m = _check_positive_int("hnsw_m", hnsw_m, 2)
        self._ef_construction = _check_positive_int("ef_construction", ef_construction)
        self._ef_search = _check_positive_int("ef_search", ef_search)
        self._nlist = None if nlist is None else _check_positive_int("nlist", nlist)
        self._nprobe = _check_positive_int("nprobe", nprobe)
        self._auto_threshold = _check_positive_int("auto_threshold", auto_threshold)
        if (
            isinstance(rebuild_ratio, bool)
            or not isinstance(rebuild_ratio, (int, float))
            or not 0 < rebuild_ratio <= 1
        ):
            raise ConfigError(f"rebuild_ratio must be a number in (0, 1], got {rebuild_ratio!r}")
        self._rebuild_ratio = float(rebuild_ratio)
        self._lock = RWLock()
        self._reset()

    def _reset(self) -> None:
        # Arrays below are replaced, never mutated in place, so lock-free readers (len, ids) see a
        # consistent value.
        self._dim: int | None = self._init_dim
        self._index: Any = None
        self._active = "flat" if self._kind == "auto" else self._kind
        self._live = np.empty(0, dtype=np.int64)  # sorted live ids
        self._tombs = np.empty(0, dtype=np.int64)  # sorted HNSW tombstones
        self._ivf_nlist: int | None = None  # the nlist actually trained

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int | None:
        """The vector size, or ``None`` before the first ``add`` when none was given.

        Example:
            >>> FaissIndex(dim=8).dim
            8
        """
        return self._dim

    @property
    def kind(self) -> str:
        """The kind asked for: ``"auto"``, ``"flat"``, ``"hnsw"`` or ``"ivf"``.

        Example:
            >>> FaissIndex().kind
            'auto'
        """
        return self._kind

    @property
    def active_kind(self) -> str:
        """The structure in use now; ``"auto"`` resolves to ``"flat"`` or ``"hnsw"`` by size.

        Example:
            >>> FaissIndex().active_kind
            'flat'
        """
        return self._active

    def __len__(self) -> int:
        """The number of live vectors (tombstones not counted).

        Example:
            >>> len(FaissIndex())
            0
        """
        return len(self._live)

    def __repr__(self) -> str:
        return f"FaissIndex(kind={self._kind!r}, active={self._active!r}, dim={self._dim}, n={len(self)})"

    def ids(self) -> np.ndarray:
        """The live ids, sorted ascending (a copy).

        Example:
            >>> import numpy as np
            >>> index = FaissIndex()
            >>> index.add([5, 3], np.eye(2, dtype=np.float32))
            >>> index.ids().tolist()
            [3, 5]
        """
        return self._live.copy()

    def spec(self) -> dict[str, Any]:
        """The kind and parameters, JSON-serialisable; :meth:`from_spec` builds an empty twin.

        Example:
            >>> FaissIndex("hnsw", dim=4).spec()["kind"]
            'hnsw'
        """
        return {
            "kind": self._kind,
            "dim": self._dim,
            "hnsw_m": self._hnsw_m,
            "ef_construction": self._ef_construction,
            "ef_search": self._ef_search,
            "nlist": self._nlist,
            "nprobe": self._nprobe,
            "auto_threshold": self._auto_threshold,
            "rebuild_ratio": self._rebuild_ratio,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> FaissIndex:
        """Build an empty index from :meth:`spec`'s output.

        Raises:
            InputTypeError: ``spec`` is not a mapping.
            ConfigError: an unknown key or a bad value.

        Example:
            >>> FaissIndex.from_spec(FaissIndex("flat", dim=3).spec()).dim
            3
        """
        if not isinstance(spec, Mapping):
            raise InputTypeError(f"spec must be a dict, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(_SPEC_KEYS))
        if unknown:
            raise ConfigError(f"unknown FaissIndex spec keys {unknown}; known: {list(_SPEC_KEYS)}")
        return cls(**spec)

    # ------------------------------------------------------------------ writes

    def add(self, ids: Any, vectors: Any) -> None:
        """Add vectors under the caller's ids.

        Args:
            ids: n distinct non-negative ints, none of them live in the index. An id deleted
                earlier may come back.
            vectors: ``(n, dim)`` floats, finite and non-zero; scaled to unit length.

        Raises:
            InputTypeError: ids that are not integers.
            InvalidInputError: NaN/inf or zero vectors, a wrong ``dim``, mismatched lengths,
                duplicate or already present ids, too few vectors to train an IVF index.

        Example:
            >>> import numpy as np
            >>> index = FaissIndex()
            >>> index.add(np.arange(3), np.random.default_rng(0).random((3, 4)))
            >>> len(index), index.dim
            (3, 4)
        """
        ids = as_ids(ids)
        v = unit_rows(vectors, "vectors")
        if len(ids) != len(v):
            raise InvalidInputError(f"got {len(ids)} ids for {len(v)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise InvalidInputError("ids contain duplicates")
        with self._lock.write():
            if self._dim is not None and v.shape[1] != self._dim:
                raise InvalidInputError(f"vectors have {v.shape[1]} dimensions, the index has {self._dim}")
            if not len(ids):
                return
            present = ids[member(ids, self._live)]
            if len(present):
                raise InvalidInputError(
                    f"{len(present)} ids are already in the index (e.g. {present[:5].tolist()}); "
                    "delete them first to replace their vectors"
                )
            if len(self._tombs) and member(ids, self._tombs).any():
                # The graph still holds the old vector under that id: purge tombstones first.
                self._rebuild()
            if self._index is None:
                self._create(ids, v)
            elif (
                self._kind == "auto"
                and self._active == "flat"
                and len(self._live) + len(ids) > self._auto_threshold
            ):
                old_ids, old_v = self._stored_vectors()
                logger.info(
                    "FaissIndex: %d vectors pass auto_threshold, building HNSW", len(old_ids) + len(ids)
                )
                self._index = self._build("hnsw", np.concatenate([old_ids, ids]), np.concatenate([old_v, v]))
                self._active = "hnsw"
            else:
                self._index.add_with_ids(v, ids)
            self._dim = v.shape[1]
            new = np.sort(ids)
            self._live = np.insert(self._live, np.searchsorted(self._live, new), new)

    def delete(self, ids: Any) -> None:
        """Delete vectors by id. Unknown or already deleted ids are ignored (a no-op).

        Raises:
            InputTypeError: ids that are not integers.

        Example:
            >>> import numpy as np
            >>> index = FaissIndex("hnsw")
            >>> index.add([1, 2], np.eye(2, dtype=np.float32))
            >>> index.delete([2, 99])
            >>> len(index), index.search(np.float32([0, 1]), k=2)[1].tolist()
            (1, [[1, -1]])
        """
        ids = np.unique(as_ids(ids))
        with self._lock.write():
            ids = ids[member(ids, self._live)]
            if not len(ids):
                return
            faiss = _faiss()
            if self._active == "hnsw":
                self._tombs = np.union1d(self._tombs, ids)
            elif self._active == "ivf":
                # IVF's hash-table direct map only accepts an explicit array selector.
                self._index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
            else:
                self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)))
            self._live = np.delete(self._live, np.searchsorted(self._live, ids))
            if self._active == "hnsw" and len(self._tombs) > self._rebuild_ratio * self._index.ntotal:
                self._rebuild()

    def clear(self) -> None:
        """Remove every vector; ``dim`` goes back to the constructor's value.

        Example:
            >>> import numpy as np
            >>> index = FaissIndex()
            >>> index.add([1], np.float32([[1, 0]]))
            >>> index.clear()
            >>> len(index), index.dim
            (0, None)
        """
        with self._lock.write():
            self._reset()

    def _create(self, ids: np.ndarray, v: np.ndarray) -> None:
        kind = self._active
        if self._kind == "auto" and len(ids) > self._auto_threshold:
            kind = "hnsw"
        self._index = self._build(kind, ids, v)
        self._active = kind

    def _build(self, kind: str, ids: np.ndarray, v: np.ndarray) -> Any:
        faiss = _faiss()
        d = v.shape[1]
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        elif kind == "hnsw":
            graph = faiss.IndexHNSWFlat(d, self._hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = self._ef_construction
            index = faiss.IndexIDMap2(graph)
        else:
            n = len(ids)
            nlist = self._nlist or max(1, min(int(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CENTROID))
            if n < _MIN_POINTS_PER_CENTROID * nlist:
                raise InvalidInputError(
                    f"an IVF index trains its {nlist} centroids on its first add, which needs at least "
                    f"{_MIN_POINTS_PER_CENTROID * nlist} vectors ({_MIN_POINTS_PER_CENTROID} per centroid), "
                    f"got {n}: add a larger first batch, lower nlist, or use kind='auto' or 'hnsw'"
                )
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(v)
            # A hash-table direct map gives reconstruct-by-id (exact filtered path) and remove_ids.
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            self._ivf_nlist = nlist
        if len(ids):
            index.add_with_ids(v, ids)
        return index

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, vector) held by a flat or HNSW index, tombstones included, as copies."""
        faiss = _faiss()
        inner = faiss.downcast_index(self._index.index)
        storage = inner if self._active == "flat" else faiss.downcast_index(inner.storage)
        n, d = storage.ntotal, storage.d
        xb = faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d).copy() if n else np.empty((0, d))
        return faiss.vector_to_array(self._index.id_map).astype(np.int64), xb.astype(np.float32)

    def _rebuild(self) -> None:
        """Rebuild an HNSW index without its tombstones (as flat when ``auto`` finds it small)."""
        ids, v = self._stored_vectors()
        keep = ~member(ids, self._tombs)
        kind = "flat" if self._kind == "auto" and keep.sum() <= self._auto_threshold else "hnsw"
        logger.info(
            "FaissIndex: rebuilding %s without %d tombstones (%d live vectors)",
            kind,
            len(self._tombs),
            keep.sum(),
        )
        self._index = self._build(kind, ids[keep], v[keep])
        self._active = kind
        self._tombs = np.empty(0, dtype=np.int64)

    # ------------------------------------------------------------------ search

    def search(self, vectors: Any, k: int, *, allowed_ids: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live vectors of each query, by cosine.

        Args:
            vectors: ``(n, dim)`` queries (or one ``(dim,)`` query), finite and non-zero.
            k: how many hits per query, a positive int.
            allowed_ids: restrict the search to these ids (unknown ones are ignored); applied
                before the top-k cut, so a row is short only when fewer than ``k`` allowed ids live.

        Returns:
            ``(scores, ids)``: float32 and int64 arrays of shape ``(n, k)``, best first; missing
            hits are padded with ``-inf`` and ``-1``.

        Raises:
            InvalidInputError: ``k`` not a positive int, NaN/inf or zero queries, a wrong ``dim``.
            InputTypeError: ``allowed_ids`` that are not integers.

        Example:
            >>> import numpy as np
            >>> index = FaissIndex()
            >>> index.add([1, 2], np.float32([[1, 0], [0, 1]]))
            >>> index.search(np.float32([[1, 0.1]]), k=1)[1].tolist()
            [[1]]
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        k = int(k)
        q = unit_rows(vectors, "query vectors")
        allowed = None if allowed_ids is None else np.unique(as_ids(allowed_ids, "allowed_ids"))
        with self._lock.read():
            if self._dim is not None and q.shape[1] != self._dim:
                raise InvalidInputError(
                    f"query vectors have {q.shape[1]} dimensions, the index has {self._dim}"
                )
            scores = np.full((len(q), k), -np.inf, dtype=np.float32)
            labels = np.full((len(q), k), -1, dtype=np.int64)
            cand = None if allowed is None else allowed[member(allowed, self._live)]
            n_cand = len(self._live) if cand is None else len(cand)
            if not n_cand or not len(q):
                return scores, labels
            if cand is not None and n_cand <= self._exact_limit():
                return self._exact(q, k, cand)
            scores, labels = self._approx(q, k, cand, n_cand)
            short = (labels >= 0).sum(axis=1) < min(k, n_cand)
            if short.any():
                logger.debug("FaissIndex: %d short rows recomputed exactly", short.sum())
                if self._active == "ivf":  # visiting every list is exact for IVF-Flat
                    s, i = self._approx(q[short], k, cand, n_cand, exhaustive=True)
                else:
                    s, i = self._exact(q[short], k, self._live if cand is None else cand)
                scores[short], labels[short] = s, i
            return scores, labels

    def _exact_limit(self) -> int:
        n = len(self._live)
        if self._active == "hnsw":
            return max(_EXACT_FILTER_MIN, int(math.sqrt(self._ef_search * self._hnsw_m * n)))
        if self._active == "ivf":
            return max(_EXACT_FILTER_MIN, int(n * math.sqrt(self._nprobe / self._ivf_nlist)))
        return 0  # flat with a selector is already exact

    def _approx(
        self, q: np.ndarray, k: int, cand: np.ndarray | None, n_cand: int, *, exhaustive: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        # Keep every selector referenced until the search returns: FAISS holds raw pointers.
        sel = tombs = batch = None
        if cand is not None:
            sel = batch = faiss.IDSelectorBatch(len(cand), faiss.swig_ptr(cand))
        elif len(self._tombs):
            tombs = faiss.IDSelectorBatch(len(self._tombs), faiss.swig_ptr(self._tombs))
            sel = batch = faiss.IDSelectorNot(tombs)
        # A filter passing a fraction f of the stored vectors starves the search of hits by about
        # 1/f, so the search is widened by that factor.
        widen = self._index.ntotal / n_cand
        if self._active == "hnsw":
            ef = min(max(self._index.ntotal, k), math.ceil(max(self._ef_search, k) * widen))
            params = faiss.SearchParametersHNSW(efSearch=ef)
        elif self._active == "ivf":
            nlist = self._ivf_nlist
            nprobe = nlist if exhaustive else min(nlist, math.ceil(self._nprobe * widen))
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        else:
            params = faiss.SearchParameters()
        if self._active == "ivf":  # IVF stores the caller's ids itself
            if sel is not None:
                params.sel = sel
            scores, labels = self._index.search(q, k, params=params)
        else:
            # Search the structure inside the IndexIDMap2 and map positions to ids here: the wrapper's
            # own label mapping is an OpenMP loop that costs milliseconds per call on a busy machine,
            # more than the search itself.
            if sel is not None:
                params.sel = sel = faiss.IDSelectorTranslated(self._index.id_map, batch)
            scores, labels = faiss.downcast_index(self._index.index).search(q, k, params=params)
            positions = faiss.rev_swig_ptr(self._index.id_map.data(), self._index.ntotal)
            labels = np.where(labels >= 0, positions[np.maximum(labels, 0)], -1)
        scores[labels < 0] = -np.inf
        return scores, labels

    def _exact(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score ``q`` against the stored vectors of ``ids`` (all live), in chunks."""
        best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(q), k), -1, dtype=np.int64)
        for start in range(0, len(ids), _GATHER_CHUNK):
            chunk = ids[start : start + _GATHER_CHUNK]
            s = np.concatenate([best_s, q @ self._index.reconstruct_batch(chunk).T], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(chunk, (len(q), len(chunk)))], axis=1)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(s, top, axis=1)
            best_i = np.take_along_axis(i, top, axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` (FAISS binary) and ``path + ".json"`` (the sidecar).

        Each file is replaced atomically, the sidecar last; it records the binary's size and
        structure (kind, counts, tombstones), so a crash between the two or a truncated file is
        caught by :meth:`load`. Content checksums are the caller's layer: a saved pipeline's
        manifest records the sha256 of both files (:mod:`ragkit.persistence`).

        Example:
            >>> import numpy as np, tempfile, os
            >>> index = FaissIndex()
            >>> index.add([1], np.float32([[1, 0]]))
            >>> path = os.path.join(tempfile.mkdtemp(), "index.faiss")
            >>> index.save(path)
            >>> copy = FaissIndex()
            >>> copy.load(path)
            >>> copy.ids().tolist()
            [1]
        """
        path = Path(path)
        if path.is_dir():
            raise InvalidInputError(f"save takes a file path, {path} is a directory")
        with self._lock.read():
            faiss = _faiss()
            if self._index is None:
                write_atomic(path, lambda tmp: tmp.write_bytes(b""))
            else:
                write_atomic(path, lambda tmp: faiss.write_index(self._index, str(tmp)))
            sidecar = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "spec": self.spec(),
                "active_kind": self._active,
                "ivf_nlist": self._ivf_nlist,
                "ntotal": 0 if self._index is None else int(self._index.ntotal),
                "live": len(self._live),
                "tombstones": self._tombs.tolist(),
                "bytes": path.stat().st_size,
            }
            text = json.dumps(sidecar, indent=1)
            write_atomic(sidecar_path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def load(self, path: str | Path) -> None:
        """Replace this index's contents (and kind, parameters, dim) with a saved one.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            IntegrityError: the sidecar is missing or unreadable, or the binary's size, type or
                counts do not match it (a truncated or corrupted file).

        Example:
            >>> import numpy as np, tempfile, os
            >>> path = os.path.join(tempfile.mkdtemp(), "index.faiss")
            >>> FaissIndex("flat", dim=2).save(path)
            >>> index = FaissIndex()
            >>> index.load(path)
            >>> index.kind, index.dim
            ('flat', 2)
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no FAISS index at {path}")
        meta = read_sidecar(path)
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise IntegrityError(f"{path} has {size} bytes, its sidecar says {meta['bytes']}: truncated?")
        try:
            fresh = FaissIndex.from_spec(meta["spec"])
        except (ConfigError, InputTypeError, TypeError) as e:
            raise IntegrityError(f"the sidecar of {path} holds an invalid spec: {e}") from e
        index, active, live, tombs = read_binary(path, meta, fresh.dim, _faiss if size else None)
        with self._lock.write():
            self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "_lock"})
            self._index, self._active, self._live, self._tombs = index, active, live, tombs
            self._ivf_nlist = meta["ivf_nlist"]
