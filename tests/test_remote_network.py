"""Live checks of each preset against the real service (``network`` marker).

Skipped unless ``RAGKIT_NETWORK_TESTS=1``; each case also needs its key (cloud) or its server address
(self-hosted): ``RAGKIT_TEST_VLLM_URL`` / ``RAGKIT_TEST_TEI_URL`` / ``RAGKIT_TEST_RAGKIT_URL`` (embeddings,
an API root such as ``http://gpu:8000/v1``; ``RAGKIT_TEST_<NAME>_EMBEDDING_MODEL`` overrides the model),
``RAGKIT_TEST_VLLM_RERANK_URL`` / ``RAGKIT_TEST_TEI_RERANK_URL`` / ``RAGKIT_TEST_INFINITY_URL`` (rerank).
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from ragkit.embedders import OpenAIEmbedder
from ragkit.rerankers import RemoteReranker

pytestmark = pytest.mark.network

DOCS = ["Paris is the capital and largest city of France.", "Bananas are a yellow tropical fruit."]
QUERY = "What is the capital of France?"


def _need(*variables: str) -> str:
    for var in variables:
        if os.environ.get(var):
            return os.environ[var]
    pytest.skip(f"set {' or '.join(variables)} to run this case")


@pytest.mark.parametrize(
    ("provider", "model", "variables", "dim"),
    [
        ("openai", "text-embedding-3-small", ("OPENAI_API_KEY",), 256),
        ("openrouter", "Qwen/Qwen3-Embedding-4B", ("OPENROUTER_API_KEY",), None),
        ("deepinfra", "Qwen/Qwen3-Embedding-4B", ("DEEPINFRA_API_KEY", "DEEPINFRA_TOKEN"), None),
        ("vercel", "Qwen/Qwen3-Embedding-4B", ("AI_GATEWAY_API_KEY", "VERCEL_AI_GATEWAY_API_KEY"), None),
        ("dashscope", "text-embedding-v4", ("DASHSCOPE_API_KEY",), 256),
    ],
)
def test_cloud_embeddings(provider, model, variables, dim):
    _need(*variables)
    _check_embedder(OpenAIEmbedder(model, provider=provider, dim=dim, max_retries=2), dim)


@pytest.mark.parametrize(
    ("provider", "variable", "model"),
    [
        ("vllm", "RAGKIT_TEST_VLLM_URL", "Qwen/Qwen3-Embedding-0.6B"),
        ("tei", "RAGKIT_TEST_TEI_URL", "BAAI/bge-small-en-v1.5"),
        ("ragkit", "RAGKIT_TEST_RAGKIT_URL", "Qwen/Qwen3-Embedding-0.6B"),
    ],
)
def test_self_hosted_embeddings(provider, variable, model):
    url = _need(variable)
    model = os.environ.get(f"{variable[:-4]}_EMBEDDING_MODEL", model)
    _check_embedder(OpenAIEmbedder(model, provider=provider, base_url=url, max_retries=1), None)


def _check_embedder(emb: OpenAIEmbedder, dim: int | None) -> None:
    docs = emb.embed_documents(DOCS)
    query = emb.embed_queries([QUERY])
    assert docs.shape == (2, dim or emb.dim) and query.shape == (1, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    sims = (query @ docs.T)[0]
    assert sims[0] > sims[1]
    async_query = asyncio.run(emb.aembed_queries([QUERY]))
    assert float(async_query[0] @ query[0]) > 0.99


@pytest.mark.parametrize(
    ("provider", "model", "variables"),
    [
        ("cohere", "rerank-v3.5", ("CO_API_KEY", "COHERE_API_KEY")),
        ("jina", "jina-reranker-v2-base-multilingual", ("JINA_API_KEY",)),
    ],
)
def test_cloud_rerank(provider, model, variables):
    _need(*variables)
    _check_reranker(RemoteReranker(model, provider=provider, max_retries=2))


@pytest.mark.parametrize(
    ("provider", "variable", "model"),
    [
        ("vllm", "RAGKIT_TEST_VLLM_RERANK_URL", "Qwen/Qwen3-Reranker-0.6B"),
        ("tei", "RAGKIT_TEST_TEI_RERANK_URL", "BAAI/bge-reranker-base"),
        ("infinity", "RAGKIT_TEST_INFINITY_URL", "mixedbread-ai/mxbai-rerank-xsmall-v1"),
        ("ragkit", "RAGKIT_TEST_RAGKIT_URL", "Qwen/Qwen3-Reranker-0.6B"),
    ],
)
def test_self_hosted_rerank(provider, variable, model):
    url = _need(variable)
    _check_reranker(RemoteReranker(model, provider=provider, base_url=url, max_retries=1))


def _check_reranker(rr: RemoteReranker) -> None:
    scores = rr.score(QUERY, DOCS)
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert scores[0] > scores[1]
    np.testing.assert_allclose(asyncio.run(rr.ascore(QUERY, DOCS)), scores, rtol=1e-3, atol=1e-3)
