"""``--device`` handling (mars_core.device), the device arguments of every command, a shape-level run on
the ``meta`` device (a hard-coded CPU tensor in the separator's path fails there), the ImageBind path
argument and the cached weight hash. CPU only: a GPU machine is simulated by monkeypatching
``torch.cuda.is_available`` / ``device_count``."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from mars_core.device import DeviceError, device_from_args, resolve_device
from mars_core.encoders import hub
from mars_core.encoders.load import use_imagebind_argument

from .one_thread import one_thread  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# --------------------------------------------------------------------------- resolve_device
def test_auto_and_cpu_on_a_machine_without_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_cuda_refused_without_gpu(no_gpu):
    for spec in ("cuda", "cuda:0", "cuda:5"):
        with pytest.raises(DeviceError, match="CUDA is not available.*--device cpu or auto"):
            resolve_device(spec)


def test_cuda_index_checked_against_device_count(two_gpus):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")
    with pytest.raises(DeviceError, match="cuda:0 to cuda:1"):
        resolve_device("cuda:5")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "cuda:x", "", "mps", "cuda:0:1", "cpu:0"])
def test_bad_strings_name_the_choices(spec):
    with pytest.raises(DeviceError, match=r"expected auto\|cpu\|cuda\[:N\]"):
        resolve_device(spec)


def test_full_without_gpu_stops_unless_allowed(no_gpu):
    for spec in ("auto", "cpu"):
        with pytest.raises(DeviceError, match="'full'.*--allow-cpu"):
            resolve_device(spec, "full")
        assert resolve_device(spec, "full", allow_cpu=True) == torch.device("cpu")
    assert resolve_device("auto", "cpu") == torch.device("cpu")  # the cpu and smoke profiles never ask
    assert resolve_device("auto", "smoke") == torch.device("cpu")


def test_full_with_gpu_runs_there(two_gpus):
    assert resolve_device("auto", "full") == torch.device("cuda")
    with pytest.raises(DeviceError, match="--allow-cpu"):
        resolve_device("cpu", "full")  # asking for the CPU explicitly still needs the flag at full size


# --------------------------------------------------------------------------- every command's parser
def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parsers():
    from mars_core.benchmark.cli import _run_parser
    from mars_core.encoders.train import _parser as minibind_parser
    from mars_core.rl.__main__ import _parser as rl_parser
    from mars_core.rl.cli import base_parser
    from mars_core.supervised.cli import _parser as supervised_parser

    diagnose = _script("diagnose_queries")
    return {
        "supervised": (supervised_parser().parse_args, []),
        "rl": (rl_parser().parse_args, []),
        "benchmark": (_run_parser().parse_args, []),
        "encoders.train": (minibind_parser().parse_args, ["--out", "x.pt"]),
        "rl scripts (base_parser)": (base_parser("x").parse_args, []),
        "diagnose_queries": (diagnose.parse, []),
    }


def test_every_command_parses_device_and_allow_cpu():
    for name, (parse, extra) in _parsers().items():
        args = parse([*extra, "--device", "cuda:1", "--allow-cpu"])
        assert (args.device, args.allow_cpu) == ("cuda:1", True), name
        args = parse(extra)
        assert (args.device, args.allow_cpu) == ("auto", False), name
        if name != "encoders.train":  # MiniBind training never loads ImageBind
            assert parse([*extra, "--imagebind", "/w/ib.pth"]).imagebind == "/w/ib.pth", name


def test_rl_scripts_build_their_parser_with_base_parser():
    # rl_gradient_check / rl_fixed_batch build their parser inside main(): check they use base_parser
    for name in ("rl_gradient_check", "rl_fixed_batch"):
        text = (REPO / "scripts" / f"{name}.py").read_text()
        assert "base_parser(" in text and "su.device" in text, name


def test_device_from_args_exits_with_the_message(no_gpu):
    from mars_core.supervised.cli import _parser

    with pytest.raises(SystemExit, match="--allow-cpu"):
        device_from_args(_parser().parse_args(["--profile", "full"]), "full")
    with pytest.raises(SystemExit, match="expected auto"):
        device_from_args(_parser().parse_args(["--device", "gpu0"]), "smoke")


# --------------------------------------------------------------------------- meta device (shapes only)
def test_separator_path_runs_on_meta_tensors():
    """Front end -> U-Net -> K query logits -> mask on ``meta``: any tensor made on the CPU inside
    (a window, a grid, a constant) would raise a device mismatch here."""
    from mars_core.audio import FrontEnd
    from mars_core.config import get_profile
    from mars_core.separator import multi_query_logits, new_separator

    prof = get_profile("smoke")
    fe = FrontEnd(prof.audio)
    model = new_separator(prof, 0).to("meta").eval()
    mix = torch.zeros(2, fe.cfg.segment_samples, device="meta")
    feats = fe.features(mix)
    q = torch.zeros(2, 3, prof.separator.query_dim, device="meta")
    z = multi_query_logits(model, feats, q)
    assert z.device.type == "meta"
    assert tuple(z.shape) == (2, 3, *feats.shape[-2:])
    mask = fe.unwarp(torch.sigmoid(z))
    assert mask.device.type == "meta" and mask.shape[:2] == (2, 3)


# --------------------------------------------------------------------------- ImageBind path and hash
def test_imagebind_argument_sets_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MARS_IMAGEBIND", raising=False)
    with pytest.raises(SystemExit, match="no such file"):
        use_imagebind_argument(tmp_path / "missing.pth")
    assert "MARS_IMAGEBIND" not in os.environ
    f = tmp_path / "imagebind_huge.pth"
    f.write_bytes(b"x")
    use_imagebind_argument(f)
    assert os.environ["MARS_IMAGEBIND"] == str(f.resolve())
    use_imagebind_argument(None)  # no option: the environment is left as it is
    assert os.environ["MARS_IMAGEBIND"] == str(f.resolve())


def test_sha256_is_computed_once_per_path_size_mtime(tmp_path, monkeypatch):
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    opened = []
    real_open = open

    def counting_open(path, *a, **k):
        opened.append(Path(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(hub, "open", counting_open, raising=False)
    monkeypatch.setattr(hub, "_SHA256_CACHE", {})
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector
    assert hub.sha256_of(f) == abc
    assert hub.sha256_of(str(f)) == abc
    assert len(opened) == 1  # the second call (same path, size, mtime) did not read the file
    f.write_bytes(b"abcd")  # new size (and mtime): hashed again
    assert hub.sha256_of(f) == hashlib.sha256(b"abcd").hexdigest()
    assert len(opened) == 2


def test_to_device_moves_modules_and_passes_anything_else():
    from mars_core.device import to_device

    lin = torch.nn.Linear(2, 3)
    assert to_device(lin, "meta").weight.device.type == "meta"
    marker = object()
    assert to_device(None, "meta") is None and to_device(marker, "meta") is marker


# --------------------------------------------------------------------------- scripts/pyenv.sh
def _pyenv(tmp_path, **env) -> list[str]:
    import subprocess

    base = {k: v for k, v in os.environ.items() if k not in ("MARS_VENV", "CONDA_PREFIX")}
    out = subprocess.run(["bash", "-c", 'ROOT=/repo; . scripts/pyenv.sh; echo "$MARS_ENV_KIND $VPY"'], cwd=REPO,
                         env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.split()


def _fake_prefix(root: Path, imports_torch: bool) -> Path:
    """A prefix whose bin/python answers ``-c 'import torch'`` with exit 0 or 1 (no real interpreter)."""
    (root / "bin").mkdir(parents=True)
    py = root / "bin" / "python"
    py.write_text(f"#!/bin/sh\nexit {0 if imports_torch else 1}\n")
    py.chmod(0o755)
    return root


def test_pyenv_picks_mars_venv_then_conda_with_torch_then_dot_venv(tmp_path):
    with_torch = _fake_prefix(tmp_path / "conda_ok", True)
    without = _fake_prefix(tmp_path / "conda_bare", False)
    assert _pyenv(tmp_path) == ["venv", "/repo/.venv/bin/python"]
    assert _pyenv(tmp_path, CONDA_PREFIX=str(with_torch)) == ["conda", f"{with_torch}/bin/python"]
    assert _pyenv(tmp_path, CONDA_PREFIX=str(without)) == ["venv", "/repo/.venv/bin/python"]  # no torch there
    assert _pyenv(tmp_path, CONDA_PREFIX=str(with_torch), MARS_VENV="/v") == ["venv", "/v/bin/python"]


def test_main_sh_uses_the_chosen_interpreter():
    text = (REPO / "scripts" / "main.sh").read_text()
    assert ".venv/bin/python" not in text and ". scripts/pyenv.sh" in text and "-p device" in text
