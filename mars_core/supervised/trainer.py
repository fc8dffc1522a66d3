"""The supervised training loop: data of a step, optimiser and schedule, validation, resumable ``last.pt``.

See :mod:`mars_core.supervised` for the method. The run bookkeeping (``TrainState``, ``last.pt``,
keep-best) is :mod:`mars_core.runs`; the validation is :mod:`mars_core.evaluation.validation`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import FrontEnd
from ..config import Profile, SupervisedConfig, get_profile
from ..config_checks import check_counts, is_real
from .. import distributed
from ..data.mixing import MixtureDataset
from ..evaluation.validation import ValidationSet, validate, validation_set
from ..precision import compile_requested, maybe_compile
from ..progress import CsvLog, Progress, last_row
from ..queries import TRAIN_QUERIES, QueryBank, compose, item_queries, mixup_weights, modality_embeddings
from ..query_mixup import noisy_embeddings, with_pure_queries  # noqa: F401  (also importable from here)
from ..runs import TrainState, encoder_fingerprint, keep_if_best, resume_last, save_last
from ..seeding import item_rng
from ..separator import QuerySeparator, new_separator
from .loader import StepMixtures, load_step, step_loader
from .loss import MultiQueryLogits, mask_targets, supervised_loss

HISTORY_KEYS = ("step", "loss", "lr", "grad_norm", "val_step", "val_sdr", "val_si_sdri")
"""Entries of the supervised trainer's ``history``."""


UNHASHED_FIELDS = ("max_skipped_updates", "num_workers")
"""Fields of :class:`SupervisedConfig` left out of :func:`run_config`: they change no result (a run that
finishes is the same run; any worker count loads the same mixtures), so cached runs and the shipped checkpoints
keep their keys."""


QUERY_AUGMENTATION_FIELDS = {"query_noise": 0.0, "pure_query_prob": 0.0, "hard_pair_prob": 0.0, "trainable": "all"}
"""Fields added after runs were shipped, with their defaults; at the default they are left out of :func:`run_config`,
so the keys of runs made without them stay what they were."""


def run_config(profile: Profile, cfg: SupervisedConfig, bank: QueryBank) -> dict[str, Any]:
    """What a run depends on: sizes, data, separator, training config (less :data:`UNHASHED_FIELDS`, and the
    :data:`QUERY_AUGMENTATION_FIELDS` at their defaults), encoder and manifest."""
    train = {k: v for k, v in asdict(cfg).items()
             if k not in UNHASHED_FIELDS and not (k in QUERY_AUGMENTATION_FIELDS and v == QUERY_AUGMENTATION_FIELDS[k])}
    return {"profile": profile.name, "audio": asdict(profile.audio), "data": asdict(profile.data),
            "separator": asdict(profile.separator), "supervised": train, "queries": bank.key}


def check_config(cfg: SupervisedConfig) -> None:
    """Raise ``ValueError`` naming the first invalid field of a :class:`SupervisedConfig`.

    Counts are integers (``steps``, ``batch_mixtures``, ``eval_every``, ``ckpt_every``, ``val_mixtures``
    >= 1; ``warmup_steps``, ``max_skipped_updates``, ``num_workers`` >= 0; ``seed`` any); every real number is
    finite (NaN and inf are refused): ``lr`` and ``grad_clip`` > 0, ``final_lr_ratio`` in (0, 1], ``weight_decay``
    ``query_init_std`` and ``query_noise`` >= 0; ``pure_query_prob`` (Query-Mixup only) and ``hard_pair_prob`` in [0, 1].
    """
    check_counts(cfg, ("steps", "batch_mixtures", "eval_every", "ckpt_every", "val_mixtures"),
                 ("warmup_steps", "max_skipped_updates", "num_workers"))
    if cfg.optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {cfg.optimizer!r}")
    if cfg.loss not in ("bce", "l1"):
        raise ValueError(f"loss must be 'bce' or 'l1', got {cfg.loss!r}")
    if cfg.query not in TRAIN_QUERIES:
        raise ValueError(f"query must be one of {TRAIN_QUERIES}, got {cfg.query!r}")
    for name in ("lr", "grad_clip"):
        v = getattr(cfg, name)
        if not is_real(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if not is_real(cfg.final_lr_ratio) or not 0 < cfg.final_lr_ratio <= 1:
        raise ValueError(f"final_lr_ratio must be a finite number in (0, 1], got {cfg.final_lr_ratio!r}")
    for name in ("weight_decay", "query_init_std", "query_noise"):
        v = getattr(cfg, name)
        if not is_real(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    for name in ("pure_query_prob", "hard_pair_prob"):
        v = getattr(cfg, name)
        if not is_real(v) or not 0 <= v <= 1:
            raise ValueError(f"{name} must be a finite number in [0, 1], got {v!r}")
    if cfg.trainable not in ("all", "head"):
        raise ValueError(f"trainable must be 'all' or 'head', got {cfg.trainable!r}")
    if cfg.pure_query_prob > 0 and cfg.query != "mixup":
        raise ValueError(f"pure_query_prob applies to Query-Mixup training (query='mixup'), not query={cfg.query!r}")


def lr_factor(step: int, cfg: SupervisedConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based).

    ``(step + 1) / warmup`` during the warm-up, then linear from 1 at ``warmup_steps``
    to ``final_lr_ratio`` at ``steps`` (and constant after).
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min((step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1), 1.0)
    return 1.0 - (1.0 - cfg.final_lr_ratio) * progress


def make_optimizer(model: torch.nn.Module, cfg: SupervisedConfig):
    """``(optimizer, scheduler)``: Adam or AdamW at ``cfg.lr`` with :func:`lr_factor` as a LambdaLR, over every
    parameter (``trainable="all"``) or the head's (``"head"``: :meth:`~mars_core.separator.QuerySeparator.head_parameter_names`;
    the others get ``requires_grad=False``)."""
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    params = list(model.parameters())
    if cfg.trainable == "head":
        head = set(model.head_parameter_names())
        for name, p in model.named_parameters():
            p.requires_grad_(name in head)
        params = [p for name, p in model.named_parameters() if name in head]
    opt = cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))


