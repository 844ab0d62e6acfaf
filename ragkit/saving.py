"""Saving and loading a :class:`~ragkit.Pipeline`: the save that commits a manifest, the load that
rebuilds components from the closed registry and checks the fingerprint, and reload for readers.

:class:`Persistence` is a mixin of :class:`~ragkit.Pipeline`; it reads the pipeline's ``embedder``,
``reranker``, ``chunker`` and ``backend`` and the directory it is bound to.

Example:
    >>> pipe.save("my-index/")                               # doctest: +SKIP
    >>> again = Pipeline.load("my-index/", read_only=True)    # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragkit import persistence
from ragkit.backends.base import SavedBackend
from ragkit.errors import ConfigError, IndexMismatchError, IntegrityError
from ragkit.persistence import Counts, Manifest

if TYPE_CHECKING:
    from ragkit.pipeline import Pipeline

__all__ = ["Persistence"]

logger = logging.getLogger("ragkit")

# A load retries this often when a save replaces the directory's files while it reads them.
_LOAD_ATTEMPTS = 3


def _ragkit_version() -> str:
    from ragkit import __version__

    return __version__


def _canonical(value: Any) -> Any:
    """JSON round trip, so that tuples and lists (and key order) compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _fingerprint_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    return "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


def _portable_embedder(manifest: Manifest) -> str | None:
    """Make a saved embedder entry portable: one that names a packaged model by its path on the
    machine that saved it (ragkit 0.1 did so for the offline MiniLM) is rewritten, in place, to the
    model's alias, so the index loads from any virtualenv. Returns the legacy name the manifest's
    fingerprint gives that model (its vectors are the same model's), or ``None``."""
    from ragkit.embedders.aliases import MODEL_ALIASES, alias_of

    spec = (manifest.embedder or {}).get("spec")
    model = spec.get("model") if isinstance(spec, dict) else None
    alias = alias_of(model) if isinstance(model, str) else None
    if alias is None:
        return None
    spec["model"] = alias
    name = manifest.fingerprint.get("model")
    return name if name in MODEL_ALIASES[alias].legacy_names else None


