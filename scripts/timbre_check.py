"""Trained separators, unchanged, on a test_timbre split rendered from a soundfont of your own.

    python scripts/timbre_check.py --profile cpu --soundfont /usr/share/sounds/sf2/OPL-3_FM_128M.sf2
    python scripts/timbre_check.py --profile cpu --soundfont my.sf2 --checkpoint mine=path/to/separator.pt
    python scripts/timbre_check.py --profile cpu --soundfont my.sf2 --from-run figures/tables_cpu/run.json \
        --systems supervised "MARS-Sep dense" "supervised (continued)"

Builds (or reuses) the profile's benchmark with ``test_timbre`` rendered from ``--soundfont``
(``python -m mars_core.data build --timbre-soundfont``; train, val and test are the default build's), then scores
each ``--checkpoint NAME=PATH`` and each ``--systems`` of a benchmark ``--from-run`` record (default: the shipped
separator, as ``supervised``; systems named as the benchmark names them get its bootstrap against the supervised start
and against each control) on that split's random and hard
pairs with the reference systems (:func:`mars_core.benchmark.held_out.evaluate_checkpoints`; nothing is trained),
writes the benchmark's CSV files to ``--out`` and prints, per pair type and query, the mean SI-SDRi with its 95 %
interval and the SDR above the query-blind ``mixture / 2``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.benchmark.held_out import checkpoints_from_run, evaluate_checkpoints, held_out_table  # noqa: E402
from mars_core.benchmark.tables import PAIR_TYPES  # noqa: E402
from mars_core.config import get_profile  # noqa: E402
from mars_core.data.build import build_benchmark  # noqa: E402
from mars_core.encoders.minibind import load_minibind  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--soundfont", required=True, help="a SoundFont 2 (.sf2) file that renders test_timbre")
    p.add_argument("--checkpoint", action="append", default=None, metavar="NAME=PATH",
                   help="a separator checkpoint to score (repeatable; default: supervised=the shipped one)")
    p.add_argument("--from-run", default=None, metavar="RUN_JSON",
                   help="a benchmark run.json: score the checkpoints of its systems (those of --systems, default all)")
    p.add_argument("--systems", nargs="+", default=None, help="with --from-run: which of its systems")
    p.add_argument("--query-encoder", default=None, metavar="MINIBIND_PT",
                   help="a MiniBind checkpoint as the query encoder, read with its own config (default: the profile's)")
    p.add_argument("--root", default=None, help="build folder (default: $MARS_DATA/benchmark/<profile>-timbre-<sha>)")
    p.add_argument("--pairs", nargs="+", default=list(PAIR_TYPES), choices=list(PAIR_TYPES))
    p.add_argument("--n-items", type=int, default=None, help="mixtures per test set (default: the profile's)")
    p.add_argument("--no-judge", action="store_true", help="leave the judge's semantic scores out")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="results folder (default: runs/<profile>/timbre_check)")
    return p.parse_args(argv)


def checkpoints(specs: list[str] | None) -> dict[str, str] | None:
    if not specs:
        return None
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--checkpoint {spec!r}: expected NAME=PATH")
        out[name] = path
    return out


def main(argv=None) -> int:
    args = parse(argv)
    if args.systems and not args.from_run:
        raise SystemExit("--systems needs --from-run")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    build = build_benchmark(args.profile, root=args.root, timbre_soundfont=args.soundfont, progress=False)
    out = Path(args.out or Path("runs") / get_profile(args.profile).name / "timbre_check")
    chosen = checkpoints_from_run(args.from_run, args.systems) if args.from_run else {}
    chosen.update(checkpoints(args.checkpoint) or {})
    res = evaluate_checkpoints(args.profile, build, chosen or None, pair_types=args.pairs,
                               n_items=args.n_items, out=out, judge=None if args.no_judge else "auto", progress=False,
                               query_encoder=load_minibind(args.query_encoder) if args.query_encoder else None)
    table = held_out_table(res.summary)
    print(f"build {build} (test_timbre from {Path(args.soundfont).name}); results in {out}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:+.2f}"))
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
