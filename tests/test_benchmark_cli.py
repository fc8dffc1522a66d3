"""mars_core.benchmark.cli: the command line passes its options to run_benchmark."""

from __future__ import annotations

import pytest

from mars_core import benchmark as B
from mars_core.benchmark import cli

def test_cli_run_passes_its_options(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(prof, **kw):
        seen.update(kw, profile=prof.name)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "run_benchmark", fake_run)
    with pytest.raises(SystemExit):
        cli.main(["--profile", "smoke", "--systems", "supervised", "plus", "--n-items", "3", "--pairs", "hard",
                "--seed", "5", "--out", str(tmp_path)])
    assert seen["profile"] == "smoke" and seen["systems"] == ["supervised", "plus"] and seen["n_items"] == 3
    assert seen["pair_types"] == ["hard"] and seen["splits"] == list(B.SPLITS) and seen["seed"] == 5
    assert seen["command"] == (f"python -m mars_core.benchmark --profile smoke --systems supervised plus --n-items 3 "
                               f"--pairs hard --seed 5 --out {tmp_path}")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="differs from the context"):
        B.run_benchmark("cpu", context=B.BenchmarkContext("smoke", judge=None), loaded={})


