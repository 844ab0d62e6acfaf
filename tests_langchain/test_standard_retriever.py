"""LangChain's standard retriever suite against RagkitRetriever, over a pipeline of tiny random
Qwen3 models: the embedder, and a reranker (the pipeline's own, or the retriever's reranker=)."""

from __future__ import annotations

import functools
from typing import Any

from conftest import tiny_qwen3_embedder, tiny_qwen3_reranker
from langchain_tests.integration_tests import RetrieversIntegrationTests

from ragkit import Pipeline
from ragkit.integrations.langchain import RagkitRetriever

TEXTS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval augmented generation combines search with language models.",
    "Embeddings are vectors; rerankers score pairs of query and document.",
]


@functools.cache
def _pipeline(reranked: bool) -> Pipeline:
    pipe = Pipeline(tiny_qwen3_embedder(), reranker=tiny_qwen3_reranker() if reranked else None)
    pipe.add([{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(TEXTS)])
    return pipe


class TestRagkitRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagkitRetriever]:
        return RagkitRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"pipeline": _pipeline(reranked=True), "mode": "hybrid"}

    @property
    def retriever_query_example(self) -> str:
        return "capital of France"


class TestRagkitRetrieverOwnReranker(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagkitRetriever]:
        return RagkitRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"pipeline": _pipeline(reranked=False), "reranker": tiny_qwen3_reranker(), "diversity": 0.3}

    @property
    def retriever_query_example(self) -> str:
        return "capital of France"
