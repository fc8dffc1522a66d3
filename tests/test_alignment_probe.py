"""The reward-hacking probe: rewards of silent, target and oracle outputs recomputed by hand."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from mars_core.alignment.probe import PROBE_OUTPUTS, reward_hacking_probe
from mars_core.data.mixing import MixtureDataset
from tests.alignment_toys import SpectralToyEncoder
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


def test_reward_hacking_probe_rewards(fake_build):
    enc = SpectralToyEncoder()
    ds = MixtureDataset("test", "smoke", build_dir=fake_build, n_items=6)
    table = reward_hacking_probe(enc, ds).set_index("output")
    assert list(table.index) == list(PROBE_OUTPUTS)
    items = [ds[i] for i in range(6)]
    text = enc.embed_text([it["query_text"] for it in items])
    silent = enc.embed_audio(torch.zeros(1, 1000), ds.sr)[0]
    assert table.loc["silent", "reward_mean"] == pytest.approx(float((text @ silent).mean()), abs=1e-5)
    tgt = enc.embed_audio(torch.from_numpy(np.stack([it["sources"][0] for it in items])), ds.sr)
    assert table.loc["target", "reward_mean"] == pytest.approx(float((tgt * text).sum(1).mean()), abs=1e-5)
    assert table.loc["oracle_irm", "frac_ge_oracle"] == 1.0
    with pytest.raises(ValueError, match="profile"):
        reward_hacking_probe(enc, items)
    with pytest.raises(ValueError, match="anchor"):
        reward_hacking_probe(enc, ds, anchor="clap")
