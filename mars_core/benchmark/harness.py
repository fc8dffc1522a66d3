"""The benchmark run: test sets with the interferer's prompt, judge and contamination scores, every system on
every test set, the tables, and the listening material (see :mod:`mars_core.benchmark`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..atomic import write_bytes_atomic
from ..audio import FrontEnd
from ..config import Profile, get_profile
from ..data.mixing import MixtureDataset
from ..evaluation.evaluate import EvalSet, JudgeScorer, eval_queries, evaluate_systems, load_eval_set, separate
from ..metrics import contamination_score
from ..progress import Progress
from ..queries import EVAL_MODALITIES, encoder_fingerprint, item_queries
from ..seeding import seed_everything
from .bootstrap import paired_bootstrap
from .io import _json_ready, _write_csv, git_commit, machine_info, portable_path
from .registry import BenchmarkContext, Loader, SystemModel, load_systems
from .tables import (BASELINE, CI_LEVEL, CONTROLS, N_RESAMPLES, PAIR_TYPES, RL_SYSTEMS, SPLITS, summary_table,
                     tidy_items)


@dataclass
class TestSet:
    """One evaluation set: an :class:`~mars_core.evaluation.evaluate.EvalSet` whose ``meta`` also holds
    ``interferer_text`` (the interferer's own prompt), with its split and pair type."""

    split: str
    pairs: str
    eval_set: EvalSet

    @property
    def name(self) -> str:
        return f"{self.split}/{self.pairs}"


def load_test_set(profile: str | Profile | None, split: str, pairs: str, n_items: int | None = None,
                  build_dir: str | os.PathLike | None = None) -> TestSet:
    """The seeded test mixtures of ``split`` (:func:`~mars_core.evaluation.evaluate.load_eval_set`), plus the
    interferer's prompt of each item (:func:`~mars_core.queries.item_queries`, seeded by the item)."""
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
    """:class:`~mars_core.evaluation.evaluate.JudgeScorer` plus the contamination scores, one judge pass per waveform.

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


def evaluate_test_set(ctx: BenchmarkContext, ts: TestSet, systems: Mapping[str, SystemModel], *,
                      modalities: Sequence[str] = EVAL_MODALITIES, references: bool = True,
                      batch_size: int = 16) -> pd.DataFrame:
    """Per-item rows of the reference systems and of every loaded system on one test set.

    All systems x queries are separated first, then scored in one BSS Eval pass
    (:func:`~mars_core.evaluation.evaluate.evaluate_systems`). The estimates of the whole test set are held at
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


def run_record(ctx: BenchmarkContext, *, command: str | None, seed: int, wall_s: float, n_items: int | None,
               test_sets: list[str], skipped_sets: Mapping[str, str], modalities: Sequence[str],
               loaded: Mapping[str, SystemModel], missing: Mapping[str, str], n_resamples: int, level: float) -> dict:
    """The ``run.json`` record: command, profile, date, machine, git commit, seed, wall time, test sets,
    systems (portable paths) and missing ones, baseline, bootstrap settings, judge."""
    return {
        "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "profile": ctx.profile.name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "git": git_commit(), "seed": seed, "wall_s": wall_s,
        "n_items": n_items if n_items is not None else ctx.profile.data.n_test_mixtures,
        "test_sets": test_sets, "skipped_test_sets": skipped_sets, "modalities": list(modalities),
        "systems": {k: portable_path(v.source) for k, v in loaded.items()}, "missing_systems": missing,
        "baseline": BASELINE, "bootstrap": {"n_resamples": n_resamples, "level": level},
        "judge": None if ctx.judge_encoder() is None else type(ctx.judge_encoder()).__name__,
    }


def run_benchmark(profile: str | Profile | None = None, *, systems: Iterable[str] | Mapping[str, Loader] | None = None,
                  splits: Sequence[str] = SPLITS, pair_types: Sequence[str] = PAIR_TYPES,
                  modalities: Sequence[str] = EVAL_MODALITIES, n_items: int | None = None, seed: int = 0,
                  n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL, context: BenchmarkContext | None = None,
                  loaded: Mapping[str, SystemModel] | None = None, missing: Mapping[str, str] | None = None,
                  out: str | os.PathLike | None = None,
                  command: str | None = None, progress: bool = True,
                  device: torch.device | str | None = None) -> BenchmarkResult:
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
        device: where the separators and the judge compute (a new context's; default: the CPU).
    """
    t0 = time.perf_counter()
    seed_everything(seed)
    ctx = context or BenchmarkContext(profile, progress=progress, device=device)
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
    boot = control_bootstrap(items, n_resamples=n_resamples, level=level, seed=seed)
    run = run_record(ctx, command=command, seed=seed, wall_s=round(time.perf_counter() - t0, 2), n_items=n_items,
                     test_sets=list(test_sets), skipped_sets=skipped_sets, modalities=modalities, loaded=loaded,
                     missing=missing, n_resamples=n_resamples, level=level)
    result = BenchmarkResult(items, summary, boot, run, loaded, missing, test_sets, ctx)
    if out is not None:
        save_results(result, out)
    return result


def control_bootstrap(items: pd.DataFrame, n_resamples: int = N_RESAMPLES, level: float = CI_LEVEL,
                      seed: int = 0) -> pd.DataFrame:
    """:func:`paired_bootstrap` of every learned system against :data:`BASELINE`, then of every RL system
    (:data:`RL_SYSTEMS`) against each control (:data:`CONTROLS`) present: rows whose ``baseline`` is the control."""
    frames = [paired_bootstrap(items, n_resamples=n_resamples, level=level, seed=seed)]
    present = set(items["system"])
    rl = [s for s in RL_SYSTEMS if s in present]
    for control in CONTROLS:
        if control in present and rl:
            frames.append(paired_bootstrap(items, baseline=control, systems=rl, n_resamples=n_resamples,
                                           level=level, seed=seed))
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True)


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
        buf = io.BytesIO()
        np.savez_compressed(buf, **{f"signal/{k}": v for k, v in sig.items()})
        write_bytes_atomic(out / "examples.npz", buf.getvalue())
        run["example"] = {"test_set": example[0], "item": int(example[1]), "modality": example_modality,
                          "target": str(meta["target"]), "interferer": str(meta["interferer"]),
                          "query_text": str(meta["query_text"]), "sample_rate": result.profile.audio.sample_rate}
        run["outputs"].append("examples.npz")
    write_bytes_atomic(out / "run.json", json.dumps(_json_ready(run), indent=1).encode())
    return out
