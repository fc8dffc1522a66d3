from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mars_core.checkpoints import CheckpointError, UnsafeCheckpointError, load_checkpoint, save_checkpoint
from mars_core.config import get_profile


def test_round_trip_with_config_versions_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    torch.manual_seed(0); np.random.seed(0); random.seed(0)
    path = save_checkpoint(tmp_path / "ck" / "last.pt", config=get_profile("smoke"), model=model.state_dict(), step=7)
    expected = (torch.rand(3), np.random.rand(), random.random())  # draws right after the save
    torch.rand(10); np.random.rand(5)  # move the generators on
    blob = load_checkpoint(path, restore_rng=True)
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    assert blob["step"] == 7 and blob["config"]["audio"]["sample_rate"] == 8000
    assert blob["versions"]["torch"] == torch.__version__
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(blob["model"])
    assert torch.equal(fresh.weight, model.weight)
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", step=1)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, step=2, bad=Boom())
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="junk.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(RuntimeError, match="not written by"):
        load_checkpoint(tmp_path / "foreign.pt")


# --------------------------------------------------------------------------- weights-only loading
class _WritesAFile:
    """Unpickling this would create ``target`` (``open(target, "w")``): the payload of a crafted checkpoint."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("fmt", ["torch-zip", "plain-pickle"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, fmt):
    marker = tmp_path / "created_by_unpickling"
    path = tmp_path / "last.pt"
    blob = {"versions": {"torch": "2"}, "step": 1, "evil": _WritesAFile(marker)}
    if fmt == "torch-zip":
        torch.save(blob, path)
    else:
        path.write_bytes(pickle.dumps(blob, protocol=2))
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "open" in msg and "nothing in it ran" in msg and f"rm {path}" in msg
    assert not marker.exists()  # the oracle: unpickling would have created it (checked below without torch)
    pickle.loads(pickle.dumps(_WritesAFile(marker)))
    assert marker.exists()


def test_old_resumable_file_with_numpy_rng_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"versions": {}, "step": 3, "rng": {"numpy": np.random.get_state()}}, path)  # the pre-change form
    with pytest.raises(UnsafeCheckpointError, match=r"numpy.*RNG state as plain lists.*To rebuild it: use --retrain"):
        load_checkpoint(path, rebuild="use --retrain")


def test_files_with_a_torch_version_object_still_load(tmp_path):
    """Files written before versions were stored as str hold torch's TorchVersion (allowed, a str subclass)."""
    path = tmp_path / "final.pt"
    torch.save({"versions": {"torch": torch.__version__}, "model": {"w": torch.ones(2)}}, path)
    assert type(torch.__version__) is not str  # the object really is the non-plain class
    blob = load_checkpoint(path)
    assert blob["versions"]["torch"] == str(torch.__version__) and torch.equal(blob["model"]["w"], torch.ones(2))


def test_saved_files_hold_only_plain_objects(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", config=get_profile("smoke"), step=np.int64(4),
                           history={"loss": [np.float32(0.5)]})
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    blob = torch.load(path, weights_only=True)  # no allow-list needed for what this code writes
    assert type(blob["step"]) is int and blob["step"] == 4 and blob["history"]["loss"] == [0.5]
    assert type(blob["versions"]["torch"]) is str


def test_payload_a_weights_only_load_would_refuse_is_not_written(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", step=1)
    with pytest.raises(TypeError, match=r"last.pt.*numpy.*weights-only"):
        save_checkpoint(path, step=2, table=np.zeros(3))
    assert load_checkpoint(path)["step"] == 1 and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("cut", [0, 0.5, 0.99])
def test_truncated_checkpoint_names_the_file_and_the_rebuild_command(tmp_path, cut):
    full = save_checkpoint(tmp_path / "full.pt", model={"w": torch.zeros(1000)}).read_bytes()
    path = tmp_path / "run" / "final.pt"
    path.parent.mkdir()
    path.write_bytes(full[: int(len(full) * cut)])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, rebuild="python -m mars_core.supervised --profile smoke --retrain")
    assert str(path) in str(err.value) and "python -m mars_core.supervised --profile smoke --retrain" in str(err.value)
    assert err.value.path == path
    with pytest.raises(CheckpointError, match=r"rm .*final.pt"):  # default advice: delete it and run again
        load_checkpoint(path)


def test_shipped_checkpoints_load_weights_only():
    shipped = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.pt"))
    assert shipped
    for path in shipped:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == [], path
        assert isinstance(load_checkpoint(path)["versions"]["torch"], str)


def test_state_dict_metadata_survives_the_round_trip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2))
    sd = model.state_dict()
    path = save_checkpoint(tmp_path / "m.pt", model=sd, history={"x": [np.float64(1.5)]})
    blob = load_checkpoint(path)
    assert blob["model"]._metadata == sd._metadata and blob["history"] == {"x": [1.5]}  # torch's version records
