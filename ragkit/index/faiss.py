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

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit._sync import RWLock
from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.index.base import as_ids, member, unit_rows
from ragkit.index.faiss_build import build, check_compression, l2_metric, stored_vectors, train_minimum
from ragkit.index.faiss_files import FilesMixin
from ragkit.index.faiss_search import approx_search, exact_search
from ragkit.index.flat_scoring import flat_scorer, numpy_flat_search

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
    "compression",
    "pq_m",
    "rescore",
)
# Candidates per hit that a compressed index hands to exact rescoring, by default (measured by
# benchmarks/index_search.py at 100k x 1024: the recall@10 after rescoring is in benchmarks/README.md).
_DEFAULT_RESCORE = {"int8": 10, "pq": 10}
# A filtered HNSW/IVF search over this many allowed vectors or fewer is always computed exactly.
_EXACT_FILTER_MIN = 2048


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


class FaissIndex(FilesMixin):
    """A FAISS nearest-neighbour index over L2-normalised float32 vectors with caller-given int64 ids.

    Vectors are scaled to unit length on the way in (a copy: the caller's array is untouched), and
    scored by inner product, so every score is a cosine. Ids are the caller's (the pipeline's store
    assigns them and never reuses one): adding an id that is already live raises, and ids never shift
    when others are deleted.

    Kinds:
        ``"flat"``: exact search, every query compares against every vector (float32 rows are
        scored through numpy's BLAS when that measured faster than FAISS's bundled one on this
        machine: :mod:`ragkit.index.flat_scoring`).
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

    Compression:
        ``compression="int8"`` (``dim`` bytes a vector, 4x smaller) or ``"pq"`` (``pq_m`` bytes,
        16x smaller by default; HNSW, IVF or auto) stores codes (:mod:`ragkit.index.faiss_build`).
        They are trained once enough vectors are there (int8: 1,000; pq: 9,984; ``auto``: past
        ``auto_threshold``); until then the index is exact float32 flat. A compressed index scores
        its codes: :class:`~ragkit.backends.LocalBackend` rescores its ``k * rescore`` best
        exactly with the store's vectors (:mod:`ragkit.index.rescore`). Tombstone rebuilds
        re-encode the decoded vectors with the same codebooks (the very same codes), and a
        compressed ``auto`` index never goes back to flat; with pq it grows into IVF-PQ.

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
        compression: ``None`` (float32), ``"int8"`` or ``"pq"``.
        pq_m: PQ sub-quantizers (bytes per vector); must divide ``dim``. ``None``: ``dim / 4``.
        rescore: candidates per hit for exact rescoring of a compressed index; ``None``: 10 for
            int8 and pq.

    Raises:
        ConfigError: an unknown kind or compression, or an out-of-range option.

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
        compression: str | None = None,
        pq_m: int | None = None,
        rescore: int | None = None,
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
        self._compression = check_compression(compression, kind)
        self._pq_m = None if pq_m is None else _check_positive_int("pq_m", pq_m)
        if self._pq_m is not None and self._init_dim is not None and self._init_dim % self._pq_m:
            raise ConfigError(f"pq_m must divide dim ({self._init_dim}), got {self._pq_m}")
        self._rescore = None if rescore is None else _check_positive_int("rescore", rescore)
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
        self._coded = False  # the structure holds compressed codes (not float32)

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

    @property
    def compression(self) -> str | None:
        """The compression asked for: ``None``, ``"int8"`` or ``"pq"``.

        Example:
            >>> FaissIndex(compression="int8").compression
            'int8'
        """
        return self._compression

    @property
    def compressed(self) -> bool:
        """Whether the structure in use holds compressed codes, so its scores need exact rescoring.

        Example:
            >>> FaissIndex(compression="int8").compressed  # exact float32 until it is trained
            False
        """
        return self._coded

    @property
    def rescore(self) -> int:
        """Candidates per hit handed to exact rescoring while :attr:`compressed` (1 without compression).

        Example:
            >>> FaissIndex(compression="pq").rescore
            10
        """
        if self._rescore is not None:
            return self._rescore
        return _DEFAULT_RESCORE.get(self._compression or "", 1)

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
            "compression": self._compression,
            "pq_m": self._pq_m,
            "rescore": self._rescore,
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
            grow = self._grow_at()
            if self._index is None:
                staged = grow is not None and len(ids) <= grow
                kind = "flat" if staged else self._target()
                self._install(kind, ids, v, coded=not staged and self._compression is not None)
            elif grow is not None and self._active == "flat" and len(self._live) + len(ids) > grow:
                # The exact flat stage holds float32 vectors: the new structure is built from them.
                old_ids, old_v = stored_vectors(_faiss(), self._index, "flat")
                target = self._target()
                logger.info("FaissIndex: %d vectors, building %s", len(old_ids) + len(ids), target)
                all_ids, all_v = np.concatenate([old_ids, ids]), np.concatenate([old_v, v])
                self._install(target, all_ids, all_v, coded=self._compression is not None)
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

    def _target(self) -> str:
        """The structure this index grows into: for ``auto``, HNSW (IVF with pq, whose HNSW graph
        built on PQ codes reaches a recall@10 of only 0.88 after rescoring at 100k x 1024)."""
        if self._kind != "auto":
            return self._kind
        return "ivf" if self._compression == "pq" else "hnsw"

    def _grow_at(self) -> int | None:
        """Live vectors above which the exact flat stage becomes the target structure; ``None``: no stage."""
        if self._coded or (self._compression is None and self._kind != "auto"):
            return None
        need = train_minimum(self._compression, self._target(), self._nlist)
        return max(self._auto_threshold, need - 1) if self._kind == "auto" else need - 1

    def _install(
        self, kind: str, ids: np.ndarray, v: np.ndarray, *, coded: bool, trained_like: Any = None
    ) -> None:
        index, nlist = build(
            _faiss(),
            kind,
            ids,
            v,
            compression=self._compression if coded else None,
            hnsw_m=self._hnsw_m,
            ef_construction=self._ef_construction,
            nlist=self._nlist,
            pq_m=self._pq_m,
            trained_like=trained_like,
        )
        self._index, self._active, self._coded = index, kind, coded
        self._ivf_nlist = nlist if kind == "ivf" else self._ivf_nlist

    def _rebuild(self) -> None:
        """Rebuild an HNSW index without its tombstones (as flat when ``auto`` finds it small).

        A compressed graph is rebuilt from its decoded vectors with its own codebooks (re-encoding a
        decoded vector gives back its code, so nothing degrades) and stays HNSW.
        """
        faiss = _faiss()
        ids, v = stored_vectors(faiss, self._index, self._active)
        keep = ~member(ids, self._tombs)
        trained = faiss.downcast_index(self._index.index) if self._coded else None
        small = self._kind == "auto" and not self._coded and keep.sum() <= self._auto_threshold
        kind = "flat" if small else "hnsw"
        logger.info(
            "FaissIndex: rebuilding %s without %d tombstones (%d live vectors)",
            kind,
            len(self._tombs),
            keep.sum(),
        )
        self._install(kind, ids[keep], v[keep], coded=self._coded, trained_like=trained)
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
        if self._active == "flat" and not self._coded and flat_scorer(faiss, q.shape[1]) == "numpy":
            # The flat float32 rows, read in place, through numpy's BLAS (measured faster here).
            n = self._index.ntotal
            rows = faiss.rev_swig_ptr(faiss.downcast_index(self._index.index).get_xb(), n * q.shape[1])
            ids = faiss.rev_swig_ptr(self._index.id_map.data(), n)
            allowed = None if cand is None else member(ids, cand)
            return numpy_flat_search(rows.reshape(n, q.shape[1]), ids, q, k, allowed)
        return approx_search(
            faiss,
            self._index,
            self._active,
            q,
            k,
            cand,
            n_cand,
            tombs=self._tombs,
            ef_search=self._ef_search,
            nprobe=self._nprobe,
            nlist=self._ivf_nlist,
            l2=self._coded and l2_metric(self._compression),
            exhaustive=exhaustive,
        )

    def _exact(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self._index, q, k, ids)
