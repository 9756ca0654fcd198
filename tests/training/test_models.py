import dataclasses

import pytest
import torch
from torch import nn

from training.models import ArchOptions, build_generator, family_names, get_family
from training.models.common import RESOLUTIONS
from training.models.dcgan import DCDiscriminator, DCGenerator, with_minibatch_std

FAMILIES = [f for f in family_names() if not get_family(f).translator]  # (pix2pix: test_pix2pix_models.py)


def test_every_family_the_design_names_is_registered():
    assert set(family_names()) == {"mlp-gan", "dcgan", "cgan", "acgan", "wgan-gp", "vae", "ae", "conv-ae", "pix2pix"}
    assert [f for f in family_names() if get_family(f).translator] == ["pix2pix"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("resolution", "channels"), [(28, 1), (32, 3), (64, 3), (96, 1)])
def test_family_builds_with_right_shapes(family, resolution, channels):
    fam = get_family(family)
    opts = ArchOptions(z_dim=8, num_classes=4, channels=channels, resolution=resolution, width=4,
                       upsample="convT", bn="before-act")
    g_class, g_kwargs, aux = fam.build(opts)
    g = build_generator(g_class, g_kwargs)  # rebuilt from JSON-able kwargs alone
    labels = torch.tensor([0, 3, 1]) if fam.conditional else None
    x = g(torch.randn(3, 8), labels)
    assert x.shape == (3, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    if fam.objective in ("gan", "acgan", "wgan-gp"):
        out = aux(x, labels)
        if fam.objective == "acgan":
            adv, cls = out
            assert adv.shape == (3,) and cls.shape == (3, 4)
        else:
            assert out.shape == (3,)
    elif fam.objective == "vae":
        assert aux(x).shape == (3, 16)  # (mu, log σ²)
    else:
        assert aux(x).shape == (3, 8)


@pytest.mark.parametrize("upsample", ["convT", "nearest-conv"])
@pytest.mark.parametrize("bn", ["before-act", "after-act"])
def test_dcgan_switches_change_the_layers(upsample, bn):
    g = DCGenerator(z_dim=8, resolution=32, ngf=4, upsample=upsample, bn=bn)
    kinds = [type(m).__name__ for m in g.net]
    assert ("Upsample" in kinds) == (upsample == "nearest-conv")
    first_bn, first_relu = kinds.index("BatchNorm2d"), kinds.index("ReLU")
    assert (first_bn < first_relu) == (bn == "before-act")


def test_pytorch_tutorial_generator_is_one_config():
    # nz=100, ngf=64, 64×64 RGB: the tutorial's netG has exactly 3,576,704 parameters.
    g = DCGenerator(z_dim=100, channels=3, resolution=64, ngf=64)
    assert sum(p.numel() for p in g.parameters()) == 3_576_704
    assert g(torch.randn(2, 100)).shape == (2, 3, 64, 64)


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    g = DCGenerator(z_dim=100, resolution=64, ngf=32)
    conv = g.net[0].weight
    bn = g.net[1].weight
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    assert abs(bn.mean().item() - 1.0) < 0.01 and 0.01 < bn.std().item() < 0.03


def test_bad_architecture_options_are_clear_errors():
    with pytest.raises(ValueError, match="resolution must be one of"):
        DCGenerator(resolution=48)
    with pytest.raises(ValueError, match="upsample must be"):
        DCGenerator(upsample="bilinear")
    with pytest.raises(ValueError, match="bn must be"):
        DCGenerator(bn="never")
    with pytest.raises(ValueError, match="unknown family"):
        get_family("stylegan")
    with pytest.raises(ValueError, match="unknown generator class"):
        build_generator("Pickled", {})


def test_conditional_generator_demands_valid_labels():
    g = DCGenerator(z_dim=8, num_classes=3, ngf=4)
    with pytest.raises(ValueError, match="pass labels"):
        g(torch.randn(2, 8), None)
    with pytest.raises(ValueError, match="shape"):
        g(torch.randn(2, 8), torch.tensor([1]))


def test_eval_mode_output_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    g = DCGenerator(z_dim=8, num_classes=3, ngf=8).eval()
    z, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        together = g(z, y)
        alone = torch.cat([g(z[i : i + 1], y[i : i + 1]) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_resolutions_constant():
    assert RESOLUTIONS == (28, 32, 64, 96)


def test_minibatch_std_channel_is_the_mean_feature_std_over_the_batch():
    h = torch.randn(6, 3, 2, 2)
    out = with_minibatch_std(h)
    assert out.shape == (6, 4, 2, 2) and torch.equal(out[:, :3], h)
    want = h.std(dim=0, unbiased=False).mean()
    assert torch.allclose(out[:, 3], want.expand(6, 2, 2), atol=1e-6)
    same = with_minibatch_std(h[:1].expand(6, -1, -1, -1))  # a batch of identical fakes: (almost) zero
    assert same[:, 3].abs().max() < 1e-3
    assert with_minibatch_std(h[:1])[:, 3].abs().max() < 1e-3  # a batch of one


def test_with_code_gives_the_code_and_the_latent_law_given_that_code():
    """with_code: every row reads the asked-for code, only two of its first K entries trade places (a row
    that already had the code is unchanged), and the result is distributed as z ~ N(0, I) given its
    code — checked against rejection sampling: the entries' means and spreads agree."""
    from training.models.dcgan import latent_code, with_code

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(200_000, 6, generator=gen)
    code = torch.randint(0, 4, (z.shape[0],), generator=gen)
    out = with_code(z, code, 4)
    assert torch.equal(latent_code(out, 4), code)
    assert torch.equal(out[:, 4:], z[:, 4:])
    assert torch.equal(out.sort(1).values, z.sort(1).values)
    assert ((out != z).sum(1) <= 2).all()
    kept = latent_code(z, 4) == code
    assert torch.equal(out[kept], z[kept])
    for c in range(4):
        want = z[latent_code(z, 4) == c]  # rejection sampling: the latents that happen to have code c
        got = out[code == c]
        assert torch.allclose(got.mean(0), want.mean(0), atol=0.02)
        assert torch.allclose(got.std(0), want.std(0), atol=0.02)
    assert abs(float(out[code == 2][:, 2].mean()) - 1.029) < 0.02  # E[max of 4 standard normals] ≈ 1.029


def test_self_conditioned_d_takes_the_label_by_projection_when_re_clustered():
    """--recluster-every: D's pooled features (what the clusters are found on) do not see the label; its
    logit does. Without re-clustering the self-conditioned D stays the concat one (older runs resume)."""
    fam = get_family("dcgan")
    opts = ArchOptions(8, 10, 1, 28, 4, "convT", "before-act", categories=4, self_condition=True)
    _, _, concat = fam.build(opts)
    _, _, proj = fam.build(dataclasses.replace(opts, recluster=True))
    assert concat.cond == "concat" and proj.cond == "projection" and proj.cls is None
    proj.eval()
    with torch.no_grad():
        proj.embed.weight.normal_(0, 1)
    x = torch.randn(3, 1, 28, 28)
    a, b = proj(x, torch.tensor([0, 1, 2])), proj(x, torch.tensor([3, 3, 3]))
    assert a.shape == (3,) and not torch.allclose(a, b)
    assert torch.allclose(a, proj.adv(proj.features(x)).flatten()
                          + (proj.embed.weight[[0, 1, 2]] * proj.pooled_features(x)).sum(1), atol=1e-5)
    with pytest.raises(ValueError, match="label"):
        concat.pooled_features(x)


@pytest.mark.parametrize(("cond", "norm"), [("none", "batch"), ("concat", "batch"), ("class-head", "batch"),
                                            ("none", "layer")])
def test_discriminators_take_minibatch_std(cond, norm):
    d = DCDiscriminator(1, 28, 8, 4 if cond != "none" else 0, cond, norm, minibatch_std=True)
    labels = torch.tensor([0, 1, 2]) if cond != "none" else None
    out = d(torch.randn(3, 1, 28, 28), labels)
    adv = out[0] if cond == "class-head" else out
    assert adv.shape == (3,) and torch.isfinite(adv).all()
    # The same images in a batch of varied ones and in a batch of copies get different scores.
    x = torch.randn(3, 1, 28, 28)
    d.eval()
    varied = d(x, labels)
    copies = d(x[:1].expand(3, -1, -1, -1), labels[:1].expand(3) if labels is not None else None)
    varied0 = varied[0] if cond == "class-head" else varied
    copies0 = copies[0] if cond == "class-head" else copies
    assert not torch.allclose(varied0[0], copies0[0])


def test_projection_discriminator_judges_the_label_and_classifies_the_image_alone():
    torch.manual_seed(0)
    d = DCDiscriminator(1, 28, 8, 4, "projection+class-head").eval()
    with torch.no_grad():
        d.embed.weight.normal_(0, 1)  # an embedding that tells the classes apart (init is ~0)
    x = torch.randn(3, 1, 28, 28)
    adv_a, cls_a = d(x, torch.tensor([0, 1, 2]))
    adv_b, cls_b = d(x, torch.tensor([3, 3, 3]))
    assert adv_a.shape == (3,) and cls_a.shape == (3, 4)
    assert not torch.allclose(adv_a, adv_b)  # the real/fake logit depends on the label ...
    assert torch.equal(cls_a, cls_b)  # ... the class logits on the image only (no label to read off)
    # The label's part is the inner product of its embedding with the spatially pooled features.
    h = d.features(x).mean((2, 3))
    plain = d.adv(d.features(x)).flatten()
    assert torch.allclose(adv_a, plain + (d.embed.weight[[0, 1, 2]] * h).sum(1), atol=1e-5)
    with pytest.raises(ValueError, match="projection"):
        DCDiscriminator(1, 28, 8, 4, "concat+class-head")


@pytest.mark.parametrize(("cond", "norm"), [("none", "batch"), ("concat", "batch"), ("class-head", "batch"),
                                            ("none", "layer")])
def test_spectral_norm_discriminator_has_unit_spectral_norm_layers_and_no_norm_layers(cond, norm):
    torch.manual_seed(0)
    d = DCDiscriminator(1, 28, 8, 4 if cond != "none" else 0, cond, norm, spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for m in d.modules())
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    labels = torch.tensor([0, 1, 2]) if cond != "none" else None
    for _ in range(30):  # the power iteration converges as D is used in training mode
        d(torch.randn(3, 1, 28, 28), labels)
    d.eval()
    for m in convs:
        sigma = float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2))
        assert sigma == pytest.approx(1.0, abs=0.05)
    # Without it, the DCGAN init's weights have spectral norms far from 1.
    plain = DCDiscriminator(1, 28, 8, 4 if cond != "none" else 0, cond, norm)
    assert any(abs(torch.linalg.matrix_norm(m.weight.flatten(1), ord=2) - 1) > 0.3
               for m in plain.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(("channels", "k", "spectral_norm", "channels_last"),
                         [(1, 10, False, False), (3, 50, False, True), (1, 4, True, False)])
def test_factored_concat_is_the_concatenated_conv(channels, k, spectral_norm, channels_last):
    """A "concat" D computes its label maps' part of the first conv per class (the borders included):
    the same logits and gradients, for the weights and the image, as the conv over the concatenated
    input — with hard and with soft (weighted) labels."""
    torch.manual_seed(0)
    d = DCDiscriminator(channels, 28, 8, k, "concat", spectral_norm=spectral_norm)
    with torch.no_grad():
        for p in d.parameters():
            p.normal_(0, 0.2)  # away from the init's near-zero scale, so that every term matters
    d.eval()  # batch-norm and the spectral norm's power iteration frozen: both passes see the same weights
    x = torch.randn(6, channels, 28, 28)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    soft = torch.softmax(torch.randn(6, k), 1)
    for labels in (torch.randint(0, k, (6,)), soft):
        outs = []
        for factored in (True, False):
            d.factored_concat = factored
            xi = x.clone().requires_grad_(True)
            logits = d(xi, labels)
            grads = torch.autograd.grad(logits.square().sum(), [xi, *d.parameters()])
            outs.append((logits.detach(), grads))
        (a, ga), (b, gb) = outs
        assert not torch.allclose(a, a[:1].expand(6))
        for u, v in zip((a, *ga), (b, *gb), strict=True):  # equal to float32 rounding, relative to the scale
            assert float((u - v).abs().max()) <= 1e-5 * float(v.abs().max())


def test_latent_code_is_uniform_over_k_and_a_function_of_z_alone():
    from training.models.dcgan import latent_code

    z = torch.randn(20_000, 16, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(latent_code(z, 10), minlength=10).float() / len(z)
    assert counts.min() > 0.09 and counts.max() < 0.11  # 1/10 each, ± sampling noise (σ ≈ 0.002)
    assert torch.equal(latent_code(z, 10), latent_code(z.clone(), 10))
    assert torch.equal(latent_code(z[:5], 10), latent_code(z, 10)[:5])  # per row: batch-invariant


def test_generator_with_categories_reads_its_code_and_infogan_d_has_a_q_head():
    fam = get_family("dcgan")
    opts = ArchOptions(z_dim=8, num_classes=10, channels=1, resolution=28, width=4, upsample="convT",
                       bn="before-act", categories=4)
    g_class, g_kwargs, d = fam.build(opts)
    assert g_kwargs["categories"] == 4 and g_kwargs["num_classes"] == 0
    g = build_generator(g_class, g_kwargs).eval()
    first = g.net[0]
    assert first.in_channels == 8 + 4
    z = torch.zeros(2, 8)
    z[0, 1], z[1, 2] = 1.0, 1.0  # codes 1 and 2 — and nothing else differs but those two entries
    with torch.no_grad():
        nn.init.zeros_(first.weight[:8])  # the image can then depend on the one-hot code only
        x = g(z)
        z2 = z.clone()
        z2[0, 1] = 2.0  # same code, larger entry: the same image
        assert torch.equal(g(z2)[0], x[0])
    assert not torch.allclose(x[0], x[1])
    adv, q = d(x)
    assert adv.shape == (2,) and q.shape == (2, 4)
    # Without categories the kwargs are what they always were (older checkpoints rebuild as before).
    _, plain, _ = fam.build(ArchOptions(8, 10, 1, 28, 4, "convT", "before-act"))
    assert "categories" not in plain
    with pytest.raises(ValueError, match="categories"):
        DCGenerator(z_dim=8, categories=9)
