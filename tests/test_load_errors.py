"""Corrupt caches, runs and weights files are reported with their path and the command that rebuilds them."""

from __future__ import annotations

import pytest
import torch

from mars_core.checkpoints import CheckpointError, UnsafeCheckpointError
from mars_core.config import get_profile
from mars_core.encoders import ImageBind
from mars_core.encoders.hub import WeightsMismatchError, from_pretrained, load_state_dict_file
from mars_core.queries import encoder_fingerprint, load_or_build_query_bank
from mars_core.supervised import cli as sup_cli
from mars_core.supervised import store as sup_store
from mars_core.rl import trainer as rl_trainer
from mars_core.runs import config_hash, manifest_hash, resume_last
from mars_core.supervised import load_or_train, run_config
from tests.test_checkpoints import _WritesAFile
from tests.test_queries import StubEncoder, fake_bank

SMOKE = get_profile("smoke")


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------- query-bank cache
def test_corrupt_query_bank_cache_names_the_file_and_rebuild_rebuilds_it(fake_build, tmp_path):
    enc = StubEncoder()
    bank = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    path = tmp_path / "smoke" / f"{encoder_fingerprint(enc)[:16]}-{manifest_hash(fake_build)[:16]}.pt"
    _truncate(path)
    with pytest.raises(CheckpointError) as err:
        load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert str(path) in msg and f"rm {path}" in msg and "python -m mars_core.supervised --profile smoke --retrain" in msg
    calls = dict(enc.calls)
    again = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False,
                                     rebuild=True)
    assert all(enc.calls[m] > calls[m] for m in calls)  # embedded again, not read
    assert torch.equal(again.embeddings["text"], bank.embeddings["text"])
    third = load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    assert torch.equal(third.embeddings["audio"], bank.embeddings["audio"])  # the rewritten file reads back


def test_query_bank_cache_with_a_crafted_pickle_is_refused(fake_build, tmp_path):
    enc = StubEncoder()
    path = tmp_path / "smoke" / f"{encoder_fingerprint(enc)[:16]}-{manifest_hash(fake_build)[:16]}.pt"
    path.parent.mkdir(parents=True)
    marker = tmp_path / "created"
    torch.save({"versions": {}, "kind": "query_bank", "bank": _WritesAFile(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="nothing in it ran"):
        load_or_build_query_bank(enc, SMOKE, build_dir=fake_build, cache_dir=tmp_path, progress=False)
    assert not marker.exists()


# --------------------------------------------------------------------------- separator runs
def test_corrupt_final_pt_names_the_retrain_command(fake_build, tmp_path, monkeypatch):
    monkeypatch.setenv("MARS_CHECKPOINTS", str(tmp_path / "no_shipped"))
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    final = tmp_path / "runs" / f"smoke-{config_hash(run_config(SMOKE, SMOKE.supervised, bank))}" / "final.pt"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a zip header and nothing else
    with pytest.raises(CheckpointError) as err:
        load_or_train(SMOKE, bank=bank, run_root=tmp_path / "runs", build_dir=fake_build, progress=False)
    assert str(final) in str(err.value) and "python -m mars_core.supervised --profile smoke --retrain" in str(err.value)


# --------------------------------------------------------------------------- ImageBind weights files
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A state-dict file of a freshly initialised tiny ImageBind (the same keys as the official format)."""
    path = tmp_path_factory.mktemp("weights") / "imagebind_tiny.pth"
    torch.save(ImageBind("tiny").state_dict(), path)
    return path


def test_truncated_weights_file_names_the_path_and_size(tmp_path, tiny_weights):
    path = tmp_path / "imagebind_huge.pth"
    path.write_bytes(tiny_weights.read_bytes())
    size = path.stat().st_size
    _truncate(path)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value) and f"{size // 2} bytes" in str(err.value) and "sha256" in str(err.value)
    with pytest.raises(CheckpointError, match="imagebind_huge.pth"):
        from_pretrained(path, config="tiny", device="cpu")


def test_tiny_weights_loaded_as_huge_give_a_short_summary(tiny_weights):
    path = tiny_weights
    n_tiny = len(torch.load(path, weights_only=True))
    with pytest.raises(WeightsMismatchError) as err:
        from_pretrained(path, config="huge", device="cpu")
    msg = str(err.value)
    assert len(msg) < 2000  # torch's own message lists every key (tens of thousands of characters)
    assert str(path) in msg and f"({n_tiny} tensors)" in msg and "shape mismatches" in msg
    assert "The file fits config='tiny'" in msg


def test_corrupt_last_pt_says_how_to_restart_the_run(tmp_path):
    path = tmp_path / "run" / "last.pt"
    path.parent.mkdir()
    path.write_bytes(b"")  # a write killed before any byte landed
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError) as err:
        resume_last(path, {}, model, torch.optim.SGD(model.parameters(), lr=0.1), "a supervised run")
    msg = str(err.value)
    assert str(path) in msg and f"rm {path}" in msg and "restart a supervised run from step 0" in msg
    assert "--retrain" in msg and "0 bytes" in msg


# --------------------------------------------------------------------------- --retrain covers the query-bank cache
class _Stop(Exception):
    pass


def _capture_bank_call(monkeypatch, module) -> dict:
    seen = {}

    def fake(*args, **kw):
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr(module, "load_or_build_query_bank", fake)
    monkeypatch.setattr(module, "load_query_encoder", lambda prof: object())
    return seen


@pytest.mark.parametrize("retrain", [False, True])
def test_retrain_rebuilds_the_query_bank_cache(monkeypatch, retrain):
    seen = _capture_bank_call(monkeypatch, sup_cli)
    with pytest.raises(_Stop):
        sup_cli.main(["--profile", "smoke", "--no-eval"] + (["--retrain"] if retrain else []))
    assert seen["rebuild"] is retrain
    seen = _capture_bank_call(monkeypatch, sup_store)
    with pytest.raises(_Stop):
        sup_store.load_or_train(SMOKE, retrain=retrain)
    assert seen["rebuild"] is retrain
    seen = _capture_bank_call(monkeypatch, rl_trainer)
    with pytest.raises(_Stop):
        rl_trainer.load_or_train_rl(SMOKE, retrain=retrain)
    assert seen["rebuild"] is retrain
