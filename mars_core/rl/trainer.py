"""RL fine-tuning of the separator: PPO/GRPO with the Beta mask policy (docs/method.md sections 4-6).

One step (CleanRL's order, :func:`rl_step`):

1. refresh the frozen old policy ``theta_old <- theta``;
2. rollout (:mod:`mars_core.rl.rollout`): mixtures ``step * B ...`` of ``train``, every source an
   item, ``G`` masks per item from ``pi_theta_old``, waveforms, rewards;
3. advantages, once per batch (:func:`~mars_core.rl.update.advantages`): group-normalised
   (``advantage="group"``) or EMA baseline with batch normalisation (``"ema"``); never re-normalised
   per minibatch (``"none"``: zero, an ablation);
4. ``ppo_epochs`` passes over the batch in ``minibatches`` shuffled minibatches of mixtures
   (:func:`~mars_core.rl.update.ppo_update`): per-bin clipped surrogate, entropy bonus, KL to the old
   policy, AdamW, gradient norm clipped;
5. every ``eval_every`` steps (:mod:`mars_core.rl.validation`): SDR and SI-SDRi of the deterministic
   mode ``P`` on fixed ``val`` mixtures, and the judge's semantic score when a judge is given. The best
   val SDR selects the returned weights (step 0, the supervised start, is logged but not eligible).

The bookkeeping -- stats row, history, ``metrics.csv``, progress, wall time, ``last.pt`` -- sits apart in
:mod:`mars_core.rl.bookkeeping`; the config checks and the run config that keys a run folder in
:mod:`mars_core.rl.config`.

Project decision: the policy runs with BatchNorm in **eval mode** (the running statistics of
the supervised stage; affine parameters still train). The old and the new policy then give the
same ``P`` for an input whatever the minibatch, so the ratio is exactly 1 before the first update
(with one epoch of one minibatch, ``approx_kl`` and ``clipfrac`` are 0: the paper's REINFORCE).

Each step's data, Query-Mixup weights, masks and minibatch order are pure functions of ``(seed, step)``,
so a killed run resumes from ``last.pt`` to the same weights as an uninterrupted one (bit-exact on CPU).

Under torchrun (:mod:`mars_core.distributed`) ``batch_mixtures`` is the global batch: each rank rolls out its
share of the step's mixtures with the one-process draws, the advantages come from the whole batch's rewards, and
each rank trains on its part of the one-process minibatches with gradients averaged over the ranks; rank 0 alone
validates, writes ``last.pt`` and ``metrics.csv`` and shows progress. A one-process run runs none of this.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..audio import FrontEnd
from ..config import Profile, RLConfig, get_profile, rl_preset
from ..data.mixing import MixtureDataset
from ..alignment.stack import load_reward_stack
from ..encoders.load import load_judge, load_query_encoder
from ..precision import compile_requested, maybe_compile
from ..queries import QueryBank, load_or_build_query_bank
from ..runs import config_hash, runs_dir
from ..supervised import load_or_train, load_separator, save_separator
from ..supervised.trainer import TrainingData
from . import policy
from .advantages import EMABaseline
from .bookkeeping import RunLog, StepResult, step_row, timed
from .config import check_config, run_config, separator_key
from .rewards import RewardModel, reward_bank as build_reward_bank
from .rollout import Trunk, rl_batch, rollout, step_seed
from .update import PATHWISE_RANKS, advantages, check_skipped, make_optimizer, ppo_update
from .validation import RLValidation, validate_rl, validation


@dataclass
class RLParts:
    """Everything a step touches: the trained policy and its frozen copy, optimiser, baseline, data, reward."""

    model: torch.nn.Module
    old_policy: torch.nn.Module
    opt: torch.optim.Optimizer
    ema: EMABaseline
    ds: MixtureDataset | TrainingData
    bank: QueryBank
    rbank: QueryBank
    stack: Any
    reward_model: RewardModel
    fe: FrontEnd
    device: torch.device
    old_trunk: Any = None
    """What computes the old policy's trunk in the rollout (``None``: its own; a compiled :class:`Trunk` under
    ``--compile``)."""
    trunk: Any = None
    """What computes the trained model's trunk in the updates when the whole network trains (as ``old_trunk``)."""