def train_dataset(profile: Profile, cfg: SupervisedConfig, build_dir: Path | None = None) -> MixtureDataset:
    """The random-pair ``train`` mixtures: ``steps x batch_mixtures`` items, random gains and crops, no images
    (a run also mixes in same-family pairs when ``cfg.hard_pair_prob > 0``: :class:`TrainingData`)."""
    return MixtureDataset("train", profile, n_items=cfg.steps * cfg.batch_mixtures, build_dir=build_dir,
                          load_images=False)


class TrainingData:
    """The ``train`` mixtures of a run: random pairs, and same-family pairs when ``cfg.hard_pair_prob > 0``.

    ``steps x batch_mixtures`` items each, random gains and crops, no images. Item ``j`` of step ``s`` is item
    ``s B + j`` of the hard-pair set with probability ``hard_pair_prob`` (a draw from ``(cfg.seed, "hard-share",
    s)``), else of the random-pair set; with ``hard_pair_prob = 0`` nothing is drawn (the reference stream).
    """

    def __init__(self, profile: Profile, cfg: SupervisedConfig, build_dir: Path | None = None):
        n = cfg.steps * cfg.batch_mixtures
        self.cfg = cfg
        self.random = train_dataset(profile, cfg, build_dir)
        self.hard = (MixtureDataset("train", profile, n_items=n, hard_pairs=True, build_dir=build_dir,
                                    load_images=False) if cfg.hard_pair_prob > 0 else None)

    def step_items(self, step: int, part: slice = slice(None)) -> list[tuple[MixtureDataset, dict]]:
        """``(dataset, item)`` of every mixture of ``step`` (of the mixtures ``part`` of it: one rank's share)."""
        b = self.cfg.batch_mixtures
        hard = np.zeros(b, dtype=bool)
        if self.hard is not None:
            hard = item_rng(self.cfg.seed, "hard-share", step).random(b) < self.cfg.hard_pair_prob
        return [((self.hard if hard[j] else self.random), (self.hard if hard[j] else self.random)[step * b + j])
                for j in range(b)[part]]


def training_batch(ds: TrainingData | MixtureDataset, bank: QueryBank, fe: FrontEnd, step: int, cfg: SupervisedConfig,
                   device: str | torch.device = "cpu", part: slice | None = None) -> dict:
    """Everything step ``step`` trains on (on ``device``); a pure function of ``(data seed, cfg.seed, step)``.

    Returns ``features (B, 1, F, T)``, ``queries (B, K, D)``, ``targets (B, K, F, T)``
    (IBM for ``bce``, IRM for ``l1``) and ``mix_mag (B, 1, F, T)`` (warped ``|X|``), with
    ``K = n_sources`` items per mixture (target first, then each interferer as a target).
    The query augmentation (``cfg.query_noise``, ``cfg.pure_query_prob``) draws from its own stream
    ``(cfg.seed, "query-augment", step)``, so a run without it draws exactly what it drew before.
    ``part`` (one rank's share, :func:`mars_core.distributed.part`) keeps mixtures ``part`` of the step's
    ``B = cfg.batch_mixtures``, with the query draws the whole step makes (the ranks together see the one-process
    batch).
    """
    part = slice(0, cfg.batch_mixtures) if part is None else part
    return batch_from_mixtures(ds, load_step(ds, step, cfg.batch_mixtures, part), bank, fe, cfg, device)


