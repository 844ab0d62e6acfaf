"""Qwen3Reranker against the model-card reference, run one pair at a time on the same tiny weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragkit.errors import ConfigError, InputTypeError, InvalidInputError, RagkitWarning
from ragkit.types import Hit

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ragkit.rerankers import Qwen3Reranker, Reranker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4

# The model card's strings, written out here rather than imported, so that a typo in the library fails.
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "",
    "The quick brown fox jumps over the lazy dog. " * 12,
    "Bananas",
    "中文文本没有空格。日本語のテキスト。",
    "def add(a, b):\n    return a + b\n",
    " leading space and  double  spaces ",
    "Paris is the capital of France. Berlin is the capital of Germany.",  # a duplicate
    "Retrieval augmented generation combines search with language models. " * 4,
    "yes",
]


class ModelCardReference:
    """The Qwen3-Reranker model-card code, verbatim in substance, scoring one pair per forward pass."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
        self._memo: dict[tuple, float] = {}

    @staticmethod
    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = CARD_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def process_inputs(self, pairs, max_length):
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt")

    @torch.no_grad()
    def compute_logits(self, inputs):
        batch_scores = self.model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, self.token_true_id]
        false_vector = batch_scores[:, self.token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    def scores(self, query, docs, *, instruction=None, max_length=8192) -> np.ndarray:
        out = []
        for doc in docs:
            key = (query, doc, instruction, max_length)
            if key not in self._memo:  # several tests score the same pairs
                pairs = [self.format_instruction(instruction, query, doc)]
                self._memo[key] = self.compute_logits(self.process_inputs(pairs, max_length))[0]
            out.append(self._memo[key])
        return np.array(out)

    def prompt_length(self, query, doc, *, instruction=None, max_length=8192) -> int:
        inputs = self.process_inputs([self.format_instruction(instruction, query, doc)], max_length)
        return int(inputs["input_ids"].shape[1])


@pytest.fixture(scope="module")
def reference(qwen3_reranker_dir) -> ModelCardReference:
    return ModelCardReference(qwen3_reranker_dir)


@pytest.fixture(scope="module")
def rr(qwen3_reranker_dir) -> Qwen3Reranker:
    return Qwen3Reranker(str(qwen3_reranker_dir), device="cpu")


@pytest.fixture(scope="module")
def rr_plain(qwen3_reranker_dir) -> Qwen3Reranker:
    return Qwen3Reranker(str(qwen3_reranker_dir), device="cpu", share_prefix=False)


class ForwardSpy:
    """Records, for each forward pass of the transformer body, its input shape and whether a cache came in."""

    def __init__(self, reranker: Qwen3Reranker) -> None:
        self.calls: list[tuple[tuple[int, ...], bool]] = []
        self._handle = reranker._model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        # transformers 5.x calls the cache argument "cache", 4.x "past_key_values".
        cached = kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None
        self.calls.append((tuple(kwargs["input_ids"].shape), cached))

    def close(self) -> None:
        self._handle.remove()

    @property
    def tokens(self) -> int:
        return sum(int(np.prod(shape)) for shape, _ in self.calls)


def assert_close(got: np.ndarray, want: np.ndarray, tol: float = TOL) -> None:
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= tol, np.abs(got - want).max()


# -- the reference ------------------------------------------------------------------------------------


def test_reference_scores_are_not_degenerate(reference):
    # Guard for the tests below: equal or saturated scores would let a wrong implementation pass.
    want = reference.scores(QUERY, DOCS)
    assert len(np.unique(np.round(want, 4))) >= len(DOCS) - 1  # only the duplicate repeats
    assert 0.05 < want.min() and want.max() < 0.9999


@pytest.mark.parametrize("fixture", ["rr", "rr_plain"])
def test_scores_match_model_card_default_instruction(request, reference, fixture):
    reranker = request.getfixturevalue(fixture)
    assert_close(reranker.score(QUERY, DOCS), reference.scores(QUERY, DOCS))


def test_scores_match_model_card_custom_instruction(qwen3_reranker_dir, reference):
    instruction = "Judge whether the passage is written in English"
    rr = Qwen3Reranker(str(qwen3_reranker_dir), instruction=instruction, device="cpu")
    want = reference.scores(QUERY, DOCS, instruction=instruction)
    assert_close(rr.score(QUERY, DOCS), want)
    # The instruction reaches the prompt: scores differ from the default instruction's.
    assert np.abs(want - reference.scores(QUERY, DOCS)).max() > 1e-3


def test_scores_match_model_card_when_documents_are_truncated(qwen3_reranker_dir, reference):
    fixed = len(reference.prefix_tokens) + len(reference.suffix_tokens)
    max_length = fixed + 40  # room for the instruction, the query and a few document tokens
    want = reference.scores(QUERY, DOCS, max_length=max_length)
    for share in (True, False):
        rr = Qwen3Reranker(str(qwen3_reranker_dir), max_length=max_length, share_prefix=share, device="cpu")
        assert_close(rr.score(QUERY, DOCS), want)
    # The long documents really were cut, and their scores changed with it.
    assert reference.prompt_length(QUERY, DOCS[2], max_length=max_length) == max_length
    assert reference.prompt_length(QUERY, DOCS[2]) > max_length
    assert abs(want[2] - reference.scores(QUERY, [DOCS[2]])[0]) > 1e-4


def test_prefix_and_suffix_are_never_cut(qwen3_reranker_dir, reference):
    fixed = len(reference.prefix_tokens) + len(reference.suffix_tokens)
    rr = Qwen3Reranker(str(qwen3_reranker_dir), max_length=fixed + 3, device="cpu")
    with pytest.warns(RagkitWarning):  # 3 tokens hold only the start of the instruction
        prompts = rr._prompt_ids(QUERY, ["a long document " * 50])
    assert len(prompts[0]) == fixed + 3
    assert prompts[0][: len(reference.prefix_tokens)] == reference.prefix_tokens
    assert prompts[0][-len(reference.suffix_tokens) :] == reference.suffix_tokens


def test_a_query_that_fills_max_length_warns(qwen3_reranker_dir, reference):
    fixed = len(reference.prefix_tokens) + len(reference.suffix_tokens)
    rr = Qwen3Reranker(str(qwen3_reranker_dir), max_length=fixed + 5, device="cpu")
    with pytest.warns(RagkitWarning, match="max_length"):
        got = rr.score(QUERY, ["Paris", "Bananas"])
    assert_close(got, reference.scores(QUERY, ["Paris", "Bananas"], max_length=fixed + 5))


def test_empty_documents_and_empty_query(rr, rr_plain, reference):
    for reranker in (rr, rr_plain):
        assert_close(reranker.score(QUERY, [""]), reference.scores(QUERY, [""]))
        assert_close(reranker.score(QUERY, ["", "", "x"]), reference.scores(QUERY, ["", "", "x"]))
        assert_close(reranker.score("", ["Paris", ""]), reference.scores("", ["Paris", ""]))


def test_empty_document_list_gives_an_empty_array(rr):
    got = rr.score(QUERY, [])
    assert got.dtype == np.float32 and got.shape == (0,)
    assert rr.rerank(QUERY, []) == []


def test_mixed_length_batch_matches_single_pairs(qwen3_reranker_dir, reference):
    rng = np.random.default_rng(0)
    words = (
        "Paris capital France quick brown fox search language models vectors rerankers 中文 yes no".split()
    )
    docs = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(0, 120, size=24)]
    want = reference.scores("capital of France", docs)
    # A budget that makes several batches of different widths on both paths.
    for share in (True, False):
        rr = Qwen3Reranker(str(qwen3_reranker_dir), max_batch_tokens=1500, share_prefix=share, device="cpu")
        spy = ForwardSpy(rr)
        try:
            got = rr.score("capital of France", docs)
        finally:
            spy.close()
        assert_close(got, want)
        assert len(spy.calls) > 3  # really batched by the budget, in several passes
        assert max(shape[0] for shape, _ in spy.calls) > 1  # and several prompts per pass


