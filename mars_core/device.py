"""Where a run computes: ``--device auto|cpu|cuda[:N]`` -> a :class:`torch.device`.

Every command and notebook takes one device string and resolves it here once; the run then
creates its models, query banks and tensors on that device and converts to CPU only where a
number is printed, plotted or written (metrics, tables, figures).

    python -m mars_core.supervised --profile full --device cuda:1
    python -m mars_core.rl --profile smoke --device cpu

``full`` is sized for a GPU: without one it stops at once (hours of CPU time otherwise) unless
``allow_cpu=True`` (``--allow-cpu``).
"""

from __future__ import annotations

import argparse
import re

import torch

from .precision import PRECISIONS, PrecisionError, apply_precision

DEVICE_CHOICES = "auto|cpu|cuda[:N]"
_SPEC = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


class DeviceError(ValueError):
    """A device string that cannot be used on this machine (the message says what to do)."""


def resolve_device(spec: str | torch.device | None = "auto", profile: str | None = None,
                   allow_cpu: bool = False) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> the device.

    Args:
        spec: the device string (``None`` means ``"auto"``) or a ``torch.device``.
        profile: the profile's name; ``"full"`` resolved to a CPU raises unless ``allow_cpu``.
        allow_cpu: run ``full`` on a CPU anyway.
    Raises:
        DeviceError: an unknown string, CUDA asked for on a machine without it, an index
            beyond ``torch.cuda.device_count()``, or ``full`` on a CPU without ``allow_cpu``.
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    m = _SPEC.match(text)
    if m is None:
        raise DeviceError(f"--device {spec!r}: expected {DEVICE_CHOICES} (e.g. cuda:0)")
    if text == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif text == "cpu":
        dev = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {text}: CUDA is not available on this machine "
                              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu or auto")
        n = torch.cuda.device_count()
        index = int(m.group(2)) if m.group(2) is not None else None
        if index is not None and index >= n:
            raise DeviceError(f"--device {text}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
        dev = torch.device("cuda", index) if index is not None else torch.device("cuda")
    if profile == "full" and dev.type == "cpu" and not allow_cpu:
        raise DeviceError("profile 'full' is sized for a GPU and no GPU is in use here "
                          f"(--device {text}); pass --allow-cpu (allow_cpu=True) to run it on the CPU anyway, "
                          "or use --profile cpu")
    return dev


def add_device_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--device`` and ``--allow-cpu`` to a command's parser (the same words everywhere)."""
    p.add_argument("--device", default="auto", metavar=DEVICE_CHOICES,
                   help="where to compute: auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--allow-cpu", action="store_true", help="let the 'full' profile run without a GPU")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 autocast + TF32 on a CUDA GPU with bf16, fp32 elsewhere; fp32: no autocast, no "
                        "TF32; bf16: as auto but an error where bf16 is missing (mars_core.precision; default auto)")
    return p


def device_from_args(args: argparse.Namespace, profile: str | None) -> torch.device:
    """:func:`resolve_device` of a parsed command line, and its ``--precision`` applied to the process
    (:func:`mars_core.precision.apply_precision`); a bad value exits like argparse does."""
    try:
        dev = resolve_device(args.device, profile, allow_cpu=args.allow_cpu)
        apply_precision(getattr(args, "precision", "auto"), dev)
        return dev
    except (DeviceError, PrecisionError) as err:
        raise SystemExit(f"error: {err}") from err


def to_device(module, device: torch.device | str):
    """``module.to(device)`` for a :class:`torch.nn.Module`; anything else (``None`` for a missing
    judge, a stand-in) is returned unchanged."""
    return module.to(device) if isinstance(module, torch.nn.Module) else module


def describe_device(dev: torch.device) -> str:
    """One line for logs: ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (4 threads)``."""
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{dev.type} ({torch.get_num_threads()} threads)" if dev.type == "cpu" else str(dev)
