"""Schema-driven fuzzing of ``ragkit serve``: schemathesis reads the served ``/openapi.json`` and sends
requests generated from it (valid and invalid ones) to a live server with small fake models and an index.

Every answer must be a non-5xx that matches the documented schema for its status (errors included).
Bounded: a few dozen examples per operation, so the whole module runs in well under a minute.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")

from conftest import HashEmbedder  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ragkit.serve import BackgroundServer, create_app  # noqa: E402


class WordReranker:
    """Scores by shared words (a stand-in with the Reranker protocol)."""

    def score(self, query, documents):
        words = set(query.split())
        return np.float32([len(words & set(d.split())) / (1 + len(d.split())) for d in documents])


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from ragkit import Pipeline

    index = tmp_path_factory.mktemp("fuzz-index")
    pipe = Pipeline(HashEmbedder())
    pipe.add(
        [
            {"id": "a", "text": "Paris is the capital of France.", "metadata": {"n": 1, "tag": "geo"}},
            {"id": "b", "text": "The quick brown fox.", "metadata": {"n": 2, "tags": ["x", "y"]}},
        ]
    )
    pipe.save(index)
    pipe.close()
    app = create_app(
        HashEmbedder(),
        WordReranker(),
        index=index,
        max_inputs=16,
        max_input_chars=500,
        max_body_bytes=100_000,
        max_request_tokens=2_000,
    )
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
CASES = [
    ("/v1/embeddings", "POST", POSITIVE),
    ("/v1/embeddings", "POST", NEGATIVE),
    ("/v1/rerank", "POST", POSITIVE),
    ("/v1/rerank", "POST", NEGATIVE),
    ("/v1/search", "POST", POSITIVE),
    ("/v1/search", "POST", NEGATIVE),
    ("/v1/models", "GET", POSITIVE),  # no parameters: nothing to make invalid
    ("/health", "GET", POSITIVE),
    ("/ready", "GET", POSITIVE),
]
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


# schemathesis' own pytest loader (schemathesis.pytest.from_fixture) does not run under pytest 9, so the
# strategies of each operation drive a plain hypothesis test.
@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=lambda v: getattr(v, "value", v))
def test_no_server_errors_and_answers_match_the_schema(api_schema, live, path, method, mode):
    operation = api_schema[path][method]
    examples = 40 if method == "POST" else 5

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=30)

    run()


def test_the_schema_carries_the_limits(live):
    import httpx

    spec = httpx.get(live.url + "/openapi.json").json()
    assert {path for path, _, _ in CASES} <= set(spec["paths"])
    text = str(spec["components"]["schemas"])
    assert "'maxItems': 16" in text and "'maxLength': 500" in text and "'minimum': 32" in text
    hit = spec["components"]["schemas"]["Hit"]["properties"]
    assert "location" in hit and "header" in hit
    assert httpx.get(live.url + "/docs").status_code == 404  # only with docs=True
