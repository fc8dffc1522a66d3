"""The reward stack: alignment touches only the heads, runs are cached by content, z* is usable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mars_core.alignment.config import STAGES, AlignmentConfig
from mars_core.alignment.heads import head_parameter_names
from mars_core.alignment.anchor import AnchorConfig
from mars_core.encoders.minibind import MiniBind
from mars_core.alignment.stack import load_reward_stack

SMALL_ALIGN = AlignmentConfig.for_profile("smoke", steps_per_stage=4, eval_every=2, n_val_items=8, pool_items=16)
SMALL_ANCHOR = AnchorConfig.for_profile("smoke", steps=10)


@pytest.fixture(scope="module")
def stacks(fake_build, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    kw = dict(align_cfg=SMALL_ALIGN, anchor_cfg=SMALL_ANCHOR, build_dir=fake_build, run_root=root)
    base = MiniBind.from_profile("smoke", seed=0)
    aligned = load_reward_stack("smoke", True, encoder=MiniBind.from_profile("smoke", seed=0), **kw)
    again = load_reward_stack("smoke", True, encoder=MiniBind.from_profile("smoke", seed=0), **kw)
    plain = load_reward_stack("smoke", False, encoder=MiniBind.from_profile("smoke", seed=0), **kw)
    return base, aligned, again, plain


def test_alignment_changes_heads_only(stacks):
    base, aligned, _, _ = stacks
    heads = {n for names in head_parameter_names(MiniBind.from_profile("smoke", seed=0)).values() for n in names}
    before, after = dict(base.named_parameters()), dict(aligned.encoder.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "alignment trained nothing"
    assert changed <= heads, f"backbone parameters changed: {sorted(changed - heads)[:5]}"
    assert not any(p.requires_grad for p in aligned.encoder.parameters())
    assert not any(p.requires_grad for p in aligned.anchor.parameters())


def test_cached_run_is_reused_and_keys_tell_stacks_apart(stacks):
    _, aligned, again, plain = stacks
    assert again.key == aligned.key
    assert again.info["run_dir"] == aligned.info["run_dir"]
    assert plain.key != aligned.key and plain.aligned is False and aligned.aligned is True
    for name in ("pretrained", *STAGES):
        assert name in aligned.info["checkpoints"]


def test_target_anchor_and_reward_are_cosines(stacks):
    _, stack, _, _ = stacks
    g = torch.Generator().manual_seed(0)
    e = [F.normalize(torch.randn(3, stack.anchor.dim, generator=g), dim=1) for _ in range(3)]
    z = stack.target_anchor(*e)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    z_text_only = stack.target_anchor(None, e[1], None)
    assert z_text_only.shape == (3, stack.anchor.dim)
    waves = torch.randn(3, 8000, generator=g) * 0.1
    r = stack.reward(waves, 8000, z)
    a = stack.encoder.embed_audio(waves, 8000)
    torch.testing.assert_close(r, (a * z).sum(1) / (a.norm(dim=1) * z.norm(dim=1)))  # cos by hand
    with pytest.raises(ValueError, match="do not match"):
        stack.reward(waves, 8000, z[:2])
    with pytest.raises(ValueError):
        stack.reward(waves, 16000 if stack.encoder.sample_rate != 16000 else 8000, z)