class Persistence:
    """Save, load and reload of :class:`~ragkit.Pipeline` (see there for the public API)."""

    embedder: Any
    reranker: Any
    chunker: Any
    backend: Any
    read_only: bool
    _directory: Path | None
    _trust_hosts: bool
    _given_backend: Any
    _save_lock: threading.Lock
    _cache_lock: threading.Lock
    _query_cache: Any
    _legacy_model: str | None

    if TYPE_CHECKING:  # Pipeline's

        def _check_writable(self) -> None: ...

        def _recorded_fingerprint(self) -> dict[str, Any]: ...

        def _bound_fingerprint(self, embedder: Any) -> dict[str, Any]: ...

        def _is_legacy(self, stored: Any, fp: Mapping[str, Any]) -> bool: ...

    @property
    def path(self) -> Path | None:
        """The directory this pipeline is bound to (after ``save(path)`` or ``load``), else ``None``."""
        return self._directory

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save to a directory and bind the pipeline to it; later ``save()`` calls write there.

        Atomic into any directory (new, this pipeline's own, or one holding another pipeline): new
        files carry a fresh tag in their names and the manifest, written last (temp file, fsync,
        rename), is the commit point; a crash at any moment leaves the previous save or this one
        loadable. Takes the directory's writer lock (kept until :meth:`close`).

        Raises:
            LockError: another writer holds the directory. StorageError: the disk refused a write
                (the previous save stays loadable). ReadOnlyError: loaded with ``read_only=True``.

        Example:
            >>> pipe.save("my-index/")  # doctest: +SKIP
            PosixPath('my-index')
        """
        self._check_writable()
        if path is None:
            if self._directory is None:
                raise ConfigError("save() needs a path the first time")
            target = self._directory
        else:
            target = Path(path).absolute()  # a later chdir (a notebook's %cd) must not move it
        with self._save_lock:
            return self._save(target)

    def _save(self, target: Path) -> Path:
        with persistence.storage_errors(f"creating {target}"):
            target.mkdir(parents=True, exist_ok=True)
        persistence.hook("begin")
        try:
            previous = persistence.read_manifest(target).owned
        except IntegrityError:
            previous = []  # a new directory (or not a pipeline: nothing in it is ours to remove)
        from ragkit.components import component_entry

        parts = {
            "embedder": component_entry(self.embedder),
            "reranker": component_entry(self.reranker) if self.reranker is not None else None,
            "chunker": component_entry(self.chunker),
        }

        backend = self.backend

        def commit(saved: SavedBackend) -> None:
            with persistence.storage_errors(f"saving to {target}"):
                manifest = Manifest(
                    ragkit_version=_ragkit_version(),
                    fingerprint=self._recorded_fingerprint(),
                    backend=saved.entry,
                    generation=backend.generation if saved.generation is None else saved.generation,
                    counts=Counts(
                        documents=backend.count_documents() if saved.documents is None else saved.documents,
                        chunks=backend.count_chunks() if saved.chunks is None else saved.chunks,
                    ),
                    files=persistence.describe_files(target, saved.derived),
                    owned=saved.keep,
                    **parts,
                )
                written.append(manifest)
                persistence.commit_manifest(target, manifest)

        written: list[Manifest] = []
        try:
            saved = self.backend.save(target, persistence.new_tag(self.backend.generation), commit)
        except BaseException:
            if written and persistence.committed(target, written[0].backend):
                self._directory = target  # the backend moved there: later saves must go there too
            raise
        self._directory = target
        persistence.remove_unreferenced(target, saved.keep, previous)
        persistence.hook("cleaned")
        return target

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embedder: Any = None,
        *,
        reranker: Any = None,
        backend: Any = None,
        read_only: bool = False,
        trust_hosts: bool = False,
        **kwargs: Any,
    ) -> Pipeline:
        """Open a saved pipeline and bind to its directory.

        Opening takes no lock: any number of processes may load a directory and search it (a web
        app with several workers, a notebook cell run twice). The writer lock is taken at the first
        write or save; a second writer then gets a :class:`LockError`. A saved directory is untrusted
        input: the embedder, reranker and chunker it names are rebuilt only from ragkit's closed
        registry (:mod:`ragkit.components`), and nothing is sent to a host that only the directory
        names unless ``trust_hosts=True`` (a remote model's custom ``base_url`` with an environment
        API key, a PostgreSQL DSN).

        Checks the manifest and the store and fails loudly (:class:`IntegrityError`) on a damaged
        store or manifest; a derived index (FAISS, BM25) that is missing, stale or corrupt is rebuilt
        from the store (a warning says so). Refuses an ``embedder`` whose fingerprint differs from
        the one the vectors were made with (:class:`IndexMismatchError`).

        Args:
            path: the directory given to :meth:`save`.
            embedder: ``None`` rebuilds the embedder from the manifest.
            reranker: optional; ``None`` rebuilds the saved one, if any. Pass ``False`` for none.
            backend: for a directory saved from PostgreSQL, the :class:`~ragkit.backends.PostgresBackend`
                to use (it must be the saved table).
            read_only: refuse every write (:class:`ReadOnlyError`); works on a read-only filesystem.
            trust_hosts: let the directory name the hosts to connect to (see above).
            **kwargs: other :class:`Pipeline` options (``chunker``, ``query_cache_size``, ``rrf_k``, ...).

        Example:
            >>> pipe = Pipeline.load("my-index/", read_only=True)  # doctest: +SKIP
        """
        root = Path(path).absolute()
        manifest, store = cls._open(root, read_only=read_only, trust_hosts=trust_hosts, backend=backend)
        try:
            from ragkit.components import build_component

            legacy_model = _portable_embedder(manifest)
            if embedder is None:
                if not manifest.embedder:
                    raise ConfigError("the manifest does not say how to rebuild the embedder: pass embedder=")
                embedder = build_component(manifest.embedder, role="embedder", trust_hosts=trust_hosts)
            if reranker is None and manifest.reranker:
                reranker = build_component(manifest.reranker, role="reranker", trust_hosts=trust_hosts)
            if kwargs.get("chunker") is None and manifest.chunker:
                try:
                    kwargs["chunker"] = build_component(
                        manifest.chunker, role="chunker", trust_hosts=trust_hosts, embedder=embedder
                    )
                except ConfigError as e:
                    logger.warning("could not rebuild the saved chunker (%s); using the default one", e)
            from ragkit.pipeline import Pipeline

            self = cls.__new__(cls)
            self._legacy_model = legacy_model
            # Checks the embedder against the backend's fingerprint: the store's when batches or a
            # reindex were committed after the last save, else the manifest's (the backend checked so).
            Pipeline.__init__(self, embedder, backend=store, reranker=reranker or None, **kwargs)
        except BaseException:
            if store is not backend:
                store.close()
            raise
        self.read_only = read_only
        self._directory = root
        self._trust_hosts = trust_hosts
        self._given_backend = backend
        return self

    @staticmethod
    def _open(root: Path, *, read_only: bool, trust_hosts: bool, backend: Any) -> tuple[Manifest, Any]:
        """The manifest and its backend; retried when a concurrent save replaces the files mid-read."""
        from ragkit.backends import open_saved

        for attempt in range(1, _LOAD_ATTEMPTS + 1):
            manifest = persistence.read_manifest(root)
            try:
                return manifest, open_saved(
                    root, manifest, read_only=read_only, trust_hosts=trust_hosts, backend=backend
                )
            except IntegrityError:
                if attempt == _LOAD_ATTEMPTS or persistence.read_manifest(root) == manifest:
                    raise
                logger.info("%s: a save replaced the files while they were read; reading again", root)
        raise AssertionError("unreachable")

    def reload(self) -> None:
        """See the directory's latest save (readers beside a writer, or after a save over it).

        Right or raises: after a save of another pipeline over the directory, the reader switches
        to that pipeline's data if it was made with the same embedder, and raises
        :class:`IndexMismatchError` otherwise.

        Example:
            >>> reader.reload()  # doctest: +SKIP
        """
        if self._directory is None:
            raise ConfigError("reload() needs a pipeline loaded from or saved to a directory")
        manifest, backend = self._open(
            self._directory,
            read_only=self.read_only,
            trust_hosts=self._trust_hosts,
            backend=self._given_backend,
        )
        fp = self._bound_fingerprint(self.embedder)
        stored = backend.get_meta("fingerprint")
        if stored is not None and stored != fp and not self._is_legacy(stored, fp):
            if backend is not self._given_backend:
                backend.close()
            raise IndexMismatchError(
                f"{self._directory} now holds an index of another embedder "
                f"({_fingerprint_diff(stored, fp)}): load it again with that embedder"
            )
        # The old backend is not closed here: a search in another thread may be using it. It closes
        # (and releases a writer lock it held) when the last reference to it goes.
        self.backend = backend
        with self._cache_lock:
            self._query_cache.clear()