# --------------------------------------------------------------------------- the algorithm
def rl_step(p: RLParts, cfg: RLConfig, step: int) -> StepResult:
    """One step of the method: old policy, rollout, advantages, epochs of the clipped surrogate."""
    kappa = policy.kappa_schedule(step, cfg.steps, cfg.kappa, cfg.kappa_end, cfg.kappa_schedule)
    p.old_policy.load_state_dict(p.model.state_dict())  # 1. theta_old <- theta
    share = {"part": distributed.part(cfg.batch_mixtures)} if distributed.world_size() > 1 else {}  # this rank's
    batch = rl_batch(p.ds, p.bank, p.rbank, p.stack, p.fe, step, cfg.batch_mixtures, cfg.query, cfg.seed, p.device,
                     query_noise=cfg.query_noise, pure_query_prob=cfg.pure_query_prob, **share)
    ro = rollout(p.old_policy, batch, p.fe, p.reward_model, kappa, cfg.group_size,  # 2. G masks per item, rewards
                 seed=step_seed(cfg.seed, step), reward_segments=cfg.reward_segments, trunk=p.old_trunk,
                 signal_reference=cfg.signal_reference)
    if not share:
        adv, frac_zero = advantages(ro.rewards.cpu(), cfg, p.ema)  # 3. once per batch
        stats, t_update = timed(lambda: ppo_update(p.model, p.opt, ro, adv, cfg, step, p.fe, p.trunk),  # 4. PPO
                                p.device)
        return StepResult(kappa, ro, adv, frac_zero, stats, t_update)
    # several ranks: the whole batch's rewards on every rank, so the advantages (and the EMA baseline) are the
    # one-process ones; each rank's update uses its own items' rows; the step's row logs the whole batch
    whole = replace(ro, rewards=distributed.gather(ro.rewards),
                    terms={k: distributed.gather(v) for k, v in ro.terms.items()})
    adv, frac_zero = advantages(whole.rewards.cpu(), cfg, p.ema)
    n = ro.rewards.shape[0]
    mine = adv[distributed.rank() * n:(distributed.rank() + 1) * n]
    stats, t_update = timed(lambda: ppo_update(p.model, p.opt, ro, mine, cfg, step, p.fe, p.trunk), p.device)
    return StepResult(kappa, whole, adv, frac_zero, stats, t_update)


def _parts(prof: Profile, cfg: RLConfig, separator: torch.nn.Module, bank: QueryBank, stack, reward_bank,
           build_dir: Path | None, device: torch.device, progress: bool) -> RLParts:
    fe = FrontEnd(prof.audio)
    stack.encoder.to(device), stack.anchor.to(device)
    with distributed.main_first():  # under torchrun rank 0 builds the cached bank, the others then read it
        rbank = reward_bank if reward_bank is not None else build_reward_bank(stack, prof, build_dir=build_dir,
                                                                                progress=progress)
    reward_model = RewardModel.from_config(stack, prof.audio.sample_rate, cfg)
    model = copy.deepcopy(separator).to(device).eval()  # BatchNorm in eval mode throughout (module docstring)
    old_policy = copy.deepcopy(model).requires_grad_(False).eval()
    opt = make_optimizer(model, cfg)
    ema = EMABaseline(decay=cfg.ema_decay)
    compiled = compile_requested()  # --compile: the trunk passes through torch.compile (eager where it fails)
    old_trunk = maybe_compile(Trunk(old_policy), True) if compiled else None
    trunk = maybe_compile(Trunk(model), True) if compiled and cfg.trainable != "head" else None
    return RLParts(model, old_policy, opt, ema, training_data(prof, cfg, build_dir), bank, rbank, stack, reward_model,
                   fe, device, old_trunk, trunk)


ADAPTATION_SEED_OFFSET = 1
"""Mixtures of a ``train_split`` other than 'train' are drawn with ``data.seed`` + this, so that none of them is one of
the benchmark's evaluation mixtures of that split (those use ``data.seed``)."""


