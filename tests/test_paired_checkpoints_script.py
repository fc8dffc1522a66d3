"""scripts/paired_checkpoints.py: which separator is scored with which query encoder, and the change it prints."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from tests.repo_files import load_script


def _items(system: str, values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"split": "test", "pairs": "random", "system": system, "modality": "text",
                         "item": range(len(values)), "si_sdri": values})


def test_each_side_is_scored_with_its_own_encoder_and_the_change_is_system_minus_baseline(monkeypatch, capsys):
    s = load_script("scripts/paired_checkpoints.py")
    calls = []

    def fake_evaluate(profile, build, checkpoints, query_encoder=None, **kw):
        calls.append((dict(checkpoints), query_encoder))
        name = next(iter(checkpoints))
        values = [1.0, 2.0, 3.0] if name == "baseline" else [1.5, 2.5, 3.5]  # system - baseline = +0.5 on every item
        return SimpleNamespace(items=_items(name, values))

    monkeypatch.setattr(s, "evaluate_checkpoints", fake_evaluate)
    monkeypatch.setattr(s, "load_minibind", lambda path: f"encoder<{path}>")
    monkeypatch.setattr(s, "benchmark_dir", lambda profile: "build")
    assert s.main(["--profile", "cpu", "--checkpoint", "new.pt", "--query-encoder", "new_mb.pt",
                   "--baseline", "old.pt", "--baseline-query-encoder", "old_mb.pt"]) == 0
    assert calls == [({"baseline": "old.pt"}, "encoder<old_mb.pt>"), ({"system": "new.pt"}, "encoder<new_mb.pt>")]
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.lstrip().startswith("test")][0].split()
    # columns: split pairs modality mean_diff ci_low ci_high n; a constant +0.5 difference has a degenerate interval
    assert row[:3] == ["test", "random", "text"] and row[3:6] == ["+0.50", "+0.50", "+0.50"] and row[6] == "3"


def test_without_encoders_both_sides_use_the_profile_encoder(monkeypatch, capsys):
    s = load_script("scripts/paired_checkpoints.py")
    seen = []

    def fake_evaluate(profile, build, checkpoints, query_encoder=None, **kw):
        seen.append(query_encoder)
        name = next(iter(checkpoints))
        return SimpleNamespace(items=_items(name, [0.0, 1.0]))

    monkeypatch.setattr(s, "evaluate_checkpoints", fake_evaluate)
    monkeypatch.setattr(s, "benchmark_dir", lambda profile: "build")
    monkeypatch.setattr(s, "shipped_separator", lambda profile: "shipped.pt")
    s.main(["--profile", "cpu", "--checkpoint", "new.pt"])
    assert seen == [None, None]
    assert "against shipped.pt" in capsys.readouterr().out
