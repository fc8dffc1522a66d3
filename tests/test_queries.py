"""Query embeddings: fingerprints, the cached bank, per-item query material, Query-Mixup, omni."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mars_core.config import get_profile
from mars_core.data.manifest import SPLITS, read_table
from mars_core.data.mixing import MixtureDataset
from mars_core.queries import (QueryBank, QueryRef, build_query_bank, compose, evaluation_ref, item_queries,
                               load_or_build_query_bank, modality_embeddings)
from mars_core import precision
from mars_core.checkpoints import load_checkpoint, save_checkpoint
from mars_core.runs import encoder_fingerprint, manifest_hash

SMOKE = get_profile("smoke")


class StubEncoder(nn.Module):
    """A transparent 'encoder': features anyone can recompute, and a call log.

    text -> letter counts (a..z, then length) in 27 dims + zeros; image -> mean R, G, B + 1;
    audio -> (rms, mean |x|, length / sr, 1). Padded to ``dim``.
    """

    def __init__(self, dim: int = 32, sample_rate: int = 8000, seed: int = 0):
        super().__init__()
        self.dim, self.sample_rate = dim, sample_rate
        self.weight = nn.Parameter(torch.full((2,), float(seed)))
        self.calls = {"text": 0, "image": 0, "audio": 0}
        self.audio_rates = []

    @contextlib.contextmanager
    def eval_mode(self):
        yield self

    def _pad(self, rows):
        out = torch.zeros(len(rows), self.dim)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.float32)
        return out

    @staticmethod
    def text_features(t: str):
        return [t.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] + [len(t)]

    @staticmethod
    def audio_features(w, sr):
        w = np.asarray(w, dtype=np.float64)
        return [np.sqrt((w**2).mean()), np.abs(w).mean(), len(w) / sr, 1.0]

    def embed_text(self, texts):
        self.calls["text"] += 1
        return F.normalize(self._pad([self.text_features(t) for t in texts]), dim=-1)

    def embed_image(self, images):
        self.calls["image"] += 1
        return F.normalize(self._pad([list(np.asarray(im, float).mean((0, 1))) + [1.0] for im in images]), dim=-1)

    def embed_audio(self, waves, sample_rate, resample=False):
        self.calls["audio"] += 1
        self.audio_rates.append((sample_rate, resample))
        return F.normalize(self._pad([self.audio_features(w, sample_rate) for w in waves]), dim=-1)


def fake_bank(build_dir, dim: int, seed: int = 0) -> QueryBank:
    """Random unit embeddings for every prompt, image and clip of a build (no encoder)."""
    g = torch.Generator().manual_seed(seed)
    prompts = read_table(build_dir, "prompts")
    ids = {"text": list(prompts["text"])}
    classes = {"text": list(prompts["class_name"])}
    for m, kind, col in (("image", "images", "image_id"), ("audio", "audio", "clip_id")):
        tables = [read_table(build_dir, kind, s) for s in SPLITS]
        ids[m] = [x for t in tables for x in t[col]]
        classes[m] = [x for t in tables for x in t["class_name"]]
    emb = {m: F.normalize(torch.randn(len(ids[m]), dim, generator=g), dim=-1) for m in ids}
    return QueryBank(ids, classes, emb, encoder=f"fake{seed}" * 8, manifest=manifest_hash(build_dir))


# --------------------------------------------------------------------------- fingerprints
def test_manifest_hash_is_sha256_of_named_manifests(fake_build, tmp_path):
    h = hashlib.sha256()
    for name in ["classes.csv", "prompts.csv"] + [f"{k}/{s}.csv" for k in ("audio", "images") for s in SPLITS]:
        h.update(name.encode() + b"\0" + (fake_build / name).read_bytes() + b"\0")
    assert manifest_hash(fake_build) == h.hexdigest()
    copy = shutil.copytree(fake_build, tmp_path / "b")
    (copy / "audio" / "test.csv").write_text((copy / "audio" / "test.csv").read_text() + "\n")
    assert manifest_hash(copy) != manifest_hash(fake_build)
    with pytest.raises(FileNotFoundError, match="not a benchmark build"):
        manifest_hash(tmp_path)


def test_encoder_fingerprint_tracks_weights_and_class():
    a, b = StubEncoder(seed=1), StubEncoder(seed=1)
    assert encoder_fingerprint(a) == encoder_fingerprint(b)
    with torch.no_grad():
        b.weight[0] = torch.nextafter(b.weight[0], torch.tensor(2.0))  # one ulp
    assert encoder_fingerprint(a) != encoder_fingerprint(b)

    class Other(StubEncoder):
        pass

    assert encoder_fingerprint(Other(seed=1)) != encoder_fingerprint(a)
    assert encoder_fingerprint(StubEncoder(seed=1, sample_rate=16000)) != encoder_fingerprint(a)


# --------------------------------------------------------------------------- the bank
def test_build_query_bank_embeds_every_prompt_image_and_clip(fake_build):
    import soundfile as sf

    enc = StubEncoder()
    bank = build_query_bank(enc, fake_build, 8000, chunk=5, progress=False)
    prompts = read_table(fake_build, "prompts")
    assert bank.ids["text"] == list(prompts["text"])
    audio = read_table(fake_build, "audio", "val")
    row = audio.iloc[4]
    wav, sr = sf.read(fake_build / row["path"], dtype="float32")
    expected = F.normalize(torch.tensor(StubEncoder.audio_features(wav, sr) + [0.0] * 28, dtype=torch.float32), dim=0)
    torch.testing.assert_close(bank.get("audio", [row["clip_id"]])[0], expected)
    assert bank.classes["audio"][bank.ids["audio"].index(row["clip_id"])] == row["class_name"]
    t = prompts.iloc[3]["text"]
    expected_t = F.normalize(torch.tensor(StubEncoder.text_features(t) + [0.0] * 5, dtype=torch.float32), dim=0)
    torch.testing.assert_close(bank.get("text", [t])[0], expected_t)
    n_images = sum(len(read_table(fake_build, "images", s)) for s in SPLITS)
    assert bank.embeddings["image"].shape == (n_images, 32)
    assert torch.allclose(bank.embeddings["image"].norm(dim=1), torch.ones(n_images))
    assert enc.audio_rates and all(r == (8000, False) for r in enc.audio_rates)
    enc16 = StubEncoder(sample_rate=16000)
    build_query_bank(enc16, fake_build, 8000, splits=("val",), progress=False)
    assert all(r == (8000, True) for r in enc16.audio_rates)  # explicit resampling asked for


def test_bank_cache_is_keyed_by_encoder_and_manifest(fake_build, tmp_path):
    enc = StubEncoder()
    bank = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    calls = dict(enc.calls)
    again = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    assert enc.calls == calls  # served from disk
    assert again.key == bank.key and torch.equal(again.embeddings["audio"], bank.embeddings["audio"])
    files = sorted(p.name for p in (tmp_path / "smoke").glob("*.pt"))
    assert files == [f"{encoder_fingerprint(enc)[:16]}-{manifest_hash(fake_build)[:16]}.pt"]
    other = StubEncoder(seed=3)
    load_or_build_query_bank(other, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    assert other.calls["audio"] > 0 and len(list((tmp_path / "smoke").glob("*.pt"))) == 2


def test_bank_cache_keeps_bf16_and_fp32_banks_apart(fake_build, tmp_path, monkeypatch):
    """A bank embedded under bf16 autocast has its own file and key; fp32 keys keep their old form
    (so shipped separators' run keys are unchanged), and an old payload without a precision reads as fp32."""
    enc = StubEncoder()
    base = f"{encoder_fingerprint(enc)[:16]}-{manifest_hash(fake_build)[:16]}"
    fp32 = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    assert (fp32.precision, fp32.key) == ("fp32", base)
    monkeypatch.setattr(precision, "AUTOCAST_DEVICE_TYPES", frozenset({"cuda", "cpu"}))  # the CPU autocasts here
    calls = dict(enc.calls)
    bf16 = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    assert enc.calls["audio"] > calls["audio"]  # embedded again, not read from the fp32 file
    assert (bf16.precision, bf16.key) == ("bf16", base + "-bf16")
    assert sorted(p.name for p in (tmp_path / "smoke").glob("*.pt")) == [f"{base}-bf16.pt", f"{base}.pt"]
    calls = dict(enc.calls)
    assert load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False).key == bf16.key
    monkeypatch.setattr(precision, "_state", dict(precision._state, precision="fp32"))  # --precision fp32
    assert load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False).key == base
    assert enc.calls == calls  # both served from disk
    blob = load_checkpoint(tmp_path / "smoke" / f"{base}.pt")
    del blob["bank"]["precision"]  # a bank written before banks recorded their precision
    save_checkpoint(tmp_path / "smoke" / f"{base}.pt", with_rng=False, kind=blob["kind"], bank=blob["bank"])
    old = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    assert enc.calls == calls and old.precision == "fp32" and torch.equal(old.embeddings["text"], fp32.embeddings["text"])
    with pytest.raises(ValueError, match="precision"):
        QueryBank(fp32.ids, fp32.classes, fp32.embeddings, "e", "m", "fp16")


