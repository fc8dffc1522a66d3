"""What every command does first, once: threads, profile, device, ImageBind weights, and a line saying where it runs.

Used by ``python -m mars_core.supervised|rl|benchmark`` and the scripts built on
:func:`mars_core.rl.cli.base_parser` or :func:`mars_core.device.add_device_arguments`.
"""

from __future__ import annotations

import argparse

import torch

from .config import Profile, get_profile
from .device import describe_device, device_from_args
from .encoders.load import use_clap_argument, use_imagebind_argument
from .precision import describe_precision, set_compile


def start_command(args: argparse.Namespace) -> tuple[Profile, torch.device]:
    """Apply ``--threads`` (when the command has it and it is set), resolve ``--profile`` and ``--device``
    and ``--precision`` (a bad value exits like argparse does), apply ``--imagebind``, ``--clap`` and
    ``--compile``, print ``device: ..., precision: ...``; returns
    ``(profile, device)``."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    prof = get_profile(args.profile)
    device = device_from_args(args, prof.name)
    use_imagebind_argument(args.imagebind)
    set_compile(getattr(args, "compile", False))  # --compile, where the command has it
    use_clap_argument(getattr(args, "clap", None))  # the commands whose parser has --clap
    print(f"device: {describe_device(device)}, precision: {describe_precision(device)}", flush=True)
    return prof, device
