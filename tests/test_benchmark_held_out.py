"""mars_core.benchmark.held_out: trained separators scored unchanged on another build (a user's test_timbre)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mars_core.benchmark import held_out as H
from mars_core.config import get_profile
from mars_core.supervised.store import save_separator
from tests.separate_helpers import constant_separator
from tests.test_queries import fake_bank

SMOKE = get_profile("smoke")


def _save(path, logit: float, queries: str):
    return save_separator(path, constant_separator(logit), run_cfg={"profile": "smoke", "queries": queries}, history={"step": [0]})


def test_checkpoint_system_checks_the_query_encoder(fake_build, tmp_path):
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    ok = H.checkpoint_system(_save(tmp_path / "a.pt", 40.0, bank.key), bank)
    assert ok.bank is None and ok.source == str(tmp_path / "a.pt") and ok.history == {"step": [0]}
    other = "f" * 16 + "-" + bank.manifest[:16]
    with pytest.raises(ValueError, match="trained on queries of encoder ffffffffffffffff"):
        H.checkpoint_system(_save(tmp_path / "b.pt", 40.0, other), bank)
    with pytest.raises(FileNotFoundError):
        H.checkpoint_system(tmp_path / "absent.pt", bank)


def test_evaluate_checkpoints_scores_the_files_as_they_are(fake_build, tmp_path, monkeypatch):
    """An all-pass checkpoint scores exactly the mixture (SI-SDRi 0, the mixture's SDR), a mask-1/2 one exactly
    ``mixture / 2``, on every query; the bank is the one built for the given build."""
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    asked = {}

    def bank_for(encoder, profile, build_dir, progress):
        asked["build_dir"], asked["encoder"] = build_dir, encoder
        return bank

    monkeypatch.setattr(H, "load_query_encoder", lambda profile: "encoder")
    monkeypatch.setattr(H, "load_or_build_query_bank", bank_for)
    files = {"all-pass": _save(tmp_path / "p.pt", 40.0, bank.key), "half": _save(tmp_path / "h.pt", 0.0, bank.key)}
    res = H.evaluate_checkpoints(SMOKE, fake_build, files, splits=("test",), pair_types=("random",), n_items=3,
                                 judge=None, progress=False, out=tmp_path / "out")
    assert asked["build_dir"] == fake_build and asked["encoder"] == "encoder" and (tmp_path / "out" / "summary.csv").exists()
    items = res.items
    ref = items[items["system"] == "mixture"].set_index("item")["sdr"]
    half = items[items["system"] == "mixture / 2"].set_index("item")["sdr"]
    for modality in ("text", "image", "audio", "omni"):
        a = items[(items["system"] == "all-pass") & (items["modality"] == modality)].set_index("item")
        h = items[(items["system"] == "half") & (items["modality"] == modality)].set_index("item")
        assert len(a) == 3 and len(h) == 3
        np.testing.assert_allclose(a["si_sdri"], 0.0, atol=1e-3)  # float32 STFT round trip: far below 1e-3 dB
        np.testing.assert_allclose(a["sdr"], ref.loc[a.index], atol=1e-3)
        np.testing.assert_allclose(h["sdr"], half.loc[h.index], atol=1e-3)
    table = H.held_out_table(res.summary)
    assert set(table["system"]) == {"all-pass", "half"} and len(table) == 8
    t = table.set_index(["system", "modality"])
    np.testing.assert_allclose(t.loc[("half", "text"), "sdr_over_half"], 0.0, atol=1e-3)
    np.testing.assert_allclose(t.loc[("all-pass", "omni"), "sdr_over_half"], ref.mean() - half.mean(), atol=1e-3)


def test_held_out_table_by_hand():
    rows = [("test_timbre", "random", "mixture / 2", "-", "sdr", 3.0, 0.1, 4),
            ("test_timbre", "random", "mixture", "-", "si_sdri", 0.0, 0.0, 4),
            ("test_timbre", "random", "supervised", "text", "si_sdri", 1.0, 0.5, 4),
            ("test_timbre", "random", "supervised", "text", "sdr", 4.5, 0.2, 4),
            ("test_timbre", "hard", "mixture / 2", "-", "sdr", 2.0, 0.1, 4),
            ("test_timbre", "hard", "supervised", "text", "si_sdri", -0.5, 0.25, 4),
            ("test_timbre", "hard", "supervised", "text", "sdr", 1.5, 0.2, 4)]
    summary = pd.DataFrame(rows, columns=["split", "pairs", "system", "modality", "metric", "mean", "sem", "n"])
    t = H.held_out_table(summary).set_index("pairs")
    assert list(t.index) == ["random", "hard"]
    np.testing.assert_allclose(t.loc["random", ["si_sdri", "ci_low", "ci_high", "sdr_over_half"]].to_numpy(float),
                               [1.0, 1.0 - 0.98, 1.0 + 0.98, 1.5])
    np.testing.assert_allclose(t.loc["hard", ["si_sdri", "ci_low", "ci_high", "sdr_over_half"]].to_numpy(float),
                               [-0.5, -0.5 - 0.49, -0.5 + 0.49, -0.5])
    assert H.held_out_table(summary[summary["system"] != "supervised"]).empty


def test_checkpoints_from_run_reads_the_recorded_sources(tmp_path, monkeypatch):
    import json

    from mars_core.benchmark.io import REPO_ROOT

    monkeypatch.setenv("MARS_DATA", str(tmp_path / "data"))
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"systems": {
        "supervised": "checkpoints/separator_cpu.pt",
        "MARS-Sep dense": "$MARS_DATA/runs/rl/cpu-dense-0c26/final.pt",
        "aligned encoder, no RL": "checkpoints/separator_cpu.pt, queried by the aligned encoder 9f41",
        "elsewhere": "/abs/model.pt"}}))
    assert H.checkpoints_from_run(run) == {
        "supervised": REPO_ROOT / "checkpoints" / "separator_cpu.pt",
        "MARS-Sep dense": tmp_path / "data" / "runs" / "rl" / "cpu-dense-0c26" / "final.pt",
        "elsewhere": Path("/abs/model.pt")}
    assert list(H.checkpoints_from_run(run, ["MARS-Sep dense"])) == ["MARS-Sep dense"]
    with pytest.raises(KeyError, match="'pathwise' is not a system"):
        H.checkpoints_from_run(run, ["pathwise"])
    committed = H.checkpoints_from_run(REPO_ROOT / "figures" / "tables_cpu" / "run.json", ["supervised"])
    assert committed == {"supervised": REPO_ROOT / "checkpoints" / "separator_cpu.pt"}  # the format the benchmark writes


def test_a_given_query_encoder_embeds_the_bank(fake_build, tmp_path, monkeypatch):
    bank = fake_bank(fake_build, SMOKE.separator.query_dim)
    asked = {}
    monkeypatch.setattr(H, "load_query_encoder", lambda profile: pytest.fail("the profile's encoder was loaded"))
    monkeypatch.setattr(H, "load_or_build_query_bank", lambda enc, prof, build_dir, progress: asked.setdefault("enc", enc) and bank)
    H.evaluate_checkpoints(SMOKE, fake_build, {"a": _save(tmp_path / "p.pt", 40.0, bank.key)}, splits=("test",),
                           pair_types=("random",), n_items=2, judge=None, progress=False, query_encoder="candidate")
    assert asked["enc"] == "candidate"
