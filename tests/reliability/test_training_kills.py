"""Training killed with SIGKILL at random points, several times over, then finished with ``--resume``.

After every kill: the shipped checkpoint folder (if any yet) loads with the one reader and
serves through the service's registry checks, the resume state loads with
``torch.load(weights_only=True)``, every per-epoch sample grid is a whole PNG, and progress
never goes backwards. At the end: the run completed every epoch exactly once (images seen =
epochs × images per epoch) and every intermediate checkpoint kept along the way still loads.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load as st_load

from training.checkpoint import CONFIG, WEIGHTS, CheckpointError, load_generator, read_config, save_checkpoint
from training.models import build_generator

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 40
BATCH = 16
TINY = ["--family", "cgan", "--dataset", "synthetic", "--epochs", str(EPOCHS), "--width", "8", "--z-dim", "8",
        "--batch-size", str(BATCH), "--synthetic-size", "300", "--no-progress", "--no-tensorboard",
        "--log-every", "1", "--save-dtype", "float32", "--seed", "3"]


def _start(out: Path, run: Path, log: Path, resume: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "training", "train", *TINY, "--out", str(out), "--run-dir", str(run)]
    return subprocess.Popen([*args, *(["--resume"] if resume else [])], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _grids(run: Path) -> int:
    return len(list((run / "grids").glob("epoch_*.png"))) if (run / "grids").exists() else 0


def _check_whole(out: Path, run: Path) -> tuple[int, bool]:
    """Everything on disk is whole → (epoch of the resume state (0: none yet), shipped folder torn).

    "Torn": a kill between the weights' rename and config.json's rename leaves new weights beside
    the previous config.json. Each file is whole, the pair is not: ``load_generator`` (and so the
    service) refuses it by its sha256 until ``--resume`` writes the next pair. Nothing else is
    allowed: no half-written file, no weights that do not fit the architecture.
    """
    torn = False
    if (out / CONFIG).exists():
        try:
            generator, cfg = load_generator(out)  # sha256 checked, config validated, weights fit
        except CheckpointError as e:
            assert "does not match config.json" in str(e), e  # a torn pair, nothing else
            torn = True
            cfg = read_config(out)  # whole and valid
            state = st_load((out / WEIGHTS).read_bytes())  # whole and valid
            generator = build_generator(cfg.generator.class_name, dict(cfg.generator.kwargs))
            generator.load_state_dict(state, strict=True)  # and of the same architecture
            generator.eval()
        with torch.inference_mode():
            x = generator(torch.zeros(2, cfg.z_dim), torch.tensor([0, 1]))
        assert torch.isfinite(x).all()
    for grid in (run / "grids").glob("epoch_*.png"):
        with Image.open(grid) as im:
            im.load()  # a truncated PNG raises here
    if not (run / "state.pt").exists():
        return 0, torn
    st = torch.load(run / "state.pt", weights_only=True)
    return int(st["epoch"]), torn


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_random_sigkills_then_resume(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("GANSERVE_KILL_SEED", "20240607")))
    out, run, keep = tmp_path / "ck", tmp_path / "run", tmp_path / "kept"
    kills, epochs_at_kill, torn = 4, [], 0
    leftovers: list[str] = []
    for k in range(kills):
        proc = _start(out, run, tmp_path / f"run{k}.log", resume=k > 0)
        start_grids = _grids(run)
        deadline = time.monotonic() + 120
        # Wait for at least one new epoch, then kill at a random moment within the next ~2 epochs
        # (inside a training step, a grid render, or a checkpoint write).
        while _grids(run) <= start_grids:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"run {k} ended or stalled before it could be killed:\n"
                            + (tmp_path / f"run{k}.log").read_text())
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            pytest.fail(f"run {k} finished before the kill; lower the delay or raise EPOCHS")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        epoch, was_torn = _check_whole(out, run)
        torn += was_torn
        assert epoch >= (epochs_at_kill[-1] if epochs_at_kill else 0), (epochs_at_kill, epoch)  # never backwards
        epochs_at_kill.append(epoch)
        leftovers = sorted({*leftovers, *(p.name for p in [*out.glob(".*.tmp"), *run.glob(".*.tmp")])})
        if not was_torn:
            shutil.copytree(out, keep / f"kill{k}")  # an intermediate checkpoint, as shipped at that moment

    log = tmp_path / "final.log"
    final = _start(out, run, log, resume=True)
    assert final.wait(timeout=180) == 0, log.read_text()
    text = log.read_text()
    if epochs_at_kill[-1]:
        assert f"at epoch {epochs_at_kill[-1]} " in text  # resumed where the last kill left it
    assert f"epoch {EPOCHS}/{EPOCHS} done" in text
    cfg = read_config(out)
    per_epoch = (cfg.dataset.num_images // BATCH) * BATCH
    assert cfg.training.epochs == EPOCHS
    assert cfg.training.images_seen == EPOCHS * per_epoch  # no epoch lost, none trained twice
    assert _check_whole(out, run) == (EPOCHS, False)
    for folder in sorted(keep.iterdir()) if keep.exists() else []:
        _, kept = load_generator(folder)
        assert 1 <= kept.training.epochs <= EPOCHS
    assert _grids(run) == EPOCHS
    assert epochs_at_kill[-1] > 0  # the kills did land in the middle of the run
    print(f"reliability: kills at epochs {epochs_at_kill}, torn pairs {torn}, temp files left by kills: {leftovers}")


def test_a_crash_inside_save_checkpoint_leaves_the_previous_checkpoint_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.checkpoint as ck
    from tests.app.conftest import cgan_kwargs, config_dict

    kw = cgan_kwargs()
    cfg = config_dict("ck", "DCGenerator", kw, family="cgan", class_names=["a", "b", "c"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", build_generator("DCGenerator", kw), cfg)

    def crash(path: Path, obj: object) -> None:
        raise KeyboardInterrupt  # the process dies before config.json is renamed into place

    monkeypatch.setattr(ck, "atomic_write_json", crash)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck", build_generator("DCGenerator", kw), cfg)
    load_generator(tmp_path / "ck")  # the previous checkpoint, or the new one: either, but whole


def test_a_crash_after_the_commit_point_loads_the_new_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    import training.checkpoint as ck
    from tests.app.conftest import cgan_kwargs, config_dict

    kw = cgan_kwargs()
    cfg = config_dict("ck", "DCGenerator", kw, family="cgan", class_names=["a", "b", "c"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ck", build_generator("DCGenerator", kw), cfg)
    old = (tmp_path / "ck" / "generator.safetensors").read_bytes()

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # killed after config.json landed, before the weights' last rename

    monkeypatch.setattr(ck.os, "replace", lambda s, d: crash(s, d) if str(d).endswith("generator.safetensors")
                        else __import__("os").rename(s, d))
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck", build_generator("DCGenerator", kw), cfg)
    assert (tmp_path / "ck" / "generator.safetensors").read_bytes() == old  # old file still in place
    _, loaded_cfg = load_generator(tmp_path / "ck")  # but the new config and its staged weights load
    assert ck.staged_weights(tmp_path / "ck", loaded_cfg.generator_sha256).exists()
    monkeypatch.undo()
    save_checkpoint(tmp_path / "ck", build_generator("DCGenerator", kw), cfg)  # the next save cleans up
    assert not list((tmp_path / "ck").glob(".generator-*"))
