"""Every read of benchmark audio is checked against the manifest (crafted corruptions of a copied mini-benchmark)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mars_core.data import verify
from mars_core.data.mixing import MixtureDataset, read_segment
from mars_core.data.verify import BenchmarkFileError, read_clip, repair_command


@pytest.fixture
def build(fake_build, tmp_path) -> Path:
    """A private copy of the hand-made benchmark, labelled as a smoke build at a custom root."""
    root = tmp_path / "bench"
    shutil.copytree(fake_build, root)
    (root / "build_info.json").write_text(json.dumps({"profile": "smoke", "seed": 0,
                                                      "profile_config": {"data": {"seed": 0}}}))
    return root


def _first_clip(build: Path, split: str = "test") -> tuple[Path, dict]:
    with open(build / "audio" / f"{split}.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    return build / row["path"], row


def _command(build: Path) -> str:
    return f"python -m mars_core.data build --profile smoke --root {build}"


def test_repair_command_names_profile_root_and_seed(build, monkeypatch):
    assert repair_command(build) == _command(build)
    monkeypatch.setenv("MARS_DATA", str(build.parent.parent))
    default = build.parent.parent / "benchmark" / "smoke"
    shutil.copytree(build, default)
    assert repair_command(default) == "python -m mars_core.data build --profile smoke"
    (build / "build_info.json").write_text(json.dumps({"profile": "cpu", "seed": 3, "profile_config": {"data": {"seed": 0}}}))
    assert repair_command(build) == f"python -m mars_core.data build --profile cpu --root {build} --seed 3"


def test_intact_clip_reads_exactly_the_file(build):
    path, row = _first_clip(build)
    ref, sr = sf.read(path, dtype="float32")
    assert sr == int(row["sample_rate"])
    np.testing.assert_array_equal(read_clip(path), ref)
    np.testing.assert_array_equal(read_clip(path, 100, 50), ref[100:150])
    # past the manifest's length: zero padding (a clip shorter than a segment)
    tail = read_clip(path, len(ref) - 10, 30)
    np.testing.assert_array_equal(tail[:10], ref[-10:])
    assert tail.shape == (30,) and not tail[10:].any()


def test_truncated_wav_raises_instead_of_zero_padding(build):
    path, row = _first_clip(build)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the reproduction: half the file
    msg = rf"{re.escape(str(path))}: \d+ samples, the manifest says {row['num_samples']}.*{re.escape(_command(build))}"
    with pytest.raises(BenchmarkFileError, match=msg):
        read_clip(path)
    ds = MixtureDataset("test", "smoke", build_dir=build, n_items=40)
    with pytest.raises(BenchmarkFileError, match="truncated"):
        for i in range(len(ds)):  # some item uses this clip
            ds[i]


def test_rewritten_shorter_wav_with_valid_header_raises(build):
    path, row = _first_clip(build)
    x, sr = sf.read(path, dtype="float32")
    sf.write(path, x[: len(x) - 1], sr, subtype="FLOAT")
    with pytest.raises(BenchmarkFileError, match=f"{len(x) - 1} samples, the manifest says {len(x)}"):
        read_segment(path, 0, 100, sr)


def test_deleted_wav_is_named(build):
    path, _ = _first_clip(build)
    path.unlink()
    with pytest.raises(BenchmarkFileError, match=rf"{re.escape(str(path))}: the file is missing.*{re.escape(_command(build))}"):
        read_segment(path, 0, 100, 8000)


def test_same_length_modification_is_caught_by_sha256(build):
    path, row = _first_clip(build)
    read_clip(path)  # first use: hashed and found intact
    x, sr = sf.read(path, dtype="float32")
    x[5000] += 0.25
    sf.write(path, x, sr, subtype="FLOAT")  # same header, same length, other bytes, new mtime
    with pytest.raises(BenchmarkFileError, match=rf"sha256 .* differs from the manifest's {row['sha256'][:12]}"):
        read_clip(path)


def test_sha256_is_hashed_once_per_file_version(build, monkeypatch):
    path, _ = _first_clip(build)
    calls = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: calls.append(p) or real(p))

    def touch():  # a new file version (same bytes, later mtime)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    touch()
    read_clip(path)
    read_clip(path, 10, 10)
    read_segment(path, 0, 5, 8000)
    assert calls == [path]
    touch()
    read_clip(path)
    assert calls == [path, path]


def test_other_sample_rate_and_stereo_are_rejected(build):
    path, row = _first_clip(build)
    x, sr = sf.read(path, dtype="float32")
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(BenchmarkFileError, match="sample rate 16000 Hz, the manifest says 8000 Hz"):
        read_clip(path)
    sf.write(path, np.stack([x, x], axis=1), sr, subtype="FLOAT")
    with pytest.raises(BenchmarkFileError, match="2 channels"):
        read_clip(path)


def test_unlisted_and_garbage_files(build):
    path, _ = _first_clip(build)
    stray = path.with_name("stray.wav")
    shutil.copy(path, stray)
    with pytest.raises(BenchmarkFileError, match=r"stray\.wav is not listed in .*test\.csv"):
        read_clip(stray)
    path.write_bytes(b"RIFF" + bytes(60))
    with pytest.raises(BenchmarkFileError, match=rf"{re.escape(str(path))}: unreadable"):
        read_clip(path)
    with pytest.raises(BenchmarkFileError, match="not a benchmark clip"):
        read_clip(build / "elsewhere.wav")
