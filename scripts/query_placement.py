"""Where a system gains or loses against a baseline, split by whether each item's query reads as its target.

    python scripts/query_placement.py --profile cpu --items runs/cpu/dense_all/items.csv --systems dense pathwise-all
    python scripts/query_placement.py --profile cpu --items runs/cpu/benchmark/items.csv --systems "MARS-Sep dense" \\
        --modality text

For every item of a benchmark run (its ``items.csv``) asked with a ``--modality`` query (``image``: the item's
``query_image_id``; ``text``: its ``query_text``), the query's nearest training class
(:func:`mars_core.evaluation.query_diagnostics.nearest_reference_class`, on the profile's query encoder and its
cached bank) is compared with the item's target: placement ``target`` when they agree, ``other`` otherwise. Prints,
per system, split and placement, the number of items, the baseline's mean SI-SDRi and the system's mean change of
``--metric`` against the baseline with its 95 % paired bootstrap interval (the benchmark's
:func:`~mars_core.benchmark.bootstrap.bootstrap_mean_ci`; :mod:`mars_core.benchmark.placement`). Nothing is trained or
separated: the items are read.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.benchmark.placement import KEY_COLUMN, query_placement  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--items", required=True, help="items.csv of a benchmark run")
    p.add_argument("--systems", nargs="+", required=True, help="systems to compare with the baseline")
    p.add_argument("--baseline", default="supervised")
    p.add_argument("--modality", default="image", choices=sorted(KEY_COLUMN))
    p.add_argument("--metric", default="sdr", help="items.csv column whose change is reported (default sdr)")
    p.add_argument("--pairs", default="random", choices=("random", "hard"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    from mars_core.encoders.load import load_query_encoder
    from mars_core.queries import load_or_build_query_bank

    bank = load_or_build_query_bank(load_query_encoder(args.profile), args.profile, progress=False)
    table = query_placement(pd.read_csv(args.items), bank, None, args.profile, args.systems, args.modality,
                            baseline=args.baseline, metric=args.metric, pairs=args.pairs)
    print(table.round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
