"""Token-aware recursive chunking with exact character offsets.

:class:`RecursiveChunker` cuts a text into chunks that never exceed ``chunk_size`` units, where a unit is a
token of the embedder's tokenizer when a token counter is given and a character otherwise. Every chunk is
a slice of the text: ``text[start:end] == chunk``.

How cuts are chosen. The text is read as words (runs of non-whitespace) separated by boundaries, each of
a kind, strongest first: *section* (where a section of the document starts under the same heading path: a
new PDF page), *paragraph* (whitespace holding a blank line), *line* (whitespace holding one line break),
*sentence* (whitespace after ``.``, ``!``, ``?``, ``…``; and, between characters, after the CJK
terminators ``。！？``), *word* (any other whitespace); the end of the text is as strong as a section start.
Each chunk ends at the furthest boundary of the strongest kind that still fits; a single word too long
for a chunk is cut between characters. This is the classic recursive splitter (split on paragraphs, merge
greedily, recurse into a piece too large for a chunk with the next separator), computed in one pass
without building the recursion.

Structure. A document with :attr:`~ragkit.types.Document.sections` is first cut where its heading path
changes (:mod:`ragkit.structure`): no chunk crosses a heading into another section, and no overlap reaches
back across one. Each chunk gets its :attr:`~ragkit.types.Chunk.location` (page, heading path); a document
without sections is one piece and its chunks have ``location == {}``.

Contextual headers. With ``contextual_headers=True`` each chunk's :attr:`~ragkit.types.Chunk.header` is
the document's ``metadata["title"]`` and the heading path (:func:`ragkit.structure.contextual_header`),
which the pipeline embeds in front of the text. The header counts toward ``chunk_size``: ``header +
text`` fits it, so the text's budget shrinks by the header's size. A header is never more than half of
``chunk_size``; a longer one is cut at its end (the text is never shortened for it). The overlap shrinks
in proportion to the text's budget.

Overlap. Each chunk after the first starts up to ``overlap`` units before the end of the previous chunk,
at a word boundary (the strongest one that keeps at least half of the possible overlap); when not even
the last word fits, there is no overlap, except inside a word too long for one chunk, which overlaps
between characters. The shared text ``text[next.start:prev.end]`` never exceeds
``overlap`` units, and the chunk with its overlap still fits ``chunk_size``.

Whitespace. Chunks never start or end with whitespace: the separator between two chunks belongs to
neither, and whitespace-only text has no chunks. Every non-whitespace character is in at least one chunk.

Cost. Token counts are not additive, so every chunk is counted once on its exact text before it is
accepted. Candidates are found with an estimate built from each distinct word (with its leading
whitespace) counted once, so chunking costs about one tokenisation of the text, plus one per chunk.

Example:
    >>> chunker = RecursiveChunker(40, 10)
    >>> text = "Chunks end at paragraphs.\\n\\nThen lines,\\nthen sentences. Then words."
    >>> [text[s:e] for s, e in chunker.split(text)]
    ['Chunks end at paragraphs.', 'Then lines,\\nthen sentences. Then words.']
"""

from __future__ import annotations

import copy
import logging
import operator
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from ragkit._counting import make_counter
from ragkit.errors import ConfigError, InputTypeError
from ragkit.structure import chunk_location, contextual_header, fit_header, segments
from ragkit.types import Chunk, Document, check_text, to_document

__all__ = ["RecursiveChunker"]

logger = logging.getLogger("ragkit")

# Boundary kinds, strongest first; they index _Split.by_kind.
_SECTION, _PARAGRAPH, _LINE, _SENTENCE, _WORD = 0, 1, 2, 3, 4
_KINDS = (_SECTION, _PARAGRAPH, _LINE, _SENTENCE, _WORD)

_DEFAULTS = {"tokens": (512, 8), "characters": (2000, 10)}  # default size, and size // overlap

# A word: a run of non-whitespace, also ended by CJK sentence terminators (with their closing quotes and
# brackets) so that text without spaces still has sentence boundaries.
_CJK_END = "。！？｡"
_CLOSERS = "\"')]}»”’」』）〉》】"
_WORD_RE = re.compile(rf"[^\s{_CJK_END}]*[{_CJK_END}]+[{re.escape(_CLOSERS)}]*|[^\s{_CJK_END}]+")
_TERMINATORS = frozenset(".!?…؟।" + _CJK_END)
# Line breaks as str.splitlines sees them; \r\n is one break, and a paragraph separator counts as two.
_BREAK_RE = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")

