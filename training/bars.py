"""The project's quality bars, judged from the metrics in a checkpoint's config.json.

A plain function of the metrics (no evaluation code), so the service can show them on the model
cards; ``training.evaluation.bars`` prints the table of every checkpoint (``python -m training bars``).
Bars (measured by ``evaluate`` on 10k samples): conditional sample accuracy ≥ 0.95 × the
evaluator's real-test accuracy, every class ≥ 0.8; coverage ≥ 0.8; memorisation ≤ 2 %;
unconditional models cover every class with KL to uniform ≤ 0.1.
"""

from __future__ import annotations

from typing import Any

MIN_SAMPLES = 10_000


def check(metrics: dict[str, Any], conditional: bool) -> dict[str, bool | None]:
    """Bar name → cleared (None when the metric is missing)."""

    def get(key: str) -> Any:
        return metrics.get(key)

    out: dict[str, bool | None] = {}
    if conditional:
        acc, real = get("accuracy"), get("sample_accuracy_real")
        out["accuracy ≥ 0.95 × real"] = None if acc is None or real is None else acc >= 0.95 * real
        per = get("accuracy_per_class") or {}
        out["every class ≥ 0.8"] = None if not per else min(v for v in per.values() if v is not None) >= 0.8
    else:
        modes, k, kl = get("modes_covered"), get("num_modes"), get("kl_to_uniform")
        out["all classes, KL ≤ 0.1"] = None if None in (modes, k, kl) else modes == k and kl <= 0.1
    cov, mem = get("coverage"), get("memorization_fraction")
    out["coverage ≥ 0.8"] = None if cov is None else cov >= 0.8
    out["memorisation ≤ 2 %"] = None if mem is None else mem <= 0.02
    if (get("num_samples") or 0) < MIN_SAMPLES:
        out = {k: None for k in out}  # too few samples to judge
    return out
