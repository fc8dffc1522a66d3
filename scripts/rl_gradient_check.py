"""How good is the policy gradient? The gradient-cosine table of RL's estimators against the exact gradient.

The separator is evaluated with its deterministic mode ``P``. On a training batch the exact gradient
``g*`` of the mean signal reward of the mode's waveforms (``clamp(SI-SDR, -30, 30) / 10``) with respect
to the head's weights (RL's ``trainable="head"``: the trunk is frozen) is one backward pass through the
iSTFT. Each estimator (:mod:`mars_core.rl.gradient_estimates`) estimates from ``N`` sampled masks per
batch (``N / items`` per item) the gradient of the *sampled* masks' expected reward; this script prints,
for every estimator x kappa x N:

* ``cos``: the mean cosine between one estimate and ``g*`` (+- its standard error over every rollout of
  every batch): what one update follows;
* ``cos_avg``: the cosine between ``g*`` and the mean of a batch's ``--rollouts`` estimates (averaged over
  batches): where many updates go; at the largest N it approaches the estimator's bias ceiling (the
  sampled objective is not the mode's: even a noise-free estimate of it has a cosine below 1).

Estimators: ``score`` (GRPO: group advantages, one reward per mask), ``loo`` (leave-one-out advantages),
``segments`` (``--segments`` S per-segment rewards and group advantages, each bin credited with its
segment's), ``segments-error`` (the segments' shares of the error energy, which add up to the waveform's
SI-SDR reward to first order, with leave-one-out advantages: :func:`mars_core.rl.segments.error_share_rewards`),
``pathwise`` (Beta ``rsample`` through the differentiable reward, the reference). Each ``--trainer-variant
NAME[:field=value,...]`` adds ``trainer:NAME``: the trainer's *own* first PPO update with the whole reward of the
preset with those fields (semantic, contamination and signal terms), its advantages, segments, entropy and KL terms,
which is what a training run follows (the estimators above see the signal term alone).

The square-root law: a score-function estimate is one scalar advantage spread over ``D`` bins per mask, so
``cos ~ c sqrt(N)`` while ``cos`` is small, with ``c ~ 1 / sqrt(D_eff)``. The script fits ``c`` per
estimator and kappa (points with ``0 < cos < 0.5``), and measures ``cos`` against ``D`` at the first kappa
and ``--dim-samples`` N by sampling only a random fraction ``--dims`` of the bins (the others held at ``P``;
``g*`` taken through the same bins). ``--out`` gets ``cosine_table.csv``, ``dimension.csv`` and
``sqrt_law.png`` (cosine against N per kappa and against D, N and D on log axes, with the fitted lines).

``--headroom N`` (the calibration runs; ``--headroom-noise`` score or segments: the estimator's own zero-mean noise instead): how far the same head weights get on val SDR when they follow ``g*`` of the
mode's SI-SDR for N steps on fresh batches (the preset's optimizer and lr), and with ``--headroom-cos`` when they
follow ``g*`` plus isotropic noise at each per-update cosine (``calibration.csv``): the cosine an update needs.

``--plot-only DIR`` redraws ``DIR/sqrt_law.png`` from the tables a run left there (nothing computed).

``--agreement KAPPA ...``: the sampled masks' objective against the mode's per kappa (``agreement.csv``).

``--reference remainder``: the table's signal term (every estimator and ``g*``) against the remainder of the mode's
other estimates instead of the clean source, the reward of ``signal_reference='remainder'`` (``--candidate-terms``
gives that objective's exact direction against the clean ``g*``).

``--reward-gradient B``: the reward's own direction: on B batches, the cosine with ``g*`` of the exact gradient of the
mode's encoder reward (semantic term, contamination penalty, the preset's mix; through the reward encoder, no sampling),
the ceiling of every estimator of that reward (``reward_gradient.csv``). With ``--set train_split=test_timbre``
(and ``--set lambda_sig=0``) the batches come from that split, as an adaptation run's do.

    OMP_NUM_THREADS=1 python scripts/rl_gradient_check.py --profile cpu    # about 7 minutes on a busy 2-core machine
    python scripts/rl_gradient_check.py --profile cpu --kappa 30 300 --samples 32 128 512 2048 --rollouts 8 --batches 4
    python scripts/rl_gradient_check.py --profile cpu --headroom 200 --estimators
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mars_core.encoders.load import load_judge
from mars_core.queries import item_queries
from mars_core.rl import gradient_estimates as ge
from mars_core.rl.cli import base_parser, parse_overrides
from mars_core.rl.config import check_config
from mars_core.rl.diagnostics import (CANDIDATE_TERMS, cosine, exact_gradient, exact_judge_gradient,
                                      exact_reward_gradient, flat, mode_candidate_terms, mode_si_sdr, setup_from_args,
                                      trainer_update_gradient)
from mars_core.rl.rewards import RewardModel
from mars_core.rl.rollout import proposal_from_trunk, remainder_references, rl_batch
from mars_core.rl.trainer import training_data
from mars_core.rl.update import make_optimizer, trainable_parameters
from mars_core.rl.validation import validate_rl, validation

ESTIMATORS = ("score", "loo", "segments", "segments-window", "segments-error", "segments-error-window", "pathwise")


def trainer_variants(su, specs: list[str]) -> dict[str, tuple]:
    """``NAME[:field=value,...]`` -> ``{NAME: (config, reward model)}``: the preset with those RLConfig fields (typed
    as ``--set`` types them) and its own reward model; ``plus`` alone is the preset itself."""
    out = {}
    for spec in specs:
        name, _, fields = spec.partition(":")
        cfg = replace(su.cfg, **parse_overrides([f for f in fields.split(",") if f]))
        check_config(cfg)
        out[name] = (cfg, RewardModel.from_config(su.stack, su.prof.audio.sample_rate, cfg))
    return out


def trainer_update(pb: ge.HeadProblem, cfg, reward_model, kappa: float, group_size: int) -> torch.Tensor:
    """:func:`mars_core.rl.diagnostics.trainer_update_gradient` at the table's ``kappa`` and ``group_size``."""
    cfg = replace(cfg, kappa=kappa, kappa_end=kappa, group_size=group_size)
    return trainer_update_gradient(pb.model, pb.params, pb.batch, pb.fe, cfg, reward_model,
                                   seed=int(torch.randint(0, 2**31, ()).item()))


