"""The benchmark: every system, every query, both test splits, random and hard pairs (docs/method.md section 8).

One harness evaluates the reference systems and the learned separators on the **same**
seeded test mixtures with the functions of :mod:`mars_core.evaluate` (nothing here
re-implements separation or BSS Eval):

* systems: ``mixture``, ``mixture / 2``, ``oracle IBM``, ``oracle IRM`` (and the judge's
  score of the ``clean target``), the reference systems of
  :func:`~mars_core.evaluate.evaluate_references`; the learned systems of the registry
  :data:`SYSTEMS` (name -> loader). All estimates of a test set are scored in one BSS Eval
  pass (:func:`~mars_core.evaluate.evaluate_systems`);
* queries: :data:`~mars_core.queries.EVAL_MODALITIES` (text, image, audio, omni);
* test sets: ``test`` (in-domain) and ``test_timbre`` (an independent soundfont), each with
  random pairs and hard (same-family) pairs;
* metrics: SDR, SIR, SAR, SI-SDRi, the judge's semantic scores and, against the
  interferer's own prompt (drawn by :func:`~mars_core.queries.item_queries`),

      contamination = 100 cos(judge(y^), judge(interferer prompt)),
      semantic_margin = semantic - contamination = 100 (cos_target - cos_interferer)

  (:func:`~mars_core.metrics.contamination_score`; margin here in percentage points);
* statistics: mean, standard error, median, counts per (test set, pair type, system,
  query, metric), and a **paired bootstrap** of the mean difference between every learned
  system and the supervised baseline over the same items (:func:`paired_bootstrap`).

Outputs (all written atomically): ``items.csv`` (one row per item x system x query x test
set), ``summary.csv``, ``bootstrap.csv``, ``run.json`` (command, profile, date, machine,
git commit, seed, wall time, missing systems), ``histories.json`` (training histories, for
the curves) and ``examples.npz`` (waveforms of one test item, for the spectrograms).
The same seed gives byte-identical CSV files. Sentences and the comparison with the paper's
numbers are in :mod:`mars_core.benchmark_reading`.

Command line::

    python -m mars_core.benchmark --profile cpu [--out DIR] [--systems supervised plus ...]
    python -m mars_core.benchmark figures --csv DIR --out figures/
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .atomic import write_bytes_atomic
from .audio import FrontEnd
from .config import Profile, get_profile
from .evaluate import EvalSet, JudgeScorer, eval_queries, evaluate_systems, load_eval_set, load_judge, separate
from .metrics import contamination_score, summarize
from .progress import Progress
from .queries import EVAL_MODALITIES, QueryBank, encoder_fingerprint, item_queries

SPLITS = ("test", "test_timbre")
"""Test splits: ``test`` (the training timbres, held-out clips) and ``test_timbre`` (another soundfont)."""
PAIR_TYPES = ("random", "hard")
"""``random``: any interferer class; ``hard``: an interferer of the target's family."""
REFERENCE_SYSTEMS = ("mixture", "mixture / 2", "oracle IBM", "oracle IRM", "clean target")
"""Query-blind rows of :func:`~mars_core.evaluate.evaluate_references` (``clean target``: judge scores only)."""
BASELINE = "supervised"
"""The system every learned system is compared with in :func:`paired_bootstrap`."""
METRICS = ("sdr", "sir", "sar", "si_sdri", "semantic", "semantic_image", "contamination", "semantic_margin")
"""Columns summarised and bootstrapped (those present)."""
METRIC_UNITS = {"sdr": "dB", "sir": "dB", "sar": "dB", "si_sdri": "dB", "semantic": "points",
                "semantic_image": "points", "contamination": "points", "semantic_margin": "points"}
METRIC_NAMES = {"sdr": "SDR", "sir": "SIR", "sar": "SAR", "si_sdri": "SI-SDRi", "semantic": "semantic score",
                "semantic_image": "image semantic score", "contamination": "contamination",
                "semantic_margin": "semantic margin"}
"""Units and display names of :data:`METRICS` (sentences of :mod:`mars_core.benchmark_reading`, figures)."""
N_RESAMPLES = 2000
"""Bootstrap resamples of the items."""
CI_LEVEL = 0.95
"""Central coverage of the bootstrap percentile interval."""


# =========================================================================== systems
class SystemUnavailable(RuntimeError):
    """A registered system cannot be built here (its module or checkpoint does not exist yet)."""


