"""Lexical retrieval for hybrid search: a BM25 index over chunks (bm25s).

Fusion with the dense ranking lives in :mod:`ragkit.fusion`.

The BM25 index is *derived* data: the store holds the chunk texts, and the pipeline rebuilds this index
from the store whenever it is stale (bm25s has no incremental update, so :meth:`BM25Index.build`
replaces the whole index). Scores are Lucene's BM25 (``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``).

Tokenisation is bm25s's: lower-case, then the regex ``(?u)\\b\\w\\w+\\b``, then stop words, then an
optional Snowball stemmer (PyStemmer). Its limits, which matter for non-English text:

- Unicode letters and digits are word characters, so accented Latin, Greek and Cyrillic text tokenise
  well; pick ``language`` and ``stopwords`` to match (``language="fr", stopwords="fr"``).
- Tokens of one character are dropped ("a", "7", and single Chinese characters).
- Scripts written without spaces (Chinese, Japanese, Thai) become one token per run of characters
  between punctuation, so matching needs the query to repeat that exact run: pre-segment such text,
  or rely on dense retrieval for it.

Example:
    >>> import numpy as np
    >>> index = BM25Index(stemmer=None)
    >>> index.build(np.array([10, 11]), ["the cat sat on the mat", "dogs bark loudly"])
    >>> scores, ids = index.search("cat", k=5)
    >>> ids.tolist()
    [10]
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.errors import (
    ConfigError,
    InputTypeError,
    IntegrityError,
    InvalidInputError,
    MissingDependencyError,
)

__all__ = ["BM25Index"]

logger = logging.getLogger("ragkit")


_FORMAT_VERSION = 1
_CONFIG_FILE = "bm25.json"
_IDS_FILE = "ids.npy"
# What bm25s.BM25.save writes when it is given no corpus (checked by the tests: .npy and .json only).
_BM25S_FILES = (
    "data.csc.index.npy",
    "indices.csc.index.npy",
    "indptr.csc.index.npy",
    "vocab.index.json",
    "params.index.json",
)
# bm25s's stop-word list names (bm25s.tokenization._infer_stopwords), checked here so that a typo fails
# at construction without importing bm25s.
_STOPWORD_NAMES = frozenset(
    "english en english_plus en_plus german de dutch nl french fr spanish es portuguese pt italian it "
    "russian ru swedish sv norwegian no chinese zh turkish tr korean ko danish da".split()
)


@dataclass(frozen=True)
class _State:
    """One built index; replaced as a whole so that concurrent searches never see half an update."""

    ids: np.ndarray  # int64 (n,): row i of bm25s's index is the chunk with id ids[i]
    retriever: Any  # bm25s.BM25, or None when no chunk has any token
    vocab: dict[str, int]


_EMPTY = _State(ids=np.zeros(0, dtype=np.int64), retriever=None, vocab={})


class BM25Index:
    """A BM25 index over chunk texts, keyed by the store's int64 chunk ids.

    Args:
        language: the text's language, an ISO code or a Snowball name ("en", "french"); it picks the
            stemmer when ``stemmer="auto"``.
        stemmer: ``"auto"`` stems with PyStemmer for ``language`` when PyStemmer is installed and
            knows the language, and does not stem otherwise; ``None`` never stems; a Snowball algorithm
            name (``"english"``, ``"porter"``, ``"de"``) requires PyStemmer.
        stopwords: a bm25s stop-word list name (``"en"``, ``"de"``, ...), an explicit list of words,
            or ``None`` to keep every word.
        k1: term-frequency saturation (>= 0).
        b: length normalisation, in [0, 1].

    Raises:
        MissingDependencyError: an explicit ``stemmer`` without PyStemmer installed.
        ConfigError: an unknown stemmer or stop-word list, or ``k1``/``b`` out of range.

    Example:
        >>> import numpy as np
        >>> index = BM25Index(stemmer=None, stopwords=None)
        >>> index.build(np.array([1, 2, 3]), ["red apple", "green apple pie", "blue sky"])
        >>> len(index), index.search("apple", k=1)[1].tolist()
        (3, [1])
    """

    def __init__(
        self,
        *,
        language: str = "en",
        stemmer: str | None = "auto",
        stopwords: str | Sequence[str] | None = "en",
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        self._configure(language=language, stemmer=stemmer, stopwords=stopwords, k1=k1, b=b)
        self._state = _EMPTY

    def _configure(self, *, language: Any, stemmer: Any, stopwords: Any, k1: Any, b: Any) -> None:
        if not isinstance(language, str) or not language:
            raise ConfigError(f"language must be a non-empty str, got {language!r}")
        if isinstance(k1, bool) or not isinstance(k1, (int, float)) or not k1 >= 0:
            raise ConfigError(f"k1 must be a number >= 0, got {k1!r}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
            raise ConfigError(f"b must be a number in [0, 1], got {b!r}")
        stopwords = _check_stopwords(stopwords)
        resolved = _resolve_stemmer(stemmer, language)
        stem = _make_stemmer(resolved)
        self.language = language
        self.k1 = float(k1)
        self.b = float(b)
        self.stopwords = stopwords
        self.stemmer = resolved
        self._stem = stem

    def spec(self) -> dict[str, Any]:
        """The settings that rebuild an equivalent index (the stemmer as resolved), JSON-serialisable.

        Example:
            >>> BM25Index(stemmer=None).spec()["stemmer"] is None
            True
        """
        stopwords = self.stopwords if not isinstance(self.stopwords, tuple) else list(self.stopwords)
        return {
            "language": self.language,
            "stemmer": self.stemmer,
            "stopwords": stopwords,
            "k1": self.k1,
            "b": self.b,
        }

    def __len__(self) -> int:
        return len(self._state.ids)

    def __repr__(self) -> str:
        return f"BM25Index(chunks={len(self)}, language={self.language!r}, stemmer={self.stemmer!r})"

    # -- building ---------------------------------------------------------------------------------

    def build(self, ids: np.ndarray | Sequence[int], texts: Sequence[str]) -> None:
        """Index ``texts`` under ``ids``, replacing whatever the index held before.

        Args:
            ids: one unique int64 id per text (the store's chunk ids).
            texts: the chunk texts.

        Raises:
            InputTypeError: a text is not a ``str``, or ids are not integers.
            InvalidInputError: ``ids`` and ``texts`` differ in length, or ids repeat.

        Example:
            >>> import numpy as np
            >>> index = BM25Index(stemmer=None)
            >>> index.build(np.array([7]), ["hello world"])
            >>> len(index)
            1
        """
        ids_arr = _check_ids(ids, "ids")
        if isinstance(texts, str):
            raise InputTypeError("texts must be a list of str, not a single str")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputTypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        if len(ids_arr) != len(texts):
            raise InvalidInputError(f"got {len(ids_arr)} ids for {len(texts)} texts")
        if len(np.unique(ids_arr)) != len(ids_arr):
            raise InvalidInputError("ids must be unique")

        tokens = self._tokenize(texts)
        vocab: dict[str, int] = {}
        token_ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in tokens]
        if not vocab:
            # No chunk has a single token (empty corpus, or only stop words): nothing can ever score.
            self._state = _State(ids=ids_arr, retriever=None, vocab={})
            return
        bm25s = _bm25s()
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        retriever.index((token_ids, vocab), create_empty_token=False, show_progress=False)
        self._state = _State(ids=ids_arr, retriever=retriever, vocab=vocab)
        logger.debug("BM25 index built: %d chunks, %d terms", len(ids_arr), len(vocab))

    # -- searching --------------------------------------------------------------------------------

    def search(
        self, query: str, k: int, *, allowed_ids: np.ndarray | Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best chunks for ``query``: scores (float32) and ids (int64), best first.

        Only chunks with a positive score are returned, so the arrays are shorter than ``k`` when fewer
        chunks share a term with the query. ``allowed_ids`` restricts the search to those ids *before*
        the top-k cut: a filtered search returns ``k`` hits whenever ``k`` allowed chunks match. Equal
        scores are ordered by ascending id, so results are deterministic.

        Raises:
            InputTypeError: ``query`` is not a ``str``.
            InvalidInputError: ``k`` is not a positive int.

        Example:
            >>> import numpy as np
            >>> index = BM25Index(stemmer=None)
            >>> index.build(np.array([1, 2]), ["apple pie", "apple tart"])
            >>> index.search("apple", k=5, allowed_ids=np.array([2]))[1].tolist()
            [2]
        """
        if not isinstance(query, str):
            raise InputTypeError(f"query must be a str, got {type(query).__name__}")
        k = _check_k(k)
        state = self._state
        mask = None if allowed_ids is None else np.isin(state.ids, _check_ids(allowed_ids, "allowed_ids"))
        return self._search_one(state, self._tokenize([query])[0], k, mask)

    def search_many(
        self, queries: Sequence[str], k: int, *, allowed_ids: np.ndarray | Sequence[int] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for several queries: one ``(scores, ids)`` pair per query, in order.

        Example:
            >>> import numpy as np
            >>> index = BM25Index(stemmer=None)
            >>> index.build(np.array([1, 2]), ["apple pie", "cherry tart"])
            >>> [ids.tolist() for _, ids in index.search_many(["apple", "tart"], k=1)]
            [[1], [2]]
        """
        if isinstance(queries, str):
            raise InputTypeError("queries must be a list of str, not a single str: wrap it as [query]")
        queries = list(queries)
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise InputTypeError(f"queries[{i}] must be a str, got {type(q).__name__}")
        k = _check_k(k)
        state = self._state
        mask = None if allowed_ids is None else np.isin(state.ids, _check_ids(allowed_ids, "allowed_ids"))
        return [self._search_one(state, toks, k, mask) for toks in self._tokenize(queries)]

    def _search_one(
        self, state: _State, tokens: list[str], k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        term_ids = [state.vocab[t] for t in tokens if t in state.vocab]
        if state.retriever is None or not term_ids:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        scores = np.asarray(state.retriever.get_scores_from_ids(term_ids), dtype=np.float32)
        if mask is not None:
            scores = np.where(mask, scores, np.float32(0))
        rows = _top_k_positive(scores, state.ids, k)
        return scores[rows], state.ids[rows]

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        if not texts:
            return []
        bm25s = _bm25s()
        tokens = bm25s.tokenize(
            texts,
            stopwords=list(self.stopwords) if isinstance(self.stopwords, tuple) else self.stopwords,
            stemmer=self._stem,
            return_ids=False,
            show_progress=False,
        )
        # bm25s marks a text without tokens with the empty token ""; it is not a word.
        return [[t for t in doc if t] for doc in tokens]

    # -- persistence ------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> list[str]:
        """Write the index into ``directory`` (created if needed) as ``.npy`` and ``.json`` files.

        No file is pickled. Returns the names of the files written, relative to ``directory``, so
        that the caller can record their checksums. Each file is replaced atomically.

        Example:
            >>> import numpy as np, tempfile
            >>> index = BM25Index(stemmer=None)
            >>> index.build(np.array([1]), ["hello world"])
            >>> "bm25.json" in index.save(tempfile.mkdtemp())
            True
        """
        state = self._state
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = [_CONFIG_FILE, _IDS_FILE]
        with tempfile.TemporaryDirectory(dir=directory, prefix=".bm25-tmp-") as tmp:
            tmp_dir = Path(tmp)
            np.save(tmp_dir / _IDS_FILE, state.ids, allow_pickle=False)
            if state.retriever is not None:
                state.retriever.save(tmp_dir, corpus=None, show_progress=False)
                files += list(_BM25S_FILES)
            config = {
                "format_version": _FORMAT_VERSION,
                "spec": self.spec(),
                "count": len(state.ids),
                "files": sorted(files),
            }
            (tmp_dir / _CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), "utf-8")
            for name in files:
                os.replace(tmp_dir / name, directory / name)
        if state.retriever is None:
            # A previous save of a non-empty index may have left bm25s files; they belong to no index now.
            for name in _BM25S_FILES:
                (directory / name).unlink(missing_ok=True)
        return sorted(files)

    def load(self, directory: str | Path) -> None:
        """Replace this index with the one saved in ``directory``, settings included.

        The saved settings win over the ones this object was built with, because queries must be
        tokenised exactly as the indexed chunks were.

        Raises:
            IntegrityError: a file is missing, unreadable, or the counts do not agree.
            MissingDependencyError: the index was stemmed and PyStemmer is not installed.

        Example:
            >>> import numpy as np, tempfile
            >>> index = BM25Index(stemmer=None)
            >>> index.build(np.array([1]), ["hello world"])
            >>> path = tempfile.mkdtemp(); _ = index.save(path)
            >>> other = BM25Index(); other.load(path); len(other)
            1
        """
        directory = Path(directory)
        try:
            config = json.loads((directory / _CONFIG_FILE).read_text("utf-8"))
            ids = np.load(directory / _IDS_FILE, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IntegrityError(f"cannot read the BM25 index in {directory}: {e}") from e
        if config.get("format_version") != _FORMAT_VERSION:
            raise IntegrityError(
                f"BM25 index in {directory} has format_version {config.get('format_version')!r}, "
                f"this ragkit reads {_FORMAT_VERSION}: rebuild it from the store"
            )
        spec = config.get("spec")
        if not isinstance(spec, dict) or set(spec) != {"language", "stemmer", "stopwords", "k1", "b"}:
            raise IntegrityError(f"BM25 settings in {directory / _CONFIG_FILE} are damaged: {spec!r}")
        if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != config.get("count"):
            raise IntegrityError(f"BM25 ids in {directory} do not match the recorded count")
        retriever = None
        vocab: dict[str, int] = {}
        if _BM25S_FILES[0] in config.get("files", []):
            bm25s = _bm25s()
            try:
                retriever = bm25s.BM25.load(directory, allow_pickle=False, mmap=False, show_progress=False)
            except (OSError, ValueError, KeyError) as e:
                raise IntegrityError(f"cannot read the BM25 index in {directory}: {e}") from e
            vocab = retriever.vocab_dict
            if retriever.scores["num_docs"] != len(ids):
                raise IntegrityError(
                    f"BM25 index in {directory} has {retriever.scores['num_docs']} rows for {len(ids)} ids"
                )
        if spec != self.spec():
            logger.info("BM25 index loaded from %s with its saved settings %s", directory, spec)
        self._configure(**spec)
        self._state = _State(ids=ids, retriever=retriever, vocab=vocab)


# -- helpers --------------------------------------------------------------------------------------


def _bm25s() -> Any:
    from ragkit._deps import require

    module = require("bm25s", purpose="lexical (BM25) search")
    # bm25s pins its logger at DEBUG when imported, so every build printed "Building index from IDs"
    # through the root handler; NOTSET lets the application's logging configuration decide.
    bm25s_logger = logging.getLogger("bm25s")
    if bm25s_logger.level == logging.DEBUG:
        bm25s_logger.setLevel(logging.NOTSET)
    return module


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be an int >= 1, got {k!r}")
    return int(k)


def _check_ids(ids: Any, what: str) -> np.ndarray:
    if isinstance(ids, (str, bytes)) or ids is None:
        raise InputTypeError(f"{what} must be an array of int64 ids, got {type(ids).__name__}")
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InputTypeError(
            f"{what} must be a 1-D array of integer ids, got dtype {arr.dtype}, shape {arr.shape}"
        )
    return arr.astype(np.int64, copy=False)


def _check_stopwords(stopwords: Any) -> str | tuple[str, ...] | None:
    if stopwords is None:
        return None
    if isinstance(stopwords, str):
        if stopwords not in _STOPWORD_NAMES:
            raise ConfigError(
                f"unknown stop-word list {stopwords!r}: use one of {sorted(_STOPWORD_NAMES)}, "
                "a list of words, or None"
            )
        return stopwords
    words = tuple(stopwords)
    if not all(isinstance(w, str) for w in words):
        raise ConfigError("stopwords must be a list name, a list of str, or None")
    return words


def _resolve_stemmer(stemmer: Any, language: str) -> str | None:
    """Resolve ``stemmer="auto"`` once, at construction; an explicit choice that cannot be met raises."""
    if stemmer is None:
        return None
    if not isinstance(stemmer, str):
        raise ConfigError(f"stemmer must be 'auto', a Snowball algorithm name or None, got {stemmer!r}")
    if stemmer != "auto":
        _make_stemmer(stemmer)
        return stemmer
    try:
        import Stemmer
    except ImportError:
        logger.debug("PyStemmer is not installed: BM25 without stemming")
        return None
    try:
        Stemmer.Stemmer(language)
    except KeyError:
        logger.debug("PyStemmer has no stemmer for %r: BM25 without stemming", language)
        return None
    return language


def _make_stemmer(name: str | None) -> Any:
    if name is None:
        return None
    try:
        import Stemmer
    except ImportError as e:
        raise MissingDependencyError("PyStemmer", extra="all", purpose=f"BM25 stemming ({name!r})") from e
    try:
        return Stemmer.Stemmer(name).stemWords
    except KeyError as e:
        raise ConfigError(f"PyStemmer has no stemmer {name!r}; it has {Stemmer.algorithms()}") from e


def _top_k_positive(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` best positive scores, best first, equal scores by ascending id; O(n)."""
    rows = np.flatnonzero(scores > 0)
    if len(rows) > k:
        # argpartition alone would pick arbitrarily among scores tied with the k-th: take everything
        # strictly better, then fill from the tied rows in id order.
        kth = np.partition(scores[rows], len(rows) - k)[len(rows) - k]
        better = rows[scores[rows] > kth]
        tied = rows[scores[rows] == kth]
        tied = tied[np.argsort(ids[tied], kind="stable")][: k - len(better)]
        rows = np.concatenate([better, tied])
    order = np.lexsort((ids[rows], -scores[rows]))
    return rows[order]
