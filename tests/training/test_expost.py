"""--expost-gmm: a VAE decoder sampled through a Gaussian mixture fitted to its encoder's codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.checkpoint import WEIGHTS, load_generator, read_config
from training.cli import main
from training.expost import encode_means, fit_mixture
from training.latent import latents
from training.models.expost import ExPostGenerator

DECODER = {"class": "DCGenerator", "kwargs": {"z_dim": 3, "num_classes": 0, "channels": 1, "resolution": 28,
                                              "ngf": 4, "upsample": "convT", "bn": "before-act"}}
WEIGHTS_3 = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
MEANS_3 = torch.tensor([[-6.0, 0.0, 1.0], [0.0, 4.0, -2.0], [5.0, -3.0, 0.5]], dtype=torch.float64)


def _covariances() -> torch.Tensor:
    a = torch.tensor([[[1.0, 0.5, 0.0], [0.0, 0.3, 0.2], [0.1, 0.0, 0.7]],
                      [[0.4, 0.0, 0.0], [0.3, 1.2, 0.0], [0.0, -0.5, 0.2]],
                      [[2.0, 0.1, 0.3], [0.0, 0.1, 0.0], [0.0, 0.0, 0.9]]], dtype=torch.float64)
    return a @ a.transpose(1, 2) + 0.05 * torch.eye(3, dtype=torch.float64)


def _mixture_generator() -> ExPostGenerator:
    g = ExPostGenerator(DECODER, 3)
    g.set_mixture(WEIGHTS_3, MEANS_3, _covariances())
    return g.eval()


def test_the_prior_is_mapped_onto_the_mixture():
    """z ~ N(0, I) of latent_dim + 1 entries → codes distributed as the mixture: each component is picked as
    often as its weight, and its codes have its mean and covariance."""
    g = _mixture_generator()
    z = torch.randn(200_000, g.z_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k, codes = g.component(z), g.codes(z)
    freq = torch.bincount(k, minlength=3).double() / len(k)
    assert torch.allclose(freq, WEIGHTS_3, atol=0.005)
    for c in range(3):
        x = codes[k == c]
        assert torch.allclose(x.mean(0), MEANS_3[c], atol=0.03)
        assert torch.allclose(torch.cov(x.T), _covariances()[c], atol=0.05)


def test_a_seed_fixes_the_image_whatever_the_batch():
    g = _mixture_generator()
    z = latents(list(range(7)), g.z_dim)
    with torch.no_grad():
        together = g(z)
        alone = torch.cat([g(z[i:i + 1]) for i in range(7)])
    assert torch.equal(g.codes(z), torch.cat([g.codes(z[i:i + 1]) for i in range(7)]))
    assert torch.allclose(together, alone, atol=1e-6)


def test_the_first_entry_picks_the_component_by_the_cumulative_weights():
    g = _mixture_generator()
    # Φ⁻¹ of 0.1, 0.3, 0.69, 0.71, 0.99: below 0.2 → component 0, below 0.7 → 1, else 2.
    z0 = torch.special.ndtri(torch.tensor([0.1, 0.3, 0.69, 0.71, 0.99], dtype=torch.float64))
    z = torch.cat([z0[:, None], torch.zeros(5, 3, dtype=torch.float64)], 1)
    assert g.component(z).tolist() == [0, 1, 1, 2, 2]
    assert torch.allclose(g.codes(z), MEANS_3[[0, 1, 1, 2, 2]])  # z[1:] = 0: the component's mean


@pytest.mark.parametrize(("weights", "means", "covs", "message"), [
    (torch.ones(2) / 2, MEANS_3, _covariances(), "needs weights"),
    (torch.tensor([0.5, 0.6, 0.1]), MEANS_3, _covariances(), "sum to 1"),
    (torch.tensor([-0.1, 0.6, 0.5]), MEANS_3, _covariances(), "non-negative"),
    (WEIGHTS_3, MEANS_3, -_covariances(), "positive definite"),
])
def test_set_mixture_refuses_what_is_not_a_mixture(weights, means, covs, message):
    g = ExPostGenerator(DECODER, 3)
    with pytest.raises(ValueError, match=message):
        g.set_mixture(weights, means, covs)


def test_it_takes_no_labels_and_checks_the_latent_size():
    g = _mixture_generator()
    with pytest.raises(ValueError, match="unconditional"):
        g(torch.zeros(1, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        g(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unconditional"):
        ExPostGenerator({**DECODER, "kwargs": {**DECODER["kwargs"], "num_classes": 2}}, 3)


def test_fit_mixture_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    a = rng.normal([-5.0, 0.0], [1.0, 0.5], size=(3000, 2))
    b = rng.normal([4.0, 3.0], [0.3, 2.0], size=(1000, 2))
    weights, means, covs = fit_mixture(np.concatenate([a, b]), 2, seed=0)
    order = torch.argsort(means[:, 0])
    assert torch.allclose(weights[order], torch.tensor([0.75, 0.25], dtype=torch.float64), atol=0.01)
    assert torch.allclose(means[order], torch.tensor([[-5.0, 0.0], [4.0, 3.0]], dtype=torch.float64), atol=0.1)
    assert torch.allclose(torch.diagonal(covs[order], dim1=1, dim2=2),
                          torch.tensor([[1.0, 0.25], [0.09, 4.0]], dtype=torch.float64), rtol=0.15)
    with pytest.raises(ValueError, match="at least as many codes"):
        fit_mixture(a[:3], 4, seed=0)


def test_vae_run_with_expost_gmm_ships_the_mixture_sampler(tmp_path, tiny_args):
    out, run = tmp_path / "vae-gmm", tmp_path / "run"
    base = ["train", "--family", "vae", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run), *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0
    plain = read_config(out)
    assert plain.generator.class_name == "DCGenerator" and plain.z_dim == 8
    plain_weights = load_file(out / WEIGHTS)

    # The finished run resumed with the flag: no training step, the same decoder, now inside the mixture.
    assert main([*base, "--epochs", "1", "--resume", "--expost-gmm", "4"]) == 0
    g, cfg = load_generator(out)
    assert isinstance(g, ExPostGenerator) and cfg.z_dim == 9 and g.components == 4
    assert cfg.generator.kwargs == {"decoder": {"class": plain.generator.class_name,
                                                "kwargs": plain.generator.kwargs}, "components": 4}
    assert "--expost-gmm 4" in cfg.training.command and cfg.training.options["expost_gmm"] == 4
    assert "Gaussian mixture" in cfg.description
    weights = load_file(out / WEIGHTS)
    convs = [k for k in plain_weights if k.endswith("weight") and plain_weights[k].ndim == 4]
    assert convs and all(torch.equal(weights[f"decoder.{k}"], plain_weights[k]) for k in convs)

    # The mixture is the one fitted to the encoder's codes of the training images: its weighted mean is theirs.
    from training.data import load_dataset
    from training.models.encoders import ConvEncoder

    state = torch.load(run / "state.pt", weights_only=True)
    encoder = ConvEncoder(1, 28, 8, 16)
    encoder.load_state_dict(state["D"])
    codes = encode_means(encoder, load_dataset("synthetic", synthetic_size=96).images, 8, torch.device("cpu"))
    assert torch.allclose(g.weights @ g.means, torch.from_numpy(codes).float().mean(0), atol=1e-3)

    with torch.no_grad():
        a, b = g(latents([5, 6], 9)), g(latents([5], 9))
    assert a.shape == (2, 1, 28, 28) and torch.isfinite(a).all() and torch.allclose(a[:1], b, atol=1e-6)
    assert main(["sample", str(out), "--seed", "3", "--n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_expost_gmm_needs_the_vae_family(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--family", "dcgan", "--dataset", "synthetic", "--out", "x", "--expost-gmm", "10"])
    assert e.value.code == 2
    assert "--expost-gmm" in capsys.readouterr().err


def test_more_components_than_images_is_refused_before_training(tmp_path, tiny_args, capsys):
    out, run = tmp_path / "vae-gmm", tmp_path / "run"
    assert main(["train", "--family", "vae", "--dataset", "synthetic", "--out", str(out), "--run-dir", str(run),
                 *tiny_args, "--epochs", "1", "--expost-gmm", "97"]) == 2  # tiny_args: 96 synthetic images
    err = capsys.readouterr().err
    assert "--expost-gmm 97" in err and "96 images" in err
    assert not out.exists() and not (run / "state.pt").exists()  # refused before a step was taken
