"""OpenAIEmbedder against a real HTTP server on 127.0.0.1 (tests/fake_api.py)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fake_api import FULL_DIM, QWEN3_TASK, FakeAPI, Reply, fake_vector, unit

from ragkit.embedders import DEFAULT_QWEN3_TASK, Embedder, OpenAIEmbedder
from ragkit.embedders.remote import QWEN3_QUERY_TEMPLATE
from ragkit.errors import BadRequestError, ConfigError, InputTypeError, RateLimitError, RemoteError
from ragkit.providers import EMBEDDING_PROVIDERS, Provider

QWEN = "Qwen/Qwen3-Embedding-0.6B"
DOCS = ["Paris is the capital of France.", "", "Bananas are yellow.", "日本語のテキスト", "x" * 500]
KEY_VARS = [
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "DEEPINFRA_API_KEY",
    "DEEPINFRA_TOKEN",
    "DASHSCOPE_API_KEY",
]


@pytest.fixture(scope="module")
def api():
    with FakeAPI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(api, monkeypatch):
    api.reset()
    for var in [
        *KEY_VARS,
        "AI_GATEWAY_API_KEY",
        "VERCEL_AI_GATEWAY_API_KEY",
        "VLLM_API_KEY",
        "RAGKIT_API_KEY",
    ]:
        monkeypatch.delenv(var, raising=False)


def make(api, model="bge-m3", **kw) -> OpenAIEmbedder:
    kw.setdefault("provider", "vllm")
    kw.setdefault("base_url", api.url + "/v1")
    kw.setdefault("backoff", 0.001)
    kw.setdefault("timeout", 5.0)
    return OpenAIEmbedder(model, **kw)


def expected(texts, dim=FULL_DIM):
    return unit(np.stack([fake_vector(t, dim) for t in texts]))


def sent_inputs(api):
    return [t for body in api.bodies() for t in body["input"]]


# -- wire format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_vectors_in_input_order_for_both_encodings(api, encoding):
    emb = make(api, encoding_format=encoding)
    out = emb.embed_documents(DOCS)
    assert out.dtype == np.float32 and out.shape == (len(DOCS), FULL_DIM)
    np.testing.assert_allclose(out, expected(DOCS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    body = api.requests[0].body
    assert body["encoding_format"] == encoding
    assert body["model"] == "bge-m3" and body["input"] == DOCS
    assert "dimensions" not in body  # not asked, not sent
    assert api.requests[0].path == "/v1/embeddings"


def test_auto_encoding_prefers_base64(api):
    make(api).embed_documents(["a"])
    assert api.requests[0].body["encoding_format"] == "base64"


def test_shuffled_index_order_across_batches(api):
    api.configure(order="random")
    texts = [f"text number {i}" for i in range(23)]
    out = make(api, batch_size=5).embed_documents(texts)
    assert api.count == 5
    assert sorted(len(b["input"]) for b in api.bodies()) == [3, 5, 5, 5, 5]
    np.testing.assert_allclose(out, expected(texts), atol=1e-6)


def test_fewer_items_than_inputs_is_an_error(api):
    api.configure(drop=1)
    with pytest.raises(RemoteError) as e:
        make(api).embed_documents(["a", "b", "c"])
    assert type(e.value) is RemoteError
    assert "sent 3 inputs, the answer has 2 embeddings" in str(e.value)
    assert api.count == 1


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 0, "embedding": [1.0, 2.0]}]}, "twice"),
        ({"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 5, "embedding": [1.0, 2.0]}]}, "index"),
        ({"data": [{"embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0, 2.0]}]}, "index"),
        ({"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]}, "unequal"),
        ({"data": [{"index": 0, "embedding": "%%%"}, {"index": 1, "embedding": "%%%"}]}, "base64"),
        ({"data": [{"index": 0, "embedding": [1.0, None]}, {"index": 1, "embedding": [1.0, 2.0]}]}, "NaN"),
        ({"object": "list"}, "no 'data' list"),
    ],
)
def test_malformed_answers_are_remote_errors(api, answer, message):
    api.script(Reply(json=answer))
    with pytest.raises(RemoteError, match=message):
        make(api).embed_documents(["a", "b"])
    assert api.count == 1


def test_server_batch_limit_respected_by_batch_size(api):
    api.configure(max_inputs=5)
    texts = [f"t{i}" for i in range(12)]
    out = make(api, batch_size=5).embed_documents(texts)
    assert sorted(len(b["input"]) for b in api.bodies()) == [2, 5, 5]
    np.testing.assert_allclose(out, expected(texts), atol=1e-6)


def test_server_batch_limit_exceeded_is_a_bad_request(api):
    api.configure(max_inputs=5)
    with pytest.raises(BadRequestError, match="batch size 6 is larger than the maximum 5"):
        make(api, batch_size=6).embed_documents([f"t{i}" for i in range(6)])
    assert api.count == 1


def test_retry_inside_embed(api):
    api.script(Reply(429, json={"error": {"message": "slow"}}, headers={"retry-after-ms": "20"}))
    out = make(api).embed_documents(["a", "b"])
    assert api.count == 2
    np.testing.assert_allclose(out, expected(["a", "b"]), atol=1e-6)


def test_rate_limit_after_retries(api):
    api.script(*[Reply(429, json={"error": {"message": "slow"}})] * 3)
    with pytest.raises(RateLimitError):
        make(api, max_retries=2).embed_documents(["a"])
    assert api.count == 3


# -- concurrency ---------------------------------------------------------------------------------------


def test_concurrency_bound_sync(api):
    api.configure(delay=0.1)
    texts = [f"doc {i}" for i in range(20)]
    out = make(api, batch_size=2, max_concurrency=3).embed_documents(texts)
    assert api.count == 10
    assert api.max_in_flight == 3
    np.testing.assert_allclose(out, expected(texts), atol=1e-6)


def test_concurrency_bound_async(api):
    api.configure(delay=0.1)
    texts = [f"doc {i}" for i in range(20)]
    emb = make(api, batch_size=2, max_concurrency=3)

    async def main():
        async with emb:
            return await emb.aembed_documents(texts)

    out = asyncio.run(main())
    assert api.count == 10
    assert api.max_in_flight == 3
    np.testing.assert_allclose(out, expected(texts), atol=1e-6)


def test_single_request_at_a_time(api):
    api.configure(delay=0.05)
    make(api, batch_size=1, max_concurrency=1).embed_documents(["a", "b", "c"])
    assert api.count == 3 and api.max_in_flight == 1


def test_async_queries_and_errors(api):
    emb = make(api, QWEN)

    async def main():
        q = await emb.aembed_queries(["what is x"])
        api.script(Reply(400, json={"error": {"message": "nope"}}))
        with pytest.raises(BadRequestError, match="nope"):
            await emb.aembed_documents(["a"])
        await emb.aclose()
        return q

    q = asyncio.run(main())
    np.testing.assert_allclose(q, expected([f"Instruct: {QWEN3_TASK}\nQuery:what is x"]), atol=1e-6)


# -- the Qwen3 query template: exactly once ------------------------------------------------------------


def test_qwen3_template_is_applied_client_side(api):
    emb = make(api, QWEN)
    queries = ["what is x", "{braces} stay"]
    q = emb.embed_queries(queries)
    d = emb.embed_documents(["what is x"])
    templated = [f"Instruct: {DEFAULT_QWEN3_TASK}\nQuery:{t}" for t in queries]
    assert api.requests[0].body["input"] == templated
    assert "input_type" not in api.requests[0].body and "instruction" not in api.requests[0].body
    assert api.requests[1].body["input"] == ["what is x"]  # documents: no instruction
    np.testing.assert_allclose(q, expected(templated), atol=1e-6)
    np.testing.assert_allclose(d, expected(["what is x"]), atol=1e-6)


def test_ragkit_preset_lets_the_server_apply_the_template(api):
    emb = make(api, QWEN, provider="ragkit")
    q = emb.embed_queries(["what is x"])
    d = emb.embed_documents(["what is x"])
    query_body, doc_body = api.requests[0].body, api.requests[1].body
    assert query_body["input"] == ["what is x"]  # raw: the server formats it
    assert query_body["input_type"] == "query" and query_body["instruction"] == DEFAULT_QWEN3_TASK
    assert doc_body["input"] == ["what is x"] and doc_body["input_type"] == "document"
    assert "instruction" not in doc_body
    # Same vectors as the client-side route: the template was applied once, by the server.
    np.testing.assert_allclose(q, expected([f"Instruct: {QWEN3_TASK}\nQuery:what is x"]), atol=1e-6)
    np.testing.assert_allclose(d, expected(["what is x"]), atol=1e-6)
    assert make(api, QWEN).fingerprint == emb.fingerprint


def test_instruction_string_none_and_per_call(api):
    make(api, QWEN, instruction="Find code").embed_queries(["sort a list"])
    make(api, QWEN, instruction=None).embed_queries(["sort a list"])
    make(api, QWEN).embed_queries(["sort a list"], instruction="Find poems")
    make(api, "bge-m3").embed_queries(["sort a list"])  # auto: not a Qwen3 model, no template
    make(api, "bge-m3", instruction="Find code").embed_queries(["sort a list"])  # explicit: template
    assert sent_inputs(api) == [
        "Instruct: Find code\nQuery:sort a list",
        "sort a list",
        "Instruct: Find poems\nQuery:sort a list",
        "sort a list",
        "Instruct: Find code\nQuery:sort a list",
    ]


def test_ragkit_preset_instruction_variants(api):
    make(api, QWEN, provider="ragkit", instruction="Find code").embed_queries(["q"])
    make(api, QWEN, provider="ragkit", instruction=None).embed_queries(["q"])
    make(api, "bge-m3", provider="ragkit").embed_queries(["q"])
    bodies = api.bodies()
    assert bodies[0]["input_type"] == "query" and bodies[0]["instruction"] == "Find code"
    assert "input_type" not in bodies[1] and "instruction" not in bodies[1]  # off: embedded as typed
    assert bodies[2]["input_type"] == "query" and "instruction" not in bodies[2]  # the server's choice
    assert sent_inputs(api) == ["q", "q", "q"]


# -- dimensions ----------------------------------------------------------------------------------------


def test_dimensions_sent_only_when_asked(api):
    emb = make(api, QWEN, dim=64)
    out = emb.embed_documents(["a", "b"])
    assert api.requests[0].body["dimensions"] == 64
    assert out.shape == (2, 64) and emb.dim == 64
    np.testing.assert_allclose(out, expected(["a", "b"], 64), atol=1e-6)


def test_ignored_dimensions_truncated_for_matryoshka_models(api):
    api.configure(ignore_dimensions=True)
    out = make(api, QWEN, dim=64).embed_documents(["a"])
    np.testing.assert_allclose(out, unit(fake_vector("a")[None, :64]), atol=1e-6)


def test_ignored_dimensions_is_an_error_for_other_models(api):
    api.configure(ignore_dimensions=True)
    with pytest.raises(RemoteError, match="does not honour `dimensions`"):
        make(api, "bge-m3", dim=64).embed_documents(["a"])


def test_dim_is_probed_lazily_once(api):
    emb = make(api)
    assert api.count == 0
    assert emb.dim == FULL_DIM
    assert api.count == 1 and len(api.requests[0].body["input"]) == 1
    assert emb.dim == FULL_DIM and emb.fingerprint["dim"] == FULL_DIM
    emb.embed_documents(["a"])
    assert api.count == 2


def test_dim_learnt_from_first_call_without_probe(api):
    emb = make(api)
    emb.embed_documents(["a", "b"])
    assert emb.dim == FULL_DIM and api.count == 1


def test_empty_input_list(api):
    assert make(api, dim=32).embed_documents([]).shape == (0, 32)
    assert api.count == 0
    assert asyncio.run(make(api).aembed_queries([])).shape == (0, FULL_DIM)  # probes once for dim
    assert api.count == 1


@pytest.mark.parametrize("dim", [0, -5, 2.5, True, "64"])
def test_bad_dim_values(api, dim):
    with pytest.raises(ConfigError):
        make(api, dim=dim)


def test_qwen3_dim_range_checked(api):
    with pytest.raises(ConfigError, match="from 32 to 1024"):
        make(api, QWEN, dim=2048)
    with pytest.raises(ConfigError, match="from 32 to 1024"):
        make(api, QWEN, dim=16)


# -- presets -------------------------------------------------------------------------------------------


def test_dashscope_batches_of_ten_float_only(api, monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-dash")
    emb = make(api, "text-embedding-v4", provider="dashscope", dim=64)
    texts = [f"text {i}" for i in range(25)]
    out = emb.embed_documents(texts)
    assert sorted(len(b["input"]) for b in api.bodies()) == [5, 10, 10]
    assert all(b["encoding_format"] == "float" and b["dimensions"] == 64 for b in api.bodies())
    assert api.requests[0].headers["authorization"] == "Bearer sk-dash"
    np.testing.assert_allclose(out, expected(texts, 64), atol=1e-6)


@pytest.mark.parametrize("dim", [100, 32, 4096])
def test_dashscope_rejects_bad_dimension_before_any_request(api, dim):
    with pytest.raises(ConfigError, match=r"64, 128, 256, 512, 768, 1024, 1536, 2048"):
        make(api, "text-embedding-v4", provider="dashscope", dim=dim, api_key="k")
    assert api.count == 0


def test_dashscope_limits(api):
    with pytest.raises(ConfigError, match="at most 10 inputs"):
        make(api, "text-embedding-v4", provider="dashscope", batch_size=20, api_key="k")
    with pytest.raises(ConfigError, match="encoding_format 'float'"):
        make(api, "text-embedding-v4", provider="dashscope", encoding_format="base64", api_key="k")
    assert make(api, "text-embedding-v4", provider="dashscope", api_key="k").spec()["batch_size"] == 10


@pytest.mark.parametrize(
    ("provider", "var"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("openrouter", "OPENROUTER_API_KEY"),
        ("deepinfra", "DEEPINFRA_API_KEY"),
        ("vercel", "AI_GATEWAY_API_KEY"),
        ("dashscope", "DASHSCOPE_API_KEY"),
    ],
)
def test_missing_key_names_the_variable_before_any_request(api, provider, var):
    with pytest.raises(ConfigError, match=var):
        make(api, provider=provider)
    assert api.count == 0


@pytest.mark.parametrize("provider", ["vllm", "tei", "ragkit", "openai-compatible"])
def test_local_servers_need_no_key(api, provider):
    make(api, provider=provider).embed_documents(["a"])
    assert "authorization" not in api.requests[0].headers


def test_key_from_environment_is_sent(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    make(api, "text-embedding-3-small", provider="openai").embed_documents(["a"])
    assert api.requests[0].headers["authorization"] == "Bearer sk-env"


def test_custom_base_url_does_not_read_openai_key(api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    make(api, provider=None).embed_documents(["a"])
    assert "authorization" not in api.requests[0].headers


@pytest.mark.parametrize(
    ("provider", "wire"),
    [
        ("openrouter", "qwen/qwen3-embedding-4b"),
        ("deepinfra", "Qwen/Qwen3-Embedding-4B"),
        ("vercel", "alibaba/qwen3-embedding-4b"),
        ("vllm", "Qwen/Qwen3-Embedding-4B"),
    ],
)
def test_model_spellings(api, provider, wire):
    make(api, "Qwen/Qwen3-Embedding-4B", provider=provider, api_key="k").embed_documents(["a"])
    assert api.requests[0].body["model"] == wire


def test_provider_spelling_passes_through(api):
    make(api, "qwen/qwen3-embedding-8b", provider="openrouter", api_key="k").embed_documents(["a"])
    assert api.requests[0].body["model"] == "qwen/qwen3-embedding-8b"


def test_base_url_selects_the_known_preset():
    emb = OpenAIEmbedder(
        "text-embedding-v4", base_url="https://dashscope-intl.aliyuncs.com/compatible-mode/v1", api_key="k"
    )
    assert emb.spec()["provider"] == "dashscope" and emb.spec()["batch_size"] == 10


def test_custom_provider_preset(api):
    mine = Provider("mine", api.url + "/v1", key_required=False, max_batch=3, dimensions={32, 64})
    emb = OpenAIEmbedder("m", provider=mine, dim=32)
    emb.embed_documents(["a", "b", "c", "d"])
    assert sorted(len(b["input"]) for b in api.bodies()) == [1, 3]
    rebuilt = OpenAIEmbedder.from_spec(json.loads(json.dumps(emb.spec())))
    assert rebuilt.spec() == emb.spec()
    with pytest.raises(ConfigError):
        OpenAIEmbedder("m", provider=mine, dim=48)


def test_unknown_provider_and_bad_options():
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        OpenAIEmbedder("m", provider="nope")
    with pytest.raises(ConfigError, match="http:// or https://"):
        OpenAIEmbedder("m", base_url="localhost:8000/v1")
    with pytest.raises(ConfigError):
        OpenAIEmbedder("m", provider="vllm", max_concurrency=0)
    with pytest.raises(ConfigError):
        OpenAIEmbedder("m", provider="vllm", encoding_format="int8")


# -- protocol, spec and fingerprint --------------------------------------------------------------------


def test_is_an_embedder_and_fingerprints(api):
    emb = make(api, QWEN, dim=256)
    assert isinstance(emb, Embedder)
    assert emb.fingerprint == {
        "model": "qwen3-embedding-0.6b",
        "dim": 256,
        "pooling": "last",
        "normalize": True,
        "query_template": QWEN3_QUERY_TEMPLATE,
        "document_template": "{text}",
        "instruction": DEFAULT_QWEN3_TASK,
    }
    assert make(api, "BAAI/bge-m3", dim=64).fingerprint == {
        "model": "bge-m3",
        "dim": 64,
        "pooling": "remote",
        "normalize": True,
        "query_template": "{text}",
        "document_template": "{text}",
        "instruction": None,
    }
    assert make(api, QWEN, dim=256, instruction="other").fingerprint != emb.fingerprint
    # Same model through another provider spelling: same fingerprint.
    assert make(
        api, "qwen/qwen3-embedding-0.6b", dim=256, provider="openrouter", api_key="k"
    ).fingerprint == (emb.fingerprint)
    assert api.count == 0  # dim was given: no probe


def test_spec_and_repr_hold_no_secret(api, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-env-secret")
    for emb in (
        make(api, QWEN, provider="openrouter", api_key="sk-arg-secret"),
        make(api, QWEN, provider="openrouter"),
        make(api, QWEN, base_url="http://user:pw-secret@127.0.0.1:1/v1", api_key="sk-arg-secret"),
    ):
        text = json.dumps(emb.spec()) + repr(emb)
        assert "secret" not in text
        assert emb.spec()["class"] == "ragkit.embedders.OpenAIEmbedder"


def test_spec_rebuilds_an_equal_embedder(api):
    emb = make(api, QWEN, dim=128, batch_size=7, instruction="Find code")
    rebuilt = OpenAIEmbedder.from_spec(emb.spec())
    assert rebuilt.spec() == emb.spec() and rebuilt.fingerprint == emb.fingerprint
    np.testing.assert_array_equal(rebuilt.embed_queries(["q"]), emb.embed_queries(["q"]))


def test_pipeline_manifest_round_trip(api):
    """What Pipeline.save writes for an embedder (its registry entry, through JSON) rebuilds it."""
    from ragkit.components import build_component, component_entry

    emb = make(api, QWEN, dim=64, provider=Provider("mine", api.url + "/v1", key_required=False, max_batch=3))
    saved = json.loads(json.dumps(component_entry(emb)))
    rebuilt = build_component(saved, role="embedder")
    assert isinstance(rebuilt, OpenAIEmbedder) and rebuilt.spec() == emb.spec()
    assert rebuilt.fingerprint == emb.fingerprint


def test_wrong_input_types(api):
    emb = make(api, dim=32)
    with pytest.raises(InputTypeError):
        emb.embed_documents("a single string")
    with pytest.raises(InputTypeError):
        emb.embed_queries(["ok", None])
    with pytest.raises(InputTypeError):
        emb.embed_queries(["ok"], instruction=3)
    assert api.count == 0


def test_default_provider_is_openai():
    emb = OpenAIEmbedder("text-embedding-3-small", api_key="k")
    assert emb.spec()["provider"] == "openai"
    assert emb.spec()["base_url"] == EMBEDDING_PROVIDERS["openai"].base_url


def test_local_qwen3_embedder_fingerprint_matches(api, qwen3_embedding_dir):
    """A remote Qwen3 and a local one of the same model, dim and task are comparable."""
    transformers_module = pytest.importorskip("ragkit.embedders.transformers")
    local = transformers_module.Qwen3Embedder(str(qwen3_embedding_dir), device="cpu")
    remote = make(api, qwen3_embedding_dir.name, dim=local.dim)
    assert remote.fingerprint == local.fingerprint
    custom = transformers_module.Qwen3Embedder(
        str(qwen3_embedding_dir), device="cpu", instruction="Find code"
    )
    assert make(api, qwen3_embedding_dir.name, dim=local.dim, instruction="Find code").fingerprint == (
        custom.fingerprint
    )
    assert remote.fingerprint != custom.fingerprint
