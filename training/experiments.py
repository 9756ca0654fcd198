"""The seed articles' experiments, re-run here and written up in ``docs/experiments.md``.

``python -m training experiments`` trains every variant × seed of each experiment with the
project's own loop, measures it with the evaluator at several points of training (the
run continues with ``--resume`` from one point to the next), keeps every measurement in
``WORK/results.json`` (so an interrupted command continues where it stopped, and a
finished one only re-renders), and regenerates the markdown from those numbers alone.

- ``upsampling``: DCGAN generators with transposed conv vs nearest-upsample + conv, and
  batch-norm before vs after the ReLU (seed article 000), on Fashion-MNIST.
- ``conditioning``: cGAN vs ACGAN with 10 classes and with a 5-class subset, ACGAN with and
  without D-classifier pretraining + noisy labels (seed article 002).
- ``upsampling-emoji``: the upsampling comparison at the seed article's own size, 64×64 colour, on
  ``emoji`` (DiffAugment: the set is small). Its options are its own (EXPERIMENT_OPTIONS), and it is
  written as its own marked section of the doc, so it is run and re-rendered apart from the others
  (whose measurements may live in another work folder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.checkpoint import atomic_write_bytes, atomic_write_json, read_config
from training.options import TrainOptions

log = logging.getLogger("training.experiments")


@dataclass(frozen=True)
class Variant:
    key: str  # file-name safe
    label: str  # for the tables
    options: dict[str, Any] = field(default_factory=dict)  # TrainOptions fields


TRICKS = {"pretrain_d_epochs": 1, "noisy_labels": 0.05}
REAL_CLASS = {"acgan_fake_class_weight": 0.0}  # D's class head learns from real images only
PROJECTION = {"acgan_projection": True}  # D's real/fake logit also judges the label
FIVE = (0, 1, 2, 3, 4)
UPSAMPLING_VARIANTS = [
    Variant("convT-before", "convT, BN before act", {"family": "dcgan", "upsample": "convT", "bn": "before-act"}),
    Variant("convT-after", "convT, BN after act", {"family": "dcgan", "upsample": "convT", "bn": "after-act"}),
    Variant("nearest-before", "nearest+conv, BN before act", {"family": "dcgan", "upsample": "nearest-conv",
                                                              "bn": "before-act"}),
    Variant("nearest-after", "nearest+conv, BN after act", {"family": "dcgan", "upsample": "nearest-conv",
                                                            "bn": "after-act"}),
]
UPSAMPLING_METRICS = ["fid", "coverage", "checkerboard_ratio", "modes_covered", "kl_to_uniform"]

EXPERIMENTS: dict[str, tuple[str, list[Variant], list[str]]] = {
    "upsampling": (
        "Transposed conv vs nearest-upsample + conv; batch-norm before vs after the activation (DCGAN, "
        "Fashion-MNIST, unconditional)",
        UPSAMPLING_VARIANTS,
        UPSAMPLING_METRICS,
    ),
    "conditioning": (
        "cGAN vs ACGAN on Fashion-MNIST, 10 classes and a 5-class subset, ACGAN with and without "
        "D-classifier pretraining + noisy labels",
        [
            Variant("cgan-10", "cGAN, 10 classes", {"family": "cgan"}),
            Variant("acgan-10", "ACGAN, 10 classes", {"family": "acgan"}),
            Variant("acgan-10-tricks", "ACGAN, 10 classes, pretrain + noisy", {"family": "acgan", **TRICKS}),
            Variant("acgan-10-realclass", "ACGAN, 10 classes, D's classes from real images only",
                    {"family": "acgan", **REAL_CLASS}),
            Variant("acgan-10-projection", "ACGAN, 10 classes, real-only classes + projection D",
                    {"family": "acgan", **REAL_CLASS, **PROJECTION}),
            Variant("cgan-5", "cGAN, 5 classes", {"family": "cgan", "classes": FIVE}),
            Variant("acgan-5", "ACGAN, 5 classes", {"family": "acgan", "classes": FIVE}),
            Variant("acgan-5-tricks", "ACGAN, 5 classes, pretrain + noisy", {"family": "acgan", "classes": FIVE,
                                                                             **TRICKS}),
        ],
        ["accuracy", "min_class_accuracy", "coverage", "fid", "modes_covered"],
    ),
    "upsampling-emoji": (
        "the same at 64×64 colour (DCGAN, emoji, unconditional, DiffAugment)",
        UPSAMPLING_VARIANTS,
        UPSAMPLING_METRICS,
    ),
}
# Experiments with data and options of their own (instead of the plan's dataset and the defaults): each
# is a marked section of the doc, rendered apart from the rest.
EXPERIMENT_OPTIONS: dict[str, dict[str, Any]] = {
    "upsampling-emoji": {"dataset": "emoji", "resolution": 64, "channels": 3, "batch_size": 32,
                         "diffaugment": "color,translation,cutout", "channels_last": True},
}


@dataclass(frozen=True)
class Plan:
    experiments: tuple[str, ...]
    points: tuple[int, ...]  # epochs at which each run is measured
    seeds: tuple[int, ...]
    samples: int
    work: Path
    out: Path
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    max_steps_per_epoch: int = 0  # smoke tests: cut every epoch short
    threads: int = 0
    width: int = 64  # ngf = ndf of every run (the shipped models use 64)
    seeds_for: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per-experiment override of seeds
    checkpoints: Path = Path("checkpoints")  # the shipped models, whose evaluation histories are the long runs

    def seeds_of(self, exp: str) -> tuple[int, ...]:
        return self.seeds_for.get(exp, self.seeds)


def _key(exp: str, variant: str, seed: int, epoch: int) -> str:
    return f"{exp}/{variant}/seed{seed}/epoch{epoch}"


def _load_results(work: Path) -> dict[str, Any]:
    p = work / "results.json"
    return json.loads(p.read_text()) if p.exists() else {}


def run_plan(plan: Plan, command: str) -> dict[str, Any]:
    """Train and measure everything the plan names that results.json does not hold yet."""
    from training.evaluation.evaluate import evaluate_checkpoint
    from training.loop import train

    results = _load_results(plan.work)
    for exp in plan.experiments:
        _, variants, _ = EXPERIMENTS[exp]
        for v in variants:
            for seed in plan.seeds_of(exp):
                base = plan.work / exp / v.key / f"seed{seed}"
                for epoch in plan.points:
                    key = _key(exp, v.key, seed, epoch)
                    if key in results:
                        continue
                    opts = {"dataset": plan.dataset, **EXPERIMENT_OPTIONS.get(exp, {}), **v.options}
                    if "classes" in opts:
                        opts["classes"] = tuple(opts["classes"])
                    cfg = TrainOptions(
                        data_dir=plan.data_dir, out=str(base / "checkpoint"),
                        run_dir=str(base / "run"), name=f"{exp}-{v.key}-s{seed}".lower(), epochs=epoch, seed=seed,
                        threads=plan.threads, progress=False, tensorboard=False, command=command,
                        max_steps=plan.max_steps_per_epoch * epoch, width=plan.width, resume=True,
                        **opts)
                    log.info("%s: training to epoch %d", key, epoch)
                    train(cfg)
                    metrics, _ = evaluate_checkpoint(base / "checkpoint", num_samples=plan.samples, seed=0)
                    ck = read_config(base / "checkpoint")
                    acc = metrics.get("accuracy_per_class") or {}
                    metrics["min_class_accuracy"] = min(acc.values()) if acc else None
                    results[key] = {"metrics": metrics, "train_seconds": ck.training.seconds,
                                    "images_seen": ck.training.images_seen}
                    if seed == plan.seeds_of(exp)[0]:  # one sample grid per variant and point, for the doc
                        grid = plan.out.parent / "experiments" / f"{exp}-{v.key}-epoch{epoch}.png"
                        grid.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(base / "checkpoint" / "samples.png", grid)
                    atomic_write_json(plan.work / "results.json", results)
    return results


def _stats(values: Sequence[float | None]) -> tuple[float, float | None] | None:
    """(mean, standard deviation over seeds; None from a single seed) of the values measured."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _cell(s: tuple[float, float | None] | None) -> str:
    if s is None:
        return "–"
    mean, sd = s
    digits = 2 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _series(results: dict[str, Any], exp: str, variant: str, seeds: Sequence[int], epoch: int,
            metric: str) -> list[float | None]:
    out = []
    for s in seeds:
        r = results.get(_key(exp, variant, s, epoch))
        out.append(None if r is None else r["metrics"].get(metric))
    return out


