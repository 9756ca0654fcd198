"""Schemathesis over the OpenAPI document, against a real uvicorn process on the loopback.

Stateless: many generated cases per route, both schema-valid (positive) and schema-violating
(negative), with ``model`` and ``label`` narrowed to a mix of real and wrong values so that
most requests reach the generators. Stateful: OpenAPI links added to the document chain the
routes the way a client does — the model list to a model card to a generation to the permalink
of the very seed and label that generation drew. Every response: no 5xx, on the schema, with
documented status codes, content types and headers, and no traceback or server path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import negative_data_rejection

from tests.app.schema import CHECKS, narrow
from tests.reliability.conftest import Server, run_server

LABELS = ["0", "1", "2", "3", "-1", "circle", "SQUARE", "t-shirt/top", "dress", "", " 1 "]
EXAMPLES = {"/generate": 100, "/models/{model}/seeds/{seed}.png": 100, "/interpolate": 100,
            "/models/{model}": 60, "/models/{model}/samples.png": 40, "/models": 10, "/healthz": 5,
            "/readyz": 5, "/metrics": 5, "/models/{model}/z/{z}.png": 40, "/models/{model}/encode": 40,
            "/models/{model}/translate": 15, "/models/{model}/reconstruct": 15}
POSTS = {"/models/{model}/encode", "/models/{model}/translate", "/models/{model}/reconstruct"}
LINKS = {
    ("/models", "200"): {
        "card": {"operationId": "get_model_models__model__get",
                 "parameters": {"path.model": "$response.body#/models/0/name"}},
    },
    ("/models/{model}", "200"): {
        "generate": {"operationId": "generate_generate_get", "parameters": {"query.model": "$response.body#/name"}},
        "interpolate": {"operationId": "interpolate_interpolate_get",
                        "parameters": {"query.model": "$response.body#/name"}},
        "samples": {"operationId": "samples_png_models__model__samples_png_get",
                    "parameters": {"path.model": "$request.path.model"}},
    },
    ("/generate", "200"): {
        "permalink": {"operationId": "seed_png_models__model__seeds__seed__png_get",
                      "parameters": {"path.model": "$response.header.X-Model",
                                     "path.seed": "$response.header.X-Seed"}},
    },
}


def _spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Narrow model and label to real-and-wrong values; add the links of the stateful run."""
    spec = narrow(raw, LABELS)
    for (path, status), links in LINKS.items():
        spec["paths"][path]["get"]["responses"][status]["links"] = links
    return spec


@pytest.fixture(scope="module")
def server(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tiny_root, tmp_path_factory.mktemp("fuzz"), env={"GANSERVE_LOG_LEVEL": "WARNING"}) as s:
        yield s


@pytest.fixture(scope="module")
def schema(server: Server) -> Any:
    raw = httpx.get(f"{server.base}/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(_spec(raw))


def _leak_free(server: Server, tiny_root: Path, text: str) -> None:
    for leak in ("Traceback", str(tiny_root), "site-packages", 'File "'):
        assert leak not in text, (leak, text[:300])


def _fuzz(server: Server, tiny_root: Path, op: Any, mode: Any, examples: int, statuses: list[int]) -> None:
    negative = mode == schemathesis.GenerationMode.NEGATIVE
    # An upload is judged by its bytes, not by the schema's description of the form: a schema-violating
    # multipart body can still be a valid upload (an empty `label` array is a form without `label`).
    judged = negative and op.method.upper() != "POST"
    checks = [*CHECKS, negative_data_rejection] if judged else CHECKS

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=server.base, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=checks)
        if "json" in response.headers.get("content-type", ""):
            _leak_free(server, tiny_root, response.text)

    check()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", list(EXAMPLES))
def test_fuzz_route(server: Server, schema: Any, tiny_root: Path, path: str) -> None:
    op = schema.find_operation_by_path("POST" if path in POSTS else "GET", path)
    statuses: list[int] = []
    _fuzz(server, tiny_root, op, schemathesis.GenerationMode.POSITIVE, EXAMPLES[path], statuses)
    if op.definition.raw.get("parameters") or op.definition.raw.get("requestBody"):
        _fuzz(server, tiny_root, op, schemathesis.GenerationMode.NEGATIVE, EXAMPLES[path], statuses)
    assert statuses and max(statuses) < 500
    if path in ("/generate", "/interpolate", "/models/{model}/seeds/{seed}.png"):
        assert statuses.count(200) >= 10, statuses  # the narrowed schema reaches the generators
    assert "Traceback" not in server.output()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_stateful(server: Server, schema: Any) -> None:
    machine = schema.as_state_machine()
    base = server.base
    seen: list[str] = []

    class Machine(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base, "timeout": 30}

        def after_call(self, response: Any, case: Any) -> None:
            seen.append(f"{case.operation.path} {response.status_code}")

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            # The narrowed enums hold wrong values on purpose: their 422/404 are right, not "rejected data".
            case.validate_response(response, checks=CHECKS)

    Machine.run(settings=settings(max_examples=60, stateful_step_count=6, deadline=None, database=None,
                                  derandomize=True, suppress_health_check=list(HealthCheck)))
    # The links were followed: permalinks of drawn seeds answered 200.
    assert any(s == "/models/{model}/seeds/{seed}.png 200" for s in seen), sorted(set(seen))
    assert not any(s.endswith((" 500", " 502", " 504")) for s in seen)
    assert "Traceback" not in server.output()