def test_bank_lookup_errors_and_mean(fake_build):
    bank = fake_bank(fake_build, 8)
    with pytest.raises(KeyError, match="'nope' is not in the bank"):
        bank.get("audio", ["nope"])
    with pytest.raises(ValueError, match="modality"):
        bank.get("video", [])
    a, b = bank.ids["audio"][:2]
    ea, eb = bank.get("audio", [a])[0], bank.get("audio", [b])[0]
    torch.testing.assert_close(bank.mean("audio", [[a, b]])[0], (ea + eb) / (ea + eb).norm())
    with pytest.raises(ValueError, match="at least one key"):
        bank.mean("audio", [[]])
    with pytest.raises(ValueError, match="duplicated ids"):
        QueryBank({m: ["x", "x"] for m in ("image", "text", "audio")}, {m: ["c", "c"] for m in ("image", "text", "audio")},
                  {m: torch.zeros(2, 3) for m in ("image", "text", "audio")}, "e", "m")


# --------------------------------------------------------------------------- per-item material
def test_item_queries_describe_each_source(fake_build):
    ds = MixtureDataset("train", SMOKE, n_items=40, build_dir=fake_build, load_images=False)
    audio = read_table(fake_build, "audio", "train").set_index("clip_id")
    images = read_table(fake_build, "images", "train").set_index("image_id")
    prompts = read_table(fake_build, "prompts")
    text_class = dict(zip(prompts["text"], prompts["class_name"]))
    train_texts = set(prompts.loc[prompts["split_group"] == "train", "text"])
    seen = set()
    for i in range(40):
        item = ds[i]
        refs = item_queries(ds, item)
        assert refs == item_queries(ds, ds[i])  # a pure function of the item
        assert refs[0] == QueryRef(item["classes"][0], item["query_text"], item["query_image_id"],
                                   (item["query_audio_clip_id"],))
        for k, ref in enumerate(refs):
            cls = item["classes"][k]
            assert ref.class_name == cls and text_class[ref.text] == cls and ref.text in train_texts
            assert images.loc[ref.image_id, "class_name"] == cls
            assert len(ref.audio_ids) == 1 and audio.loc[ref.audio_ids[0], "class_name"] == cls
            assert ref.audio_ids[0] != item["clip_ids"][k]  # never the source's own clip
        seen.add((refs[1].text, refs[1].audio_ids))
    assert len(seen) > 5  # the interferer's material varies across items