def _verdict_upsampling(results: dict[str, Any], plan: Plan, last: int, exp: str = "upsampling") -> list[str]:
    seeds = plan.seeds_of(exp)

    def values(keys: list[str], metric: str) -> list[float]:
        return [v for k in keys for v in _series(results, exp, k, seeds, last, metric) if v is not None]

    def seed_spread(keys: list[str]) -> float | None:
        """Mean over variants of the standard deviation of FID across seeds (None with one seed)."""
        sds = [s[1] for k in keys if (s := _stats(_series(results, exp, k, seeds, last, "fid")))
               and s[1] is not None]
        return statistics.fmean(sds) if len(seeds) > 1 and sds else None

    lines = []
    # (variants of a, variants of b, a, b); the seed article found a better than b in both pairs
    for a_keys, b_keys, a, b in (
        (["convT-before", "convT-after"], ["nearest-before", "nearest-after"], "transposed conv", "nearest+conv"),
        (["convT-before", "nearest-before"], ["convT-after", "nearest-after"], "BN before the ReLU",
         "BN after the ReLU"),
    ):
        fa, fb = values(a_keys, "fid"), values(b_keys, "fid")
        if not fa or not fb:
            continue
        ma, mb = statistics.fmean(fa), statistics.fmean(fb)
        better, worse = (a, b) if ma < mb else (b, a)
        spread = seed_spread(a_keys + b_keys)
        if spread is None:
            judged = "with one seed per variant there is no seed-to-seed spread to judge the gap by."
            article = f"The seed article found {a} better; one seed cannot confirm or contradict it."
        elif abs(ma - mb) > 2 * spread:
            judged = f"the gap is more than twice the seed-to-seed spread ({spread:.2f})."
            article = (f"**As the seed article found** ({a} better)." if better == a else
                       f"**The seed article found the opposite** ({a} better, on 64×64 anime faces after much "
                       "longer training).")
        else:
            judged = f"the gap is within twice the seed-to-seed spread ({spread:.2f}): not a clear difference."
            article = f"So this run neither confirms nor contradicts the seed article's finding that {a} is better."
        lines.append(f"- At epoch {last}, {better} reaches a lower FID than {worse} ({min(ma, mb):.2f} vs "
                     f"{max(ma, mb):.2f}, mean over two variants × {len(seeds)} seed(s)); {judged} {article}")
    ca = values(["convT-before", "convT-after"], "checkerboard_ratio")
    cb = values(["nearest-before", "nearest-after"], "checkerboard_ratio")
    if ca and cb:
        ma, mb = statistics.fmean(ca), statistics.fmean(cb)
        crosses = (" — the transposed convolutions' crosses show, as in the seed article's ConvT samples."
                   if ma > 2 and ma > 2 * mb else ".")
        lines.append(f"- Checkerboard energy (generated / real): transposed conv {ma:.2f}, "
                     f"nearest+conv {mb:.2f}{crosses}")
    if lines:
        lines += ["", WHY_UPSAMPLING]
    return lines


