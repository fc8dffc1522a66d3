"""RL fine-tuning of the separator: PPO/GRPO with the Beta mask policy (docs/method.md sections 4-6).

One step (CleanRL's order):

1. refresh the frozen old policy ``theta_old <- theta``;
2. rollout (:mod:`mars_core.rl.rollout`): mixtures ``step * B ...`` of ``train``, every source an
   item, ``G`` masks per item from ``pi_theta_old``, waveforms, rewards;
3. advantages, once per batch: group-normalised (``advantage="group"``) or EMA baseline with
   batch normalisation (``"ema"``); never re-normalised per minibatch (``"none"``: zero, an ablation);
4. ``ppo_epochs`` passes over the batch in ``minibatches`` shuffled minibatches of mixtures:
   per-bin :func:`~mars_core.rl.ppo.ppo_loss` (clipped surrogate, entropy bonus, KL to the old
   policy), AdamW, gradient norm clipped;
5. every ``eval_every`` steps: SDR and SI-SDRi of the deterministic mode ``P`` on fixed ``val``
   mixtures (centred crops, gain 1, omni query), and the judge's semantic score when a judge is
   given. The best val SDR -- on mixtures no reward ever sees -- selects the returned weights
   (step 0, the supervised start, is logged but not eligible).

Project decision: the policy runs with BatchNorm in **eval mode** (the running statistics of
the supervised stage; affine parameters still train). The old and the new policy then give the
same ``P`` for an input whatever the minibatch, so the ratio is exactly 1 before the first update
(with one epoch of one minibatch, ``approx_kl`` and ``clipfrac`` are 0: the paper's REINFORCE).

``last.pt`` (model, optimiser, EMA baseline, step, history, best weights, RNG state, run
config) is written atomically every ``ckpt_every`` steps; each step's data, Query-Mixup weights,
masks and minibatch order are pure functions of ``(seed, step)``, so a killed run resumes to the
same weights as an uninterrupted one (bit-exact on CPU).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import FrontEnd
from ..config import Profile, RLConfig, get_profile, rl_preset
from ..data.manifest import data_root
from ..data.mixing import MixtureDataset
from ..encoders.stack import load_reward_stack
from ..progress import CsvLog, Progress, last_row
from ..queries import (TRAIN_QUERIES, QueryBank, compose, encoder_fingerprint, load_or_build_query_bank,
                       load_query_encoder, modality_embeddings)
from ..seeding import item_rng
from ..supervised import (TrainState, ValidationSet, config_hash, keep_if_best, load_or_train, load_separator,
                          resume_last, save_last, save_separator, validate, validation_estimates)
from . import policy
from .advantages import EMABaseline, group_advantages
from .ppo import ppo_loss
from .rewards import RewardModel, reward_bank as build_reward_bank
from .policy import beta_policy_terms
from .rollout import Rollout, proposal_from_trunk, rl_batch, rollout, step_seed

STEP_KEYS = ("step", "kappa", "lr", "reward_mean", "reward_std", "reward_group_std", "reward_semantic",
             "reward_signal", "reward_contamination", "adv_mean", "adv_std", "frac_zero_std", "loss", "pg_loss",
             "entropy", "kl_loss", "approx_kl", "clipfrac", "ratio_mean", "grad_norm", "t_policy", "t_rollout",
             "t_reward", "t_update", "skipped_updates")
"""Per-step entries of ``history`` (PPO statistics are means over the step's updates that ran; NaN when all
were skipped; ``skipped_updates``: updates skipped for non-finite values, :attr:`RLConfig.max_skipped_updates`)."""
PPO_STATS = ("loss", "pg_loss", "entropy_loss", "kl_loss", "approx_kl", "clipfrac", "ratio_mean", "grad_norm")
"""What :func:`ppo_update` averages over a step's updates."""
VAL_KEYS = ("val_step", "val_sdr", "val_si_sdri", "val_semantic")
"""Per-validation entries of ``history`` (``val_semantic`` is NaN without a judge)."""


