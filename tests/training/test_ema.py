"""The averaged generator (what is saved and served) normalises with statistics of its own weights."""

import pytest
import torch
from torch import nn

from training.checkpoint import load_generator
from training.cli import main
from training.ema import EMA
from training.models.dcgan import DCGenerator


def _bn_input_means(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None) -> list[torch.Tensor]:
    """The per-channel mean of what each batch-norm layer gets, for these inputs (train mode, no update)."""
    means: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: means.append(args[0].transpose(0, 1).flatten(1).mean(1)))
             for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        g(z, y)
    for h in hooks:
        h.remove()
    return means


@pytest.mark.parametrize("num_classes", [0, 3])
def test_standing_stats_fit_the_averages_own_weights(num_classes):
    torch.manual_seed(0)
    g = DCGenerator(z_dim=8, num_classes=num_classes, channels=1, resolution=28, ngf=8)
    ema = EMA(g, decay=0.999)
    with torch.no_grad():  # the training generator moves away from its average …
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        for _ in range(20):  # … and its running statistics follow its own activations
            g.train()(torch.randn(64, 8), torch.randint(0, 3, (64,)) if num_classes else None)
    ema.update(g, step=10**6)  # decay 0.999: the weights barely move, the statistics are copied
    z = torch.randn(4096, 8)
    y = torch.randint(0, 3, (4096,)) if num_classes else None
    truth = _bn_input_means(ema.model.train(), z, y)
    ema.model.eval()
    norms = [m for m in ema.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    copied = [m.running_mean.clone() for m in norms]
    assert max((c - t).abs().max() for c, t in zip(copied, truth, strict=True)) > 0.1  # the mismatch

    rng = torch.get_rng_state()
    ema.standing_stats(8, num_classes, torch.device("cpu"), seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded on its own: a resumed run stays exact
    assert not ema.model.training and all(m.momentum == 0.1 for m in norms)
    for m, t in zip(norms, truth, strict=True):
        assert torch.allclose(m.running_mean, t, atol=0.03)
    again = [m.running_mean.clone() for m in norms]
    ema.standing_stats(8, num_classes, torch.device("cpu"), seed=0)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(again, norms, strict=True))  # deterministic


def _mismatch(out) -> float:
    """How far the checkpoint's running means are from the means of its own batch-norm inputs."""
    torch.manual_seed(0)
    g, cfg = load_generator(out)
    norms = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    truth = _bn_input_means(g.train(), torch.randn(4096, cfg.z_dim), torch.randint(0, 6, (4096,)))
    return max(float((m.running_mean - t).abs().max()) for m, t in zip(norms, truth, strict=True))


def test_a_trained_checkpoints_statistics_are_its_own(tmp_path, tiny_args, monkeypatch):
    """End to end: the saved generator's running means are those of its own activations — and without
    the re-estimate (the copied statistics of the training generator) they are not, in the same run."""
    def train(name: str) -> float:
        out = tmp_path / name
        assert main(["train", "--family", "cgan", "--dataset", "synthetic", "--epochs", "3", "--out", str(out),
                     "--run-dir", str(tmp_path / f"{name}-run"), "--lr-g", "0.02", "--seed", "1", *tiny_args]) == 0
        return _mismatch(out)

    settled = train("settled")
    assert settled < 0.01
    monkeypatch.setattr(EMA, "standing_stats", lambda *a, **k: None)
    copied = train("copied")
    assert copied > 0.04  # (0.087 here)
