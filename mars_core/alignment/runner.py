"""The stage runner: progressive alignment S1 -> S2 -> S3, resumable stage by stage.

Each stage starts from the previous stage's best validation checkpoint, trains only the
heads of its modalities (+ logit scales) with AdamW on its objective plus replay of the
earlier stages' objectives, and keeps its best validation step (``run_dir/<stage>_best.pt``).
The encoder stays in eval mode (no dropout / drop-path, frozen normalisation statistics).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..checkpoints import load_checkpoint, save_checkpoint
from ..encoders.base import TriModalEncoder
from ..progress import CsvLog, Progress, default_every, last_row
from .config import STAGE_MODALITIES, STAGES, AlignmentConfig
from .embedding import AlignmentBatch
from .heads import backbone_fingerprint, frozen_digest, head_parameter_names, head_state, load_heads
from .losses import LogitScales
from .sampling import AlignmentData, draw_batch, train_pool, val_batches
from .stages import OBJECTIVES, StageContext


def _objective_value(stage: str, ctx: StageContext, batches: Sequence[AlignmentBatch]) -> float:
    """Mean stage objective over fixed batches (no gradient, fixed augmentation seed)."""
    gen = torch.Generator().manual_seed(ctx.cfg.seed + 1)
    vals = []
    with torch.no_grad():
        for b in batches:
            loss, _ = OBJECTIVES[stage](ctx, b, grad=False, generator=gen)
            vals.append(0.0 if loss is None else float(loss))
    return float(np.mean(vals)) if vals else float("nan")


def _step_loss(stage: str, ctx: StageContext, data: AlignmentData, step: int, gen: torch.Generator, pool=None):
    """Current stage on a fresh batch, plus replay of each earlier stage's objective."""
    k = STAGES.index(stage)
    cfg = ctx.cfg
    loss, parts = OBJECTIVES[stage](ctx, draw_batch(data, cfg, cfg.batch_size, pool, k, step), "heads", gen)
    n_replay = max(2, int(round(cfg.replay_fraction * cfg.batch_size))) if cfg.replay_fraction > 0 else 0
    for j, earlier in enumerate(STAGES[:k]):
        if n_replay == 0:
            break
        batch = draw_batch(data, cfg, n_replay, pool, k, step, "replay", j)
        r_loss, _ = OBJECTIVES[earlier](ctx, batch, "heads", gen)
        if r_loss is not None:
            parts[f"replay_{earlier}"] = float(r_loss.detach())
            loss = r_loss if loss is None else loss + r_loss
    return loss, parts


@contextlib.contextmanager
def _only_trainable(encoder: TriModalEncoder, names: Sequence[str]):
    """Inside: exactly the parameters ``names`` require grad; the flags are restored after."""
    params = dict(encoder.named_parameters())
    old = {n: p.requires_grad for n, p in params.items()}
    try:
        for n, p in params.items():
            p.requires_grad_(n in names)
        yield [params[n] for n in names]
    finally:
        for n, p in params.items():
            p.requires_grad_(old[n])


def _log_step(hist: dict[str, Any], step: int, loss: torch.Tensor | None, parts: dict[str, float]) -> None:
    """Append one step; a term first seen late is NaN-padded, an absent term is NaN."""
    for name in parts.keys() - hist.keys():
        hist[name] = [float("nan")] * len(hist["step"])
    hist["step"].append(step)
    hist["loss"].append(float("nan") if loss is None else float(loss.detach()))
    for name in hist["terms"] | parts.keys():
        hist[name].append(parts.get(name, float("nan")))
    hist["terms"] |= parts.keys()


def _save_stage(path: Path, cfg: AlignmentConfig, stage: str, step: int, val_loss: float, heads, scales, **extra):
    save_checkpoint(
        path,
        config=cfg,
        stage=stage,
        step=step,
        val_loss=val_loss,
        heads=heads,
        logit_scales=scales if isinstance(scales, dict) else scales.state_dict(),
        **extra,
    )


