"""The experiment write-up is computed from the measurements alone: fabricated results in, verdicts out."""

from pathlib import Path

from training.experiments import EXPERIMENTS, Plan, _key, render


def fake_results(fid: dict[str, list[float]], seeds=(0, 1, 2), epoch=10) -> dict:
    out = {}
    for variant, values in fid.items():
        for s, v in zip(seeds, values, strict=True):
            out[_key("upsampling", variant, s, epoch)] = {
                "metrics": {"fid": v, "coverage": 0.9, "checkerboard_ratio": 2.0 if "convT" in variant else 1.0,
                            "modes_covered": 10, "kl_to_uniform": 0.01},
                "train_seconds": 60.0, "images_seen": 1000}
    return out


PLAN = Plan(("upsampling",), (10,), (0, 1, 2), 1000, Path("w"), Path("docs/experiments.md"),
            checkpoints=Path("w/no-checkpoints"))


def test_clear_win_is_called_and_checkerboard_reported():
    results = fake_results({"convT-before": [10, 11, 12], "convT-after": [11, 12, 13],
                            "nearest-before": [20, 21, 22], "nearest-after": [21, 22, 23]})
    md = render(results, PLAN, "python -m training experiments upsampling")
    assert "transposed conv reaches a lower FID than nearest+conv (11.50 vs 21.50" in md
    assert "more than twice the seed-to-seed spread" in md
    assert "transposed conv 2.00, nearest+conv 1.00" in md
    assert md.count("| convT, BN before act | 10 | 11.00 ± 1.00") == 1


def test_noise_is_not_called_a_win():
    results = fake_results({"convT-before": [10, 30, 20], "convT-after": [12, 28, 21],
                            "nearest-before": [11, 29, 20], "nearest-after": [13, 27, 22]})
    md = render(results, PLAN, "cmd")
    assert "not a clear difference" in md and "more than twice" not in md


def test_missing_runs_are_said_not_invented():
    md = render({}, PLAN, "cmd")
    assert "Not enough finished runs" in md and "| convT, BN before act | 10 | – |" in md


def test_every_experiment_names_real_training_options():
    from training.options import TrainOptions

    fields = set(TrainOptions.model_fields)
    for _, variants, _ in EXPERIMENTS.values():
        for v in variants:
            assert set(v.options) <= fields, v
            TrainOptions(dataset="fashion-mnist", out="/nonexistent/x", **v.options)  # and valid together


def test_an_experiment_can_have_its_own_seeds():
    plan = Plan(("upsampling", "conditioning"), (10,), (0, 1, 2), 1000, Path("w"), Path("docs/experiments.md"),
                seeds_for={"conditioning": (7,)})
    assert plan.seeds_of("conditioning") == (7,) and plan.seeds_of("upsampling") == (0, 1, 2)
    results = {_key("conditioning", "cgan-10", 7, 10): {
        "metrics": {"accuracy": 0.9, "min_class_accuracy": 0.85, "coverage": 0.8, "fid": 5.0, "modes_covered": 10},
        "train_seconds": 60.0, "images_seen": 1000}}
    md = render(results, plan, "cmd")
    assert "upsampling 0, 1, 2; conditioning 7" in md
    assert "| cGAN, 10 classes | 10 | 0.900 | 0.850 |" in md  # one seed: no spread to show
    assert "cGAN, 10 classes: sample accuracy 0.900, worst class 0.850" in md
    assert "Sample grids of seed 7" in md


def test_bad_seeds_for_is_a_cli_error(capsys):
    import pytest

    from training.cli import main

    for bad in ("conditioning", "nope=1", "conditioning=a"):
        with pytest.raises(SystemExit):
            main(["experiments", "--seeds-for", bad, "--work", "/nonexistent/w"])
        assert "--seeds-for" in capsys.readouterr().err


def _cond(worst: dict[str, float], seeds=(0,), epoch=4) -> dict:
    return {_key("conditioning", k, s, epoch): {
        "metrics": {"accuracy": w + 0.1, "min_class_accuracy": w, "coverage": 0.5, "fid": 9.0, "modes_covered": 10},
        "train_seconds": 1.0, "images_seen": 1} for k, w in worst.items() for s in seeds}


def test_the_acgan_collapse_verdict_follows_the_numbers():
    plan = Plan(("conditioning",), (4,), (0,), 1000, Path("w"), Path("docs/experiments.md"))
    collapsed = render(_cond({"acgan-10": 0.1, "acgan-5": 0.9, "acgan-10-tricks": 0.3, "cgan-10": 0.85}), plan, "c")
    assert "the collapse with more classes is reproduced" in collapsed
    assert "move ACGAN's worst class from 0.100 to 0.300" in collapsed
    fine = render(_cond({"acgan-10": 0.82, "acgan-5": 0.9}), plan, "c")
    assert "no sign that 10 Fashion-MNIST classes are harder" in fine and "reproduced" not in fine
    assert "one seed: no spread to judge the gap by" in fine


