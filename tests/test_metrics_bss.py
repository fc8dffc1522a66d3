"""Tests of mars_core.metrics.bss (BSS Eval v4/v3) against per-item museval and mir_eval and closed forms
built from exactly orthogonal signals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_core import metrics as M
from tests.metrics_signals import T, TOL_DB, _museval_metrics
from tests.metrics_signals import items, two_threads  # noqa: F401  (fixtures)


# ----------------------------------------------------------------------------- BSS Eval vs oracles
def test_bss_eval_v4_matches_museval_per_item(items, two_threads):
    refs, ests = items
    museval_metrics = _museval_metrics()
    got = M.bss_eval(torch.from_numpy(ests), torch.from_numpy(refs), target_index=0)  # torch in, 2 threads
    for i in range(len(ests)):
        complement = refs[i].sum(0) - ests[i]
        sdr, _, sir, sar, _ = museval_metrics.bss_eval(refs[i], np.stack([ests[i], complement]), window=np.inf)
        for name, want in (("sdr", sdr[0, 0]), ("sir", sir[0, 0]), ("sar", sar[0, 0])):
            assert abs(got[name][i] - want) < TOL_DB, (i, name, got[name][i], want)
    assert all(v.dtype == np.float64 and v.shape == (len(ests),) for v in got.values())


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_bss_eval_v3_matches_mir_eval_per_item(items, two_threads):
    import mir_eval.separation

    refs, ests = items
    got = M.bss_eval(ests, refs, target_index=0, version="v3")
    for i in range(len(ests)):
        complement = refs[i].sum(0) - ests[i]
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(refs[i], np.stack([ests[i], complement]),
                                                                compute_permutation=False)
        for name, want in (("sdr", sdr[0]), ("sir", sir[0]), ("sar", sar[0])):
            assert abs(got[name][i] - want) < TOL_DB, (i, name, got[name][i], want)


def test_v4_and_v3_differ_only_in_sdr_for_a_distorted_gain_changed_estimate(items):
    refs, ests = items
    v4 = M.bss_eval(ests[:2], refs[:2])
    v3 = M.bss_eval(ests[:2], refs[:2], version="v3")
    np.testing.assert_allclose(v4["sir"], v3["sir"], atol=1e-9)
    np.testing.assert_allclose(v4["sar"], v3["sar"], atol=1e-9)
    assert v3["sdr"][0] - v4["sdr"][0] > 20.0  # v3 forgives the gain of 2.5; v4 (plain SNR) does not
    assert v3["sdr"][1] > v4["sdr"][1]  # v3 forgives the 3-tap filter on the target


def test_target_index_and_interferer_forms_match_museval(items):
    refs, ests = items
    museval_metrics = _museval_metrics()
    swapped = refs[2:4, ::-1]  # (interferer, target): the target is row 1
    by_index = M.bss_eval(ests[2:4], swapped, target_index=1)
    by_interferer = M.bss_eval(ests[2:4], refs[2:4, 0], interferer=refs[2:4, 1])
    for k, i in enumerate((2, 3)):
        complement = refs[i].sum(0) - ests[i]
        sdr, _, sir, sar, _ = museval_metrics.bss_eval(refs[i, ::-1], np.stack([complement, ests[i]]), window=np.inf)
        for res in (by_index, by_interferer):
            assert abs(res["sdr"][k] - sdr[1, 0]) < TOL_DB
            assert abs(res["sir"][k] - sir[1, 0]) < TOL_DB
            assert abs(res["sar"][k] - sar[1, 0]) < TOL_DB


def test_v4_sdr_is_the_plain_snr_closed_form():
    rng = np.random.default_rng(1)
    s, n = rng.standard_normal((2, 3, T))
    n *= np.array([0.1, 0.5, 2.0])[:, None]
    want = 10 * np.log10((s**2).sum(-1) / (n**2).sum(-1))
    np.testing.assert_allclose(M.sdr(s + n, s), want, atol=1e-10)
    np.testing.assert_allclose(M.bss_eval(s + n, s)["sdr"], want, atol=1e-10)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_single_reference_sdr_matches_museval_and_mir_eval(items):
    import mir_eval.separation

    refs, ests = items
    museval_metrics = _museval_metrics()
    v4, v3 = M.sdr(ests[:2], refs[:2, 0]), M.sdr(ests[:2], refs[:2, 0], version="v3")
    for i in range(2):
        want_v4 = museval_metrics.bss_eval(refs[i, :1], ests[i][None], window=np.inf)[0][0, 0]
        want_v3 = mir_eval.separation.bss_eval_sources(refs[i, :1], ests[i][None])[0][0]
        assert abs(v4[i] - want_v4) < TOL_DB and abs(v3[i] - want_v3) < TOL_DB


def test_single_source_bss_eval_has_infinite_sir_and_museval_sar(items):
    refs, ests = items
    museval_metrics = _museval_metrics()
    got = M.bss_eval(ests[4], refs[4, 0])  # 1-D input: 0-d outputs
    _, _, _, sar, _ = museval_metrics.bss_eval(refs[4, :1], ests[4][None], window=np.inf)
    assert got["sir"].shape == () and got["sir"] == np.inf
    assert abs(got["sar"] - sar[0, 0]) < TOL_DB


def test_identical_interferer_is_defined_and_matches_single_source(items):
    refs, ests = items
    museval_metrics = _museval_metrics()
    s = refs[:2, 0]
    got = M.bss_eval(ests[:2], np.stack([s, s], axis=1))  # singular Gram matrix: no exception
    for i in range(2):
        sdr, _, _, sar, _ = museval_metrics.bss_eval(s[i][None], ests[i][None], window=np.inf)
        assert abs(got["sdr"][i] - sdr[0, 0]) < TOL_DB and abs(got["sar"][i] - sar[0, 0]) < TOL_DB
        assert got["sir"][i] > 60  # nothing is left to attribute to the (duplicate) interferer


def test_bss_eval_silent_items_are_nan_not_errors(items):
    refs, ests = items
    refs, ests = refs[:4].copy(), ests[:4].copy()
    refs[1, 0] = 0.0  # silent target
    refs[2, 1] = 1e-12  # interferer below the L1 threshold
    ests[3] = 0.0  # silent estimate
    got = M.bss_eval(ests, refs)
    for v in got.values():
        assert np.isfinite(v[0]) and np.all(np.isnan(v[1:]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimate=np.zeros((2, T)), reference=np.zeros((3, T))), "shape mismatch"),
    (dict(estimate=np.ones((2, T)), reference=np.ones((2, 2, T)), interferer=np.ones((2, T))), "not both"),
    (dict(estimate=np.ones((2, T)), reference=np.ones((2, 2, T)), target_index=2), "out of range"),
    (dict(estimate=np.ones((2, 100)), reference=np.ones((2, 2, 100))), "filter_length"),
    (dict(estimate=np.ones((2, T)), reference=np.ones((2, 2, T)), version="v5"), "version"),
])
def test_bss_eval_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.bss_eval(**kwargs)


def test_non_finite_input_names_the_item():
    est, refs = np.ones((4, T)), np.ones((4, 2, T))
    est[2, 17] = np.nan
    with pytest.raises(ValueError, match="estimate: item 2"):
        M.bss_eval(est, refs)
    refs[3, 1, 5] = np.inf
    with pytest.raises(ValueError, match="references: item 3"):
        M.evaluate_batch(np.ones((4, T)), refs, np.ones((4, T)))
