"""What the two schemathesis suites share: the checks, and the OpenAPI narrowing to real-and-wrong values."""

from __future__ import annotations

import copy
from typing import Any

from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.app.conftest import AE, COND, UNCOND

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
MODELS = [COND, UNCOND, AE, "nope"]


def narrow(spec: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """A copy of ``spec`` whose model and label parameters draw from the test models and ``labels``
    (real and wrong ones), so generated cases reach generation instead of stopping at 404."""
    spec = copy.deepcopy(spec)
    for item in spec["paths"].values():
        for param in [p for op in item.values() for p in op.get("parameters", [])]:
            if param["name"] == "model":
                param["schema"] = {"type": "string", "enum": MODELS}
            elif param["name"] in ("label", "from_label", "to_label"):
                param["schema"] = {"anyOf": [{"type": "string", "enum": labels}, {"type": "null"}]}
    return spec
