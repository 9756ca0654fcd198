"""The project's quality bars, judged from the metrics in a checkpoint's config.json.

A plain function of the metrics (no evaluation code), so the service can show them on the model
cards; ``training.evaluation.bars`` prints the table of every checkpoint (``python -m training bars``).
Bars (measured by ``evaluate`` on 10k samples): conditional sample accuracy ≥ 0.95 × the
evaluator's real-test accuracy, every class ≥ 0.8; coverage ≥ 0.8; memorisation ≤ 2 %;
unconditional models cover every class with KL to uniform ≤ 0.1. Emoji (``RELATIVE_BARS``): accuracy
≥ 0.8 × real, every class ≥ 0.5 × its real accuracy, coverage ≥ 0.5, memorisation ≤ 5 %.
"""

from __future__ import annotations

from typing import Any

MIN_SAMPLES = 10_000
# Datasets with bars of their own, relative to their evaluator (whose categories overlap):
# (accuracy × real, every class × its real accuracy, coverage, memorisation).
EMOJI_BARS = (0.8, 0.5, 0.5, 0.05)
RELATIVE_BARS = {"emoji": EMOJI_BARS}


def per_class_relative(metrics: dict[str, Any], factor: float = 0.95) -> bool | None:
    """Every class's sample accuracy ≥ ``factor`` × the evaluator's accuracy on that class's real test
    images (None when not measured). A bar for datasets in ``RELATIVE_BARS``; for the others not one of
    the bars: it says whether a class that misses "every class ≥ 0.8" is held back by the generator or
    by the evaluator itself (an evaluator that gets 0.76 of the real shirts right cannot see 0.8 of
    generated shirts as shirts)."""
    per, real = metrics.get("accuracy_per_class") or {}, metrics.get("accuracy_per_class_real") or {}
    if not per or not real or (metrics.get("num_samples") or 0) < MIN_SAMPLES:
        return None
    return all(v is not None and real.get(k) is not None and v >= factor * real[k] for k, v in per.items())


def check(metrics: dict[str, Any], conditional: bool) -> dict[str, bool | None]:
    """Bar name → cleared (None when the metric is missing)."""

    def get(key: str) -> Any:
        return metrics.get(key)

    out: dict[str, bool | None] = {}
    dataset = (get("evaluator") or {}).get("dataset")
    relative = RELATIVE_BARS.get(dataset) if isinstance(dataset, str) else None
    if relative is not None:
        acc_f, cls_f, cov_min, mem_max = relative
    else:
        acc_f, cov_min, mem_max = 0.95, 0.8, 0.02
    if conditional:
        acc, real = get("accuracy"), get("sample_accuracy_real")
        out[f"accuracy ≥ {acc_f:g} × real"] = None if acc is None or real is None else acc >= acc_f * real
        if relative is not None:
            out[f"every class ≥ {cls_f:g} × its real"] = per_class_relative(metrics, cls_f)
        else:
            per = get("accuracy_per_class") or {}
            out["every class ≥ 0.8"] = None if not per else min(v for v in per.values() if v is not None) >= 0.8
    elif relative is not None:
        modes, k = get("modes_covered"), get("num_modes")
        out["all classes"] = None if None in (modes, k) else modes == k
    else:
        modes, k, kl = get("modes_covered"), get("num_modes"), get("kl_to_uniform")
        out["all classes, KL ≤ 0.1"] = None if None in (modes, k, kl) else modes == k and kl <= 0.1
    cov, mem = get("coverage"), get("memorization_fraction")
    out[f"coverage ≥ {cov_min:g}"] = None if cov is None else cov >= cov_min
    out[f"memorisation ≤ {mem_max * 100:g} %"] = None if mem is None else mem <= mem_max
    if (get("num_samples") or 0) < MIN_SAMPLES:
        out = {k: None for k in out}  # too few samples to judge
    return out