@dataclass
class SystemModel:
    """A loaded learned system.

    Attributes:
        model: a separator ``model(features, query) -> P`` (a :class:`~mars_core.separator.QuerySeparator`).
        bank: the :class:`~mars_core.queries.QueryBank` its queries come from (``None``: the
            context's default bank, the frozen query encoder's).
        history: its training history (curves), if any.
        source: where it came from (a checkpoint path, a note).
    """

    model: torch.nn.Module
    bank: QueryBank | None = None
    history: dict | None = None
    source: str = ""


@dataclass
class BenchmarkContext:
    """What loaders share: the profile, the data, the default query bank, the judge (each built lazily once).

    Args:
        profile: the profile (or its name).
        build_dir: benchmark build (default: the profile's).
        bank: the default query bank (default: the frozen query encoder's, cached on disk).
        judge: the judge encoder; ``"auto"`` loads :func:`~mars_core.evaluate.load_judge`, ``None``
            leaves the semantic and contamination scores out.
        progress: show progress bars of loaders and trainers.
    """

    profile: Profile | str | None = None
    build_dir: str | os.PathLike | None = None
    bank: QueryBank | None = None
    judge: Any = "auto"
    progress: bool = True
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.profile = get_profile(self.profile)

    def query_bank(self) -> QueryBank:
        """The default query bank (the frozen query encoder's)."""
        if self.bank is None:
            from .queries import load_or_build_query_bank, load_query_encoder

            self.bank = load_or_build_query_bank(load_query_encoder(self.profile), self.profile,
                                                 build_dir=self.build_dir, progress=self.progress)
        return self.bank

    def judge_encoder(self):
        """The judge (or ``None``)."""
        if isinstance(self.judge, str) and self.judge == "auto":
            self.judge = load_judge(self.profile)
        return self.judge

    def supervised(self) -> SystemModel:
        """The supervised separator (:func:`mars_core.supervised.load_or_train`), loaded once."""
        if "supervised" not in self._cache:
            from .supervised import load_or_train

            model, history = load_or_train(self.profile, bank=self.query_bank(), build_dir=self.build_dir,
                                           progress=self.progress)
            self._cache["supervised"] = SystemModel(model, None, history, str(history.get("source", "")))
        return self._cache["supervised"]


Loader = Callable[[BenchmarkContext], SystemModel]


def _as_system_model(out: Any, what: str) -> SystemModel:
    """Normalise a loader's return value: a ``SystemModel``, ``(model, history)`` or a model.

    A policy wrapper exposing ``.separator`` is unwrapped (its mode is the separator's ``P``).
    """
    if isinstance(out, SystemModel):
        return out
    history = None
    if isinstance(out, tuple):
        out, history = out[0], (out[1] if len(out) > 1 else None)
    model = getattr(out, "separator", out)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{what} returned {type(out).__name__}, not a separator")
    history = dict(history) if isinstance(history, Mapping) else None
    return SystemModel(model.eval(), None, history, str((history or {}).get("source", what)))


def load_supervised(ctx: BenchmarkContext) -> SystemModel:
    """The supervised baseline (OmniSep-style mix-and-separate with Query-Mixup)."""
    return ctx.supervised()


def load_rl(ctx: BenchmarkContext, preset: str, aligned: bool) -> SystemModel:
    """An RL fine-tuned separator from :func:`mars_core.rl.trainer.load_or_train_rl` (imported here, lazily).

    Raises:
        SystemUnavailable: the RL trainer module does not exist (yet).
    """
    try:
        from .rl.trainer import load_or_train_rl
    except ImportError as exc:
        raise SystemUnavailable(f"mars_core.rl.trainer.load_or_train_rl is not available ({exc})") from exc
    out = load_or_train_rl(ctx.profile, preset, aligned=aligned, progress=ctx.progress)
    return _as_system_model(out, f"load_or_train_rl({ctx.profile.name!r}, {preset!r}, aligned={aligned})")


def load_aligned_no_rl(ctx: BenchmarkContext) -> SystemModel:
    """The supervised separator asked with queries from the **aligned** encoder (no RL): the paper's
    ablation that collapses, because the separator learned the un-aligned encoder's query space.

    Raises:
        SystemUnavailable: the reward stack module does not exist (yet).
    """
    try:
        from .alignment.stack import load_reward_stack
    except ImportError as exc:
        raise SystemUnavailable(f"mars_core.alignment.stack.load_reward_stack is not available ({exc})") from exc
    from .queries import load_or_build_query_bank

    stack = load_reward_stack(ctx.profile, aligned=True, build_dir=ctx.build_dir)
    bank = load_or_build_query_bank(stack.encoder, ctx.profile, build_dir=ctx.build_dir, progress=ctx.progress)
    sup = ctx.supervised()
    return SystemModel(sup.model, bank, sup.history, f"{sup.source}, queried by the aligned encoder {stack.key}")


