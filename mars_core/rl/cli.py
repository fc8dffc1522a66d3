"""Command-line pieces shared by ``python -m mars_core.rl`` and the RL sanity scripts."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..config import RL_PRESETS, RLConfig
from ..device import add_device_arguments
from ..encoders.load import add_clap_argument, add_imagebind_argument


def base_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with ``--profile``, ``--preset``, ``--set FIELD=VALUE`` (repeatable), ``--threads``, ``--compile``,
    ``--device``, ``--allow-cpu`` (:mod:`mars_core.device`), ``--imagebind PATH`` and ``--clap DIR``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: $MARS_PROFILE or smoke)")
    p.add_argument("--preset", default="plus", choices=RL_PRESETS,
                   help="plus (ours), paper, or dense (plus rewarded by 64 segment SI-SDRs only)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override an RLConfig field of the preset (repeatable), e.g. --set lr=1e-4")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true",
                   help="run the U-Net trunk through torch.compile (mars_core.precision; default off): the rollout's "
                        "old-policy pass, the updates' forward when the whole network trains, and the supervised "
                        "start's training when it has to be trained; eager with a warning where compiling fails")
    return add_clap_argument(add_imagebind_argument(add_device_arguments(p)))


def parse_overrides(items: list[str]) -> dict:
    """``["lr=1e-4", "trainable=head"]`` -> ``{"lr": 1e-4, "trainable": "head"}``, typed like the
    RLConfig field; raises ``SystemExit`` (argparse style) for an unknown field or a bad value."""
    fields = {f.name: f for f in dataclasses.fields(RLConfig)}
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        default = getattr(RLConfig(), name)
        try:
            out[name] = text if isinstance(default, str) else type(default)(json.loads(text))
        except (ValueError, TypeError) as err:
            raise SystemExit(f"--set {item!r}: {text!r} is not a {type(default).__name__}") from err
    return out
