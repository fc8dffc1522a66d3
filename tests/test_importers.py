"""Dataset importers on tiny look-alike datasets written here from the published layouts.

Oracles: the look-alikes' own construction (which tone, fold, recording and file each clip came
from), hashlib for sha256, and the loudness and frequency of what was written, measured directly.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image

from mars_core import benchmark as B
from mars_core.config import get_profile
from mars_core.encoders.minibind import MiniBind
from mars_core.evaluation.evaluate import JudgeScorer, compact_table, eval_queries, evaluate_systems, load_eval_set, \
    results_table
from mars_core.data.mixing import MixtureDataset
from mars_core.queries import ModalityUnavailableError, build_query_bank, compose, item_queries, modality_embeddings
from mars_core.supervised import train_supervised
from mars_core.benchmark.widgets import listening_view
from mars_core.data.importers import import_dataset, main
from mars_core.data.importers.common import DatasetLayoutError, most_active_window, noun_phrases
from mars_core.data.manifest import AUDIO_COLUMNS, read_table

SMOKE = get_profile("smoke")
SR_IN = 44100
# ESC-50 look-alike: category -> (target, tone Hz); families are target // 10
ESC = {"dog": (0, 500.0), "rain": (10, 1500.0), "clock_tick": (38, 2500.0)}


def tone_clip(freq: float, seconds: float = 5.0, start: float = 2.5) -> np.ndarray:
    """``seconds`` of int16 audio: silence, then a tone from ``start`` seconds on (amplitude 0.3)."""
    t = np.arange(int(seconds * SR_IN)) / SR_IN
    x = np.where(t >= start, 0.3 * np.sin(2 * np.pi * freq * t), 0.0)
    return (x * 32767).astype(np.int16)


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.fixture(scope="module")
def esc50_root(tmp_path_factory) -> Path:
    """meta/esc50.csv + audio/, 2 clips per fold per category (one freesound recording per fold), plus an
    unreadable and a silent file listed in the csv."""
    root = tmp_path_factory.mktemp("ESC-50-master")
    (root / "meta").mkdir()
    (root / "audio").mkdir()
    rows = []
    for cat, (target, hz) in ESC.items():
        for fold in range(1, 6):
            src = 1000 * target + fold
            for take in "AB":
                name = f"{fold}-{src}-{take}-{target}.wav"
                sf.write(root / "audio" / name, tone_clip(hz), SR_IN, subtype="PCM_16")
                rows.append([name, fold, target, cat, "False", src, take])
    (root / "audio" / "1-9-A-0.wav").write_text("not audio")
    sf.write(root / "audio" / "1-8-A-0.wav", np.zeros(SR_IN, np.int16), SR_IN, subtype="PCM_16")
    rows += [["1-9-A-0.wav", 1, 0, "dog", "False", 9, "A"], ["1-8-A-0.wav", 1, 0, "dog", "False", 8, "A"]]
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def esc50_build(esc50_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("esc50-build")
    return import_dataset("esc50", esc50_root, profile=SMOKE, out=out), out


def test_esc50_folds_become_splits(esc50_build):
    report, out = esc50_build
    assert report.clips == {"train": 18, "val": 6, "test": 6, "test_timbre": 0}
    for split, folds in (("train", {1, 2, 3}), ("val", {4}), ("test", {5})):
        table = read_table(out, "audio", split)
        assert list(table.columns) == list(AUDIO_COLUMNS)
        assert table["class_name"].value_counts().to_dict() == {c: len(folds) * 2 for c in ESC}
        # recording id freesound:<src_file>, src_file = 1000 target + fold: each recording stays in its fold
        assert {int(r.split(":")[1]) % 1000 for r in table["recording_id"]} == folds
        assert set(table["license"]) == {"CC-BY-NC-3.0"}


def test_esc50_clips_are_normalised_like_the_benchmark(esc50_build):
    _, out = esc50_build
    table = read_table(out, "audio", "test")
    n = int(SMOKE.data.clip_seconds * SMOKE.audio.sample_rate)
    for row in table.itertuples():
        path = out / row.path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
        x, sr = sf.read(path, dtype="float64")
        assert sr == SMOKE.audio.sample_rate and x.ndim == 1 and len(x) == n == row.num_samples
        # the tone fills the chosen window (the file's loud half, not its silent first 2.5 s) at -20 dBFS RMS
        assert abs(dominant_hz(x, sr) - ESC[row.class_name][1]) < 2 * sr / n
        assert 20 * np.log10(np.sqrt(np.mean(x[sr // 10 : -sr // 10] ** 2))) == pytest.approx(-20.0, abs=0.3)


def test_esc50_bad_files_are_skipped_by_name(esc50_build, esc50_root):
    report, out = esc50_build
    info = pd.read_json(out / "build_info.json", typ="series")
    assert info["n_skipped"] == 2 and len(report.skipped) == 2
    reasons = {Path(s["path"]).name: s["reason"] for s in info["skipped"]}
    assert reasons["1-8-A-0.wav"] == "silent" and reasons["1-9-A-0.wav"].startswith("unreadable")
    assert "skipped 2 file(s)" in report.summary()


def test_esc50_classes_prompts_and_missing_images(esc50_build):
    _, out = esc50_build
    classes = read_table(out, "classes")
    assert dict(zip(classes["class_name"], classes["family"])) == {
        "clock_tick": "interior_domestic", "dog": "animals", "rain": "natural_soundscapes"}
    prompts = read_table(out, "prompts")
    texts = set(prompts["text"])
    assert {"the sound of a dog", "rain", "a recording of a ticking clock"} <= texts
    held = prompts[prompts["split_group"] == "test"]
    assert set(held["template_id"]) == {"g04", "g07", "k03"}  # the recipe's held-out ids a class has
    for split in ("train", "val", "test"):
        assert len(read_table(out, "images", split)) == 0  # no image is made up
    info = pd.read_json(out / "build_info.json", typ="series")
    assert info["modalities"]["image"].startswith("unavailable")
    attribution = read_table(out, "attribution")
    assert "Piczak" in attribution["credit"][0] and attribution["license"][0] == "CC-BY-NC-3.0"


@pytest.fixture(scope="module")
def esc50_trained(esc50_build):
    """A smoke separator trained 2 steps on the ESC-50 import (no images), with its query bank."""
    _, out = esc50_build
    bank = build_query_bank(MiniBind.from_profile(SMOKE, seed=0), out, SMOKE.audio.sample_rate, progress=False)
    cfg = replace(SMOKE.supervised, steps=2, batch_mixtures=2, eval_every=2, val_mixtures=2, ckpt_every=2)
    assert cfg.query == "mixup"  # the default training query mixes all three modalities where they exist
    model, history = train_supervised(SMOKE, bank, cfg, build_dir=out, device="cpu", progress=False)
    return model, history, bank, out


def test_esc50_import_trains_and_evaluates_without_images(esc50_trained):
    """No images: training (Query-Mixup over text and audio, omni validation) and the text, audio and
    omni queries work; the image query is reported, never made up."""
    model, history, bank, out = esc50_trained
    assert len(bank.ids["image"]) == 0
    assert history["steps_done"] == 2 and np.isfinite(history["loss"]).all()

    eval_set = load_eval_set(SMOKE, "test", n_items=4, build_dir=out)
    assert list(eval_set.unavailable) == ["image"] and str(out) in eval_set.unavailable["image"]
    assert eval_set.images == [None] * 4 and set(eval_set.meta["query_image_id"]) == {""}
    judge = MiniBind.from_profile(SMOKE, seed=7)  # any encoder other than the query encoder
    df = evaluate_systems(SMOKE, eval_set, {"baseline": (model, bank)}, references=False,
                          scorer=JudgeScorer(judge, eval_set, 8000), progress=False)
    assert list(df["modality"].unique()) == ["text", "image", "audio", "omni"] and len(df) == 16
    scored = df[df["modality"] != "image"]
    assert not scored["skipped"].any() and np.isfinite(scored[["sdr", "si_sdri", "semantic"]]).all().all()
    assert scored["semantic_image"].isna().all()  # the judge has no image to compare with
    image = df[df["modality"] == "image"]
    assert image["skipped"].all() and image[["sdr", "si_sdri", "semantic"]].isna().all().all()
    assert all(str(out) in r and "image query unavailable" in r for r in image["skip_reason"])
    wide = compact_table(results_table(df)).set_index("modality")
    assert wide.loc["image", "sdr"] == "n/a" and wide.loc["text", "sdr"] != "n/a"


def test_esc50_image_query_names_the_build_and_modality(esc50_build):
    _, out = esc50_build
    bank = build_query_bank(MiniBind.from_profile(SMOKE, seed=0), out, SMOKE.audio.sample_rate, splits=("test",),
                            progress=False)
    eval_set = load_eval_set(SMOKE, "test", n_items=2, build_dir=out)
    expected = rf"the image query is unavailable on this data: no image \({out}: build_info.json records the image " \
               rf"modality as 'unavailable: ESC-50 ships no images"
    with pytest.raises(ModalityUnavailableError, match=expected):
        eval_queries(bank, eval_set, ("text", "image"))
    with pytest.raises(ModalityUnavailableError, match=expected):
        evaluate_systems(SMOKE, eval_set, {"baseline": (None, bank)}, references=False, modalities=("image",), progress=False)
    ds = MixtureDataset("test", SMOKE, n_items=2, build_dir=out)
    refs = item_queries(ds, ds[0])  # the interferer's query material: no image drawn either
    assert [r.image_id for r in refs] == [None, None] and all(dict(r.unavailable) == ds.unavailable for r in refs)
    emb = modality_embeddings(bank, refs)
    assert set(emb) == {"text", "audio"}
    with pytest.raises(ModalityUnavailableError, match=expected):
        compose(emb, "image")
    # omni without images: n((2 e_t + e_a) / 3), computed here from the bank's rows
    want = torch.nn.functional.normalize(2 * emb["text"] + emb["audio"], dim=-1)
    torch.testing.assert_close(compose(emb, "omni"), want)


def test_esc50_benchmark_and_listening_view_without_images(esc50_trained):
    model, _, bank, out = esc50_trained
    ctx = B.BenchmarkContext(SMOKE, build_dir=out, bank=bank, judge=None, progress=False)
    res = B.run_benchmark(SMOKE, context=ctx, loaded={"supervised": B.SystemModel(model, bank)}, splits=("test",),
                          pair_types=("random",), n_items=3, n_resamples=10, progress=False)
    wide = B.wide_table(res.summary, "test", "random", ["sdr"]).set_index(["system", "modality"])["sdr"]
    assert wide[("supervised", "image")] == "n/a" and wide[("supervised", "text")] != "n/a"
    html = listening_view(res, "test/random", 0, "text").data
    assert "image: n/a (this data has no images)" in html and html.count("<audio") >= 4
    with pytest.raises(ModalityUnavailableError, match=f"no image \\({out}: build_info.json"):
        listening_view(res, "test/random", 0, "image")


def test_esc50_bad_layout_is_named(tmp_path, capsys):
    with pytest.raises(DatasetLayoutError, match="meta/esc50.csv not found"):
        import_dataset("esc50", tmp_path, profile=SMOKE, out=tmp_path / "out")
    assert main(["esc50", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--profile", "smoke"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_noun_phrases_and_windows():
    assert noun_phrases("crying_baby") == ("a crying baby", "crying baby")
    assert noun_phrases("rain") == ("rain", "rain")
    assert noun_phrases("church_bells") == ("church bells", "church bells")
    assert noun_phrases("engine") == ("an engine", "engine")
    x = np.zeros(100)
    x[60:80] = 1.0
    np.testing.assert_array_equal(most_active_window(x, 30, 10), x[50:80])
    np.testing.assert_array_equal(most_active_window(x[:20], 30, 10), np.zeros(30))


# --------------------------------------------------------------------------- folder
FOLDER = {"Violin": 440.0, "dog bark": 900.0, "rain": 1700.0, "bell": 2600.0}


@pytest.fixture(scope="module")
def folder_build(tmp_path_factory):
    """ROOT/<class>/*.wav (8 each, FLAC for one class, stereo 22.05 kHz float) and ROOT/<class>/images/*."""
    root = tmp_path_factory.mktemp("mydata")
    for i, (cls, hz) in enumerate(FOLDER.items()):
        d = root / cls
        (d / "images").mkdir(parents=True)
        for k in range(8):
            t = np.arange(int(3.0 * 22050)) / 22050
            x = 0.2 * np.sin(2 * np.pi * hz * (1 + 0.01 * k) * t)
            suffix = ".flac" if i == 0 else ".wav"
            sf.write(d / f"clip{k}{suffix}", np.stack([x, 0.5 * x], 1), 22050)
        for k in range(3):
            Image.new("RGB", (160 + 40 * k, 120), (60 * i, 200 - 40 * k, 90)).save(d / "images" / f"p{k}.png")
    out = tmp_path_factory.mktemp("folder-build")
    return import_dataset("folder", root, profile=SMOKE, out=out), root, out


def test_folder_splits_and_images(folder_build):
    report, root, out = folder_build
    assert report.clips == {"train": 16, "val": 8, "test": 8, "test_timbre": 0}  # 8 clips: 2 test, 2 val, 4 train
    assert report.images == {"train": 4, "val": 4, "test": 4, "test_timbre": 0}  # 3 images: 1 each
    names = set(read_table(out, "classes")["class_name"])
    assert names == {"violin", "dog_bark", "rain", "bell"}
    seen = {}
    for split in ("train", "val", "test"):
        for row in read_table(out, "audio", split).itertuples():
            src = row.recording_id.split(":", 1)[1]
            assert src not in seen and (root / src).is_file()  # every source file once, in one split
            seen[src] = split
            x, sr = sf.read(out / row.path)
            cls, name = src.split("/")
            hz = FOLDER[cls] * (1 + 0.01 * int(name[4]))  # clip<k>: tone FOLDER[cls] (1 + k / 100)
            assert row.class_name == cls.lower().replace(" ", "_")
            assert x.ndim == 1 and sr == 8000 and abs(dominant_hz(x, sr) - hz) < 2 * sr / len(x)
        for row in read_table(out, "images", split).itertuples():
            with Image.open(out / row.path) as im:
                assert im.size == (SMOKE.data.image_size,) * 2 and im.mode == "RGB"
    assert len(seen) == 32
    assert pd.read_json(out / "build_info.json", typ="series")["modalities"]["image"] == "available"


def train_and_evaluate(out: Path, classes: set[str]) -> None:
    """An imported build through the query bank, a few supervised steps and the evaluation, unchanged."""
    bank = build_query_bank(MiniBind.from_profile(SMOKE, seed=0), out, SMOKE.audio.sample_rate, progress=False)
    cfg = replace(SMOKE.supervised, steps=2, batch_mixtures=2, eval_every=2, val_mixtures=2, ckpt_every=2)
    model, history = train_supervised(SMOKE, bank, cfg, build_dir=out, device="cpu", progress=False)
    assert history["steps_done"] == 2 and np.isfinite(history["loss"]).all()
    eval_set = load_eval_set(SMOKE, "test", n_items=4, build_dir=out)
    df = evaluate_systems(SMOKE, eval_set, {"baseline": (model, bank)}, references=False, modalities=("text", "image", "audio"),
                          progress=False)
    assert len(df) == 12 and set(df["modality"]) == {"text", "image", "audio"}
    assert set(df["target"]) <= classes and np.isfinite(df["sdr"]).any()


def test_folder_import_trains_and_evaluates(folder_build):
    train_and_evaluate(folder_build[2], {"violin", "dog_bark", "rain", "bell"})


def test_data_command_imports_and_describes(folder_build, tmp_path, capsys):
    from mars_core.data.__main__ import main as data_main

    _, root, _ = folder_build
    out = tmp_path / "via-cli"
    assert data_main(["import", "folder", "--root", str(root), "--out", str(out), "--profile", "smoke"]) == 0
    assert "clips: train 16, val 8, test 8" in capsys.readouterr().out
    assert data_main(["info", "--root", str(out), "--profile", "smoke"]) == 0
    assert "4 classes: bell, dog_bark, rain, violin" in capsys.readouterr().out


# --------------------------------------------------------------------------- videos (MUSIC, VGGSound)
FPS, VSR = 4, 22050


def write_video(path: Path, seconds: int, hz: float, base: int) -> None:
    """A tiny mp4 (mpeg4 video, AAC audio) encoded with PyAV: a ``hz`` tone, and frames whose grey
    level is ``base + 20 s`` during second ``s`` (so a frame's time can be read from its pixels)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=FPS)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=VSR)
        a.layout = "mono"
        for i in range(seconds * FPS):
            img = np.full((48, 64, 3), base + 20 * (i // FPS), np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        x = (0.3 * np.sin(2 * np.pi * hz * np.arange(seconds * VSR) / VSR)).astype(np.float32)
        for k in range(0, len(x), 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, k : k + 1024]), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = VSR, k
            for p in a.encode(fr):
                c.mux(p)
        for stream in (v, a):
            for p in stream.encode():
                c.mux(p)


def grey(path: Path) -> float:
    with Image.open(path) as im:
        return float(np.asarray(im, dtype=np.float64).mean())


MUSIC = {"violin": 440.0, "acoustic guitar": 330.0, "tuba": 110.0}


@pytest.fixture(scope="module")
def music_build(tmp_path_factory):
    """MUSIC21_solo_videos.json with 6 videos per instrument, all downloaded (4 s each) but one."""
    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("MUSIC")
    listing = {cls: [f"{cls[:3]}{k}xYz" for k in range(6)] for cls in MUSIC}
    (root / "MUSIC21_solo_videos.json").write_text(json.dumps({"videos": listing}))
    for cls, ids in listing.items():
        for k, vid in enumerate(ids):
            if (cls, k) != ("tuba", 5):  # removed from YouTube: listed, never downloaded
                write_video(root / cls / f"{vid}.mp4", 4, MUSIC[cls], 40 + 10 * k)
    out = tmp_path_factory.mktemp("music-build")
    report = import_dataset("music", root, profile=SMOKE, out=out, clips_per_video=2, frames_per_video=8)
    return report, root, out, listing


def test_music_clips_frames_and_splits_by_video(music_build):
    report, root, out, listing = music_build
    assert sum(report.clips.values()) == 3 * 6 * 2 - 2  # two clips per downloaded video
    assert [Path(s["path"]).name for s in report.skipped] == ["tub5xYz.mp4"] * 2
    assert all(s["reason"] == "missing file" for s in report.skipped)
    split_of = {}
    for split in ("train", "val", "test"):
        for row in read_table(out, "audio", split).itertuples():
            vid = row.recording_id.split(":")[1]
            assert split_of.setdefault(vid, split) == split  # a video's clips stay in one split
            cls = next(c for c, ids in listing.items() if vid in ids)
            x, sr = sf.read(out / row.path)
            assert abs(dominant_hz(x, sr) - MUSIC[cls]) < 2 * sr / len(x)
        frames = read_table(out, "images", split)
        for row in frames.itertuples():
            assert split_of[row.source.split(":")[1]] == split  # its frames too
        # 4 s videos: frames at 0.5, 1.5, 2.5, 3.5 s, grey levels base + 0, 20, 40, 60 (mpeg4 rounding: +-4)
        for vid, group in frames.groupby(frames["source"].str.split(":").str[1]):
            k = int(vid[3])
            levels = sorted(grey(out / p) for p in group["path"])
            np.testing.assert_allclose(levels, [40 + 10 * k + 20 * s for s in range(4)], atol=4)
    # 6 videos per class: 2 test, 2 val, 2 train (tuba lost one of its 6)
    per = pd.Series(split_of).groupby(lambda v: v[:3]).value_counts().unstack(fill_value=0)
    assert per.loc["vio"].to_dict() == per.loc["aco"].to_dict() == {"test": 2, "train": 2, "val": 2}
    assert sorted(per.loc["tub"]) == [1, 2, 2]
    classes = read_table(out, "classes")
    assert dict(zip(classes["class_name"], classes["family"])) == {
        "acoustic_guitar": "plucked", "tuba": "brass", "violin": "bowed_strings"}


def test_music_import_trains_and_evaluates(music_build):
    train_and_evaluate(music_build[2], {"violin", "acoustic_guitar", "tuba"})


VGG = {"dog barking": 700.0, "playing violin, fiddle": 440.0, "rain": 1900.0}


def ids_with_val(cls: str, want_val: int, want_train: int) -> list[str]:
    """Ids whose sha256 puts ``want_val`` of them in val (the documented 10 % rule) and ``want_train`` in train."""
    val, train, k = [], [], 0
    while len(val) < want_val or len(train) < want_train:
        vid = f"{cls[:4].replace(' ', '')}{k:07d}"
        (val if int(hashlib.sha256(vid.encode()).hexdigest(), 16) % 100 < 10 else train).append(vid)
        k += 1
    return val[:want_val] + train[:want_train]


@pytest.fixture(scope="module")
def vggsound_build(tmp_path_factory):
    """vggsound.csv (no header) with 6 train and 2 test clips per label, 6 s videos, one never downloaded."""
    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("VGGSound")
    rows = []
    for j, (label, hz) in enumerate(VGG.items()):
        for k, vid in enumerate(ids_with_val(label, 2, 6)):
            start = 30 + k
            split = "test" if k >= 6 else "train"
            rows.append([vid, start, label, split])
            if (j, k) != (2, 7):
                name = f"{vid}_{start:06d}.mp4" if k % 2 else f"{vid}_{start}.mp4"  # both namings in use
                write_video(root / "video" / name, 6, hz, 30 + 20 * j)
    with open(root / "vggsound.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    out = tmp_path_factory.mktemp("vggsound-build")
    return import_dataset("vggsound", root, profile=SMOKE, out=out), root, out, rows


def test_vggsound_splits_labels_and_middle_frame(vggsound_build):
    report, root, out, rows = vggsound_build
    assert report.clips == {"train": 12, "val": 6, "test": 5, "test_timbre": 0}
    assert [s["reason"] for s in report.skipped] == ["missing file"]
    test_ids = {r[0] for r in rows if r[3] == "test"}
    for split in ("train", "val", "test"):
        for row in read_table(out, "audio", split).itertuples():
            assert (row.recording_id.split(":")[1] in test_ids) == (split == "test")
        for row in read_table(out, "images", split).itertuples():  # the frame at 5 s: grey 30 + 20 j + 100
            j = list(VGG).index(next(lbl for lbl in VGG if clean(lbl) == row.class_name))
            assert abs(grey(out / row.path) - (30 + 20 * j + 100)) <= 4
    texts = set(read_table(out, "prompts")["text"])
    assert {"the sound of dog barking", "a recording of playing violin, fiddle", "rain"} <= texts


def clean(label: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in label.lower()).split())


def test_vggsound_list_keeps_a_selection(vggsound_build, tmp_path):
    _, root, _, rows = vggsound_build
    keep = tmp_path / "clean.csv"
    keep.write_text("id\n" + "\n".join(f"{r[0]}_{r[1]:06d}" for r in rows if r[2] != "rain") + "\n")
    report = import_dataset("vggsound", root, profile=SMOKE, out=tmp_path / "out", list_csv=keep)
    assert sum(report.clips.values()) == 16 and not report.skipped


def test_vggsound_import_trains_and_evaluates(vggsound_build):
    train_and_evaluate(vggsound_build[2], {"dog_barking", "playing_violin_fiddle", "rain"})
