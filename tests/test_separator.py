"""The U-Net separator: sizes against measured reference counts, fusion against a hand computation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from mars_core.config import SeparatorConfig, get_profile
from mars_core.separator import QuerySeparator, UNet, UNetBlock, multi_query_logits, new_separator

SMOKE = get_profile("smoke")


@pytest.mark.parametrize(
    "channels, params",
    [
        # parameter counts measured for the Sound-of-Pixels U-Net family (docs/environment.md section 5)
        ((64, 128, 256, 512, 512, 512, 512), 30.3e6),
        ((16, 32, 64, 128, 128, 128, 128), 1.9e6),
        ((8, 16, 32, 64, 64, 64, 64), 0.47e6),
    ],
)
def test_unet_parameter_count_matches_reference(channels, params):
    n = sum(p.numel() for p in UNet(channels, 32 if channels[0] == 64 else 16).parameters())
    assert abs(n - params) / params < 0.02


def test_block_structure_follows_sound_of_pixels():
    unet = UNet((8, 16, 32, 64, 64, 64, 64), 16)
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d)]
    downs = [c for c in convs if c.kernel_size == (4, 4)]
    ups = [c for c in convs if c.kernel_size == (3, 3)]
    assert [c.out_channels for c in downs] == [8, 16, 32, 64, 64, 64, 64]
    assert all(c.stride == (2, 2) for c in downs) and len(ups) == 7
    outer = unet.net.model
    assert isinstance(outer[0], nn.Conv2d)  # outermost down: conv only, no norm/activation
    assert isinstance(outer[-1], nn.Conv2d) and outer[-1].out_channels == 16  # K maps, no BN at the output
    inner = [m for m in unet.modules() if isinstance(m, UNetBlock)][-1]  # deepest block
    down_part = list(inner.model)[:2]
    assert isinstance(down_part[0], nn.LeakyReLU) and down_part[0].negative_slope == 0.2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in down_part)  # innermost down has no BN
    assert any(isinstance(m, nn.Upsample) and m.mode == "bilinear" for m in unet.modules())


def test_initialisation_statistics():
    torch.manual_seed(0)
    model = QuerySeparator(get_profile("cpu").separator)
    conv_w = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    bn_w = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(conv_w.std().item() - 1e-3) < 1e-4
    assert abs(bn_w.mean().item() - 1.0) < 0.01 and abs(bn_w.std().item() - 0.02) < 0.005
    assert model.query_proj.weight.std().item() < 2e-4
    assert torch.equal(model.scale, torch.ones_like(model.scale))


def _inputs(prof, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = prof.audio
    return torch.randn(batch, 1, a.n_freq_warped, a.n_frames, generator=g), torch.randn(batch, prof.separator.query_dim, generator=g)


def test_inner_product_fusion_by_hand():
    prof = get_profile("smoke")
    torch.manual_seed(1)
    model = QuerySeparator(prof.separator).eval()
    nn.init.normal_(model.query_proj.weight, 0, 0.5)
    with torch.no_grad():
        model.scale.copy_(torch.linspace(0.5, 1.5, prof.separator.n_maps))
        model.bias.fill_(0.3)
    x, q = _inputs(prof)
    with torch.no_grad():
        maps = model.unet(x)
        q_tilde = torch.sigmoid(q @ model.query_proj.weight.T + model.query_proj.bias)
        z = sum(model.scale[c] * q_tilde[:, c, None, None] * maps[:, c] for c in range(prof.separator.n_maps)) + 0.3
        torch.testing.assert_close(model(x, q, return_logits=True), z, rtol=1e-5, atol=1e-6)
        P = model(x, q)
    torch.testing.assert_close(P, torch.sigmoid(z), rtol=1e-5, atol=1e-6)
    assert P.shape == (2, prof.audio.n_freq_warped, prof.audio.n_frames)
    assert 0 <= P.min() and P.max() <= 1


@pytest.mark.parametrize("conditioning", ["inner", "film"])
def test_mask_depends_on_query_and_gradients_reach_every_parameter(conditioning):
    prof = get_profile("smoke")
    torch.manual_seed(2)
    model = QuerySeparator(replace(prof.separator, conditioning=conditioning))
    nn.init.normal_(model.query_proj.weight, 0, 0.5)
    x, q = _inputs(prof)
    P = model(x, q)
    P_other = model(x, torch.roll(q, 1, dims=0))
    assert (P - P_other).abs().max() > 1e-4
    P.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_bad_inputs_raise():
    prof = get_profile("smoke")
    model = QuerySeparator(prof.separator)
    x, q = _inputs(prof)
    with pytest.raises(ValueError, match="divisible by 128"):
        model(x[..., :100], q)
    with pytest.raises(ValueError, match="query must be"):
        model(x, q[:, :5])
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(x, q[:1])
    with pytest.raises(ValueError, match="conditioning"):
        QuerySeparator(SeparatorConfig(conditioning="concat"))


# --------------------------------------------------------------------------- new_separator and the multi-query forward pass
def test_query_init_std_redraws_only_the_query_projection():
    ref, wide = new_separator(SMOKE, 5), new_separator(SMOKE, 5, query_init_std=1.0)
    assert ref.query_proj.weight.std().item() < 2e-4  # the reference N(0, 1e-4)
    assert abs(wide.query_proj.weight.std().item() - 1.0) < 0.05
    a, b = ref.state_dict(), wide.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k != "query_proj.weight")
    with pytest.raises(ValueError, match="query_init_std"):
        new_separator(SMOKE, 5, query_init_std=-1.0)


@pytest.mark.parametrize("conditioning", ["inner", "film"])
def test_multi_query_logits_equal_per_item_forward(conditioning):
    torch.manual_seed(0)
    model = new_separator(replace(SMOKE, separator=replace(SMOKE.separator, conditioning=conditioning)), 0)
    with torch.no_grad():  # make the maps matter: the reference init is nearly zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, 1, 128, 128)
    q = torch.randn(3, 2, 128)
    for mode in ("eval", "train"):
        getattr(model, mode)()
        got = multi_query_logits(model, x, q)
        ref = model(x.repeat_interleave(2, 0), q.reshape(6, 128), return_logits=True).reshape(3, 2, 128, 128)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)  # train: duplicated rows keep BN batch stats
    with pytest.raises(ValueError, match="queries must be"):
        multi_query_logits(model, x, q[:2])