def training_data(prof: Profile, cfg: RLConfig, build_dir=None) -> MixtureDataset | TrainingData:
    """The mixtures of ``cfg.steps`` RL steps (no images) from ``cfg.train_split``: random pairs, and with
    ``cfg.hard_pair_prob > 0`` that share of same-family pairs (:class:`~mars_core.supervised.trainer.TrainingData`);
    what :func:`rl_batch` draws its step's mixtures from. A split other than 'train' (adaptation without references)
    is drawn with the seed ``data.seed + ADAPTATION_SEED_OFFSET``."""
    if cfg.hard_pair_prob > 0:
        return TrainingData(prof, cfg, build_dir)
    n = cfg.steps * cfg.batch_mixtures
    if cfg.train_split != "train":
        return MixtureDataset(cfg.train_split, prof, n_items=n, build_dir=build_dir, load_images=False,
                              seed=prof.data.seed + ADAPTATION_SEED_OFFSET)
    return MixtureDataset("train", prof, n_items=n, build_dir=build_dir, load_images=False)


def check_ranks(cfg: RLConfig) -> None:
    """Under torchrun: raise ``ValueError`` when the ranks cannot share this run (``batch_mixtures`` not a multiple of
    the ranks, or the pathwise estimator); nothing with one process."""
    if distributed.world_size() > 1:
        distributed.part(cfg.batch_mixtures)
        if cfg.estimator == "pathwise":
            raise ValueError(PATHWISE_RANKS)


def _validation(prof: Profile, cfg: RLConfig, bank: QueryBank, judge: Any, build_dir: Path | None,
                device: torch.device) -> RLValidation:
    if isinstance(judge, str):
        judge = load_judge(prof)
    return validation(prof, bank, min(cfg.val_mixtures, prof.data.n_val_mixtures), judge=judge, build_dir=build_dir,
                      device=device)


