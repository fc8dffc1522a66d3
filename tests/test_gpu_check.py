"""benchmarks/gpu_check.py on a CPU: its refusals, and its code paths at smoke size (``--allow-cpu --profile
smoke``), where autocast is a no-op so "bf16" is fp32 and every agreement must be exactly 0; then the bf16 path
itself, emulated on the CPU by letting CPU forward passes autocast."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mars_core import precision

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SMOKE_ARGS = ["--allow-cpu", "--device", "cpu", "--profile", "smoke", "--batch", "2", "--warmup", "0", "--steps", "1"]
FIELDS = ("profile", "device", "torch", "precision", "encoder", "encoder_params_M", "separator_params_M", "batch",
          "query_embedding_s", "supervised_steps_per_s", "supervised_steps_per_s_fp32", "supervised_peak_gpu_MB",
          "rl_preset", "rl_steps_per_s", "rl_steps_per_s_fp32", "rl_peak_gpu_MB", "agreement", "mask_P_std",
          "mask_max_abs_diff_P", "reward_min_cos_embedding", "reward_max_abs_diff_cos", "reward_max_abs_diff_R",
          "total_s")
"""What the issue asks the report to show (steps per second, peak GPU memory, mask and reward agreement) and
what gives them context, written out here rather than read from the script."""


def _run(*args: str, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = ["bash", str(script), *args] if script.suffix == ".sh" else [sys.executable, str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def _report(stdout: str) -> dict[str, str]:
    rows = [line.split(": ", 1) for line in stdout.splitlines() if ": " in line]
    return {k: v for k, v in rows if k in FIELDS}


def _module():
    spec = importlib.util.spec_from_file_location("_gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("args, says", [
    ([], "needs a CUDA device.*'--allow-cpu --profile smoke'"),
    (["--device", "cpu", "--profile", "smoke"], "needs a CUDA device"),
    (["--device", "cuda", "--profile", "smoke"], "--device cuda: CUDA is not available"),
    (["--allow-cpu", "--device", "cpu"], "--allow-cpu runs only with --profile smoke \\(got --profile full\\)"),
    (["--allow-cpu", "--device", "cpu", "--profile", "cpu"], "--allow-cpu runs only with --profile smoke"),
])
def test_refuses_without_cuda(args, says, monkeypatch, capsys):
    gc = _module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        gc.check_device(gc.parse(args))
    assert exc.value.code == 2
    assert re.search(says, capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the wrapper would run the check")
def test_shell_wrapper_passes_arguments_and_refuses_without_cuda():
    out = _run("--profile", "smoke", script=REPO / "benchmarks" / "gpu_check.sh")
    # the whole chain: pyenv.sh's [env] line, the script's refusal on stderr, exit status 2, nothing run
    assert out.returncode == 2 and "[env]" in out.stdout and "needs a CUDA device" in out.stderr, out.stderr
    assert "profile:" not in out.stdout


def test_smoke_on_cpu_prints_every_field_and_fp32_agrees_with_itself_exactly():
    out = _run(*SMOKE_ARGS)
    assert out.returncode == 0, out.stderr[-3000:]
    report = _report(out.stdout)
    assert set(report) == set(FIELDS), set(FIELDS) - set(report)
    assert [line.split(": ", 1)[0] for line in out.stdout.splitlines()[1:]] == list(FIELDS)  # in this order
    assert report["profile"] == "smoke" and report["device"].startswith("cpu")
    assert report["agreement"].startswith("fp32 vs fp32")
    # on a CPU autocast is a no-op: both sides run the same fp32 code on the same inputs, so bit-equal
    for key in ("mask_max_abs_diff_P", "reward_max_abs_diff_cos", "reward_max_abs_diff_R"):
        assert float(report[key]) == 0.0, (key, report[key])
    assert float(report["reward_min_cos_embedding"]) == pytest.approx(1.0, abs=1e-6)  # cos(e, e) of unit rows
    assert float(report["mask_P_std"]) > 0.01  # the compared mask is not 1/2 everywhere
    for key in ("supervised_steps_per_s", "rl_steps_per_s", "supervised_steps_per_s_fp32", "rl_steps_per_s_fp32"):
        assert 0 < float(report[key]) < math.inf, key
    assert report["supervised_peak_gpu_MB"] == report["rl_peak_gpu_MB"] == "n/a (cpu)"
    assert report["batch"] == "2 mixtures x 2 sources"


def test_bf16_path_end_to_end_emulated_on_cpu(monkeypatch):
    """CPU forward passes autocast to bf16 as a GPU's would: every phase runs, and bf16 agrees with fp32
    within bf16's rounding (8 significant bits) but not exactly."""
    gc = _module()
    monkeypatch.setattr(precision, "AUTOCAST_DEVICE_TYPES", frozenset({"cuda", "cpu"}))
    monkeypatch.setattr(precision, "_state", {"precision": "auto"})
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = gc.run(gc.parse(SMOKE_ARGS))
    finally:
        torch.set_num_threads(n_threads)
    assert report["precision"] == "bf16 autocast" and report["agreement"].startswith("bf16 autocast vs fp32")
    d_p = float(report["mask_max_abs_diff_P"])
    # P = sigmoid(z), |dP| <= |dz| / 4; bf16 rounds z relatively by about 2^-8 through the U-Net's levels: a max
    # over every bin of a few 1e-2 at most, and exactly 0 would mean no autocast happened
    assert 0 < d_p < 0.1
    assert float(report["reward_min_cos_embedding"]) > 0.99
    assert 0 < float(report["reward_max_abs_diff_cos"]) < 0.02