def estimate(pb: ge.HeadProblem, name: str, kappa: float, group_size: int, segments: int,
             bins: torch.Tensor | None = None) -> torch.Tensor:
    """One flat gradient estimate of ``name`` (:data:`ESTIMATORS`)."""
    if name.startswith("trainer:"):
        return trainer_update(pb, *pb.variants[name.partition(":")[2]], kappa, group_size)
    if name == "pathwise":
        return ge.pathwise_gradient(pb, kappa, group_size, bins)
    if name == "segments":
        return ge.score_gradient(pb, kappa, group_size, "group", segments, bins)
    if name == "segments-window":
        return ge.score_gradient(pb, kappa, group_size, "group", segments, bins, segment_credit="window")
    if name == "segments-error":
        return ge.score_gradient(pb, kappa, group_size, "loo", segments, bins, segment_signal="error")
    if name == "segments-error-window":
        return ge.score_gradient(pb, kappa, group_size, "loo", segments, bins, segment_signal="error",
                                 segment_credit="window")
    return ge.score_gradient(pb, kappa, group_size, "loo" if name == "loo" else "group", 0, bins)


def cosines(pb: ge.HeadProblem, g_star: torch.Tensor, name: str, kappa: float, group_size: int, segments: int,
            rollouts: int, seed: int, bins: torch.Tensor | None = None) -> tuple[list[float], float]:
    """Each rollout's cosine with ``g*`` and the cosine of their mean (rollout r seeded with ``seed + r``)."""
    grads = []
    for r in range(rollouts):
        torch.manual_seed(seed + r)
        grads.append(estimate(pb, name, kappa, group_size, segments, bins))
    return [cosine(g, g_star) for g in grads], cosine(torch.stack(grads).mean(0), g_star)


