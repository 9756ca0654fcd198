"""Real training runs on tiny configs: every family, resume after SIGKILL, two-process DDP."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.checkpoint import load_generator, read_config
from training.cli import main
from training.loop import Trainer
from training.models import family_names, get_family
from training.objectives.base import Objective, lr_factor

REPO = Path(__file__).resolve().parents[2]


# (pix2pix, a translator: tests/training/test_pix2pix_train.py)
@pytest.mark.parametrize("family", [f for f in family_names() if not get_family(f).translator])
def test_two_epoch_run_writes_a_loadable_checkpoint(family, tmp_path, tiny_args):
    out, run = tmp_path / f"{family}-ck", tmp_path / "run"
    extra = ["--n-critic", "2"] if family == "wgan-gp" else []
    assert main(["train", "--family", family, "--dataset", "synthetic", "--epochs", "2", "--out", str(out),
                 "--run-dir", str(run), *tiny_args, *extra]) == 0
    g, cfg = load_generator(out)
    assert cfg.name == f"{family}-ck" and cfg.family == family
    assert cfg.training.epochs == 2 and cfg.training.command.startswith("python -m training train --family")
    assert cfg.training.seconds > 0 and cfg.training.images_seen > 0
    assert cfg.sampleable == (family not in ("ae", "conv-ae"))
    labels = torch.tensor([0, 5]) if cfg.conditional else None
    assert cfg.conditional == (family in ("cgan", "acgan"))
    with torch.no_grad():
        x = g(torch.randn(2, cfg.z_dim), labels)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
    assert (out / "samples.png").stat().st_size > 0
    assert sorted(p.name for p in (run / "grids").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    # Resume state is in the run folder, not in what ships.
    assert (run / "state.pt").exists() and not any(p.suffix == ".pt" for p in out.iterdir())


def test_acgan_tricks_run(tmp_path, tiny_args):
    out = tmp_path / "ac"
    assert main(["train", "--family", "acgan", "--dataset", "synthetic", "--epochs", "1", "--out", str(out),
                 "--run-dir", str(tmp_path / "r"), "--pretrain-d-epochs", "1", "--noisy-labels", "0.05",
                 "--label-smoothing", "0.1", "--classes", "0,1,2", "--loss", "hinge", *tiny_args]) == 0
    cfg = read_config(out)
    assert cfg.class_names == ["circle", "square", "triangle"]
    assert cfg.training.options["pretrain_d_epochs"] == 1


@pytest.mark.parametrize(("fake_weight", "g_weight", "expected"), [("1", "1", 3), ("0", "1", 2), ("0", "0", 1)])
def test_acgan_class_weights_leave_fakes_out_of_the_class_losses(tmp_path, tiny_args, monkeypatch, fake_weight,
                                                                g_weight, expected):
    """One step calls the class loss for D on real images, D on fakes and G on fakes — with weight 0
    for fakes only the first and the last, with G's weight 0 too only the first (and the options are
    recorded)."""
    from training import losses

    calls: list[int] = []
    real_loss = losses.class_loss
    monkeypatch.setattr(losses, "class_loss", lambda logits, labels: calls.append(1) or real_loss(logits, labels))
    out = tmp_path / "ac"
    assert main(["train", "--family", "acgan", "--dataset", "synthetic", "--epochs", "1", "--max-steps", "1",
                 "--out", str(out), "--run-dir", str(tmp_path / "r"), "--acgan-fake-class-weight", fake_weight,
                 "--acgan-g-class-weight", g_weight, *tiny_args]) == 0
    assert len(calls) == expected
    options = read_config(out).training.options
    assert (options["acgan_fake_class_weight"], options["acgan_g_class_weight"]) == (float(fake_weight),
                                                                                    float(g_weight))


@pytest.mark.parametrize(("family", "extra"), [("acgan", ["--acgan-g-class-weight", "0.3"]), ("cgan", [])])
def test_projection_trains_resumes_and_cannot_be_switched_on_resume(tmp_path, tiny_args, capsys, family, extra):
    out, run = tmp_path / "ac", tmp_path / "run"
    flag, key = f"--{family}-projection", f"{family}_projection"
    base = ["train", "--family", family, "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            *extra, *tiny_args]
    assert main([*base, "--epochs", "1", flag]) == 0
    assert main([*base, "--epochs", "2", flag, "--resume"]) == 0
    cfg = read_config(out)
    assert cfg.training.options[key] is True and cfg.training.epochs == 2
    d_state = torch.load(run / "state.pt", weights_only=True)["D"]
    assert any(k.startswith("embed.") for k in d_state)
    first_conv = next(v for k, v in d_state.items() if v.dim() == 4)
    assert first_conv.shape[1] == cfg.image.channels  # the label reaches D by projection only, not as input maps
    assert main([*base, "--epochs", "3", "--resume"]) == 2  # another discriminator
    assert f"{key}=True" in capsys.readouterr().err


@pytest.mark.parametrize(("family", "message"), [
    ("dcgan", "--cgan-projection changes a cGAN's discriminator (--family cgan), not --family dcgan"),
    ("acgan", "not --family acgan (its own flag: --acgan-projection)"),
])
def test_cgan_projection_is_refused_for_other_families(tmp_path, capsys, family, message):
    with pytest.raises(SystemExit) as e:
        main(["train", "--family", family, "--dataset", "synthetic", "--out", str(tmp_path / "x"), "--cgan-projection",
              "--dry-run"])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_init_g_from_starts_g_from_a_checkpoints_generator(tmp_path, tiny_args, capsys):
    """A cGAN's generator fine-tuned with the ACGAN objective: G (and its EMA, which is what is saved)
    starts from the cGAN's weights; D starts afresh. At a learning rate of ~0 the saved G has the cGAN's
    weights."""
    src = tmp_path / "cgan"
    assert main(["train", "--family", "cgan", "--dataset", "synthetic", "--epochs", "1", "--out", str(src),
                 "--run-dir", str(tmp_path / "r0"), *tiny_args]) == 0
    source, _ = load_generator(src)

    def finetune(name: str, *extra: str) -> int:
        return main(["train", "--family", "acgan", "--dataset", "synthetic", "--epochs", "1", "--max-steps", "1",
                     "--out", str(tmp_path / name), "--run-dir", str(tmp_path / f"r-{name}"), "--lr-g", "1e-12",
                     *tiny_args, *extra])

    assert finetune("ft", "--init-g-from", str(src), "--acgan-projection") == 0
    assert finetune("fresh") == 0
    tuned, cfg = load_generator(tmp_path / "ft")
    fresh, _ = load_generator(tmp_path / "fresh")
    # Parameters (BN's running statistics move with the step's forward pass, whatever the rate).
    same = [torch.allclose(a, b, atol=1e-6) for a, b in zip(source.parameters(), tuned.parameters(), strict=True)]
    assert same and all(same)
    assert not torch.equal(next(iter(fresh.parameters())), next(iter(source.parameters())))
    assert cfg.training.options["init_g_from"] == str(src)
    source_cfg = read_config(src)
    recorded = cfg.training.init_g_from
    assert recorded is not None and (recorded.name, recorded.generator_sha256, recorded.seconds) == (
        "cgan", source_cfg.generator_sha256, source_cfg.training.seconds)
    assert read_config(tmp_path / "fresh").training.init_g_from is None
    two = tmp_path / "cgan-01"
    assert main(["train", "--family", "cgan", "--dataset", "synthetic", "--epochs", "1", "--max-steps", "1",
                 "--classes", "0,1", "--out", str(two), "--run-dir", str(tmp_path / "r1"), *tiny_args]) == 0
    for folder, extra, says in ((src, ["--width", "16"], "its generator is DCGenerator"),  # another architecture
                                (two, ["--classes", "1,2"], "are not this dataset's"),  # label 0 means another class
                                (tmp_path, [], "config.json")):  # a folder that is no checkpoint
        assert finetune("bad", "--init-g-from", str(folder), *extra) == 2
        assert says in capsys.readouterr().err
    # A resumed fine-tune takes G from its state, and its record of the source, even once the source is gone.
    (src / "generator.safetensors").unlink()
    assert main(["train", "--family", "acgan", "--dataset", "synthetic", "--epochs", "2", "--resume", "--out",
                 str(tmp_path / "ft"), "--run-dir", str(tmp_path / "r-ft"), "--lr-g", "1e-12", "--init-g-from",
                 str(src), "--acgan-projection", *tiny_args]) == 0
    resumed = read_config(tmp_path / "ft").training
    assert resumed.epochs == 2 and resumed.init_g_from == recorded


@pytest.mark.parametrize("options", [[], ["--latent-categories", "4", "--self-condition"],
                                     ["--latent-categories", "4", "--self-condition", "--recluster-every", "1"]])
def test_init_g_from_an_unconditional_checkpoint(tmp_path, tiny_args, options):
    """An unconditional checkpoint records no classes: its G is fine-tuned on a dataset that has some
    (the shipped fashion-dcgan, a self-conditioned DCGAN, trained on Fashion-MNIST's labelled images)."""
    src = tmp_path / "dcgan"
    assert main(["train", "--family", "dcgan", "--dataset", "synthetic", "--epochs", "1", "--out", str(src),
                 "--run-dir", str(tmp_path / "r0"), *options, *tiny_args]) == 0
    source, source_cfg = load_generator(src)
    assert source_cfg.class_names == []
    out = tmp_path / "ft"
    assert main(["train", "--family", "dcgan", "--dataset", "synthetic", "--epochs", "1", "--max-steps", "1",
                 "--out", str(out), "--run-dir", str(tmp_path / "r-ft"), "--lr-g", "1e-12", "--init-g-from",
                 str(src), *options, *tiny_args]) == 0
    tuned, cfg = load_generator(out)
    same = [torch.allclose(a, b, atol=1e-6) for a, b in zip(source.parameters(), tuned.parameters(), strict=True)]
    assert same and all(same)
    assert cfg.training.init_g_from is not None and cfg.training.init_g_from.name == "dcgan"


def test_rgb_64_upsample_variant(tmp_path, tiny_args):
    out = tmp_path / "rgb"
    assert main(["train", "--family", "dcgan", "--dataset", "synthetic", "--epochs", "1", "--resolution", "64",
                 "--channels", "3", "--upsample", "nearest-conv", "--bn", "after-act", "--out", str(out),
                 "--run-dir", str(tmp_path / "r"), *tiny_args]) == 0
    _, cfg = load_generator(out)
    assert cfg.image.channels == 3 and cfg.image.height == 64
    assert cfg.generator.kwargs["upsample"] == "nearest-conv"


def _default_sigint() -> None:
    # A suite run in the background of a non-interactive shell (`bash .ci/run &`) inherits SIGINT ignored,
    # and Python then leaves it ignored: the training run is started as from a terminal, where Ctrl-C works.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "training", *args], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, preexec_fn=_default_sigint)


def test_sigkill_then_resume_continues_from_the_saved_epoch(tmp_path, tiny_args, cli):
    out, run = tmp_path / "ck", tmp_path / "run"
    epochs = 30
    args = ["train", "--family", "dcgan", "--dataset", "synthetic", "--epochs", str(epochs), "--out", str(out),
            "--run-dir", str(run), *tiny_args, "--synthetic-size", "300"]
    proc = _popen(args, tmp_path / "first.log")
    deadline = time.time() + 240
    while len(list(run.glob("grids/*.png"))) < 2:
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail("training ended before it could be killed: " + (tmp_path / "first.log").read_text())
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Whatever was written is whole: the checkpoint loads, the resume state loads safely.
    load_generator(out)
    saved_epoch = torch.load(run / "state.pt", weights_only=True)["epoch"]
    assert 1 <= saved_epoch < epochs
    done = cli(*args, "--resume", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert f"resumed from {run / 'state.pt'} at epoch {saved_epoch} " in done.stderr
    assert f"epoch {saved_epoch}/{epochs} done" not in done.stderr  # nothing trained twice
    assert f"epoch {saved_epoch + 1}/{epochs} done" in done.stderr
    cfg = read_config(out)
    per_epoch = (cfg.dataset.num_images // 16) * 16
    assert cfg.training.epochs == epochs and cfg.training.images_seen == epochs * per_epoch
    load_generator(out)


def test_resume_refuses_a_different_architecture(tmp_path, tiny_args, capsys):
    out, run = tmp_path / "ck", tmp_path / "run"
    base = ["train", "--family", "dcgan", "--dataset", "synthetic", "--epochs", "1", "--out", str(out),
            "--run-dir", str(run), *tiny_args]
    assert main(base) == 0
    assert main([*base, "--resume", "--epochs", "2", "--width", "16"]) == 2
    assert "--resume: run folder" in capsys.readouterr().err
    assert main([*base, "--resume", "--epochs", "2", "--minibatch-std"]) == 2  # another discriminator
    assert "minibatch_std=False" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["dcgan", "vae"])
def test_resume_takes_the_command_lines_learning_rates_and_betas(tmp_path, tiny_args, family):
    out, run = tmp_path / "ck", tmp_path / "run"
    base = ["train", "--family", family, "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0
    lr_d = ["--lr-d", "1e-4"] if family == "dcgan" else []  # (a VAE has no D: --lr-d is refused)
    assert main([*base, "--epochs", "2", "--resume", "--lr-g", "5e-5", *lr_d, "--beta1", "0.0",
                 "--beta2", "0.9"]) == 0
    state = torch.load(run / "state.pt", weights_only=True)
    opts = [state["opt_g"], state["opt_d"]] if family == "dcgan" else [state["opt_g"]]
    for opt, lr in zip(opts, [5e-5, 1e-4], strict=False):
        assert [(g["lr"], tuple(g["betas"])) for g in opt["param_groups"]] == [(lr, (0.0, 0.9))]
        assert opt["state"]  # Adam's moments came through the resume
    assert read_config(out).training.options["lr_g"] == 5e-5


def test_a_resumed_run_records_each_command_line_from_the_epoch_it_took_over(tmp_path, tiny_args):
    out, run = tmp_path / "ck", tmp_path / "run"
    base = ["train", "--family", "dcgan", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            *tiny_args]
    first, same, annealed = [*base, "--epochs", "1"], [*base, "--epochs", "2", "--resume"], \
        [*base, "--epochs", "3", "--resume", "--lr-decay-epochs", "1"]
    assert main(first) == 0
    one = read_config(out).training
    assert [(p.command, p.from_epoch) for p in one.parts] == [(one.command, 0)]
    assert main(same) == 0 and main(same) == 0  # the second resume has nothing left to train
    assert main(annealed) == 0
    cfg = read_config(out).training
    assert cfg.epochs == 3 and cfg.command.endswith("--lr-decay-epochs 1")
    # A resume with the same command line goes on with its part; another command line is a new part.
    recorded = [(p.command.split(" train ", 1)[1], p.from_epoch) for p in cfg.parts]
    assert recorded == [(shlex.join(first[1:]), 0), (shlex.join(same[1:]), 1), (shlex.join(annealed[1:]), 2)]
    # Resume state written before the parts were recorded: its command, from an unknown epoch.
    state = torch.load(run / "state.pt", weights_only=True)
    del state["parts"]
    torch.save(state, run / "state.pt")
    assert main([*base, "--epochs", "4", "--resume"]) == 0
    parts = read_config(out).training.parts
    assert [(p.command.endswith("--lr-decay-epochs 1"), p.from_epoch) for p in parts] == [(True, None), (False, 3)]


def test_lr_factor_holds_then_falls_linearly_towards_zero():
    assert [lr_factor(e, 5, 0) for e in range(5)] == [1.0] * 5
    assert [lr_factor(e, 5, 3) for e in range(5)] == pytest.approx([1, 1, 3 / 4, 2 / 4, 1 / 4])
    assert [lr_factor(e, 3, 3) for e in range(3)] == pytest.approx([3 / 4, 2 / 4, 1 / 4])


@pytest.mark.parametrize("family", ["dcgan", "vae"])
def test_lr_decay_epochs_anneals_the_last_epochs_of_a_resumed_run(tmp_path, tiny_args, family, monkeypatch):
    out, run = tmp_path / "ck", tmp_path / "run"
    base = ["train", "--family", family, "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            *tiny_args, "--lr-g", "3e-4", *(["--lr-d", "6e-4"] if family == "dcgan" else [])]  # (a VAE has no D)
    seen: list[tuple[float, ...]] = []  # the rates of every optimisation step
    step = Trainer.step

    def recording(self, x, y):
        seen.append(tuple(g["lr"] for opt, _ in self.objective.optimizers.values() for g in opt.param_groups))
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "step", recording)
    full = (3e-4, 6e-4) if family == "dcgan" else (3e-4,)
    assert main([*base, "--epochs", "1"]) == 0
    assert set(seen) == {full}  # no decay: the set rates
    seen.clear()
    # Resumed into a longer run whose last 3 epochs decay: epochs 2, 3, 4 at 3/4, 2/4, 1/4 of the rates.
    assert main([*base, "--epochs", "4", "--lr-decay-epochs", "3", "--resume"]) == 0
    per_epoch = list(dict.fromkeys(seen))
    assert per_epoch == [pytest.approx(tuple(r * f for r in full)) for f in (3 / 4, 2 / 4, 1 / 4)]
    assert len(seen) == 3 * seen.count(per_epoch[0])  # each rate held for one whole epoch
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(3e-4 / 4)
    assert read_config(out).training.options["lr_decay_epochs"] == 3


def test_minibatch_std_discriminator_trains_and_resumes(tmp_path, tiny_args):
    out, run = tmp_path / "mb", tmp_path / "run"
    base = ["train", "--family", "cgan", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--minibatch-std", *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    cfg = read_config(out)
    assert cfg.training.options["minibatch_std"] is True and cfg.training.epochs == 2


@pytest.mark.parametrize(("family", "extra"), [("dcgan", ["--loss", "hinge"]), ("wgan-gp", ["--n-critic", "2"])])
def test_spectral_norm_discriminator_trains_and_resumes(tmp_path, tiny_args, family, extra, capsys):
    out, run = tmp_path / "sn", tmp_path / "run"
    base = ["train", "--family", family, "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--spectral-norm", *extra, *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    cfg = read_config(out)
    assert cfg.training.options["spectral_norm"] is True and cfg.training.epochs == 2
    no_sn = [a for a in base if a != "--spectral-norm"]
    assert main([*no_sn, "--epochs", "3", "--resume"]) == 2  # the saved D has another architecture
    assert "spectral_norm=True" in capsys.readouterr().err


# Two steps: the gan objective takes Q's loss in D's and G's half of each (4); WGAN-GP in each critic
# step and in G's step, which comes every --n-critic 2 steps (2 + 1).
@pytest.mark.parametrize(("family", "extra", "q_losses"),
                         [("dcgan", [], 4), ("wgan-gp", ["--n-critic", "2"], 3)])
def test_infogan_code_is_learned_by_d_and_g_from_gs_own_latents(tmp_path, tiny_args, monkeypatch, family, extra,
                                                                q_losses, capsys):
    """--latent-categories K: every Q loss is taken against the codes of the latents G was given (D's on
    generated images only; G's too — WGAN-GP's on its generator steps); the run resumes; the checkpoint
    generator reads its code; and the discriminator cannot be swapped on resume."""
    from training import losses
    from training.models.dcgan import latent_code

    drawn: list[torch.Tensor] = []
    real_z = Objective.latent
    monkeypatch.setattr(Objective, "latent", lambda self, b: drawn.append(real_z(self, b)) or drawn[-1])
    targets: list[torch.Tensor] = []
    real_loss = losses.class_loss
    monkeypatch.setattr(losses, "class_loss", lambda logits, t: targets.append(t) or real_loss(logits, t))
    out, run = tmp_path / "info", tmp_path / "run"
    base = ["train", "--family", family, "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--latent-categories", "4", "--info-weight", "0.5", *extra, *tiny_args]
    assert main([*base, "--epochs", "1", "--max-steps", "2"]) == 0
    assert len(targets) == q_losses
    codes = [latent_code(z, 4) for z in drawn]
    assert all(any(torch.equal(t, c) for c in codes) for t in targets)
    cfg = read_config(out)
    assert cfg.generator.kwargs["categories"] == 4 and cfg.training.options["info_weight"] == 0.5
    g, _ = load_generator(out)
    assert g(torch.randn(3, 8)).shape == (3, 1, 28, 28)
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    no_code = [a for a in base if a not in ("--latent-categories", "4", "--info-weight", "0.5")]
    assert main([*no_code, "--epochs", "3", "--resume"]) == 2
    assert "latent_categories=4" in capsys.readouterr().err


def test_self_conditioned_d_judges_reals_by_cluster_and_fakes_by_code(tmp_path, tiny_args, monkeypatch, capsys):
    """--self-condition: every real batch reaches the step with its images' k-means clusters (not their
    classes), D is told each fake's latent code, there is no Q loss, the clusters survive a resume, and
    the generator that ships is unconditional."""
    from training import losses
    from training.loop import Trainer
    from training.models.dcgan import DCDiscriminator, latent_code

    seen: list[torch.Tensor] = []
    real_step = Trainer.step
    monkeypatch.setattr(Trainer, "step", lambda self, x, y: seen.append(y) or real_step(self, x, y))
    drawn: list[torch.Tensor] = []
    real_z = Objective.latent
    monkeypatch.setattr(Objective, "latent", lambda self, b: drawn.append(real_z(self, b)) or drawn[-1])
    told: list[torch.Tensor] = []
    real_forward = DCDiscriminator.forward
    monkeypatch.setattr(DCDiscriminator, "forward", lambda self, x, labels=None: told.append(labels)
                        or real_forward(self, x, labels))
    monkeypatch.setattr(losses, "class_loss", lambda *a: pytest.fail("no Q head to train"))
    out, run = tmp_path / "sc", tmp_path / "run"
    base = ["train", "--family", "dcgan", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--latent-categories", "4", "--self-condition", *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0  # 96 images, batches of 16: every image once
    clusters = torch.load(run / "state.pt", weights_only=True)["clusters"]
    assert torch.bincount(torch.cat(seen)).tolist() == [24] * 4 == torch.bincount(clusters).tolist()
    # (the synthetic set has 3 classes of 32: these are not its labels)
    codes = [latent_code(z, 4) for z in drawn]
    real_labels = {tuple(y.tolist()) for y in seen}
    fake_labels = [t for t in told if t is not None and tuple(t.tolist()) not in real_labels]
    assert fake_labels and all(any(torch.equal(t, c) for c in codes) for t in fake_labels)
    assert None not in told[: 3 * len(seen)]  # every D call in training got a label (grids come after)
    cfg = read_config(out)
    assert not cfg.conditional and cfg.generator.kwargs["categories"] == 4
    assert cfg.training.options["self_condition"] is True
    seen.clear()
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    assert torch.equal(torch.load(run / "state.pt", weights_only=True)["clusters"], clusters)
    assert torch.bincount(torch.cat(seen)).tolist() == [24] * 4
    no_sc = [a for a in base if a != "--self-condition"]
    assert main([*no_sc, "--epochs", "3", "--resume"]) == 2
    assert "self_condition=True" in capsys.readouterr().err


def test_self_conditioned_wgan_gp_pairs_each_real_with_a_fake_of_its_cluster(tmp_path, tiny_args, monkeypatch,
                                                                            capsys):
    """--family wgan-gp --self-condition: in each critic step the fakes' codes are the real batch's
    clusters, so real, fake and the penalty's interpolate between them are judged with one label each
    (the critic's one pass gets the clusters three times); the generator step tells the critic each
    fake's own code; there is no Q loss; the clusters survive a resume, which cannot drop the option."""
    from training import losses
    from training.loop import Trainer
    from training.models.dcgan import DCDiscriminator, DCGenerator, latent_code

    # per step: (clusters of the real batch, labels of each critic call, code of each latent G got)
    steps: list[tuple[torch.Tensor, list[torch.Tensor | None], list[torch.Tensor]]] = []
    real_step = Trainer.step

    def step(self, x, y):
        steps.append((y.cpu(), [], []))
        return real_step(self, x, y)

    real_d, real_g = DCDiscriminator.forward, DCGenerator.forward

    def d_forward(self, x, labels=None):
        if steps:
            steps[-1][1].append(None if labels is None else labels.cpu())
        return real_d(self, x, labels)

    def g_forward(self, z, labels=None):
        if steps:
            steps[-1][2].append(latent_code(z, 4).cpu())
        return real_g(self, z, labels)

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr(DCDiscriminator, "forward", d_forward)
    monkeypatch.setattr(DCGenerator, "forward", g_forward)
    monkeypatch.setattr(losses, "class_loss", lambda *a: pytest.fail("no Q head to train"))
    out, run = tmp_path / "sc", tmp_path / "run"
    base = ["train", "--family", "wgan-gp", "--n-critic", "2", "--dataset", "synthetic", "--out", str(out),
            "--run-dir", str(run), "--latent-categories", "4", "--self-condition", *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0  # 96 images, batches of 16: 6 steps
    clusters = torch.load(run / "state.pt", weights_only=True)["clusters"]
    assert len(steps) == 6
    assert torch.bincount(torch.cat([y for y, _, _ in steps])).tolist() == [24] * 4 == torch.bincount(clusters).tolist()
    for i, (y, told, codes) in enumerate(steps):
        assert torch.equal(codes[0], y)  # the critic step's fakes: each with its real partner's cluster
        assert told[0] is not None and torch.equal(told[0], y.repeat(3))  # real, fake, interpolate in one pass
        if i % 2 == 1:  # every --n-critic'th step also trains G: the critic judges its fakes by their own codes
            assert told[1] is not None and torch.equal(told[1], codes[1])
    assert [len(told) for _, told, _ in steps[:-1]] == [1, 2] * 2 + [1]
    cfg = read_config(out)
    assert not cfg.conditional and cfg.generator.kwargs["categories"] == 4
    g, _ = load_generator(out)
    assert g(torch.randn(3, 8)).shape == (3, 1, 28, 28)  # unconditional to its users
    steps.clear()
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    assert torch.equal(torch.load(run / "state.pt", weights_only=True)["clusters"], clusters)
    no_sc = [a for a in base if a != "--self-condition"]
    assert main([*no_sc, "--epochs", "3", "--resume"]) == 2
    assert "self_condition=True" in capsys.readouterr().err


def test_recluster_every_moves_the_reals_to_clusters_found_on_d_features(tmp_path, tiny_args, monkeypatch, capsys):
    """--recluster-every 1: from the second epoch on, every real image reaches D with the cluster the last
    re-clustering gave it (equal sizes), measuring D's features leaves its buffers as they were, the
    clusters are saved for a resume, and a resume cannot switch re-clustering off."""
    from training.data import load_dataset, to_float
    from training.loop import Trainer

    data = load_dataset("synthetic", "train", 28, 1, None, 96)
    flat = to_float(data.images).flatten(1)
    seen: list[tuple[int, torch.Tensor]] = []  # (clustering it came after, labels of the batch's images)
    rounds: list[torch.Tensor] = []
    real_step = Trainer.step

    def step(self, x, y):
        idx = [int((flat == row).all(1).nonzero()[0]) for row in x.flatten(1)]
        assert torch.equal(y.cpu(), self.objective.clusters[idx])  # each image with its current cluster
        seen.append((len(rounds), y.cpu()))
        return real_step(self, x, y)

    from training.objectives.gan import Discriminated

    real_recluster = Discriminated.recluster

    def recluster(self, images):
        before = [b.clone() for b in self.d_raw.buffers()]
        moved = real_recluster(self, images)
        assert before and all(torch.equal(a, b) for a, b in zip(before, self.d_raw.buffers(), strict=True))
        rounds.append(self.clusters.clone())
        return moved

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr(Discriminated, "recluster", recluster)
    out, run = tmp_path / "sc", tmp_path / "run"
    base = ["train", "--family", "dcgan", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--latent-categories", "4", "--self-condition", "--recluster-every", "1", *tiny_args]
    assert main([*base, "--epochs", "3"]) == 0
    assert len(rounds) == 2  # before epochs 2 and 3, not before the first (D has learnt nothing yet)
    assert all(torch.bincount(r).tolist() == [24] * 4 for r in rounds)
    assert {n for n, _ in seen} == {0, 1, 2}
    assert torch.equal(torch.load(run / "state.pt", weights_only=True)["clusters"], rounds[-1])
    assert read_config(out).training.options["recluster_every"] == 1
    rounds.clear()
    assert main([*base, "--epochs", "4", "--resume"]) == 0
    assert len(rounds) == 1 and torch.load(run / "state.pt", weights_only=True)["clusters"].tolist() == \
        rounds[0].tolist()
    i = base.index("--recluster-every")
    no_rc = base[:i] + base[i + 2:]
    assert main([*no_rc, "--epochs", "5", "--resume"]) == 2
    assert "recluster_every=1" in capsys.readouterr().err


DDP_JOBS = 3  # two-process jobs started at once: with a busy loop beside them, 7 busy processes on the cores


@pytest.mark.slow
def test_two_process_gloo_ddp_writes_a_valid_checkpoint(tmp_path, tiny_args):
    """torchrun jobs of two gloo processes each, several at once beside a busy loop (a loaded machine, where a
    rank once aborted at exit after the checkpoint was written): every job exits 0 with a valid checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def job(i: int) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training",
               "train", "--family", "cgan", "--dataset", "synthetic", "--epochs", "2",
               "--out", str(tmp_path / f"ddp{i}"), "--run-dir", str(tmp_path / f"run{i}"), *tiny_args]
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        jobs = [job(i) for i in range(DDP_JOBS)]
        logs = [p.communicate(timeout=300)[0] for p in jobs]
    finally:
        burner.kill()
        burner.wait()
    for i, (p, log) in enumerate(zip(jobs, logs, strict=True)):
        assert p.returncode == 0, f"job {i}: " + log
        assert "terminate called" not in log, log
        _, cfg = load_generator(tmp_path / f"ddp{i}")
        assert cfg.training.world_size == 2
        assert cfg.training.command.startswith("torchrun --nproc_per_node=2 -m training train")
        # Each rank trains on its own half of the data; together they see the whole epoch.
        train_len = cfg.dataset.num_images
        assert cfg.training.images_seen == 2 * ((train_len // 2) // 16) * 16 * 2
        assert json.loads((tmp_path / f"run{i}" / "options.json").read_text())["family"] == "cgan"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_resume_state(tmp_path, tiny_args, signum, code):
    """Ctrl-C, and SIGTERM — what `kill`, container runtimes, Slurm and torchrun stop with; a job started
    with `nohup … &` from a script ignores SIGINT — both stop a training with its resume state saved."""
    out, run = tmp_path / "ck", tmp_path / "run"
    args = ["train", "--family", "cgan", "--dataset", "synthetic", "--epochs", "500", "--out", str(out),
            "--run-dir", str(run), *tiny_args, "--synthetic-size", "300"]
    log = tmp_path / "train.log"
    proc = _popen(args, log)
    deadline = time.time() + 240
    while not (run / "state.pt").exists():
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail("training ended early: " + log.read_text())
        time.sleep(0.02)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == code
    text = log.read_text()
    assert "interrupted: resume state saved" in text and "Traceback" not in text
    state = torch.load(run / "state.pt", weights_only=True)
    assert 1 <= state["epoch"] < 500 and state["step"] > 0
    load_generator(out)


def test_keep_best_keeps_the_best_evaluated_weights(tmp_path, tiny_args, monkeypatch):
    """--keep-best: --out holds the weights of the best evaluation so far; the history is the whole run's.
    The evaluations are scripted here (the metric itself is tested in tests/evaluation)."""
    import training.outputs as outputs
    from training.checkpoint import update_metrics

    scores = iter([0.30, 0.60, 0.40, 0.70])
    weights: dict[int, str] = {}

    def scripted(cfg, folder, epoch, seconds, images_seen, device, conditional, evaluations, writer):
        coverage = next(scores)
        evaluations.append({"epoch": epoch, "coverage": coverage})
        update_metrics(folder, {"coverage": coverage}, "0" * 64, evaluations)
        weights[epoch] = read_config(folder).generator_sha256

    monkeypatch.setattr(outputs, "evaluate_during_training", scripted)
    out, run = tmp_path / "ck", tmp_path / "run"
    base = ["train", "--family", "dcgan", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--eval-every", "1", "--keep-best", "coverage", *tiny_args]
    assert main([*base, "--epochs", "3"]) == 0
    cfg = read_config(out)
    assert cfg.training.epochs == 2 and cfg.metrics["coverage"] == 0.60  # epoch 3 measured worse
    assert cfg.generator_sha256 == weights[2] and len(set(weights.values())) == 3
    assert [e["epoch"] for e in cfg.training.evaluations] == [1, 2, 3]
    load_generator(out)  # the kept weights load (config and weights agree)
    assert sorted(p.name for p in (run / "grids").iterdir())[-1] == "epoch_0003.png"

    # Resuming goes on from the latest weights (epoch 3), and a better evaluation replaces the kept one.
    assert main([*base, "--epochs", "4", "--resume"]) == 0
    cfg = read_config(out)
    assert cfg.training.epochs == 4 and cfg.metrics["coverage"] == 0.70 and cfg.generator_sha256 == weights[4]
    assert [e["epoch"] for e in cfg.training.evaluations] == [1, 2, 3, 4]
    assert main([*base, "--epochs", "4", "--resume"]) == 0  # nothing left to train: the best stays
    assert read_config(out).generator_sha256 == weights[4]


def test_keep_best_leaves_another_runs_checkpoint_alone_until_beaten(tmp_path, tiny_args, monkeypatch):
    """A second recipe trained with --keep-best into a shipped checkpoint's folder (its own run folder)
    must not rewrite that checkpoint's config — weights from one run with another run's history —
    while it measures worse; once better, it replaces weights and history together."""
    import training.outputs as outputs
    from training.checkpoint import update_metrics

    scores = iter([0.50, 0.60, 0.30, 0.55, 0.65])

    def scripted(cfg, folder, epoch, seconds, images_seen, device, conditional, evaluations, writer):
        coverage = next(scores)
        evaluations.append({"epoch": epoch, "coverage": coverage, "run": cfg.run_dir})
        update_metrics(folder, {"coverage": coverage}, "0" * 64, evaluations)

    monkeypatch.setattr(outputs, "evaluate_during_training", scripted)
    out = tmp_path / "ck"
    common = ["train", "--family", "dcgan", "--dataset", "synthetic", "--out", str(out), "--eval-every", "1",
              "--keep-best", "coverage", *tiny_args]
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--epochs", "2"]) == 0
    shipped = (out / "config.json").read_bytes()
    assert read_config(out).metrics["coverage"] == 0.60

    b = [*common, "--run-dir", str(tmp_path / "b"), "--seed", "1"]
    assert main([*b, "--epochs", "2"]) == 0  # 0.30, 0.55: both worse than the 0.60 in --out
    assert (out / "config.json").read_bytes() == shipped
    assert main([*b, "--epochs", "3", "--resume"]) == 0  # 0.65 beats it
    cfg = read_config(out)
    assert cfg.metrics["coverage"] == 0.65 and cfg.training.options["seed"] == 1
    assert [(e["epoch"], e["run"]) for e in cfg.training.evaluations] == [(1, str(tmp_path / "b")),
                                                                          (2, str(tmp_path / "b")),
                                                                          (3, str(tmp_path / "b"))]
    load_generator(out)


def script_coverage(monkeypatch, scores: list[float]) -> None:
    """``--eval-every`` evaluations that report these coverages in turn (the metric itself is tested in
    tests/evaluation)."""
    import training.outputs as outputs
    from training.checkpoint import update_metrics

    it = iter(scores)

    def scripted(cfg, folder, epoch, seconds, images_seen, device, conditional, evaluations, writer):
        coverage = next(it)
        evaluations.append({"epoch": epoch, "coverage": coverage})
        update_metrics(folder, {"coverage": coverage}, "0" * 64, evaluations)

    monkeypatch.setattr(outputs, "evaluate_during_training", scripted)


def test_keep_best_keeps_a_changed_recipes_evaluations_out_of_the_checkpoint_until_it_wins(tmp_path, tiny_args,
                                                                                           monkeypatch):
    """The same run resumed with another recipe (here label smoothing and D's rate) that measures worse
    leaves --out's config as it was: its history must not list evaluations its recorded command did not
    make. Once the new recipe wins, weights, command and the run's whole history go in together."""
    script_coverage(monkeypatch, [0.50, 0.60, 0.30, 0.70])
    out, run = tmp_path / "ck", tmp_path / "run"
    base = ["train", "--family", "dcgan", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--eval-every", "1", "--keep-best", "coverage", *tiny_args]
    assert main([*base, "--epochs", "2"]) == 0
    shipped = (out / "config.json").read_bytes()
    other = [*base, "--resume", "--label-smoothing", "0.2", "--lr-d", "1e-4"]
    assert main([*other, "--epochs", "3"]) == 0  # 0.30: worse than 0.60
    assert (out / "config.json").read_bytes() == shipped
    assert main([*other, "--epochs", "4"]) == 0  # 0.70 wins
    cfg = read_config(out)
    assert cfg.metrics["coverage"] == 0.70 and cfg.training.options["label_smoothing"] == 0.2
    assert "--label-smoothing 0.2" in cfg.training.command
    assert [e["epoch"] for e in cfg.training.evaluations] == [1, 2, 3, 4]


def test_keep_best_an_option_the_checkpoint_predates_is_not_a_changed_recipe(tmp_path, tiny_args, monkeypatch):
    """A checkpoint written before an option existed has no entry for it: resumed with the option at its
    default, the run's worse evaluations still go into the history (the recipe is the same)."""
    script_coverage(monkeypatch, [0.60, 0.30])
    out, run = tmp_path / "ck", tmp_path / "run"
    base = ["train", "--family", "acgan", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
            "--eval-every", "1", "--keep-best", "coverage", *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    del cfg["training"]["options"]["acgan_fake_class_weight"]  # as written before the option existed
    (out / "config.json").write_text(json.dumps(cfg))
    assert main([*base, "--epochs", "2", "--resume"]) == 0  # 0.30: worse, same recipe
    assert [e["epoch"] for e in read_config(out).training.evaluations] == [1, 2]


def test_keep_best_fid_is_lower_is_better(tmp_path, tiny_args, monkeypatch):
    import training.outputs as outputs
    from training.checkpoint import update_metrics

    scores = iter([50.0, 80.0])

    def scripted(cfg, folder, epoch, seconds, images_seen, device, conditional, evaluations, writer):
        fid = next(scores)
        evaluations.append({"epoch": epoch, "fid": fid})
        update_metrics(folder, {"fid": fid}, "0" * 64, evaluations)

    monkeypatch.setattr(outputs, "evaluate_during_training", scripted)
    out = tmp_path / "ck"
    assert main(["train", "--family", "dcgan", "--dataset", "synthetic", "--out", str(out), "--run-dir",
                 str(tmp_path / "run"), "--eval-every", "1", "--keep-best", "fid", "--epochs", "2", *tiny_args]) == 0
    assert read_config(out).training.epochs == 1


def test_keep_best_min_class_accuracy_keeps_the_best_worst_class(tmp_path, tiny_args, monkeypatch):
    """--keep-best min_class_accuracy compares the worst class of accuracy_per_class — also against a
    checkpoint whose config has only the per-class numbers (as the shipped ones do)."""
    import training.outputs as outputs
    from training.checkpoint import update_metrics

    # epoch 1: worst 0.5; epoch 2: a higher mean but a worse worst class (0.3); epoch 3: worst 0.7
    per_class = iter([{"a": 0.5, "b": 0.9}, {"a": 1.0, "b": 0.3}, {"a": 0.7, "b": 0.8}])
    weights: dict[int, str] = {}

    def scripted(cfg, folder, epoch, seconds, images_seen, device, conditional, evaluations, writer):
        acc = next(per_class)
        evaluations.append({"epoch": epoch, "min_class_accuracy": min(acc.values())})
        update_metrics(folder, {"accuracy_per_class": acc}, "0" * 64, evaluations)
        weights[epoch] = read_config(folder).generator_sha256

    monkeypatch.setattr(outputs, "evaluate_during_training", scripted)
    out = tmp_path / "ck"
    base = ["train", "--family", "cgan", "--dataset", "synthetic", "--out", str(out), "--run-dir",
            str(tmp_path / "run"), "--eval-every", "1", "--keep-best", "min_class_accuracy", *tiny_args]
    assert main([*base, "--epochs", "2"]) == 0
    cfg = read_config(out)
    assert cfg.training.epochs == 1 and cfg.generator_sha256 == weights[1]
    assert main([*base, "--epochs", "3", "--resume"]) == 0
    cfg = read_config(out)
    assert cfg.training.epochs == 3 and cfg.generator_sha256 == weights[3]
    assert cfg.metrics["accuracy_per_class"] == {"a": 0.7, "b": 0.8}


def test_keep_best_value_reads_the_worst_class_or_the_metric():
    from training.options import keep_best_value

    assert keep_best_value({"accuracy_per_class": {"a": 0.9, "b": 0.4, "c": None}}, "min_class_accuracy") == 0.4
    assert keep_best_value({"accuracy_per_class": None}, "min_class_accuracy") is None
    assert keep_best_value({"coverage": 0.8}, "coverage") == 0.8 and keep_best_value({}, "fid") is None


def test_git_commit_is_dirty_for_code_changes_but_not_for_checkpoints(tmp_path):
    from training.loop import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "checkpoints" / "m").mkdir(parents=True)
    (tmp_path / "checkpoints" / "m" / "config.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "checkpoints" / "m" / "config.json").write_text('{"rewritten": true}')  # what --keep-best does
    assert git_commit(tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "-dirty"
