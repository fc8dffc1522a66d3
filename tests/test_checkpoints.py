from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mars_core.checkpoints import load_checkpoint, save_checkpoint
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
