"""LangChain's standard embeddings suites against RagkitEmbeddings: the unit suite over a word-hash
embedder, the integration suite over a tiny random Qwen3-Embedding (query instruction and all)."""

from __future__ import annotations

from typing import Any

from conftest import WordHashEmbedder, tiny_qwen3_embedder
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from ragkit.integrations.langchain import RagkitEmbeddings


class TestRagkitEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[RagkitEmbeddings]:
        return RagkitEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embedder": WordHashEmbedder()}


class TestRagkitEmbeddingsQwen3(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[RagkitEmbeddings]:
        return RagkitEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embedder": tiny_qwen3_embedder()}
