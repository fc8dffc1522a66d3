"""One PPO update's parts (mars_core.rl.update): the trained "head" parameters and the optimisers' steps by hand.
The update itself (epochs, minibatches, skipped non-finite updates) is driven through train_rl in test_rl_trainer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mars_core.rl.update import make_optimizer
from tests.test_rl_rollout import trained_looking_separator
from tests.test_rl_trainer import SMOKE, TINY

SMOKE_FT = (SMOKE.audio.n_freq_warped, SMOKE.audio.n_frames)


def test_head_parameters_are_the_last_up_conv_and_the_query_fusion():
    model = trained_looking_separator()
    outer = model.unet.net.model
    last_conv = [n for n, p in model.named_parameters() if any(p is q for q in outer[-1].parameters())]
    assert len(last_conv) == 2  # the outermost up-convolution has a weight and a bias
    assert sorted(model.head_parameter_names()) == sorted(
        last_conv + ["query_proj.weight", "query_proj.bias", "scale", "bias"])
    # the trunk output is what the head turns into the U-Net's maps
    x = torch.randn(2, 1, *SMOKE_FT)
    with torch.no_grad():
        assert model.unet.trunk(x).shape == (2, 2 * SMOKE.separator.down_channels[0], SMOKE_FT[0] // 2, SMOKE_FT[1] // 2)
        torch.testing.assert_close(model.unet.head(model.unet.trunk(x)), outer(model.unet.input_norm(x)))


def test_make_optimizer_sgd_steps_by_the_gradient_and_adamw_by_its_sign():
    """One step on a loss whose gradient is (1000, 0.1) on two weights: SGD moves them by lr x gradient,
    AdamW's first step moves both by about lr (Adam normalises each weight by its own gradient size)."""
    model = trained_looking_separator()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    moved = {}
    for name in ("sgd", "adamw"):
        model.load_state_dict({n: v.clone() for n, v in start.items()}, strict=False)
        opt = make_optimizer(model, replace(TINY, optimizer=name, lr=1e-4, weight_decay=0.0, trainable="head"))
        assert isinstance(opt, torch.optim.SGD if name == "sgd" else torch.optim.AdamW)
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {
            id(p) for n, p in model.named_parameters() if n in set(model.head_parameter_names())}
        loss = 1000.0 * model.bias.sum() + 0.1 * model.scale[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        moved[name] = ((start["bias"] - model.bias.detach()).item(), (start["scale"][0] - model.scale[0].detach()).item())
    assert moved["sgd"] == pytest.approx((0.1, 1e-5), rel=1e-2)
    assert moved["adamw"] == pytest.approx((1e-4, 1e-4), rel=1e-3)
