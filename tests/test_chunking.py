"""RecursiveChunker: invariants (hypothesis) with a character and a real tokenizer counter, and edge cases."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from itertools import pairwise

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ragkit
from ragkit.chunking import RecursiveChunker
from ragkit.errors import ConfigError, InputTypeError
from ragkit.types import Document, content_id


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen3_embedding_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_embedding_dir))


def token_counter(tokenizer):
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def texts_of(spans, text):
    return [text[s:e] for s, e in spans]


def check_invariants(text, spans, count, chunk_size, overlap):
    """What every split must satisfy, whatever the text and the counter."""
    covered = bytearray(len(text))
    prev = None
    for s, e in spans:
        assert 0 <= s < e <= len(text)
        piece = text[s:e]
        assert piece.strip() == piece, f"whitespace at the edge of {piece!r}"  # so never whitespace-only
        assert count(piece) <= chunk_size, (piece, count(piece), chunk_size)
        if prev is not None:
            assert s > prev[0] and e > prev[1], "chunks must move forward"
            if s < prev[1]:
                assert count(text[s : prev[1]]) <= overlap, (text[s : prev[1]], overlap)
        covered[s:e] = b"\x01" * (e - s)
        prev = (s, e)
    missed = [i for i, ch in enumerate(text) if not covered[i] and not ch.isspace()]
    assert not missed, f"non-whitespace characters in no chunk: {missed[:5]}"


_PIECES = [
    "word",
    "Paris",
    "the",
    "a",
    "capital.",
    "Why?",
    "end!",
    '"quoted."',
    "中文文本",
    "没有空格。",
    "日本語！",
    "「引用。」",
    "x" * 37,
    "é",
    "e\u0301",
    "👍",
    "def f(a, b):",
    "    return a + b",
    "<|endoftext|>",
    "\t",
    " ",
    " ",
    " ",
    "  ",
    "\n",
    "\n",
    "\n\n",
    "\r\n",
    "\r\n\r\n",
    " \n \n ",
    "\u2028",
    "\u3000",
]
TEXTS = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=80).map("".join),
    st.text(max_size=300),
)


def sizes(lo, hi):
    return st.integers(lo, hi).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))


# --- invariants ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(text=TEXTS, size_overlap=sizes(1, 60))
def test_invariants_characters(text, size_overlap):
    size, overlap = size_overlap
    chunker = RecursiveChunker(size, overlap)
    spans = chunker.split(text)
    check_invariants(text, spans, len, size, overlap)
    assert chunker.split(text) == spans
    assert RecursiveChunker(size, overlap).split(text) == spans


@settings(max_examples=50, deadline=None)
@given(text=TEXTS, size_overlap=sizes(4, 48))
# A word cut one character at a time, then a space: the overlap started at the space (" 0").
@example(text="\x80\u0800 0", size_overlap=(4, 3))
def test_invariants_tokens(qwen_tokenizer, text, size_overlap):
    # 4 tokens hold any single character of a byte-level BPE, so no chunk is ever forced over the size.
    size, overlap = size_overlap
    count = token_counter(qwen_tokenizer)
    chunker = RecursiveChunker(size, overlap, count=qwen_tokenizer)
    assert chunker.unit == "tokens"
    spans = chunker.split(text)
    check_invariants(text, spans, count, size, overlap)
    assert RecursiveChunker(size, overlap, count=count).split(text) == spans


def pairs_counter(text):
    """A counter that is not additive: equal neighbouring words cost one more, so an estimate summed over
    words falls short and only counting the exact chunk text keeps chunks within the size."""
    words = text.split()
    return len(words) + sum(a == b for a, b in pairwise(words))


REPETITIVE = st.lists(
    st.tuples(
        st.sampled_from(["a", "a", "b", "a.", "中文。", "x" * 9]),
        st.sampled_from([" ", " ", "\n", "\n\n"]),
    ),
    max_size=60,
).map(lambda pairs: "".join(w + sep for w, sep in pairs))


@settings(max_examples=100, deadline=None)
@given(text=st.one_of(REPETITIVE, TEXTS), size_overlap=sizes(3, 30), specials=st.integers(0, 2))
def test_invariants_with_a_non_additive_counter(text, size_overlap, specials):
    size, overlap = size_overlap

    def count(t):
        return pairs_counter(t) + specials

    spans = RecursiveChunker(size, overlap, count=count).split(text)
    check_invariants(text, spans, count, size, overlap)


# A controlled alphabet where the test can tell the boundary kind of every cut on its own.
_WORDS = st.sampled_from(["ab", "cde", "f.", "ghij", "k?", "x" * 12])
_SEPS = st.sampled_from([" ", " ", " ", "\n", "\n\n"])


@st.composite
def simple_texts(draw):
    words = draw(st.lists(_WORDS, min_size=1, max_size=40))
    seps = draw(st.lists(_SEPS, min_size=len(words) - 1, max_size=len(words) - 1))
    return "".join(w + s for w, s in zip(words, seps + [""], strict=True))


def cut_kind(text, e):
    """0 paragraph, 1 line, 2 sentence, 3 word, 4 inside a word."""
    if e == len(text):
        return 0
    if not text[e].isspace():
        return 4
    gap = text[e : len(text) - len(text[e:].lstrip())]
    if gap.count("\n") >= 2:
        return 0
    if "\n" in gap:
        return 1
    return 2 if text[e - 1] in ".?" else 3


@settings(max_examples=100, deadline=None)
@given(text=simple_texts(), size=st.integers(3, 40))
def test_each_chunk_ends_at_the_furthest_strongest_boundary(text, size):
    spans = RecursiveChunker(size, 0).split(text)
    check_invariants(text, spans, len, size, 0)
    for s, e in spans:
        kind = cut_kind(text, e)
        reach = min(s + size, len(text))
        stronger_later = [
            p for p in range(e + 1, reach + 1) if not text[p - 1].isspace() and cut_kind(text, p) <= kind
        ]
        assert not stronger_later, (text[s:e], kind, stronger_later)
        if kind == 4:  # cut inside a word only when no word fits, and then as far as possible
            assert e == s + size


@settings(max_examples=100, deadline=None)
@given(text=simple_texts(), size=st.integers(3, 40), data=st.data())
def test_a_page_break_is_stronger_than_any_other_boundary(text, size, data):
    from ragkit.types import Section

    gaps = [m.start() for m in re.finditer(r"\s+", text)]
    breaks = sorted(data.draw(st.sets(st.sampled_from(gaps), max_size=4))) if gaps else []
    bounds = [0, *breaks, len(text)]
    sections = [Section(start=a, end=b, page=n + 1) for n, (a, b) in enumerate(pairwise(bounds))]
    chunks = RecursiveChunker(size, 0).chunk(Document(id="p", text=text, sections=sections))
    check_invariants(text, [(c.start, c.end) for c in chunks], len, size, 0)
    page_ends = {len(text[:b].rstrip()) for b in breaks} | {len(text.rstrip())}
    for c in chunks:
        reach = min(c.start + size, len(text))
        later = [b for b in page_ends if c.end < b <= reach]
        assert not later, (c.text, later)  # the furthest page break in reach, if any, ends the chunk
        first = next(n for n, (a, b) in enumerate(pairwise(bounds)) if a <= c.start < b or b == len(text))
        assert c.location["page"] == first + 1


@settings(max_examples=100, deadline=None)
@given(text=simple_texts(), size_overlap=sizes(3, 40))
def test_overlap_starts_at_a_word_unless_inside_a_long_word(text, size_overlap):
    size, overlap = size_overlap
    spans = RecursiveChunker(size, overlap).split(text)
    check_invariants(text, spans, len, size, overlap)
    for (_, prev_end), (s, _) in pairwise(spans):
        if s < prev_end and s > 0 and not text[s - 1].isspace():
            word_start = len(text[:s]) - len(text[:s].split()[-1])
            word_end = s + len(text[s:].split()[0])
            assert word_end - word_start > size - overlap, "a fragment of a short word as overlap"


# --- boundary preference ---------------------------------------------------------------------------


def test_paragraph_boundary_preferred_when_it_fits():
    text = "First paragraph here.\n\nSecond one is a bit longer. It has two sentences."
    assert texts_of(RecursiveChunker(50, 0).split(text), text) == [
        "First paragraph here.",
        "Second one is a bit longer. It has two sentences.",
    ]


def test_paragraphs_merge_greedily():
    paras = ["Alpha beta gamma delta.", "Epsilon zeta eta.", "Theta iota kappa lambda."]
    text = "\n\n".join(paras)
    assert texts_of(RecursiveChunker(45, 0).split(text), text) == [paras[0] + "\n\n" + paras[1], paras[2]]


def test_line_then_sentence_then_word():
    text = "one. two\nthree four five six"
    assert texts_of(RecursiveChunker(20, 0).split(text), text)[0] == "one. two"
    text = "Alpha beta gamma. Delta epsilon zeta eta theta."
    assert texts_of(RecursiveChunker(30, 0).split(text), text) == [
        "Alpha beta gamma.",
        "Delta epsilon zeta eta theta.",
    ]
    text = "alpha beta gamma delta"
    assert texts_of(RecursiveChunker(12, 0).split(text), text) == ["alpha beta", "gamma delta"]


def test_paragraph_boundary_in_tokens(qwen_tokenizer):
    count = token_counter(qwen_tokenizer)
    first, second = "Paris is the capital of France.", "Berlin is the capital of Germany."
    text = f"{first}\n\n{second}"
    size = max(count(first), count(second)) + 2
    assert size < count(text)
    assert texts_of(RecursiveChunker(size, 0, count=qwen_tokenizer).split(text), text) == [first, second]


def test_overlap_is_trailing_context_at_word_boundaries():
    text = "one two three four five six seven eight nine ten"
    spans = RecursiveChunker(20, 9).split(text)
    check_invariants(text, spans, len, 20, 9)
    chunks = texts_of(spans, text)
    assert chunks[0] == "one two three four"
    assert chunks[1].startswith("four five")  # "three four" is 10 characters: one too many
    for (_, prev_end), (s, _) in pairwise(spans):
        assert s < prev_end and text[s - 1] == " "


# --- edge cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\n\t ", "\r\n\r\n", "\u3000\u2028"])
def test_empty_and_whitespace_text_has_no_chunks(text):
    assert RecursiveChunker(10, 2).split(text) == []
    assert RecursiveChunker(10, 2).chunk(Document(id="e", text=text)) == []


def test_one_enormous_word_is_cut_between_characters():
    word = "".join(random.Random(0).choice("abcdefgh") for _ in range(1000))
    spans = RecursiveChunker(100, 0).split(word)
    assert texts_of(spans, word) == [word[i : i + 100] for i in range(0, 1000, 100)]
    spans = RecursiveChunker(100, 10).split(word)
    check_invariants(word, spans, len, 100, 10)
    assert all(prev_end - s == 10 for (_, prev_end), (s, _) in pairwise(spans))


def test_enormous_word_in_tokens(qwen_tokenizer):
    count = token_counter(qwen_tokenizer)
    text = "Intro words. " + "".join(random.Random(1).choice("abcdefgh") for _ in range(800)) + " outro."
    for overlap in (0, 5):
        spans = RecursiveChunker(30, overlap, count=qwen_tokenizer).split(text)
        check_invariants(text, spans, count, 30, overlap)
        assert texts_of(spans, text)[0] == "Intro words."
    spans = RecursiveChunker(30, 0, count=qwen_tokenizer).split(text)
    assert all(text[end:s].strip() == "" for (_, end), (s, _) in pairwise(spans))
    assert sum(text[end].isalpha() for _, end in spans[:-1]) >= 3  # cut between characters


def test_overlap_is_dropped_rather_than_cutting_a_word_that_fits():
    text = "ab ab xxxxxxxxxx cde"
    spans = RecursiveChunker(4, 1).split(text)
    check_invariants(text, spans, len, 4, 1)
    assert texts_of(spans, text)[-1] == "cde"
    assert texts_of(spans, text)[2] == "xxxx"  # the long word is cut, and overlaps inside itself


def test_cjk_splits_at_sentence_terminators_then_characters():
    text = "第一句很短。第二句也很短。第三句。"
    assert texts_of(RecursiveChunker(10, 0).split(text), text) == [
        "第一句很短。",
        "第二句也很短。",
        "第三句。",
    ]
    text = "中文文本没有空格" * 3
    assert texts_of(RecursiveChunker(7, 0).split(text), text) == [text[i : i + 7] for i in range(0, 24, 7)]
    text = "他说：「好。」然后走了。"
    assert texts_of(RecursiveChunker(8, 0).split(text), text) == ["他说：「好。」", "然后走了。"]


def test_crlf_line_endings():
    text = "aaaa\n\nbbbb\r\ncc dd"
    # \r\n is one line break, not a paragraph: the chunk ends at the real paragraph before it.
    assert texts_of(RecursiveChunker(14, 0).split(text), text) == ["aaaa", "bbbb\r\ncc dd"]
    text = "line one\r\nline two\r\n\r\npara two\r\n"
    spans = RecursiveChunker(20, 0).split(text)
    assert texts_of(spans, text) == ["line one\r\nline two", "para two"]


def test_code_splits_at_blank_lines_then_lines():
    funcs = [
        "def add(a, b):\n    return a + b",
        "def sub(a, b):\n    return a - b",
        "class Point:\n    x: int\n    y: int",
    ]
    code = "\n\n\n".join(funcs) + "\n"
    spans = RecursiveChunker(40, 0).split(code)
    assert texts_of(spans, code) == funcs
    spans = RecursiveChunker(20, 0).split(code)
    check_invariants(code, spans, len, 20, 0)
    assert texts_of(spans, code)[:2] == ["def add(a, b):", "return a + b"]


def test_combining_characters_and_emoji():
    text = "e\u0301" * 30 + " 👍🏽 " + "n\u0303" * 10
    spans = RecursiveChunker(7, 2).split(text)
    check_invariants(text, spans, len, 7, 2)


def test_a_character_over_chunk_size_becomes_its_own_chunk(caplog):
    def count(text):  # an emoji costs 4 units, like the bytes of a byte-level BPE
        return sum(4 if ord(ch) > 0xFFFF else 1 for ch in text)

    text = "ab 👍 cd"
    with caplog.at_level("WARNING", logger="ragkit"):
        spans = RecursiveChunker(2, 0, count=count).split(text)
    assert texts_of(spans, text) == ["ab", "👍", "cd"]
    assert "exceeds chunk_size=2" in caplog.text


def test_token_counter_with_special_tokens_still_bounds_chunks():
    class Embedder:  # count_tokens counts [CLS] and [SEP] too
        max_length = 12

        def count_tokens(self, text):
            return len(text.split()) + 2

    text = " ".join(f"w{i}" for i in range(100))
    chunker = RecursiveChunker(count=Embedder())
    assert chunker.spec() == {"unit": "tokens", "chunk_size": 12, "overlap": 1}
    spans = chunker.split(text)
    check_invariants(text, spans, Embedder().count_tokens, 12, 1)
    assert all(len(text[s:e].split()) == 10 for s, e in spans[:-1])


def test_work_stays_linear_in_the_text(qwen_tokenizer):
    """Token counts are checked on exact chunks, but the document is never re-tokenised per candidate."""
    rng = random.Random(2)
    vocab = ["retrieval", "the", "of", "embedding", "chunks", "model.", "query,", "and", "a", "rerank"]
    prose = "\n\n".join(" ".join(rng.choice(vocab) for _ in range(rng.randint(5, 120))) for _ in range(60))
    blob = "".join(rng.choice("abcdefgh") for _ in range(6000))
    encode = qwen_tokenizer.encode
    for text, bound in ((prose, 3), (blob, 20)):
        read = 0

        def count(t):
            nonlocal read
            read += len(t)
            return len(encode(t, add_special_tokens=False))

        spans = RecursiveChunker(64, 8, count=count).split(text)
        assert len(spans) > 20
        # Re-tokenising the text per chunk would read it hundreds of times over.
        assert read <= bound * len(text), read / len(text)


# --- configuration ---------------------------------------------------------------------------------


def test_defaults():
    assert RecursiveChunker().spec() == {"unit": "characters", "chunk_size": 2000, "overlap": 200}
    assert RecursiveChunker(count=len).unit == "characters"
    assert RecursiveChunker(count=lambda t: len(t.split())).spec() == {
        "unit": "tokens",
        "chunk_size": 512,
        "overlap": 64,
    }
    assert RecursiveChunker(100).overlap == 10
    assert RecursiveChunker(100, count=lambda t: 0).overlap == 12
    assert RecursiveChunker(1).overlap == 0


def test_max_length_caps_chunk_size():
    assert RecursiveChunker(count=lambda t: 0, max_length=128).spec()["chunk_size"] == 128
    assert RecursiveChunker(1000, 50, max_length=300).chunk_size == 300
    assert RecursiveChunker(100, 50, max_length=300).chunk_size == 100
    with pytest.raises(ConfigError, match="overlap"):
        RecursiveChunker(1000, 300, max_length=300)


def test_for_embedder(hash_embedder):
    assert RecursiveChunker.for_embedder(hash_embedder).spec() == {
        "unit": "characters",
        "chunk_size": 2000,
        "overlap": 200,
    }

    class Local:
        max_length = 256

        def count_tokens(self, text):
            return len(text.split())

    assert RecursiveChunker.for_embedder(Local()).spec() == {
        "unit": "tokens",
        "chunk_size": 256,
        "overlap": 32,
    }
    assert RecursiveChunker.for_embedder(Local(), 1024, 16).spec()["chunk_size"] == 256
    assert RecursiveChunker.for_embedder(Local(), 100, 16).spec() == {
        "unit": "tokens",
        "chunk_size": 100,
        "overlap": 16,
    }


def test_count_accepts_tokenizers_and_callables(qwen_tokenizer):
    text = "Paris is the capital of France.\n\nBerlin is the capital of Germany. " * 5
    by_callable = RecursiveChunker(20, 4, count=token_counter(qwen_tokenizer)).split(text)
    assert RecursiveChunker(20, 4, count=qwen_tokenizer).split(text) == by_callable
    assert RecursiveChunker(20, 4, count=qwen_tokenizer.backend_tokenizer).split(text) == by_callable

    from tokenizers import Tokenizer

    padded = Tokenizer.from_str(qwen_tokenizer.backend_tokenizer.to_str())
    padded.enable_padding(length=64)  # saved tokenizers often carry padding and truncation settings
    padded.enable_truncation(max_length=8)
    assert RecursiveChunker(20, 4, count=padded).split(text) == by_callable
    assert padded.padding is not None and padded.truncation is not None  # the user's object is untouched

    class PlainEncode:  # sentencepiece-like: encode(text) without add_special_tokens
        def encode(self, text):
            return text.split()

    class Tiktokenish:  # encode() would refuse special tokens; encode_ordinary is used
        def encode(self, text):
            raise AssertionError("encode_ordinary should be used")

        def encode_ordinary(self, text):
            return text.split()

    words = RecursiveChunker(5, 1, count=lambda t: len(t.split())).split(text)
    assert RecursiveChunker(5, 1, count=PlainEncode()).split(text) == words
    assert RecursiveChunker(5, 1, count=Tiktokenish()).split(text) == words


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("10",), {}),
        ((10.0,), {}),
        ((True,), {}),
        ((10, "2"), {}),
        ((10, 2), {"max_length": "5"}),
    ],
)
def test_wrong_types_raise_input_type_error(args, kwargs):
    with pytest.raises(InputTypeError):
        RecursiveChunker(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0,), {}),
        ((-5,), {}),
        ((10, -1), {}),
        ((10, 10), {}),
        ((10, 2), {"max_length": 0}),
        ((), {"count": 42}),
        ((), {"count": "gpt2"}),
        ((), {"count": object()}),
        ((), {"count": lambda t: "many"}),
        ((), {"count": lambda: 1}),
    ],
)
def test_unusable_settings_raise_config_error(args, kwargs):
    with pytest.raises(ConfigError):
        RecursiveChunker(*args, **kwargs)


@pytest.mark.parametrize("bad", [None, b"bytes", 3, ["a list"]])
def test_wrong_input_types(bad):
    chunker = RecursiveChunker(10, 2)
    with pytest.raises(InputTypeError):
        chunker.split(bad)
    with pytest.raises(TypeError):  # InputTypeError is a TypeError
        chunker.chunk(bad)


# --- chunk() and spec() ----------------------------------------------------------------------------


def test_chunk_builds_chunks_with_ids_offsets_and_metadata():
    doc = Document(
        id="doc-1",
        text="Alpha beta gamma.\n\nDelta epsilon zeta. Eta theta.",
        metadata={"lang": "en", "tags": ["a"]},
    )
    chunks = RecursiveChunker(20, 5).chunk(doc)
    assert [c.id for c in chunks] == [f"doc-1#{n}" for n in range(len(chunks))]
    assert len(chunks) >= 3
    for c in chunks:
        assert c.doc_id == "doc-1"
        assert doc.text[c.start : c.end] == c.text
        assert c.metadata == doc.metadata
    chunks[0].metadata["tags"].append("b")
    assert doc.metadata["tags"] == ["a"] and chunks[1].metadata["tags"] == ["a"]


def test_chunk_accepts_plain_strings_and_dicts():
    chunks = RecursiveChunker(50, 0).chunk("plain text")
    assert [(c.id, c.doc_id) for c in chunks] == [(f"{content_id('plain text')}#0", content_id("plain text"))]
    chunks = RecursiveChunker(50, 0).chunk({"id": "x", "text": "hi there", "metadata": {"k": 1}})
    assert [(c.id, c.text, c.metadata) for c in chunks] == [("x#0", "hi there", {"k": 1})]


def test_spec_is_json():
    spec = RecursiveChunker(300, 30, count=lambda t: len(t)).spec()
    assert json.loads(json.dumps(spec)) == spec == {"unit": "tokens", "chunk_size": 300, "overlap": 30}
    assert "tokens" in repr(RecursiveChunker(300, 30, count=lambda t: len(t)))


def test_public_and_light():
    assert ragkit.RecursiveChunker is RecursiveChunker
    code = "import sys, ragkit.chunking; print('transformers' in sys.modules or 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