WHY_UPSAMPLING = (
    "How to read this against the seed article: it trained single 64×64 anime-face runs for ~60 epochs and "
    "judged the samples by eye; here every variant gets the same budget (the epochs above), several seeds and "
    "numbers at several points. Two mechanisms bear on the comparison. A stride-2 transposed convolution with a "
    "4×4 kernel covers the output pixels unevenly, which can add energy at the period-2 frequency (the crosses "
    "in the article's ConvT samples); the checkerboard column measures exactly that (1 = as much as real "
    "images), so it shows whether it happened here. Nearest upsampling followed by a 3×3 convolution cannot make "
    "that pattern and gives smooth images from the start (a ratio below 1: less fine detail than real images), "
    "which may explain a faster start; the long runs below show whether such a lead lasts. The two "
    "batch-norm placements differ in what the ReLU sees: normalised pre-activations (before) or rectified "
    "values that BN then re-centres (after).")


def _verdict_conditioning(results: dict[str, Any], plan: Plan, last: int) -> list[str]:
    seeds = plan.seeds_of("conditioning")
    lines = []
    for v in EXPERIMENTS["conditioning"][1]:
        acc = _stats(_series(results, "conditioning", v.key, seeds, last, "accuracy"))
        worst = _stats(_series(results, "conditioning", v.key, seeds, last, "min_class_accuracy"))
        if acc is None or worst is None:
            continue
        state = "follows its labels" if worst[0] >= 0.8 else (
            "ignores its labels for some classes" if acc[0] >= 0.5 else "largely ignores its labels")
        lines.append(f"- {v.label}: sample accuracy {_cell(acc)}, worst class {_cell(worst)} at epoch {last} "
                     f"→ {state}.")

    def worst_of(key: str) -> tuple[float, float | None] | None:
        return _stats(_series(results, "conditioning", key, seeds, last, "min_class_accuracy"))

    def judged(a: tuple[float, float | None], b: tuple[float, float | None]) -> str:
        """How a gap between two means compares with their seeds' spread (mean of the two SDs)."""
        if a[1] is None or b[1] is None:
            return "one seed: no spread to judge the gap by"
        spread = (a[1] + b[1]) / 2
        if abs(a[0] - b[0]) > 2 * spread:
            return f"a gap of more than twice the seed-to-seed spread ({spread:.3f})"
        return f"within twice the seed-to-seed spread ({spread:.3f}): not a clear difference"

    w10, w5, w10t, c10 = worst_of("acgan-10"), worst_of("acgan-5"), worst_of("acgan-10-tricks"), worst_of("cgan-10")
    if w10 is not None and w5 is not None:
        collapsed = w10[0] < 0.5 <= w5[0]
        lines.append(
            f"- Seed article (Kuzushiji characters): ACGAN gave up on 49 classes, got only about half the characters "
            f"right with 10 and worked with 5. Here the worst class of ACGAN is {_cell(w10)} with 10 classes and "
            f"{_cell(w5)} with 5 ({judged(w10, w5)}): "
            + ("**the collapse with more classes is reproduced**." if collapsed else
               "**no sign that 10 Fashion-MNIST classes are harder for ACGAN than 5** — likely because it has 6,000 "
               "images a class (the article had as few as 300–400 for some) and ten visually distinct classes. "
               f"After {last} epochs neither follows its labels for every class yet."))
    if w10 is not None and w10t is not None:
        lines.append(f"- D-classifier pretraining + noisy labels move ACGAN's worst class from {_cell(w10)} to "
                     f"{_cell(w10t)} ({judged(w10, w10t)}; the article saw pretraining barely help).")
    if w10 is not None and c10 is not None:
        lines.append(f"- cGAN vs ACGAN, 10 classes, worst class: {_cell(c10)} vs {_cell(w10)} ({judged(c10, w10)}).")
    w10r = worst_of("acgan-10-realclass")
    if w10 is not None and w10r is not None:
        lines.append(f"- Not in the article: D's class head trained on real images only "
                     f"(`--acgan-fake-class-weight 0`) moves ACGAN's worst class from {_cell(w10)} to "
                     f"{_cell(w10r)} ({judged(w10, w10r)}).")
    cov = {k: _stats(_series(results, "conditioning", k, seeds, last, "coverage"))
           for k in ("cgan-10", "acgan-10-realclass", "acgan-10-projection")}
    w10p = worst_of("acgan-10-projection")
    if w10p is not None and all(c is not None for c in cov.values()):
        c, r, p = (cov[k] for k in ("cgan-10", "acgan-10-realclass", "acgan-10-projection"))
        assert c is not None and r is not None and p is not None
        lines.append(f"- A projection discriminator on top (`--acgan-projection`: D's real/fake logit judges image "
                     f"and label together, as the cGAN's D does): coverage {_cell(p)} against {_cell(r)} without it "
                     f"({judged(r, p)}) and {_cell(c)} for the cGAN ({judged(c, p)}); worst class {_cell(w10p)}.")
    return lines


