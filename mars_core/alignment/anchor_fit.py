"""Training the MLBP anchor z* (docs/method.md section 7): loss, modality dropout, the loop, fitting on a dataset.

``L = w_nce InfoNCE(cos(z*_i, t_j) / tau) + w_m mean_i max(0, m - (cos(z*_i, t_i) - cos(z*_i, x_i)))``:
z* close to the clean target's audio embedding, far from the other items' targets (same-class
items are not negatives) and farther from the mixture's embedding than from the target's by a
margin. The anchor itself (:class:`~mars_core.alignment.anchor.MLBPAnchor`) is in :mod:`.anchor`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..encoders.contrastive import info_nce_from_logits
from ..progress import CsvLog, Progress, default_every, last_row
from .anchor import ANCHOR_MODALITIES, AnchorConfig, MLBPAnchor, anchor_gap, anchor_inputs
from .embedding import ItemEmbeddings, embed_items


def anchor_loss(
    z: torch.Tensor,
    target: torch.Tensor,
    mixture: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    temperature: float,
    margin: float,
    nce_weight: float = 1.0,
    margin_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = w_nce InfoNCE(cos(z*_i, t_j) / tau) + w_m mean_i max(0, m - (cos(z*_i, t_i) - cos(z*_i, x_i)))``.

    ``t`` = clean-target audio embeddings, ``x`` = mixture embeddings; the InfoNCE is
    one-directional (anchor -> targets) with class-aware negatives.

    Shape:
        z, target, mixture: ``(N, D)``; labels ``(N,)``; returns ``(scalar, parts)``.
    """
    if not (z.shape == target.shape == mixture.shape) or z.ndim != 2:
        shapes = [tuple(x.shape) for x in (z, target, mixture)]
        raise ValueError(f"anchor_loss: z, target, mixture must be equal (N, D) tensors, got {shapes}")
    zn, tn = F.normalize(z, dim=-1), F.normalize(target, dim=-1)
    nce = info_nce_from_logits(zn @ tn.T / temperature, labels)
    hinge = F.relu(margin - anchor_gap(z, target, mixture)).mean()
    loss = nce_weight * nce + margin_weight * hinge
    return loss, {"loss": float(loss.detach()), "nce": float(nce.detach()), "margin": float(hinge.detach())}


def modality_keep_masks(
    n: int, p_drop: float, generator: torch.Generator, available=ANCHOR_MODALITIES
) -> dict[str, torch.Tensor]:
    """Per-item keep masks: each modality dropped with ``p_drop``; an item that lost all gets one back.

    Shape:
        returns ``{modality: (n,) bool}`` over ``available``; every row keeps >= 1 modality.
    """
    mods = list(available)
    keep = torch.rand(n, len(mods), generator=generator) >= p_drop
    empty = ~keep.any(dim=1)
    if empty.any():
        revive = torch.randint(len(mods), (int(empty.sum()),), generator=generator)
        keep[empty.nonzero().squeeze(1), revive] = True
    return {m: keep[:, i] for i, m in enumerate(mods)}


def _mlbp_step(mlbp: MLBPAnchor, emb: ItemEmbeddings, inputs: dict[str, torch.Tensor], cfg: AnchorConfig,
               gen: torch.Generator, bs: int, opt: torch.optim.Optimizer) -> tuple[dict[str, float], float]:
    """One AdamW step on ``bs`` random items with modality dropout; returns the loss parts and the batch's gap."""
    idx = torch.randperm(len(emb), generator=gen)[:bs]
    keep = modality_keep_masks(bs, cfg.modality_dropout, gen, inputs.keys())
    z = mlbp.fuse({m: e[idx.to(e.device)] for m, e in inputs.items()}, keep)
    t, x = emb.target[idx.to(z.device)], emb.mixture[idx.to(z.device)]
    loss, parts = anchor_loss(z, t, x, emb.labels[idx.to(emb.labels.device)], temperature=cfg.temperature,
                              margin=cfg.margin, nce_weight=cfg.nce_weight, margin_weight=cfg.margin_weight)
    if loss.requires_grad:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return parts, float(anchor_gap(z.detach(), t, x).mean())