def batch_from_mixtures(ds: TrainingData | MixtureDataset, mixtures: StepMixtures, bank: QueryBank, fe: FrontEnd,
                        cfg: SupervisedConfig, device: str | torch.device = "cpu") -> dict:
    """:func:`training_batch` of the step ``mixtures`` holds (:func:`~mars_core.supervised.loader.load_step` of
    ``ds``, here or in a DataLoader worker): the STFTs on ``device``, the queries and their draws."""
    b, step, part = cfg.batch_mixtures, mixtures.step, mixtures.part
    pairs = mixtures.pairs(ds)
    non_blocking = mixtures.mixture.is_pinned()  # pinned by the DataLoader for a CUDA run: the copy overlaps
    mix_w = fe.warp(fe.stft(mixtures.mixture.to(device, non_blocking=non_blocking)).abs())  # (B, F, T)
    src_w = fe.warp(fe.stft(mixtures.sources.to(device, non_blocking=non_blocking)).abs())  # (B, K, F, T)
    refs = [r for d, it in pairs for r in item_queries(d, it)]
    k = src_w.shape[1]
    rng = item_rng(cfg.seed, "query-mixup", step)
    rows = slice(part.start * k, part.start * k + len(refs))  # this share's items among the step's b k
    weights = mixup_weights(rng, b * k) if cfg.query == "mixup" else None
    aug = item_rng(cfg.seed, "query-augment", step)
    if weights is not None:
        weights = with_pure_queries(weights, aug, cfg.pure_query_prob)[rows]
    q = compose(noisy_embeddings(modality_embeddings(bank, refs), aug, cfg.query_noise, rows, b * k), cfg.query,
                weights)
    return {
        "features": torch.log(mix_w + 1e-10).unsqueeze(1),
        "queries": q.reshape(len(pairs), k, -1).to(device),
        "targets": mask_targets(src_w, mix_w.unsqueeze(1), "ibm" if cfg.loss == "bce" else "irm"),
        "mix_mag": mix_w.unsqueeze(1),
    }


def loss_forward(model: QuerySeparator, cfg: SupervisedConfig, device: str | torch.device = "cpu",
                 compile_forward: bool = False):
    """``forward(batch) -> loss`` for :func:`train_step`: through DDP with several ranks
    (:func:`mars_core.distributed.data_parallel`), through a compiled :class:`~.loss.MultiQueryLogits` with
    ``compile_forward`` (:func:`mars_core.precision.maybe_compile`: eager with a warning where compiling fails);
    ``None`` (plain :func:`supervised_loss`) with neither."""
    logits_fn = maybe_compile(MultiQueryLogits(model), True) if compile_forward else None
    loss = lambda m, batch: supervised_loss(m, batch, cfg.loss, logits_fn)  # noqa: E731
    ddp = distributed.data_parallel(model, loss, device)
    if ddp is not None or not compile_forward:
        return ddp
    return lambda batch: loss(model, batch)


def check_bank(bank: QueryBank, profile: Profile) -> None:
    """Raise ``ValueError`` when the bank's embeddings do not have the separator's ``query_dim``."""
    if bank.dim != profile.separator.query_dim:
        raise ValueError(f"query embeddings are {bank.dim}-d but the separator expects query_dim="
                         f"{profile.separator.query_dim}")