# --------------------------------------------------------------------------- the loop
def train_rl(
    profile: str | Profile | None,
    cfg: RLConfig | None = None,
    *,
    separator: torch.nn.Module,
    bank: QueryBank,
    stack,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    build_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    judge: Any = "auto",
    reward_bank: QueryBank | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Fine-tune ``separator`` (not modified: a copy is trained) with PPO/GRPO; return the best model.

    Args:
        profile: sizes; ``cfg`` defaults to ``profile.rl`` (the ``plus`` preset).
        separator: the supervised starting point; bank: its query embeddings.
        stack: the reward stack (:func:`mars_core.alignment.stack.load_reward_stack`); moved to ``device``.
        run_dir: where ``last.pt`` and ``metrics.csv`` (:class:`~mars_core.progress.CsvLog`) go; one holding
            the same run is resumed (unless ``resume=False``), one holding another run raises ``ValueError``.
        stop_after: stop (checkpointed) after this many steps, as a killed run would.
        judge: ``"auto"`` (:func:`mars_core.encoders.load.load_judge`), an encoder, or ``None`` (no semantic score).
        reward_bank: the reward encoder's embeddings of the build (default :func:`~mars_core.rl.rewards.reward_bank`).

    Returns:
        ``(model, history)``: eval-mode model with the best validation step's weights (the last
        ones if stopped early, and on the ranks other than 0 under torchrun); ``history`` holds
        :data:`~mars_core.rl.bookkeeping.STEP_KEYS` per step, :data:`~mars_core.rl.bookkeeping.VAL_KEYS` per
        validation (step 0 = the start), and ``best_step``, ``best_sdr``, ``wall_s``, ``steps_done``, ``preset``.
    """
    prof = get_profile(profile)
    cfg = cfg or prof.rl
    check_config(cfg)
    if bank.dim != prof.separator.query_dim:
        raise ValueError(f"query embeddings are {bank.dim}-d but the separator expects query_dim="
                         f"{prof.separator.query_dim}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    build_dir = Path(build_dir) if build_dir is not None else None
    main = distributed.is_main()
    check_ranks(cfg)
    if distributed.world_size() > 1:  # every rank starts from rank 0's separator (and keys the run by it)
        separator = distributed.broadcast_module(copy.deepcopy(separator).to(device))
    log = RunLog(run_dir, run_config(prof, cfg, separator_key(separator), bank.key, stack), cfg, writes=main)
    p = _parts(prof, cfg, separator, bank, stack, reward_bank, build_dir, device, progress)
    rv = _validation(prof, cfg, bank, judge, build_dir, device) if main else None  # rank 0 validates
    start = log.resume(p.model, p.opt, p.ema) if resume else 0  # every rank from the same last.pt
    if start == 0 and main:
        log.log_val(0, validate_rl(p.model, rv, p.fe))
    log.open(cfg.steps if stop_after is None else min(cfg.steps, stop_after), f"RL {cfg.preset} {prof.name}", progress)
    for step in range(start, log.end):
        result = rl_step(p, cfg, step)
        log.log_step(step_row(step, p.opt.param_groups[0]["lr"], result))
        check_skipped(log.history, result.stats, cfg, step)
        done = step + 1
        if log.validation_due(done) and main:
            log.log_val(done, validate_rl(p.model, rv, p.fe), p.model)
        log.end_step(done, p.model, p.opt, p.ema)
        if log.validation_due(done):
            distributed.barrier()  # the other ranks wait for rank 0's validation (nothing with one rank)
    distributed.barrier()  # last.pt is written when a rank returns
    return log.finish(p.model)


# --------------------------------------------------------------------------- load or train
def load_or_train_rl(
    profile: str | Profile | None = None,
    preset: str = "plus",
    *,
    aligned: bool = True,
    run_root: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
    config: RLConfig | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, dict]:
    """An RL-fine-tuned separator for ``(profile, preset, aligned)``, trained only if none exists.

    Loads the profile's query encoder and bank, the supervised separator
    (:func:`mars_core.supervised.load_or_train`) and the reward stack
    (:func:`mars_core.alignment.stack.load_reward_stack`), then looks for
    ``<run_root or $MARS_DATA/runs/rl>/<profile>-<preset>-<hash>/final.pt`` whose run config
    (:func:`run_config`: RL config, starting separator's weights, query bank key, reward stack
    key) matches; otherwise trains there (resuming a killed run) and writes ``final.pt``.

    Args:
        config: overrides ``rl_preset(profile, preset)`` (e.g. fewer steps).
        device: where the models are trained and returned (default: CUDA when available, else CPU).

    Returns:
        ``(model, history)``; ``history["source"]`` names the file, ``history["supervised_source"]``
        the starting separator.
    """
    prof = get_profile(profile)
    cfg = config or rl_preset(prof, preset)
    check_config(cfg)
    with distributed.main_first():  # under torchrun rank 0 builds the query bank, the others then read it
        bank = load_or_build_query_bank(load_query_encoder(prof), prof, progress=progress,
                                        rebuild=retrain and distributed.is_main())
    on = {} if device is None else {"device": device}  # None: the trainer's default
    separator, sup_hist = load_or_train(prof, bank=bank, progress=progress, **on)
    with distributed.main_first():  # rank 0 trains the reward stack when it has to, the others then read it
        stack = load_reward_stack(prof, aligned=aligned)
    run_cfg = run_config(prof, cfg, separator_key(separator), bank.key, stack)
    run_dir = Path(run_root or runs_dir("rl")) / f"{prof.name}-{cfg.preset}-{config_hash(run_cfg)}"
    final = run_dir / "final.pt"
    if not retrain and final.exists():
        model, blob = load_separator(final, rebuild=f"python -m mars_core.rl --profile {prof.name} --preset "
                                     f"{cfg.preset}{'' if aligned else ' --unaligned'} --retrain (with the same "
                                     f"--set options), or delete it (rm {final}) and run again")
        if blob["config"] == run_cfg:
            model = model.to(device) if device is not None else model
            return model, dict(blob["history"], source=str(final), supervised_source=sup_hist.get("source"))
    model, history = train_rl(prof, cfg, separator=separator, bank=bank, stack=stack, run_dir=run_dir,
                              resume=not retrain, progress=progress, device=device)
    if distributed.is_main():  # under torchrun, rank 0 writes the file
        save_separator(final, model, run_cfg=run_cfg, history=history)
    return model, dict(history, source=str(final), supervised_source=sup_hist.get("source"))
