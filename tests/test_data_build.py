"""The offline benchmark builder: quality checks, material readers, and a real smoke build.

The smoke build runs once per session in a subprocess (``python -m mars_core.data
build``); the kill-and-resume and two-builder tests build again in other processes and
compare every manifest and file with it byte for byte.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from mars_core.config import get_profile
from mars_core.data import build as build_mod
from mars_core.data.catalog import CLASS_NAMES as EVERY
from mars_core.data.catalog import get_class
from mars_core.data.clips import ClipContext, make_clip
from mars_core.data.manifest import AUDIO_COLUMNS, IMAGE_COLUMNS, PROMPT_COLUMNS, SPLITS
from mars_core.data.recipe import ClassPlan, SplitPlan, load_recipe
from mars_core.data.sources import (MaterialError, SoundfontRenderer, active_fraction, bandwidth_hz, check_active,
                                    check_bandwidth, file_recording, locate_sources, read_audio, read_opensfx)

REPO = Path(__file__).resolve().parents[1]
SOUNDFONT_SOURCES = {"fluidr3", "timgm6mb"}
QC = {"frame_ms": 20.0, "silence_db": -40.0, "min_active_fraction": 0.5, "max_redraws": 3,
      "bandwidth_floor_db": 60.0, "max_silence_seconds": 0.3, "min_bandwidth_hz": 2800.0}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def _cli_build(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1")
    return subprocess.run([sys.executable, "-m", "mars_core.data", "build", "--profile", "smoke", "--root", str(root),
                           "--quiet", *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "a"
    res = _cli_build(root)
    assert res.returncode == 0, res.stderr
    return root


@pytest.fixture(scope="session")
def info(smoke_build) -> dict:
    return json.loads((smoke_build / "build_info.json").read_text())


def _fluidr3_available() -> bool:
    return locate_sources()["fluidr3"].available


# ---------------------------------------------------------------- quality checks


def test_active_fraction_hand_computed():
    sr = 8000  # 20 ms frames = 160 samples; 50 frames
    x = np.zeros(8000)
    x[: 15 * 160] = np.sin(2 * np.pi * 440 * np.arange(15 * 160) / sr)  # 15 of 50 frames
    assert active_fraction(x, sr) == pytest.approx(0.3)
    assert active_fraction(np.zeros(8000), sr) == 0.0
    assert active_fraction(np.ones(8000), sr) == 1.0
    # a frame 30 dB down is active at -40 dB, inactive at -20 dB
    y = np.ones(8000)
    y[4000:] *= 10 ** (-30 / 20)
    assert active_fraction(y, sr, silence_db=-40) == 1.0
    assert active_fraction(y, sr, silence_db=-20) == pytest.approx(0.5)


def test_check_active_names_the_clip():
    x = np.zeros(8000)
    x[:160] = 1.0
    with pytest.raises(MaterialError, match=r"chirp\.ogg: mostly silence \(active fraction 0\.02"):
        check_active(x, 8000, "chirp.ogg", 0.5)
    assert check_active(np.ones(800), 8000, "ok", 0.5) == 1.0


def test_bandwidth_of_white_and_lowpassed_noise():
    sr = 16000
    noise = np.random.default_rng(0).standard_normal(sr * 2)
    assert bandwidth_hz(noise, sr) > 7500
    sos = signal.butter(12, 1000, fs=sr, output="sos")
    low = signal.sosfiltfilt(sos, noise)
    bw = bandwidth_hz(low, sr)
    assert 900 < bw < 2500  # 24th-order response is ~ -60 dB about an octave above 1 kHz
    with pytest.raises(MaterialError, match=r"muffled\.wav: low-bandwidth recording"):
        check_bandwidth(low, sr, "muffled.wav", 3600)
    assert bandwidth_hz(np.zeros(1000), sr) == 0.0


def test_phrases_stay_in_range_and_differ_between_classes():
    from mars_core.data.sources.phrases import phrase

    def notes(class_name, split_code, k):
        spec = get_class(class_name)
        rng = np.random.default_rng([0, split_code, list(EVERY).index(class_name), k])
        return phrase(rng, spec.style, 4.0, *spec.note_range)

    for name in ("violin", "acoustic_guitar", "xylophone", "bird", "seashore"):
        lo, hi = get_class(name).note_range
        ns = notes(name, 0, 0)
        assert len(ns) >= 2
        assert all(0 <= n.onset < 4.0 and lo <= n.key <= hi and 1 <= n.velocity <= 127 and n.duration > 0 for n in ns)
    drums = notes("drums", 0, 0)
    assert {n.key for n in drums} & {36, 38}  # kick or snare present
    onsets = lambda ns: [round(n.onset, 4) for n in ns]  # noqa: E731
    assert onsets(notes("violin", 0, 0)) != onsets(notes("cello", 0, 0))  # same style, other class
    assert onsets(notes("violin", 0, 0)) != onsets(notes("violin", 2, 0))  # same class, test split
    assert onsets(notes("violin", 0, 0)) == onsets(notes("violin", 0, 0))


# ---------------------------------------------------------------- readers


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.ogg"
    bad.write_bytes(b"this is not audio" * 10)
    with pytest.raises(MaterialError, match="cannot read audio .*broken.ogg"):
        read_audio(bad, str(bad))


def test_missing_soundfont_is_named(tmp_path):
    with pytest.raises(MaterialError, match="soundfont not found: .*nothing.sf2"):
        SoundfontRenderer(tmp_path / "nothing.sf2", 32000)
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"RIFF0000sfbk" + bytes(100))
    with pytest.raises(MaterialError, match="junk.sf2"):
        SoundfontRenderer(junk, 32000)


def test_low_bandwidth_recording_is_rejected_by_name(tmp_path):
    sr = 44100
    noise = np.random.default_rng(1).standard_normal(sr)
    low = signal.sosfiltfilt(signal.butter(12, 1000, fs=sr, output="sos"), noise)
    path = tmp_path / "telephone_quality.wav"
    sf.write(path, 0.3 * low / np.abs(low).max(), sr)
    rec = file_recording("local:telephone_quality", "local", path, "CC0-1.0")
    with pytest.raises(MaterialError, match=r"telephone_quality\.wav: low-bandwidth recording"):
        rec.item(0, 8000, QC)
    assert 0 in rec.rejected  # remembered: not decoded again


def _clip_context(**overrides) -> ClipContext:
    base = dict(seed=0, sample_rate=8000, n_samples=20000, split_codes={"train": 0, "val": 1, "test": 2, "test_timbre": 3},
                lowpass=(2800.0, 3800.0, 8), qc=QC, aug=load_recipe()["augment"],
                loudness={"active_rms_dbfs": -20.0, "peak_max": 0.99}, renderers={}, licenses={})
    base.update(overrides)
    return ClipContext(**base)


def test_mostly_silent_material_fails_loudly_after_redraws(tmp_path):
    sr = 44100
    x = np.zeros(3 * sr)
    x[:400] = np.random.default_rng(2).standard_normal(400)  # a 9 ms click, then 3 s of silence
    path = tmp_path / "click.wav"
    sf.write(path, 0.5 * x, sr)
    rec = file_recording("local:click", "local", path, "CC0-1.0")
    plan = ClassPlan(get_class("dog"), 14, {"train": SplitPlan(None, (), [rec], 1.0)})
    with pytest.raises(MaterialError, match=r"clip train-dog-0000 from local:click \(.*click\.wav\): mostly silence .* after 4 draws"):
        make_clip(_clip_context(), plan, "train", 0, 1)


def test_real_recording_clip_is_loud_enough(tmp_path):
    sr = 22050
    t = np.arange(int(1.5 * sr)) / sr
    tone = np.sin(2 * np.pi * 600 * t) + 0.1 * np.random.default_rng(3).standard_normal(len(t))
    path = tmp_path / "hum.wav"
    sf.write(path, 0.4 * tone, sr)
    rec = file_recording("local:hum", "local", path, "CC0-1.0")
    plan = ClassPlan(get_class("dog"), 14, {"train": SplitPlan(None, (), [rec], 1.0)})
    y, meta = make_clip(_clip_context(), plan, "train", 0, 1)
    y2, _ = make_clip(_clip_context(), plan, "train", 0, 1)
    assert y.dtype == np.float32 and y.shape == (20000,)
    assert np.array_equal(y, y2)
    assert meta["recording_id"] == "local:hum" and meta["license"] == "CC0-1.0"
    assert np.abs(y).max() <= 0.99 + 1e-6
    frames = y[: 125 * 160].reshape(125, 160)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    assert (energy >= energy.max() * 1e-4).mean() >= 0.5


def test_opensfx_container_parser(tmp_path):
    def wav(freq):
        buf = io.BytesIO()
        sf.write(buf, 0.5 * np.sin(2 * np.pi * freq * np.arange(800) / 8000), 8000, format="WAV")
        return buf.getvalue()

    names = [b'"Helicopter". Original by "x". License: Creative Commons Attribution-ShareAlike 3.0 Unported.',
             b'"Unused". Trivial empty sound file. License: Creative Commons Zero 1.0.',
             b'"Moo". By "y". License: Creative Commons Zero 1.0.']
    bodies = [bytes([len(names[0])]) + names[0] + wav(300), b"", bytes([len(names[2])]) + names[2] + wav(500)]
    offset = 8 * len(bodies)
    table, blob = b"", b""
    for body in bodies:
        table += struct.pack("<II", (offset + len(blob)) | 0x80000000, len(body))
        blob += body
    path = tmp_path / "opensfx.cat"
    path.write_bytes(table + blob)
    entries = read_opensfx(path)
    assert [(e.index, e.title, e.license) for e in entries] == [(0, "Helicopter", "CC-BY-SA-3.0"), (2, "Moo", "CC0-1.0")]
    x, sr = read_audio(entries[1].data, "moo")
    assert sr == 8000 and len(x) == 800
    path.write_bytes(table[:8] + struct.pack("<II", 10**6, 50))
    with pytest.raises(MaterialError, match="opensfx.cat: not a valid"):
        read_opensfx(path)


# ---------------------------------------------------------------- the smoke build


def test_manifest_columns_and_files(smoke_build):
    prof = get_profile("smoke")
    counts = {"train": prof.data.train_clips_per_class, "val": prof.data.val_clips_per_class,
              "test": prof.data.test_clips_per_class, "test_timbre": prof.data.test_timbre_clips_per_class}
    n = int(round(prof.data.clip_seconds * prof.audio.sample_rate))
    for split in SPLITS:
        assert _header(smoke_build / "audio" / f"{split}.csv") == list(AUDIO_COLUMNS)
        assert _header(smoke_build / "images" / f"{split}.csv") == list(IMAGE_COLUMNS)
        rows = _rows(smoke_build / "audio" / f"{split}.csv")
        per_class: dict[str, int] = {}
        for r in rows:
            per_class[r["class_name"]] = per_class.get(r["class_name"], 0) + 1
            path = smoke_build / r["path"]
            assert _sha(path) == r["sha256"]
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            assert data.shape == (n, 1) and sr == prof.audio.sample_rate == int(r["sample_rate"])
            assert int(r["num_samples"]) == n and float(r["duration"]) == pytest.approx(prof.data.clip_seconds)
            assert sf.info(path).subtype == "FLOAT"
            assert np.isfinite(data).all() and 0.05 < np.abs(data).max() <= 0.99 + 1e-6
        assert set(per_class.values()) <= {counts[split]}
        assert len({r["clip_id"] for r in rows}) == len(rows)
    for split in SPLITS:
        for r in _rows(smoke_build / "images" / f"{split}.csv"):
            assert _sha(smoke_build / r["path"]) == r["sha256"]
    assert _header(smoke_build / "prompts.csv") == list(PROMPT_COLUMNS)
    assert _header(smoke_build / "classes.csv") == ["class_name", "family", "kind", "label"]
    assert _header(smoke_build / "attribution.csv") == list(build_mod.ATTRIBUTION_COLUMNS)


def test_classes_and_prompts(smoke_build, info):
    classes = _rows(smoke_build / "classes.csv")
    assert len(classes) >= 18
    assert [int(c["label"]) for c in classes] == list(range(len(classes)))
    prompts = _rows(smoke_build / "prompts.csv")
    for c in classes:
        groups = {p["split_group"] for p in prompts if p["class_name"] == c["class_name"]}
        assert groups == {"train", "test"}, c["class_name"]
    train_classes = {r["class_name"] for r in _rows(smoke_build / "audio" / "train.csv")}
    assert train_classes == {c["class_name"] for c in classes}
    assert info["profile"] == "smoke" and info["seed"] == 0 and info["totals"]["train"] > 0
    for key in ("recipe_hash", "packages", "classes", "counts", "degraded", "elapsed_seconds"):
        assert key in info


def test_everyday_splits_never_share_a_recording(smoke_build, info):
    kinds = {c["class_name"]: c["kind"] for c in _rows(smoke_build / "classes.csv")}
    recs = {s: {} for s in ("train", "val", "test")}
    for s in recs:
        for r in _rows(smoke_build / "audio" / f"{s}.csv"):
            if kinds[r["class_name"]] != "instrument":
                recs[s].setdefault(r["class_name"], set()).add(r["recording_id"])
    everyday = [c for c, k in kinds.items() if k != "instrument"]
    assert everyday
    for c in everyday:
        train, val, test = (recs[s].get(c, set()) for s in ("train", "val", "test"))
        assert train and test
        assert not train & test, c
        if c in info["val_shares_train"]:
            assert val <= train  # the documented rule: val re-crops the train recordings
        else:
            assert not train & val, c
            assert not val & test, c


def test_test_timbre_uses_another_soundfont(smoke_build, info):
    if not _fluidr3_available():
        pytest.skip("FluidR3 not installed: test_timbre is empty in the degraded recipe")
    kinds = {c["class_name"]: c["kind"] for c in _rows(smoke_build / "classes.csv")}
    timbre = _rows(smoke_build / "audio" / "test_timbre.csv")
    assert timbre and {r["source"] for r in timbre} == {"timgm6mb"}
    assert {r["class_name"] for r in timbre} == {c for c, k in kinds.items() if k == "instrument"}
    for split in ("train", "val", "test"):
        sources = {r["source"] for r in _rows(smoke_build / "audio" / f"{split}.csv") if kinds[r["class_name"]] == "instrument"}
        assert "fluidr3" in sources and "timgm6mb" not in sources
    fonts = info["soundfonts"]
    assert _sha(Path(fonts["train"]["path"])) != _sha(Path(fonts["test_timbre"]["path"]))


def test_instrument_test_phrases_differ_from_train(smoke_build):
    hashes = {s: {r["sha256"] for r in _rows(smoke_build / "audio" / f"{s}.csv")} for s in SPLITS}
    assert not hashes["train"] & hashes["test"] and not hashes["train"] & hashes["val"]
    assert len(hashes["train"]) == len(_rows(smoke_build / "audio" / "train.csv"))


def test_attribution_covers_every_source(smoke_build):
    attr = _rows(smoke_build / "attribution.csv")
    used = {r["source"] for s in SPLITS for r in _rows(smoke_build / "audio" / f"{s}.csv")}
    assert used <= {a["source"] for a in attr}
    assert all(a["license"] and a["license"] != "unknown" for a in attr)
    used_recordings = {r["recording_id"] for s in SPLITS for r in _rows(smoke_build / "audio" / f"{s}.csv")
                       if r["source"] not in SOUNDFONT_SOURCES}
    assert all(any(rid in a["used_for"] for a in attr) for rid in used_recordings)


def test_second_build_is_reused(smoke_build, capsys):
    mtimes = {p: p.stat().st_mtime_ns for p in smoke_build.rglob("*.wav")}
    out = build_mod.build_benchmark("smoke", root=smoke_build, progress=True)
    assert out == smoke_build
    assert "reused existing build" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in smoke_build.rglob("*.wav")} == mtimes


def test_interrupted_build_resumes(smoke_build, tmp_path, monkeypatch):
    root = tmp_path / "resume"
    shutil.copytree(smoke_build, root)
    (root / "build_info.json").unlink()
    (root / "audio" / "val.csv").unlink()
    shutil.rmtree(root / "audio" / "val")
    first_train = root / _rows(root / "audio" / "train.csv")[0]["path"]
    first_train.write_bytes(b"corrupted")
    calls = {"n": 0}
    real = build_mod.make_clip

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(build_mod, "make_clip", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_mod.build_benchmark("smoke", root=root, progress=False)
    assert not list(root.rglob("*.tmp")) and not (root / "build_info.json").exists()
    monkeypatch.setattr(build_mod, "make_clip", real)
    build_mod.build_benchmark("smoke", root=root, progress=False)
    for name in [f"audio/{s}.csv" for s in SPLITS] + ["prompts.csv", "classes.csv"]:
        assert (root / name).read_bytes() == (smoke_build / name).read_bytes(), name
    assert _sha(first_train) == _sha(smoke_build / first_train.relative_to(root))


def test_degraded_pure_pypi_build(tmp_path, monkeypatch):
    empty = tmp_path / "no-debian-packages"
    empty.mkdir()
    with pytest.warns(UserWarning) as record:
        root = build_mod.build_benchmark("smoke", root=tmp_path / "deg", progress=False, system_roots=[empty])
    messages = " | ".join(str(w.message) for w in record)
    assert "degraded pure-PyPI recipe" in messages and "test_timbre is empty" in messages
    info = json.loads((root / "build_info.json").read_text())
    assert info["degraded"]["pure_pypi"] and info["degraded"]["fluidr3_missing"]
    assert "speech" in info["degraded"]["dropped_classes"]
    # OpenMoji (PyPI) has no cello, tuba, clarinet or xylophone: without images a class cannot be queried
    assert "no query-image material" in info["degraded"]["dropped_classes"]["cello"]
    assert info["degraded"]["test_timbre"].startswith("empty")
    assert _rows(root / "audio" / "test_timbre.csv") == [] and _header(root / "audio" / "test_timbre.csv") == list(AUDIO_COLUMNS)
    classes = [c["class_name"] for c in _rows(root / "classes.csv")]
    assert len(classes) >= 10 and "speech" not in classes and "cello" not in classes
    image_classes = {r["class_name"] for r in _rows(root / "images" / "train.csv")}
    assert image_classes == set(classes)
    sources = {r["source"] for s in ("train", "val", "test") for r in _rows(root / "audio" / f"{s}.csv")}
    assert sources <= {"timgm6mb", "ovos"}


def test_too_few_classes_is_an_error(tmp_path):
    recipe = json.loads((REPO / "datasets" / "recipe.json").read_text())
    recipe["min_classes"] = 30
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    with pytest.raises(MaterialError, match="only 22 classes have material|only \\d+ classes have material"):
        build_mod.build_benchmark("smoke", root=tmp_path / "x", progress=False, recipe_path=path)


def test_cli_errors_and_info(smoke_build):
    env = dict(os.environ, TQDM_DISABLE="1")
    bad = subprocess.run([sys.executable, "-m", "mars_core.data", "build", "--profile", "huge"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown profile 'huge'" in bad.stderr
    res = subprocess.run([sys.executable, "-m", "mars_core.data", "info", "--profile", "smoke", "--root", str(smoke_build)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "benchmark smoke" in res.stdout and "train" in res.stdout
    missing = subprocess.run([sys.executable, "-m", "mars_core.data", "info", "--profile", "smoke", "--root",
                              str(smoke_build / "nothing")], cwd=REPO, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "python -m mars_core.data build" in missing.stderr


# ---------------------------------------------------------------- kills, concurrency, repairs


def _cli_popen(root: Path, err: Path) -> subprocess.Popen:
    env = dict(os.environ, TQDM_DISABLE="1")
    return subprocess.Popen([sys.executable, "-m", "mars_core.data", "build", "--profile", "smoke", "--root", str(root),
                             "--quiet"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(err, "w"))


def _assert_equal_builds(root: Path, clean: Path) -> None:
    """Same manifests (which hold every file's sha256) and every file matches its row."""
    for name in ["classes.csv", "prompts.csv", "attribution.csv"] + [f"{k}/{s}.csv" for k in ("audio", "images") for s in SPLITS]:
        assert (root / name).read_bytes() == (clean / name).read_bytes(), name
    for kind in ("audio", "images"):
        for s in SPLITS:
            for r in _rows(root / kind / f"{s}.csv"):
                assert _sha(root / r["path"]) == r["sha256"], r["path"]


def _count_wavs(root: Path) -> int:
    try:
        return sum(1 for _ in (root / "audio").rglob("*.wav"))
    except OSError:  # a folder vanished while listing
        return 0


def test_killed_build_resumes_to_the_clean_build(smoke_build, tmp_path):
    root = tmp_path / "killed"
    proc = _cli_popen(root, tmp_path / "err.txt")
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and _count_wavs(root) < 40:
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.wait()
    assert not (root / "build_info.json").exists(), "the build finished before it could be killed"
    stale = root / "audio" / "train" / "violin" / ".train-violin-0009.wav.otherhost-12.k2j4.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"")  # what a write killed before its rename leaves
    res = _cli_build(root)
    assert res.returncode == 0, res.stderr
    assert not list(root.rglob("*.tmp"))
    _assert_equal_builds(root, smoke_build)


def test_two_builders_of_one_folder_are_serialised(smoke_build, tmp_path):
    from filelock import FileLock

    root = tmp_path / "shared"
    root.mkdir()
    errs = [tmp_path / f"err{i}.txt" for i in range(2)]
    gate = FileLock(str(root / build_mod.LOCK))
    with gate:  # both builders meet a held lock, then race for it when it is released
        procs = [_cli_popen(root, e) for e in errs]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all("another process is building" in e.read_text() for e in errs):
            assert all(p.poll() is None for p in procs), [e.read_text() for e in errs]
            time.sleep(0.05)
        assert all("another process is building" in e.read_text() for e in errs)
    rcs = [p.wait(timeout=600) for p in procs]
    assert rcs == [0, 0], [e.read_text() for e in errs]
    _assert_equal_builds(root, smoke_build)


def test_repair_command_in_the_error_restores_the_clip(smoke_build, tmp_path):
    from mars_core.data.mixing import MixtureDataset
    from mars_core.data.verify import BenchmarkFileError

    root = tmp_path / "damaged"
    shutil.copytree(smoke_build, root)
    ds = MixtureDataset("test", "smoke", build_dir=root, load_images=False)
    row = next(r for r in _rows(root / "audio" / "test.csv") if r["clip_id"] == ds[0]["clip_ids"][0])
    victim = root / row["path"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(BenchmarkFileError) as err:
        ds[0]
    assert str(victim) in str(err.value)
    command = str(err.value).split("`")[1]
    assert command == f"python -m mars_core.data build --profile smoke --root {root}"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.wav") if p != victim}
    res = subprocess.run([sys.executable, *command.split()[1:]], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, TQDM_DISABLE="1"))
    assert res.returncode == 0, res.stderr
    assert "re-rendered 1 that differed" in res.stdout
    assert _sha(victim) == row["sha256"]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing else rewritten
    _assert_equal_builds(root, smoke_build)
    for i in range(len(ds)):
        ds[i]


# ---------------------------------------------------------------- a test_timbre soundfont of the user's own


def test_user_soundfont_checks_its_file(tmp_path):
    from mars_core.data.sources import TIMBRE_KEY, user_soundfont

    with pytest.raises(FileNotFoundError, match="soundfont not found"):
        user_soundfont(tmp_path / "absent.sf2")
    wav = tmp_path / "not_a_font.sf2"
    wav.write_bytes(b"RIFF" + struct.pack("<I", 4) + b"WAVE")
    with pytest.raises(MaterialError, match="not a SoundFont 2 file") as err:
        user_soundfont(wav)
    assert str(wav) in str(err.value)
    short = tmp_path / "short.sf2"
    short.write_bytes(b"RIFF")
    with pytest.raises(MaterialError, match="not a SoundFont 2 file"):
        user_soundfont(short)
    font = locate_sources()["timgm6mb"]
    if not font.available:
        pytest.skip("no TimGM6mb (pretty_midi) to read")
    m = user_soundfont(font.path)
    assert m.key == TIMBRE_KEY and m.available and m.path == font.path.resolve()
    assert m.version == hashlib.sha256(font.path.read_bytes()).hexdigest()  # content, not place
    assert m.package == f"user:{font.path.name}"


def test_with_timbre_soundfont_changes_test_timbre_only():
    from mars_core.data.recipe import with_timbre_soundfont

    recipe = load_recipe()
    before = json.dumps(recipe, sort_keys=True)
    new = with_timbre_soundfont(recipe, "timbre")
    assert json.dumps(recipe, sort_keys=True) == before  # the committed recipe is not modified
    for section in ("soundfonts", "degraded_soundfonts"):
        assert new[section] == dict(recipe[section], test_timbre="timbre")
    assert {k: v for k, v in new.items() if k not in ("soundfonts", "degraded_soundfonts")} == \
        {k: v for k, v in recipe.items() if k not in ("soundfonts", "degraded_soundfonts")}


def test_timbre_build_dir_keeps_the_profiles_build(monkeypatch, tmp_path):
    monkeypatch.setattr(build_mod, "data_root", lambda: tmp_path)
    assert build_mod.timbre_build_dir("cpu", "0123456789abcdef" * 4) == tmp_path / "benchmark" / "cpu-timbre-0123456789ab"


def test_timbre_soundfont_cli_refuses_a_bad_file(tmp_path):
    bad = tmp_path / "x.sf2"
    bad.write_bytes(b"not a soundfont at all")
    res = _cli_build(tmp_path / "never", "--timbre-soundfont", str(bad))
    assert res.returncode == 1 and "not a SoundFont 2 file" in res.stderr and str(bad) in res.stderr
    res = _cli_build(tmp_path / "never", "--timbre-soundfont", str(tmp_path / "absent.sf2"))
    assert res.returncode == 1 and "soundfont not found" in res.stderr
    assert not (tmp_path / "never" / "build_info.json").exists()


def test_test_timbre_from_a_user_soundfont(smoke_build, info, tmp_path):
    """The recipe's own held-out font given as the user's renders the same clips, byte for byte; another font
    (FluidR3) renders different ones; train, val and test never change."""
    if not _fluidr3_available():
        pytest.skip("FluidR3 not installed: the default build has no test_timbre to compare with")
    default_font = Path(info["soundfonts"]["test_timbre"]["path"])
    train_font = Path(info["soundfonts"]["train"]["path"])
    default_rows = _rows(smoke_build / "audio" / "test_timbre.csv")
    for font, same in ((default_font, True), (train_font, False)):
        root = tmp_path / font.stem
        with pytest.warns(UserWarning, match="not independent material"):  # both are fonts the recipe already uses
            out = build_mod.build_benchmark("smoke", root=root, progress=False, timbre_soundfont=font)
        assert out == root
        for split in ("train", "val", "test"):
            assert (root / "audio" / f"{split}.csv").read_bytes() == (smoke_build / "audio" / f"{split}.csv").read_bytes()
        rows = _rows(root / "audio" / "test_timbre.csv")
        assert [r["clip_id"] for r in rows] == [r["clip_id"] for r in default_rows]
        assert {r["source"] for r in rows} == {"timbre"}
        for r in rows:
            assert _sha(root / r["path"]) == r["sha256"]
        shas = [r["sha256"] for r in rows]
        if same:
            assert shas == [r["sha256"] for r in default_rows]
        else:
            assert not set(shas) & {r["sha256"] for r in default_rows}
        new_info = json.loads((root / "build_info.json").read_text())
        assert new_info["soundfonts"]["test_timbre"]["key"] == "timbre"
        assert new_info["soundfonts"]["test_timbre"]["version"] == _sha(font)
        assert new_info["recipe_hash"] != info["recipe_hash"]
        attr = [a for a in _rows(root / "attribution.csv") if a["source"] == "timbre"]
        assert len(attr) == 1 and attr[0]["package"] == f"user:{font.resolve().name}" and "test_timbre" in attr[0]["used_for"]