def test_evaluation_ref_uses_every_other_clip(fake_build):
    ds = MixtureDataset("test", SMOKE, build_dir=fake_build, load_images=False)
    item = ds[0]
    ref = evaluation_ref(ds, item)
    table = read_table(fake_build, "audio", "test")
    same = set(table.loc[table["class_name"] == item["classes"][0], "clip_id"])
    assert set(ref.audio_ids) == same - {item["clip_ids"][0]}
    assert (ref.text, ref.image_id) == (item["query_text"], item["query_image_id"])


# --------------------------------------------------------------------------- composition
def test_compose_kinds_and_errors(fake_build):
    bank = fake_bank(fake_build, 6)
    refs = [QueryRef("violin", bank.ids["text"][0], bank.ids["image"][0], tuple(bank.ids["audio"][:3]))]
    emb = modality_embeddings(bank, refs)
    for m in ("text", "image"):
        torch.testing.assert_close(compose(emb, m), bank.get(m, [getattr(refs[0], "text" if m == "text" else "image_id")]))
    torch.testing.assert_close(compose(emb, "audio"), bank.mean("audio", [refs[0].audio_ids]))
    torch.testing.assert_close(compose(emb, "mixup", np.array([[0.0, 1.0, 0.0]])), compose(emb, "text"))
    with pytest.raises(ValueError, match="needs weights"):
        compose(emb, "mixup")
    with pytest.raises(ValueError, match="query kind"):
        compose(emb, "video")


def test_missing_query_material_is_named(fake_build):
    bank = fake_bank(fake_build, 6)
    text, image, audio = bank.ids["text"][0], bank.ids["image"][0], tuple(bank.ids["audio"][:2])
    with pytest.raises(ValueError, match=r"query kind must be one of \('mixup', 'text', 'image', 'audio', 'omni'\), "
                                         r"got None"):
        compose(modality_embeddings(bank, [QueryRef("violin", text, image, audio)]), None)
    with pytest.raises(TypeError, match=r"refs\[1\] is NoneType, not a QueryRef"):
        modality_embeddings(bank, [QueryRef("violin", text, image, audio), None])
    # no image for any item: the text query still works, the omni query names what is missing
    emb = modality_embeddings(bank, [QueryRef("violin", text, None, audio)])
    assert set(emb) == {"text", "audio"}
    torch.testing.assert_close(compose(emb, "text"), bank.get("text", [text]))
    with pytest.raises(ValueError, match=r"the omni query needs the image, text, audio embedding\(s\); missing: image"):
        compose(emb, "omni")
    with pytest.raises(ValueError, match=r"the image query needs the image embedding\(s\); missing: image"):
        compose({"text": emb["text"]}, "image")
    with pytest.raises(ValueError, match=r"refs\[1\] has no image \(image_id=None\) but other refs have one"):
        modality_embeddings(bank, [QueryRef("violin", text, image, audio), QueryRef("violin", text, None, audio)])
    with pytest.raises(TypeError, match="embeddings must be a dict"):
        compose(None, "text")


def test_a_none_query_into_the_separator_names_the_query_kinds():
    from mars_core.separator import new_separator

    model = new_separator(SMOKE, 0)
    feats = torch.zeros(1, 1, SMOKE.audio.n_freq_warped, SMOKE.audio.n_frames)
    with pytest.raises(TypeError, match=r"query is NoneType: pass a \(batch, \d+\) tensor, the embedding of a text, "
                                        r"image, audio, omni or mixup query"):
        model(feats, None)  # was AttributeError: 'NoneType' object has no attribute 'dim'
