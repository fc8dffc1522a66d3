"""python -m mars_core.encoders.train: what its override options hand to the trainer."""

from __future__ import annotations

import pytest
import torch

import mars_core.encoders.train as T


@pytest.fixture(autouse=True)
def _keep_thread_count():
    n = torch.get_num_threads()  # main() sets --threads for the process; the rest of the suite keeps its own
    yield
    torch.set_num_threads(n)


class _Stop(Exception):
    pass


def _capture(monkeypatch):
    seen = {}

    def fake_train(prof, *, build_dir, encoder, config, run_dir, resume, device):
        seen.update(encoder=encoder, config=config, resume=resume)
        raise _Stop

    monkeypatch.setattr(T, "train_minibind", fake_train)
    return seen


def test_cartoon_prob_and_image_tower_reach_the_trainer(monkeypatch, tmp_path):
    seen = _capture(monkeypatch)
    with pytest.raises(_Stop):
        T.main(["--profile", "smoke", "--out", str(tmp_path / "m.pt"), "--run-dir", str(tmp_path / "run"),
                "--cartoon-prob", "0.5", "--image-tower", "mobilenet_v2", "--no-resume", "--device", "cpu"])
    assert seen["config"].cartoon_prob == 0.5 and seen["encoder"].image_tower == "mobilenet_v2"
    assert seen["resume"] is False
    with pytest.raises(_Stop):
        T.main(["--profile", "smoke", "--out", str(tmp_path / "m.pt"), "--run-dir", str(tmp_path / "run"),
                "--device", "cpu"])
    assert seen["config"].cartoon_prob == T.TrainConfig.for_profile(T.get_profile("smoke")).cartoon_prob


@pytest.mark.parametrize("bad", ["1.5", "-0.1"])
def test_cartoon_prob_outside_0_1_is_refused(monkeypatch, tmp_path, bad):
    _capture(monkeypatch)
    with pytest.raises(SystemExit, match=r"--cartoon-prob must be in \[0, 1\]"):
        T.main(["--profile", "smoke", "--out", str(tmp_path / "m.pt"), "--cartoon-prob", bad, "--device", "cpu"])


def test_the_trained_trunk_options_reach_the_trainer(monkeypatch, tmp_path):
    seen = _capture(monkeypatch)
    with pytest.raises(_Stop):
        T.main(["--profile", "cpu", "--out", str(tmp_path / "m.pt"), "--run-dir", str(tmp_path / "run"),
                "--image-trunk-train-blocks", "2", "--image-trunk-lr-ratio", "0.1", "--device", "cpu"])
    assert seen["encoder"].image_trunk_train_blocks == 2 and seen["config"].image_trunk_lr_ratio == 0.1
    with pytest.raises(_Stop):
        T.main(["--profile", "cpu", "--out", str(tmp_path / "m.pt"), "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    assert seen["encoder"].image_trunk_train_blocks == 0 and seen["config"].image_trunk_lr_ratio == 0.5
    with pytest.raises(SystemExit, match="--image-trunk-lr-ratio must be > 0"):
        T.main(["--profile", "cpu", "--out", str(tmp_path / "m.pt"), "--image-trunk-lr-ratio", "0", "--device", "cpu"])
