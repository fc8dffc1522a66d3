"""Validation used by both trainers: fixed ``val`` mixtures, deterministic-mask estimates, SDR and SI-SDRi.

The supervised and the RL trainers validate every ``eval_every`` steps on the first
``val_mixtures`` ``val`` mixtures with the target's omni query, and keep the step with the best
mean SDR (:func:`mars_core.runs.keep_if_best`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import FrontEnd
from ..config import Profile
from ..data.mixing import MixtureDataset, collate
from ..metrics import sdr as sdr_metric
from ..metrics import si_sdr
from ..queries import QueryBank, compose, evaluation_ref, modality_embeddings
from ..separator import QuerySeparator


@dataclass
class ValidationSet:
    """Fixed validation mixtures with their omni queries (computed once)."""

    features: torch.Tensor  # (N, 1, F, T)
    queries: torch.Tensor  # (N, D)
    mixtures: torch.Tensor  # (N, samples)
    targets: torch.Tensor  # (N, samples)


def validation_set(profile: Profile, bank: QueryBank, n: int, build_dir: Path | None = None,
                   device: str | torch.device = "cpu") -> ValidationSet:
    """The first ``n`` ``val`` mixtures (no gain randomisation) with the target's omni query."""
    ds = MixtureDataset("val", profile, n_items=n, build_dir=build_dir, load_images=False)
    items = [ds[i] for i in range(len(ds))]
    batch = collate(items)
    q = compose(modality_embeddings(bank, [evaluation_ref(ds, it) for it in items]), "omni")
    mix = batch["mixture"].to(device)
    return ValidationSet(FrontEnd(profile.audio).features(mix), q.to(device), mix, batch["sources"][:, 0].to(device))


@torch.no_grad()
def validation_estimates(model: QuerySeparator, val: ValidationSet, fe: FrontEnd, batch_size: int = 16) -> torch.Tensor:
    """Waveforms of the deterministic masks ``P`` for every validation item (eval mode, restored after).

    Shape: returns ``(N, samples)`` on the validation set's device.
    """
    was = model.training
    model.eval()
    est = []
    for lo in range(0, len(val.queries), batch_size):
        sl = slice(lo, lo + batch_size)
        est.append(fe.reconstruct(model(val.features[sl], val.queries[sl]), val.mixtures[sl]))
    model.train(was)
    return torch.cat(est)


def validate(model: QuerySeparator, val: ValidationSet, fe: FrontEnd, batch_size: int = 16,
             estimates: torch.Tensor | None = None) -> dict[str, float]:
    """Mean SDR (BSS Eval v4) and SI-SDRi of the deterministic-mask estimates (silent items skipped);
    ``estimates``: :func:`validation_estimates` already computed (else they are)."""
    if estimates is None:
        estimates = validation_estimates(model, val, fe, batch_size)
    est = estimates.double().cpu()
    ref, mix = val.targets.double().cpu(), val.mixtures.double().cpu()
    sdr = sdr_metric(est.numpy(), ref.numpy())
    si = (si_sdr(est, ref) - si_sdr(mix, ref)).numpy()
    ok = ~np.isnan(sdr)
    return {"sdr": float(sdr[ok].mean()) if ok.any() else float("nan"),
            "si_sdri": float(si[ok].mean()) if ok.any() else float("nan")}
