"""scripts/timbre_check.py: its --checkpoint and --systems arguments (the work is mars_core.benchmark.held_out's)."""

from __future__ import annotations

import pytest

from tests.repo_files import load_script


def _script():
    return load_script("scripts/timbre_check.py")


def test_checkpoint_specs_are_name_equals_path():
    s = _script()
    assert s.checkpoints(None) is None
    assert s.checkpoints(["MARS-Sep dense, seed 1=/x/final.pt", "a=b=c.pt"]) == {"MARS-Sep dense, seed 1": "/x/final.pt",
                                                                                 "a": "b=c.pt"}
    for bad in ("no-equals-sign", "=path.pt", "name="):
        with pytest.raises(SystemExit, match="expected NAME=PATH"):
            s.checkpoints([bad])


def test_systems_need_a_run_record(tmp_path):
    with pytest.raises(SystemExit, match="--systems needs --from-run"):
        _script().main(["--soundfont", str(tmp_path / "x.sf2"), "--systems", "supervised"])
