"""The quality bars a shipped checkpoint must clear, checked against the metrics in its config.json.

``python -m training bars [FOLDER]`` prints one markdown row per checkpoint: how long it
trained, its key numbers and which bars it clears. Bars (measured by ``evaluate`` on 10k
samples): conditional sample accuracy ≥ 0.95 × the evaluator's real-test accuracy, every
class ≥ 0.8; coverage ≥ 0.8; memorisation ≤ 2 %; unconditional models cover every class
with KL to uniform ≤ 0.1.

``emoji`` has its own bars (``training.bars.EMOJI_BARS``): its categories overlap (a flag is a symbol too), so
its evaluator gets far less than every real test image right, and each class is read against
that class's own real accuracy; it has a few thousand images, so copies are the main risk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.bars import RELATIVE_BARS, check, per_class_relative
from training.checkpoint import CheckpointError, TrainingInfo, atomic_write_bytes, read_config


def _num(metrics: dict[str, Any], key: str, digits: int = 3) -> str:
    v = metrics.get(key)
    return "–" if v is None else f"{v:.{digits}f}"


def time_to_bars(evaluations: list[dict[str, Any]], before: float = 0.0) -> str:
    """Training minutes to the first ``--eval-every`` evaluation that cleared every bar (plus ``before``
    seconds: the training of the checkpoint a fine-tune started from)."""
    if not evaluations:
        return "–"
    for e in evaluations:
        if e.get("bars_cleared"):
            return f"{(before + e['seconds']) / 60:.1f} (epoch {e['epoch']})"
    return f"not reached in {len(evaluations)} evaluation(s)"


def _train_minutes(training: TrainingInfo) -> tuple[str, str]:
    """(train min, min to bars) cells; a fine-tune counts the minutes of the G it started from."""
    src = training.init_g_from
    before = src.seconds if src else 0.0
    total = f"{(before + training.seconds) / 60:.0f}"
    if src:
        total += f" ({src.seconds / 60:.0f} as {src.name} + {training.seconds / 60:.0f})"
    return total, time_to_bars(training.evaluations, before)


def table(folder: str | Path) -> str:
    rows = ["| checkpoint | family | dataset | epochs | train min | min to bars | FID (floor) | accuracy (real) | "
            "coverage (floor) | bars cleared |", "| --- | --- | --- | ---: | ---: | --- | --- | --- | --- | --- |"]
    for path in sorted(p for p in Path(folder).iterdir() if (p / "config.json").exists()):
        try:
            cfg = read_config(path)
        except CheckpointError as e:
            rows.append(f"| {path.name} | – | – | – | – | – | – | – | – | unreadable: {e} |")
            continue
        m = cfg.metrics

        bars = check(m, cfg.conditional) if cfg.sampleable else {}
        if not m:
            verdict = "not evaluated"
        elif cfg.translator:
            verdict = "translator: held-out pairs" + (f", L1 {_num(m, 'l1')}" if m.get("l1") is not None else "")
        elif not bars:
            verdict = "reconstruction only"
        else:
            verdict = ", ".join(f"{name} {_mark(ok)}" for name, ok in bars.items())
            relative = per_class_relative(m) if cfg.conditional else None
            if relative is not None and cfg.dataset.name not in RELATIVE_BARS:
                verdict += f" (every class ≥ 0.95 × its real accuracy {_mark(relative)})"
        total, to_bars = _train_minutes(cfg.training)
        psi = ""
        if cfg.truncation != 1:  # sampled (and measured) at truncation ψ; evaluations while training were at 1
            psi = f" (ψ {cfg.truncation:g})"
            if to_bars != "–":
                to_bars += " at ψ 1"
            if bars and all(bars.values()):
                to_bars += f"; at ψ {cfg.truncation:g}: {total} (its last epoch)"
        rows.append(f"| {cfg.name}{psi} | {cfg.family} | {cfg.dataset.name} | {cfg.training.epochs} | "
                    f"{total} | {to_bars} | "
                    f"{_num(m, 'fid', 1)} ({_num(m, 'fid_floor', 2)}) | "
                    f"{_num(m, 'accuracy')} ({_num(m, 'sample_accuracy_real')}) | "
                    f"{_num(m, 'coverage')} ({_num(m, 'coverage_floor')}){_least_covered(m)} | {verdict} |")
    return "\n".join(rows)


def _least_covered(m: dict[str, Any]) -> str:
    """", least: CLASS 0.374" — the class whose real images the samples reach least (when measured)."""
    per = {k: v for k, v in (m.get("coverage_per_class") or {}).items() if v is not None}
    if not per:
        return ""
    name = min(per, key=lambda k: per[k])
    return f", least: {name} {per[name]:.3f}"


def _mark(ok: bool | None) -> str:
    return "✓" if ok else ("✗" if ok is False else "?")


START, END = "<!-- bars:start -->", "<!-- bars:end -->"


def write_between_markers(path: Path, markdown: str) -> None:
    """Replace what stands between the bars markers of ``path`` (atomically)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"{path} has no {START} … {END} section")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_bytes(path, f"{head}{START}\n{markdown}\n{END}{tail}".encode())
