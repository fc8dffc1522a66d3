"""Cost of one RL step against one supervised step at the same batch size.

The RL step is everything :func:`mars_core.rl.trainer.train_rl` does in a step after the data
loader: refresh the old policy, front end, old-policy pass, G Beta masks per item, their
log-probs, ``G x items`` waveforms (batched iSTFT), their rewards (one reward-encoder call),
advantages, and ``ppo_epochs x minibatches`` clipped updates (profile's ``rl`` config, ``plus``
and ``paper`` presets, with the supervised batch size unless ``--batch``). Inputs are synthetic (as in
``bench_train_step.py``, whose timing, memory and table code this reuses); the reward encoder
is a seeded MiniBind of the profile's size (untrained weights cost the same) and the anchors
are random unit vectors.

Columns: ``x_supervised`` is the RL step's seconds over the supervised step's (target <= 2.0);
``reward_share`` the fraction of the RL step spent in the reward (encoder front end and transformer, signal
term); ``t_policy``, ``t_rollout``, ``t_reward``, ``t_update`` the median seconds of the old-policy pass, the
sampling and reconstruction, the reward and the PPO updates; ``peak_MB`` as in ``bench_train_step.py`` (each
measurement in a fresh subprocess).

At cpu size on one thread of the 2-core machine (issue 17) the ``plus`` step went from 3.6x to 2.5x the
supervised step with the same arithmetic (same masks, rewards within float32 rounding): the filterbank and the
signal term in fewer passes, the head-only updates from the rollout's head input with the query fusion folded
into the head's convolution (:mod:`mars_core.rl.head`), the clipped surrogate's gradient written out, the group
reconstruction without per-mask magnitude and phase. What is left is mostly fixed work: the reward encoder's
transformer on ``G x items x 3`` clips (about 30 % of the step), the gamma draws of the Beta masks (10 %), the
old policy's U-Net, the iSTFT and the Beta log-densities of the updates.

    python benchmarks/bench_rl_step.py                    # smoke
    python benchmarks/bench_rl_step.py --profile cpu --repeats 3 --threads 1
    python benchmarks/bench_rl_step.py --profile cpu --kinds rl       # the supervised step and the plus step only
    python benchmarks/bench_rl_step.py --profile cpu --kinds rl rl_dense --repeats 5 --threads 1
    python benchmarks/bench_rl_step.py --profile cpu --kinds rl_dense rl_dense_compile rl_all rl_all_compile --warmup 2
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train_step as bts  # noqa: E402

from mars_core.audio import FrontEnd  # noqa: E402
from mars_core.config import rl_preset  # noqa: E402
from mars_core.alignment.anchor import MLBPAnchor  # noqa: E402
from mars_core.encoders.minibind import MiniBind  # noqa: E402
from mars_core.alignment.stack import RewardStack  # noqa: E402
from mars_core.rl.advantages import EMABaseline  # noqa: E402
from mars_core.rl.rewards import RewardModel  # noqa: E402
from mars_core.precision import maybe_compile  # noqa: E402
from mars_core.rl.rollout import RLBatch, Trunk, rollout  # noqa: E402
from mars_core.rl.update import advantages, make_optimizer, ppo_update  # noqa: E402
from mars_core.separator import new_separator  # noqa: E402

TIMINGS: list[dict[str, float]] = []
"""Per-call timings of the RL step (policy, rollout, reward, update) of the current process."""


def rl_step(profile, batch_mixtures: int, device, preset: str = "plus", compiled: bool = False,
            **overrides) -> tuple[Callable[[], float], int]:
    """One RL step (mars_core.rl) of a preset (``overrides``: RLConfig fields): the factory
    :func:`bench_train_step.measure` times. ``compiled``: the U-Net trunk through ``torch.compile`` as ``--compile``
    runs it (the old policy's in the rollout; the model's in the updates when every weight trains)."""
    import time

    cfg = replace(rl_preset(profile, preset), **overrides)
    cfg = replace(cfg, batch_mixtures=batch_mixtures, minibatches=min(cfg.minibatches, batch_mixtures))
    model = new_separator(profile, 0).to(device).eval()
    old = copy.deepcopy(model).requires_grad_(False)
    opt = make_optimizer(model, cfg)
    enc = MiniBind.from_profile(profile, seed=0).to(device).eval().requires_grad_(False)
    stack = RewardStack(enc, MLBPAnchor(enc.embed_dim, 64).to(device).eval(), aligned=False, key="bench")
    reward_model = RewardModel.from_config(stack, profile.audio.sample_rate, cfg)
    fe = FrontEnd(profile.audio)
    data = bts.synthetic_batch(profile, batch_mixtures, device)
    b, k = data["queries"].shape[:2]
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(b * k, enc.embed_dim, generator=g), dim=-1).to(device)
    z_neg = z.reshape(b, k, -1).flip(1).reshape(b * k, 1, -1)
    ema = EMABaseline(cfg.ema_decay)
    calls = {"n": 0}
    old_trunk = maybe_compile(Trunk(old), True) if compiled else None
    trunk = maybe_compile(Trunk(model), True) if compiled and cfg.trainable != "head" else None

    def step() -> float:
        t0 = time.perf_counter()
        old.load_state_dict(model.state_dict())
        batch = RLBatch(fe.features(data["mixture"]), data["queries"], data["mixture"], data["sources"], z, z_neg)
        ro = rollout(old, batch, fe, reward_model, cfg.kappa, cfg.group_size, seed=calls["n"],
                     reward_segments=cfg.reward_segments, trunk=old_trunk)
        adv, _ = advantages(ro.rewards.cpu(), cfg, ema)
        tu = time.perf_counter()
        stats = ppo_update(model, opt, ro, adv, cfg, calls["n"], trunk=trunk)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        calls["n"] += 1
        TIMINGS.append(dict(ro.timings, update=t1 - tu, total=t1 - t0))
        return stats["loss"]

    return step, sum(p.numel() for p in model.parameters())


bts.STEPS.setdefault("rl", rl_step)
bts.STEPS.setdefault("rl_paper", partial(rl_step, preset="paper"))
bts.STEPS.setdefault("rl_all", partial(rl_step, trainable="all"))
bts.STEPS.setdefault("rl_dense", partial(rl_step, preset="dense"))
bts.STEPS.setdefault("rl_dense_compile", partial(rl_step, preset="dense", compiled=True))
bts.STEPS.setdefault("rl_all_compile", partial(rl_step, trainable="all", compiled=True))
RL_KINDS = {"rl": ("plus", {}), "rl_paper": ("paper", {}), "rl_all": ("plus", {"trainable": "all"}),
            "rl_dense": ("dense", {}), "rl_dense_compile": ("dense", {}),
            "rl_all_compile": ("plus", {"trainable": "all"})}
"""Timed RL steps: their preset and overrides (``rl_all``: ``plus`` training every weight, for comparison;
``rl_dense``: the dense preset, 64 segment SI-SDR rewards and no reward-encoder call; ``*_compile``: the same
with ``--compile``, the trunk through ``torch.compile``, its compilation in the warm-up steps)."""


def measure(kind: str, profile_name: str, batch_mixtures: int | None, device: str, warmup: int, repeats: int) -> dict:
    """:func:`bench_train_step.measure` plus, for the RL step, the median time split and reward share."""
    TIMINGS.clear()
    row = bts.measure(kind, profile_name, batch_mixtures, device, warmup, repeats)
    if kind in RL_KINDS and TIMINGS:
        timed = TIMINGS[warmup:] or TIMINGS
        med = lambda key: sorted(t[key] for t in timed)[len(timed) // 2]  # noqa: E731
        row.update({f"t_{key}": med(key) for key in ("policy", "rollout", "reward", "update")})
        row["reward_share"] = sorted(t["reward"] / t["total"] for t in timed)[len(timed) // 2]
        preset, overrides = RL_KINDS[kind]
        cfg = replace(rl_preset(profile_name, preset), **overrides)
        row.update(group_size=cfg.group_size, ppo_epochs=cfg.ppo_epochs, minibatches=cfg.minibatches,
                   trainable=cfg.trainable)
    return row


def table(rows: list[dict]):
    """:func:`bench_train_step.table` (``x_supervised``) with the RL columns."""
    df = bts.table(rows)
    cols = ["step", "profile", "device", "threads", "items", "group_size", "ppo_epochs", "minibatches", "trainable", "s_per_step", "x_supervised", "reward_share",
            "t_policy", "t_rollout", "t_reward", "t_update", "peak_MB", "step_MB"]
    return df[[c for c in cols if c in df.columns]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    ap.add_argument("--profile", nargs="+", default=["smoke"], help="profiles to time (smoke, cpu, full)")
    ap.add_argument("--batch", type=int, default=None,
                    help="mixtures per step for both steps (default: profile.supervised.batch_mixtures)")
    ap.add_argument("--device", default="cuda" if gpu else "cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--kinds", nargs="+", default=list(RL_KINDS), choices=list(RL_KINDS),
                    help="RL steps to time besides the supervised one (default: all)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", nargs=2, metavar=("STEP", "PROFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(*args.worker, args.batch, args.device, args.warmup, args.repeats)))
        return 0
    rows = bts.run_workers(__file__, args.profile, ["supervised", *args.kinds], args)
    print(f"{bts.machine()}; {args.threads} torch threads; median of {args.repeats} steps after {args.warmup} warm-up")
    print(table(rows).round(3).to_string(index=False))
    for r in table(rows).itertuples():
        if r.step in RL_KINDS:
            print(f"{r.profile}: RL ({r.step}: {RL_KINDS[r.step][0]}, trains {r.trainable}) / supervised time {r.x_supervised:.2f} (target <= 2.0), "
                  f"reward encoder {100 * r.reward_share:.0f}% of the RL step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
