"""Benchmark harness: bootstrap, tidy tables, registry with injected models, contamination, determinism, run.json."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mars_core import benchmark as B
from mars_core.benchmark import cli, registry
from mars_core.benchmark import reading as R
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


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_identical_systems_is_exactly_zero():
    x = np.random.default_rng(0).normal(size=50)
    items = pd.DataFrame({"split": "test", "pairs": "random", "modality": "text", "item": np.tile(np.arange(50), 2),
                          "system": ["supervised"] * 50 + ["A"] * 50, "sdr": np.tile(x, 2)})
    boot = B.paired_bootstrap(items, metrics=["sdr"], n_resamples=200)
    assert len(boot) == 1
    r = boot.iloc[0]
    assert r["mean_diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0 and r["n"] == 50


def test_bootstrap_constant_shift_and_normal_theory():
    rng = np.random.default_rng(1)
    mean, lo, hi = B.bootstrap_mean_ci(np.full(30, 1.5), 100, rng=0)
    assert math.isclose(mean, 1.5) and math.isclose(lo, 1.5) and math.isclose(hi, 1.5)
    d = rng.normal(0.3, 1.0, size=400)
    mean, lo, hi = B.bootstrap_mean_ci(d, 4000, 0.95, rng=2)
    assert mean == pytest.approx(d.mean(), abs=1e-12)
    half = 1.959964 * d.std(ddof=1) / np.sqrt(len(d))  # normal-theory half-width of a 95% interval
    assert lo == pytest.approx(mean - half, abs=0.15 * half) and hi == pytest.approx(mean + half, abs=0.15 * half)


def test_bootstrap_follows_the_documented_recipe():
    d = np.random.default_rng(3).normal(size=17)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 17, size=(500, 17))
    expected = np.quantile(d[idx].mean(axis=1), [0.05, 0.95])
    _, lo, hi = B.bootstrap_mean_ci(d, 500, 0.90, rng=np.random.default_rng(7))
    assert (lo, hi) == tuple(expected)


def test_bootstrap_is_paired_over_items():
    rng = np.random.default_rng(4)
    base = rng.normal(0.0, 10.0, size=40)            # items differ a lot ...
    sys_ = base + 0.2 + rng.normal(0, 0.05, size=40)  # ... the system adds 0.2 dB to each
    items = pd.DataFrame({"split": "test", "pairs": "random", "modality": "text", "item": np.tile(np.arange(40), 2),
                          "system": ["supervised"] * 40 + ["A"] * 40, "sdr": np.r_[base, sys_]})
    r = B.paired_bootstrap(items, metrics=["sdr"], n_resamples=1000).iloc[0]
    assert r["ci_low"] > 0.15 and r["ci_high"] < 0.25  # unpaired, the interval would be about +-4.4 dB wide


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in B.bootstrap_mean_ci(np.array([]), 10))
    assert B.bootstrap_mean_ci(np.array([2.5]), 10) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError):
        B.bootstrap_mean_ci(np.array([1.0, np.nan]), 10)
    with pytest.raises(ValueError):
        B.bootstrap_mean_ci(np.array([1.0]), 10, level=1.0)
    # a skipped (NaN) item drops its pair; no baseline -> an empty table with the columns
    items = pd.DataFrame({"split": "test", "pairs": "random", "modality": "text", "item": [0, 1, 2] * 2,
                          "system": ["supervised"] * 3 + ["A"] * 3, "sdr": [1.0, 2.0, 3.0, 2.0, np.nan, 5.0]})
    r = B.paired_bootstrap(items, metrics=["sdr"], n_resamples=50).iloc[0]
    assert r["n"] == 2 and r["mean_diff"] == pytest.approx(1.5)
    empty = B.paired_bootstrap(items[items["system"] == "A"], metrics=["sdr"])
    assert empty.empty and "ci_low" in empty.columns


# --------------------------------------------------------------------------- registry
def test_resolve_systems_names_aliases_and_errors():
    assert list(B.resolve_systems(["plus", "supervised"])) == ["MARS-Sep plus", "supervised"]
    assert list(B.resolve_systems(None)) == list(B.SYSTEMS)
    with pytest.raises(KeyError, match="unknown system"):
        B.resolve_systems(["nope"])


def test_missing_systems_are_reported_not_fatal(monkeypatch, fake_build):
    monkeypatch.setitem(sys.modules, "mars_core.rl.trainer", None)  # import fails as if not written yet
    ctx = B.BenchmarkContext(SMOKE, build_dir=fake_build, bank=fake_bank(fake_build, 128), judge=None, progress=False)

    def broken(ctx):
        raise RuntimeError("a real bug")

    with pytest.warns(UserWarning, match="MARS-Sep paper"):
        loaded, missing = B.load_systems(ctx, {"supervised": tiny_registry()["supervised"],
                                               "MARS-Sep paper": B.SYSTEMS["MARS-Sep paper"]})
    assert list(loaded) == ["supervised"] and "mars_core.rl.trainer" in missing["MARS-Sep paper"]
    with pytest.raises(RuntimeError, match="a real bug"):  # other errors are not hidden
        B.load_systems(ctx, {"x": broken})


def test_registry_asks_the_rl_trainer_for_the_right_runs(monkeypatch, fake_build):
    calls = []

    def fake_load_or_train_rl(profile, preset, *, aligned, progress):
        calls.append((profile.name, preset, aligned))
        return constant_separator(float(len(calls))), {"reward_mean": [0.5], "source": f"{preset}-{aligned}"}

    fake = types.SimpleNamespace(load_or_train_rl=fake_load_or_train_rl)
    monkeypatch.setitem(sys.modules, "mars_core.rl.trainer", fake)
    ctx = B.BenchmarkContext(SMOKE, build_dir=fake_build, bank=fake_bank(fake_build, 128), judge=None, progress=False)
    names = ["MARS-Sep paper", "MARS-Sep plus", "RL, un-aligned encoder"]
    loaded, missing = B.load_systems(ctx, names)
    assert missing == {} and list(loaded) == names
    assert calls == [("smoke", "paper", True), ("smoke", "plus", True), ("smoke", "plus", False)]
    assert loaded["RL, un-aligned encoder"].source == "plus-False" and loaded["MARS-Sep paper"].bank is None


def test_aligned_encoder_ablation_queries_the_baseline_with_the_aligned_bank(monkeypatch, fake_build, tmp_path):
    from mars_core.queries import encoder_fingerprint

    monkeypatch.setenv("MARS_DATA", str(tmp_path))  # the bank cache goes here
    aligned_encoder = StubEncoder(dim=SMOKE.separator.query_dim, seed=7)
    seen = {}

    def fake_stack(profile, aligned=True, build_dir=None, progress=True):
        seen.update(aligned=aligned, build_dir=build_dir)
        return types.SimpleNamespace(encoder=aligned_encoder, key="k" * 16)

    monkeypatch.setitem(sys.modules, "mars_core.alignment.stack", types.SimpleNamespace(load_reward_stack=fake_stack))
    ctx = B.BenchmarkContext(SMOKE, build_dir=fake_build, bank=fake_bank(fake_build, 128), judge=None, progress=False)
    baseline = constant_separator(3.0)
    ctx._cache["supervised"] = B.SystemModel(baseline, source="baseline.pt")
    s = B.load_aligned_no_rl(ctx)
    assert s.model is baseline and seen == {"aligned": True, "build_dir": fake_build}
    assert s.bank.encoder == encoder_fingerprint(aligned_encoder) != ctx.query_bank().encoder
    assert "baseline.pt" in s.source


def test_loader_return_values_are_normalised():
    m = constant_separator(1.0)
    assert registry._as_system_model((m, {"reward_mean": [1.0]}), "x").history == {"reward_mean": [1.0]}
    wrapper = torch.nn.Module()
    wrapper.separator = m
    assert registry._as_system_model(wrapper, "x").model is m
    with pytest.raises(TypeError):
        registry._as_system_model("not a model", "x")


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


# --------------------------------------------------------------------------- reading and figures
def test_sentences_are_generated_from_the_numbers(result):
    boot = result.bootstrap
    r = boot[(boot["split"] == "test") & (boot["pairs"] == "random") & (boot["modality"] == "text")
             & (boot["metric"] == "sdr")].iloc[0]
    sent = R.change_sentence(boot, "smoke", "MARS-Sep plus", "test", "random", "text", "sdr")
    k = 3 if r["ci_high"] - r["ci_low"] < 0.02 else 2  # narrow intervals get a third decimal
    assert sent.startswith(f"At smoke size, MARS-Sep plus changes text-query SDR by {r['mean_diff']:+.{k}f} dB "
                           f"(95% CI [{r['ci_low']:+.{k}f}, {r['ci_high']:+.{k}f}])")
    verdict = "improvement" if r["ci_low"] > 0 else "degradation" if r["ci_high"] < 0 else "no detectable"
    assert verdict in sent
    assert R.change_sentence(boot, "smoke", "absent", "test", "random", "text", "sdr") is None
    lines = R.describe_results(result.summary, boot, "smoke")
    assert sent in lines and any("oracle IRM" in line for line in lines)


def test_paper_comparison_gains_and_agreement():
    boot = pd.DataFrame([
        {"split": "test", "pairs": "random", "system": "MARS-Sep paper", "modality": "text", "metric": "sdr",
         "mean_diff": 0.5, "ci_low": 0.1, "ci_high": 0.9},
        {"split": "test", "pairs": "random", "system": "MARS-Sep paper", "modality": "audio", "metric": "sdr",
         "mean_diff": -0.3, "ci_low": -0.6, "ci_high": 0.1},
        {"split": "test", "pairs": "random", "system": "aligned encoder, no RL", "modality": "text", "metric": "sdr",
         "mean_diff": -0.2, "ci_low": -0.5, "ci_high": 0.1},
    ])
    summary = pd.DataFrame([{"split": "test", "pairs": "random", "system": "supervised", "modality": "text",
                             "metric": "sdr", "mean": 4.0}])
    t = R.paper_comparison(summary, boot)
    text = t[(t["paper dataset"] == "VGGSound-clean+") & (t["query"] == "text") & (t["metric"] == "sdr")].iloc[0]
    assert text["paper gain"] == pytest.approx(6.91 - 6.70) and text["paper gain %"] == pytest.approx(21 / 6.70)
    assert text["agreement"] == "same sign, CI excludes 0" and text["paper gain in CI"] and text["our baseline"] == 4.0
    audio = t[(t["paper dataset"] == "VGGSound-clean+") & (t["query"] == "audio") & (t["metric"] == "sdr")].iloc[0]
    assert audio["agreement"] == "opposite sign"
    assert (t[t["paper dataset"] == "MUSIC-clean+"]["agreement"] == "not measured").all()
    lines = R.describe_paper_comparison(t)
    assert lines[0].startswith("Of 2 SDR comparisons our gain has the paper's sign in 1, an interval excluding 0 in "
                               "1, and the paper's gain lies inside our interval in 1")
    assert any("collapses in the paper but not here" in line for line in lines)  # -5.95 dB there, -0.20 dB here
    assert any("+0.21 dB" in line and "+0.50 dB" in line for line in lines)


@pytest.mark.parametrize("paper, ours, verdict", [
    (-5.95, -4.0, "collapses in both"), (-5.95, 0.0, "collapses in the paper but not here"),
    (0.01, -4.0, "collapses here but not in the paper"), (0.01, 0.5, "stays near the baseline in both"),
    (0.01, 2.0, "moves more here than in the paper")])
def test_ablation_verdicts(paper, ours, verdict):
    assert R._ablation_verdict(paper, ours) == verdict


def test_wide_and_bootstrap_tables(result):
    wide = B.wide_table(result.summary, "test", "hard", ["sdr", "contamination"])
    assert list(wide.columns) == ["system", "modality", "sdr", "contamination"]
    s = result.summary
    r = s[(s["split"] == "test") & (s["pairs"] == "hard") & (s["system"] == "supervised") & (s["modality"] == "omni")
          & (s["metric"] == "sdr")].iloc[0]
    cell = wide[(wide["system"] == "supervised") & (wide["modality"] == "omni")]["sdr"].item()
    assert cell == f"{r['mean']:.2f} ± {r['sem']:.2f}"
    bt = B.bootstrap_table(result.bootstrap, ["sdr"])
    assert list(bt.columns) == ["system", "modality", "metric", *result.test_sets] and len(bt) == 4
    b = result.bootstrap.iloc[0]
    expected = f"{b['mean_diff']:+.2f} [{b['ci_low']:+.2f}, {b['ci_high']:+.2f}]"
    assert bt.iloc[0][f"{b['split']}/{b['pairs']}"] == expected


def test_figures_cli_and_run_md(result, bench_dir, tmp_path, capsys):
    assert cli.main(["figures", "--csv", str(bench_dir), "--out", str(tmp_path / "fig")]) == 0
    paths = [tmp_path / "fig" / line for line in
             (p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split())]
    names = {p.name for p in paths}
    assert {"05_scores_by_query.png", "05_paired_sdr.png", "05_hard_vs_random.png", "05_rl_curves.png",
            "05_example_spectrograms.png", "05_bootstrap_sdr.png", "RUN.md"} == names
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix == ".png")
    md = (tmp_path / "fig" / "RUN.md").read_text()
    assert f"python -m mars_core.benchmark figures --csv {bench_dir}" in md and "pytest benchmark" in md
    assert "benchmark profile: smoke" in md


def test_training_curves_tolerate_missing_keys():
    import matplotlib

    matplotlib.use("Agg")
    from mars_core.benchmark.figures import plot_training_curves

    axes = plot_training_curves({"a": {"reward_mean": [1.0, 2.0, None], "val_sdr": [1.0], "val_step": [2]},
                                 "supervised": {"loss": [1.0]}})
    assert len(axes) == len(("reward_mean", "approx_kl", "clipfrac", "entropy", "val_sdr"))
    kl_text = [t.get_text() for t in axes[1].texts]
    assert kl_text == ["approx_kl: not logged"]
    x, y = axes[4].lines[0].get_data()
    assert list(x) == [2.0] and list(y) == [1.0]  # val_sdr drawn against val_step


def test_cli_run_passes_its_options(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(prof, **kw):
        seen.update(kw, profile=prof.name)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "run_benchmark", fake_run)
    with pytest.raises(SystemExit):
        cli.main(["--profile", "smoke", "--systems", "supervised", "plus", "--n-items", "3", "--pairs", "hard",
                "--seed", "5", "--out", str(tmp_path)])
    assert seen["profile"] == "smoke" and seen["systems"] == ["supervised", "plus"] and seen["n_items"] == 3
    assert seen["pair_types"] == ["hard"] and seen["splits"] == list(B.SPLITS) and seen["seed"] == 5
    assert seen["command"] == (f"python -m mars_core.benchmark --profile smoke --systems supervised plus --n-items 3 "
                               f"--pairs hard --seed 5 --out {tmp_path}")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="differs from the context"):
        B.run_benchmark("cpu", context=B.BenchmarkContext("smoke", judge=None), loaded={})


def test_portable_path_hides_this_machines_directories(monkeypatch, tmp_path):
    monkeypatch.setenv("MARS_DATA", str(tmp_path / "data"))
    root = Path(B.__file__).resolve().parents[2]  # mars_core/benchmark/__init__.py
    assert B.portable_path(f"{root}/checkpoints/separator_cpu.pt") == "checkpoints/separator_cpu.pt"
    assert B.portable_path(f"{tmp_path}/data/runs/rl/cpu-plus-1/final.pt") == "$MARS_DATA/runs/rl/cpu-plus-1/final.pt"
    assert B.portable_path(f"{root}/checkpoints/s.pt, queried by the aligned encoder ab12") == \
        "checkpoints/s.pt, queried by the aligned encoder ab12"
    assert B.portable_path("/elsewhere/x.pt") == "/elsewhere/x.pt"
