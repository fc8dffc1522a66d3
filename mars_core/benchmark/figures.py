"""Figures of the benchmark (notebook 05 and ``figures/``), drawn from the saved tables.

Every plot function takes an ``ax`` (created if ``None``) and returns it; nothing is shown
or saved unless :func:`make_figures` is called, which reads a results directory written by
:func:`mars_core.benchmark.harness.save_results` and writes ``05_*.png`` plus ``RUN.md`` (the command,
date, machine and the benchmark run that produced them).
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..atomic import write_bytes_atomic
from ..audio import FrontEnd
from ..config import get_profile
from ..queries import EVAL_MODALITIES
from ..viz import plot_spectrogram
from .io import load_results, machine_info
from .tables import BASELINE, METRIC_NAMES, METRIC_UNITS, PAIR_TYPES, REFERENCE_SYSTEMS, against

RL_CURVE_KEYS = ("reward_mean", "approx_kl", "clipfrac", "entropy", "val_sdr")
"""History keys drawn by :func:`plot_training_curves` (missing keys are tolerated)."""


def _ax(ax, figsize=(6, 3.5)):
    import matplotlib.pyplot as plt  # plotting libraries load only when a figure is drawn

    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def _palette(names: Sequence[str]) -> dict[str, tuple]:
    import seaborn as sns  # plotting libraries load only when a figure is drawn

    return dict(zip(names, sns.color_palette("colorblind", max(len(names), 1))))


def _label(metric: str) -> str:
    return f"{METRIC_NAMES.get(metric, metric)} ({METRIC_UNITS.get(metric, '')})"


def learned_systems(table: pd.DataFrame) -> list[str]:
    """The learned systems of a table, in its order (reference systems left out)."""
    return [s for s in dict.fromkeys(table["system"]) if s not in REFERENCE_SYSTEMS]


def plot_metric_bars(summary: pd.DataFrame, metric: str = "sdr", ax=None, split: str = "test", pairs: str = "random",
                     systems: Sequence[str] | None = None, references: Sequence[str] = ("mixture", "oracle IRM")):
    """Mean ± standard error of ``metric`` per query modality, one bar per learned system; query-blind
    reference systems as horizontal lines."""
    ax = _ax(ax, (7, 3.5))
    s = summary[(summary["split"] == split) & (summary["pairs"] == pairs) & (summary["metric"] == metric)]
    systems = list(systems or learned_systems(s))
    colours = _palette(systems)
    width = 0.8 / max(len(systems), 1)
    x = np.arange(len(EVAL_MODALITIES))
    for j, name in enumerate(systems):
        rows = s[s["system"] == name].set_index("modality").reindex(list(EVAL_MODALITIES))
        ax.bar(x + (j - (len(systems) - 1) / 2) * width, rows["mean"], width, yerr=rows["sem"].fillna(0),
               capsize=2, color=colours[name], label=name)
    for ref, style in zip(references, (":", "--", "-.")):
        row = s[(s["system"] == ref)]
        if len(row) and np.isfinite(row["mean"].iloc[0]):
            ax.axhline(row["mean"].iloc[0], color="grey", ls=style, lw=1, label=ref)
    ax.set_xticks(x, list(EVAL_MODALITIES))
    ax.set_xlabel("query")
    ax.set_ylabel(_label(metric))
    ax.set_title(f"{METRIC_NAMES.get(metric, metric)} on {split}, {pairs} pairs (mean ± s.e.)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_paired_scatter(items: pd.DataFrame, system: str, baseline: str = BASELINE, metric: str = "sdr", ax=None,
                        split: str = "test", pairs: str = "random", modalities: Sequence[str] = EVAL_MODALITIES):
    """Per-item ``metric`` of ``baseline`` (x) against ``system`` (y), one colour per query; points above
    the diagonal are items the system improves."""
    ax = _ax(ax, (4.2, 4))
    sel = items[(items["split"] == split) & (items["pairs"] == pairs)]
    colours = _palette(list(modalities))
    lims = []
    for m in modalities:
        b = sel[(sel["system"] == baseline) & (sel["modality"] == m)].set_index("item")[metric]
        s = sel[(sel["system"] == system) & (sel["modality"] == m)].set_index("item")[metric]
        b, s = b.align(s, join="inner")
        ok = np.isfinite(b.to_numpy(float)) & np.isfinite(s.to_numpy(float))
        ax.scatter(b[ok], s[ok], s=14, alpha=0.7, color=colours[m], label=m)
        lims += [b[ok].min(), b[ok].max(), s[ok].min(), s[ok].max()] if ok.any() else []
    if lims:
        lo, hi = float(np.nanmin(lims)), float(np.nanmax(lims))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, ls="--")
    ax.set_xlabel(f"{baseline}: {_label(metric)}")
    ax.set_ylabel(f"{system}: {_label(metric)}")
    ax.set_title(f"paired items, {split} / {pairs}", fontsize=9)
    ax.legend(fontsize=7)
    return ax


def plot_hard_vs_random(summary: pd.DataFrame, metric: str = "sdr", ax=None, split: str = "test",
                        modality: str = "text", systems: Sequence[str] | None = None):
    """``metric`` on random against hard (same-family) pairs, per learned system (mean ± s.e.)."""
    ax = _ax(ax, (6, 3.5))
    s = summary[(summary["split"] == split) & (summary["metric"] == metric) & (summary["modality"] == modality)]
    systems = list(systems or learned_systems(s))
    x = np.arange(len(systems))
    colours = _palette(list(PAIR_TYPES))
    for j, pairs in enumerate(PAIR_TYPES):
        rows = s[s["pairs"] == pairs].set_index("system").reindex(systems)
        ax.bar(x + (j - 0.5) * 0.38, rows["mean"], 0.38, yerr=rows["sem"].fillna(0), capsize=2,
               color=colours[pairs], label=f"{pairs} pairs")
    ax.set_xticks(x, systems, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(_label(metric))
    ax.set_title(f"{METRIC_NAMES.get(metric, metric)}, {modality} query on {split}: hard vs random pairs")
    ax.legend(fontsize=8)
    return ax


def plot_bootstrap(boot: pd.DataFrame, metric: str = "sdr", ax=None, split: str = "test", pairs: str = "random",
                   baseline: str = BASELINE):
    """Mean paired difference to ``baseline`` (the supervised one, or a control) with its bootstrap interval,
    per (system, query)."""
    ax = _ax(ax, (6, 3.5))
    boot = against(boot, baseline)
    b = boot[(boot["split"] == split) & (boot["pairs"] == pairs) & (boot["metric"] == metric)].reset_index(drop=True)
    colours = _palette(list(dict.fromkeys(b["system"])))
    for i, r in b.iterrows():
        ax.errorbar(r["mean_diff"], i, xerr=[[r["mean_diff"] - r["ci_low"]], [r["ci_high"] - r["mean_diff"]]],
                    fmt="o", color=colours[r["system"]], capsize=2)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(b)), [f"{r.system} · {r.modality}" for r in b.itertuples()], fontsize=7)
    ax.invert_yaxis()
    base = b["baseline"].iloc[0] if len(b) else BASELINE
    lvl = round(100 * float(b["level"].iloc[0])) if len(b) else 95
    ax.set_xlabel(f"change in {_label(metric)} over {base} ({lvl}% paired bootstrap CI)")
    ax.set_title(f"{split}, {pairs} pairs", fontsize=9)
    return ax


def _x_for(history: Mapping, key: str, n: int) -> np.ndarray:
    """The step axis of a logged key: ``val_step`` for ``val_*`` keys, else ``step``, else 0..n-1."""
    for cand in (("val_step",) if key.startswith("val_") else ()) + ("step",):
        x = history.get(cand)
        if isinstance(x, (list, tuple, np.ndarray)) and len(x) == n:
            return np.asarray(x, dtype=float)
    return np.arange(n, dtype=float)


CURVE_TITLES = {
    "reward_mean": "mean reward (each system's own; unitless)",
    "approx_kl": "approx_kl: how far an update moved (nats/bin)",
    "clipfrac": "clipfrac: bins with |r - 1| > eps",
    "entropy": "policy entropy (nats/bin, differential)",
    "val_sdr": "val SDR of the mode P (dB)",
}
"""Axis titles of :func:`plot_training_curves` (other keys are titled by their name)."""


def plot_training_curve(history: Mapping, key: str, ax=None, label: str | None = None, smooth: int | None = None,
                        color=None, ls: str = "-"):
    """One logged quantity against the step; a missing or empty key writes "not logged" on the axis. With 60
    points or more (or an explicit ``smooth`` > 1) the raw values are drawn faint under their running mean over
    ``smooth`` steps (default: a thirtieth of the points)."""
    ax = _ax(ax, (4, 3))
    y = history.get(key) if isinstance(history, Mapping) else None
    if not isinstance(y, (list, tuple, np.ndarray)) or len(y) == 0:
        ax.text(0.5, 0.5, f"{key}: not logged", transform=ax.transAxes, ha="center", va="center", color="grey")
    else:
        y = np.asarray([np.nan if v is None else v for v in y], dtype=float)
        x = _x_for(history, key, len(y))
        win = smooth or max(1, len(y) // 30)
        line = ax.plot(x, y, alpha=0.2 if win > 1 else 1.0, color=color, ls=ls, lw=0.8 if win > 1 else 1.3,
                       label=None if win > 1 else label, marker="o" if len(y) <= 12 else None, ms=3)[0]
        if win > 1:
            ax.plot(x[win - 1 :], np.convolve(y, np.ones(win) / win, mode="valid"), color=line.get_color(), ls=ls,
                    lw=1.3, label=label)
    ax.set_xlabel("step")
    ax.set_title(key, fontsize=9)
    return ax


def _seed_family(name: str) -> tuple[str, int]:
    """``"MARS-Sep plus, seed 2"`` -> ``("MARS-Sep plus", 2)``; a name without a seed suffix is seed 0."""
    base, sep, seed = name.rpartition(", seed ")
    return (base, int(seed)) if sep and seed.isdigit() else (name, 0)


def is_rl_history(history, keys: Sequence[str] = RL_CURVE_KEYS) -> bool:
    """A history that logged some per-step RL key (validation keys alone do not count: the
    supervised history has ``val_sdr`` too)."""
    return isinstance(history, Mapping) and any(k in history for k in keys if not k.startswith("val_"))


def plot_training_curves(histories: Mapping[str, Mapping], keys: Sequence[str] = RL_CURVE_KEYS, axes=None):
    """Every RL history on one axis per key (:data:`CURVE_TITLES`); non-RL histories (:func:`is_rl_history`) are
    skipped, and a key no history logged says so on its axis. The seeds of one system (``"NAME, seed k"``) share
    its colour, with a line style per seed. Without ``axes`` the panels fill a grid of three columns whose last
    cell holds the one legend; with ``axes`` the legend goes on the last of them. Returns the key axes."""
    import matplotlib.pyplot as plt

    legend_ax = None
    if axes is None:
        ncol = 3
        nrow = -(-(len(keys) + 1) // ncol)
        grid = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.3 * nrow), squeeze=False, layout="constrained")[1]
        axes, spare = grid.ravel()[: len(keys)], grid.ravel()[len(keys):]
        for ax in spare:
            ax.axis("off")
        legend_ax = spare[0]
    rl = {n: h for n, h in histories.items() if is_rl_history(h, keys)}
    families = list(dict.fromkeys(_seed_family(n)[0] for n in rl))
    colours = dict(zip(families, plt.get_cmap("tab10").colors * 2))  # lines: more distinct than the bars' palette
    styles = ("-", "--", ":", "-.")
    for ax, key in zip(axes, keys):
        if not rl:
            plot_training_curve({}, key, ax)
        for name, h in rl.items():
            fam, seed = _seed_family(name)
            plot_training_curve(h, key, ax, label=name, color=colours[fam], ls=styles[seed % len(styles)])
        ax.set_title(CURVE_TITLES.get(key, key), fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[0]))
    if handles:
        if legend_ax is not None:
            legend_ax.legend(handles, labels, loc="center", fontsize=8, frameon=False,
                             title="system (60 or more logged steps: running mean, raw values faint)", title_fontsize=8)
        else:
            axes[-1].legend(handles, labels, fontsize=6)
    return axes


def plot_example_spectrograms(examples: Mapping[str, np.ndarray], profile: str, axes=None,
                              labels: Sequence[str] | None = None):
    """Warped log-magnitude spectrograms of the saved example: mixture, target and each estimate."""
    import matplotlib.pyplot as plt

    labels = [k for k in (labels or examples) if k in examples and k != "interferer"]
    if axes is None:
        ncol = min(4, max(len(labels), 1))
        nrow = int(np.ceil(len(labels) / ncol)) or 1
        axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3 * nrow), squeeze=False, layout="constrained")[1].ravel()
    fe = FrontEnd(get_profile(profile).audio)
    for ax, k in zip(axes, labels):
        plot_spectrogram(fe.warp(fe.stft(torch.as_tensor(examples[k]).float()).abs()), ax=ax, warped=True, title=k)
    for ax in list(axes)[len(labels):]:
        ax.axis("off")
    return axes


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())
    return path


def make_figures(results_dir: str | os.PathLike, out_dir: str | os.PathLike, command: str | None = None) -> list[Path]:
    """Draw every benchmark figure from ``results_dir`` into ``out_dir`` (``05_*.png``) and write
    ``RUN.md`` there: the figure command, date and machine, and the benchmark run (its command,
    profile, date, git commit, seed, wall time) the tables come from. Returns the written paths."""
    import matplotlib.pyplot as plt

    res = load_results(results_dir)
    out = Path(out_dir)
    written = []
    systems = learned_systems(res.summary)
    fig, axes = plt.subplots(1, 2, figsize=(16, 3.8), layout="constrained")
    plot_metric_bars(res.summary, "sdr", axes[0])
    if (res.summary["metric"] == "semantic").any():
        plot_metric_bars(res.summary, "semantic", axes[1], references=("mixture", "clean target"))
    else:
        axes[1].text(0.5, 0.5, "no judge: semantic score not measured", ha="center", transform=axes[1].transAxes)
    written.append(_save(fig, out / "05_scores_by_query.png"))
    others = [s for s in systems if s != BASELINE]
    if BASELINE in systems and others:
        fig, axes = plt.subplots(1, len(others), figsize=(4.2 * len(others), 4), squeeze=False, layout="constrained")
        for ax, s in zip(axes[0], others):
            plot_paired_scatter(res.items, s, ax=ax)
        written.append(_save(fig, out / "05_paired_sdr.png"))
        n_rows = len(res.bootstrap[(res.bootstrap["metric"] == "sdr") & (res.bootstrap["split"] == "test")
                                   & (res.bootstrap["pairs"] == "random")])
        fig, axes = plt.subplots(1, 2, figsize=(15, 1.5 + 0.25 * n_rows), layout="constrained")
        plot_bootstrap(res.bootstrap, "sdr", axes[0])
        plot_bootstrap(res.bootstrap, "sdr", axes[1], pairs="hard")
        written.append(_save(fig, out / "05_bootstrap_sdr.png"))
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), layout="constrained")
    plot_hard_vs_random(res.summary, "sdr", axes[0])
    if (res.summary["metric"] == "contamination").any():
        plot_hard_vs_random(res.summary, "contamination", axes[1])
    written.append(_save(fig, out / "05_hard_vs_random.png"))
    axes = plot_training_curves(res.histories)
    written.append(_save(axes[0].figure, out / "05_rl_curves.png"))
    if res.examples:
        axes = plot_example_spectrograms(res.examples, res.run.get("profile", "smoke"))
        written.append(_save(axes[0].figure, out / "05_example_spectrograms.png"))
    plt.close("all")
    written.append(write_run_md(out, res.run, written, command))
    return written


def write_run_md(out: Path, run: dict, figures: Sequence[Path], command: str | None) -> Path:
    """``RUN.md``: how and when these figures were made, from which benchmark run."""
    m = machine_info()
    git = run.get("git", {}) or {}
    lines = [
        "# How these figures were made",
        "",
        "Written by `make_figures` (`python -m mars_core.benchmark figures`); do not edit by hand.",
        "",
        f"- figures command: `{command or 'mars_core.benchmark.figures.make_figures'}`",
        f"- figures date (UTC): {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- figures machine: {m['host']} ({m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']})",
        f"- benchmark command: `{run.get('command', '?')}`",
        f"- benchmark profile: {run.get('profile', '?')}, seed {run.get('seed', '?')}, "
        f"{run.get('n_items', '?')} mixtures per test set, wall time {run.get('wall_s', '?')} s",
        f"- benchmark date (UTC): {run.get('date', '?')}",
        f"- git commit: {git.get('commit')} (uncommitted changes: {git.get('dirty')})",
        f"- systems: {', '.join(run.get('systems', {})) or '?'}",
    ]
    if run.get("missing_systems"):
        lines.append("- missing systems: " + "; ".join(f"{k} ({v})" for k, v in run["missing_systems"].items()))
    lines += ["", "Files:", *[f"- `{Path(f).name}`" for f in figures], ""]
    path = out / "RUN.md"
    write_bytes_atomic(path, "\n".join(lines).encode())
    return path
