"""DiffAugment's transforms: each does what it says to every image on its own, keeps the gradient, and
a run with --diffaugment shows the discriminator augmented images only — real and fake, in D's step
and in G's."""

import pytest
import torch

from training import augment
from training.augment import diff_augment, parse_policy
from training.checkpoint import read_config
from training.cli import main


def _images(b: int = 64, c: int = 3, h: int = 16, w: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(b, c, h, w) * 2 - 1


def test_translation_shifts_each_image_by_whole_pixels_within_the_ratio():
    x = _images()
    y = augment.translation(x)
    s = 2  # 16 / 8
    shifts = set()
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
                 if torch.equal(y[i], _shifted(x[i], dy, dx))]
        assert len(found) == 1, f"image {i} is not one shift of its input"
        shifts.add(found[0])
    assert len(shifts) > 5  # each image draws its own shift


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The image moved by (−dy, −dx): output pixel (r, c) is input pixel (r + dy, c + dx), 0 outside."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    for r in range(h):
        for c in range(w):
            if 0 <= r + dy < h and 0 <= c + dx < w:
                out[:, r, c] = img[:, r + dy, c + dx]
    return out


def test_cutout_zeroes_one_square_per_image_and_leaves_the_rest():
    x = _images(b=200) * 0.5 + 0.75  # no pixel of the input is 0
    y = augment.cutout(x)
    zeroed = (y == 0).all(dim=1)  # (B, H, W)
    assert torch.equal(y[~zeroed[:, None].expand_as(y)], x[~zeroed[:, None].expand_as(x)])
    areas = zeroed.flatten(1).sum(1)
    assert areas.max() == 64 and areas.min() > 0  # an 8×8 square, partly outside the image at times
    for i in range(len(x)):  # the zeroed pixels form a rectangle (the part of the square inside)
        rows, cols = zeroed[i].nonzero(as_tuple=True)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h * w == areas[i] and h <= 8 and w <= 8
    assert len({tuple(zeroed[i].nonzero()[0].tolist()) for i in range(len(x))}) > 20  # places differ


def test_color_changes_brightness_saturation_and_contrast_per_image():
    x = _images(b=32)
    y = augment.color(x)
    assert y.shape == x.shape and not torch.allclose(x, y)
    # A grey image stays grey (saturation acts on the difference from the channel mean).
    grey = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    g = augment.color(grey)
    assert torch.allclose(g[:, 0], g[:, 1], atol=1e-6) and torch.allclose(g[:, 1], g[:, 2], atol=1e-6)
    # Per image: the mean shifts differ between images (brightness is drawn per image).
    assert (y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))).std() > 0.1


