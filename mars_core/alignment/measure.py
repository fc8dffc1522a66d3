"""Measurements of an alignment (docs/method.md section 7): reward gaps, retrieval, per-term objectives.

* :func:`measure_alignment` / :func:`alignment_table`: the target-vs-mixture reward gap per anchor
  (text, audio, mean, MLBP), family accuracy and recall@1, before and after each stage;
* :func:`objective_terms`: every term of each stage's objective on train and on val items
  (a term far lower on train than on val is overfitting the split the encoder was pretrained on).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from ..data.verify import read_benchmark_image
from ..encoders.base import TriModalEncoder
from .anchor import fuse_anchor
from .anchor_fit import fit_mlbp
from .config import STAGES, AlignmentConfig
from .embedding import embed_items
from .heads import heads_restored, load_heads
from .losses import LogitScales, cosine
from .sampling import AlignmentData, val_batches
from .stages import OBJECTIVES, StageContext


def objective_terms(
    encoder: TriModalEncoder, data: AlignmentData, cfg: AlignmentConfig, checkpoint: str | Path,
    stages: Sequence[str] = STAGES, n_items: int | None = None,
):
    """Every term of each stage's objective, weight 1, on fixed train items and on fixed val items.

    The heads (and temperatures) of ``checkpoint`` are loaded for the measurement and the
    encoder's heads are restored after. A term far lower on train than on val has nothing left
    to learn from the train split except its items: a warning sign for a pretrained encoder that
    already saw that split (MiniBind).

    Returns:
        DataFrame ``stage, term, train, val`` (``n_items`` of each split, default ``cfg.n_val_items``,
        half of them hard pairs where the split has any).
    """
    n = n_items or cfg.n_val_items
    ones = {f.name: 1.0 for f in dataclasses.fields(cfg) if f.name.endswith("_weight")}
    full = dataclasses.replace(cfg, **ones, n_val_items=n)
    train_view = AlignmentData(data.train, data.train, data.train_hard, data.train_hard)
    scales = LogitScales(cfg.temperature_init, cfg.learn_temperature).to(encoder.device)
    rows = []
    with heads_restored(encoder):
        load_heads(encoder, checkpoint, scales)
        ctx = StageContext(encoder, scales, full, data.sample_rate)
        for stage in stages:
            means = {}
            for split, view in (("train", train_view), ("val", data)):
                gen = torch.Generator().manual_seed(cfg.seed + 1)
                parts: dict[str, list[float]] = {}
                with torch.no_grad(), encoder.eval_mode():
                    for b in val_batches(view, full):
                        for k, v in OBJECTIVES[stage](ctx, b, grad=False, generator=gen)[1].items():
                            parts.setdefault(k, []).append(v)
                means[split] = {k: float(np.mean(v)) for k, v in parts.items()}
            rows += [{"stage": stage, "term": k, "train": means["train"][k], "val": means["val"].get(k, float("nan"))}
                     for k in means["train"]]
    return pd.DataFrame(rows)


@torch.no_grad()
def class_embeddings(encoder: TriModalEncoder, dataset: Any) -> tuple[list[str], torch.Tensor, torch.Tensor | None]:
    """Per class of ``dataset``: normalised mean of its prompt embeddings and of its image embeddings.

    Returns:
        ``(class_names, text (C, D), image (C, D) or None)``; a class without images makes ``image`` None.
    """
    names = list(dataset.class_names)
    text = torch.stack(
        [F.normalize(encoder.embed_text([t for _, t in dataset.prompts[c]]).mean(0), dim=-1) for c in names]
    )
    if any(not dataset.images.get(c) for c in names):
        return names, text, None
    rows = []
    for c in names:
        ims = []
        for _, rel in dataset.images[c]:
            ims.append(read_benchmark_image(Path(dataset.build_dir) / rel))  # checked against its manifest
        rows.append(F.normalize(encoder.embed_image(ims).mean(0), dim=-1))
    return names, text, torch.stack(rows)


def _recall_at_1(query: torch.Tensor, keys: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((query @ keys.T).argmax(dim=1) == truth).float().mean())


@torch.no_grad()
def measure_alignment(
    encoder: TriModalEncoder, dataset: Any, *, stage: str = "", n_items: int | None = None, mlbp: Any = None
) -> dict[str, Any]:
    """Reward-relevant alignment metrics on the mixtures of one split (docs/method.md section 7).

    * ``gap_<anchor> = mean_i [cos(phi_a(target_i), z_i) - cos(phi_a(mixture_i), z_i)]`` for the
      anchors ``text`` (the item's prompt embedding: the paper's 0.0035 -> 0.0258 number),
      ``audio`` (another clip of the class), ``mean`` (:func:`fuse_anchor` mean of the
      three query embeddings) and ``mlbp`` (if a trained ``mlbp`` is given, else NaN);
    * ``family_acc``: target clip vs. its family's class prompts (argmax is its own class),
      over items whose family has >= 2 classes in the split (``n_family``; NaN if none);
    * ``recall1_audio_text`` / ``recall1_audio_image``: target clip -> nearest class prompt /
      class image embedding among all classes of the split.

    Returns:
        one row as a dict (see :func:`alignment_table` for the tidy table).
    """
    with encoder.eval_mode():
        emb = embed_items(encoder, dataset, dataset.sr, n_items)
        names, cls_text, cls_image = class_embeddings(encoder, dataset)
    index = {c: i for i, c in enumerate(names)}
    truth = torch.tensor([index[c] for c in emb.classes], device=emb.target.device)
    anchors = {
        "text": emb.text,
        "audio": emb.query_audio,
        "mean": fuse_anchor("mean", emb.query_audio, emb.text, emb.image),
    }
    if mlbp is not None:
        anchors["mlbp"] = fuse_anchor("mlbp", emb.query_audio, emb.text, emb.image, mlbp=mlbp)
    row: dict[str, Any] = {"stage": stage, "split": dataset.split, "n_items": len(emb)}
    for name in ("text", "audio", "mean", "mlbp"):
        z = anchors.get(name)
        row[f"gap_{name}"] = (
            float((cosine(emb.target, z) - cosine(emb.mixture, z)).mean()) if z is not None else float("nan")
        )
    row["cos_target_text"] = float(cosine(emb.target, emb.text).mean())
    row["cos_mixture_text"] = float(cosine(emb.mixture, emb.text).mean())
    fam_hits = []
    for i, (c, fam) in enumerate(zip(emb.classes, emb.families)):
        members = [index[m] for m in dataset.family_members.get(fam, []) if m in index]
        if len(members) >= 2:
            sims = emb.target[i] @ cls_text[members].T
            fam_hits.append(members[int(sims.argmax())] == index[c])
    row["family_acc"] = float(np.mean(fam_hits)) if fam_hits else float("nan")
    row["n_family"] = len(fam_hits)
    row["recall1_audio_text"] = _recall_at_1(emb.target, cls_text, truth)
    row["recall1_audio_image"] = _recall_at_1(emb.target, cls_image, truth) if cls_image is not None else float("nan")
    return row


def alignment_table(
    encoder: TriModalEncoder,
    checkpoints: Mapping[str, str | Path],
    datasets: Sequence[Any],
    *,
    n_items: int | None = None,
    anchor_train: Any = None,
    anchor_cfg: Any = None,
    anchor_val: Any = None,
):
    """Measurements before and after each stage: one row per (checkpoint stage x split).

    Args:
        checkpoints: ``{stage name: alignment checkpoint}`` (``run_alignment(...)["checkpoints"]``).
        datasets: evaluation ``MixtureDataset`` s (e.g. ``test`` and ``test_timbre``).
        anchor_train: if given (a train ``MixtureDataset``), an MLBP anchor is fitted for each
            stage's encoder (:func:`mars_core.alignment.anchor_fit.fit_mlbp` with ``anchor_cfg``)
            and ``gap_mlbp`` is filled in; ``anchor_val`` (a val ``MixtureDataset``) selects each
            anchor's best validation step, as :func:`mars_core.alignment.stack.load_reward_stack` does.

    Returns:
        a pandas DataFrame (columns of :func:`measure_alignment`); the encoder's heads are
        restored to what they were on entry.
    """
    rows = []
    with heads_restored(encoder):
        for stage, path in checkpoints.items():
            load_heads(encoder, path)
            mlbp = None
            if anchor_train is not None:
                mlbp, _ = fit_mlbp(encoder, anchor_train, anchor_cfg, val_items=anchor_val)
            rows += [measure_alignment(encoder, ds, stage=stage, n_items=n_items, mlbp=mlbp) for ds in datasets]
    return pd.DataFrame(rows)
