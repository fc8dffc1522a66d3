"""Tests of mars_core.metrics.tables (evaluate_batch, evaluate_many, summarize) against museval, mir_eval
and hand-computed statistics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.signal as sps
import torch

from mars_core import metrics as M
from tests.metrics_signals import T, TOL_DB, _museval_metrics
from tests.metrics_signals import items, two_threads  # noqa: F401  (fixtures)


# ----------------------------------------------------------------------------- evaluate_batch and summarize
def test_evaluate_batch_values_skips_and_summary(items):
    refs, ests = items
    refs, ests = refs[:5].copy(), ests[:5].copy()
    refs[1, 0] = 0.0  # silent target reference
    ests[3] = 0.0  # silent estimate
    mix = refs.sum(1)
    df = M.evaluate_batch(ests, refs, mix, metadata={"modality": ["text", "text", "image", "image", "text"]})
    assert list(df["skipped"]) == [False, True, False, True, False]
    assert df.loc[1, "skip_reason"] == "silent target reference" and df.loc[3, "skip_reason"] == "silent estimate"
    assert df.loc[[1, 3], ["sdr", "sir", "sar", "si_sdr", "si_sdri", "sdri"]].isna().all().all()
    museval_metrics = _museval_metrics()
    for i in (0, 2, 4):
        sdr, _, sir, _, _ = museval_metrics.bss_eval(refs[i], np.stack([ests[i], mix[i] - ests[i]]), window=np.inf)
        assert abs(df.loc[i, "sdr"] - sdr[0, 0]) < TOL_DB and abs(df.loc[i, "sir"] - sir[0, 0]) < TOL_DB
        snr_mix = 10 * np.log10((refs[i, 0] ** 2).sum() / (refs[i, 1] ** 2).sum())  # v4 SDR of the mixture
        assert abs(df.loc[i, "sdr_mix"] - snr_mix) < 1e-9
    summary = M.summarize(df, by="modality")
    text_sdr = summary[(summary.modality == "text") & (summary.metric == "sdr")].iloc[0]
    assert text_sdr["n"] == 2 and text_sdr["n_skipped"] == 1 and np.isfinite(text_sdr["mean"])
    assert abs(text_sdr["mean"] - df.loc[[0, 4], "sdr"].mean()) < 1e-12
    overall = M.summarize(df)
    assert set(overall["n_skipped"]) == {2} and set(overall["n"]) == {3}
    assert np.isfinite(overall[["mean", "sem", "median"]].to_numpy()).all()


@pytest.fixture
def blas_two_threads(two_threads):
    """numpy's BLAS/LAPACK with 2 threads too (the batched-solve trap, docs/environment.md section 6)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        yield


def _same_db(got, want):
    """Equal within TOL_DB; above 100 dB both mean "nothing left" (the mixture / 2 lies in the sources'
    span: its SAR is round-off in museval/mir_eval, about 250 dB, and +inf here)."""
    return got > 100 if want > 100 else abs(got - want) < TOL_DB


