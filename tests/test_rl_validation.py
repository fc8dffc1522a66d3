"""RL validation (mars_core.rl.validation): one set of estimates scored for SDR (against BSS Eval of the
mixture itself) and by the judge."""

from __future__ import annotations

import math

import numpy as np
import torch

from mars_core.rl.validation import RLValidation, validate_rl
from tests.test_rl_trainer import SMOKE, env  # noqa: F401 (env: a fixture)
from tests.tolerances import assert_within, reconstruct_atol


def test_validate_rl_scores_one_set_of_estimates_for_sdr_and_judge(env, fake_build):
    from mars_core.audio import FrontEnd
    from mars_core.metrics import sdr as sdr_metric
    from mars_core.evaluation.validation import validation_set
    from mars_core.separator import new_separator

    val = validation_set(SMOKE, env["bank"], 3, build_dir=fake_build)
    seen = []

    def scorer(est):  # a stand-in judge: records what it is given, scores 7 per item
        seen.append(est.clone())
        return {"semantic": np.full(len(est), 7.0)}

    model = new_separator(SMOKE, 0)
    with torch.no_grad():
        model.bias.fill_(30.0)  # P = 1 - 1e-13: every estimate is its mixture
    out = validate_rl(model, RLValidation(val, None, scorer), FrontEnd(SMOKE.audio))
    atol = reconstruct_atol(SMOKE.audio, val.mixtures.shape[-1], val.mixtures.abs().max().item())  # float32 STFT round trip
    assert_within(seen[0], val.mixtures, atol, "estimates of an all-pass mask")
    mix_sdr = sdr_metric(val.mixtures.double().numpy(), val.targets.double().numpy())
    assert math.isclose(out["sdr"], float(np.nanmean(mix_sdr)), abs_tol=1e-3) and out["semantic"] == 7.0
