"""LangChain's standard vector-store suite against RagkitVectorStore: over the suite's own
DeterministicFakeEmbedding (a LangChain Embeddings, wrapped as a ragkit embedder), and over a native
ragkit embedder in hybrid mode (dense + BM25, fused)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import WordHashEmbedder
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from ragkit.integrations.langchain import RagkitEmbeddings, RagkitVectorStore


class TestRagkitVectorStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[RagkitVectorStore]:
        store = RagkitVectorStore(embedding=self.get_embeddings())
        yield store
        store.pipeline.close()


class TestRagkitVectorStoreHybrid(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[RagkitVectorStore]:
        store = RagkitVectorStore(embedding=RagkitEmbeddings(WordHashEmbedder()), mode="hybrid")
        yield store
        store.pipeline.close()