SYSTEMS: dict[str, Loader] = {
    "supervised": load_supervised,
    "MARS-Sep paper": lambda ctx: load_rl(ctx, "paper", aligned=True),
    "MARS-Sep plus": lambda ctx: load_rl(ctx, "plus", aligned=True),
    "RL, un-aligned encoder": lambda ctx: load_rl(ctx, "plus", aligned=False),
    "aligned encoder, no RL": load_aligned_no_rl,
}
"""The learned systems, in table order: name -> loader ``(BenchmarkContext) -> SystemModel``."""
SYSTEM_ALIASES = {"supervised": "supervised", "paper": "MARS-Sep paper", "plus": "MARS-Sep plus",
                  "rl-unaligned": "RL, un-aligned encoder", "aligned-no-rl": "aligned encoder, no RL"}
"""Short command-line names of :data:`SYSTEMS`."""
SYSTEM_DESCRIPTIONS = {
    "supervised": "separator trained with mix-and-separate + Query-Mixup (notebook 02); the baseline",
    "MARS-Sep paper": "RL from the baseline, paper preset: one sample per item, EMA baseline, one PPO epoch "
                      "(REINFORCE + entropy), semantic reward of the aligned encoder and MLBP anchor",
    "MARS-Sep plus": "RL from the baseline, our preset: G masks per item, group advantages, 2 PPO epochs, "
                     "semantic reward minus a contamination penalty",
    "RL, un-aligned encoder": "ablation: the plus preset rewarded by the encoder before progressive alignment",
    "aligned encoder, no RL": "ablation: the supervised separator queried with the aligned encoder's embeddings",
}


def resolve_systems(systems: Iterable[str] | Mapping[str, Loader] | None) -> dict[str, Loader]:
    """A registry: ``None`` -> :data:`SYSTEMS`; a mapping -> itself; names (or aliases) -> their loaders.

    Raises:
        KeyError: an unknown name.
    """
    if systems is None:
        return dict(SYSTEMS)
    if isinstance(systems, Mapping):
        return dict(systems)
    out = {}
    for name in systems:
        full = SYSTEM_ALIASES.get(name, name)
        if full not in SYSTEMS:
            raise KeyError(f"unknown system {name!r}; choose from {list(SYSTEMS)} or {list(SYSTEM_ALIASES)}")
        out[full] = SYSTEMS[full]
    return out


def load_systems(ctx: BenchmarkContext, systems: Iterable[str] | Mapping[str, Loader] | None = None
                 ) -> tuple[dict[str, SystemModel], dict[str, str]]:
    """Run each loader: ``(loaded {name: SystemModel}, missing {name: reason})``.

    A loader raising :class:`SystemUnavailable`, ``ImportError`` or ``FileNotFoundError`` marks its
    system missing, with a warning; any other error propagates.
    """
    loaded, missing = {}, {}
    for name, loader in resolve_systems(systems).items():
        try:
            loaded[name] = _as_system_model(loader(ctx), name)
        except (SystemUnavailable, ImportError, FileNotFoundError) as exc:
            missing[name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"benchmark: system {name!r} is missing and left out of the tables: {exc}", stacklevel=2)
    return loaded, missing


# =========================================================================== test sets and scoring
@dataclass
class TestSet:
    """One evaluation set: an :class:`~mars_core.evaluate.EvalSet` whose ``meta`` also holds
    ``interferer_text`` (the interferer's own prompt), with its split and pair type."""

    split: str
    pairs: str
    eval_set: EvalSet

    @property
    def name(self) -> str:
        return f"{self.split}/{self.pairs}"


