"""Shared pytest set-up: keep torch to the machine's cores and quiet a third-party import warning."""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():
    # starlette.testclient (imported by fastapi.testclient) warns that it prefers httpx2; the tests use httpx.
    warnings.simplefilter("ignore")
    import fastapi.testclient  # noqa: F401

torch.set_num_threads(min(2, torch.get_num_threads()))
