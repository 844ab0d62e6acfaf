"""``ragkit serve``: the local models behind OpenAI-compatible HTTP endpoints, with fair dynamic batching.

Endpoints (JSON in and out; every error is ``{"error": {"message", "type", "code", "param"}}``; the
schemas are served at ``/openapi.json``, and browsable at ``/docs`` with ``docs=True`` / ``--docs``):

* ``POST /v1/embeddings``: the OpenAI schema (``input`` a string or a list of strings,
  ``encoding_format`` ``"float"`` or ``"base64"`` (little-endian float32), ``dimensions`` (Matryoshka:
  the first n components, re-normalised), ``usage``). Two extension fields ask for query embeddings:
  ``input_type`` (``"query"`` | ``"document"``) and ``instruction`` (the task sentence; it implies
  ``input_type="query"``). A query without ``instruction`` gets the model's default task. This is what
  :class:`~ragkit.embedders.OpenAIEmbedder` sends with ``provider="ragkit"``, so the Qwen3 template is
  applied exactly once, here.
* ``POST /v1/rerank``: the Cohere / Jina / vLLM schema (``query``, ``documents`` (strings or objects
  with ``text``), ``top_n``, ``return_documents``) answered with ``results[{index, relevance_score,
  document?}]`` best first; :class:`~ragkit.rerankers.RemoteReranker` with ``provider="ragkit"``.
* ``POST /v1/search``: the loaded pipeline's search (``query``, ``k``, ``filter``, ``mode``,
  ``candidates``, ``instruction``, ``diversity``, ``fusion``, ``alpha``) -> ``hits`` (with their
  ``location`` and ``header``) and ``timings``.
* ``GET /v1/models`` (the served models, by their real names), ``GET /health`` (liveness) and
  ``GET /ready`` (models loaded and not shutting down). The last two need no API key.

Modules: :mod:`~ragkit.serve.app` (the app and its routes), :mod:`~ragkit.serve.schemas` (pydantic
models), :mod:`~ragkit.serve.errors` (the one error mapper), :mod:`~ragkit.serve.service` (state and
the request gate), :mod:`~ragkit.serve.batching` (jobs, workers, fair scheduling, the metrics
observer), :mod:`~ragkit.serve.runners` (how a model is counted and called),
:mod:`~ragkit.serve.background` and :mod:`~ragkit.serve.cli`; for production,
:mod:`~ragkit.serve.transport` (time-outs and the connection cap), :mod:`~ragkit.serve.hangups`
(telling a request that its client left), :mod:`~ragkit.serve.metrics`
(``/metrics``), :mod:`~ragkit.serve.keys` (API keys) and :mod:`~ragkit.serve.workers` (``--workers N``).

fastapi and uvicorn are imported when a server is built (``pip install 'ragkit[server]'``).

Example:
    >>> from ragkit.serve import BackgroundServer, create_app
    >>> app = create_app("Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> with BackgroundServer(app) as server:  # doctest: +SKIP
    ...     emb = OpenAIEmbedder("Qwen3-Embedding-0.6B", provider="ragkit", base_url=server.url + "/v1")
"""

from __future__ import annotations

from ragkit.serve.app import create_app
from ragkit.serve.background import BackgroundServer
from ragkit.serve.batching import NullObserver, Observer
from ragkit.serve.cli import serve_main
from ragkit.serve.schemas import MIN_DIMENSIONS

__all__ = [
    "BackgroundServer",
    "MIN_DIMENSIONS",
    "NullObserver",
    "Observer",
    "create_app",
    "serve_main",
]
