"""mars_core.benchmark.registry: names and aliases, missing systems, the loaders of RL runs and the aligned-encoder ablation."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from mars_core import benchmark as B
from mars_core.benchmark import registry
from mars_core.config import get_profile
from tests.test_evaluate import constant_separator
from tests.test_benchmark import tiny_registry
from tests.test_queries import StubEncoder, fake_bank

def test_resolve_systems_names_aliases_and_errors():
    assert list(B.resolve_systems(["plus", "supervised"])) == ["MARS-Sep plus", "supervised"]
    assert list(B.resolve_systems(None)) == list(B.SYSTEMS)
    with pytest.raises(KeyError, match="unknown system"):
        B.resolve_systems(["nope"])


def test_missing_systems_are_reported_not_fatal(monkeypatch, fake_build):
    monkeypatch.setitem(sys.modules, "mars_core.rl.trainer", None)  # import fails as if not written yet
    ctx = B.BenchmarkContext(SMOKE, build_dir=fake_build, bank=fake_bank(fake_build, 128), judge=None, progress=False)

    def broken(ctx):
        raise RuntimeError("a real bug")

    with pytest.warns(UserWarning, match="MARS-Sep paper"):
        loaded, missing = B.load_systems(ctx, {"supervised": tiny_registry()["supervised"],
                                               "MARS-Sep paper": B.SYSTEMS["MARS-Sep paper"]})
    assert list(loaded) == ["supervised"] and "mars_core.rl.trainer" in missing["MARS-Sep paper"]
    with pytest.raises(RuntimeError, match="a real bug"):  # other errors are not hidden
        B.load_systems(ctx, {"x": broken})


def test_registry_asks_the_rl_trainer_for_the_right_runs(monkeypatch, fake_build):
    calls = []

    def fake_load_or_train_rl(profile, preset, *, aligned, progress):
        calls.append((profile.name, preset, aligned))
        return constant_separator(float(len(calls))), {"reward_mean": [0.5], "source": f"{preset}-{aligned}"}

    fake = types.SimpleNamespace(load_or_train_rl=fake_load_or_train_rl)
    monkeypatch.setitem(sys.modules, "mars_core.rl.trainer", fake)
    ctx = B.BenchmarkContext(SMOKE, build_dir=fake_build, bank=fake_bank(fake_build, 128), judge=None, progress=False)
    names = ["MARS-Sep paper", "MARS-Sep plus", "RL, un-aligned encoder"]
    loaded, missing = B.load_systems(ctx, names)
    assert missing == {} and list(loaded) == names
    assert calls == [("smoke", "paper", True), ("smoke", "plus", True), ("smoke", "plus", False)]
    assert loaded["RL, un-aligned encoder"].source == "plus-False" and loaded["MARS-Sep paper"].bank is None


def test_aligned_encoder_ablation_queries_the_baseline_with_the_aligned_bank(monkeypatch, fake_build, tmp_path):
    from mars_core.queries import encoder_fingerprint

    monkeypatch.setenv("MARS_DATA", str(tmp_path))  # the bank cache goes here
    aligned_encoder = StubEncoder(dim=SMOKE.separator.query_dim, seed=7)
    seen = {}

    def fake_stack(profile, aligned=True, build_dir=None, progress=True):
        seen.update(aligned=aligned, build_dir=build_dir)
        return types.SimpleNamespace(encoder=aligned_encoder, key="k" * 16)

    monkeypatch.setitem(sys.modules, "mars_core.alignment.stack", types.SimpleNamespace(load_reward_stack=fake_stack))
    ctx = B.BenchmarkContext(SMOKE, build_dir=fake_build, bank=fake_bank(fake_build, 128), judge=None, progress=False)
    baseline = constant_separator(3.0)
    ctx._cache["supervised"] = B.SystemModel(baseline, source="baseline.pt")
    s = B.load_aligned_no_rl(ctx)
    assert s.model is baseline and seen == {"aligned": True, "build_dir": fake_build}
    assert s.bank.encoder == encoder_fingerprint(aligned_encoder) != ctx.query_bank().encoder
    assert "baseline.pt" in s.source


def test_loader_return_values_are_normalised():
    m = constant_separator(1.0)
    assert registry._as_system_model((m, {"reward_mean": [1.0]}), "x").history == {"reward_mean": [1.0]}
    wrapper = torch.nn.Module()
    wrapper.separator = m
    assert registry._as_system_model(wrapper, "x").model is m
    with pytest.raises(TypeError):
        registry._as_system_model("not a model", "x")


SMOKE = get_profile("smoke")