def test_scores_do_not_depend_on_batch_composition_or_order(qwen3_reranker_dir, rr):
    one_at_a_time = Qwen3Reranker(str(qwen3_reranker_dir), max_batch_tokens=1, device="cpu")
    base = rr.score(QUERY, DOCS)
    assert np.abs(one_at_a_time.score(QUERY, DOCS) - base).max() <= 1e-5
    perm = np.random.default_rng(1).permutation(len(DOCS))
    shuffled = rr.score(QUERY, [DOCS[i] for i in perm])
    assert np.abs(shuffled - base[perm]).max() <= 1e-5
    # A document scores the same alone, with others, and among different others.
    assert abs(rr.score(QUERY, [DOCS[0]])[0] - base[0]) <= 1e-5
    assert abs(rr.score(QUERY, [DOCS[0], "something else entirely"])[0] - base[0]) <= 1e-5


def test_the_prefix_cache_goes_in_under_the_name_this_transformers_uses(rr):
    # The old name only warns in transformers 5.x and is removed in 5.40: a warning here is a failure.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        rr.score(QUERY, DOCS)


def test_prefix_sharing_runs_the_shared_part_once(rr, rr_plain):
    spy_shared, spy_plain = ForwardSpy(rr), ForwardSpy(rr_plain)
    try:
        shared = rr.score(QUERY, DOCS)
        plain = rr_plain.score(QUERY, DOCS)
    finally:
        spy_shared.close()
        spy_plain.close()
    assert np.abs(shared - plain).max() <= 1e-5
    assert not any(cached for _, cached in spy_plain.calls)
    # One pass over the shared prefix alone (batch of one, no cache), then only tails against its cache.
    (first_shape, first_cached), *rest = spy_shared.calls
    assert first_shape[0] == 1 and not first_cached
    assert rest and all(cached for _, cached in rest)
    prefix_len = first_shape[1]
    assert prefix_len > len(rr._prefix_ids)  # the instruction and query are shared too
    assert spy_shared.tokens < spy_plain.tokens - (len(DOCS) - 2) * prefix_len