def run_stage(
    stage: str,
    encoder: TriModalEncoder,
    data: AlignmentData,
    cfg: AlignmentConfig,
    scales: LogitScales,
    head_names: Mapping[str, Sequence[str]],
    run_dir: str | Path,
    init_from: str | Path | None = None,
    cache: dict | None = None,
) -> dict[str, Any]:
    """Train one stage; leave ``encoder`` at the stage's best validation checkpoint.

    Trains the heads of :data:`STAGE_MODALITIES` ``[stage]`` (+ logit scales) with AdamW
    on the stage objective plus replay (batches from :func:`train_pool` when ``cfg.pool_items``,
    with trunk features kept in ``cache``); validates at step 0, every ``eval_every`` steps
    and at the end (each step's terms and validations go to ``run_dir/metrics_<stage>.csv``);
    saves the best as ``run_dir/<stage>_best.pt``; reloads it; checks that every other
    encoder tensor is bit-identical (``cfg.verify_frozen``).

    Returns:
        history: ``step, loss`` and one list per loss term (NaN where absent), ``terms``,
        ``val_step, val_loss``, ``best_step, best_val_loss, checkpoint``.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    best_path = Path(run_dir) / f"{stage}_best.pt"
    if init_from is not None:
        load_heads(encoder, init_from, scales)
    all_heads = sorted({n for names in head_names.values() for n in names})
    train_names = sorted({n for m in STAGE_MODALITIES[stage] for n in head_names.get(m, [])})
    if not train_names:
        raise ValueError(f"stage {stage}: the encoder has no trainable head for {STAGE_MODALITIES[stage]}")
    before = frozen_digest(encoder, set(train_names)) if cfg.verify_frozen else {}
    ctx = StageContext(
        encoder, scales, cfg, data.sample_rate, ({} if cache is None else cache) if cfg.pool_items else None
    )
    hist: dict[str, Any] = {"stage": stage, "step": [], "loss": [], "terms": set(), "val_step": [], "val_loss": []}
    with _only_trainable(encoder, train_names) as params, encoder.eval_mode():
        best = _train_heads(stage, ctx, data, params, all_heads, best_path, hist)
    _finish_stage(stage, ctx, best_path, hist, best)
    if cfg.verify_frozen:
        after = frozen_digest(encoder, set(train_names))
        changed = sorted(k for k in before if after.get(k) != before[k])
        if changed:
            raise RuntimeError(f"stage {stage} changed frozen tensors: {changed[:5]}")
    return hist


def _train_heads(stage: str, ctx: StageContext, data: AlignmentData, params: list, all_heads: Sequence[str],
                 best_path: Path, hist: dict[str, Any]) -> list:
    """The AdamW loop of one stage (validating and keeping the best step); returns ``[best val loss, step]``."""
    encoder, scales, cfg = ctx.encoder, ctx.scales, ctx.cfg
    pool, fixed_val = train_pool(data, cfg), val_batches(data, cfg)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + STAGES.index(stage))
    best = [float("inf"), -1]

    def validate(step: int) -> None:
        v = _objective_value(stage, ctx, fixed_val)
        hist["val_step"].append(step)
        hist["val_loss"].append(v)
        if v < best[0] or best[1] < 0:
            best[:] = [v, step]
            _save_stage(best_path, cfg, stage, step, v, head_state(encoder, all_heads), scales, complete=False)

    trained = params + [p for p in scales.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    validate(0)
    csv_log = CsvLog(best_path.parent / f"metrics_{stage}.csv")  # a stage always trains from its start
    csv_log.log(0, val_loss=hist["val_loss"][-1])
    prog = Progress(cfg.steps_per_stage, stage, every=default_every(cfg.steps_per_stage, 5),  # 5 lines a stage
                    show=("loss", "val_loss"))
    for step in range(1, cfg.steps_per_stage + 1):
        loss, parts = _step_loss(stage, ctx, data, step, gen, pool)
        if loss is not None and loss.requires_grad:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
            opt.step()
        _log_step(hist, step, loss, parts)
        if step % cfg.eval_every == 0 or step == cfg.steps_per_stage:
            validate(step)
        logged = last_row(hist, ["loss", *sorted(hist["terms"])], ("val_loss",), at=step)
        csv_log.log(step, **logged)
        prog.update(step, **logged)
    prog.close()
    return best


def _finish_stage(stage: str, ctx: StageContext, best_path: Path, hist: dict[str, Any], best: list) -> None:
    """Reload the best step's heads into the encoder and mark its checkpoint complete (with the history)."""
    blob = load_heads(ctx.encoder, best_path, ctx.scales)
    hist.update(best_step=best[1], best_val_loss=best[0], checkpoint=str(best_path), terms=sorted(hist["terms"]))
    _save_stage(best_path, ctx.cfg, stage, blob["step"], blob["val_loss"], blob["heads"], blob["logit_scales"],
                complete=True, history=hist)


