"""Supervised mix-and-separate training of the query-conditioned separator (docs/method.md section 3).

One step, for ``B = batch_mixtures`` training mixtures:

1. mixtures ``step * B ... step * B + B - 1`` of the ``train`` split (each a pure function of
   its index, so a step's data depends on nothing but the step);
2. every source ``n`` of a mixture is an item with its own query: Query-Mixup
   ``q = w_v n(e_v) + w_t n(e_t) + w_a n(e_a)`` with ``w ~ U(0, 1)^3 / sum`` drawn from
   ``item_rng(seed, "query-mixup", step)`` and embeddings from the cached
   :class:`~mars_core.queries.QueryBank`;
3. target in the warped domain: ``M = 1[|S_n| > 0.5 |X|]`` (or the ratio mask);
4. loss: ``mean(w * BCE(P, M))`` with ``w = clamp(log(1 + |X|), 1e-3, 10)`` (or weighted L1);
5. Adam(W) with linear warm-up and linear decay to ``final_lr_ratio x lr``, gradient norm
   clipped to ``grad_clip``.

The U-Net does not see the query (it meets the K feature maps only at the output), so the
``n_sources`` items of one mixture share one U-Net pass (:func:`multi_query_logits`).

Validation every ``eval_every`` steps: SDR (BSS Eval v4, whole signal) and SI-SDRi of the
first ``val_mixtures`` ``val`` mixtures with the deterministic mask ``P`` and the omni
query; the best step's weights are kept. ``last.pt`` (model, optimiser, scheduler, step,
history, best weights, RNG state, run config) is written atomically every ``ckpt_every``
steps: a killed run started again resumes and reaches the same weights as an
uninterrupted one.

Command line (writes ``final.pt`` in the run directory and, with ``--out``, a copy)::

    python -m mars_core.supervised --profile cpu --out checkpoints/separator_cpu.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import FrontEnd
from .checkpoints import load_checkpoint, save_checkpoint
from .config import Profile, SeparatorConfig, SupervisedConfig, get_profile
from .data.manifest import benchmark_dir, data_root
from .data.mixing import MixtureDataset, collate
from .losses import mask_targets, weighted_bce, weighted_l1
from .metrics import sdr as sdr_metric
from .metrics import si_sdr
from .progress import CsvLog, Progress, last_row
from .queries import (TRAIN_QUERIES, QueryBank, compose, evaluation_ref, item_queries, load_or_build_query_bank,
                      load_query_encoder, mixup_weights, modality_embeddings)
from .separator import QuerySeparator
from .seeding import item_rng

SEPARATOR_KIND = "separator"


# --------------------------------------------------------------------------- pieces
def check_config(cfg: SupervisedConfig) -> None:
    """Raise ``ValueError`` naming the first invalid field of a :class:`SupervisedConfig`."""
    if cfg.optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {cfg.optimizer!r}")
    if cfg.loss not in ("bce", "l1"):
        raise ValueError(f"loss must be 'bce' or 'l1', got {cfg.loss!r}")
    if cfg.query not in TRAIN_QUERIES:
        raise ValueError(f"query must be one of {TRAIN_QUERIES}, got {cfg.query!r}")
    for name in ("steps", "batch_mixtures", "eval_every", "ckpt_every", "val_mixtures"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.warmup_steps < 0 or not 0 < cfg.final_lr_ratio <= 1 or cfg.lr <= 0 or cfg.grad_clip <= 0:
        raise ValueError("need warmup_steps >= 0, 0 < final_lr_ratio <= 1, lr > 0 and grad_clip > 0")


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
    """``(optimizer, scheduler)``: Adam or AdamW at ``cfg.lr`` with :func:`lr_factor` as a LambdaLR."""
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    opt = cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))


def multi_query_logits(model: QuerySeparator, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Logits of ``K`` queries per mixture with one U-Net pass per mixture.

    Equals ``model(features[b], queries[b, k], return_logits=True)`` for every ``(b, k)``
    (the query meets the U-Net's maps only in the output fusion).

    Shape:
        features: ``(B, 1, F, T)``; queries: ``(B, K, D)``; returns ``(B, K, F, T)``.
    """
    if queries.dim() != 3 or queries.shape[0] != features.shape[0]:
        raise ValueError(f"queries must be (batch={features.shape[0]}, K, D), got {tuple(queries.shape)}")
    return logits_from_trunk(model, model.unet.trunk(features), queries)