def test_sharing_is_skipped_when_the_extra_pass_costs_more(qwen3_reranker_dir, rr):
    # On a GPU a forward pass of a small model costs thousands of tokens' worth of launches; a few documents
    # do not pay for the extra prefix pass there, many do. Simulated by setting that cost.
    gpu_like = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu")
    gpu_like._pass_overhead = 5000
    assert rr._shared_length(rr._prompt_ids(QUERY, DOCS)) > 0
    assert gpu_like._shared_length(gpu_like._prompt_ids(QUERY, DOCS)) == 0
    assert gpu_like._shared_length(gpu_like._prompt_ids(QUERY, DOCS * 10)) > 0
    assert np.abs(gpu_like.score(QUERY, DOCS) - rr.score(QUERY, DOCS)).max() <= 1e-5


def test_shared_prefix_is_taken_from_token_ids_not_text(rr, rr_plain, reference):
    # Documents whose first characters can merge with the text before them: the common token prefix then
    # ends before "<Document>: ", and the result must still match the reference exactly.
    docs = ["Paris", " Paris", ":Paris", "\nParis", "  ", "P"]
    want = reference.scores(QUERY, docs)
    assert_close(rr.score(QUERY, docs), want)
    assert_close(rr_plain.score(QUERY, docs), want)


def test_the_shared_cache_is_not_mutated_across_batches(qwen3_reranker_dir, reference):
    # With a tiny budget every document gets its own pass against the same prefix cache; a pass that
    # appended to the shared cache would shift every later document.
    rr = Qwen3Reranker(str(qwen3_reranker_dir), max_batch_tokens=1, device="cpu")
    assert_close(rr.score(QUERY, DOCS), reference.scores(QUERY, DOCS))


def test_scores_are_probabilities(rr):
    got = rr.score(QUERY, DOCS)
    assert got.dtype == np.float32 and got.shape == (len(DOCS),)
    assert np.all((got >= 0) & (got <= 1))


# -- batching ------------------------------------------------------------------------------------------


def _pack_cost(batches, lengths, overhead):
    return sum(len(b) * max(lengths[i] for i in b) + overhead for b in batches)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=0, max_size=40),
    budget=st.integers(1, 4000),
    extra=st.integers(0, 100),
    overhead=st.integers(0, 200),
)
def test_pack_covers_everything_within_budget_and_beats_greedy(lengths, budget, extra, overhead):
    from ragkit._torch import pack_by_tokens
    from ragkit.rerankers.qwen3 import _pack

    batches = _pack(lengths, budget, extra=extra, overhead=overhead)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        widths = [max(1, lengths[i]) for i in b]
        assert widths == sorted(widths, reverse=True)
        assert len(b) == 1 or len(b) * (widths[0] + extra) <= budget
    if lengths:
        floor = [max(1, n) for n in lengths]
        greedy = pack_by_tokens([n + extra for n in floor], budget)
        assert _pack_cost(batches, floor, overhead) <= _pack_cost(greedy, floor, overhead)


