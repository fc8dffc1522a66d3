"""Validation of an RL run: SDR and SI-SDRi of the deterministic mode ``P`` on fixed ``val`` mixtures
(centred crops, gain 1, the target's omni query), and the judge's semantic score when a judge is given.
The best val SDR -- on mixtures no reward ever sees -- selects the run's returned weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..audio import FrontEnd
from ..config import Profile
from ..queries import QueryBank, compose, modality_embeddings
from ..evaluation.evaluate import JudgeScorer, load_eval_set
from ..evaluation.validation import ValidationSet, validate, validation_estimates


@dataclass
class RLValidation:
    """Fixed validation mixtures: the SDR set and, for the judge, the same items as an EvalSet."""

    val: ValidationSet
    eval_set: Any
    scorer: Any = None


def validation(profile: Profile, bank: QueryBank, n: int, *, judge=None, build_dir=None,
               device: str | torch.device = "cpu") -> RLValidation:
    """The first ``n`` ``val`` mixtures under the evaluation protocol (centred crops, gain 1) with
    the target's omni query; a :class:`~mars_core.evaluation.evaluate.JudgeScorer` when ``judge`` is given."""
    es = load_eval_set(profile, "val", n, build_dir=build_dir)
    q = compose(modality_embeddings(bank, es.refs), "omni")
    mix = es.mixtures.to(device)
    val = ValidationSet(FrontEnd(profile.audio).features(mix), q.float().to(device), mix, es.sources[:, 0].to(device))
    scorer = JudgeScorer(judge, es, profile.audio.sample_rate) if judge is not None else None
    return RLValidation(val, es, scorer)


@torch.no_grad()
def validate_rl(model: torch.nn.Module, rv: RLValidation, fe: FrontEnd) -> dict[str, float]:
    """``sdr``, ``si_sdri`` (:func:`mars_core.evaluation.validation.validate`) and the judge's ``semantic`` (NaN without one),
    from one set of estimates."""
    est = validation_estimates(model, rv.val, fe)
    out = dict(validate(model, rv.val, fe, estimates=est))
    out["semantic"] = float("nan")
    if rv.scorer is not None:
        sem = rv.scorer(est.float().cpu())["semantic"]
        out["semantic"] = float(np.nanmean(sem)) if np.isfinite(sem).any() else float("nan")
    return out
