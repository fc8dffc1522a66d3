"""mars_core.runs: the hashes that key caches and runs (values pinned), run folders, keep-best."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from mars_core.runs import (MANIFESTS, TrainState, config_hash, data_fingerprint, encoder_fingerprint, keep_if_best,
                            manifest_hash, runs_dir)


def _build(root: Path, images: bool = True) -> Path:
    """A crafted build: every manifest holds its own name, so each hash is computable by hand."""
    for rel in MANIFESTS:
        if images or not rel.startswith("images/"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(rel.encode())
    return root


def test_config_hash_is_sha256_of_sorted_json_truncated():
    # the JSON text typed by hand: keys sorted, ", " and ": " separators, non-JSON objects as str
    assert config_hash({"b": 1, "a": [1.5, "x"]}) == hashlib.sha256(b'{"a": [1.5, "x"], "b": 1}').hexdigest()[:16]
    assert config_hash({"p": Path("/d")}) == hashlib.sha256(b'{"p": "/d"}').hexdigest()[:16]
    # a tuple of parts hashes as a JSON list (the alignment run key hashes its parts this way)
    assert config_hash(("e", {"k": 2})) == hashlib.sha256(b'["e", {"k": 2}]').hexdigest()[:16]
    # pinned value: run folders on disk are named with it
    assert config_hash({"a": 1}) == "f9d86028c6e0d64e"


def test_manifest_hash_names_each_file_and_skips_absent_ones(tmp_path):
    build = _build(tmp_path / "b", images=False)
    expected = hashlib.sha256()
    for rel in MANIFESTS:
        if not rel.startswith("images/"):
            expected.update(rel.encode() + b"\0" + rel.encode() + b"\0")
    assert manifest_hash(build) == expected.hexdigest()
    (build / "prompts.csv").unlink()
    with pytest.raises(FileNotFoundError, match="prompts.csv"):
        manifest_hash(build)


def test_data_fingerprint_hashes_raw_bytes_of_every_manifest(tmp_path):
    build = _build(tmp_path / "b")
    assert data_fingerprint(build) == hashlib.sha256("".join(MANIFESTS).encode()).hexdigest()[:16]
    assert data_fingerprint(build) != manifest_hash(build)[:16]  # two different hashes, both kept
    (build / "images/test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="test.csv"):
        data_fingerprint(build)


def test_encoder_fingerprint_is_sha256_of_class_rate_and_weights_typed_by_hand():
    """The value keys the query bank, the alignment stack and separator checkpoints: pinned from the rule."""
    enc = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        enc.weight.fill_(1.0)
    # class name, sample rate ("" when the module has none), then per entry "name|dtype|shape" and its bytes
    h = hashlib.sha256(b"Linear" + b"" + b"weight|torch.float32|(1,)" + b"\x00\x00\x80\x3f")  # 1.0f little-endian
    assert encoder_fingerprint(enc) == h.hexdigest()
    enc.sample_rate = 8000
    assert encoder_fingerprint(enc) == hashlib.sha256(b"Linear8000weight|torch.float32|(1,)\x00\x00\x80\x3f").hexdigest()


def test_manifests_are_the_four_splits_of_audio_and_images():
    assert MANIFESTS == ["classes.csv", "prompts.csv", "audio/train.csv", "audio/val.csv", "audio/test.csv",
                         "audio/test_timbre.csv", "images/train.csv", "images/val.csv", "images/test.csv",
                         "images/test_timbre.csv"]


def test_runs_dir_is_under_mars_data(monkeypatch, tmp_path):
    monkeypatch.setenv("MARS_DATA", str(tmp_path))
    assert runs_dir("supervised") == tmp_path / "runs" / "supervised"


def test_keep_if_best_keeps_a_cpu_copy_only_on_strict_improvement():
    model = torch.nn.Linear(2, 1)
    st = TrainState({})
    assert st.best_sdr == -math.inf and keep_if_best(st, 1.0, 3, model)
    with torch.no_grad():
        model.weight.fill_(7.0)
    assert not keep_if_best(st, 1.0, 4, model)  # a tie is not better
    assert st.best_step == 3 and not torch.equal(st.best_state["weight"], model.weight)
    assert keep_if_best(st, 2.0, 5, model) and st.best_step == 5 and (st.best_state["weight"] == 7.0).all()