def test_pack_is_optimal_on_small_inputs():
    from itertools import combinations

    from ragkit.rerankers.qwen3 import _pack

    rng = np.random.default_rng(3)
    for _ in range(30):
        lengths = [int(n) for n in rng.integers(1, 60, size=int(rng.integers(1, 8)))]
        budget, overhead = int(rng.integers(60, 300)), int(rng.integers(0, 50))
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = None
        for k in range(len(order)):  # every split of the sorted order into runs
            for cuts in combinations(range(1, len(order)), k):
                runs = [order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)), strict=True)]
                if all(len(r) == 1 or len(r) * lengths[r[0]] <= budget for r in runs):
                    cost = _pack_cost(runs, lengths, overhead)
                    best = cost if best is None else min(best, cost)
        assert _pack_cost(_pack(lengths, budget, overhead=overhead), lengths, overhead) == best


# -- the convenience surface --------------------------------------------------------------------------


def test_rerank_orders_by_score(rr):
    scores = rr.score(QUERY, DOCS)
    hits = rr.rerank(QUERY, DOCS, k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    best = np.argsort(-scores, kind="stable")[:3]
    assert [h.text for h in hits] == [DOCS[i] for i in best]
    assert [h.doc_id for h in hits] == [str(i) for i in best]
    assert all(h.rerank_score == h.score for h in hits)
    np.testing.assert_allclose([h.score for h in hits], scores[best], atol=1e-6)


def test_rerank_keeps_first_stage_scores_of_hits(rr):
    hits = [
        Hit(id=f"d{i}#0", doc_id=f"d{i}", text=t, start=0, end=len(t), score=1.0 - i / 10, dense_score=0.5)
        for i, t in enumerate(DOCS[:4])
    ]
    out = rr.rerank(QUERY, hits)
    assert len(out) == 4 and {h.id for h in out} == {h.id for h in hits}
    assert all(h.dense_score == 0.5 for h in out)
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)


def test_is_a_reranker(rr):
    assert isinstance(rr, Reranker)


def test_fingerprint_and_spec(qwen3_reranker_dir, rr):
    fp = rr.fingerprint
    assert fp["model"] == qwen3_reranker_dir.name.lower()
    assert fp["instruction"] == CARD_INSTRUCTION
    assert "device" not in fp and "dtype" not in fp and "max_length" not in fp
    json.dumps(fp)
    spec = json.loads(json.dumps(rr.spec()))
    assert spec["class"] == "ragkit.rerankers.Qwen3Reranker"
    model = spec.pop("model")
    spec.pop("class")
    rebuilt = Qwen3Reranker(model, **spec)
    assert rebuilt.fingerprint == fp
    assert np.abs(rebuilt.score(QUERY, DOCS[:3]) - rr.score(QUERY, DOCS[:3])).max() <= 1e-6
    custom = Qwen3Reranker(model, instruction="Find code", device="cpu")
    assert custom.fingerprint != fp and custom.spec()["instruction"] == "Find code"


def test_resolved_settings(rr):
    # dtype="auto" keeps float32 on every CPU for the reranker (bf16 moved scores past the 1e-2 bar).
    assert rr.device.type == "cpu" and rr.dtype == torch.float32 and rr.runtime.dtype == "float32"
    assert rr.runtime.kernels in ("mkl", "onednn") and rr.runtime.threads == torch.get_num_threads()
    assert rr.runtime.kernels in repr(rr)
    assert rr.max_length == 8192 and rr.instruction == CARD_INSTRUCTION
    assert "Qwen3Reranker(" in repr(rr)
    assert rr.count_tokens("") == 0 and rr.count_tokens("Paris is the capital") >= 1


# -- errors -------------------------------------------------------------------------------------------


