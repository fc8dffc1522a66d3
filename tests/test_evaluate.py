"""Separator evaluation: eval sets, multi-query separation, reference systems, judge scores, tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mars_core.audio import FrontEnd
from mars_core.config import get_profile
from mars_core.data.manifest import read_table
from mars_core.evaluation.evaluate import (EVAL_MODALITIES, JudgeScorer, compact_table, eval_queries, evaluate_all,
                                           evaluate_references, evaluate_systems, load_eval_set, results_table,
                                           separate)
from mars_core.metrics import bss_eval
from tests.separate_helpers import constant_separator  # noqa: F401 (also imported from here by other tests)
from tests.test_queries import StubEncoder, fake_bank
from tests.tolerances import assert_within, reconstruct_atol

SMOKE = get_profile("smoke")


@pytest.fixture(scope="module")
def eval_set(fake_build):
    return load_eval_set(SMOKE, "test", 6, build_dir=fake_build)


@pytest.fixture(scope="module")
def bank(fake_build):
    return fake_bank(fake_build, SMOKE.separator.query_dim)


def test_eval_set_follows_the_protocol(eval_set, fake_build):
    assert len(eval_set) == 6 and eval_set.sources.shape == (6, 2, SMOKE.audio.segment_samples)
    torch.testing.assert_close(eval_set.mixtures, eval_set.sources.sum(1))  # gain 1, exact sum
    # gain 1 / n_sources and a centred crop: source 0 is the middle of its clip, halved
    import soundfile as sf

    audio = read_table(fake_build, "audio", "test").set_index("clip_id")
    wav, _ = sf.read(fake_build / audio.loc[eval_set.meta["target_clip"][2], "path"], dtype="float32")
    n = SMOKE.audio.segment_samples
    start = (len(wav) - n) // 2
    torch.testing.assert_close(eval_set.sources[2, 0], torch.from_numpy(wav[start : start + n] / 2))
    assert set(eval_set.meta["target"]) <= set(audio["class_name"])
    assert (eval_set.meta["target"] != eval_set.meta["interferer"]).all()
    prompts = read_table(fake_build, "prompts")
    held_out = set(prompts.loc[prompts["split_group"] == "test", "text"])
    assert set(eval_set.meta["query_text"]) <= held_out  # test prompts come from held-out templates
    assert all(im.dtype == np.uint8 and im.shape[-1] == 3 for im in eval_set.images)


def test_eval_queries_order_and_values(eval_set, bank):
    q = eval_queries(bank, eval_set)
    assert q.shape == (6, 4, bank.dim)
    ref = eval_set.refs[0]
    torch.testing.assert_close(q[0, 0], bank.get("text", [ref.text])[0])
    torch.testing.assert_close(q[0, 1], bank.get("image", [ref.image_id])[0])
    audio = F.normalize(bank.get("audio", list(ref.audio_ids)).mean(0), dim=0)
    torch.testing.assert_close(q[0, 2], audio)
    omni = F.normalize(2 * q[0, 1] + 2 * q[0, 0] + audio, dim=0)
    torch.testing.assert_close(q[0, 3], omni)


def test_separate_with_an_all_pass_mask_returns_the_mixture(eval_set):
    fe = FrontEnd(SMOKE.audio)
    q = torch.randn(6, 3, SMOKE.separator.query_dim)
    est, masks = separate(constant_separator(40.0), fe, eval_set.mixtures, q, batch_size=4)
    assert est.shape == (6, 3, SMOKE.audio.segment_samples) and masks.shape[:2] == (6, 3)
    atol = reconstruct_atol(SMOKE.audio, eval_set.mixtures.shape[-1], eval_set.mixtures.abs().max().item())  # float32 round trip
    for k in range(3):
        assert_within(est[:, k], eval_set.mixtures, atol, f"all-pass estimate {k}")
    half, _ = separate(constant_separator(0.0), fe, eval_set.mixtures, q)
    assert_within(half[:, 0], 0.5 * eval_set.mixtures, atol / 2, "mask 1/2")


def test_reference_systems(eval_set):
    df = evaluate_references(SMOKE, eval_set)
    assert list(dict.fromkeys(df["system"])) == ["mixture", "mixture / 2", "oracle IBM", "oracle IRM"]
    mix = df[df["system"] == "mixture"]
    expected = bss_eval(eval_set.mixtures.double().numpy(), eval_set.sources.double().numpy(), target_index=0)
    np.testing.assert_allclose(mix["sdr"], expected["sdr"])
    np.testing.assert_allclose(mix["si_sdri"], 0.0, atol=1e-9)
    half = df[df["system"] == "mixture / 2"]
    # equal-power tones: c x has v4 SDR -10 log10((1 - c)^2 + c^2) -> about +3 dB at c = 1/2
    np.testing.assert_allclose(half["sdr"].to_numpy() - mix["sdr"].to_numpy(), 10 * np.log10(2), atol=0.2)
    ibm = df[df["system"] == "oracle IBM"]
    assert (ibm["sdr"].to_numpy() > mix["sdr"].to_numpy() + 5).all()  # tones of different pitch separate well


def test_evaluate_systems_one_separator_rows_and_judge(eval_set, bank, fake_build):
    judge = StubEncoder(dim=32, sample_rate=8000)
    scorer = JudgeScorer(judge, eval_set, 8000)
    df = evaluate_systems(SMOKE, eval_set, {"baseline": (constant_separator(40.0), bank)}, references=False, scorer=scorer,
                          progress=False)
    assert len(df) == 6 * 4 and list(dict.fromkeys(df["modality"])) == list(EVAL_MODALITIES)
    assert (df["system"] == "baseline").all()
    # all-pass mask: every modality equals the mixture
    mix = bss_eval(eval_set.mixtures.double().numpy(), eval_set.sources.double().numpy(), target_index=0)["sdr"]
    np.testing.assert_allclose(df.loc[df["modality"] == "text", "sdr"], mix, atol=1e-3)
    # semantic score by hand: 100 cos(judge_audio(estimate), judge_text(prompt))
    est0 = eval_set.mixtures[0].numpy()
    a = F.normalize(torch.tensor(StubEncoder.audio_features(est0, 8000) + [0.0] * 28, dtype=torch.float32), dim=0)
    t = F.normalize(torch.tensor(StubEncoder.text_features(eval_set.meta["query_text"][0]) + [0.0] * 5,
                                 dtype=torch.float32), dim=0)
    row = df[(df["modality"] == "text") & (df["item"] == 0)].iloc[0]
    assert math.isclose(row["semantic"], 100 * float(a @ t), rel_tol=1e-4, abs_tol=1e-3)


def _stub_semantic(waveform, text):
    """100 cos(StubEncoder audio features, StubEncoder text features), both zero-padded to 32 dims, by hand."""
    pad = lambda v: F.normalize(torch.tensor(v + [0.0] * (32 - len(v)), dtype=torch.float64), dim=0)  # noqa: E731
    return 100 * float(pad(StubEncoder.audio_features(waveform, 8000)) @ pad(StubEncoder.text_features(text)))


def test_clean_target_rows_are_numbered_items(eval_set):
    scorer = JudgeScorer(StubEncoder(dim=32, sample_rate=8000), eval_set, 8000)
    df = evaluate_references(SMOKE, eval_set, scorer=scorer)
    assert list(dict.fromkeys(df["system"])) == ["mixture", "mixture / 2", "oracle IBM", "oracle IRM", "clean target"]
    clean = df[df["system"] == "clean target"]
    assert df["item"].dtype.kind == "i" and list(clean["item"]) == list(range(6))
    assert clean["sdr"].isna().all() and not clean["skipped"].any()
    for i in (0, 4):  # the row numbered i scores item i's own target against item i's own prompt
        row = clean[clean["item"] == i].iloc[0]
        assert row["target"] == eval_set.meta["target"][i]
        want = _stub_semantic(eval_set.sources[i, 0].numpy(), eval_set.meta["query_text"][i])
        assert math.isclose(row["semantic"], want, rel_tol=1e-4, abs_tol=1e-3)


def v4_sdr(estimate, target):
    """BSS Eval v4 SDR of a mono estimate by hand: 10 log10(|s|^2 / |s^ - s|^2)."""
    e, t = estimate.double().numpy(), target.double().numpy()
    return 10 * np.log10((t**2).sum(-1) / ((e - t) ** 2).sum(-1))


def test_evaluate_systems_scores_references_and_separators_in_one_pass(eval_set, bank):
    separators = {"all-pass": (constant_separator(40.0), bank), "half": (constant_separator(0.0), bank)}
    df = evaluate_systems(SMOKE, eval_set, separators, progress=False)
    assert len(df) == 6 * (4 + 2 * 4)
    assert list(dict.fromkeys(df["system"])) == ["mixture", "mixture / 2", "oracle IBM", "oracle IRM", "all-pass",
                                                 "half"]
    assert not df.duplicated(["system", "modality", "item"]).any()
    target = eval_set.sources[:, 0]
    for m in EVAL_MODALITIES:  # constant masks: the mixture and the mixture / 2 whatever the query
        for name, est in (("all-pass", eval_set.mixtures), ("half", 0.5 * eval_set.mixtures)):
            rows = df[(df["system"] == name) & (df["modality"] == m)]
            assert list(rows["item"]) == list(range(6))
            np.testing.assert_allclose(rows["sdr"], v4_sdr(est, target), atol=1e-3)
    np.testing.assert_allclose(df.loc[df["system"] == "mixture / 2", "sdr"], v4_sdr(0.5 * eval_set.mixtures, target),
                               atol=1e-9)
    # the per-system path (one BSS Eval pass per call) gives the same frame
    per_system = pd.concat([evaluate_references(SMOKE, eval_set)]
                           + [evaluate_systems(SMOKE, eval_set, {name: (mod, b)}, references=False, progress=False)
                              for name, (mod, b) in separators.items()], ignore_index=True)
    pd.testing.assert_frame_equal(df, per_system, check_exact=False, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_systems(SMOKE, eval_set, {}, references=False)


def test_silent_estimates_are_skipped(eval_set, bank):
    df = evaluate_systems(SMOKE, eval_set, {"baseline": (constant_separator(-200.0), bank)}, references=False, progress=False)
    assert df["skipped"].all() and df["sdr"].isna().all()
    table = results_table(df)
    assert (table["n"] == 0).all() and (table["n_skipped"] == 6).all()


def test_judge_must_not_be_the_query_encoder(fake_build):
    from mars_core.queries import build_query_bank

    enc = StubEncoder(dim=SMOKE.separator.query_dim)
    bank = build_query_bank(enc, fake_build, 8000, splits=("test",), progress=False)
    with pytest.raises(ValueError, match="judge must be another encoder"):
        evaluate_all(constant_separator(0.0), SMOKE, bank, n_items=2, judge=enc, progress=False)


def test_results_and_compact_tables():
    df = pd.DataFrame({
        "system": ["mixture"] * 2 + ["baseline"] * 4, "modality": ["-"] * 2 + ["text", "text", "audio", "audio"],
        "sdr": [0.0, 2.0, 4.0, 6.0, 1.0, 1.0], "si_sdri": [0.0] * 6, "skipped": [False] * 6,
    })
    table = results_table(df)
    assert list(table["system"]) == ["mixture"] * 2 + ["baseline"] * 4
    assert list(table.loc[table["system"] == "baseline", "modality"].unique()) == ["text", "audio"]  # EVAL order
    row = table[(table["system"] == "baseline") & (table["modality"] == "text") & (table["metric"] == "sdr")].iloc[0]
    assert row["mean"] == 5.0 and math.isclose(row["sem"], np.std([4.0, 6.0], ddof=1) / np.sqrt(2))
    wide = compact_table(table)
    assert list(wide.columns) == ["system", "modality", "sdr", "si_sdri"]
    assert wide.loc[(wide["system"] == "baseline") & (wide["modality"] == "text"), "sdr"].item() == "5.00 ± 1.00"  # sem = sqrt(2) / sqrt(2)


# --------------------------------------------------------------------------- bad audio into separate
@pytest.mark.parametrize("mix, kwargs, match", [
    # one NaN sample used to come back as an all-NaN estimate
    ("nan", {}, r"mixtures: item 0 contains NaN or infinite values \(1 NaN and 0 inf .* first at index \(0, 123\)\)"),
    # a 16 kHz segment into the 8 kHz model: by its rate, and by its length when the rate is not given
    ("16k", {"sample_rate": 16000}, r"mixtures is at 16000 Hz but 8000 Hz is required .*resample_to\(x, 16000, 8000\)"),
    ("16k", {}, r"mixtures has 32766 samples; .* is the audio at 16000 Hz\?"),
    ("ok", {"sample_rate": 44100}, r"mixtures is at 44100 Hz but 8000 Hz is required"),
    ("stereo_last", {}, r"mixtures has shape \(16383, 2\): looks like \(time, channels\) stereo; downmix with x.mean\(-1\)"),
    ("stereo_mid", {}, r"got shape \(1, 2, 16383\): looks like \(batch, channels, time\) stereo"),
    ("short", {}, r"mixtures has 100 samples, fewer than 256 \(one STFT frame"),
    ("empty", {}, r"mixtures is empty \(shape \(1, 0\)\)"),
    ("no_items", {}, r"mixtures is an empty batch"),
    ("int16", {}, r"mixtures has dtype int16; .*int16 PCM: divide by 32768"),
])
def test_separate_refuses_bad_audio_with_a_clear_error(mix, kwargs, match):
    n = SMOKE.audio.segment_samples
    x = {"nan": torch.zeros(1, n), "16k": torch.zeros(1, 2 * n), "ok": torch.zeros(1, n),
         "stereo_last": torch.zeros(n, 2), "stereo_mid": torch.zeros(1, 2, n), "short": torch.zeros(1, 100),
         "empty": torch.zeros(1, 0), "no_items": torch.zeros(0, n), "int16": torch.zeros(1, n, dtype=torch.int16)}[mix]
    if mix == "nan":
        x[0, 123] = float("nan")
    q = torch.zeros(max(x.shape[0], 1), 1, SMOKE.separator.query_dim)
    with pytest.raises(ValueError, match=match):
        separate(constant_separator(0.0), FrontEnd(SMOKE.audio), x, q, **kwargs)


def test_separate_checks_its_queries_and_takes_numpy(eval_set):
    fe, model = FrontEnd(SMOKE.audio), constant_separator(0.0)
    mix = eval_set.mixtures[:2]
    with pytest.raises(ValueError, match=r"queries is None: .* the kinds are mixup, text, image, audio, omni"):
        separate(model, fe, mix, None)
    with pytest.raises(ValueError, match=r"queries must be \(N=2, K, D\) .* one query per mixture is queries\[:, None\]"):
        separate(model, fe, mix, torch.zeros(2, SMOKE.separator.query_dim))
    q = torch.zeros(2, 1, SMOKE.separator.query_dim)
    est, _ = separate(model, fe, mix.numpy(), q.numpy(), sample_rate=SMOKE.audio.sample_rate)  # the profile's rate
    torch.testing.assert_close(est[:, 0], 0.5 * mix, atol=1e-4, rtol=0)  # constant mask 1/2, iSTFT edges float32


def test_judge_scorer_refuses_integer_pcm(eval_set):
    scorer = JudgeScorer(StubEncoder(dim=32, sample_rate=8000), eval_set, 8000)
    pcm = (eval_set.mixtures * 16384).round().to(torch.int16)  # used to be scored as float values up to 16384
    with pytest.raises(ValueError, match=r"waveforms has dtype int16; .*int16 PCM: divide by 32768"):
        scorer(pcm)
