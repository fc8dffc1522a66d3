"""Train a MiniBind with ImageBind's recipe on the offline benchmark, resumably.

ImageBind (Girdhar et al. 2023) starts from a CLIP (OpenCLIP image and text towers),
keeps it frozen and trains every other modality with **image-anchored** symmetric
InfoNCE against the image embedding; audio<->text alignment is then emergent. No CLIP
weights exist offline, so training has two stages (``clip_steps`` + ``steps``):

1. *CLIP stage*: image<->text InfoNCE on the benchmark's images and training prompts
   (learnable temperature: the text postprocessor's logit scale, init 1/0.07, clip 100);
2. *ImageBind stage*: the vision and text towers frozen, audio<->image InfoNCE with the
   audio postprocessor's fixed scale 20 (temperature 0.05).

(``clip_steps=0, freeze_clip=False`` trains all towers jointly with both losses from
step 0: slower to leave the initial plateau on this data; kept as an ablation.)

Batches are class-balanced and same-class pairs are masked out as negatives
(:mod:`.contrastive`, :mod:`.pairs`). AdamW (no decay on norms, biases, tokens,
positions and the logit scale), per stage a linear warm-up then cosine decay, gradient
clipping; in the audio stage, validation every ``eval_every`` steps on ``val``
(audio->text and audio->image recall@1, training templates and image styles) and the
best validation step's weights are kept. ``last.pt`` (model, optimiser, scheduler,
history, best weights) is written atomically every ``ckpt_every`` steps; a killed run
started again with the same arguments resumes and reaches the same weights.

Command line (what produced ``checkpoints/``; see checkpoints/README.md)::

    python -m mars_core.encoders.train --profile cpu --role reward --out checkpoints/minibind_cpu.pt
    python -m mars_core.encoders.train --profile cpu --role judge  --out checkpoints/judge_cpu.pt

Set ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine (the CLI does it for itself): with
busy-waiting OpenMP threads, 2 threads on 2 contended cores ran 5-8x slower.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import load_checkpoint, save_checkpoint
from ..config import EncoderConfig, Profile, get_profile
from ..data.manifest import benchmark_dir
from ..device import add_device_arguments, describe_device, device_from_args
from ..progress import CsvLog, Progress, last_row
from ..runs import data_fingerprint
from .contrastive import info_nce, retrieval_accuracy
from .export import export_checkpoint
from .judge import judge_encoder_config, judge_train_config
from .minibind import MiniBind
from .pairs import PairBatch, SplitData, load_split, sample_batch, step_seed
from .retrieval import class_prototypes, recall_at_1, split_embeddings
from .train_config import TrainConfig


# --------------------------------------------------------------------------- pieces
def stage_of(step: int, cfg: TrainConfig) -> tuple[int, int, int]:
    """``(stage, step within the stage, stage length)`` of a global step (stage 1 = CLIP, 2 = audio)."""
    if step < cfg.clip_steps:
        return 1, step, cfg.clip_steps
    return 2, step - cfg.clip_steps, cfg.steps


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of lr at a global ``step``: in each stage a linear warm-up over
    ``warmup_steps``, then a cosine from 1 to ``min_lr_ratio`` at the stage's end."""
    _, s, n = stage_of(step, cfg)
    warm = min(cfg.warmup_steps, n)
    if s < warm:
        return (s + 1) / warm
    progress = min((s - warm) / max(n - warm, 1), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


PRETRAINED_PREFIX = "modality_preprocessors.vision.backbone."
"""Where a MiniBind's pretrained image trunk lives (``EncoderConfig.image_trunk_train_blocks``)."""


def param_groups(model: torch.nn.Module, weight_decay: float, pretrained_lr: float | None = None) -> list[dict]:
    """AdamW groups: decay on weight matrices only (not norms, biases, tokens, positions, scales); the trained
    blocks of a pretrained image trunk in a third group at ``pretrained_lr`` with no decay (decay would pull
    pretrained weights towards 0), present only when there are any."""
    decay, no_decay, pretrained = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(PRETRAINED_PREFIX):
            pretrained.append(p)
            continue
        skip = p.ndim < 2 or name.endswith(("cls_token", "pos_embed", "bias_k", "bias_v", "token_embedding.weight"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if pretrained:
        if pretrained_lr is None:
            raise ValueError("the model trains pretrained image-trunk blocks: give their learning rate")
        groups.append({"params": pretrained, "weight_decay": 0.0, "lr": pretrained_lr})
    return groups


def image_anchored_loss(model: MiniBind, batch: PairBatch, modalities: tuple[str, ...] = ("audio", "text"),
                        frozen_anchor: bool = False) -> tuple[torch.Tensor, dict]:
    """``L = sum over m in modalities of InfoNCE(image, m)`` with class masks.

    Image embeddings are unit-norm; audio and text come out of their postprocessors
    (``scale * normalize``), so ``image @ audio.T`` is ``20 cos`` and ``image @ text.T``
    is ``s cos`` with the learnable text scale ``s``. ``frozen_anchor``: the image tower
    runs without gradient (ImageBind's frozen CLIP).
    """
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_anchor):
        anchor = model.head_embeddings("vision", model.trunk_features("vision", batch.images))
    inputs = {"audio": batch.audio, "text": batch.text}
    stats: dict[str, float] = {"loss_va": math.nan, "loss_vt": math.nan, "acc_va": math.nan, "acc_vt": math.nan}
    loss = anchor.new_zeros(())
    for m in modalities:
        logits = anchor @ model.head_embeddings(m, model.trunk_features(m, inputs[m])).T
        term = info_nce(logits, batch.labels)
        loss = loss + term
        key = "va" if m == "audio" else "vt"
        stats[f"loss_{key}"], stats[f"acc_{key}"] = term.item(), retrieval_accuracy(logits.detach(), batch.labels)
    stats["loss"] = loss.item()
    stats["text_scale"] = model.modality_postprocessors["text"][1].log_logit_scale.exp().clamp(max=100).item()
    return loss, stats


def stage_setup(step: int, cfg: TrainConfig) -> tuple[tuple[str, ...], bool]:
    """``(modalities paired with the image, frozen anchor?)`` at a global step."""
    if stage_of(step, cfg)[0] == 1:
        return ("text",), False
    return (("audio",), True) if cfg.freeze_clip else (("audio", "text"), False)


def train_step(model: MiniBind, train: SplitData, cfg: TrainConfig, step: int, opt, sched) -> dict:
    """One optimisation step at a global ``step`` (batch, stochastic depth and stage from it)."""
    modalities, frozen = stage_setup(step, cfg)
    model.train()
    if frozen:
        model.modality_preprocessors["vision"].eval()
        model.modality_trunks["vision"].eval()
    torch.manual_seed(step_seed(cfg.seed, step))
    per_class = cfg.clip_items_per_class if stage_of(step, cfg)[0] == 1 else cfg.items_per_class
    batch = sample_batch(train, model, cfg, step, per_class, audio="audio" in modalities)
    loss, stats = image_anchored_loss(model, batch, modalities, frozen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.grad_clip)
    stats["lr"] = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    return stats


@torch.no_grad()
def validate(model: MiniBind, val: SplitData) -> dict[str, float]:
    """Audio->text and audio->image recall@1 on ``val`` and the mean cosine margin (tie-breaker).

    margin = mean over clips of cos(own text prototype) - max cos(other text prototypes).
    """
    emb = split_embeddings(model, val)
    t_protos, t_cls = class_prototypes(emb["text"], val.prompt_labels, len(val.classes))
    i_protos, i_cls = class_prototypes(emb["image"], val.image_labels, len(val.classes))
    a2t = recall_at_1(emb["audio"], val.audio_labels, t_protos, t_cls)
    a2i = recall_at_1(emb["audio"], val.audio_labels, i_protos, i_cls)
    sims = emb["audio"] @ t_protos.T
    own = torch.as_tensor(np.searchsorted(t_cls, val.audio_labels), device=sims.device)
    own_sim = sims.gather(1, own[:, None])[:, 0]
    other = sims.scatter(1, own[:, None], float("-inf")).max(dim=1).values
    return {"a2t": a2t, "a2i": a2i, "score": 0.5 * (a2t + a2i), "margin": (own_sim - other).mean().item()}


ADDED_FIELDS = {"encoder": {"image_trunk_train_blocks": 0}, "train": {"image_trunk_lr_ratio": 0.5}}
"""Fields added after runs were made: left out of a run's configuration at these defaults, so such runs resume."""


def _run_config(profile: Profile, enc: EncoderConfig, cfg: TrainConfig, build_dir: Path) -> dict:
    def without_added(section: str, d: dict) -> dict:
        added = ADDED_FIELDS[section]
        return {k: v for k, v in d.items() if not (k in added and v == added[k])}

    return {"profile": profile.name, "sample_rate": profile.audio.sample_rate,
            "encoder": without_added("encoder", asdict(enc)), "train": without_added("train", asdict(cfg)),
            "data": data_fingerprint(build_dir)}


def _empty_history() -> dict[str, list]:
    keys = ["step", "loss", "loss_va", "loss_vt", "acc_va", "acc_vt", "text_scale", "lr",
            "val_step", "val_a2t", "val_a2i", "val_score", "val_margin"]
    return {k: [] for k in keys}


@dataclass
class _State:
    """Everything a resumed run needs besides model/optimiser/scheduler."""

    history: dict = field(default_factory=_empty_history)
    best_key: tuple[float, float] = (-1.0, -math.inf)
    best_step: int = -1
    best_state: dict | None = None
    wall_s: float = 0.0


# --------------------------------------------------------------------------- loop
def _resume(path: Path, run_config: dict, model, opt, sched) -> tuple[int, _State]:
    blob = load_checkpoint(path)
    if blob["config"] != run_config:
        raise ValueError(f"{path} belongs to a run with another configuration or data; "
                         "use another run directory or resume=False")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    state = _State(blob["history"], tuple(blob["best_key"]), blob["best_step"], blob["best_state"], blob["wall_s"])
    return blob["step"], state


def _save_last(path: Path, run_config: dict, step: int, model, opt, sched, state: _State) -> None:
    save_checkpoint(path, config=run_config, step=step, model=model.state_dict(), optimizer=opt.state_dict(),
                    scheduler=sched.state_dict(), history=state.history, best_key=list(state.best_key),
                    best_step=state.best_step, best_state=state.best_state, wall_s=state.wall_s)


def _log_step(h: dict, step: int, stats: dict) -> None:
    h["step"].append(step)
    for k in ("lr", "loss", "loss_va", "loss_vt", "acc_va", "acc_vt", "text_scale"):
        h[k].append(stats[k])


VAL_COLUMNS = ("val_a2t", "val_a2i", "val_score", "val_margin")
"""Per-validation entries of a MiniBind run's ``history`` (besides ``val_step``)."""


def _validate_and_track(model, val: SplitData, step: int, state: _State) -> dict:
    v = validate(model, val)
    h = state.history
    h["val_step"].append(step)
    for k in ("a2t", "a2i", "score", "margin"):
        h[f"val_{k}"].append(v[k])
    key = (v["score"], v["margin"])
    if key > state.best_key:
        state.best_key, state.best_step = key, step
        state.best_state = copy.deepcopy(model.state_dict())
    return v


def _setup(p: Profile, enc: EncoderConfig, cfg: TrainConfig, build_dir: Path, device: torch.device):
    """A fresh seeded MiniBind on ``device``, the train and val splits, AdamW and its warm-up/cosine schedule."""
    model = MiniBind(enc, p.audio.sample_rate, seed=cfg.seed).to(device)
    train = load_split(build_dir, "train", model.sample_rate, model.image_size)
    val = load_split(build_dir, "val", model.sample_rate, model.image_size)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.lr * cfg.image_trunk_lr_ratio), lr=cfg.lr,
                            betas=(0.9, cfg.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return model, train, val, opt, sched


def _record_step(model, val: SplitData, cfg: TrainConfig, step: int, stats: dict, state: _State, csv_log: CsvLog,
                 prog: Progress) -> None:
    """Log one step's stats; validate at the audio stage's ``eval_every`` steps and its last step."""
    _log_step(state.history, step, stats)
    stage, s, n = stage_of(step, cfg)
    if stage == 2 and ((s + 1) % cfg.eval_every == 0 or s + 1 == n):
        _validate_and_track(model, val, step, state)
    logged = dict(stage=stage, **last_row(state.history, ("loss", "loss_va", "loss_vt", "acc_va", "acc_vt",
                                                          "text_scale", "lr"), VAL_COLUMNS, at=step))
    csv_log.log(step + 1, **logged)  # step = steps done
    prog.update(step + 1, **logged)


def train_minibind(
    profile: str | Profile | None = None,
    *,
    build_dir: str | os.PathLike | None = None,
    encoder: EncoderConfig | None = None,
    config: TrainConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[MiniBind, dict]:
    """Train a MiniBind on a build's train split; return the best-validation model and ``history``.

    Args:
        profile: sample rate and default sizes (``profile.encoder``, :meth:`TrainConfig.for_profile`).
        build_dir: benchmark build (default: the profile's :func:`benchmark_dir`).
        encoder: architecture (default ``profile.encoder``).
        config: training hyper-parameters (default :meth:`TrainConfig.for_profile`).
        run_dir: where ``last.pt`` and ``metrics.csv`` (:class:`~mars_core.progress.CsvLog`; ``step`` =
            steps done) are written; an existing one with the same configuration and data is resumed
            (unless ``resume=False``).
        stop_after: stop (checkpointed) once this many steps are done, as a killed run would.
        device: where the model trains (the CLI's ``--device``; default CPU).

    Returns:
        ``(model, history)``: the model holds the best validation step's weights (eval
        mode); ``history`` has per-step ``step, loss, loss_va, loss_vt, acc_va, acc_vt,
        text_scale, lr``, per-validation ``val_step, val_a2t, val_a2i, val_score,
        val_margin`` and ``best_step``, ``wall_s``, ``steps_done``.

    Raises:
        ValueError: a run directory holding another run's checkpoint.
    """
    p = get_profile(profile)
    enc, cfg = encoder or p.encoder, config or TrainConfig.for_profile(p)
    build_dir = Path(build_dir) if build_dir is not None else benchmark_dir(p.name)
    run_config = _run_config(p, enc, cfg, build_dir)
    model, train, val, opt, sched = _setup(p, enc, cfg, build_dir, torch.device(device))
    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    start, state = 0, _State()
    if last is not None and resume and last.exists():
        start, state = _resume(last, run_config, model, opt, sched)
    total = cfg.total_steps
    end = total if stop_after is None else min(total, stop_after)
    prog = Progress(total, f"MiniBind {p.name}", show=("stage", "loss", "val_score"), initial=start, enabled=progress)
    csv_log = CsvLog(last.with_name("metrics.csv") if last is not None else None, resume_step=start)  # step = done
    t0 = time.perf_counter()
    for step in range(start, end):
        _record_step(model, val, cfg, step, train_step(model, train, cfg, step, opt, sched), state, csv_log, prog)
        done = step + 1
        if last is not None and (done % cfg.ckpt_every == 0 or done == end):
            state.wall_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            _save_last(last, run_config, done, model, opt, sched, state)
    prog.close()
    state.wall_s += time.perf_counter() - t0
    history = dict(state.history, best_step=state.best_step, wall_s=state.wall_s, steps_done=end)
    if end == total and state.best_state is not None:
        model.load_state_dict(state.best_state)
    return model.eval(), history


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.encoders.train", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: $MARS_PROFILE or smoke)")
    p.add_argument("--role", default="reward", choices=("reward", "judge"),
                   help="reward: the profile's encoder; judge: the independent judge (mars_core.encoders.judge)")
    p.add_argument("--out", required=True, help="checkpoint to write (its metrics go to the same name .json)")
    p.add_argument("--build-dir", default=None, help="benchmark build (default: $MARS_DATA/benchmark/<profile>)")
    p.add_argument("--run-dir", default=None, help="resumable run directory (default: runs/minibind/<profile>_<role>)")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if the run directory has last.pt")
    p.add_argument("--seed", type=int, default=None, help="override the seed of the weights and batches")
    p.add_argument("--image-style", default=None, choices=("as_drawn", "line_art"),
                   help="override what the vision tower reads (EncoderConfig.image_style)")
    p.add_argument("--image-tower", default=None, choices=("vit", "mobilenet_v2"),
                   help="override what the vision tower is (EncoderConfig.image_tower)")
    p.add_argument("--image-trunk-train-blocks", type=int, default=None,
                   help="override EncoderConfig.image_trunk_train_blocks: the pretrained image trunk's last blocks "
                        "trained in the CLIP stage (mobilenet_v2 tower)")
    p.add_argument("--image-trunk-lr-ratio", type=float, default=None,
                   help="override TrainConfig.image_trunk_lr_ratio: the trained trunk blocks' learning rate as a "
                        "fraction of lr (> 0)")
    p.add_argument("--cartoon-prob", type=float, default=None,
                   help="override TrainConfig.cartoon_prob: the share of training pictures redrawn as outlined cartoons")
    return add_device_arguments(p)


def _reexec_with_passive_openmp() -> None:
    """Restart this command with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set.

    OpenMP reads it once, when torch loads, so it cannot be changed in-process. On a
    shared 2-core machine busy-waiting threads made training 5-8x slower.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "mars_core.encoders.train", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _reexec_with_passive_openmp()
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    prof = get_profile(args.profile)
    device = device_from_args(args, prof.name)
    print(f"device: {describe_device(device)}")
    build_dir = Path(args.build_dir) if args.build_dir else benchmark_dir(prof.name)
    if args.role == "judge":
        enc, cfg = judge_encoder_config(prof), judge_train_config(prof)
    else:
        enc, cfg = prof.encoder, TrainConfig.for_profile(prof)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if args.image_style is not None:
        enc = replace(enc, image_style=args.image_style)
    if args.image_tower is not None:
        enc = replace(enc, image_tower=args.image_tower)
    if args.image_trunk_train_blocks is not None:
        enc = replace(enc, image_trunk_train_blocks=args.image_trunk_train_blocks)
    if args.image_trunk_lr_ratio is not None:
        if not args.image_trunk_lr_ratio > 0:
            raise SystemExit(f"--image-trunk-lr-ratio must be > 0, got {args.image_trunk_lr_ratio}")
        cfg = replace(cfg, image_trunk_lr_ratio=args.image_trunk_lr_ratio)
    if args.cartoon_prob is not None:
        if not 0.0 <= args.cartoon_prob <= 1.0:
            raise SystemExit(f"--cartoon-prob must be in [0, 1], got {args.cartoon_prob}")
        cfg = replace(cfg, cartoon_prob=args.cartoon_prob)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / "minibind" / f"{prof.name}_{args.role}"
    model, history = train_minibind(prof, build_dir=build_dir, encoder=enc, config=cfg, run_dir=run_dir,
                                    resume=not args.no_resume, device=device)
    command = "python -m mars_core.encoders.train " + " ".join(argv if argv is not None else sys.argv[1:])
    record = export_checkpoint(model, history, args.out, profile=prof, role=args.role, config=cfg,
                               build_dir=build_dir, command=command)
    import pandas as pd

    print(pd.DataFrame(record["metrics"]).round(3).to_string(index=False))
    print(f"best step {record['best_step']}, {record['wall_time_s']} s, {record['checkpoint_bytes'] / 1e6:.2f} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
