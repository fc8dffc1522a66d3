"""encoders/clap.py: the CLAP judge, on a tiny randomly initialised CLAP of the real architecture, offline.

The checkpoint is made here: ``transformers.ClapModel`` from a small ``ClapConfig`` (the same HTSAT and
RoBERTa classes, tiny widths and depths), a RoBERTa tokenizer over a hand-written byte-level vocabulary
and LAION's feature-extractor settings, saved with ``save_pretrained``. Nothing is downloaded.

Oracles: 100 x the cosine of embeddings computed by hand from ``ClapProcessor.__call__`` and
``ClapModel.get_*_features`` on a model loaded separately; the same signal resampled by
``scipy.signal.resample_poly``; a long clip cropped by hand; crafted broken directories; the documented
fallbacks of ``load_judge``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.signal as ss
import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

from mars_core.benchmark.cli import _run_parser as benchmark_parser
from mars_core.commands import start_command
from mars_core.encoders import load
from mars_core.encoders.clap import ClapJudge, load_clap_judge
from mars_core.encoders.judge import semantic_score
from mars_core.encoders.minibind import MiniBind
from mars_core.encoders.preprocess import resample
from mars_core.evaluation.evaluate import JudgeScorer
from mars_core.rl.cli import base_parser as rl_parser
from mars_core.supervised.cli import _parser as supervised_parser

SR = 48000
D = 12
TEXTS = ["the sound of a violin", "a dog barking", "rain on a roof"]

# 2 s at 8 kHz: six tones below 1.3 kHz, tapered to zero at both ends. Nothing lies near 4 kHz, where
# resamplers differ, so two good ones give the same 48 kHz samples up to rounding, and every CLAP mel band
# without a tone stays at the -100 dB floor.
_T8 = np.arange(16000) / 8000
_PHASES = np.random.default_rng(1).uniform(0, 2 * np.pi, 6)
X8 = sum(0.1 * np.sin(2 * np.pi * f * _T8 + q) for f, q in zip((200, 330, 470, 610, 890, 1230), _PHASES)) \
    * ss.windows.tukey(_T8.size, 0.2)
RESAMPLE_ATOL = 2e-5
"""Embedding tolerance of two good resamplers of X8: torchaudio in float32 against scipy in float64 differ by
about EPS32 x the filter gain (1e-7 of the signal), which moved this tiny model's embedding by at most 3e-6
over six model seeds; a factor 7 above that, and 20x below the smallest error of a poorer resampler (scipy's
default Kaiser 5.0 window, 4.7e-4 over the same seeds: its images above 4 kHz rise over the mel floor)."""


def _roberta_vocab() -> dict[str, int]:
    """RoBERTa's special tokens, then one token per printable ASCII character and the byte-level space ``Ġ``."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + [chr(c) for c in range(33, 127)] + ["\u0120"]
    return {t: i for i, t in enumerate(tokens)}


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    """A tiny random CLAP checkpoint directory, as ``save_pretrained`` writes a real one."""
    path = tmp_path_factory.mktemp("clap")
    vocab = _roberta_vocab()
    cfg = ClapConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=80, projection_dim=D),
        audio_config=dict(patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2], hidden_size=16,
                          num_hidden_layers=2, projection_dim=D),
        projection_dim=D)
    torch.manual_seed(0)
    ClapModel(cfg).save_pretrained(path)
    # the files of laion/clap-htsat-unfused: preprocessor_config.json with LAION's unfused settings
    # (48 kHz, 10 s, 64 mel bands, 50 Hz-14 kHz), then the tokenizer's own files
    ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc",
                         padding="repeatpad").save_pretrained(path)
    RobertaTokenizer(vocab=vocab, merges=[]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def judge(clap_dir):
    return load_clap_judge(clap_dir)


def _clips(seed: int, seconds=(1.0, 2.5, 4.0)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * SR))).astype(np.float32) for s in seconds]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_embeddings_are_unit_norm_float32_of_the_projection_size(judge):
    a = judge.embed_audio(_clips(1), SR)
    t = judge.embed_text(TEXTS)
    assert a.shape == (3, D) and t.shape == (3, D) and a.dtype == t.dtype == torch.float32
    # float32 normalisation: |1 - ||x||| is a few EPS32 (1.2e-7)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)
    assert not judge.training and judge.sample_rate == SR and judge.embed_dim == D
    assert min(_max_diff(t[i], t[j]) for i, j in ((0, 1), (0, 2), (1, 2))) > 1e-3  # the vocabulary was read