# The shipped checkpoints that are long runs of an experiment's comparison: (folder, label), the
# metrics to show, and the training options the two are meant to differ in.
LONG_RUNS: dict[str, tuple[tuple[tuple[str, str], tuple[str, str]], list[str], set[str]]] = {
    "upsampling": ((("fashion-dcgan", "transposed conv"), ("fashion-dcgan-upsample", "nearest+conv")),
                   ["fid", "coverage", "checkerboard_ratio"], {"upsample"}),
    "conditioning": ((("fashion-cgan", "cGAN"), ("fashion-acgan", "ACGAN")),
                     ["accuracy", "min_class_accuracy", "coverage", "fid"], {"family"}),
}
LOWER_IS_BETTER = {"fid", "kid"}


def _history(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """(evaluations by epoch, training options of the recorded command) of a shipped checkpoint trained
    from scratch (a fine-tune's epochs start from another model's: not a run to compare by epoch)."""
    try:
        training = read_config(folder).training
    except (OSError, ValueError):
        return None
    if training.init_g_from is not None:
        return None
    evals = sorted((e for e in training.evaluations if "epoch" in e), key=lambda e: e["epoch"])
    return (evals, dict(training.options)) if evals else None


def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Evaluations of a and b at the same epoch, or one epoch apart (each used once, in epoch order)."""
    pairs, used = [], set()
    for ea in a:
        near = [eb for eb in b if abs(eb["epoch"] - ea["epoch"]) <= 1 and eb["epoch"] not in used]
        if near:
            eb = min(near, key=lambda e: (abs(e["epoch"] - ea["epoch"]), e["epoch"]))
            used.add(eb["epoch"])
            pairs.append((ea, eb))
    return pairs


def _long_runs(exp: str, plan: Plan) -> list[str]:
    """The shipped checkpoints' evaluation histories (10k samples, one seed) as the long-run
    continuation of an experiment's comparison, read from their config.json."""
    if exp not in LONG_RUNS:
        return []
    ((fa, la), (fb, lb)), metrics, meant = LONG_RUNS[exp]
    ha, hb = _history(plan.checkpoints / fa), _history(plan.checkpoints / fb)
    if ha is None or hb is None:
        return []
    pairs = _paired(ha[0], hb[0])
    if not pairs:
        return []

    def num(e: dict[str, Any], m: str) -> str:
        v = e.get(m)
        return "–" if v is None else (f"{v:.1f}" if m in LOWER_IS_BETTER else f"{v:.3f}")

    defaults = TrainOptions.defaults()
    widths = sorted({int(h[1].get("width", defaults["width"])) for h in (ha, hb)})
    lines = [f"### The long runs: `{fa}` vs `{fb}`", "",
             f"The shipped checkpoints `{fa}` ({la}) and `{fb}` ({lb}) were trained much longer, one seed each at "
             f"width {' and '.join(map(str, widths))}, and evaluated along the way on 10,000 samples "
             "(`training.evaluations` of their "
             "`config.json`; `python -m training bars` lists them). Their evaluations at the same epoch (or one "
             "apart):", "",
             "| epoch " + f"({la} / {lb})" + " | " + " | ".join(f"{m} {la} | {m} {lb}" for m in metrics) + " |",
             "| ---: | " + " | ".join("---: | ---:" for _ in metrics) + " |"]
    for ea, eb in pairs:
        ep = str(ea["epoch"]) if ea["epoch"] == eb["epoch"] else f"{ea['epoch']} / {eb['epoch']}"
        lines.append(f"| {ep} | " + " | ".join(f"{num(ea, m)} | {num(eb, m)}" for m in metrics) + " |")
    lines.append("")
    from training.resume import ARCH_KEYS, RECIPE_KEYS  # what a run learns (the rest: files, threads, logging)

    differ = sorted(k for k in (*ARCH_KEYS, "seed", *RECIPE_KEYS) if k not in meant
                    and ha[1].get(k, defaults.get(k)) != hb[1].get(k, defaults.get(k)))
    lines.append(
        f"- Their recorded commands (the last part of each run) differ in {', '.join(sorted(meant))}"
        + (f" and also in {', '.join(differ)}" if differ else " only")
        + "; earlier parts of a run may have been trained with other rates (docs/history.md tells each "
        "model's story), so this is a second opinion with one seed, not a controlled comparison.")
    final: dict[str, str] = {}  # metric → which model is ahead at the last paired evaluation
    for m in (m for m in metrics if m != "checkerboard_ratio"):  # (its best value is 1, not the extreme)
        lower = m in LOWER_IS_BETTER

        def ahead(ea: dict[str, Any], eb: dict[str, Any], m: str = m, lower: bool = lower) -> str | None:
            va, vb = ea.get(m), eb.get(m)
            if va is None or vb is None or va == vb:
                return None
            return la if (va < vb) == lower else lb

        leaders = [(ea, eb, ahead(ea, eb)) for ea, eb in pairs]
        first, last = leaders[0], leaders[-1]
        if first[2] is None or last[2] is None:
            continue
        final[m] = last[2]
        def both(ea: dict[str, Any], eb: dict[str, Any], m: str = m) -> str:
            return f"{la} {num(ea, m)}, {lb} {num(eb, m)}"

        text = f"- {m}: {first[2]} ahead at epoch {first[0]['epoch']} ({both(first[0], first[1])})"
        if first[2] != last[2]:
            since = next(i for i in range(len(leaders)) if all(x[2] == last[2] for x in leaders[i:]))
            text += (f"; **{last[2]} ahead from epoch {leaders[since][0]['epoch']} on** ({both(last[0], last[1])} "
                     f"at epoch {last[0]['epoch']}).")
        else:
            text += f", and still at epoch {last[0]['epoch']} ({both(last[0], last[1])})."
        lines.append(text)
    if exp == "upsampling" and final.get("fid") == final.get("coverage") is not None:
        lines.append(f"- So over a long run {final['fid']} ends ahead on both FID and coverage — one seed each, a sign "
                     "rather than a verdict, but it points "
                     + ("**the seed article's way (transposed conv better)**: nearest+conv's early lead did not last."
                        if final["fid"] == la else "against the seed article (transposed conv better), even late."))
    return lines


def _experiment_lines(results: dict[str, Any], plan: Plan, exp: str) -> list[str]:
    """One experiment's table, verdict, long runs and sample grids."""
    _, variants, metrics = EXPERIMENTS[exp]
    last = max(plan.points)
    lines = ["| variant | epoch | " + " | ".join(metrics) + " | train s |",
             "| --- | ---: | " + " | ".join("---:" for _ in metrics) + " | ---: |"]
    for v in variants:
        for epoch in plan.points:
            cells = [_cell(_stats(_series(results, exp, v.key, plan.seeds_of(exp), epoch, m))) for m in metrics]
            secs = [results[k]["train_seconds"] for s in plan.seeds_of(exp)
                    if (k := _key(exp, v.key, s, epoch)) in results]
            lines.append(f"| {v.label} | {epoch} | " + " | ".join(cells) + f" | {_cell(_stats(secs))} |")
    lines += ["", "### What the numbers say", ""]
    if exp.startswith("upsampling"):
        found = _verdict_upsampling(results, plan, last, exp)
    else:
        found = _verdict_conditioning(results, plan, last)
    lines += found or ["- Not enough finished runs to compare yet."]
    if long_runs := _long_runs(exp, plan):
        lines += ["", *long_runs]
    else:  # the mechanisms' note points at long runs that this experiment does not have
        lines = [line.replace("the long runs below show whether such a lead lasts",
                              "with no long run to read here, whether such a lead lasts stays open") for line in lines]
    lines += ["", "Sample grids of seed " + str(plan.seeds_of(exp)[0]) + f" at epoch {last}:", ""]
    for v in variants:
        lines.append(f"![{v.label}](experiments/{exp}-{v.key}-epoch{last}.png)")
    lines.append("")
    return lines


def _marks(exp: str) -> tuple[str, str]:
    return f"<!-- experiment:{exp}:start -->", f"<!-- experiment:{exp}:end -->"


def _own_section(results: dict[str, Any], plan: Plan, exp: str, command: str) -> str:
    """An experiment with options of its own (EXPERIMENT_OPTIONS), as a marked section with its command."""
    title = EXPERIMENTS[exp][0]
    opts = EXPERIMENT_OPTIONS[exp]
    last = max(plan.points)
    total = sum(r["train_seconds"] for k, r in results.items() if k.startswith(f"{exp}/") and
                k.endswith(f"/epoch{last}"))
    start, end = _marks(exp)
    lines = [start, f"## {exp}: {title}", "", "Regenerated from measurements by:", "", "```", command, "```", "",
             f"Dataset `{opts['dataset']}`; training seeds {', '.join(map(str, plan.seeds_of(exp)))}; each run "
             f"measured at epochs {', '.join(map(str, plan.points))} with the dataset's evaluator on {plan.samples} "
             "samples (numbers are mean ± standard deviation over seeds). Every run uses the defaults of "
             "`python -m training train` (Adam 2e-4, β1 0.5, EMA generator) with width (ngf = ndf) "
             f"{plan.width} and " + ", ".join(f"`{k}` {v}" for k, v in opts.items() if k != "dataset")
             + ", unless the variant says otherwise.", "",
             f"All runs together trained for {total / 60:.0f} min of wall-clock time (evaluations excluded), "
             f"{last} epoch(s) a run on a shared 2-core CPU. **The budget is the caveat**: the seed article "
             "trained its 64×64 runs for about 60 epochs at width 64 and judged them late; these runs are early "
             f"training at width {plan.width} — what they can show is how each variant starts and whether the "
             "transposed convolution's crosses appear in colour images, not where the variants end.", "",
             *_experiment_lines(results, plan, exp), end]
    return "\n".join(lines)


def render(results: dict[str, Any], plan: Plan, command: str, existing: str = "") -> str:
    """The doc: the plan's experiments that share the plan's dataset as one part (its header names the
    command), then each experiment with options of its own as a marked section. ``existing`` is the doc
    as it was: its marked sections of experiments not in the plan are kept, and when the plan has only
    such experiments, its other part is kept too."""
    shared = [e for e in plan.experiments if e not in EXPERIMENT_OPTIONS]
    kept: dict[str, str] = {}
    rest = existing
    # Sections written from other measurements (e.g. a translator against its baseline, by `evaluate`),
    # between <!-- measured:NAME:start --> and <!-- measured:NAME:end -->: kept as they are, at the end.
    measured = []
    for m in re.finditer(r"<!-- measured:([a-z0-9-]+):start -->.*?<!-- measured:\1:end -->", existing, re.S):
        measured.append(m.group(0))
        rest = rest.replace(m.group(0), "")
    for exp in EXPERIMENT_OPTIONS:
        start, end = _marks(exp)
        if start in rest and end in rest:
            a, b = rest.index(start), rest.index(end) + len(end)
            kept[exp] = rest[a:b]
            rest = rest[:a].rstrip() + "\n\n" + rest[b:].lstrip()
    for exp in plan.experiments:
        if exp in EXPERIMENT_OPTIONS:
            kept[exp] = _own_section(results, plan, exp, command)
    if shared:
        base = "\n".join(_shared_part(results, dataclasses.replace(plan, experiments=tuple(shared)), command))
    else:
        base = rest.strip() or "# Experiments"
    own = [kept[e] for e in EXPERIMENTS if e in kept] + measured
    return "\n\n".join([base.rstrip(), *own]) + "\n" if own else base


def _shared_part(results: dict[str, Any], plan: Plan, command: str) -> list[str]:
    lines = ["# Experiments", "",
             "Regenerated from measurements by:", "", "```", command, "```", "",
             f"Dataset `{plan.dataset}`; training seeds "
             + "; ".join(f"{e} {', '.join(map(str, plan.seeds_of(e)))}" for e in plan.experiments)
             + "; each run measured at epochs "
             f"{', '.join(map(str, plan.points))} with the dataset's evaluator on {plan.samples} samples "
             "(see `checkpoints/evaluators/README.md`; numbers are mean ± standard deviation over seeds). "
             "Every run uses the defaults of `python -m training train` (Adam 2e-4, β1 0.5, batch 128, "
             f"EMA generator) with width (ngf = ndf) {plan.width}, unless the variant says otherwise.", ""]
    last = max(plan.points)
    total = sum(r["train_seconds"] for k, r in results.items() if k.endswith(f"/epoch{last}")
                and k.split("/", 1)[0] in plan.experiments)
    lines += [f"All runs together trained for {total / 3600:.1f} h of wall-clock time (evaluations excluded). "
              f"The budget is small — {last} epoch(s) a run — because everything here ran on a 2-core CPU: the "
              "tables show early training, and a verdict on it says nothing about where longer runs end (for that, "
              "each experiment's \"long runs\" part reads the evaluation histories of the shipped models that make "
              "the same comparison).", ""]
    for exp in plan.experiments:
        lines += [f"## {exp}: {EXPERIMENTS[exp][0]}", "", *_experiment_lines(results, plan, exp)]
    return lines


def main(plan: Plan, command: str) -> Path:
    plan.work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.work / "plan.json", {k: (str(v) if isinstance(v, Path) else v)
                                                for k, v in dataclasses.asdict(plan).items()})
    results = run_plan(plan, command)
    existing = plan.out.read_text(encoding="utf-8") if plan.out.exists() else ""
    atomic_write_bytes(plan.out, render(results, plan, command, existing).encode())
    return plan.out
