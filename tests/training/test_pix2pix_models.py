"""The pix2pix networks (U-Net generator, PatchGAN discriminator) and translators in the checkpoint contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.translator_fixture import translator_config, translator_kwargs, write_translator
from training.checkpoint import CheckpointError, load_generator, read_config, save_checkpoint
from training.models import build_generator
from training.models.pix2pix import PatchDiscriminator, UNetGenerator, patch_layers, receptive_field, unet_depth


@pytest.mark.parametrize(("resolution", "in_channels", "channels"), [(32, 1, 1), (32, 1, 3), (64, 1, 3), (64, 3, 1)])
def test_unet_and_patchgan_shapes(resolution, in_channels, channels):
    g = UNetGenerator(in_channels, channels, resolution, ngf=4)
    x = torch.rand(3, in_channels, resolution, resolution) * 2 - 1
    y = g(x)
    assert y.shape == (3, channels, resolution, resolution)
    assert y.min() >= -1 and y.max() <= 1
    d = PatchDiscriminator(in_channels, channels, ndf=4, n_layers=patch_layers(resolution))
    logits = d(x, y)
    side = resolution // 2 ** patch_layers(resolution) - 2  # stride-2 layers, then two 4×4 stride-1 convs
    assert logits.shape == (3, side, side)


def test_unet_depth_reaches_1x1_and_the_bottleneck_sees_the_whole_image():
    assert [unet_depth(r) for r in (32, 64, 256)] == [5, 6, 8]
    torch.manual_seed(0)
    g = UNetGenerator(1, 1, 32, ngf=4).eval()
    x = (torch.rand(1, 1, 32, 32) * 2 - 1).requires_grad_(True)
    g(x)[0, 0, 0, 0].backward()  # one output pixel in the corner depends on the far corner's input
    assert x.grad is not None and x.grad[0, 0, -1, -1] != 0


def test_skip_connections_carry_the_input_through():
    """The outermost skip joins the first encoder map to the last decoder layer: cut it and the output
    changes (the skips are used, not only the bottleneck)."""
    torch.manual_seed(0)
    g = UNetGenerator(1, 1, 32, ngf=4).eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        full = g(x)
        last = g.up[-1][1]
        assert isinstance(last, nn.ConvTranspose2d) and last.in_channels == 2 * 4  # [decoder, skip]
        last.weight[4:].zero_()  # the weights that read the skip
        assert not torch.allclose(g(x), full)


def test_receptive_field_is_the_papers_70_at_three_layers():
    assert [receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
    assert [patch_layers(r) for r in (32, 64, 256)] == [1, 2, 3]


def test_dropout_is_the_noise_in_training_and_off_in_eval():
    torch.manual_seed(0)
    g = UNetGenerator(1, 1, 32, ngf=4)
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 3
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    g.train()
    assert not torch.equal(g(x), g(x))  # the noise: dropout
    g.eval()
    with torch.no_grad():
        assert torch.equal(g(x), g(x))
        assert torch.allclose(g(x[:1]), g(x)[:1], atol=1e-6)  # one image alone = inside a batch


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"resolution": 28}, "power-of-two"), ({"resolution": 96}, "power-of-two"), ({"dropout": 1.0}, "dropout"),
    ({"dropout_layers": 5}, "dropout_layers"),
])
def test_bad_unet_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetGenerator(**{"in_channels": 1, "channels": 1, "resolution": 32, "ngf": 4, **kwargs})


def test_wrong_input_shape_is_a_clear_error():
    g = UNetGenerator(1, 3, 32, ngf=4)
    with pytest.raises(ValueError, match=r"expected input \(B, 1, 32, 32\)"):
        g(torch.zeros(1, 3, 32, 32))


def test_translator_checkpoint_round_trip(tmp_path: Path):
    folder = write_translator(tmp_path)
    g, cfg = load_generator(folder)
    assert cfg.translator and cfg.input is not None and cfg.input.transform == "edges"
    assert (cfg.input.channels, cfg.input.height, cfg.input.width) == (1, 32, 32)
    assert cfg.z_dim == 0 and not cfg.sampleable and not g.training
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        y = g(x)
    assert y.shape == (2, 3, 32, 32) and y.min() >= -1 and y.max() <= 1
    assert y.std() > 0.05  # widened weights: outputs vary visibly
    ref = build_generator("UNetGenerator", translator_kwargs()).eval()
    ref.load_state_dict(g.state_dict())
    with torch.no_grad():
        assert torch.equal(ref(x), y)


def test_other_checkpoints_are_not_translators(tmp_path: Path):
    from tests.app.conftest import write_cgan

    cfg = read_config(write_cgan(tmp_path))
    assert cfg.input is None and not cfg.translator


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update(z_dim=4), "translator"),
    (lambda c: c.update(sampleable=True), "translator"),
    (lambda c: c["input"].update(transform="blur"), "input.transform"),
    (lambda c: c["input"].update(channels=3), "in_channels"),
    (lambda c: c.pop("input"), "z_dim must be ≥ 1"),
])
def test_invalid_translator_configs_are_refused(tmp_path: Path, edit, message):
    folder = write_translator(tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    edit(raw)
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=message):
        load_generator(folder)


def test_translator_config_must_describe_the_weights(tmp_path: Path):
    g = UNetGenerator(1, 1, 32, ngf=4)
    cfg = translator_config("t", translator_kwargs(channels=1))
    cfg["generator"]["kwargs"]["ngf"] = 8
    save_checkpoint(tmp_path / "t", g, cfg)
    with pytest.raises(CheckpointError, match="do not match"):
        load_generator(tmp_path / "t")


@pytest.mark.parametrize(("resolution", "channels"), [(32, 1), (64, 3)])
def test_nearest_conv_decoder_has_no_transposed_convs(resolution, channels):
    g = UNetGenerator(1, channels, resolution, ngf=4, upsample="nearest-conv")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert sum(isinstance(m, nn.Upsample) for m in g.modules()) == unet_depth(resolution)
    y = g(torch.rand(2, 1, resolution, resolution) * 2 - 1)
    assert y.shape == (2, channels, resolution, resolution) and y.abs().max() <= 1
    with pytest.raises(ValueError, match="upsample"):
        UNetGenerator(1, 1, 32, ngf=4, upsample="bilinear")


def test_the_family_passes_upsample_only_when_it_is_not_the_default():
    from training.models import ArchOptions, get_family

    def kwargs(upsample: str) -> dict:
        o = ArchOptions(z_dim=8, num_classes=0, channels=3, resolution=64, width=4, upsample=upsample,
                        bn="before-act", input_channels=1)
        return get_family("pix2pix").build(o)[1]

    assert "upsample" not in kwargs("convT") and kwargs("nearest-conv")["upsample"] == "nearest-conv"