def test_semantic_score_is_100_cosine_of_the_processor_and_model_path(clap_dir, judge):
    """Independent path: ``ClapProcessor.__call__`` and ``get_*_features`` of a separately loaded model, cosine in float64."""
    clips = _clips(2)
    model = ClapModel.from_pretrained(clap_dir, local_files_only=True).eval()
    proc = ClapProcessor.from_pretrained(clap_dir, local_files_only=True)
    with torch.no_grad():
        audio_in = proc(audio=clips, sampling_rate=SR, return_tensors="pt")
        text_in = proc(text=TEXTS, padding=True, return_tensors="pt")
        a = model.get_audio_features(input_features=audio_in["input_features"],
                                     is_longer=audio_in["is_longer"]).pooler_output.double()
        t = model.get_text_features(input_ids=text_in["input_ids"],
                                    attention_mask=text_in["attention_mask"]).pooler_output.double()
    want = 100 * (a * t).sum(-1) / (a.norm(dim=-1) * t.norm(dim=-1))
    got = semantic_score(judge, [torch.from_numpy(c) for c in clips], SR, TEXTS)
    # float32 embeddings of unit norm: the cosine is exact to ~D * EPS32 ~ 1e-6, i.e. 1e-4 in percent
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=0)
    torch.testing.assert_close(judge.embed_audio(clips, SR).double(), a / a.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)


def test_a_clip_longer_than_10_s_is_judged_by_its_first_10_s_every_time(judge):
    rng = np.random.default_rng(3)
    long = torch.from_numpy((0.1 * rng.standard_normal(12 * SR)).astype(np.float32))
    first = judge.embed_audio(long, SR)
    assert _max_diff(first, judge.embed_audio(long, SR)) == 0.0  # no random crop
    torch.testing.assert_close(first, judge.embed_audio(long[: 10 * SR], SR), atol=1e-6, rtol=0)
    assert _max_diff(first, judge.embed_audio(long[2 * SR:], SR)) > 1e-3  # another window is another embedding


def test_8_khz_audio_is_embedded_like_scipy_resampled_48_khz_audio(judge):
    """Oracles: scipy's polyphase resampler (a Kaiser 14.77 window, stopband below the mel floor) and its FFT
    resampler, fed at 48 kHz (tolerance: RESAMPLE_ATOL). Controls: the encoders' default 6-crossing resampler,
    no resampling and a wrong rate all move the embedding far beyond it."""
    x8 = torch.from_numpy(X8.astype(np.float32))
    got = judge.embed_audio(x8, 8000, resample=True)
    poly = judge.embed_audio(ss.resample_poly(X8, 6, 1, window=("kaiser", 14.769656459379492)).astype(np.float32), SR)
    fft = judge.embed_audio(ss.resample(X8, 6 * X8.size).astype(np.float32), SR)
    torch.testing.assert_close(got, poly, atol=RESAMPLE_ATOL, rtol=0)
    torch.testing.assert_close(got, fft, atol=RESAMPLE_ATOL, rtol=0)
    default_filter = judge.embed_audio(resample(x8, 8000, SR), SR)  # images at -70 dB (clap.resample_for_clap)
    not_resampled = judge.embed_audio(x8, SR)
    wrong_rate = judge.embed_audio(ss.resample_poly(X8, 441, 80).astype(np.float32), SR)  # 44.1 kHz read as 48
    assert min(_max_diff(e, poly) for e in (default_filter, not_resampled, wrong_rate)) > 10 * RESAMPLE_ATOL
    with pytest.raises(ValueError, match="8000 Hz.*48000 Hz"):
        judge.embed_audio(x8, 8000)