def _many_estimates(refs, ests):
    """Three estimates per item: the fixture's, a filtered target + interferer leak, and the mixture / 2.

    The second one is silent on item 2 (a system that outputs nothing there).
    """
    mix = refs.sum(1)
    second = sps.lfilter([0.9, 0.3], 1, refs[:, 0]) + 0.3 * refs[:, 1]
    second[2] = 0.0
    return {"fixture": ests, "filtered": second, "half": 0.5 * mix}, mix


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_evaluate_many_matches_museval_mir_eval_and_the_single_estimate_path(items, blas_two_threads):
    import mir_eval.separation

    refs, ests = items
    refs, ests = refs[:4].copy(), ests[:4].copy()
    refs[3, 1] = 0.0  # item 3: silent interferer, skipped for every estimate
    estimates, mix = _many_estimates(refs, ests)
    meta = {"modality": ["text", "image", "audio", "omni"]}
    df = M.evaluate_many(estimates, torch.from_numpy(refs), torch.from_numpy(mix), metadata=meta)
    assert len(df) == 3 * 4 and list(df.columns[:2]) == ["estimate", "item"]
    assert list(df["estimate"]) == ["fixture"] * 4 + ["filtered"] * 4 + ["half"] * 4  # estimate-major
    assert list(df["item"]) == [0, 1, 2, 3] * 3 and list(df["modality"]) == meta["modality"] * 3
    # skipping is per row: the silent estimate skips only its own row; the silent interferer the whole item
    skipped = {(r.estimate, r.item): r.skip_reason for r in df.itertuples() if r.skipped}
    assert skipped == {("filtered", 2): "silent estimate", ("fixture", 3): "silent interferer (source 1)",
                       ("filtered", 3): "silent interferer (source 1)", ("half", 3): "silent interferer (source 1)"}
    assert df.loc[df["skipped"], list(M.SCORE_COLUMNS)].isna().all().all()
    museval_metrics = _museval_metrics()
    rows = df[~df["skipped"]]
    assert len(rows) == 8 and rows[["sdr", "sir", "sar", "si_sdr"]].notna().all().all()
    for r in rows.itertuples():
        e = estimates[r.estimate][r.item]
        sdr, _, sir, sar, _ = museval_metrics.bss_eval(refs[r.item], np.stack([e, mix[r.item] - e]), window=np.inf)
        for name, want in (("sdr", sdr[0, 0]), ("sir", sir[0, 0]), ("sar", sar[0, 0])):
            assert _same_db(getattr(r, name), want), (r.estimate, r.item, name, getattr(r, name), want)
        snr_mix = 10 * np.log10((refs[r.item, 0] ** 2).sum() / (refs[r.item, 1] ** 2).sum())
        assert abs(r.sdr_mix - snr_mix) < 1e-9
    v3 = M.evaluate_many(estimates, refs, mix, version="v3")
    for est_name, i in (("fixture", 1), ("filtered", 0), ("half", 2)):
        r = v3[(v3["estimate"] == est_name) & (v3["item"] == i)].iloc[0]
        e = estimates[est_name][i]
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(refs[i], np.stack([e, mix[i] - e]),
                                                                compute_permutation=False)
        for name, want in (("sdr", sdr[0]), ("sir", sir[0]), ("sar", sar[0])):
            assert _same_db(r[name], want), (est_name, i, name, r[name], want)
    # the single-estimate path (one evaluate_batch call per estimate) gives the same frame
    single = pd.concat([M.evaluate_batch(e, refs, mix, metadata=meta) for e in estimates.values()], ignore_index=True)
    _assert_same_table(df.drop(columns="estimate"), single)
    # the array form (batch, n_est, time) names the estimates by index
    arr = M.evaluate_many(np.stack(list(estimates.values()), axis=1), refs, mix, metadata=meta)
    assert list(arr["estimate"]) == [0] * 4 + [1] * 4 + [2] * 4
    _assert_same_table(arr.drop(columns="estimate"), single)


def _assert_same_table(got, want):
    """Same columns, flags and reasons; metrics within 1e-6 dB (a solve with more right-hand sides may
    round differently with 2 BLAS threads), and above 100 dB on both sides where one is (see _same_db)."""
    assert list(got.columns) == list(want.columns)
    other = [c for c in want.columns if c not in M.SCORE_COLUMNS]
    pd.testing.assert_frame_equal(got[other], want[other])
    g, w = got[list(M.SCORE_COLUMNS)].to_numpy(), want[list(M.SCORE_COLUMNS)].to_numpy()
    assert (np.isnan(g) == np.isnan(w)).all()
    huge = (np.abs(w) > 100) | (np.abs(g) > 100)
    assert (np.sign(g[huge]) == np.sign(w[huge])).all()
    assert (np.abs(g[huge]) > 100).all() and (np.abs(w[huge]) > 100).all()
    ok = ~np.isnan(w) & ~huge
    np.testing.assert_allclose(g[ok], w[ok], rtol=0, atol=1e-6)


def test_evaluate_many_chunking_and_silent_mixture(items):
    refs, ests = items
    refs, ests = refs[:3].copy(), ests[:3].copy()
    mix = refs.sum(1)
    refs[1, 1] = -refs[1, 0]  # the sources cancel: a silent mixture skips item 1 for every estimate
    mix[1] = 0.0
    estimates = {"a": ests, "b": 0.5 * mix + 0.1 * refs[:, 0]}
    whole = M.evaluate_many(estimates, refs, mix, chunk_size=8)
    assert list(whole.loc[whole["item"] == 1, "skip_reason"]) == ["silent mixture"] * 2
    pd.testing.assert_frame_equal(M.evaluate_many(estimates, refs, mix, chunk_size=1), whole)  # chunks change nothing
    # v4 SDR by hand for a kept row: 10 log10(|s|^2 / |s^ - s|^2)
    s, e = refs[2, 0], estimates["b"][2]
    got = whole[(whole["estimate"] == "b") & (whole["item"] == 2)]["sdr"].item()
    assert abs(got - 10 * np.log10((s**2).sum() / ((e - s) ** 2).sum())) < 1e-9


