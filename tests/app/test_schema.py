"""Schemathesis over the service's own OpenAPI document: no server error, no response off the schema.

Requests go through the module's TestClient (the real app with its lifespan and tiny real
checkpoints). The ``model`` and ``label`` parameters are narrowed to a mix of real and wrong
values so that most generated requests reach the generators instead of stopping at a 404.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import negative_data_rejection

from tests.app.schema import CHECKS, narrow

OPERATIONS = ["/generate", "/models/{model}/seeds/{seed}.png", "/interpolate", "/models", "/models/{model}",
              "/models/{model}/samples.png", "/healthz", "/readyz", "/metrics", "/models/{model}/z/{z}.png",
              "/models/{model}/encode", "/models/{model}/translate", "/models/{model}/reconstruct"]
POSTS = ("/models/{model}/encode", "/models/{model}/translate", "/models/{model}/reconstruct")
LABELS = ["0", "2", "3", "-1", "circle", "t-shirt/top", "dress", ""]


@pytest.fixture(scope="module")
def schemas(client: TestClient) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    return {"raw": schemathesis.openapi.from_dict(spec), "narrow": schemathesis.openapi.from_dict(narrow(spec, LABELS))}


def _operation(schema: Any, path: str) -> Any:
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == path:
            return op
    raise AssertionError(f"{path} is not in the OpenAPI document")


def _as_bytes(value: Any) -> bytes | str:
    return value if isinstance(value, bytes | str) else json.dumps(value)


def _fuzz(client: TestClient, op: Any, mode: Any, examples: int, statuses: list[int]) -> None:
    negative = mode == schemathesis.GenerationMode.NEGATIVE
    # An upload is judged by its bytes, not by the schema's description of the form: a schema-violating
    # multipart body can still be a valid upload (an empty `label` array is a form without `label`).
    judged = negative and op.method.upper() != "POST"
    checks = [*CHECKS, negative_data_rejection] if judged else CHECKS

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        request = {k: v for k, v in kwargs.items() if k in ("method", "url", "params", "headers", "files")
                   and v is not None}
        if kwargs.get("data") is not None:  # a binary body (generated PNG, JPEG, WebP bytes …)
            request["content"] = kwargs["data"]
        if "files" in request:  # multipart: httpx takes bytes or text only (a negative case may make an int)
            request["files"] = [(name, (part[0], _as_bytes(part[1]), *part[2:])) for name, part in request["files"]]
        response = client.request(**request)
        response.request.read()  # a multipart body is a stream: schemathesis reads the request's content
        statuses.append(response.status_code)
        # 414 (the service's URL-length limit) rejects a request too; schemathesis's list of rejections lacks it.
        case.validate_response(response, checks=CHECKS if response.status_code == 414 else checks)

    check()


@pytest.mark.parametrize("variant", ["narrow", "raw"])
@pytest.mark.parametrize("path", OPERATIONS)
def test_schemathesis(client: TestClient, schemas: dict[str, Any], path: str, variant: str) -> None:
    op = _operation(schemas[variant], path)
    statuses: list[int] = []
    examples = 40 if variant == "narrow" else 15
    _fuzz(client, op, schemathesis.GenerationMode.POSITIVE, examples, statuses)
    if op.definition.raw.get("parameters") or op.definition.raw.get("requestBody"):
        _fuzz(client, op, schemathesis.GenerationMode.NEGATIVE, examples, statuses)
    assert statuses and max(statuses) < 500
    if variant == "narrow" and path in ("/generate", "/interpolate", "/models/{model}/seeds/{seed}.png"):
        assert 200 in statuses  # the narrowed schema reaches the generators
