"""``python -m mars_core.separate``: file round trips, bad files, several queries, checkpoints and the
command line (overlap-add: test_separate_overlap.py).

Oracles: the input itself (an all-pass separator must give it back), hand-made tones, the
input file's own header (rate, channels, length, sample format), and mixture = estimates + residual.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mars_core.encoders.minibind import MiniBind
from mars_core.encoders.load import load_query_encoder
from mars_core.separate import Query, SeparationInputError, load_model, main, output_paths, separate
from mars_core.separate.run import resolve_device
from mars_core.separator import new_separator
from mars_core.supervised import save_separator, shipped_separator
from tests.separate_helpers import SMOKE, constant_separator, tones

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder():
    return MiniBind.from_profile(SMOKE, seed=0).eval()


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("block_seconds", [60.0, 0.3])
def test_44k_stereo_int16_round_trip(tmp_path, encoder, block_seconds):
    """One block, and three blocks of 0.5 s (the smallest a 2 x 0.25 s cross-fade allows)."""
    sr, n = 44100, 66150  # 1.5 s
    mix = tmp_path / "mix.wav"
    sf.write(mix, tones(n, sr), sr, subtype="PCM_16")
    written = separate(mix, ["a violin"], profile=SMOKE, model=constant_separator(40.0), encoder=encoder,
                       residual=True, block_seconds=block_seconds)
    assert list(written) == ["a-violin", "residual"]
    assert written["a-violin"] == tmp_path / "mix_a-violin.wav"
    ref, _ = sf.read(mix, dtype="float64")
    for path in written.values():
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (sr, 2, n, "PCM_16")
    est, _ = sf.read(written["a-violin"], dtype="float64")
    res, _ = sf.read(written["residual"], dtype="float64")
    # tones far below 4 kHz pass 44.1 -> 8 -> 44.1 kHz; away from the file's edges (where the sinc
    # resampler, 6 zero crossings at 8 kHz = 33 samples at 44.1 kHz, sees zeros beyond the file) the
    # all-pass estimate is the input, channel by channel: the resamplers' passband error (4e-4 measured
    # for these tones) plus 16-bit rounding (1.5e-5)
    inner = slice(50, n - 50)
    np.testing.assert_allclose(est[inner], ref[inner], rtol=0, atol=1e-3)
    # residual = mixture - estimate, each file rounded to 16 bits: within 1.5 LSB
    np.testing.assert_allclose(est + res, ref, rtol=0, atol=1.5 / 32768 + 1e-9)


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        sf.write(path, np.zeros((0, 1), np.float32), 8000)
    elif kind == "nan":
        x = tones(800, 8000)[:, 0]
        x[123] = np.nan
        sf.write(path, x, 8000, subtype="FLOAT")
    elif kind == "silent":
        sf.write(path, np.zeros((800, 2), np.int16), 8000)
    elif kind == "unreadable":
        path.write_text("this is not audio\n")
    return path


BAD = {"empty": "empty audio file", "nan": r"contains NaN or infinite samples \(first at frame 123, channel 0\)", "silent": "all silent",
       "unreadable": "not a readable audio file", "missing": "no such file"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_raise_a_clear_error(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    with pytest.raises(SeparationInputError, match=f"^{re.escape(str(path))}: {BAD[kind]}"):
        separate(path, ["a violin"], profile=SMOKE)  # checked before any model is loaded


@pytest.mark.parametrize("kind", sorted(BAD))
def test_command_exits_2_with_one_line(tmp_path, kind, capsys):
    path = bad_file(tmp_path, kind)
    assert main([str(path), "--text", "a violin"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ")


def test_command_exit_status_in_a_fresh_process(tmp_path):
    path = bad_file(tmp_path, "nan")
    proc = subprocess.run([sys.executable, "-m", "mars_core.separate", str(path), "--text", "a violin"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith(f"error: {path}:")


def test_a_bad_query_file_is_named(tmp_path):
    mix = tmp_path / "mix.wav"
    sf.write(mix, tones(800, 8000), 8000)
    with pytest.raises(SeparationInputError, match="no such image file"):
        separate(mix, [Query("image", str(tmp_path / "missing.png"))], profile=SMOKE, encoder=object())
    short = tmp_path / "short.wav"  # 20 samples: shorter than the encoder's 25 ms window
    sf.write(short, tones(20, 8000), 8000)
    with pytest.raises(SeparationInputError, match=f"^{re.escape(str(short))}: cannot be used as an audio query"):
        separate(mix, [Query("audio", str(short))], profile=SMOKE, encoder=MiniBind.from_profile(SMOKE, seed=0))
    silent = bad_file(tmp_path, "silent")
    with pytest.raises(SeparationInputError, match=f"^{re.escape(str(silent))}: all silent"):
        separate(mix, [Query("audio", str(silent))], profile=SMOKE, encoder=MiniBind.from_profile(SMOKE, seed=0))


# --------------------------------------------------------------------------- several queries
def test_output_names():
    mix = Path("/data/song.flac")
    qs = [Query("text", "A Violin!"), Query("image", "/x/cat.png"), Query("text", "a violin"), Query("audio", "f.wav")]
    assert output_paths(mix, qs, None, True) == {
        "a-violin": Path("/data/song_a-violin.flac"), "image-cat": Path("/data/song_image-cat.flac"),
        "a-violin-2": Path("/data/song_a-violin-2.flac"), "audio-f": Path("/data/song_audio-f.flac"),
        "residual": Path("/data/song_residual.flac")}
    assert output_paths(mix, qs[:1], "/o/est.wav", False) == {"a-violin": Path("/o/est.wav")}
    assert output_paths(mix, qs[:2], "/o/est.wav", False) == {
        "a-violin": Path("/o/est_a-violin.wav"), "image-cat": Path("/o/est_image-cat.wav")}
    with pytest.raises(SeparationInputError, match="cannot write '.mp4'"):
        output_paths(mix, qs[:1], "/o/est.mp4", False)


def test_several_queries_write_one_file_each(tmp_path, encoder):
    mix, query = tmp_path / "mix.wav", tmp_path / "flute.wav"
    sf.write(mix, tones(12000, 8000) * np.array([1.0, -0.5], np.float32), 8000)
    sf.write(query, tones(4000, 16000)[:, :1], 16000)
    model = new_separator(SMOKE, 0, query_init_std=1.0)  # random weights whose masks depend on the query
    queries = [Query("text", "a violin"), Query("text", "a piano"), Query("audio", str(query))]
    written = separate(mix, queries, profile=SMOKE, model=model, encoder=encoder, out=tmp_path / "est.wav")
    assert written == {"a-violin": tmp_path / "est_a-violin.wav", "a-piano": tmp_path / "est_a-piano.wav",
                       "audio-flute": tmp_path / "est_audio-flute.wav"}
    outs = [sf.read(p, dtype="float32")[0] for p in written.values()]
    assert all(o.shape == (12000, 2) for o in outs)
    assert not np.allclose(outs[0], outs[1])  # two queries, two masks
    # one file per query equals separating with that query alone (the batched path shares one U-Net pass)
    alone = separate(mix, queries[1:2], profile=SMOKE, model=model, encoder=encoder, out=tmp_path / "one.wav")
    np.testing.assert_allclose(sf.read(alone["a-piano"], dtype="float32")[0], outs[1], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- checkpoints
def test_shipped_cpu_separator_is_the_default():
    model, source = load_model("cpu", load_query_encoder("cpu"))
    assert Path(source) == shipped_separator("cpu") and model.cfg.query_dim == 256


def test_checkpoint_of_another_encoder_is_refused(tmp_path, encoder):
    path = save_separator(tmp_path / "sep.pt", new_separator(SMOKE, 0),
                          run_cfg={"profile": "smoke", "queries": "0123456789abcdef-0123456789abcdef"}, history={})
    with pytest.raises(SeparationInputError, match="another query encoder"):
        load_model(SMOKE, encoder, path)
    with pytest.raises(SeparationInputError, match="front end of profile 'cpu'"):
        load_model(SMOKE, encoder, shipped_separator("cpu"))


def test_command_with_the_shipped_checkpoint(tmp_path, capsys):
    mix = tmp_path / "mix.wav"
    sf.write(mix, tones(22050, 22050), 22050, subtype="PCM_24")
    assert main([str(mix), "--text", "a violin", "--text", "a cello", "--residual", "--device", "cpu"]) == 0
    for key in ("a-violin", "a-cello", "residual"):
        info = sf.info(str(tmp_path / f"mix_{key}.wav"))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 2, 22050, "PCM_24")
    assert "done in" in capsys.readouterr().out


def test_device_words_are_the_project_wide_ones(monkeypatch):
    """``separate`` shares ``mars_core.device``: cuda:N is understood, a machine without CUDA refuses it with a
    SeparationInputError (exit status 2 from the command), and the full profile needs allow_cpu on a CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SeparationInputError, match="CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(SeparationInputError, match="allow"):
        resolve_device("auto", "full")
    assert resolve_device("auto", "full", allow_cpu=True) == torch.device("cpu")
