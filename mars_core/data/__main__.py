"""Command line: ``python -m mars_core.data build|info --profile P`` and ``import DATASET --root PATH``.

Examples::

    python -m mars_core.data build --profile smoke
    python -m mars_core.data build --profile cpu --root /some/dir --seed 1
    python -m mars_core.data build --profile cpu --timbre-soundfont /usr/share/sounds/sf2/OPL-3_FM_128M.sf2
    python -m mars_core.data info --profile smoke
    python -m mars_core.data import esc50 --root ~/ESC-50-master --profile cpu
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from ..config import PROFILE_NAMES, get_profile
from .manifest import benchmark_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.data", description="Build or describe the offline benchmark "
                                "(or import a dataset: python -m mars_core.data import --help).")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("build", "build (or reuse) the benchmark of a profile"), ("info", "summarise an existing build")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILE_NAMES)} (default: $MARS_PROFILE or smoke)")
        s.add_argument("--root", default=None, help="build directory (default: $MARS_DATA/benchmark/<profile>)")
        if name == "build":
            s.add_argument("--seed", type=int, default=None, help="build seed (default: the profile's data.seed)")
            s.add_argument("--system-root", action="append", default=None, dest="system_roots",
                           help="where Debian packages are unpacked/installed (repeatable; default: $MARS_SYSTEM_ROOTS "
                                "or $MARS_DATA/system then /)")
            s.add_argument("--timbre-soundfont", default=None, metavar="SF2",
                           help="render test_timbre from this SoundFont 2 file instead of the recipe's held-out one "
                                "(default folder: $MARS_DATA/benchmark/<profile>-timbre-<sha256 prefix>)")
            s.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["import"]:  # python -m mars_core.data import DATASET --root PATH: mars_core.data.importers
        from .importers import main as import_main

        return import_main(argv[1:])
    args = _parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        profile = get_profile(args.profile)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = benchmark_dir(profile.name, args.root)
    if args.command == "info":
        from .build import describe_build

        try:
            print(describe_build(out))
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    from .build import build_benchmark, describe_build
    from .sources import MaterialError

    t0 = time.perf_counter()
    try:
        out = build_benchmark(profile, root=args.root, seed=args.seed, progress=not args.quiet,
                              system_roots=args.system_roots, timbre_soundfont=args.timbre_soundfont)
    except (MaterialError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.quiet:
        print(describe_build(out))
    print(f"profile {profile.name}: done in {time.perf_counter() - t0:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