# --------------------------------------------------------------------------- config
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def check_config(cfg: RLConfig) -> None:
    """Raise ``ValueError`` naming the first invalid field of an :class:`RLConfig`.

    Counts are integers (>= 1, or >= 0 for ``reward_batch_size`` and ``max_skipped_updates``); every
    real number is finite (NaN and inf are refused): ``kappa``, ``kappa_end``, ``lr`` and ``grad_clip``
    > 0, ``clip_eps`` and ``ema_decay`` in (0, 1), coefficients and weight decay >= 0.
    """
    for name in ("steps", "batch_mixtures", "group_size", "ppo_epochs", "minibatches", "eval_every", "ckpt_every",
                 "val_mixtures"):
        v = getattr(cfg, name)
        if not _is_int(v) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for name in ("reward_batch_size", "max_skipped_updates", "seed"):
        v = getattr(cfg, name)
        if not _is_int(v) or (name != "seed" and v < 0):
            raise ValueError(f"{name} must be an integer{'' if name == 'seed' else ' >= 0'}, got {v!r}")
    if cfg.trainable not in ("all", "head"):
        raise ValueError(f"trainable must be 'all' or 'head', got {cfg.trainable!r}")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")
    if cfg.advantage not in ("group", "ema", "none"):
        raise ValueError(f"advantage must be 'group', 'ema' or 'none', got {cfg.advantage!r}")
    if cfg.advantage == "group" and cfg.group_size == 1:
        raise ValueError("group_size=1 with advantage='group': a group of one sample has std 0, so every "
                         "advantage would be 0 and nothing would be learned; use group_size >= 2 or "
                         "advantage='ema' (the paper's batch-as-group reading)")
    if cfg.minibatches > cfg.batch_mixtures:
        raise ValueError(f"minibatches ({cfg.minibatches}) cannot exceed batch_mixtures ({cfg.batch_mixtures}): "
                         "minibatches split the batch's mixtures")
    for name in ("kappa", "kappa_end", "lr", "grad_clip"):
        v = getattr(cfg, name)
        if not _is_real(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    for name in ("clip_eps", "ema_decay"):
        v = getattr(cfg, name)
        if not _is_real(v) or not 0 < v < 1:
            raise ValueError(f"{name} must be a finite number in (0, 1), got {v!r}")
    for name in ("ent_coef", "kl_coef", "lambda_sig", "lambda_neg", "weight_decay"):
        v = getattr(cfg, name)
        if not _is_real(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if cfg.kappa_schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"kappa_schedule must be constant, linear or cosine, got {cfg.kappa_schedule!r}")
    if cfg.query not in TRAIN_QUERIES:
        raise ValueError(f"query must be one of {TRAIN_QUERIES}, got {cfg.query!r}")


def separator_key(model: torch.nn.Module) -> str:
    """16 hex digits of the sha256 of a separator's weights (the start of an RL run)."""
    return encoder_fingerprint(model)[:16]


def run_config(profile: Profile, cfg: RLConfig, start_key: str, bank_key: str, stack) -> dict[str, Any]:
    """What an RL run depends on: sizes, the RL config, the starting separator, the query bank and the reward stack."""
    return {"profile": profile.name, "audio": asdict(profile.audio), "data": asdict(profile.data),
            "separator": asdict(profile.separator), "rl": asdict(cfg), "start": start_key, "queries": bank_key,
            "reward": stack.key, "aligned": bool(stack.aligned)}


def trainable_parameters(model: torch.nn.Module, trainable: str) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` for RL and return the trained parameters: all of them (``"all"``) or
    the last up-path layer and the query fusion (``"head"``, :meth:`QuerySeparator.head_parameter_names`)."""
    names = set(model.head_parameter_names()) if trainable == "head" else None
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(names is None or n in names)
        if p.requires_grad:
            params.append(p)
    return params


def make_optimizer(model: torch.nn.Module, cfg: RLConfig) -> torch.optim.Optimizer:
    """The RL optimizer over :func:`trainable_parameters`: AdamW, or SGD when ``cfg.optimizer == "sgd"``.

    Why SGD is offered: Adam divides every weight's step by the running size of its own gradient,
    so a weight whose policy gradient is almost pure sampling noise still moves by about ``lr``
    each update; with SGD a weight moves in proportion to its (clipped) gradient.
    """
    params = trainable_parameters(model, cfg.trainable)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def advantages(rewards: torch.Tensor, cfg: RLConfig, ema: EMABaseline | None) -> tuple[torch.Tensor, float]:
    """Advantages of one batch. Shape: rewards ``(N, G)`` -> ``(N, G)`` and ``frac_zero_std``.

    ``advantage="none"`` returns zeros (``frac_zero_std`` 1): the policy-gradient term vanishes and
    what still trains is the entropy bonus and the KL term, the ablation that tells what the
    reward teaches from what the regularisers do. Non-finite rewards give zeros and ``frac_zero_std``
    NaN (:func:`ppo_update` then skips the step)."""
    if not torch.isfinite(rewards).all():  # the step is skipped (ppo_update); the EMA baseline is not touched
        return torch.zeros_like(rewards), float("nan")
    if cfg.advantage == "group":
        return group_advantages(rewards)
    if cfg.advantage == "none":
        return torch.zeros_like(rewards), 1.0
    return ema(rewards)


# --------------------------------------------------------------------------- the update
def ppo_update(model: torch.nn.Module, opt: torch.optim.Optimizer, ro: Rollout, adv: torch.Tensor, cfg: RLConfig,
               step: int) -> dict[str, float]:
    """``ppo_epochs x minibatches`` clipped updates on one rollout; the mean of each statistic.

    Minibatches split the mixtures (all ``K`` items of a mixture share its U-Net pass), in an
    order drawn from ``item_rng(seed, "rl-minibatch", step, epoch)``. With ``cfg.trainable ==
    "head"`` the frozen trunk's output is taken from the rollout (it is the same for the old and
    the new policy), so an update runs only the last layer and the query fusion.

    Non-finite values (:attr:`RLConfig.max_skipped_updates`): when a reward is not finite no update
    runs; an update whose loss or gradient norm is not finite is skipped before ``opt.step`` (weights
    and optimiser state unchanged). ``skipped_updates`` counts them and ``skip_reason`` (a string,
    present only then) says what was not finite; the statistics are means over the updates that ran.
    """
    b, k = ro.queries.shape[:2]
    n_updates = cfg.ppo_epochs * cfg.minibatches
    bad = int((~torch.isfinite(ro.rewards)).sum())
    if bad:
        return {**dict.fromkeys(PPO_STATS, float("nan")), "skipped_updates": float(n_updates),
                "skip_reason": f"{bad} of {ro.rewards.numel()} rewards not finite"}
    adv = adv.to(ro.rewards.device)
    sums: dict[str, float] = {}
    n, skipped, reason = 0, 0, ""
    for epoch in range(cfg.ppo_epochs):
        order = torch.as_tensor(item_rng(cfg.seed, "rl-minibatch", step, epoch).permutation(b))
        for mb in order.tensor_split(cfg.minibatches):
            mb = mb.to(ro.features.device)
            items = (mb[:, None] * k + torch.arange(k, device=mb.device)).reshape(-1)
            trunk = ro.trunk[mb] if cfg.trainable == "head" else model.unet.trunk(ro.features[mb])
            P = proposal_from_trunk(model, trunk, ro.queries[mb]).float().unsqueeze(1)  # (bK, 1, F, T)
            new_logp, ent, kl_t = beta_policy_terms(P, ro.mask_logit[items], ro.mask_log1m[items], ro.kappa,
                                                    ro.P_old[items].unsqueeze(1) if cfg.kl_coef > 0 else None)
            loss, stats = ppo_loss(new_logp, ro.old_logp[items], adv[items], ent, kl_t, clip_eps=cfg.clip_eps,
                                   ent_coef=cfg.ent_coef, kl_coef=cfg.kl_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in opt.param_groups for p in g["params"]]
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            if not (math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])):
                opt.zero_grad(set_to_none=True)  # skipped: no step, so weights and optimiser state stay
                skipped += 1
                reason = reason or (f"loss {stats['loss']}" if not math.isfinite(stats["loss"]) else
                                    f"gradient norm {stats['grad_norm']}")
                continue
            opt.step()
            for key, v in stats.items():
                sums[key] = sums.get(key, 0.0) + v
            n += 1
    out = {key: sums[key] / n if n else float("nan") for key in PPO_STATS}
    out["skipped_updates"] = float(skipped)
    if skipped:
        out["skip_reason"] = f"{reason} (epoch/minibatch update of step {step})"
    return out


def check_skipped(history: dict, stats: dict, cfg: RLConfig, step: int) -> None:
    """Raise ``FloatingPointError`` once more than ``cfg.max_skipped_updates`` updates were skipped in total
    (``history["skipped_updates"]`` already holds this step's count)."""
    total = int(sum(history["skipped_updates"]))
    if total > cfg.max_skipped_updates:
        raise FloatingPointError(
            f"RL step {step}: {total} updates skipped for non-finite values, more than max_skipped_updates="
            f"{cfg.max_skipped_updates} (this step: {stats.get('skip_reason', 'none')}). The weights are those "
            "before the skipped updates; last.pt holds the last checkpointed step. Lower lr or kappa, check the "
            "reward's inputs, or allow more skips (--set max_skipped_updates=N)")


# --------------------------------------------------------------------------- validation
@dataclass
class RLValidation:
    """Fixed validation mixtures: the SDR set and, for the judge, the same items as an EvalSet."""

    val: ValidationSet
    eval_set: Any
    scorer: Any = None


def validation(profile: Profile, bank: QueryBank, n: int, *, judge=None, build_dir=None,
               device: str | torch.device = "cpu") -> RLValidation:
    """The first ``n`` ``val`` mixtures under the evaluation protocol (centred crops, gain 1) with
    the target's omni query; a :class:`~mars_core.evaluate.JudgeScorer` when ``judge`` is given."""
    from ..evaluate import JudgeScorer, load_eval_set

    es = load_eval_set(profile, "val", n, build_dir=build_dir)
    q = compose(modality_embeddings(bank, es.refs), "omni")
    mix = es.mixtures.to(device)
    val = ValidationSet(FrontEnd(profile.audio).features(mix), q.float().to(device), mix, es.sources[:, 0].to(device))
    scorer = JudgeScorer(judge, es, profile.audio.sample_rate) if judge is not None else None
    return RLValidation(val, es, scorer)


@torch.no_grad()
def validate_rl(model: torch.nn.Module, rv: RLValidation, fe: FrontEnd) -> dict[str, float]:
    """``sdr``, ``si_sdri`` (:func:`mars_core.supervised.validate`) and the judge's ``semantic`` (NaN without one),
    from one set of estimates."""
    est = validation_estimates(model, rv.val, fe)
    out = dict(validate(model, rv.val, fe, estimates=est))
    out["semantic"] = float("nan")
    if rv.scorer is not None:
        sem = rv.scorer(est.float().cpu())["semantic"]
        out["semantic"] = float(np.nanmean(sem)) if np.isfinite(sem).any() else float("nan")
    return out


# --------------------------------------------------------------------------- run bookkeeping
def _log_val(st: TrainState, step: int, v: dict[str, float]) -> None:
    h = st.history
    h["val_step"].append(step), h["val_sdr"].append(v["sdr"]), h["val_si_sdri"].append(v["si_sdri"])
    h["val_semantic"].append(v["semantic"])


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
        stack: the reward stack (:func:`mars_core.encoders.stack.load_reward_stack`); moved to ``device``.
        run_dir: where ``last.pt`` and ``metrics.csv`` (:class:`~mars_core.progress.CsvLog`) go; one holding
            the same run is resumed (unless ``resume=False``), one holding another run raises ``ValueError``.
        stop_after: stop (checkpointed) after this many steps, as a killed run would.
        judge: ``"auto"`` (:func:`mars_core.evaluate.load_judge`), an encoder, or ``None`` (no semantic score).
        reward_bank: the reward encoder's embeddings of the build (default :func:`~mars_core.rl.rewards.reward_bank`).

    Returns:
        ``(model, history)``: eval-mode model with the best validation step's weights (the last
        ones if stopped early); ``history`` holds :data:`STEP_KEYS` per step, :data:`VAL_KEYS`
        per validation (step 0 = the start), and ``best_step``, ``best_sdr``, ``wall_s``,
        ``steps_done``, ``preset``.
    """
    prof = get_profile(profile)
    cfg = cfg or prof.rl
    check_config(cfg)
    if bank.dim != prof.separator.query_dim:
        raise ValueError(f"query embeddings are {bank.dim}-d but the separator expects query_dim="
                         f"{prof.separator.query_dim}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    build_dir = Path(build_dir) if build_dir is not None else None
    run_cfg = run_config(prof, cfg, separator_key(separator), bank.key, stack)
    fe = FrontEnd(prof.audio)
    stack.encoder.to(device), stack.anchor.to(device)
    rbank = reward_bank if reward_bank is not None else build_reward_bank(stack, prof, build_dir=build_dir,
                                                                            progress=progress)
    reward_model = RewardModel(stack, prof.audio.sample_rate, cfg.lambda_sig, cfg.lambda_neg, cfg.reward_batch_size)
    model = copy.deepcopy(separator).to(device).eval()  # BatchNorm in eval mode throughout (module docstring)
    old_policy = copy.deepcopy(model).requires_grad_(False).eval()
    opt = make_optimizer(model, cfg)
    ema = EMABaseline(decay=cfg.ema_decay)
    ds = MixtureDataset("train", prof, n_items=cfg.steps * cfg.batch_mixtures, build_dir=build_dir, load_images=False)
    if isinstance(judge, str):
        from ..evaluate import load_judge

        judge = load_judge(prof)
    rv = validation(prof, bank, min(cfg.val_mixtures, prof.data.n_val_mixtures), judge=judge, build_dir=build_dir,
                    device=device)
    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    start, st = 0, TrainState({k: [] for k in STEP_KEYS + VAL_KEYS})
    if last is not None and resume and last.exists():
        start, st = resume_last(last, run_cfg, model, opt, "an RL run", ema=ema)
    if start == 0:
        _log_val(st, 0, validate_rl(model, rv, fe))
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    prog = Progress(cfg.steps, f"RL {cfg.preset} {prof.name}", show=("reward_mean", "loss", "val_sdr"), initial=start,
                    enabled=progress)
    csv_log = CsvLog(last.with_name("metrics.csv") if last is not None else None, resume_step=start,
                     fields=STEP_KEYS[1:] + VAL_KEYS[1:])
    if start == 0:  # step = steps done; 0 = the starting point's validation
        csv_log.log(0, **last_row(st.history, (), VAL_KEYS[1:], at=0))
    t0 = time.perf_counter()
    for step in range(start, end):
        kappa = policy.kappa_schedule(step, cfg.steps, cfg.kappa, cfg.kappa_end, cfg.kappa_schedule)
        old_policy.load_state_dict(model.state_dict())
        batch = rl_batch(ds, bank, rbank, stack, fe, step, cfg.batch_mixtures, cfg.query, cfg.seed, device)
        ro = rollout(old_policy, batch, fe, reward_model, kappa, cfg.group_size, seed=step_seed(cfg.seed, step))
        adv, frac_zero = advantages(ro.rewards.cpu(), cfg, ema)
        tu = time.perf_counter()
        stats = ppo_update(model, opt, ro, adv, cfg, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_update = time.perf_counter() - tu
        r = ro.rewards.cpu()
        row = {"step": step, "kappa": kappa, "lr": opt.param_groups[0]["lr"], "reward_mean": r.mean().item(),
               "reward_std": r.std(unbiased=False).item(), "reward_group_std": r.std(1, unbiased=False).mean().item(),
               "reward_semantic": ro.terms["semantic"].mean().item(), "reward_signal": ro.terms["signal"].mean().item(),
               "reward_contamination": ro.terms["contamination"].mean().item(), "adv_mean": adv.mean().item(),
               "adv_std": adv.std(unbiased=False).item(), "frac_zero_std": frac_zero, "entropy": stats["entropy_loss"],
               "t_policy": ro.timings["policy"], "t_rollout": ro.timings["rollout"], "t_reward": ro.timings["reward"],
               "t_update": t_update, **{k: stats[k] for k in ("loss", "pg_loss", "kl_loss", "approx_kl", "clipfrac",
                                                            "ratio_mean", "grad_norm", "skipped_updates")}}
        for key in STEP_KEYS:
            st.history[key].append(row[key])
        check_skipped(st.history, stats, cfg, step)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            v = validate_rl(model, rv, fe)
            _log_val(st, done, v)
            keep_if_best(st, v["sdr"], done, model)
        logged = last_row(st.history, STEP_KEYS[1:], VAL_KEYS[1:], at=done)
        csv_log.log(done, **logged)
        prog.update(done, **logged)
        if last is not None and (done % cfg.ckpt_every == 0 or done == end):
            st.wall_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            save_last(last, run_cfg, done, model, opt, st, ema=ema)
    prog.close()
    st.wall_s += time.perf_counter() - t0
    history = dict(st.history, best_step=st.best_step, best_sdr=st.best_sdr, wall_s=st.wall_s, steps_done=end,
                   preset=cfg.preset)
    if end == cfg.steps and st.best_state is not None:
        model.load_state_dict(st.best_state)
    return model.cpu().eval(), history


# --------------------------------------------------------------------------- load or train
def runs_dir() -> Path:
    """``$MARS_DATA/runs/rl``: where :func:`load_or_train_rl` keeps its runs."""
    return data_root() / "runs" / "rl"


def load_or_train_rl(
    profile: str | Profile | None = None,
    preset: str = "plus",
    *,
    aligned: bool = True,
    run_root: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
    config: RLConfig | None = None,
) -> tuple[torch.nn.Module, dict]:
    """An RL-fine-tuned separator for ``(profile, preset, aligned)``, trained only if none exists.

    Loads the profile's query encoder and bank, the supervised separator
    (:func:`mars_core.supervised.load_or_train`) and the reward stack
    (:func:`mars_core.encoders.stack.load_reward_stack`), then looks for
    ``<run_root or $MARS_DATA/runs/rl>/<profile>-<preset>-<hash>/final.pt`` whose run config
    (:func:`run_config`: RL config, starting separator's weights, query bank key, reward stack
    key) matches; otherwise trains there (resuming a killed run) and writes ``final.pt``.

    Args:
        config: overrides ``rl_preset(profile, preset)`` (e.g. fewer steps).

    Returns:
        ``(model, history)``; ``history["source"]`` names the file, ``history["supervised_source"]``
        the starting separator.
    """
    prof = get_profile(profile)
    cfg = config or rl_preset(prof, preset)
    check_config(cfg)
    bank = load_or_build_query_bank(load_query_encoder(prof), prof, progress=progress, rebuild=retrain)
    separator, sup_hist = load_or_train(prof, bank=bank, progress=progress)
    stack = load_reward_stack(prof, aligned=aligned)
    run_cfg = run_config(prof, cfg, separator_key(separator), bank.key, stack)
    run_dir = Path(run_root or runs_dir()) / f"{prof.name}-{cfg.preset}-{config_hash(run_cfg)}"
    final = run_dir / "final.pt"
    if not retrain and final.exists():
        model, blob = load_separator(final, rebuild=f"python -m mars_core.rl --profile {prof.name} --preset "
                                     f"{cfg.preset}{'' if aligned else ' --unaligned'} --retrain (with the same "
                                     f"--set options), or delete it (rm {final}) and run again")
        if blob["config"] == run_cfg:
            return model, dict(blob["history"], source=str(final), supervised_source=sup_hist.get("source"))
    model, history = train_rl(prof, cfg, separator=separator, bank=bank, stack=stack, run_dir=run_dir,
                              resume=not retrain, progress=progress)
    save_separator(final, model, run_cfg=run_cfg, history=history)
    return model, dict(history, source=str(final), supervised_source=sup_hist.get("source"))