def train_step(model: QuerySeparator, opt, sched, batch: dict, cfg: SupervisedConfig, history: dict,
               step: int, forward=None) -> None:
    """One optimiser step on ``batch`` (:func:`training_batch`): loss, backward, clipped gradient, Adam(W),
    scheduler; appends ``step, loss, lr, grad_norm`` (the lr used by this step) and ``skipped_updates`` to ``history``.

    A loss or gradient norm that is not finite skips the optimiser step (weights and optimiser state
    unchanged, the schedule advances) and appends 1 to ``skipped_updates`` (else 0); past
    ``cfg.max_skipped_updates`` skips in total, :func:`check_skipped` raises ``FloatingPointError``.
    With several ranks, ``forward(batch)`` is the loss through DDP (:func:`mars_core.distributed.data_parallel`):
    the gradient and the logged loss are averages over the ranks, so every rank takes (or skips) the same step.
    """
    loss = forward(batch) if forward is not None else supervised_loss(model, batch, cfg.loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    h = history
    h["step"].append(step), h["loss"].append(distributed.mean(loss.detach()).item())
    h["lr"].append(opt.param_groups[0]["lr"])
    h["grad_norm"].append(float(grad_norm))
    skipped = not (math.isfinite(h["loss"][-1]) and math.isfinite(h["grad_norm"][-1]))
    h.setdefault("skipped_updates", [0] * (len(h["step"]) - 1)).append(int(skipped))  # absent in older last.pt
    if skipped:
        opt.zero_grad(set_to_none=True)  # no opt.step: weights and Adam moments stay as they were
        with warnings.catch_warnings():  # torch warns when a schedule advances before any opt.step: intended here
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            sched.step()
    else:
        opt.step()
        sched.step()
    check_skipped(h, cfg, step)


def check_skipped(history: dict, cfg: SupervisedConfig, step: int) -> None:
    """Raise ``FloatingPointError`` once more than ``cfg.max_skipped_updates`` steps were skipped in total
    (``history["skipped_updates"]`` already holds this step's 0 or 1)."""
    total = int(sum(history.get("skipped_updates", ())))
    if total > cfg.max_skipped_updates:
        raise FloatingPointError(
            f"supervised step {step}: {total} steps skipped for a non-finite loss or gradient norm, more than "
            f"max_skipped_updates={cfg.max_skipped_updates} (this step: loss {history['loss'][-1]}, gradient norm "
            f"{history['grad_norm'][-1]}). The weights are those before the skipped steps; last.pt holds the last "
            "checkpointed step. Lower lr or grad_clip, check the training data, or allow more skips "
            "(SupervisedConfig.max_skipped_updates)")


def validate_and_keep(model: QuerySeparator, val: ValidationSet, fe: FrontEnd, st: TrainState, done: int) -> None:
    """Validate after ``done`` steps, append ``val_step, val_sdr, val_si_sdri`` and keep the weights if best."""
    v = validate(model, val, fe)
    h = st.history
    h["val_step"].append(done), h["val_sdr"].append(v["sdr"]), h["val_si_sdri"].append(v["si_sdri"])
    keep_if_best(st, v["sdr"], done, model)


def train_supervised(
    profile: str | Profile | None,
    bank: QueryBank,
    config: SupervisedConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    build_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    init: QuerySeparator | None = None,
    compile_forward: bool | None = None,
) -> tuple[QuerySeparator, dict]:
    """Train the separator with supervision; return the best-validation model and its ``history``.

    Args:
        profile: sizes (``profile.separator``, ``profile.audio``, ``profile.data``).
        bank: the query embeddings (:func:`~mars_core.queries.load_or_build_query_bank`);
            its dimension must equal ``profile.separator.query_dim``.
        config: default ``profile.supervised``.
        run_dir: where ``last.pt`` and ``metrics.csv`` (one row per step, :class:`~mars_core.progress.CsvLog`)
            are written; one holding the same run is resumed (unless ``resume=False``); one holding
            another run raises ``ValueError``.
        stop_after: stop (checkpointed) after this many steps, as a killed run would.
        device: default CUDA when available, else CPU (bit-exact resumption is promised on CPU).
        init: start from these weights (copied; the run config records their key) instead of a fresh
            separator (the control 'supervised (continued)', :mod:`mars_core.supervised.continued`).
        compile_forward: run the separator's training forward through ``torch.compile`` (:func:`loss_forward`;
            default: the command's ``--compile``, :func:`mars_core.precision.compile_requested`).

    ``config.num_workers > 0`` reads each step's mixtures in that many DataLoader worker processes
    (:mod:`mars_core.supervised.loader`, pinned memory on CUDA): the same mixtures, so the same weights.

    Under torchrun (a process group, :mod:`mars_core.distributed`) each of the ``W`` ranks trains on its
    ``batch_mixtures / W`` mixtures of every step (``batch_mixtures`` is the global batch) through DDP with
    batch norm over all ranks, so the run is the one-process run up to float32 sum order (same run key, a run
    can resume with another ``W``). Rank 0 alone validates, writes ``last.pt`` and ``metrics.csv`` and shows
    progress; every rank resumes from ``last.pt``. The other ranks return their last weights and a history
    without validation entries.

    Raises:
        FloatingPointError: more than ``config.max_skipped_updates`` steps skipped for non-finite values.

    Returns:
        ``(model, history)``: eval-mode model with the best validation step's weights (the
        last weights if stopped early); ``history`` has per-step ``step, loss, lr,
        grad_norm, skipped_updates`` (1 where a non-finite loss or gradient norm skipped the step),
        per-validation ``val_step, val_sdr, val_si_sdri`` and ``best_step``, ``best_sdr``, ``wall_s``,
        ``steps_done``.
    """
    prof = get_profile(profile)
    cfg = config or prof.supervised
    check_config(cfg)
    check_bank(bank, prof)
    build_dir = Path(build_dir) if build_dir is not None else None
    run_cfg = run_config(prof, cfg, bank)
    fe = FrontEnd(prof.audio)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    world, main = distributed.world_size(), distributed.is_main()
    share = {"part": distributed.part(cfg.batch_mixtures)} if world > 1 else {}  # this rank's mixtures
    model = new_separator(prof, cfg.seed, cfg.query_init_std).to(device)
    if init is not None:
        model.load_state_dict(init.state_dict())
        run_cfg = dict(run_cfg, init=encoder_fingerprint(init)[:16])
    if world > 1:
        distributed.sync_batchnorm(model)
    opt, sched = make_optimizer(model, cfg)
    ds = TrainingData(prof, cfg, build_dir)
    n_val = min(cfg.val_mixtures, prof.data.n_val_mixtures)
    val = validation_set(prof, bank, n_val, build_dir, device) if main else None  # rank 0 validates
    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    start, st = 0, TrainState({k: [] for k in HISTORY_KEYS})
    if last is not None and resume and last.exists():
        start, st = resume_last(last, run_cfg, model, opt, scheduler=sched)
    forward = loss_forward(model, cfg, device, compile_requested() if compile_forward is None else compile_forward)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    prog = Progress(cfg.steps, f"supervised {prof.name}", show=("loss", "val_sdr"), initial=start,
                    enabled=progress and main)
    csv_log = CsvLog(Path(run_dir) / "metrics.csv" if run_dir is not None and main else None, resume_step=start,
                     fields=HISTORY_KEYS[1:4] + HISTORY_KEYS[5:] + ("skipped_updates",))  # step = steps done
    # num_workers > 0: the steps' mixtures come from DataLoader workers, in order (the same mixtures: .loader)
    mine = share.get("part", slice(0, cfg.batch_mixtures))
    stream = (iter(step_loader(ds, cfg.batch_mixtures, range(start, end), mine, cfg.num_workers, device))
              if cfg.num_workers > 0 and end > start else None)
    t0 = time.perf_counter()
    for step in range(start, end):
        model.train(cfg.trainable == "all")  # head only: the trunk's batch norms keep their statistics (as RL)
        if stream is None:
            batch = training_batch(ds, bank, fe, step, cfg, device, **share)
        else:
            mixtures = next(stream)
            if mixtures.step != step:  # the DataLoader delivers in order; a mismatch would train other data
                raise RuntimeError(f"DataLoader delivered step {mixtures.step} for step {step}")
            batch = batch_from_mixtures(ds, mixtures, bank, fe, cfg, device)
        train_step(model, opt, sched, batch, cfg, st.history, step, forward=forward)
        done = step + 1
        evaluate = done % cfg.eval_every == 0 or done == cfg.steps
        checkpoint = last is not None and (done % cfg.ckpt_every == 0 or done == end)
        if evaluate and main:
            validate_and_keep(model, val, fe, st, done)
        row = last_row(st.history, HISTORY_KEYS[1:4] + ("skipped_updates",), HISTORY_KEYS[5:], at=done)
        csv_log.log(done, **row)
        prog.update(done, **row)
        if checkpoint:
            st.wall_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            if main:
                save_last(last, run_cfg, done, model, opt, st, scheduler=sched)
        if evaluate or checkpoint:
            distributed.barrier()  # the other ranks wait for rank 0's validation and last.pt
    del stream  # the DataLoader's workers end with its iterator
    prog.close()
    st.wall_s += time.perf_counter() - t0
    history = dict(st.history, best_step=st.best_step, best_sdr=st.best_sdr, wall_s=st.wall_s, steps_done=end)
    if end == cfg.steps and st.best_state is not None and main:  # other ranks: no validation, last weights
        model.load_state_dict(st.best_state)
    for p in model.parameters():  # trainable="head" froze the trunk for this run only
        p.requires_grad_(True)
    return distributed.local_batchnorm(model).cpu().eval(), history