def test_max_length_too_small_for_the_fixed_parts(qwen3_reranker_dir, reference):
    fixed = len(reference.prefix_tokens) + len(reference.suffix_tokens)
    for max_length in (1, fixed - 1, fixed):
        with pytest.raises(ConfigError, match="max_length"):
            Qwen3Reranker(str(qwen3_reranker_dir), max_length=max_length, device="cpu")
    Qwen3Reranker(str(qwen3_reranker_dir), max_length=fixed + 1, device="cpu")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_length": 0},
        {"max_length": 1.5},
        {"max_length": True},
        {"max_batch_tokens": 0},
        {"device": "tpu9"},
        {"kernels": "blas"},
        {"dtype": "float16", "device": "cpu"},
    ],
)
def test_bad_settings_raise_config_error(qwen3_reranker_dir, kwargs):
    with pytest.raises(ConfigError):
        Qwen3Reranker(str(qwen3_reranker_dir), **kwargs)


def test_bad_instruction_type(qwen3_reranker_dir):
    with pytest.raises(InputTypeError):
        Qwen3Reranker(str(qwen3_reranker_dir), instruction=42)


@pytest.mark.parametrize(
    ("query", "documents"),
    [
        (None, ["a"]),
        (b"bytes", ["a"]),
        (3, ["a"]),
        ("q", "a bare string"),
        ("q", None),
        ("q", ["a", None]),
        ("q", ["a", b"b"]),
        ("q", [1.5]),
        ("q", 7),
    ],
)
def test_wrong_input_types(rr, query, documents):
    with pytest.raises(InputTypeError) as info:
        rr.score(query, documents)
    assert isinstance(info.value, TypeError)


def test_rerank_rejects_bad_k(rr):
    with pytest.raises(InvalidInputError):
        rr.rerank(QUERY, ["a"], k=0)


def test_a_tokenizer_without_single_yes_token_is_refused(qwen3_reranker_dir):
    from transformers import AutoTokenizer

    from ragkit.rerankers.qwen3 import _single_token_id

    tok = AutoTokenizer.from_pretrained(str(qwen3_reranker_dir))
    assert _single_token_id(tok, "yes", "m") == tok.convert_tokens_to_ids("yes")
    with pytest.raises(ConfigError, match="single token"):
        _single_token_id(tok, "definitely-not-one-token", "m")


def test_import_does_not_load_torch():
    code = (
        "import sys, ragkit.rerankers, ragkit.rerankers.qwen3; "
        "from ragkit.rerankers import Qwen3Reranker; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- benchmark smoke run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_benchmark_quick_run(tmp_path):
    out = tmp_path / "results"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rerank_throughput.py"), "--quick", "--device", "cpu"]
        + ["--out-dir", str(out)],
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    result = json.loads((out / "rerank_throughput.json").read_text())
    assert {"ragkit", "model_card", "sentence_transformers"} <= set(result["throughput"])
    for name in ("ragkit", "sentence_transformers"):
        assert result["max_abs_diff_vs_reference"][name] <= TOL
    assert (out / "rerank_throughput.md").read_text().startswith("#")


def test_auto_dtype_stays_float32_on_a_bf16_cpu(qwen3_reranker_dir, reference, monkeypatch):
    import ragkit.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "avx512_bf16"}))
    rr = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu")
    assert rr.runtime.dtype == "float32" and "float32 for this model" in rr.runtime.reasons[0]
    assert np.abs(rr.score(QUERY, DOCS) - reference.scores(QUERY, DOCS)).max() <= TOL


def test_bfloat16_on_request_keeps_the_score_math_in_float32(qwen3_reranker_dir, rr):
    bf16 = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu", dtype="bfloat16")
    assert bf16.runtime.dtype == "bfloat16" and bf16.runtime.kernels == "default"
    assert bf16._direction.dtype == torch.float32  # the yes/no direction; the sigmoid runs in float64
    got = bf16.score(QUERY, DOCS)
    assert got.dtype == np.float32 and ((got >= 0) & (got <= 1)).all()
    # Random tiny weights: a loose bound only (the 0.6B-width evidence is benchmarks/reranker_bf16_check.py).
    assert np.abs(got - rr.score(QUERY, DOCS)).max() <= 0.1
    assert bf16.fingerprint == rr.fingerprint


@pytest.mark.parametrize("kernels", ["mkl", "onednn"])
def test_explicit_kernels_match_the_model_card(qwen3_reranker_dir, reference, kernels):
    rr = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu", kernels=kernels)
    want = kernels if torch.backends.mkldnn.is_available() else "mkl"
    assert rr.runtime.kernels == want and f"kernels={kernels}" in rr.runtime.reasons[-1]
    assert np.abs(rr.score(QUERY, DOCS) - reference.scores(QUERY, DOCS)).max() <= TOL