def test_evaluate_many_rejects_bad_input():
    rng = np.random.default_rng(9)
    e, r = rng.standard_normal((3, T)), rng.standard_normal((3, 2, T))
    m = r.sum(1)
    with pytest.raises(ValueError, match="no estimates"):
        M.evaluate_many({}, r, m)
    with pytest.raises(ValueError, match=r"shape mismatch: estimates\['b'\]"):
        M.evaluate_many({"a": e, "b": e[:2]}, r, m)
    with pytest.raises(ValueError, match="array \\(batch, n_est, time\\)"):
        M.evaluate_many(e, r, m)
    bad = e.copy()
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match=r"estimates\['b'\]: item 1"):
        M.evaluate_many({"a": e, "b": bad}, r, m)
    with pytest.raises(ValueError, match="rows"):
        M.evaluate_many({"a": e, "b": e}, r, m, metadata={"modality": ["text"] * 6})
    with pytest.raises(ValueError, match="clash"):
        M.evaluate_many({"a": e}, r, m, metadata={"estimate": ["x"] * 3})
    with pytest.raises(ValueError, match="chunk_size"):
        M.evaluate_many({"a": e}, r, m, chunk_size=0)


def test_evaluate_batch_rejects_bad_shapes_and_metadata():
    rng = np.random.default_rng(8)
    e, r = rng.standard_normal((3, T)), rng.standard_normal((3, 2, T))
    with pytest.raises(ValueError, match="shape mismatch"):
        M.evaluate_batch(e, r, np.ones((2, T)))
    with pytest.raises(ValueError, match="expected estimates"):
        M.evaluate_batch(e, r[:, 0], e)
    with pytest.raises(ValueError, match="rows"):
        M.evaluate_batch(e, r, e, metadata={"modality": ["text"]})


def test_summarize_standard_error_by_hand():
    df = pd.DataFrame({
        "group": ["a", "a", "a", "a", "b", "b", "c"],
        "sdr": [1.0, 2.0, 3.0, 6.0, 5.0, np.nan, 4.0],
        "skipped": [False, False, False, False, False, True, False],
    })
    s = M.summarize(df, by=["group"], metrics=["sdr"]).set_index("group")
    # group a: mean 3, sample variance ((-2)^2 + (-1)^2 + 0^2 + 3^2) / 3 = 14/3, sem = sqrt(14/3) / 2
    assert s.loc["a", "mean"] == 3.0 and s.loc["a", "median"] == 2.5
    assert abs(s.loc["a", "sem"] - math.sqrt(14 / 3) / 2) < 1e-12
    assert s.loc["a", "n"] == 4 and s.loc["a", "n_skipped"] == 0
    assert s.loc["b", "n"] == 1 and s.loc["b", "n_skipped"] == 1 and np.isnan(s.loc["b", "sem"])
    assert s.loc["c", "mean"] == 4.0
    with pytest.raises(ValueError, match="not in the frame"):
        M.summarize(df, by="modality")


def test_summarize_keeps_infinite_scores_without_warnings():
    # the unprocessed mixture is exactly target + interference: no artefact term, so SAR = 10 log10(x / 0) = +inf
    # in exact arithmetic; round-off leaves a denominator of about 1e-15 (150 dB) or <= 0 (+inf)
    mix = np.stack([np.sin(np.arange(4000) / 7.0), np.cos(np.arange(4000) / 3.0)])
    assert M.bss_eval(mix.sum(0)[None], mix[None])["sar"][0] > 100
    df = pd.DataFrame({"group": ["inf", "inf", "some", "some", "some", "both", "both"],
                       "sar": [np.inf, np.inf, 1.0, 2.0, np.inf, np.inf, -np.inf]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.std over inf would warn "invalid value encountered in subtract"
        s = M.summarize(df, by="group", metrics=["sar"]).set_index("group")
    assert s.loc["inf", "mean"] == np.inf and s.loc["inf", "median"] == np.inf and np.isnan(s.loc["inf", "sem"])
    assert s.loc["some", "mean"] == np.inf and s.loc["some", "median"] == 2.0 and np.isnan(s.loc["some", "sem"])
    assert np.isnan(s.loc["both", "mean"]) and np.isnan(s.loc["both", "median"]) and s.loc["both", "n"] == 2