@pytest.mark.parametrize("name", list(augment.TRANSFORMS))
def test_every_transform_passes_the_gradient_to_its_input(name):
    x = _images(b=8).requires_grad_(True)
    augment.TRANSFORMS[name](x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_policy_parsing():
    assert parse_policy("") == ()
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    with pytest.raises(ValueError, match="color, translation, cutout"):
        parse_policy("flip")
    x = _images(b=2)
    assert diff_augment(x, ()) is x


@pytest.mark.parametrize(("family", "extra"), [("cgan", []), ("acgan", ["--pretrain-d-epochs", "1"]),
                                               ("wgan-gp", ["--n-critic", "1"])])
def test_the_discriminator_sees_only_augmented_images(tmp_path, tiny_args, monkeypatch, family, extra):
    """Every image that reaches D went through the policy's transforms — reals and fakes, in D's step
    and in G's (cutout's zeroed square is the mark: training images are never exactly 0 there). WGAN-GP's
    critic gets reals, fakes and their interpolates in one batch of 3 × 16: the interpolates mix two
    different squares, so only the first two thirds carry the mark."""
    from training.models.dcgan import DCDiscriminator

    marked: list[bool] = []
    forward = DCDiscriminator.forward

    def spy(self, x, *args, **kwargs):
        zero_square = (x == 0).all(dim=1).flatten(1).sum(1) >= 16  # cutout at 28×28: a 14×14 square, ≥ 4×4 inside
        marked.extend(zero_square[:32].tolist() if len(x) == 48 else zero_square.tolist())
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(DCDiscriminator, "forward", spy)
    out = tmp_path / "da"
    assert main(["train", "--family", family, "--dataset", "synthetic", "--epochs", "1", "--max-steps", "2",
                 "--out", str(out), "--run-dir", str(tmp_path / "r"), "--diffaugment", "cutout", *extra,
                 *tiny_args]) == 0
    assert marked and all(marked)
    assert read_config(out).training.options["diffaugment"] == "cutout"

    marked.clear()  # the same run without the flag: D sees the images as they are
    assert main(["train", "--family", family, "--dataset", "synthetic", "--epochs", "1", "--max-steps", "2",
                 "--out", str(tmp_path / "plain"), "--run-dir", str(tmp_path / "r2"), *extra, *tiny_args]) == 0
    assert marked and not any(marked)


def test_diffaugment_can_be_switched_on_when_a_run_resumes(tmp_path, tiny_args):
    """It changes what D sees, not the networks: a recipe option, like the learning rates."""
    base = ["train", "--family", "cgan", "--dataset", "synthetic", "--out", str(tmp_path / "o"),
            "--run-dir", str(tmp_path / "r"), *tiny_args]
    assert main([*base, "--epochs", "1"]) == 0
    assert main([*base, "--epochs", "2", "--resume", "--diffaugment", "translation,color"]) == 0
    cfg = read_config(tmp_path / "o")
    assert cfg.training.epochs == 2 and cfg.training.options["diffaugment"] == "translation,color"


def test_r1_penalty_is_the_squared_gradient_norm_at_the_real_images():
    from training.losses import r1_penalty

    x = torch.randn(4, 1, 5, 5, requires_grad=True)
    w = torch.randn(1, 1, 5, 5, requires_grad=True)  # a "discriminator" weight
    logits = (x * w).sum(dim=(1, 2, 3)) * 3  # ∇ₓ = 3w for every image: ‖3w‖²
    r1 = r1_penalty(logits, x)
    assert torch.allclose(r1, (3 * w).square().sum(), rtol=1e-5)
    r1.backward()  # the penalty trains D: its gradient reaches the weight (d/dw 9‖w‖² = 18w)
    assert w.grad is not None and torch.allclose(w.grad, 18 * w, rtol=1e-5)
    quad = x.square().sum(dim=(1, 2, 3))  # ∇ₓ = 2x: mean of ‖2x‖²
    assert torch.allclose(r1_penalty(quad, x), (2 * x).square().flatten(1).sum(1).mean(), rtol=1e-5)


@pytest.mark.parametrize("family", ["cgan", "acgan"])
def test_r1_gamma_adds_the_penalty_to_ds_loss_and_is_recorded(tmp_path, tiny_args, monkeypatch, family):
    """With --r1-gamma every D step takes R1 on the real batch; without it, no penalty is computed."""
    from training import losses

    calls: list[float] = []
    real = losses.r1_penalty
    monkeypatch.setattr(losses, "r1_penalty", lambda a, x: calls.append(1.0) or real(a, x))
    out = tmp_path / "r1"
    assert main(["train", "--family", family, "--dataset", "synthetic", "--epochs", "1", "--max-steps", "3",
                 "--out", str(out), "--run-dir", str(tmp_path / "r"), "--r1-gamma", "10", *tiny_args]) == 0
    assert len(calls) == 3
    assert read_config(out).training.options["r1_gamma"] == 10.0
    calls.clear()
    assert main(["train", "--family", family, "--dataset", "synthetic", "--epochs", "1", "--max-steps", "3",
                 "--out", str(tmp_path / "plain"), "--run-dir", str(tmp_path / "r2"), *tiny_args]) == 0
    assert calls == []
