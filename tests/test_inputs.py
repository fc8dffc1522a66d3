"""The shared audio validator (mars_core.inputs) on crafted inputs, and its conversions against hand values."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest
import torch
from PIL import Image

from mars_core.config import get_profile
from mars_core.encoders import preprocess as P
from mars_core.encoders import tokenizer as TK
from mars_core.encoders.base import as_text_list
from mars_core.inputs import AudioInputError, pcm_to_float, resample_to, validate_audio

SMOKE = get_profile("smoke").audio  # 8 kHz, n_fft 256, segments of 16383 samples


# --------------------------------------------------------------------------- valid input: no copy
@pytest.mark.parametrize("x", [np.zeros((2, 300), np.float32), np.zeros(300), torch.zeros(2, 300),
                               torch.zeros(3, 2, 300, dtype=torch.float64), np.zeros((2, 300), np.float16)])
def test_valid_audio_comes_back_as_the_same_object(x):
    assert validate_audio(x, "x", profile=SMOKE, sample_rate=8000) is x


def test_sequences_become_float64_arrays_and_other_types_are_refused():
    out = validate_audio([0.0, 1, 2], "x")
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(TypeError, match="x must be a numpy array"):
        validate_audio("noise.wav", "x")
    with pytest.raises(TypeError):
        validate_audio(None, "x")


# --------------------------------------------------------------------------- dtype
@pytest.mark.parametrize("x, match", [
    (np.zeros((1, 300), np.int16), r"int16 PCM: divide by 32768"),
    (torch.zeros(1, 300, dtype=torch.int16), r"int16 PCM: divide by 32768"),
    (np.zeros((1, 300), np.int32), r"int32 PCM: divide by 2147483648"),
    (np.zeros((1, 300), np.uint8), r"uint8 PCM: \(x - 128\) / 128"),
    (np.zeros((1, 300), bool), "real floating point"),
    (np.zeros((1, 300), np.complex64), "real floating point"),
])
def test_integer_and_other_dtypes_are_refused_with_the_conversion(x, match):
    with pytest.raises(AudioInputError, match=match):
        validate_audio(x, "x")


def test_pcm_to_float_by_hand():
    got = pcm_to_float(np.array([-32768, 0, 16384, 32767], np.int16))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([-1.0, 0.0, 0.5, 32767 / 32768], np.float32))
    got = pcm_to_float(torch.tensor([0, 128, 255], dtype=torch.uint8))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([-1.0, 0.0, 127 / 128]), rtol=0, atol=0)
    np.testing.assert_array_equal(pcm_to_float(np.array([-(2**31), 2**30], np.int32)), [-1.0, 0.5])
    x = np.zeros(3, np.float32)
    assert pcm_to_float(x) is x
    with pytest.raises(AudioInputError, match="no PCM convention"):
        pcm_to_float(np.zeros(3, np.uint16))


# --------------------------------------------------------------------------- non-finite values
def test_nan_and_inf_are_counted_and_located():
    x = np.zeros((3, 400), np.float32)
    x[1, 17] = np.nan
    x[2, 5], x[2, 6] = np.inf, np.nan
    with pytest.raises(AudioInputError, match=r"x: item 1 contains NaN or infinite values \(2 NaN and 1 inf of 1200 "
                                              r"samples, shape \(3, 400\); first at index \(1, 17\)\)"):
        validate_audio(x, "x")
    with pytest.raises(AudioInputError, match=r"y contains NaN or infinite values \(0 NaN and 1 inf .* first at "
                                              r"sample 399\)"):
        validate_audio(torch.cat([torch.zeros(399), torch.tensor([-float("inf")])]), "y")
    assert validate_audio(x, "x", finite=False) is x  # a shape-only check does not read the samples


# --------------------------------------------------------------------------- layout and emptiness
@pytest.mark.parametrize("x, ndim, match", [
    (np.zeros((16000, 2), np.float32), 2,
     r"x has shape \(16000, 2\): looks like \(time, channels\) stereo; downmix with x.mean\(-1\)"),
    (np.zeros((16000, 6), np.float32), 2, r"looks like \(time, channels\) 6 channels"),
    (np.zeros((4, 2, 16383), np.float32), 2,
     r"x must be \(batch, samples\) mono audio, got shape \(4, 2, 16383\): looks like \(batch, channels, time\) "
     r"stereo; downmix with x.mean\(-2\)"),
    (np.zeros((16383, 2), np.float32), 1, r"got shape \(16383, 2\): looks like \(time, channels\) stereo"),
    (np.zeros(16383, np.float32), 2, r"add the missing leading axis with x\[None\]"),
    (np.zeros((0, 16383), np.float32), 2, r"x is an empty batch \(shape \(0, 16383\)\)"),
    (np.zeros((2, 0), np.float32), 2, r"x is empty \(shape \(2, 0\)\)"),
    (np.zeros((1, 100), np.float32), 2,
     r"x has 100 samples, fewer than 256 \(one STFT frame of n_fft=256 samples, 32 ms at 8000 Hz\)"),
    (np.float32(1.0), None, "time axis"),
])
def test_layout_emptiness_and_length_errors_name_the_problem(x, ndim, match):
    with pytest.raises(AudioInputError, match=match):
        validate_audio(x, "x", ndim=ndim, profile=SMOKE)


def test_sample_rate_and_segment_length():
    x = np.zeros((1, 2 * SMOKE.segment_samples), np.float32)  # one 16 kHz segment's worth of samples
    with pytest.raises(AudioInputError, match=r"x is at 16000 Hz but 8000 Hz is required .* "
                                              r"mars_core.inputs.resample_to\(x, 16000, 8000\)"):
        validate_audio(x, "x", profile=SMOKE, sample_rate=16000)
    with pytest.raises(AudioInputError, match=r"x has 32766 samples; expected segments of exactly 16383 samples "
                                              r"\(2.04787 s at 8000 Hz\); that is one segment.s duration at 16000 Hz: is the "
                                              r"audio at 16000 Hz\?"):
        validate_audio(x, "x", profile=SMOKE, length=SMOKE.segment_samples)
    with pytest.raises(AudioInputError, match=r"has 16000 samples; expected segments of exactly 16383 samples "
                                              r"\(2.04787 s at 8000 Hz\); otherwise cut or zero-pad"):
        validate_audio(np.zeros((1, 16000)), "x", profile=SMOKE, length=SMOKE.segment_samples)
    assert validate_audio(x, "x", expected_rate=8000) is x  # no rate given: nothing to compare


# --------------------------------------------------------------------------- resampling
def test_resample_to_reproduces_a_sine_at_the_new_rate():
    t = np.arange(8000) / 8000
    x = np.sin(2 * np.pi * 500 * t).astype(np.float32)
    y = resample_to(x, 8000, 16000)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (16000,)  # ceil(n * 16000 / 8000)
    expected = np.sin(2 * np.pi * 500 * np.arange(16000) / 16000)
    # 500 Hz is deep in the passband of the windowed sinc: the interior matches the analytic sine to the
    # filter's passband ripple (< 1e-3); the ends (6 zero crossings) see the implicit zero padding
    np.testing.assert_allclose(y[100:-100], expected[100:-100], atol=2e-3, rtol=0)
    yt = resample_to(torch.from_numpy(x)[None], 8000, 16000)
    assert isinstance(yt, torch.Tensor) and yt.shape == (1, 16000)
    assert resample_to(x, 8000, 8000) is x
    with pytest.raises(AudioInputError, match="int16 PCM"):
        resample_to(np.zeros(100, np.int16), 8000, 16000)
    with pytest.raises(ValueError, match="target_rate must be a positive integer"):
        resample_to(x, 8000, 0)


# --------------------------------------------------------------------------- prompts
def test_empty_or_whitespace_prompts_are_refused():
    with pytest.raises(ValueError, match=r"text 1 is empty \(''\): a prompt needs at least one word"):
        as_text_list(["a violin", ""])
    with pytest.raises(ValueError, match=r"text 0 is whitespace only \(' \\t\\n'\)"):
        as_text_list([" \t\n"])
    with pytest.raises(TypeError, match="got None"):
        as_text_list(None)
    assert as_text_list(["", "x"], allow_empty=True) == ["", "x"]  # the ImageBind reproduction embeds ""


def _full_bpe_ids(tok: TK.BPETokenizer, text: str) -> list[int]:
    """The untruncated pipeline, written out: every piece of the cleaned text through BPE, nothing cut."""
    ids = []
    for piece in tok.pattern.findall(TK.clean_text(text)):
        chars = "".join(tok.byte_encoder[b] for b in piece.encode("utf-8"))
        ids += [tok.encoder[s] for s in TK._bpe_merge(list(chars[:-1]) + [chars[-1] + "</w>"], tok.ranks)]
    return ids


@pytest.fixture(scope="module")
def tok():
    return TK.BPETokenizer()


def test_long_prompt_tokens_equal_the_first_tokens_of_the_full_prompt(tok):
    words = ("a violin plays a slow, quiet melody in the large concert hall while 3 cellos & the "
             "orchestra's brass section rehearse; naïve listeners clap!").split()
    text = " ".join(words[i % len(words)] for i in range(400))  # ~2,500 characters, ~450 tokens
    full = _full_bpe_ids(tok, text)
    assert len(full) > 300
    expected = [tok.sot_id] + full[: TK.CONTEXT_LENGTH - 2] + [tok.eot_id]
    assert tok([text])[0].tolist() == expected
    assert tok.encode(text) == full  # without a limit nothing is cut (no word is longer than MAX_PIECE_BYTES)


def _count_bpe(monkeypatch) -> list[int]:
    sizes: list[int] = []
    original = TK._bpe_merge

    def counting(symbols, ranks):
        sizes.append(len(symbols))
        return original(symbols, ranks)

    monkeypatch.setattr(TK, "_bpe_merge", counting)
    return sizes


@pytest.mark.parametrize("kind", ["random words", "one long word"])
def test_a_20000_character_prompt_costs_bounded_bpe_work(monkeypatch, kind):
    rng = random.Random(0)
    if kind == "random words":  # the slow case: letter runs of random length, BPE is quadratic in each
        text = ""
        while len(text) < 20_000:
            text += "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 3000))) + " "
    else:
        text = "".join(rng.choice(string.ascii_lowercase) for _ in range(20_000))
    text = text[:20_000]
    tok = TK.BPETokenizer()  # empty BPE cache
    sizes = _count_bpe(monkeypatch)
    row = tok([text])[0]
    assert row[0] == tok.sot_id and row[-1] == tok.eot_id  # full context: SOT, 75 ids, EOT
    # only what can reach the 75 output ids is merged: each piece gives >= 1 id and at most
    # MAX_PIECE_BYTES symbols go into one BPE call (the untruncated pipeline merged all 20,000)
    assert 1 <= len(sizes) <= TK.CONTEXT_LENGTH - 2
    assert max(sizes) <= TK.MAX_PIECE_BYTES
    # a piece of k bytes gives at least k / 32 ids (the longest token has 32 byte characters), so the
    # pieces merged before the context is full hold at most 75 * 32 bytes, plus the last one
    assert sum(sizes) <= (TK.CONTEXT_LENGTH - 2) * 32 + TK.MAX_PIECE_BYTES


# --------------------------------------------------------------------------- images
def test_transparency_is_composited_on_white_by_hand():
    px = [(255, 0, 0, 255), (0, 0, 0, 0), (0, 0, 0, 128), (200, 100, 50, 51)]
    img = Image.fromarray(np.array(px, np.uint8).reshape(2, 2, 4), "RGBA")
    # round((c a + 255 (255 - a)) / 255): opaque red stays red, transparent becomes white,
    # black at alpha 128 -> 255 * 127 / 255 = 127, (200, 100, 50) at alpha 51 -> (244, 224, 214) exactly
    expected = np.array([(255, 0, 0), (255, 255, 255), (127, 127, 127), (244, 224, 214)], np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(np.asarray(P.to_rgb(img)), expected)
    la = Image.fromarray(np.array([[[0, 0], [10, 255]]], np.uint8), "LA")
    np.testing.assert_array_equal(np.asarray(P.to_rgb(la)), [[[255] * 3, [10] * 3]])
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 9, 9, 9] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0  # palette index 0 is transparent
    np.testing.assert_array_equal(np.asarray(P.to_rgb(pal)), [[[255] * 3, [9] * 3]])
    rgb = Image.new("RGB", (3, 3), (1, 2, 3))
    assert P.to_rgb(rgb) is rgb


@pytest.mark.parametrize("mode_dtype", ["I;16", "I"])
def test_16_bit_grey_is_scaled_to_8_bits_by_hand(mode_dtype):
    values = np.array([[0, 257, 1000, 32896, 65535]])
    # v / 257: 0, 1, 3.89 -> 4, 128, 255 (PIL's convert clipped everything above 255 to white)
    img = Image.fromarray(values.astype(np.uint16 if mode_dtype == "I;16" else np.int32))
    assert img.mode == mode_dtype
    np.testing.assert_array_equal(np.asarray(P.to_rgb(img))[..., 0], [[0, 1, 4, 128, 255]])
    np.testing.assert_array_equal(np.asarray(P.to_rgb(img))[..., 2], [[0, 1, 4, 128, 255]])
    ramp = Image.fromarray((np.arange(256) * 257).astype(np.uint16)[None].repeat(64, 0))  # 0..65535 in 256 steps
    out = P.transform_image(ramp)
    white = (1 - np.array(P.CLIP_MEAN)) / np.array(P.CLIP_STD)
    assert np.isclose(out.numpy(), white[:, None, None], atol=1e-3).mean() < 0.1  # not 99.6 % white any more


def test_extreme_aspect_ratios_are_refused_before_resizing():
    with pytest.raises(ValueError, match=r"image 20000x1 has an aspect ratio of 2e\+04:1, above 20:1.*crop it"):
        P.transform_image(Image.new("RGB", (20000, 1)))
    with pytest.raises(ValueError, match=r"image 3x100 has an aspect ratio of 33.3:1"):
        P.transform_image(np.zeros((100, 3, 3), np.uint8))
    assert P.transform_image(Image.new("RGB", (400, 20))).shape == (3, 224, 224)  # 20:1 is still fine


def test_channels_last_stereo_into_an_encoder_is_named():
    from mars_core.encoders.base import as_waveform_list

    with pytest.raises(ValueError, match=r"waveforms has shape \(16000, 2\): looks like \(time, channels\) stereo"):
        as_waveform_list(np.zeros((16000, 2), np.float32))
    with pytest.raises(ValueError, match=r"waveform 1 has 5 samples, fewer than 16"):
        as_waveform_list([np.zeros(500), np.zeros(5)])