def train_mlbp(
    mlbp: MLBPAnchor, emb: ItemEmbeddings, cfg: AnchorConfig, val: ItemEmbeddings | None = None, eval_every: int = 50,
    metrics_csv: str | Path | None = None,
) -> dict[str, list]:
    """Train an MLBP anchor on precomputed item embeddings (:func:`embed_items`).

    Inputs: ``e_a = query_audio``, ``e_t = text``, ``e_v = image``; targets ``emb.target``;
    mixtures ``emb.mixture``. Returns ``history`` (``step, loss, nce, margin, gap`` per
    step; ``val_step, val_gap`` (all modalities present) if ``val`` is given). With ``val``,
    the anchor is left at its best validation gap (``best_step``, ``best_val_gap``). With
    ``metrics_csv``, the same numbers go to that CSV file, one row per step (:class:`~mars_core.progress.CsvLog`).
    """
    if len(emb) < 2:
        raise ValueError("train_mlbp needs at least 2 items")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(mlbp.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    hist: dict[str, list] = {k: [] for k in ("step", "loss", "nce", "margin", "gap", "val_step", "val_gap")}
    inputs = anchor_inputs(emb)
    bs = min(cfg.batch_size, len(emb))

    best: dict[str, Any] = {"gap": -float("inf"), "step": 0, "state": None}

    def validate(step: int) -> None:
        if val is not None:
            with torch.no_grad():
                z = mlbp.fuse(anchor_inputs(val))
                gap = float(anchor_gap(z, val.target, val.mixture).mean())
            hist["val_step"].append(step)
            hist["val_gap"].append(gap)
            if gap > best["gap"]:
                best.update(gap=gap, step=step, state={k: v.detach().clone() for k, v in mlbp.state_dict().items()})

    mlbp.train()
    validate(0)
    csv_log = CsvLog(metrics_csv)
    if hist["val_step"]:
        csv_log.log(0, **last_row(hist, (), ("val_gap",), at=0))
    prog = Progress(cfg.steps, "MLBP anchor", every=default_every(cfg.steps, 5), show=("loss", "val_gap"))
    for step in range(1, cfg.steps + 1):
        parts, gap = _mlbp_step(mlbp, emb, inputs, cfg, gen, bs, opt)
        hist["step"].append(step)
        for k in ("loss", "nce", "margin"):
            hist[k].append(parts[k])
        hist["gap"].append(gap)
        if step % eval_every == 0 or step == cfg.steps:
            validate(step)
        logged = last_row(hist, ("loss", "nce", "margin", "gap"), ("val_gap",), at=step)
        csv_log.log(step, **logged)
        prog.update(step, **logged)
    prog.close()
    if best["state"] is not None:  # keep the best validation gap (step 0: the mean anchor)
        mlbp.load_state_dict(best["state"])
        hist["best_step"], hist["best_val_gap"] = best["step"], best["gap"]
    mlbp.eval()
    return hist


def fit_mlbp(
    encoder: Any, items: Any, cfg: AnchorConfig | None = None, val_items: Any = None, sample_rate: int | None = None,
    metrics_csv: str | Path | None = None,
) -> tuple[MLBPAnchor, dict]:
    """Embed train items with ``encoder`` and train a fresh MLBP anchor on them.

    Args:
        items: a train ``MixtureDataset`` (or a list of its items, with ``sample_rate``);
            the first ``cfg.n_items`` are used.
        val_items: optional validation ``MixtureDataset`` (or list) for ``history["val_gap"]``.
        sample_rate: rate of the waveforms (default: the dataset's ``sr``).
        metrics_csv: a CSV file for the training numbers (:func:`train_mlbp`).

    Returns:
        ``(mlbp on the encoder's device, history)``.
    """
    cfg = cfg or AnchorConfig()
    torch.manual_seed(cfg.seed)  # the init
    sr = sample_rate if sample_rate is not None else getattr(items, "sr", None)
    if sr is None:
        raise ValueError("fit_mlbp: pass sample_rate= when items is a list (a MixtureDataset carries it)")
    emb = embed_items(encoder, items, sr, cfg.n_items)
    val = embed_items(encoder, val_items, sr) if val_items is not None else None
    mlbp = MLBPAnchor(emb.target.shape[1], cfg.rank).to(emb.target.device)
    return mlbp, train_mlbp(mlbp, emb, cfg, val, metrics_csv=metrics_csv)
