"""mars_core.evaluation.validation: the trainers' validation SDR against BSS Eval of the mixture itself."""

from __future__ import annotations

import math

import numpy as np
import torch

from mars_core.audio import FrontEnd
from mars_core.config import get_profile
from mars_core.evaluation import validation
from mars_core.metrics import sdr as sdr_metric
from mars_core.separator import new_separator
from tests.test_supervised import bank  # noqa: F401  (fixture)

SMOKE = get_profile("smoke")


def test_validation_sdr_of_an_all_pass_mask_is_the_mixture_sdr(fake_build, bank):
    val = validation.validation_set(SMOKE, bank, 3, build_dir=fake_build)
    model = new_separator(SMOKE, 0)
    with torch.no_grad():
        model.bias.fill_(30.0)  # P = sigmoid(30) = 1 - 1e-13: the estimate is the mixture
    out = validation.validate(model, val, FrontEnd(SMOKE.audio))
    mix_sdr = sdr_metric(val.mixtures.double().numpy(), val.targets.double().numpy())
    assert math.isclose(out["sdr"], float(np.nanmean(mix_sdr)), abs_tol=1e-3)
    assert abs(out["si_sdri"]) < 1e-3