def test_conditioning_gaps_are_judged_by_the_seed_spread():
    plan = Plan(("conditioning",), (4,), (0, 1, 2), 1000, Path("w"), Path("docs/experiments.md"))

    def results(per_seed: dict[str, list[float]]) -> dict:
        out = {}
        for key, values in per_seed.items():
            for seed, v in enumerate(values):
                out.update({_key("conditioning", key, seed, 4): _cond({key: v}, seeds=(seed,))[
                    _key("conditioning", key, seed, 4)]})
        return out

    noisy = render(results({"acgan-10": [0.3, 0.5, 0.5], "acgan-10-tricks": [0.3, 0.4, 0.35],
                            "cgan-10": [0.1, 0.2, 0.3], "acgan-5": [0.4, 0.4, 0.4]}), plan, "c")
    assert "move ACGAN's worst class from 0.433 ± 0.115 to 0.350 ± 0.050 (within twice" in noisy
    clear = render(results({"acgan-10": [0.80, 0.81, 0.82], "cgan-10": [0.10, 0.11, 0.12]}), plan, "c")
    assert "worst class: 0.110 ± 0.010 vs 0.810 ± 0.010 (a gap of more than twice" in clear


def test_the_real_class_and_projection_variants_are_compared_with_acgan_and_cgan():
    plan = Plan(("conditioning",), (4,), (0,), 1000, Path("w"), Path("docs/experiments.md"))
    results = _cond({"acgan-10": 0.4, "acgan-10-realclass": 0.85, "acgan-10-projection": 0.88, "cgan-10": 0.3})
    results[_key("conditioning", "acgan-10-projection", 0, 4)]["metrics"]["coverage"] = 0.61
    md = render(results, plan, "c")
    assert "(`--acgan-fake-class-weight 0`) moves ACGAN's worst class from 0.400 to 0.850" in md
    assert "coverage 0.610 against 0.500 without it (one seed" in md
    assert "and 0.500 for the cGAN (one seed: no spread to judge the gap by); worst class 0.880." in md
    assert "ACGAN, 10 classes, real-only classes + projection D | 4 |" in md
    without = render(_cond({"acgan-10": 0.4, "cgan-10": 0.3}), plan, "c")
    verdict = without.split("### What the numbers say")[1].split("Sample grids")[0]
    assert "cGAN vs ACGAN" in verdict and "real images only" not in verdict and "projection" not in verdict


def test_upsampling_verdict_is_compared_with_the_seed_article():
    results = fake_results({"convT-before": [20, 21, 22], "convT-after": [21, 22, 23],
                            "nearest-before": [10, 11, 12], "nearest-after": [11, 12, 13]})
    md = render(results, PLAN, "cmd")
    assert "nearest+conv reaches a lower FID than transposed conv" in md
    assert "**The seed article found the opposite** (transposed conv better" in md
    assert "How to read this against the seed article" in md


def write_history(root: Path, name: str, options: dict, history: list[tuple[int, float, float]]) -> None:
    """A checkpoint folder whose config.json records these (epoch, fid, coverage) evaluations."""
    import json

    from tests.app.conftest import write_mlp

    folder = write_mlp(root, name=name)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["training"]["options"] = options
    cfg["training"]["evaluations"] = [{"epoch": e, "fid": f, "coverage": c, "checkerboard_ratio": 1.0}
                                      for e, f, c in history]
    (folder / "config.json").write_text(json.dumps(cfg))


def test_long_runs_pair_epochs_and_find_where_the_lead_changes(tmp_path: Path):
    """nearest+conv leads early, transposed conv from epoch 20 on; 14 pairs with 15, 24 with 25."""
    write_history(tmp_path, "fashion-dcgan", {"family": "dcgan", "upsample": "convT", "lr_g": 2e-4, "width": 96},
                  [(5, 100.0, 0.30), (10, 80.0, 0.40), (15, 61.0, 0.45), (20, 50.0, 0.52), (25, 40.0, 0.56)])
    write_history(tmp_path, "fashion-dcgan-upsample", {"family": "dcgan", "upsample": "nearest-conv", "lr_g": 1e-4},
                  [(4, 90.0, 0.35), (6, 85.0, 0.36), (10, 70.0, 0.42), (14, 60.0, 0.46), (20, 55.0, 0.50),
                   (24, 49.0, 0.51)])
    plan = Plan(("upsampling",), (10,), (0,), 1000, Path("w"), Path("docs/experiments.md"), checkpoints=tmp_path)
    md = render({}, plan, "cmd")
    assert "### The long runs: `fashion-dcgan` vs `fashion-dcgan-upsample`" in md
    assert "one seed each at width 64 and 96," in md  # each run's own (the second's: the default)
    assert "| 5 / 4 | 100.0 | 90.0 | 0.300 | 0.350 |" in md  # paired one epoch apart
    assert "| 15 / 14 | 61.0 | 60.0 |" in md and "| 25 / 24 | 40.0 | 49.0 |" in md
    assert "| 5 / 6 " not in md  # each evaluation is used once
    assert "differ in upsample and also in lr_g, width" in md
    assert "fid: nearest+conv ahead at epoch 5 (transposed conv 100.0, nearest+conv 90.0); " \
           "**transposed conv ahead from epoch 20 on**" in md
    assert "coverage: nearest+conv ahead at epoch 5" in md and "**transposed conv ahead from epoch 20 on** " \
           "(transposed conv 0.560, nearest+conv 0.510 at epoch 25)" in md
    assert "points **the seed article's way" in md