def test_judge_scorer_scores_text_and_leaves_the_image_score_nan(judge):
    """CLAP has no image tower: JudgeScorer must not ask for one, and reports NaN for the image score; its text
    score is the judge's 100 cos (checked against the independent path above)."""
    eval_set = SimpleNamespace(meta=pd.DataFrame({"query_text": TEXTS[:2]}),
                               images=[np.zeros((8, 8, 3), np.uint8)] * 2)
    wav = torch.from_numpy(np.stack([ss.resample_poly(X8, 2, 1), -ss.resample_poly(X8, 2, 1)]).astype(np.float32))
    scores = JudgeScorer(judge, eval_set, 16000)(wav)
    want = 100 * (judge.embed_audio(wav, 16000, resample=True) * judge.embed_text(TEXTS[:2])).sum(-1)
    np.testing.assert_allclose(scores["semantic"], want.numpy(), atol=1e-4)
    assert np.isnan(scores["semantic_image"]).all()


def test_missing_or_foreign_directories_are_named_with_what_to_download(clap_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such directory.*hf download laion/clap-htsat-unfused"):
        load_clap_judge(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_clap_judge(tmp_path)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"model_type 'bert', not 'clap'"):
        load_clap_judge(bert)
    weights_only = tmp_path / "weights_only"  # a CLAP model without its feature extractor and tokenizer
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(clap_dir / name, weights_only / name)
    with pytest.raises(FileNotFoundError, match=r"weights_only is incomplete: no feature extractor .*, no tokenizer "
                                                r"\(tokenizer.json or vocab.json \+ merges.txt\)"):
        load_clap_judge(weights_only)
    shutil.copy(clap_dir / "preprocessor_config.json", weights_only)  # transformers alone would not complain:
    with pytest.raises(FileNotFoundError, match="incomplete: no tokenizer"):  # it builds a 5-token tokenizer
        load_clap_judge(weights_only)


def test_load_judge_at_full_uses_mars_clap_and_otherwise_says_how(clap_dir, monkeypatch):
    monkeypatch.setenv("MARS_CLAP", str(clap_dir))
    judge = load.load_judge("full")
    assert isinstance(judge, ClapJudge) and not judge.training
    smoke = load.load_judge("smoke")  # a MiniBind judge exists there: MARS_CLAP is not read
    assert isinstance(smoke, MiniBind)
    monkeypatch.delenv("MARS_CLAP")
    with pytest.warns(UserWarning, match="semantic score is left out.*MARS_CLAP"):
        assert load.load_judge("full") is None


def test_clap_argument_sets_mars_clap(clap_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MARS_CLAP", "")  # restored after the test
    with pytest.raises(SystemExit, match="--clap .*missing: no such directory"):
        load.use_clap_argument(tmp_path / "missing")
    load.use_clap_argument(clap_dir)
    assert os.environ["MARS_CLAP"] == str(clap_dir.resolve())
    p = load.add_clap_argument(argparse.ArgumentParser())
    assert p.parse_args(["--clap", "DIR"]).clap == "DIR" and p.parse_args([]).clap is None


@pytest.mark.parametrize("parser", [supervised_parser, lambda: rl_parser("test"), benchmark_parser])
def test_the_commands_take_clap_and_apply_it_at_start(parser, clap_dir, monkeypatch, capsys):
    monkeypatch.setenv("MARS_CLAP", "")
    start_command(parser().parse_args(["--profile", "smoke", "--device", "cpu", "--clap", str(clap_dir)]))
    assert os.environ["MARS_CLAP"] == str(clap_dir.resolve())