def reward_gradients(args, su, params, model, ds, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``--reward-gradient B``: on each of B training batches (of ``--set train_split``), the cosine with ``g*`` of the
    exact gradient of the mode's encoder reward (:func:`mars_core.rl.diagnostics.exact_reward_gradient`): the
    semantic term alone, the contamination penalty alone, and the preset's ``lambda_sem`` / ``lambda_neg`` mix. No
    estimator can follow the reward more closely than this, so it is the reward's own agreement with SI-SDR.
    ``--judge-gradient``: also the term ``judge``, the judge's semantic score of each item's prompt (never a reward).
    Writes ``reward_gradient.csv`` (one row per term and batch) and prints mean +- s.e. over the batches, and the
    cosine between the gradients summed over the batches (where many updates go together); returns both tables."""
    cfg, fe = su.cfg, su.fe
    terms = {"semantic": (1.0, 0.0), "contamination": (0.0, 1.0), "reward": (cfg.lambda_sem, cfg.lambda_neg)}
    terms = {t: w for t, w in terms.items() if w != (0.0, 0.0)}
    judge = load_judge(su.prof) if getattr(args, "judge_gradient", False) else None
    if judge is not None:
        if hasattr(ds, "step_items"):
            raise SystemExit("--judge-gradient reads each item's prompt from random-pair batches: use hard_pair_prob=0")
        judge = judge.to(su.device)
    rows, sums, star_sum = [], {t: 0.0 for t in [*terms, *(["judge"] if judge is not None else [])]}, 0.0
    for j in range(args.reward_gradient):
        batch = rl_batch(ds, su.bank, su.rbank, su.stack, fe, j, cfg.batch_mixtures, cfg.query, cfg.seed, su.device,
                         query_noise=cfg.query_noise, pure_query_prob=cfg.pure_query_prob)
        g_star, sdr = exact_gradient(model, params, batch, fe)
        star_sum = star_sum + g_star
        grads = {t: exact_reward_gradient(model, params, batch, fe, su.reward_model, *w) for t, w in terms.items()}
        if judge is not None:  # the judge's score of each item's prompt, as the benchmark computes it
            prompts = [r.text for i in range(cfg.batch_mixtures)
                       for r in item_queries(ds, ds[j * cfg.batch_mixtures + i])]  # rl_batch's item order
            with torch.no_grad():
                targets = judge.embed_text(prompts).to(su.device)
            grads["judge"] = exact_judge_gradient(model, params, batch, fe, judge, su.prof.audio.sample_rate, targets)
        for term, (g, value) in grads.items():
            sem, neg = terms.get(term, (float("nan"), float("nan")))
            sums[term] = sums[term] + g
            rows.append({"split": cfg.train_split, "aligned": bool(su.stack.aligned), "term": term, "lambda_sem": sem,
                         "lambda_neg": neg, "batch": j,
                         "cos": cosine(g, g_star), "value": value, "mode_si_sdr": sdr})
    aligned = "aligned" if su.stack.aligned else "un-aligned"
    return cosine_summary(rows, sums, star_sum, out / "reward_gradient.csv",
                          f"exact gradient of the mode's {aligned} encoder reward against g* ({cfg.train_split}, "
                          f"{args.reward_gradient} batches of {cfg.batch_mixtures} mixtures")


def cosine_summary(rows: list[dict], sums: dict, star_sum, path: Path, title: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the per-batch ``rows`` to ``path`` and print, per term, the mean cosine +- s.e. over the batches and the
    cosine of the gradients summed over them (``sums[term]`` against ``star_sum``: where the batches point together);
    returns ``(table, summary)``."""
    table = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    summary = table.groupby("term", sort=False)["cos"].agg(["mean", "std", "count"])
    summary["se"] = summary["std"] / np.sqrt(summary["count"])
    summary["cos_of_sums"] = [cosine(sums[t], star_sum) for t in summary.index]
    print(f"{title}; mean +- s.e. over batches, and the cosine of the sums):")
    print(summary[["mean", "se", "count", "cos_of_sums"]].round(3).to_string())
    print(f"wrote {path}")
    return table, summary


CANDIDATE_MIXES = {
    "semantic-contamination": {"semantic": 1.0, "contamination": -1.0},
    "residual": {"residual_interferer": 1.0, "residual_target": -1.0},
    "both-sides": {"semantic": 1.0, "contamination": -1.0, "residual_interferer": 1.0, "residual_target": -1.0},
}
"""Sums of candidate terms (weights on the terms' gradients) that ``--candidate-terms`` also reports."""


def candidate_gradients(args, su, params, model, ds, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``--candidate-terms B``: on each of B batches (of ``--set train_split``), the cosine with ``g*`` of the exact
    gradient of each reference-free term of the mode (:func:`mars_core.rl.diagnostics.mode_candidate_terms`: the
    reward's semantic and contamination terms, the residual's two cosines, the mixture consistency) and of the sums
    in ``CANDIDATE_MIXES``. Writes ``candidate_gradient.csv`` (one row per term and batch) and prints mean +- s.e. over
    the batches and the cosine of the sums over batches; returns both tables."""
    cfg, fe = su.cfg, su.fe
    rows, sums, star_sum = [], {}, 0.0
    for j in range(args.candidate_terms):
        batch = rl_batch(ds, su.bank, su.rbank, su.stack, fe, j, cfg.batch_mixtures, cfg.query, cfg.seed, su.device,
                         query_noise=cfg.query_noise, pure_query_prob=cfg.pure_query_prob)
        g_star, sdr = exact_gradient(model, params, batch, fe)
        star_sum = star_sum + g_star
        values = mode_candidate_terms(model, batch, fe, su.reward_model)
        grads = {t: flat(torch.autograd.grad(values[t], params, retain_graph=i + 1 < len(CANDIDATE_TERMS)))
                 for i, t in enumerate(CANDIDATE_TERMS)}
        grads.update({m: sum(w * grads[t] for t, w in mix.items()) for m, mix in CANDIDATE_MIXES.items()})
        for term, g in grads.items():
            sums[term] = sums.get(term, 0.0) + g
            value = float(values[term].detach()) if term in values else float("nan")  # a mix has no value of its own
            rows.append({"split": cfg.train_split, "aligned": bool(su.stack.aligned), "term": term, "batch": j,
                         "cos": cosine(g, g_star), "value": value, "mode_si_sdr": sdr})
    return cosine_summary(rows, sums, star_sum, out / "candidate_gradient.csv",
                          f"exact gradient of reference-free terms of the mode against g* ({cfg.train_split}, "
                          f"{args.candidate_terms} batches of {cfg.batch_mixtures} mixtures")


DIM_COLUMNS = ["estimator", "kappa", "N", "D", "cos", "cos_se"]
"""The columns of an empty ``dimension.csv`` (no D sweep run)."""


def fit_sqrt_law(x: np.ndarray, cos: np.ndarray, power: float) -> float:
    """``c`` of ``cos = c x^power`` by least squares in log space over the points with ``0 < cos < 0.5``
    (the law's regime); NaN when none."""
    ok = (cos > 0) & (cos < 0.5)
    return float(np.exp(np.mean(np.log(cos[ok]) - power * np.log(x[ok])))) if ok.any() else float("nan")


def summarise(records: list[dict], keys: list[str]) -> pd.DataFrame:
    """Mean and standard error of ``cos`` over rollouts and batches, and the batch-mean ``cos_avg`` per ``keys``."""
    df = pd.DataFrame(records)
    rows = []
    for k, g in df.groupby(keys, sort=False):
        c = np.concatenate(g["cos"].to_numpy())
        rows.append({**dict(zip(keys, k)), "cos": c.mean(), "cos_se": c.std(ddof=1) / np.sqrt(len(c)) if len(c) > 1
                     else float("nan"), "cos_avg": g["cos_avg"].mean(), "estimates": len(c), "batches": len(g),
                     "seconds_per_estimate": g["seconds"].sum() / len(c)})
    return pd.DataFrame(rows)


FIGURE_ESTIMATORS = {
    "score": "GRPO, one reward per mask (score)",
    "loo": "leave-one-out (loo)",
    "segments": "segment rewards (segments)",
    "pathwise": "pathwise, the reference",
}
"""What ``sqrt_law.png`` draws, with their legend labels (every estimator and ``trainer:`` row is in
``cosine_table.csv``); a table with none of them draws all its rows."""


def plot(table: pd.DataFrame, dims: pd.DataFrame, path: Path, segments: int | None = None) -> list[str]:
    """``sqrt_law.png``: one panel per kappa (cosine against N, mean +- s.e., dashed: the fitted ``c sqrt(N)`` across
    the measured N while it stays <= 1), and the cosine against the mask dimension D. One legend below the panels; y on a
    linear scale, so cosines near and below 0 stay on the plot. Returns the estimators drawn."""
    import matplotlib  # optional heavy package, only for the figure
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = list(dict.fromkeys(table["estimator"]))
    shown = [e for e in FIGURE_ESTIMATORS if e in names] or names
    labels = {e: FIGURE_ESTIMATORS.get(e, e) for e in shown}
    if segments and "segments" in labels:
        labels["segments"] = f"{segments} segment rewards (segments)"
    colours = dict(zip(shown, plt.get_cmap("tab10").colors))
    kappas = list(dict.fromkeys(table["kappa"]))
    ncols = len(kappas) + (1 if len(dims) else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(4.4 * ncols, 4.2), squeeze=False, sharey=True, layout="constrained")
    axes = axes[0]
    for ax, kappa in zip(axes, kappas):
        for est in shown:
            g = table[(table["estimator"] == est) & (table["kappa"] == kappa)].sort_values("N")
            if g.empty:
                continue
            n, c = g["N"].to_numpy(float), g["cos"].to_numpy(float)
            ax.errorbar(n, c, yerr=g["cos_se"].fillna(0), marker="o", capsize=3, color=colours[est], lw=1.5)
            k = fit_sqrt_law(n, c, 0.5)
            if np.isfinite(k) and est != "pathwise":
                xs = np.geomspace(n.min(), n.max(), 40)
                xs = xs[k * np.sqrt(xs) <= 1]  # the law while it can hold: a cosine is at most 1
                ax.plot(xs, k * np.sqrt(xs), ls="--", color=colours[est], lw=1)
        ax.set(xscale="log", xlabel="N: sampled masks per update", title=f"cosine against N, kappa = {kappa:g}")
    axes[0].set(ylabel="cosine of one update with g*", ylim=(-0.15, 1.08))
    if len(dims):
        ax_d = axes[-1]
        d, c = dims["D"].to_numpy(float), dims["cos"].to_numpy(float)
        est, kappa, n = dims["estimator"].iloc[0], dims["kappa"].iloc[0], int(dims["N"].iloc[0])
        ax_d.errorbar(d, c, yerr=dims["cos_se"].fillna(0), marker="s", capsize=3, color=colours.get(est, "k"), lw=1.5)
        k = fit_sqrt_law(d, c, -0.5)
        if np.isfinite(k):
            xs = np.geomspace(d.min(), d.max(), 40)
            xs = xs[k / np.sqrt(xs) <= 1]
            ax_d.plot(xs, k / np.sqrt(xs), ls="--", color="k", lw=1)
        ax_d.set(xscale="log", xlabel="D: sampled bins per mask (the others held at P)",
                 title=f"cosine against D, {est}, kappa = {kappa:g}, N = {n}")
    for ax, ticks in zip(axes, [sorted(set(table["N"]))] * len(kappas) + ([sorted(set(dims["D"]))] if len(dims) else [])):
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
        ax.set_xticks(ticks, [f"{int(t):,}" for t in ticks])  # the measured values as labels
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    handles = [Line2D([], [], color=colours[e], marker="o", lw=1.5, label=labels[e]) for e in shown]
    handles.append(Line2D([], [], color="grey", ls="--", lw=1, label="fitted c sqrt(N) (right: c' / sqrt(D)), "
                                                                      "over the points with 0 < cos < 0.5"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), fontsize=8, frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return shown


def remainder_batch(model, batch, fe):
    """``batch`` with each item's clean source replaced by its remainder reference of the model's modes
    (:func:`mars_core.rl.rollout.remainder_references`): with ``--reference remainder`` every estimator and ``g*`` of the
    table are those of the signal term against the remainder, the reward of ``signal_reference='remainder'``."""
    with torch.no_grad():
        P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
        refs = remainder_references(fe, P, batch.mixtures)
    return replace(batch, sources=refs.reshape(batch.sources.shape))


def cosine_tables(args, su, params, model, ds, out: Path) -> None:
    cfg, fe = su.cfg, su.fe
    problems = []
    for j in range(args.batches):
        batch = rl_batch(ds, su.bank, su.rbank, su.stack, fe, j, cfg.batch_mixtures, cfg.query, cfg.seed, su.device,
                         query_noise=cfg.query_noise, pure_query_prob=cfg.pure_query_prob)
        if args.reference == "remainder":
            batch = remainder_batch(model, batch, fe)
        pb = ge.HeadProblem.build(model, params, batch, fe)
        pb.variants = trainer_variants(su, args.trainer_variant)  # the trainer's own updates: config, reward model
        problems.append((pb, ge.exact_mode_gradient(pb)))
    n_items = problems[0][0].batch.n_items
    F, T = problems[0][0].trunk.shape[-2] * 2, problems[0][0].trunk.shape[-1] * 2
    print(f"profile {su.prof.name}: {args.batches} batches of {n_items} items, {F} x {T} = {F * T} bins per mask, "
          f"{problems[0][1].numel()} head weights, reward clamp(SI-SDR against the "
          f"{args.reference}) / 10; {args.rollouts} rollouts per cell, "
          f"segments S = {args.segments}", flush=True)
    records = []
    for name in list(args.estimators) + [f"trainer:{v.partition(':')[0]}" for v in args.trainer_variant]:
        for kappa in args.kappa:
            for n in args.pathwise_samples if name == "pathwise" else args.samples:
                g = max(2, n // n_items)
                for j, (pb, g_star) in enumerate(problems):
                    t0 = time.perf_counter()
                    c, c_avg = cosines(pb, g_star, name, kappa, g, args.segments, args.rollouts, 1000 * j + 10_000)
                    records.append({"estimator": name, "kappa": kappa, "N": g * n_items, "G": g, "batch": j,
                                    "cos": np.array(c), "cos_avg": c_avg, "seconds": time.perf_counter() - t0})
                row = summarise([r for r in records if (r["estimator"], r["kappa"], r["N"]) == (name, kappa, g * n_items)],
                                ["estimator", "kappa", "N"]).iloc[0]
                print(f"  {name:>9} kappa {kappa:>6g} N {int(row.N):>5}: cos {row.cos:+.3f} +- {row.cos_se:.3f}, "
                      f"cos(mean of {args.rollouts}) {row.cos_avg:+.3f}  ({row.seconds_per_estimate:.1f} s/estimate)",
                      flush=True)
    table = summarise(records, ["estimator", "kappa", "N"])
    fits = []
    for (est, kappa), g in table.groupby(["estimator", "kappa"], sort=False):
        c = fit_sqrt_law(g["N"].to_numpy(float), g["cos"].to_numpy(float), 0.5)
        fits.append({"estimator": est, "kappa": kappa, "c": c, "D_eff": 1 / c**2 if c > 0 else float("nan"),
                     "N_for_cos_0.3": (0.3 / c) ** 2 if c > 0 else float("nan"),
                     "bias_ceiling": g.loc[g["N"].idxmax(), "cos_avg"]})
    dim_rows = []
    if args.dims:
        g = max(2, args.dim_samples // n_items)
        name, kappa = args.dim_estimator, args.kappa[0]
        for frac in args.dims:
            for j, (pb, _) in enumerate(problems):
                gen = torch.Generator().manual_seed(7 + j)
                bins = (torch.rand(F, T, generator=gen) < frac) if frac < 1 else None
                g_star = ge.exact_mode_gradient(pb, bins)
                t0 = time.perf_counter()
                c, c_avg = cosines(pb, g_star, name, kappa, g, args.segments, args.rollouts, 1000 * j + 20_000, bins)
                dim_rows.append({"estimator": name, "kappa": kappa, "N": g * n_items, "D": int(bins.sum()) if bins is not None
                                 else F * T, "fraction": frac, "batch": j, "cos": np.array(c), "cos_avg": c_avg,
                                 "seconds": time.perf_counter() - t0})
        dims = summarise(dim_rows, ["estimator", "kappa", "N", "fraction"])
        dims.insert(4, "D", [int(np.mean([r["D"] for r in dim_rows if r["fraction"] == f])) for f in dims["fraction"]])
    else:
        dims = pd.DataFrame(columns=DIM_COLUMNS)

    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print("\ngradient-cosine table (cos: mean +- s.e. over rollouts x batches; cos_avg: cosine of the rollouts' "
              "mean gradient, mean over batches)")
        print(table.drop(columns=["seconds_per_estimate"]).to_string(index=False))
        print("\nsquare-root law per estimator: cos = c sqrt(N) (fit over 0 < cos < 0.5); D_eff = 1 / c^2; "
              "bias_ceiling = cos_avg at the largest N")
        print(pd.DataFrame(fits).to_string(index=False))
        if len(dims):
            print(f"\ncosine against the mask dimension D ({args.dim_estimator}, kappa {args.kappa[0]:g}, "
                  f"N {dims['N'].iloc[0]}): c' of cos = c' / sqrt(D) = "
                  f"{fit_sqrt_law(dims['D'].to_numpy(float), dims['cos'].to_numpy(float), -0.5):.3f}")
            print(dims.drop(columns=["seconds_per_estimate"]).to_string(index=False))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "cosine_table.csv", index=False)
    pd.DataFrame(fits).to_csv(out / "sqrt_law_fits.csv", index=False)
    dims.to_csv(out / "dimension.csv", index=False)
    plot(table, dims, out / "sqrt_law.png", args.segments)
    print(f"\nwrote {out / 'cosine_table.csv'}, {out / 'sqrt_law_fits.csv'}, {out / 'dimension.csv'}, "
          f"{out / 'sqrt_law.png'}")


def agreement(args, su, params, model, ds, out: Path) -> pd.DataFrame:
    """Where does the sampled objective agree with the mode's? Per kappa, on ``--batches`` training batches:
    the mean signal reward of sampled masks against the mode's (``gap``, dB), and the cosine between the
    sampled objective's gradient (the mean of ``--rollouts`` pathwise estimates of ``--agreement-samples``
    masks per item, nearly noise-free) and the mode's exact gradient ``g*`` (``cos_obj``)."""
    cfg, fe = su.cfg, su.fe
    rows = []
    for j in range(args.batches):
        batch = rl_batch(ds, su.bank, su.rbank, su.stack, fe, j, cfg.batch_mixtures, cfg.query, cfg.seed, su.device,
                         query_noise=cfg.query_noise, pure_query_prob=cfg.pure_query_prob)
        pb = ge.HeadProblem.build(model, params, batch, fe)
        g_star = ge.exact_mode_gradient(pb)
        with torch.no_grad():
            P = pb.proposal()
            mode_db = 10 * pb.rewards(pb.waveforms(P.unsqueeze(1))).mean().item()
        for kappa in args.agreement:
            grads, sampled = [], []
            for r in range(args.rollouts):
                torch.manual_seed(30_000 + 1000 * j + r)
                grads.append(ge.pathwise_gradient(pb, kappa, args.agreement_samples))
                with torch.no_grad():
                    torch.manual_seed(40_000 + 1000 * j + r)
                    m = ge.sample_masks(P, kappa, args.agreement_samples)
                    sampled.append(10 * pb.rewards(pb.waveforms(m)).mean().item())
            rows.append({"kappa": kappa, "batch": j, "mode_dB": mode_db, "sampled_dB": float(np.mean(sampled)),
                         "cos_obj": cosine(torch.stack(grads).mean(0), g_star)})
    table = pd.DataFrame(rows).groupby("kappa", as_index=False).mean(numeric_only=True).drop(columns="batch")
    table["gap_dB"] = table["sampled_dB"] - table["mode_dB"]
    print("\nsampled objective against the mode's (signal reward, dB; cos_obj: its gradient against g*)")
    print(table.round(3).to_string(index=False))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "agreement.csv", index=False)
    return table


def noisy_direction(g_star: torch.Tensor, cos: float, gen: torch.Generator, noise: torch.Tensor | None = None) -> torch.Tensor:
    """A direction with cosine exactly ``cos`` to ``g_star`` and the norm of ``g_star``: ``g_star`` mixed with noise made
    orthogonal to it, isotropic Gaussian or the given ``noise`` (``cos = 1``: ``g_star`` itself)."""
    if cos >= 1:
        return g_star
    u = g_star / g_star.norm().clamp_min(1e-30)
    xi = torch.randn(g_star.shape, generator=gen, dtype=g_star.dtype) if noise is None else noise.to(g_star)
    xi = xi - (xi @ u) * u
    return g_star.norm() * (cos * u + (1 - cos**2) ** 0.5 * xi / xi.norm().clamp_min(1e-30))


def matched_noise(model, params, batch, fe, args, cfg) -> torch.Tensor:
    """``g_1 - g_2`` of two independent estimates of ``--headroom-noise`` (``score``: GRPO, one reward per mask;
    ``segments``: ``--segments`` per-segment rewards) from ``cfg.group_size`` masks per item of the signal reward: zero
    mean, shaped like one estimate's error (its scale is set by ``--headroom-cos`` in :func:`noisy_direction`)."""
    pb = ge.HeadProblem.build(model, params, batch, fe)
    seg = args.segments if args.headroom_noise == "segments" else 0
    g1 = ge.score_gradient(pb, cfg.kappa, cfg.group_size, "group", seg)
    g2 = ge.score_gradient(pb, cfg.kappa, cfg.group_size, "group", seg)
    return g1 - g2


def headroom(args, su, params, model, ds) -> pd.DataFrame:
    """The calibration runs: the same head weights follow the exact gradient ``g*`` of the mode's SI-SDR, or ``g*``
    with isotropic noise at a set cosine (``--headroom-cos``), for ``--headroom`` steps on fresh batches (the preset's
    optimizer and lr): which per-update cosine does this optimizer need to gain val SDR in that many steps?"""
    cfg, fe, b = su.cfg, su.fe, su.cfg.batch_mixtures
    rv = validation(su.prof, su.bank, min(cfg.val_mixtures, su.prof.data.n_val_mixtures), judge=None, device=su.device)
    start = copy.deepcopy(model.state_dict())
    start_sdr = validate_rl(model, rv, fe)["sdr"]
    print(f"calibration: g* (+ matched isotropic noise) fine-tuning of the head ({cfg.optimizer}, lr {cfg.lr}), val SDR on "
          f"{len(rv.val.queries)} mixtures: step 0 {start_sdr:.2f} dB", flush=True)
    rows = []
    for cos in (args.headroom_cos if args.headroom_noise != "trainer" else [float("nan")]):
        model.load_state_dict(start)
        opt = make_optimizer(model, cfg)
        gen = torch.Generator().manual_seed(123)
        curve = []
        for step in range(args.headroom):
            batch = rl_batch(ds, su.bank, su.rbank, su.stack, fe, step, b, cfg.query, cfg.seed, su.device,
                             query_noise=cfg.query_noise, pure_query_prob=cfg.pure_query_prob)
            value = mode_si_sdr(model, batch, fe)
            g_star = torch.cat([t.reshape(-1) for t in torch.autograd.grad(value, params)])
            if args.headroom_noise == "trainer":  # the trainer's own first update, one per fresh batch
                g = trainer_update_gradient(model, params, batch, fe, cfg, su.reward_model, seed=50_000 + step)
            else:
                noise = None if args.headroom_noise == "isotropic" else matched_noise(model, params, batch, fe, args, cfg)
                g = noisy_direction(g_star.detach().cpu(), cos, gen, None if noise is None else noise.cpu()).to(g_star)
            opt.zero_grad(set_to_none=True)
            offset = 0
            for p in params:  # descent on -SI-SDR: the gradient is -g
                p.grad = -g[offset:offset + p.numel()].reshape(p.shape)
                offset += p.numel()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if (step + 1) % cfg.eval_every == 0 or step + 1 == args.headroom:
                curve.append(validate_rl(model, rv, fe)["sdr"])
        rows.append({"noise": args.headroom_noise, "cos": cos, "steps": args.headroom, "val_sdr_start": start_sdr, "val_sdr_best": max(curve),
                     "val_sdr_last": curve[-1], "gain_last": curve[-1] - start_sdr})
        print(f"  {args.headroom_noise} noise, cos {cos:.2f}: val SDR every {cfg.eval_every} steps " + " ".join(f"{v:.2f}" for v in curve), flush=True)
    model.load_state_dict(start)
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    return table


def replot(folder: Path, segments: int | None) -> int:
    """``--plot-only``: ``sqrt_law.png`` again from the tables a run wrote (a missing table is an error that names it)."""
    table_path = folder / "cosine_table.csv"
    if not table_path.is_file():
        raise SystemExit(f"--plot-only {folder}: no cosine_table.csv there (write one with --out {folder})")
    dims_path = folder / "dimension.csv"
    dims = pd.read_csv(dims_path) if dims_path.is_file() else pd.DataFrame(columns=DIM_COLUMNS)
    shown = plot(pd.read_csv(table_path), dims, folder / "sqrt_law.png", segments)
    print(f"wrote {folder / 'sqrt_law.png'} ({', '.join(shown)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--estimators", nargs="*", default=list(ESTIMATORS), choices=ESTIMATORS,
                    help="estimators of the table (none: skip the table)")
    ap.add_argument("--kappa", type=float, nargs="+", default=[30.0, 300.0])
    ap.add_argument("--samples", type=int, nargs="+", default=[32, 128, 512],
                    help="N: sampled masks per update (per batch; N / items per item, at least 2)")
    ap.add_argument("--pathwise-samples", type=int, nargs="+", default=[32, 128],
                    help="N of the pathwise estimator (it costs about twice a score estimate and its cosine hardly "
                         "moves with N)")
    ap.add_argument("--trainer-variant", action="append", default=[], metavar="NAME[:field=value,...]",
                    help="also tabulate the trainer's own first update (the whole reward, advantages, segments, "
                         "entropy and KL of the preset with these fields) as estimator 'trainer:NAME' (repeatable)")
    ap.add_argument("--rollouts", type=int, default=3, help="estimates per cell and batch (fresh samples each)")
    ap.add_argument("--batches", type=int, default=2, help="training batches (the first ones of the train split)")
    ap.add_argument("--segments", type=int, default=64, help="S of the 'segments' estimator")
    ap.add_argument("--dims", type=float, nargs="*", default=[1 / 64, 1 / 16, 1 / 4, 1.0],
                    help="fractions of the bins sampled for the cosine-against-D sweep (none: skip it)")
    ap.add_argument("--dim-samples", type=int, default=128, help="N of the D sweep")
    ap.add_argument("--dim-estimator", default="score", choices=ESTIMATORS, help="estimator of the D sweep")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default runs/<profile>/gradient_check/)")
    ap.add_argument("--headroom-noise", default="isotropic", choices=["isotropic", "score", "segments", "trainer"],
                    help="the calibration runs' noise, at each --headroom-cos: isotropic, or zero-mean noise shaped like "
                         "the error of the score-function estimate ('score') or of the segment estimate ('segments') at "
                         "the preset's G (the difference of two independent estimates, made orthogonal to g*); 'trainer': "
                         "no g* at all, each step follows the trainer's own first update of the preset (with --set), "
                         "one update per fresh batch instead of ppo_epochs x minibatches")
    ap.add_argument("--agreement", type=float, nargs="*", default=[],
                    help="kappas at which to measure how far the sampled masks' objective agrees with the mode's "
                         "(none: skip)")
    ap.add_argument("--agreement-samples", type=int, default=8, help="masks per item of the agreement estimates")
    ap.add_argument("--reward-gradient", type=int, default=0, metavar="BATCHES",
                    help="on this many training batches: the cosine of the exact gradient of the mode's encoder reward "
                         "(semantic term, contamination penalty, and both with the preset's weights) with g*")
    ap.add_argument("--reference", default="source", choices=["source", "remainder"],
                    help="the estimator table's signal term against the clean sources (default) or against the remainder "
                         "of the mode's other estimates (signal_reference='remainder': g* is then that objective's)")
    ap.add_argument("--candidate-terms", type=int, default=0, metavar="BATCHES",
                    help="on this many batches: the cosine with g* of the exact gradient of each reference-free term "
                         "of the mode (residual cosines, mixture consistency; candidate_gradient.csv)")
    ap.add_argument("--judge-gradient", action="store_true",
                    help="with --reward-gradient: also the exact gradient of the judge's semantic score (term 'judge')")
    ap.add_argument("--unaligned-reward", action="store_true",
                    help="the reward stack of the query encoder before progressive alignment (default: aligned)")
    ap.add_argument("--headroom", type=int, default=0, help="steps of exact-gradient fine-tuning to run (0: skip)")
    ap.add_argument("--headroom-cos", type=float, nargs="+", default=[1.0],
                    help="per-update cosines of the calibration runs: g* plus isotropic noise at each (1: g* alone)")
    ap.add_argument("--separator", default=None, help="a separator checkpoint to start from (default: the profile's, "
                    "trained first if none matches the supervised config)")
    ap.add_argument("--plot-only", type=Path, default=None, metavar="DIR",
                    help="redraw DIR/sqrt_law.png from DIR's cosine_table.csv and dimension.csv (nothing computed)")
    args = ap.parse_args(argv)
    if args.plot_only is not None:
        return replot(args.plot_only, args.segments)
    su = setup_from_args(args)
    model = copy.deepcopy(su.separator).eval()
    params = trainable_parameters(model, "head")
    ds = training_data(su.prof, replace(su.cfg, steps=max(1, args.headroom, args.batches, args.reward_gradient,
                                                              args.candidate_terms)))
    if args.estimators or args.trainer_variant:
        cosine_tables(args, su, params, model, ds, args.out or Path("runs") / su.prof.name / "gradient_check")
    if args.reward_gradient:
        reward_gradients(args, su, params, model, ds, args.out or Path("runs") / su.prof.name / "gradient_check")
    if args.candidate_terms:
        candidate_gradients(args, su, params, model, ds, args.out or Path("runs") / su.prof.name / "gradient_check")
    if args.agreement:
        agreement(args, su, params, model, ds, args.out or Path("runs") / su.prof.name / "gradient_check")
    if args.headroom:
        out = args.out or Path("runs") / su.prof.name / "gradient_check"
        out.mkdir(parents=True, exist_ok=True)
        headroom(args, su, params, model, ds).to_csv(out / "calibration.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