def history_frame(history: Mapping[str, Any]):
    """A stage history as a DataFrame: one row per step (``step, loss`` and each term), for plotting."""
    return pd.DataFrame({k: history[k] for k in ["step", "loss", *history["terms"]]})


def run_alignment(
    encoder: TriModalEncoder,
    data: AlignmentData,
    cfg: AlignmentConfig,
    run_dir: str | Path,
    stages: Sequence[str] = STAGES,
    resume: bool = True,
) -> dict[str, Any]:
    """Progressive alignment: S1 -> S2 -> S3, each from the previous stage's best checkpoint.

    Writes ``run_dir/pretrained.pt`` (the heads before alignment) and
    ``run_dir/<stage>_best.pt``. With ``resume``, a stage whose completed checkpoint
    has the same config is loaded instead of trained.

    Returns:
        ``{"history": {stage: history}, "checkpoints": {"pretrained": path, stage: path}}``;
        the encoder is left at the last stage's best checkpoint.

    Raises:
        ValueError: ``run_dir`` holds a run of an encoder with another backbone (resume),
            or an unknown / out-of-order stage.
    """
    stages = list(stages)
    if not stages or any(s not in STAGES for s in stages) or stages != sorted(stages, key=STAGES.index):
        raise ValueError(f"stages must be a non-empty ordered subset of {STAGES}, got {stages}")
    run_dir = Path(run_dir)
    head_names = head_parameter_names(encoder)  # also freezes the backbone
    all_heads = sorted({n for names in head_names.values() for n in names})
    scales = LogitScales(cfg.temperature_init, cfg.learn_temperature).to(encoder.device)
    backbone = backbone_fingerprint(encoder, set(all_heads), cfg.verify_frozen)
    start = run_dir / "pretrained.pt"
    if resume and start.exists():
        blob = load_checkpoint(start)
        if blob.get("backbone_sha256") != backbone:
            raise ValueError(f"{run_dir} holds a run of another encoder backbone; use another run_dir or resume=False")
    else:
        save_checkpoint(
            start,
            config=cfg,
            stage="pretrained",
            heads=head_state(encoder, all_heads),
            logit_scales=scales.state_dict(),
            backbone_sha256=backbone,
            step=0,
        )
    out = {"history": {}, "checkpoints": {"pretrained": str(start)}}
    prev, cache = start, {}  # trunk features do not depend on the heads: one cache for all stages
    for stage in stages:
        path = run_dir / f"{stage}_best.pt"
        blob = load_checkpoint(path) if resume and path.exists() else None
        if blob is not None and blob.get("complete") and blob.get("config") == dataclasses.asdict(cfg):
            load_heads(encoder, path, scales)
            out["history"][stage] = blob.get("history", {})
        else:
            out["history"][stage] = run_stage(
                stage, encoder, data, cfg, scales, head_names, run_dir, init_from=prev, cache=cache
            )
        out["checkpoints"][stage] = str(path)
        prev = path
    return out