def logits_from_trunk(model: QuerySeparator, trunk: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """:func:`multi_query_logits` from the U-Net's trunk output (``model.unet.trunk(features)``).

    Shape:
        trunk: ``(B, 2 ch_0, F/2, T/2)``; queries: ``(B, K, D)``; returns ``(B, K, F, T)``.
    """
    b, k, d = queries.shape
    maps = model.unet.head(trunk)  # (B, C, F, T)
    qv = model.query_vector(queries.reshape(b * k, d)).reshape(b, k, -1)
    if model.cfg.conditioning == "inner":  # without copying the maps K times
        return model.inner_logits(maps, qv)
    rep = maps.unsqueeze(1).expand(b, k, *maps.shape[1:]).reshape(b * k, *maps.shape[1:])
    return model.fuse(rep, qv.reshape(b * k, -1)).reshape(b, k, *maps.shape[-2:])


def train_dataset(profile: Profile, cfg: SupervisedConfig, build_dir: Path | None = None) -> MixtureDataset:
    """The ``train`` mixtures: ``steps x batch_mixtures`` items, random gains and crops, no images."""
    return MixtureDataset("train", profile, n_items=cfg.steps * cfg.batch_mixtures, build_dir=build_dir,
                          load_images=False)


def training_batch(ds: MixtureDataset, bank: QueryBank, fe: FrontEnd, step: int, cfg: SupervisedConfig,
                   device: str | torch.device = "cpu") -> dict:
    """Everything step ``step`` trains on (on ``device``); a pure function of ``(data seed, cfg.seed, step)``.

    Returns ``features (B, 1, F, T)``, ``queries (B, K, D)``, ``targets (B, K, F, T)``
    (IBM for ``bce``, IRM for ``l1``) and ``mix_mag (B, 1, F, T)`` (warped ``|X|``), with
    ``K = n_sources`` items per mixture (target first, then each interferer as a target).
    """
    b = cfg.batch_mixtures
    items = [ds[step * b + j] for j in range(b)]
    batch = collate(items)
    mix_w = fe.warp(fe.stft(batch["mixture"].to(device)).abs())  # (B, F, T)
    src_w = fe.warp(fe.stft(batch["sources"].to(device)).abs())  # (B, K, F, T)
    refs = [r for it in items for r in item_queries(ds, it)]
    k = src_w.shape[1]
    rng = item_rng(cfg.seed, "query-mixup", step)
    weights = mixup_weights(rng, len(refs)) if cfg.query == "mixup" else None
    q = compose(modality_embeddings(bank, refs), cfg.query, weights)
    return {
        "features": torch.log(mix_w + 1e-10).unsqueeze(1),
        "queries": q.reshape(b, k, -1).to(device),
        "targets": mask_targets(src_w, mix_w.unsqueeze(1), "ibm" if cfg.loss == "bce" else "irm"),
        "mix_mag": mix_w.unsqueeze(1),
    }


def supervised_loss(model: QuerySeparator, batch: dict, loss: str = "bce") -> torch.Tensor:
    """Weighted BCE on logits (``bce``) or weighted L1 on ``P`` (``l1``) over every item of the batch."""
    logits = multi_query_logits(model, batch["features"], batch["queries"])
    mix = batch["mix_mag"].expand_as(logits)
    flat = lambda x: x.reshape(-1, *x.shape[-2:])  # noqa: E731
    if loss == "bce":
        return weighted_bce(flat(logits), flat(batch["targets"]), flat(mix))
    return weighted_l1(flat(torch.sigmoid(logits)), flat(batch["targets"]), flat(mix))


# --------------------------------------------------------------------------- validation
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


# --------------------------------------------------------------------------- run bookkeeping
def run_config(profile: Profile, cfg: SupervisedConfig, bank: QueryBank) -> dict[str, Any]:
    """What a run depends on: sizes, data, separator, training config, encoder and manifest."""
    return {"profile": profile.name, "audio": asdict(profile.audio), "data": asdict(profile.data),
            "separator": asdict(profile.separator), "supervised": asdict(cfg), "queries": bank.key}


def config_hash(run_cfg: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of a run config (keys sorted)."""
    return hashlib.sha256(json.dumps(run_cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


HISTORY_KEYS = ("step", "loss", "lr", "grad_norm", "val_step", "val_sdr", "val_si_sdri")
"""Entries of the supervised trainer's ``history``."""


@dataclass
class TrainState:
    """What a resumed run needs besides model, optimiser and scheduler (supervised and RL trainers)."""

    history: dict
    best_sdr: float = -math.inf
    best_step: int = -1
    best_state: dict | None = None
    wall_s: float = 0.0


def save_last(path: Path, run_cfg: dict, step: int, model, opt, st: Any, **stateful: Any) -> None:
    """Write the resumable ``last.pt`` atomically: weights, optimiser, ``stateful`` objects (anything with
    ``state_dict``: a scheduler, an EMA baseline), the trainer state ``st`` and the RNG streams.
    Shared by the supervised and the RL trainers."""
    save_checkpoint(path, config=run_cfg, step=step, model=model.state_dict(), optimizer=opt.state_dict(),
                    **{k: v.state_dict() for k, v in stateful.items()}, history=st.history, best_sdr=st.best_sdr,
                    best_step=st.best_step, best_state=st.best_state, wall_s=st.wall_s)


def resume_last(path: Path, run_cfg: dict, model, opt, what: str = "a run",
                **stateful: Any) -> tuple[int, TrainState]:
    """Load :func:`save_last`'s file into ``model``, ``opt`` and ``stateful`` (RNG streams restored):
    ``(step, TrainState(history, best_sdr, best_step, best_state, wall_s))``.

    Raises:
        ValueError: the file belongs to ``what`` with another run configuration.
        CheckpointError: the file is unreadable (named, with how to restart the run).
    """
    todo = (f"delete it (rm {shlex.quote(str(path))}) to restart {what} from step 0, or train with resume=False "
            "(command line: --retrain)")
    blob = load_checkpoint(path, restore_rng=True, rebuild=todo)  # CPU tensors; load_state_dict copies them
    if blob["config"] != run_cfg:
        raise ValueError(f"{path} belongs to {what} with another configuration, encoder or data; "
                         "use another run directory or resume=False")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    for k, v in stateful.items():
        v.load_state_dict(blob[k])
    return blob["step"], TrainState(blob["history"], blob["best_sdr"], blob["best_step"], blob["best_state"],
                                    blob["wall_s"])


def keep_if_best(st: Any, sdr: float, step: int, model: torch.nn.Module) -> bool:
    """Make ``step`` the best so far (a CPU copy of the weights) when its val SDR beats ``st.best_sdr``.

    ``st`` is a trainer state with ``best_sdr``, ``best_step`` and ``best_state`` (the supervised
    and the RL trainers share this rule). Returns whether it did.
    """
    if not sdr > st.best_sdr:
        return False
    st.best_sdr, st.best_step = sdr, step
    st.best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
    return True


def new_separator(profile: Profile, seed: int, query_init_std: float = 0.0) -> QuerySeparator:
    """A freshly initialised separator whose weights depend only on ``seed``.

    ``query_init_std > 0`` redraws the query projection ``W ~ N(0, query_init_std^2)``
    (``SupervisedConfig.query_init_std``); 0 keeps the reference ``N(0, 1e-4)``.
    """
    if query_init_std < 0:
        raise ValueError(f"query_init_std must be >= 0, got {query_init_std}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = QuerySeparator(profile.separator)
        if query_init_std > 0:
            with torch.no_grad():
                model.query_proj.weight.normal_(0.0, query_init_std)
    return model


# --------------------------------------------------------------------------- the loop
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

    Returns:
        ``(model, history)``: eval-mode model with the best validation step's weights (the
        last weights if stopped early); ``history`` has per-step ``step, loss, lr,
        grad_norm``, per-validation ``val_step, val_sdr, val_si_sdri`` and ``best_step``,
        ``best_sdr``, ``wall_s``, ``steps_done``.
    """
    prof = get_profile(profile)
    cfg = config or prof.supervised
    check_config(cfg)
    if bank.dim != prof.separator.query_dim:
        raise ValueError(f"query embeddings are {bank.dim}-d but the separator expects query_dim="
                         f"{prof.separator.query_dim}")
    build_dir = Path(build_dir) if build_dir is not None else None
    run_cfg = run_config(prof, cfg, bank)
    fe = FrontEnd(prof.audio)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = new_separator(prof, cfg.seed, cfg.query_init_std).to(device)
    opt, sched = make_optimizer(model, cfg)
    ds = train_dataset(prof, cfg, build_dir)
    val = validation_set(prof, bank, min(cfg.val_mixtures, prof.data.n_val_mixtures), build_dir, device)
    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    start, st = 0, TrainState({k: [] for k in HISTORY_KEYS})
    if last is not None and resume and last.exists():
        start, st = resume_last(last, run_cfg, model, opt, scheduler=sched)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    prog = Progress(cfg.steps, f"supervised {prof.name}", show=("loss", "val_sdr"), initial=start, enabled=progress)
    csv_log = CsvLog(Path(run_dir) / "metrics.csv" if run_dir is not None else None, resume_step=start,
                     fields=HISTORY_KEYS[1:4] + HISTORY_KEYS[5:])  # step = steps done
    t0 = time.perf_counter()
    for step in range(start, end):
        model.train()
        loss = supervised_loss(model, training_batch(ds, bank, fe, step, cfg, device), cfg.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        h = st.history
        h["step"].append(step), h["loss"].append(loss.item()), h["lr"].append(opt.param_groups[0]["lr"])
        h["grad_norm"].append(float(grad_norm))
        opt.step()
        sched.step()
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            v = validate(model, val, fe)
            h["val_step"].append(done), h["val_sdr"].append(v["sdr"]), h["val_si_sdri"].append(v["si_sdri"])
            keep_if_best(st, v["sdr"], done, model)
        row = last_row(h, HISTORY_KEYS[1:4], HISTORY_KEYS[5:], at=done)
        csv_log.log(done, **row)
        prog.update(done, **row)
        if last is not None and (done % cfg.ckpt_every == 0 or done == end):
            st.wall_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            save_last(last, run_cfg, done, model, opt, st, scheduler=sched)
    prog.close()
    st.wall_s += time.perf_counter() - t0
    history = dict(st.history, best_step=st.best_step, best_sdr=st.best_sdr, wall_s=st.wall_s, steps_done=end)
    if end == cfg.steps and st.best_state is not None:
        model.load_state_dict(st.best_state)
    return model.cpu().eval(), history


# --------------------------------------------------------------------------- saving and loading
def save_separator(path: str | os.PathLike, model: QuerySeparator, *, run_cfg: dict, history: dict) -> Path:
    """Write a trained separator atomically: weights, separator config, run config (and its hash), history."""
    return save_checkpoint(path, config=run_cfg, with_rng=False, kind=SEPARATOR_KIND, key=config_hash(run_cfg),
                           separator=asdict(model.cfg), model=model.state_dict(), history=history)


def load_separator(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                   rebuild: str | None = None) -> tuple[QuerySeparator, dict]:
    """Load :func:`save_separator`'s file: ``(model in eval mode, checkpoint dict)``.

    Args:
        rebuild: the command an error message gives for an unreadable file (default: delete it and run again).

    Raises:
        FileNotFoundError: no file; ValueError: a checkpoint of something else;
        CheckpointError: an unreadable file (named, with ``rebuild``).
    """
    blob = load_checkpoint(path, map_location=map_location, rebuild=rebuild)
    if blob.get("kind") != SEPARATOR_KIND:
        raise ValueError(f"{path} is not a separator checkpoint (kind={blob.get('kind')!r})")
    sep = dict(blob["separator"], down_channels=tuple(blob["separator"]["down_channels"]))
    model = QuerySeparator(SeparatorConfig(**sep))
    model.load_state_dict(blob["model"])
    return model.eval(), blob


def _separator_rebuild_hint(path: Path, profile: Profile) -> str:
    """What to do about an unreadable shipped separator or run ``final.pt`` (the command that rebuilds it)."""
    retrain = f"python -m mars_core.supervised --profile {profile.name} --retrain"
    if path == shipped_separator(profile):
        return (f"restore it (git checkout -- {shlex.quote(str(path))}) or train a new one: {retrain} --out "
                f"{shlex.quote(str(path))}")
    return f"{retrain} (or delete it: rm {shlex.quote(str(path))}, and run again)"


def shipped_separator(profile: str | Profile | None = None) -> Path:
    """``checkpoints/separator_<profile>.pt`` (or under ``$MARS_CHECKPOINTS``)."""
    from .encoders.minibind import checkpoints_dir

    return checkpoints_dir() / f"separator_{get_profile(profile).name}.pt"


def runs_dir() -> Path:
    """``$MARS_DATA/runs/supervised``: where :func:`load_or_train` keeps its runs."""
    return data_root() / "runs" / "supervised"


def load_or_train(
    profile: str | Profile | None = None,
    config: SupervisedConfig | None = None,
    *,
    bank: QueryBank | None = None,
    encoder=None,
    run_root: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[QuerySeparator, dict]:
    """A trained separator for ``(profile, config, encoder, data)``, trained only if none exists.

    Looks, in order, for the shipped ``checkpoints/separator_<profile>.pt`` and for
    ``<run_root>/<profile>-<hash>/final.pt``, whose run config must match (``hash`` is
    :func:`config_hash` of :func:`run_config`, which includes the encoder fingerprint and
    the manifest hash); otherwise trains in that run directory (resuming a killed run)
    and writes ``final.pt``.

    Returns:
        ``(model, history)``; ``history["source"]`` says where the model came from.
    """
    prof = get_profile(profile)
    cfg = config or prof.supervised
    if bank is None:
        bank = load_or_build_query_bank(encoder or load_query_encoder(prof), prof, build_dir=build_dir,
                                        progress=progress, rebuild=retrain)
    run_cfg = run_config(prof, cfg, bank)
    run_dir = Path(run_root or runs_dir()) / f"{prof.name}-{config_hash(run_cfg)}"
    if not retrain:
        for path in (shipped_separator(prof), run_dir / "final.pt"):
            if path.exists():
                model, blob = load_separator(path, rebuild=_separator_rebuild_hint(path, prof))
                if blob["config"] == run_cfg:
                    return model, dict(blob["history"], source=str(path))
    model, history = train_supervised(prof, bank, cfg, run_dir=run_dir, resume=not retrain, build_dir=build_dir,
                                      progress=progress)
    save_separator(run_dir / "final.pt", model, run_cfg=run_cfg, history=history)
    return model, dict(history, source=str(run_dir / "final.pt"))


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.supervised", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: $MARS_PROFILE or smoke)")
    p.add_argument("--steps", type=int, default=None, help="override profile.supervised.steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="also copy the trained separator here (e.g. checkpoints/separator_cpu.pt)")
    p.add_argument("--retrain", action="store_true", help="train afresh even if a matching run exists")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = get_profile(args.profile)
    cfg = prof.supervised if args.steps is None else replace(prof.supervised, steps=args.steps)
    encoder = load_query_encoder(prof)
    bank = load_or_build_query_bank(encoder, prof, rebuild=args.retrain)
    t0 = time.perf_counter()
    model, history = load_or_train(prof, cfg, bank=bank, retrain=args.retrain)
    print(f"separator from {history['source']}: best step {history['best_step']} (val SDR "
          f"{history['best_sdr']:.2f} dB), training wall time {history['wall_s']:.0f} s, "
          f"this call {time.perf_counter() - t0:.0f} s")
    if args.out:
        save_separator(args.out, model, run_cfg=run_config(prof, cfg, bank),
                       history={k: v for k, v in history.items() if k != "source"})
        print(f"-> {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
    if not args.no_eval:
        from .evaluate import evaluate_all, load_judge, results_table

        table = results_table(evaluate_all(model, prof, bank, split="test", judge=load_judge(prof)))
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
