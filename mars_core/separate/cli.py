"""Separate your own audio file with a text, image or audio query.

The command line ``python -m mars_core.separate`` (every argparse line of the command is here); the
first line of this docstring is its ``--help`` description."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from ..config import PROFILE_NAMES
from ..device import add_device_arguments
from .files import SeparationInputError
from .query import Query
from .run import DEFAULT_PROFILE, separate


class _QueryAction(argparse.Action):
    """Collect ``--text``, ``--image`` and ``--audio`` in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        found = list(getattr(namespace, "queries", None) or [])
        found.append((self.dest, values))
        namespace.queries = found


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.separate", description=__doc__.split("\n")[0])
    p.add_argument("mix", help="the mixture: WAV, FLAC or OGG, any rate, mono or multi-channel, any length")
    for kind, what in (("text", "a text query, e.g. 'a violin'"), ("image", "an image file as the query"),
                       ("audio", "an audio file of the sound to extract")):
        p.add_argument(f"--{kind}", dest=kind, action=_QueryAction, metavar="TEXT" if kind == "text" else "PATH",
                       help=f"{what}; repeat for several queries (one output file each)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILE_NAMES, help="smoke, cpu or full (default cpu: shipped separator)")
    p.add_argument("--checkpoint", default=None, help="separator checkpoint (default: the shipped one)")
    p.add_argument("--out", default=None, help="output file (several queries: its stem and suffix name every output)")
    add_device_arguments(p)
    p.add_argument("--residual", action="store_true", help="also write mixture minus the sum of the estimates")
    p.add_argument("--batch-size", type=int, default=4, help="segments per model call (default 4)")
    p.set_defaults(queries=[])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit status (2 for bad input, with a one-line message)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.queries:
        parser.error("give at least one query: --text TEXT, --image PATH or --audio PATH")
    t0 = time.perf_counter()
    try:
        written = separate(args.mix, [Query(k, v) for k, v in args.queries], profile=args.profile,
                           checkpoint=args.checkpoint, out=args.out, device=args.device, allow_cpu=args.allow_cpu,
                           residual=args.residual,
                           batch_size=args.batch_size, progress=sys.stderr.isatty())
    except SeparationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, path in written.items():
        print(f"{key}: {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
