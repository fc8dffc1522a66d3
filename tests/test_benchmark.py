"""mars_core.benchmark harness, tables and io: tidy tables with injected models, contamination, determinism, files, run.json.

Bootstrap, registry, reading, figures and the command line have their own test files (test_benchmark_*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mars_core import benchmark as B
from mars_core.config import get_profile
from tests.conftest import FAKE_CLASSES
from tests.test_evaluate import constant_separator, v4_sdr
from tests.test_queries import StubEncoder, fake_bank
from tests.tolerances import assert_within, reconstruct_atol

SMOKE = get_profile("smoke")
N_ITEMS = 4
RL_HISTORY = {"step": [0, 1, 2], "reward_mean": [0.1, 0.2, 0.3], "approx_kl": [0.0, 0.01, 0.02]}


def tiny_registry():
    """supervised = all-pass mask (estimate = mixture); 'MARS-Sep plus' = mask 1/2 (estimate = mixture / 2)."""
    return {
        "supervised": lambda ctx: B.SystemModel(constant_separator(40.0), source="all-pass"),
        "MARS-Sep plus": lambda ctx: B.SystemModel(constant_separator(0.0), history=RL_HISTORY, source="half"),
    }


def small_result(build, out=None, seed=0, n_items=N_ITEMS, splits=B.SPLITS, pair_types=B.PAIR_TYPES, judge_seed=0):
    ctx = B.BenchmarkContext(SMOKE, build_dir=build, bank=fake_bank(build, SMOKE.separator.query_dim),
                             judge=StubEncoder(dim=32, seed=judge_seed), progress=False)
    return B.run_benchmark(SMOKE, systems=tiny_registry(), context=ctx, n_items=n_items, splits=splits,
                           pair_types=pair_types, seed=seed,
                           n_resamples=300, out=out, command="pytest benchmark", progress=False)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench") / "run"


@pytest.fixture(scope="module")
def result(fake_build, bench_dir):
    return small_result(fake_build, bench_dir)


# --------------------------------------------------------------------------- tables
def test_tidy_items_shape_and_columns(result):
    it = result.items
    n_ref = 5  # mixture, mixture / 2, oracle IBM, oracle IRM, clean target
    assert set(result.test_sets) == {"test/random", "test/hard", "test_timbre/random", "test_timbre/hard"}
    assert len(it) == 4 * N_ITEMS * (n_ref + 2 * 4)
    assert list(it.columns[:5]) == ["split", "pairs", "system", "modality", "item"]
    assert set(B.METRICS) <= set(it.columns) and "interferer_text" in it.columns
    assert not it.duplicated(["split", "pairs", "system", "modality", "item"]).any()
    assert list(dict.fromkeys(it["system"])) == [*B.REFERENCE_SYSTEMS, "supervised", "MARS-Sep plus"]
    assert it["item"].dtype.kind == "i"  # the clean-target rows are numbered like the others
    for (split, pairs), g in it[it["system"] == "clean target"].groupby(["split", "pairs"]):
        assert list(g["item"]) == list(range(N_ITEMS))
        assert list(g["target"]) == list(result.test_sets[f"{split}/{pairs}"].eval_set.meta["target"])


def test_summary_one_row_per_group_and_metric(result):
    s = result.summary
    assert list(s.columns) == ["split", "pairs", "system", "modality", "metric", "mean", "sem", "median", "n",
                               "n_skipped"]
    assert not s.duplicated(["split", "pairs", "system", "modality", "metric"]).any()
    learned = s[s["system"].isin(["supervised", "MARS-Sep plus"])]
    assert len(learned) == 4 * 2 * 4 * len(B.METRICS) and (learned["n"] == N_ITEMS).all()
    assert set(s.loc[s["system"] == "clean target", "metric"]) == {"semantic", "semantic_image", "contamination",
                                                                   "semantic_margin"}
    # mean and sem by hand for one group
    it = result.items
    x = it[(it["split"] == "test") & (it["pairs"] == "hard") & (it["system"] == "oracle IRM")]["sdr"].to_numpy()
    row = s[(s["split"] == "test") & (s["pairs"] == "hard") & (s["system"] == "oracle IRM") & (s["metric"] == "sdr")]
    assert row["mean"].item() == pytest.approx(x.mean()) and row["sem"].item() == pytest.approx(
        x.std(ddof=1) / np.sqrt(len(x)))


def test_constant_mask_systems_equal_the_reference_rows(result):
    it = result.items
    for name in result.test_sets:
        split, pairs = name.split("/")
        g = it[(it["split"] == split) & (it["pairs"] == pairs)]
        es = result.test_sets[name].eval_set
        mix_sdr, half_sdr = v4_sdr(es.mixtures, es.sources[:, 0]), v4_sdr(0.5 * es.mixtures, es.sources[:, 0])
        for m in ("text", "omni"):  # a constant mask ignores the query
            sup = g[(g["system"] == "supervised") & (g["modality"] == m)]["sdr"].to_numpy()
            plus = g[(g["system"] == "MARS-Sep plus") & (g["modality"] == m)]["sdr"].to_numpy()
            np.testing.assert_allclose(sup, mix_sdr, atol=1e-3)   # mask 1 -> the mixture
            np.testing.assert_allclose(plus, half_sdr, atol=1e-3)  # mask 1/2 -> the mixture / 2
        np.testing.assert_allclose(g[g["system"] == "mixture"]["sdr"], mix_sdr, atol=1e-9)
        boot = result.bootstrap
        r = boot[(boot["split"] == split) & (boot["pairs"] == pairs) & (boot["modality"] == "text")
                 & (boot["metric"] == "sdr")].iloc[0]
        assert r["system"] == "MARS-Sep plus" and r["mean_diff"] == pytest.approx((half_sdr - mix_sdr).mean(), abs=1e-3)
        assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]


def test_hard_pairs_share_a_family_and_contamination_is_computed(result):
    it = result.items
    hard = it[it["pairs"] == "hard"]
    fam = {c: f for c, (f, _) in FAKE_CLASSES.items()}
    assert (hard["target"].map(fam) == hard["interferer"].map(fam)).all()
    # the fake build has one held-out prompt per class: the interferer's prompt is known
    assert (it["interferer_text"] == "listen: " + it["interferer"]).all()
    row = hard[(hard["system"] == "MARS-Sep plus") & (hard["modality"] == "text") & (hard["split"] == "test")].iloc[0]
    est = 0.5 * result.test_sets["test/hard"].eval_set.mixtures[int(row["item"])].numpy()
    pad = lambda v: F.normalize(torch.tensor(v + [0.0] * (32 - len(v)), dtype=torch.float64), dim=0)  # noqa: E731
    a = pad(StubEncoder.audio_features(est, 8000))
    c_i = float(a @ pad(StubEncoder.text_features(row["interferer_text"])))
    c_t = float(a @ pad(StubEncoder.text_features(row["query_text"])))
    assert row["contamination"] == pytest.approx(100 * c_i, abs=1e-3)
    assert row["semantic_margin"] == pytest.approx(100 * (c_t - c_i), abs=1e-3)
    np.testing.assert_allclose(it["semantic_margin"], it["semantic"] - it["contamination"], atol=1e-4)
    s = result.summary
    assert len(s[(s["pairs"] == "hard") & (s["metric"] == "contamination") & (s["system"] == "MARS-Sep plus")]) == 8


def test_item_signals_are_the_systems_estimates(result):
    sig = B.item_signals(result, "test/random", 1, "audio")
    es = result.test_sets["test/random"].eval_set
    atol = reconstruct_atol(SMOKE.audio, es.mixtures.shape[-1], es.mixtures[1].abs().max().item())  # float32 round trip
    assert_within(sig["supervised"], es.mixtures[1], atol, "all-pass estimate")
    assert_within(sig["MARS-Sep plus"], 0.5 * es.mixtures[1], atol / 2, "mask 1/2")
    np.testing.assert_array_equal(sig["target"], es.sources[1, 0].numpy())


def test_judge_equal_to_a_query_encoder_is_refused(fake_build):
    from mars_core.queries import build_query_bank

    enc = StubEncoder(dim=SMOKE.separator.query_dim)
    bank = build_query_bank(enc, fake_build, 8000, splits=("test",), progress=False)
    ctx = B.BenchmarkContext(SMOKE, build_dir=fake_build, bank=bank, judge=enc, progress=False)
    with pytest.raises(ValueError, match="judge must be another encoder"):
        B.run_benchmark(SMOKE, systems=tiny_registry(), context=ctx, n_items=2, splits=("test",),
                        pair_types=("random",), progress=False)


# --------------------------------------------------------------------------- files
def test_same_seed_gives_identical_files(result, fake_build, tmp_path):
    for run in ("a", "b"):
        small_result(fake_build, tmp_path / run, n_items=3, splits=("test",), pair_types=("hard",))
    for name in ("items.csv", "summary.csv", "bootstrap.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = B.paired_bootstrap(result.items, seed=1, n_resamples=300)
    assert not other[["ci_low", "ci_high"]].equals(result.bootstrap[["ci_low", "ci_high"]])
    assert other["mean_diff"].equals(result.bootstrap["mean_diff"])  # the seed moves only the intervals


def test_saved_tables_read_back(result, bench_dir):
    saved = B.load_results(bench_dir)
    pd.testing.assert_frame_equal(saved.summary, result.summary, check_dtype=False)
    assert len(saved.items) == len(result.items) and list(saved.items.columns) == list(result.items.columns)
    assert saved.histories == {"MARS-Sep plus": RL_HISTORY}
    assert set(saved.examples) >= {"mixture", "target", "oracle IRM", "supervised", "MARS-Sep plus"}
    assert not list(bench_dir.glob(".*"))  # atomic writes leave no temporary files
    with pytest.raises(FileNotFoundError, match="no summary.csv"):
        B.load_results(bench_dir / "nothing")


def test_run_json_records_the_run(result, bench_dir):
    import datetime as dt

    run = json.loads((bench_dir / "run.json").read_text())
    assert run["command"] == "pytest benchmark" and run["profile"] == "smoke" and run["seed"] == 0
    assert dt.datetime.fromisoformat(run["date"]).tzinfo is not None
    assert run["machine"]["cpu_count"] >= 1 and run["machine"]["torch"] == torch.__version__
    commit = run["git"]["commit"]
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert run["wall_s"] > 0 and run["n_items"] == N_ITEMS and run["missing_systems"] == {}
    assert list(run["systems"]) == ["supervised", "MARS-Sep plus"]
    assert run["bootstrap"] == {"n_resamples": 300, "level": 0.95}
    assert run["example"]["test_set"] == "test/random" and run["example"]["sample_rate"] == 8000


def test_impossible_hard_pairs_are_skipped_with_a_warning(fake_build, tmp_path):
    import shutil

    from mars_core.data.manifest import read_table, write_csv_atomic

    build = shutil.copytree(fake_build, tmp_path / "b")
    classes = read_table(build, "classes")
    classes["family"] = classes["class_name"]  # every class its own family: no hard pair exists
    write_csv_atomic(build / "classes.csv", classes.to_dict("records"), list(classes.columns))
    with pytest.warns(UserWarning, match="test/hard skipped"):
        res = small_result(build, n_items=2, splits=("test",))
    assert list(res.test_sets) == ["test/random"] and "test/hard" in res.run["skipped_test_sets"]


def test_wide_and_bootstrap_tables(result):
    wide = B.wide_table(result.summary, "test", "hard", ["sdr", "contamination"])
    assert list(wide.columns) == ["system", "modality", "sdr", "contamination"]
    s = result.summary
    r = s[(s["split"] == "test") & (s["pairs"] == "hard") & (s["system"] == "supervised") & (s["modality"] == "omni")
          & (s["metric"] == "sdr")].iloc[0]
    cell = wide[(wide["system"] == "supervised") & (wide["modality"] == "omni")]["sdr"].item()
    assert cell == f"{r['mean']:.2f} ± {r['sem']:.2f}"
    bt = B.bootstrap_table(result.bootstrap, ["sdr"])
    assert list(bt.columns) == ["system", "baseline", "modality", "metric", *result.test_sets] and len(bt) == 4
    b = result.bootstrap.iloc[0]
    expected = f"{b['mean_diff']:+.2f} [{b['ci_low']:+.2f}, {b['ci_high']:+.2f}]"
    assert bt.iloc[0][f"{b['split']}/{b['pairs']}"] == expected


def test_portable_path_hides_this_machines_directories(monkeypatch, tmp_path):
    monkeypatch.setenv("MARS_DATA", str(tmp_path / "data"))
    root = Path(B.__file__).resolve().parents[2]  # mars_core/benchmark/__init__.py
    assert B.portable_path(f"{root}/checkpoints/separator_cpu.pt") == "checkpoints/separator_cpu.pt"
    assert B.portable_path(f"{tmp_path}/data/runs/rl/cpu-plus-1/final.pt") == "$MARS_DATA/runs/rl/cpu-plus-1/final.pt"
    assert B.portable_path(f"{root}/checkpoints/s.pt, queried by the aligned encoder ab12") == \
        "checkpoints/s.pt, queried by the aligned encoder ab12"
    assert B.portable_path("/elsewhere/x.pt") == "/elsewhere/x.pt"
