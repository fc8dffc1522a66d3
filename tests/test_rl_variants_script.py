"""scripts/rl_variants.py: a variant is its base preset with the named fields cast to their types."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from mars_core.config import rl_preset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rl_variants.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("rl_variants", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_variant_of_the_dense_base(script):
    dense = rl_preset("smoke", "dense")
    name, cfg = script.parse_variant("dense-hard:hard_pair_prob=0.25,reward_segments=8", dense)
    assert name == "dense-hard" and cfg == replace(dense, preset="dense-hard", hard_pair_prob=0.25, reward_segments=8)
    assert isinstance(cfg.reward_segments, int) and isinstance(cfg.hard_pair_prob, float)
    assert script.parse_variant("dense", dense) == ("dense", dense)  # named like the base: the preset itself
    with pytest.raises(SystemExit, match="no field 'segments'"):
        script.parse_variant("x:segments=4", dense)


def test_against_pairs_each_variant_with_the_control_of_its_own_seed(script):
    """--against: every other variant's run against the named variant's run with the same seed (names as the benchmark
    gives them: bare at seed 0, "NAME, seed S" otherwise); a name that is not a variant is refused before training."""
    pairs = script.against_pairs(["adapt", "adapt-entropy", "adapt-g8"], [0, 2], ["adapt-entropy"])
    assert pairs == [("adapt-entropy", ["adapt", "adapt-g8"]),
                     ("adapt-entropy, seed 2", ["adapt, seed 2", "adapt-g8, seed 2"])]
    assert script.against_pairs(["a", "b"], [0], []) == []
    with pytest.raises(SystemExit, match="--against entropy: not a --variant name"):
        script.against_pairs(["adapt", "adapt-entropy"], [0], ["entropy"])
