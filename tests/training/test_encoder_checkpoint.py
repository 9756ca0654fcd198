"""encoder.safetensors: the autoencoders and the VAE ship their encoder beside the decoder, read back by
``load_encoder`` (sha256 checked, safetensors only), and an encoded image addresses the served generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.checkpoint import CONFIG, ENCODER, CheckpointError, load_encoder, load_generator, read_config
from training.cli import main
from training.data import load_dataset, to_float
from training.models.expost import ExPostGenerator


def train(tmp_path: Path, tiny_args: list[str], family: str, *extra: str) -> Path:
    out = tmp_path / family
    assert main(["train", "--family", family, "--dataset", "synthetic", "--out", str(out), "--run-dir",
                 str(tmp_path / f"run-{family}"), "--epochs", "1", *tiny_args, *extra]) == 0
    return out


@pytest.mark.parametrize(("family", "output", "encoder_class"),
                         [("ae", "code", "MLPEncoder"), ("conv-ae", "code", "ConvEncoder"),
                          ("vae", "mean-logvar", "ConvEncoder")])
def test_reconstruction_families_ship_their_encoder(tmp_path, tiny_args, family, output, encoder_class):
    out = train(tmp_path, tiny_args, family)
    cfg = read_config(out)
    assert cfg.encoder is not None and cfg.encoder.output == output and cfg.encoder.class_name == encoder_class
    assert (out / ENCODER).is_file()
    g, cfg = load_generator(out)
    enc = load_encoder(out, g, cfg)
    x = to_float(load_dataset("synthetic", synthetic_size=96).images[:6])  # (6, 1, 28, 28)
    with torch.no_grad():
        z = enc(x)
        again = enc(x[:1])
        recon = g(z, None)
    assert z.shape == (6, cfg.z_dim) and torch.isfinite(z).all()
    assert torch.allclose(z[:1], again, atol=1e-5)  # deterministic and independent of the batch
    assert recon.shape == x.shape
    if family != "vae":  # an autoencoder's samples.png: rows of training images, each above its reconstructions
        grid = np.asarray(Image.open(out / "samples.png"))
        assert grid.shape[:2] == (10 * 30 + 2, 10 * 30 + 2)
        first = load_dataset("synthetic", synthetic_size=96).images[0, 0].numpy()  # (28, 28)
        assert np.array_equal(grid[2:30, 2:30] if grid.ndim == 2 else grid[2:30, 2:30, 0], first)
    # The shipped encoder is the one the run trained (its resume state's second network), weight for weight.
    trained = torch.load(tmp_path / f"run-{family}" / "state.pt", weights_only=True)["D"]
    shipped = enc.encoder.state_dict()
    assert shipped.keys() == trained.keys() and all(torch.equal(shipped[k], trained[k]) for k in trained)


def test_a_gan_has_no_encoder(tmp_path, tiny_args):
    out = train(tmp_path, tiny_args, "dcgan")
    g, cfg = load_generator(out)
    assert cfg.encoder is None and not (out / ENCODER).exists()
    with pytest.raises(CheckpointError, match="has no encoder"):
        load_encoder(out, g, cfg)


def test_a_tampered_or_missing_encoder_is_refused(tmp_path, tiny_args):
    out = train(tmp_path, tiny_args, "conv-ae")
    g, cfg = load_generator(out)
    data = bytearray((out / ENCODER).read_bytes())
    data[-1] ^= 1
    (out / ENCODER).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder(out, g, cfg)
    (out / ENCODER).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_encoder(out, g, cfg)


def test_an_encoder_spec_of_another_architecture_is_refused(tmp_path, tiny_args):
    out = train(tmp_path, tiny_args, "conv-ae")
    raw = json.loads((out / CONFIG).read_text())
    raw["encoder"]["kwargs"]["width"] = 16
    (out / CONFIG).write_text(json.dumps(raw))
    g, cfg = load_generator(out)
    with pytest.raises(CheckpointError, match="do not match"):
        load_encoder(out, g, cfg)


def test_an_encoded_z_decodes_the_vae_mean_through_the_mixture(tmp_path, tiny_args):
    out = train(tmp_path, tiny_args, "vae", "--expost-gmm", "4")
    g, cfg = load_generator(out)
    assert isinstance(g, ExPostGenerator) and cfg.z_dim == 9
    enc = load_encoder(out, g, cfg)
    x = to_float(load_dataset("synthetic", synthetic_size=96).images[:32])
    with torch.no_grad():
        mean = enc.codes(x)  # (32, 8) the encoder's μ(x)
        z = enc(x)  # (32, 9)
        assert torch.allclose(g.codes(z), mean, atol=1e-4)  # the mixture maps z back onto μ(x)
        assert torch.allclose(g(z), g.decoder(mean, None), atol=1e-4)


def test_latents_of_inverts_codes_and_picks_the_likely_component():
    g = ExPostGenerator({"class": "DCGenerator", "kwargs": {"z_dim": 2, "num_classes": 0, "channels": 1,
                                                            "resolution": 28, "ngf": 4}}, 2)
    covs = torch.stack([torch.eye(2), torch.tensor([[2.0, 0.5], [0.5, 1.0]])]).double()
    g.set_mixture(torch.tensor([0.3, 0.7]).double(), torch.tensor([[-6.0, 0.0], [6.0, 1.0]]).double(), covs)
    codes = torch.tensor([[-5.5, 0.3], [6.5, 0.0], [7.0, 2.0]])
    z = g.latents_of(codes)
    assert g.component(z).tolist() == [0, 1, 1]
    assert torch.allclose(g.codes(z), codes, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        g.latents_of(torch.zeros(3, 3))


def test_an_encoder_trained_for_a_frozen_decoder_ships_beside_it_unchanged(tmp_path, tiny_args):
    """--freeze-generator --init-g-from: only the encoder learns; the checkpoint's generator (weights,
    batch-norm statistics, ex-post mixture) is the given one, byte for byte, and it records where it came from."""
    source = train(tmp_path, tiny_args, "vae", "--expost-gmm", "4")
    before = read_config(source)
    old_encoder = (source / ENCODER).read_bytes()
    out = tmp_path / "refit"
    assert main(["train", "--family", "vae", "--dataset", "synthetic", "--out", str(out), "--run-dir",
                 str(tmp_path / "run-refit"), "--epochs", "1", *tiny_args, "--expost-gmm", "4", "--init-g-from",
                 str(source), "--freeze-generator", "--seed", "5"]) == 0
    after = read_config(out)
    assert after.generator_sha256 == before.generator_sha256 and after.generator == before.generator
    assert after.encoder is not None and (out / ENCODER).read_bytes() != old_encoder
    assert after.training.init_g_from is not None and after.training.init_g_from.generator_sha256 == \
        before.generator_sha256
    g, cfg = load_generator(out)
    enc = load_encoder(out, g, cfg)
    x = to_float(load_dataset("synthetic", synthetic_size=96).images[:4])
    with torch.no_grad():
        assert enc(x).shape == (4, 9)


def test_freeze_generator_needs_a_decoder_and_an_autoencoder_family(tmp_path, tiny_args, capsys):
    base = ["train", "--dataset", "synthetic", "--out", str(tmp_path / "x"), *tiny_args, "--freeze-generator"]
    with pytest.raises(SystemExit):
        main([*base, "--family", "vae"])
    assert "--init-g-from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--family", "dcgan", "--init-g-from", str(tmp_path)])
    assert "--freeze-generator is an option of --family" in capsys.readouterr().err
    source = train(tmp_path, tiny_args, "vae", "--expost-gmm", "4")
    capsys.readouterr()
    assert main([*base, "--family", "vae", "--init-g-from", str(source), "--expost-gmm", "3"]) == 2
    assert "components" in capsys.readouterr().err
