"""Two separators, each with its own query encoder, on the same test mixtures: the paired change and its interval.

    python scripts/paired_checkpoints.py --profile cpu --checkpoint runs/cpu/my_separator.pt \\
        [--query-encoder my_minibind.pt] [--baseline old_separator.pt --baseline-query-encoder old_minibind.pt]

Scores the baseline (``--baseline``, default the shipped separator; queried by ``--baseline-query-encoder``, default
the profile's query encoder) and the system (``--checkpoint``, queried by ``--query-encoder``; each encoder a MiniBind
checkpoint read with its own config) unchanged on the
profile's build (:func:`mars_core.benchmark.held_out.evaluate_checkpoints`: the same seeded mixtures for both), then
prints the benchmark's paired bootstrap (:func:`mars_core.benchmark.bootstrap.paired_bootstrap`) of the system's
change in ``--metric`` per test set, pair type and query. Nothing is trained.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.benchmark.bootstrap import paired_bootstrap  # noqa: E402
from mars_core.benchmark.held_out import evaluate_checkpoints  # noqa: E402
from mars_core.benchmark.tables import PAIR_TYPES, SPLITS  # noqa: E402
from mars_core.data.manifest import benchmark_dir  # noqa: E402
from mars_core.encoders.minibind import load_minibind  # noqa: E402
from mars_core.supervised.store import shipped_separator  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--baseline", default=None, help="baseline separator (default: the shipped one)")
    p.add_argument("--checkpoint", required=True, help="the separator to compare")
    p.add_argument("--query-encoder", default=None, help="its MiniBind query encoder (default: the profile's)")
    p.add_argument("--baseline-query-encoder", default=None,
                   help="the baseline's MiniBind query encoder (default: the profile's)")
    p.add_argument("--metric", default="si_sdri")
    p.add_argument("--n-items", type=int, default=None)
    args = p.parse_args(argv)
    build = benchmark_dir(args.profile)
    kw = dict(splits=SPLITS, pair_types=PAIR_TYPES, n_items=args.n_items, judge=None, progress=False)
    base_enc = load_minibind(args.baseline_query_encoder) if args.baseline_query_encoder else None
    base = evaluate_checkpoints(args.profile, build, {"baseline": args.baseline or shipped_separator(args.profile)},
                                query_encoder=base_enc, **kw)
    enc = load_minibind(args.query_encoder) if args.query_encoder else None
    new = evaluate_checkpoints(args.profile, build, {"system": args.checkpoint}, query_encoder=enc, **kw)
    items = pd.concat([base.items, new.items[new.items["system"] == "system"]], ignore_index=True)
    boot = paired_bootstrap(items, baseline="baseline", systems=["system"], metrics=(args.metric,))
    cols = ["split", "pairs", "modality", "mean_diff", "ci_low", "ci_high", "n"]
    print(f"change of {args.metric}, {args.checkpoint} against {args.baseline or shipped_separator(args.profile)}:")
    print(boot[cols].to_string(index=False, float_format=lambda v: f"{v:+.2f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