def test_no_long_runs_section_without_both_histories(tmp_path: Path):
    write_history(tmp_path, "fashion-dcgan", {"family": "dcgan"}, [(5, 100.0, 0.3)])
    plan = Plan(("upsampling",), (10,), (0,), 1000, Path("w"), Path("docs/experiments.md"), checkpoints=tmp_path)
    assert "The long runs" not in render({}, plan, "cmd")


def test_a_fine_tune_is_no_long_run(tmp_path: Path):
    """A checkpoint whose G started from another model's: its epoch 4 is not 4 epochs of training."""
    import json

    for name, upsample in (("fashion-dcgan", "convT"), ("fashion-dcgan-upsample", "nearest-conv")):
        write_history(tmp_path, name, {"family": "dcgan", "upsample": upsample}, [(4, 90.0, 0.35), (8, 80.0, 0.4)])
    plan = Plan(("upsampling",), (10,), (0,), 1000, Path("w"), Path("docs/experiments.md"), checkpoints=tmp_path)
    assert "The long runs" in render({}, plan, "cmd")
    cfg_path = tmp_path / "fashion-dcgan-upsample" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["training"]["init_g_from"] = {"folder": "checkpoints/x", "name": "x", "generator_sha256": "0" * 64,
                                      "command": "c", "epochs": 40, "seconds": 6000.0}
    cfg_path.write_text(json.dumps(cfg))
    assert "The long runs" not in render({}, plan, "cmd")


def test_experiment_options_are_valid_training_options():
    from training.experiments import EXPERIMENT_OPTIONS
    from training.options import TrainOptions

    for exp, opts in EXPERIMENT_OPTIONS.items():
        for v in EXPERIMENTS[exp][1]:
            TrainOptions(out="/nonexistent/x", **{**opts, **v.options})


def test_upsampling_emoji_trains_on_its_own_data_in_its_own_section(tmp_path: Path):
    import json

    from tests.emoji_fixture import make_emoji_dir
    from training.checkpoint import read_config
    from training.experiments import main

    root = make_emoji_dir(tmp_path / "emoji")
    out = tmp_path / "experiments.md"
    out.write_text("# Experiments\n\nThe Fashion-MNIST part, measured elsewhere.\n")
    plan = Plan(("upsampling-emoji",), (1,), (0,), 100, tmp_path / "w", out, data_dir=str(root),
                max_steps_per_epoch=1, threads=1, width=8, checkpoints=tmp_path / "no-checkpoints")
    main(plan, "python -m training experiments upsampling-emoji")
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert sorted(results) == sorted(_key("upsampling-emoji", v.key, 0, 1) for v in EXPERIMENTS["upsampling-emoji"][1])
    assert all(r["metrics"]["checkerboard_ratio"] > 0 for r in results.values())  # measured, not made up
    cfg = read_config(tmp_path / "w" / "upsampling-emoji" / "nearest-after" / "seed0" / "checkpoint")
    assert (cfg.image.height, cfg.image.channels, cfg.dataset.name) == (64, 3, "emoji")
    assert cfg.generator.kwargs["upsample"] == "nearest-conv" and cfg.generator.kwargs["bn"] == "after-act"
    assert cfg.training.options["diffaugment"] == "color,translation,cutout"
    md = out.read_text()
    assert md.startswith("# Experiments\n\nThe Fashion-MNIST part, measured elsewhere.")  # kept
    assert "## upsampling-emoji:" in md and "Dataset `emoji`" in md and "| nearest+conv, BN after act | 1 |" in md
    assert (tmp_path / "experiments" / "upsampling-emoji-convT-before-epoch1.png").is_file()
    # Re-rendering the shared experiments keeps the emoji section; re-rendering it replaces it in place.
    shared = render({}, PLAN, "cmd", md)
    assert shared.startswith("# Experiments") and shared.count("## upsampling-emoji:") == 1
    assert "measured elsewhere" not in shared
    again = render(results, plan, "cmd2", shared)
    assert again.count("## upsampling-emoji:") == 1 and "cmd2" in again and "## upsampling:" in again


def test_sections_measured_elsewhere_survive_a_regeneration():
    """A section written from other measurements (the pix2pix baseline comparison) between measured markers
    is kept, word for word, when the experiments are written again."""
    section = ("<!-- measured:pix2pix-baseline:start -->\n## pix2pix\n\n| a | b |\n"
               "<!-- measured:pix2pix-baseline:end -->")
    first = render({}, PLAN, "cmd")
    md = render({}, PLAN, "cmd", existing=first + "\n\n" + section + "\n")
    assert md.count(section) == 1 and md.index("Not enough finished runs") < md.index(section)
    assert render({}, PLAN, "cmd", existing=md) == md