def load_test_set(profile: str | Profile | None, split: str, pairs: str, n_items: int | None = None,
                  build_dir: str | os.PathLike | None = None) -> TestSet:
    """The seeded test mixtures of ``split`` (:func:`~mars_core.evaluate.load_eval_set`), plus the
    interferer's prompt of each item (:func:`~mars_core.queries.item_queries`, seeded by the item)."""
    from .data.mixing import MixtureDataset

    if pairs not in PAIR_TYPES:
        raise ValueError(f"pairs must be one of {PAIR_TYPES}, got {pairs!r}")
    hard = pairs == "hard"
    es = load_eval_set(profile, split, n_items, hard_pairs=hard, build_dir=build_dir)
    ds = MixtureDataset(split, profile, n_items=len(es), hard_pairs=hard, random_gain=False, random_crop=False,
                        build_dir=build_dir, load_images=False)
    texts = []
    for i in es.meta["index"]:
        item = ds[int(i)]
        texts.append(item_queries(ds, item)[1].text)
    return TestSet(split, pairs, dataclasses.replace(es, meta=es.meta.assign(interferer_text=texts)))


class BenchmarkScorer(JudgeScorer):
    """:class:`~mars_core.evaluate.JudgeScorer` plus the contamination scores, one judge pass per waveform.

    Returns ``semantic`` and ``semantic_image`` (as the parent), ``contamination`` =
    ``100 cos(judge(y^), judge(interferer prompt))`` and ``semantic_margin`` = ``semantic -
    contamination``; NaN for silent waveforms.

    Shape:
        waveforms ``(N, samples)`` aligned with the test set; each value ``(N,)`` float64.
    """

    def __init__(self, judge, eval_set: EvalSet, sample_rate: int):
        super().__init__(judge, eval_set, sample_rate)
        with torch.no_grad(), judge.eval_mode():
            self.interferer = judge.embed_text(list(eval_set.meta["interferer_text"]))

    def scores(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        c = contamination_score(a, self.text, self.interferer)
        return {**super().scores(a), "contamination": c["contamination"], "semantic_margin": 100.0 * c["margin"]}


def portable_path(text: str) -> str:
    """``text`` with this machine's repository root written as ``.`` and ``$MARS_DATA`` as itself,
    so a committed ``run.json`` names checkpoints the same way on every machine."""
    from .data.manifest import data_root

    root = Path(__file__).resolve().parents[1]
    return text.replace(str(data_root()), "$MARS_DATA").replace(str(root) + os.sep, "").replace(str(root), ".")


def evaluate_test_set(ctx: BenchmarkContext, ts: TestSet, systems: Mapping[str, SystemModel], *,
                      modalities: Sequence[str] = EVAL_MODALITIES, references: bool = True,
                      batch_size: int = 16) -> pd.DataFrame:
    """Per-item rows of the reference systems and of every loaded system on one test set.

    All systems x queries are separated first, then scored in one BSS Eval pass
    (:func:`~mars_core.evaluate.evaluate_systems`). The estimates of the whole test set are held at
    once: ``(4 + 4 x systems) x items x samples`` float32 (630 MB for 5 systems and 200 cpu-size items).

    Raises:
        ValueError: the judge is the encoder of some system's query bank (its scores would hide
            reward hacking).
    """
    judge = ctx.judge_encoder()
    scorer = None
    if judge is not None:
        fp = encoder_fingerprint(judge)
        banks = [ctx.query_bank()] + [s.bank for s in systems.values() if s.bank is not None]
        if any(b.encoder == fp for b in banks):
            raise ValueError("the judge must be another encoder than every query/reward encoder (docs/method.md section 8)")
        scorer = BenchmarkScorer(judge, ts.eval_set, ctx.profile.audio.sample_rate)
    separators = {name: (s.model, s.bank or ctx.query_bank()) for name, s in systems.items()}
    df = evaluate_systems(ctx.profile, ts.eval_set, separators, references=references, scorer=scorer,
                          modalities=modalities, batch_size=batch_size, progress=False)
    return df.assign(split=ts.split, pairs=ts.pairs)


def _order(df: pd.DataFrame, systems: Sequence[str]) -> pd.DataFrame:
    """Sort rows by test set, pair type, system (reference systems first), query, [metric], item."""
    ranks = {
        "split": list(SPLITS), "pairs": list(PAIR_TYPES),
        "system": [*REFERENCE_SYSTEMS, *systems], "modality": ["-", *EVAL_MODALITIES], "metric": list(METRICS),
    }
    keys = [c for c in ("split", "pairs", "system", "modality", "metric", "item") if c in df.columns]

    def key(col: pd.Series) -> pd.Series:
        if col.name not in ranks:
            return col
        order = {v: i for i, v in enumerate(ranks[col.name])}
        return col.map(lambda v: order.get(v, len(order)))

    return df.sort_values(keys, key=key, kind="stable").reset_index(drop=True)


def tidy_items(frames: Sequence[pd.DataFrame], systems: Sequence[str]) -> pd.DataFrame:
    """One tidy frame: key columns first (``split, pairs, system, modality, item``), then metrics, then metadata."""
    df = pd.concat(frames, ignore_index=True)
    first = ["split", "pairs", "system", "modality", "item", *[m for m in METRICS if m in df.columns]]
    df = df[first + [c for c in df.columns if c not in first]]
    return _order(df, systems)


# =========================================================================== statistics
def summary_table(items: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean, sem, median, n, n_skipped per (split, pairs, system, modality, metric)
    (:func:`~mars_core.metrics.summarize`). Rows of a metric a system does not have (the clean
    target's SDR) are dropped: ``n == 0`` and nothing skipped."""
    present = [m for m in metrics if m in items.columns and items[m].notna().any()]
    with np.errstate(invalid="ignore"):  # the mixture's SAR is +inf: its sem is NaN
        out = summarize(items, by=["split", "pairs", "system", "modality"], metrics=present)
    out = out[(out["n"] > 0) | (out["n_skipped"] > 0)]
    return _order(out, list(dict.fromkeys(items["system"])))


def wide_table(summary: pd.DataFrame, split: str = "test", pairs: str = "random",
               metrics: Sequence[str] | None = None, digits: int = 2) -> pd.DataFrame:
    """``mean ± sem`` strings of one test set: one row per (system, query), one column per metric
    (:func:`~mars_core.evaluate.compact_table`)."""
    from .evaluate import compact_table

    s = summary[(summary["split"] == split) & (summary["pairs"] == pairs)]
    if metrics is not None:
        s = s[s["metric"].isin(list(metrics))]
    wide = compact_table(s.drop(columns=["split", "pairs"]), digits)
    return wide[["system", "modality", *[m for m in METRICS if m in wide.columns]]]


def bootstrap_table(boot: pd.DataFrame, metrics: Sequence[str] = ("sdr", "semantic", "contamination"),
                    digits: int = 2) -> pd.DataFrame:
    """``mean [low, high]`` strings: one row per (system, query, metric), one column per test set."""
    b = boot[boot["metric"].isin(list(metrics))]
    b = b.assign(test_set=b["split"] + "/" + b["pairs"],
                 value=[f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
                        for m, lo, hi in zip(b["mean_diff"], b["ci_low"], b["ci_high"])])
    wide = b.pivot_table(index=["system", "modality", "metric"], columns="test_set", values="value",
                         aggfunc="first", sort=False)
    return wide.reset_index().rename_axis(columns=None)


def bootstrap_mean_ci(d: np.ndarray, n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
                      rng: np.random.Generator | int = 0) -> tuple[float, float, float]:
    """Mean of ``d`` and its percentile-bootstrap interval.

    Algorithm (so a notebook can redo it): ``idx = rng.integers(0, n, size=(n_resamples, n))``;
    ``means = d[idx].mean(axis=1)``; interval = ``np.quantile(means, [(1 - level) / 2, (1 + level) / 2])``.
    An empty ``d`` gives NaNs; a single value gives ``(d, d, d)``.

    Shape:
        d: ``(n,)`` finite values (e.g. paired differences).
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise ValueError("d must be a 1-D array of finite values")
    if not 0 < level < 1 or n_resamples < 1:
        raise ValueError(f"need 0 < level < 1 and n_resamples >= 1, got {level}, {n_resamples}")
    if len(d) == 0:
        return np.nan, np.nan, np.nan
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = rng.integers(0, len(d), size=(n_resamples, len(d)))
    lo, hi = np.quantile(d[idx].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def paired_bootstrap(items: pd.DataFrame, baseline: str = BASELINE, systems: Sequence[str] | None = None,
                     metrics: Sequence[str] = METRICS, n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
                     seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap CI of ``mean_i (system_i - baseline_i)`` per (split, pairs, modality, metric).

    Items are paired by their index; a pair where either value is missing (skipped) or
    non-finite is dropped (``n`` counts the pairs used). The generator of a group is
    ``default_rng([seed, crc32("split|pairs|modality")])``: the same for every system and metric
    of the group, and independent of which other systems run. Columns: ``split, pairs, system,
    baseline, modality, metric, n, mean_diff, ci_low, ci_high, level, n_resamples``.
    """
    from .seeding import stable_int

    cols = ["split", "pairs", "system", "baseline", "modality", "metric", "n", "mean_diff", "ci_low", "ci_high",
            "level", "n_resamples"]
    if baseline not in set(items["system"]):
        return pd.DataFrame(columns=cols)
    learned = [s for s in dict.fromkeys(items["system"]) if s not in REFERENCE_SYSTEMS and s != baseline]
    systems = [s for s in (systems or learned) if s != baseline]
    present = [m for m in metrics if m in items.columns]
    rows = []
    base = items[items["system"] == baseline]
    for (split, pairs, modality), b in base.groupby(["split", "pairs", "modality"], sort=False):
        b = b.set_index("item")
        for name in systems:
            s = items[(items["system"] == name) & (items["split"] == split) & (items["pairs"] == pairs)
                      & (items["modality"] == modality)].set_index("item")
            if s.empty:
                continue
            for m in present:
                d = (s[m] - b[m].reindex(s.index)).to_numpy(dtype=float)
                d = d[np.isfinite(d)]
                rng = np.random.default_rng([seed, stable_int(f"{split}|{pairs}|{modality}")])
                mean, lo, hi = bootstrap_mean_ci(d, n_resamples, level, rng)
                rows.append([split, pairs, name, baseline, modality, m, len(d), mean, lo, hi, level, n_resamples])
    return _order(pd.DataFrame(rows, columns=cols), systems)


# =========================================================================== the run
@dataclass
class BenchmarkResult:
    """Everything a benchmark run produced (the CSV tables plus what the widget needs to listen).

    Attributes:
        items, summary, bootstrap: the tables (see the module docstring).
        run: the ``run.json`` record.
        systems: the loaded learned systems; missing: ``{name: reason}`` of the others.
        test_sets: ``{"split/pairs": TestSet}``.
        context: the :class:`BenchmarkContext` (profile, default bank, judge).
    """

    items: pd.DataFrame
    summary: pd.DataFrame
    bootstrap: pd.DataFrame
    run: dict
    systems: dict[str, SystemModel]
    missing: dict[str, str]
    test_sets: dict[str, TestSet]
    context: BenchmarkContext

    @property
    def profile(self) -> Profile:
        return self.context.profile


def git_commit(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"commit": 40 hex or None, "dirty": bool or None}`` of the repository holding this package."""
    root = Path(root or Path(__file__).resolve().parents[1])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def machine_info() -> dict[str, Any]:
    """Host name, platform, CPU count, torch threads and version, GPU name if any."""
    return {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_benchmark(profile: str | Profile | None = None, *, systems: Iterable[str] | Mapping[str, Loader] | None = None,
                  splits: Sequence[str] = SPLITS, pair_types: Sequence[str] = PAIR_TYPES,
                  modalities: Sequence[str] = EVAL_MODALITIES, n_items: int | None = None, seed: int = 0,
                  n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL, context: BenchmarkContext | None = None,
                  loaded: Mapping[str, SystemModel] | None = None, missing: Mapping[str, str] | None = None,
                  out: str | os.PathLike | None = None,
                  command: str | None = None, progress: bool = True) -> BenchmarkResult:
    """Load the systems, evaluate them on every test set, summarise, bootstrap, and (with ``out``) save.

    Args:
        systems: names/aliases from :data:`SYSTEMS`, or a registry ``{name: loader}`` (tests inject
            tiny models this way); ``None``: all of :data:`SYSTEMS`.
        loaded: already loaded systems (skips loading; ``systems`` is then ignored), with ``missing``
            the ``{name: reason}`` of :func:`load_systems` to record in ``run.json``.
        n_items: test mixtures per test set (default: the profile's ``n_test_mixtures``).
        seed: seeds torch/numpy (:func:`~mars_core.seeding.seed_everything`) and the bootstrap.
        context: a :class:`BenchmarkContext` (default: one for ``profile``; if both are given they must agree).
        out: directory for the CSV files, ``run.json``, histories and examples (:func:`save_results`).
        command: recorded in ``run.json`` (default: this process's command line).
    """
    from .seeding import seed_everything

    t0 = time.perf_counter()
    seed_everything(seed)
    ctx = context or BenchmarkContext(profile, progress=progress)
    if profile is not None and get_profile(profile).name != ctx.profile.name:
        raise ValueError(f"profile {get_profile(profile).name!r} differs from the context's {ctx.profile.name!r}")
    if loaded is None:
        loaded, missing = load_systems(ctx, systems)
    else:
        loaded, missing = dict(loaded), dict(missing or {})
    test_sets, skipped_sets, frames = {}, {}, []
    todo = [(s, p) for s in splits for p in pair_types]
    prog = Progress(len(todo), "test sets", every=1, enabled=progress)  # one line per test set
    for done, (split, pairs) in enumerate(todo, 1):
        try:
            ts = load_test_set(ctx.profile, split, pairs, n_items, ctx.build_dir)
        except ValueError as exc:  # no family with two classes in this split: no hard pair exists
            if "hard pairs are impossible" not in str(exc):
                raise
            skipped_sets[f"{split}/{pairs}"] = str(exc)
            warnings.warn(f"benchmark: test set {split}/{pairs} skipped: {exc}", stacklevel=2)
            prog.update(done, test_set=f"{split}/{pairs} (skipped)")
            continue
        test_sets[ts.name] = ts
        frames.append(evaluate_test_set(ctx, ts, loaded, modalities=modalities))
        prog.update(done, test_set=f"{split}/{pairs}")
    prog.close()
    if not frames:
        raise RuntimeError(f"no test set could be built: {skipped_sets}")
    items = tidy_items(frames, list(loaded))
    summary = summary_table(items)
    boot = paired_bootstrap(items, n_resamples=n_resamples, level=level, seed=seed)
    run = {
        "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "profile": ctx.profile.name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "git": git_commit(), "seed": seed, "wall_s": round(time.perf_counter() - t0, 2),
        "n_items": n_items if n_items is not None else ctx.profile.data.n_test_mixtures,
        "test_sets": list(test_sets), "skipped_test_sets": skipped_sets, "modalities": list(modalities),
        "systems": {k: portable_path(v.source) for k, v in loaded.items()}, "missing_systems": missing,
        "baseline": BASELINE, "bootstrap": {"n_resamples": n_resamples, "level": level},
        "judge": None if ctx.judge_encoder() is None else type(ctx.judge_encoder()).__name__,
    }
    result = BenchmarkResult(items, summary, boot, run, loaded, missing, test_sets, ctx)
    if out is not None:
        save_results(result, out)
    return result


# =========================================================================== listening material
@torch.no_grad()
def item_signals(result: BenchmarkResult, test_set: str, index: int, modality: str = "text",
                 systems: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Waveforms of one test item: ``mixture``, ``target`` (reference), ``interferer``, the oracle
    masks' estimates and each learned system's estimate for the ``modality`` query.

    Shape:
        each value ``(samples,)`` float32.
    """
    ts = result.test_sets[test_set]
    es = ts.eval_set
    fe = FrontEnd(result.profile.audio)
    mix, src = es.mixtures[index : index + 1], es.sources[index : index + 1]
    out = {"mixture": mix[0], "target": src[0, 0], "interferer": src[0, 1]}
    for kind in ("ibm", "irm"):
        out[f"oracle {kind.upper()}"] = fe.oracle_separate(src.double(), mix.double(), kind, "warped")[0, 0].float()
    sub = dataclasses.replace(es, mixtures=mix, sources=src, refs=es.refs[index : index + 1],
                              images=es.images[index : index + 1], meta=es.meta.iloc[index : index + 1])
    for name in systems if systems is not None else list(result.systems):
        s = result.systems[name]
        q = eval_queries(s.bank or result.context.query_bank(), sub, (modality,))  # only this kind: (1, 1, D)
        out[name] = separate(s.model, fe, mix, q)[0][0, 0]
    return {label: wav.detach().cpu().numpy().astype(np.float32) for label, wav in out.items()}


# =========================================================================== saving and loading
def _json_ready(obj: Any) -> Any:
    """Lists of plain numbers/strings from histories (tensors, numpy, nested dicts)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer, int, bool, str)) or obj is None:
        return obj.item() if isinstance(obj, np.generic) else obj
    return str(obj)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    write_bytes_atomic(path, df.to_csv(index=False).encode("utf-8"))


def save_results(result: BenchmarkResult, out: str | os.PathLike, example: tuple[str, int] = ("test/random", 0),
                 example_modality: str = "text") -> Path:
    """Write ``items.csv``, ``summary.csv``, ``bootstrap.csv``, ``run.json``, ``histories.json`` and
    ``examples.npz`` (the signals of :func:`item_signals` for ``example``) into ``out``, each atomically."""
    out = Path(out)
    _write_csv(out / "items.csv", result.items)
    _write_csv(out / "summary.csv", result.summary)
    _write_csv(out / "bootstrap.csv", result.bootstrap)
    histories = {k: s.history for k, s in result.systems.items() if s.history}
    write_bytes_atomic(out / "histories.json", json.dumps(_json_ready(histories), indent=1).encode())
    run = dict(result.run, outputs=["items.csv", "summary.csv", "bootstrap.csv", "histories.json"])
    if example[0] in result.test_sets and example[1] < len(result.test_sets[example[0]].eval_set):
        sig = item_signals(result, example[0], example[1], example_modality)
        meta = result.test_sets[example[0]].eval_set.meta.iloc[example[1]]
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **{f"signal/{k}": v for k, v in sig.items()})
        write_bytes_atomic(out / "examples.npz", buf.getvalue())
        run["example"] = {"test_set": example[0], "item": int(example[1]), "modality": example_modality,
                          "target": str(meta["target"]), "interferer": str(meta["interferer"]),
                          "query_text": str(meta["query_text"]), "sample_rate": result.profile.audio.sample_rate}
        run["outputs"].append("examples.npz")
    write_bytes_atomic(out / "run.json", json.dumps(_json_ready(run), indent=1).encode())
    return out


@dataclass
class SavedResults:
    """What :func:`load_results` reads back from a results directory."""

    items: pd.DataFrame
    summary: pd.DataFrame
    bootstrap: pd.DataFrame
    run: dict
    histories: dict
    examples: dict[str, np.ndarray]


def load_results(results_dir: str | os.PathLike) -> SavedResults:
    """Read a directory written by :func:`save_results` (histories and examples optional)."""
    d = Path(results_dir)
    if not (d / "summary.csv").exists():
        raise FileNotFoundError(f"{d} holds no summary.csv: run `python -m mars_core.benchmark --out {d}` first")
    read = lambda name: pd.read_csv(d / name, keep_default_na=True)  # noqa: E731
    histories = json.loads((d / "histories.json").read_text()) if (d / "histories.json").exists() else {}
    examples = {}
    if (d / "examples.npz").exists():
        with np.load(d / "examples.npz") as z:
            examples = {k.split("/", 1)[1]: z[k] for k in z.files}
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
    return SavedResults(read("items.csv"), read("summary.csv"), read("bootstrap.csv"), run, histories, examples)




# =========================================================================== command line
def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: $MARS_PROFILE or smoke)")
    p.add_argument("--out", default=None, help="results directory (default: runs/<profile>/benchmark)")
    p.add_argument("--systems", nargs="+", default=None,
                   help=f"subset of the learned systems: names or aliases {list(SYSTEM_ALIASES)} (default: all)")
    p.add_argument("--n-items", type=int, default=None, help="test mixtures per test set (default: the profile's)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--pairs", nargs="+", default=list(PAIR_TYPES), choices=list(PAIR_TYPES))
    p.add_argument("--seed", type=int, default=0, help="seed of torch/numpy and of the bootstrap")
    p.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def _figures_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.benchmark figures",
                                description="Figures from a results directory (see mars_core.benchmark_figures).")
    p.add_argument("--csv", required=True, help="results directory written by the benchmark")
    p.add_argument("--out", required=True, help="figure directory (figures/ for the committed cpu figures)")
    return p


def main(argv: list[str] | None = None) -> int:
    from .benchmark_reading import describe_paper_comparison, describe_results, paper_comparison

    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m mars_core.benchmark " + " ".join(shlex.quote(a) for a in argv)
    if argv[:1] == ["figures"]:
        from .benchmark_figures import make_figures

        args = _figures_parser().parse_args(argv[1:])
        for path in make_figures(args.csv, args.out, command=command):
            print(path)
        return 0
    args = _run_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = get_profile(args.profile)
    out = Path(args.out or Path("runs") / prof.name / "benchmark")
    res = run_benchmark(prof, systems=args.systems, splits=args.splits, pair_types=args.pairs, n_items=args.n_items,
                        seed=args.seed, n_resamples=args.resamples, out=out, command=command)
    cols = ["split", "pairs", "system", "modality", "metric", "mean", "sem", "n"]
    with pd.option_context("display.width", 200, "display.max_rows", 400):
        print(res.summary[res.summary["metric"].isin(["sdr", "semantic", "contamination"])][cols]
              .round(2).to_string(index=False))
    print("\n".join(describe_results(res.summary, res.bootstrap, prof.name)))
    print("\n".join(describe_paper_comparison(paper_comparison(res.summary, res.bootstrap))))
    if res.missing:
        print("missing systems: " + "; ".join(f"{k} ({v})" for k, v in res.missing.items()))
    print(f"-> {out} ({res.run['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