def _check_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)  # numpy integers are fine too
    except TypeError as e:
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__}") from e


class RecursiveChunker:
    """Cuts text into chunks of at most ``chunk_size`` tokens (or characters), with exact offsets.

    Args:
        chunk_size: the most units in a chunk. Default: 512 tokens with a token counter, else 2000
            characters. Capped at ``max_length``.
        overlap: the most units two consecutive chunks share. Default: ``chunk_size // 8`` in tokens
            (64 for 512), ``chunk_size // 10`` in characters (200 for 2000).
        count: what measures a text. ``None``: characters. Otherwise tokens, counted by an object with
            ``count_tokens(text)`` (an embedder), a tokenizer (anything with ``encode``: Hugging Face,
            ``tokenizers``, tiktoken; special tokens are not counted) or a ``Callable[[str], int]``. It
            must be deterministic.
        max_length: an upper bound for ``chunk_size``. Default: the ``max_length`` attribute of ``count``
            when it has one (embedders do), so that chunks never exceed what the model reads.
        contextual_headers: give each chunk a :attr:`~ragkit.types.Chunk.header`: the document's
            ``metadata["title"]`` and the chunk's heading path, embedded in front of its text (see the
            module docstring: ``header + text`` fits ``chunk_size``). Lexical search (BM25) never sees
            the header, only the stored text.

    Raises:
        InputTypeError: ``chunk_size``, ``overlap`` or ``max_length`` is not an int.
        ConfigError: ``chunk_size < 1``, ``overlap`` outside ``[0, chunk_size)``, or an unusable ``count``.

    Example:
        >>> chunker = RecursiveChunker(30, 10)  # characters; count=embedder for tokens
        >>> [c.text for c in chunker.chunk("One sentence here. Another one follows.")]
        ['One sentence here.', 'here. Another one follows.']
        >>> chunker.spec()
        {'unit': 'characters', 'chunk_size': 30, 'overlap': 10}
        >>> from ragkit.types import Document
        >>> doc = Document(text="Relevance feedback helps.", metadata={"title": "Retrieval"})
        >>> [c.header for c in RecursiveChunker(60, 0, contextual_headers=True).chunk(doc)]
        ['Retrieval\\n\\n']
    """

    def __init__(
        self,
        chunk_size: int | None = None,
        overlap: int | None = None,
        *,
        count: Any = None,
        max_length: int | None = None,
        contextual_headers: bool = False,
    ) -> None:
        if not isinstance(contextual_headers, bool):
            kind = type(contextual_headers).__name__
            raise InputTypeError(f"contextual_headers must be a bool, got {kind}")
        self._count, self.unit, self._empty = make_counter(count)
        default_size, overlap_ratio = _DEFAULTS[self.unit]
        if max_length is None and count is not None:
            attr = getattr(count, "max_length", None)
            if isinstance(attr, int) and not isinstance(attr, bool) and attr >= 1:
                max_length = attr
        if max_length is not None and _check_int(max_length, "max_length") < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        size = default_size if chunk_size is None else _check_int(chunk_size, "chunk_size")
        if size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {size}")
        capped = max_length is not None and size > max_length
        if capped:
            logger.debug("chunk_size %d capped at max_length %d", size, max_length)
            size = max_length
        ov = size // overlap_ratio if overlap is None else _check_int(overlap, "overlap")
        if not 0 <= ov < size:
            why = f" (chunk_size is capped at max_length={max_length})" if capped else ""
            raise ConfigError(f"overlap must be in [0, chunk_size={size}), got {ov}{why}")
        self.chunk_size: int = size
        self.overlap: int = ov
        self.max_length: int | None = max_length
        self.contextual_headers: bool = contextual_headers
        # Characters are counted by len(): exact and additive, so nothing needs re-checking.
        self._exact = self._count is len

    @classmethod
    def for_embedder(
        cls,
        embedder: Any,
        chunk_size: int | None = None,
        overlap: int | None = None,
        *,
        contextual_headers: bool = False,
    ) -> RecursiveChunker:
        """The chunker a pipeline uses for ``embedder``: in its tokens when it can count them.

        Tokens (capped at the embedder's ``max_length``) when the embedder has ``count_tokens``,
        characters otherwise (a remote API, for example).

        Example:
            >>> class Remote:  # no tokenizer at hand
            ...     dim = 8
            >>> RecursiveChunker.for_embedder(Remote()).spec()
            {'unit': 'characters', 'chunk_size': 2000, 'overlap': 200}
        """
        if callable(getattr(embedder, "count_tokens", None)):
            return cls(chunk_size, overlap, count=embedder, contextual_headers=contextual_headers)
        return cls(chunk_size, overlap, contextual_headers=contextual_headers)

    def spec(self) -> dict[str, Any]:
        """A JSON-able description, written to a saved pipeline's manifest.

        ``contextual_headers`` appears only when it is on, so a spec without it (every index saved
        before headers existed) means off.

        Example:
            >>> RecursiveChunker(100, 10).spec()
            {'unit': 'characters', 'chunk_size': 100, 'overlap': 10}
            >>> RecursiveChunker(100, 10, contextual_headers=True).spec()["contextual_headers"]
            True
        """
        spec: dict[str, Any] = {"unit": self.unit, "chunk_size": self.chunk_size, "overlap": self.overlap}
        if self.contextual_headers:
            spec["contextual_headers"] = True
        return spec

    def __repr__(self) -> str:
        headers = ", contextual_headers=True" if self.contextual_headers else ""
        return (
            f"RecursiveChunker(unit={self.unit!r}, chunk_size={self.chunk_size}, overlap={self.overlap}"
            f"{headers})"
        )

    def chunk(self, document: Any) -> list[Chunk]:
        """Cut a document into :class:`~ragkit.types.Chunk` objects.

        Args:
            document: a :class:`~ragkit.types.Document`, a ``str`` or a ``dict`` with ``text``.

        Returns:
            The chunks in text order, with ids ``f"{doc.id}#{n}"`` (``n`` from 0), exact ``start`` /
            ``end`` offsets into ``document.text``, a copy of the document's metadata, the chunk's
            ``location`` (``{}`` without sections) and its ``header`` (``""`` unless
            ``contextual_headers``).

        Raises:
            InvalidInputError: sections outside the text, out of order or overlapping.

        Example:
            >>> from ragkit.types import Document
            >>> doc = Document(id="d", text="Alpha beta.\\n\\nGamma delta.", metadata={"lang": "en"})
            >>> [(c.id, c.text, c.start, c.metadata) for c in RecursiveChunker(12, 0).chunk(doc)]
            [('d#0', 'Alpha beta.', 0, {'lang': 'en'}), ('d#1', 'Gamma delta.', 13, {'lang': 'en'})]
            >>> from ragkit.types import Section
            >>> paged = Document(text="First page.\\n\\nSecond page.", sections=[
            ...     Section(start=0, end=11, page=1), Section(start=13, end=25, page=2)])
            >>> [(c.text, c.location) for c in RecursiveChunker(20, 0).chunk(paged)]
            [('First page.', {'page': 1}), ('Second page.', {'page': 2})]
        """
        doc = to_document(document)
        if not doc.sections and not self.contextual_headers:
            pieces = [(start, end, "", {}) for start, end in self.split(doc.text)]
        else:
            pieces = self._structured(doc)
        return [
            Chunk(
                id=f"{doc.id}#{n}",
                doc_id=doc.id,
                text=doc.text[start:end],
                start=start,
                end=end,
                metadata=copy.deepcopy(doc.metadata),
                location=location,
                header=header,
            )
            for n, (start, end, header, location) in enumerate(pieces)
        ]

    def _structured(self, doc: Document) -> list[tuple[int, int, str, dict[str, Any]]]:
        """Each segment split on its own, under its own header: ``(start, end, header, location)``."""
        title = doc.metadata.get("title")
        pieces = []
        for seg in segments(doc):
            header = ""
            if self.contextual_headers:
                header = fit_header(contextual_header(title, seg.headings), self._count, self.chunk_size // 2)
            cuts = [c - seg.start for c in seg.cuts]
            for start, end in self._split(doc.text[seg.start : seg.end], header, cuts):
                a, b = seg.start + start, seg.start + end
                pieces.append((a, b, header, chunk_location(doc.sections, a, b, seg.headings)))
        return pieces

    def split(self, text: str) -> list[tuple[int, int]]:
        """The ``(start, end)`` character spans of the chunks of ``text``, in order.

        Example:
            >>> RecursiveChunker(10, 0).split("aaaa bbbb cccc")
            [(0, 9), (10, 14)]
        """
        check_text(text)
        return self._split(text, "", ())

    def _split(self, text: str, header: str, cuts: Any) -> list[tuple[int, int]]:
        size, overlap, count, empty = self.chunk_size, self.overlap, self._count, self._empty
        if header:
            used = count(header)
            # header + text must fit: the text's budget is what the header leaves; non-additive token
            # counts are handled exactly by counting every piece after the header.
            size, overlap = size - used, overlap * (size - used) // size
            if not self._exact:
                counted, count, empty = count, (lambda piece: counted(header + piece) - used), 0
        return _Split(text, size, overlap, count, self._exact, empty, cuts).run()


class _Split:
    """The state of one ``split`` call: words, boundary kinds and running token estimates.

    Word ``i`` is ``text[A[i]:E[i]]``; ``K[i]`` is the kind of the boundary after it (the last word is
    followed by the end of the text, as strong as a section start). ``Q[i]`` estimates the units of the
    first ``i`` words with their leading whitespace, minus the constant a counter adds to any text.
    """

    def __init__(
        self,
        text: str,
        size: int,
        overlap: int,
        count: Callable[[str], int],
        exact: bool,
        empty: int,
        cuts: Any = (),
    ) -> None:
        self.text = text
        self.size = size
        self.overlap = overlap
        self.count = count
        self.exact = exact
        self.empty = empty
        self.memo: dict[str, int] = {}
        spans = [m.span() for m in _WORD_RE.finditer(text)]
        self.A = [a for a, _ in spans]
        self.E = [e for _, e in spans]
        self.K = self._kinds()
        for cut in cuts:  # a section start between two words is the strongest boundary
            i = bisect_right(self.E, cut) - 1
            if 0 <= i < len(self.A) - 1 and cut <= self.A[i + 1]:
                self.K[i] = _SECTION
        self.by_kind: list[list[int]] = [[] for _ in _KINDS]
        for i, kind in enumerate(self.K):
            self.by_kind[kind].append(i)
        self.Q = self._estimates()
        # Characters per unit in this text: where to aim when a long text must be counted in parts.
        self.density = min((self.E[-1] - self.A[0]) / max(self.Q[-1], 1), 32.0) if self.A else 1.0

    def _kinds(self) -> list[int]:
        text, A, E = self.text, self.A, self.E
        kinds = []
        for i in range(len(A) - 1):
            gap = text[E[i] : A[i + 1]]
            breaks = 0 if gap == " " else len(_BREAK_RE.findall(gap)) + gap.count("\u2029")
            if breaks >= 2:
                kinds.append(_PARAGRAPH)
            elif breaks == 1:
                kinds.append(_LINE)
            elif not gap:  # words touch only after a CJK terminator
                kinds.append(_SENTENCE)
            else:
                j = E[i] - 1
                while j > A[i] and text[j] in _CLOSERS:
                    j -= 1
                kinds.append(_SENTENCE if text[j] in _TERMINATORS else _WORD)
        if A:
            kinds.append(_SECTION)  # the end of the text: the strongest boundary there is
        return kinds

    def _estimates(self) -> list[int]:
        A, E = self.A, self.E
        if not A:
            return [0]
        if self.exact:
            return [0] + [e - A[0] for e in E]
        text, empty, cnt = self.text, self.empty, self._memo_count
        pieces = [text[A[0] : E[0]]] + [text[E[i - 1] : E[i]] for i in range(1, len(A))]
        # Clamped at 0 so that Q is non-decreasing and can be searched with bisect.
        return [0, *accumulate(max(cnt(p) - empty, 0) for p in pieces)]

    def _memo_count(self, piece: str) -> int:
        n = self.memo.get(piece)
        if n is None:
            n = self.memo[piece] = self.count(piece)
        return n

    def _count_upto(self, s: int, e: int, budget: int) -> int:
        """``count(text[s:e])`` when it is at most ``budget``, else ``budget + 1``, reading a long text
        only as far as needed (a prefix over budget means the whole is too)."""
        if self.exact:
            return min(e - s, budget + 1)
        probe = int(2 * self.density * budget) + 16
        while s + probe < e:
            if self.count(self.text[s : s + probe]) > budget:
                return budget + 1
            probe *= 4
        n = self._memo_count(self.text[s:e]) if e - s <= 64 else self.count(self.text[s:e])
        return min(n, budget + 1)

    def run(self) -> list[tuple[int, int]]:
        A, E = self.A, self.E
        if not A:
            return []
        spans: list[tuple[int, int]] = []
        c, wc = A[0], 0  # the first character no chunk covers yet, and its word
        s, ws = c, wc  # where the next chunk starts (before c when it overlaps), and its word
        while True:
            end = self._end(s, ws, c, wc)
            if end is None and s < c:  # the overlap leaves no room for new text: drop it
                s, ws = c, wc
                end = self._end(s, ws, c, wc)
            if end is None:
                logger.warning("a character at offset %d alone exceeds chunk_size=%d", c, self.size)
                end = c + 1
            spans.append((s, end))
            k = bisect_left(E, end, wc)  # the word holding the chunk's last character
            if end == E[k]:
                if k + 1 == len(A):
                    return spans
                c, wc = A[k + 1], k + 1
            else:
                c, wc = end, k
            start = self._overlap_start(s, ws, end) if self.overlap else None
            s, ws = (c, wc) if start is None else start

    def _strongest_end(self, lo: int, hi: int) -> int:
        """Of the words ``lo..hi``, the last one followed by the strongest boundary."""
        for words in self.by_kind:
            i = bisect_right(words, hi) - 1
            if i >= 0 and words[i] >= lo:
                return words[i]
        raise AssertionError("unreachable: every word has a boundary kind")

    def _end(self, s: int, ws: int, c: int, wc: int) -> int | None:
        """Where a chunk starting at ``s`` (in word ``ws``) ends; it covers ``c`` (in word ``wc``).

        The end of the furthest word followed by the strongest boundary that fits, else a cut between
        characters inside word ``wc``; ``None`` when not even one character of it fits, or when word
        ``wc`` would fit whole without the overlap.
        """
        A, E, Q, size = self.A, self.E, self.Q, self.size
        first = self._count_upto(s, E[ws], size)
        k = wc - 1  # the last word that fits, by estimate
        if first <= size:
            k = bisect_right(Q, size - first + Q[ws + 1], ws + 1) - 2
        if k < wc and ws < wc and not self.exact and self._count_upto(s, E[wc], size) <= size:
            k = wc  # the estimate was pessimistic: word wc fits whole
        while k >= wc:
            end = self._strongest_end(wc, k)
            if self.exact or self.count(self.text[s : E[end]]) <= size:
                return E[end]
            # Token counts are not additive and the estimate fell short: find the last word that truly
            # fits by bisection (a few counts of one chunk each), then choose among those again.
            k = self._last_fitting(s, wc, end - 1)
        if s < A[wc] and self._count_upto(A[wc], E[wc], size) <= size:
            return None  # the word fits without the overlap: better drop the overlap than cut the word
        # Cut inside word wc: the furthest character position that fits.
        if self.exact:
            end = min(s + size, E[wc] - 1)
            return end if end > c else None
        end = self._furthest_cut(s, c, E[wc])
        return end if end > c else None

    def _overlap_start(self, prev: int, wp: int, e: int) -> tuple[int, int] | None:
        """Where the chunk after ``text[prev:e]`` (``prev`` in word ``wp``) starts, ``None`` for no overlap.

        The earliest word start that keeps ``text[start:e]`` within ``overlap``, or a later one after a
        stronger boundary if it keeps at least half as much; failing any word, a character position
        inside the last word when that word was too long for one chunk.
        """
        A, E, Q, ov = self.A, self.E, self.Q, self.overlap
        k = bisect_left(E, e)  # the word holding the previous chunk's last character
        if e == E[k]:
            if self.exact:

                def shared(j: int) -> int:
                    return e - A[j]

                j = max(wp + 1, bisect_left(A, e - ov, 0, k + 1))
            else:

                def shared(j: int) -> int:  # pessimistic: counts the whitespace before word j
                    return self.empty + Q[k + 1] - Q[j]

                j = max(wp + 1, bisect_left(Q, Q[k + 1] - (ov - self.empty), 0, k + 1))
            while j <= k:
                start = self._strongest_start(j, k, shared)
                if self.exact or self.count(self.text[A[start] : e]) <= ov:
                    return A[start], start
                j = self._first_fitting(e, start + 1, k)  # the estimate fell short, as in _end
        # Inside the last word, only when it is a word too long for one chunk (it was cut already): a
        # fragment of an ordinary word is no useful context.
        if e == E[k] and prev <= A[k]:
            return None
        lo = max(prev + 1, A[k])
        if lo >= e:  # the previous chunk is one character of the word: nothing to share before e
            return None
        if self.exact:
            return max(lo, e - ov), k

        def fits(x: int) -> bool:
            return self.count(self.text[x:e]) <= ov

        if not fits(e - 1):
            return None
        good, bad = e - 1, None  # good fits; bad (when known) does not
        step = max(1, ov)
        while bad is None:
            x = good - step
            if x <= lo:
                if fits(lo):
                    return lo, k
                bad = lo
            elif fits(x):
                good, step = x, step * 2
            else:
                bad = x
        while good - bad > 1:
            mid = (good + bad) // 2
            if fits(mid):
                good = mid
            else:
                bad = mid
        return good, k

    def _furthest_cut(self, s: int, lo: int, hi: int) -> int:
        """The last position ``p`` in ``lo + 1 .. hi - 1`` with ``text[s:p]`` within chunk_size, or ``lo``.

        Aims from the density measured by a first count, then brackets and bisects: a few counts of one
        chunk each, where a plain bisection over a long word would need about log2(chunk_size).
        """
        size, text, count = self.size, self.text, self.count
        p = min(max(s + int(self.density * size), lo + 1), hi - 1)
        n = count(text[s:p])
        aim = min(max(s + (p - s) * size // max(n, 1), lo + 1), hi - 1)
        if aim != p:
            p, n = aim, count(text[s:aim])
        step = 1
        if n <= size:  # p fits: walk forward until something does not
            lo = p
            while lo + step < hi:
                if count(text[s : lo + step]) > size:
                    hi = lo + step
                    break
                lo += step
                step *= 2
        else:  # p does not fit: walk back until something does
            hi = p
            while hi - step > lo:
                if count(text[s : hi - step]) <= size:
                    lo = hi - step
                    break
                hi -= step
                step *= 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(text[s:mid]) <= size:
                lo = mid
            else:
                hi = mid
        return lo

    def _last_fitting(self, s: int, lo: int, hi: int) -> int:
        """The last word ``k`` in ``lo..hi`` with ``text[s:E[k]]`` within chunk_size, or ``lo - 1``."""
        good, bad = lo - 1, hi + 1
        while bad - good > 1:
            mid = (good + bad) // 2
            if self.count(self.text[s : self.E[mid]]) <= self.size:
                good = mid
            else:
                bad = mid
        return good

    def _first_fitting(self, e: int, lo: int, hi: int) -> int:
        """The first word ``j`` in ``lo..hi`` with ``text[A[j]:e]`` within overlap, or ``hi + 1``."""
        bad, good = lo - 1, hi + 1
        while good - bad > 1:
            mid = (good + bad) // 2
            if self.count(self.text[self.A[mid] : e]) <= self.overlap:
                good = mid
            else:
                bad = mid
        return good

    def _strongest_start(self, j: int, k: int, shared: Callable[[int], int]) -> int:
        """Of the word starts ``j..k``, the first after the strongest boundary keeping half the overlap."""
        most = shared(j)
        for words in self.by_kind:
            i = bisect_left(words, j - 1)
            if i < len(words) and words[i] + 1 <= k and 2 * shared(words[i] + 1) >= most:
                return words[i] + 1
        return j
