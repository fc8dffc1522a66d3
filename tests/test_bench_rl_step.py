"""benchmarks/bench_rl_step.py: its RL steps run (smoke size) and ``*_compile`` routes the trunk through torch.compile."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_rl_step", BENCH / "bench_rl_step.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


def test_dense_step_and_its_compiled_twin_are_timed(bench, monkeypatch):
    compiled = []

    def fake_compile(module, **kw):  # counts what is compiled and runs the module itself
        compiled.append(type(module).__name__)
        return module
    monkeypatch.setattr(torch, "compile", fake_compile)
    rows = {k: bench.measure(k, "smoke", 1, "cpu", warmup=0, repeats=1) for k in ("rl_dense", "rl_dense_compile")}
    assert compiled == ["Trunk"]  # head-only: the old policy's trunk only
    for row in rows.values():
        assert row["s_per_step"] > 0 and row["trainable"] == "head" and row["group_size"] >= 2
        assert all(math.isfinite(row[f"t_{k}"]) for k in ("policy", "rollout", "reward", "update"))
        assert 0 <= row["reward_share"] < 1
