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
:func:`~mars_core.benchmark.bootstrap.bootstrap_mean_ci`). Nothing is trained or separated: the items are read.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.benchmark.bootstrap import bootstrap_mean_ci  # noqa: E402

KEY_COLUMN = {"image": "query_image_id", "text": "query_text"}
"""The items.csv column that names each item's query, per modality."""


def placement_table(items: pd.DataFrame, nearest: Mapping[str, str], systems: Sequence[str],
                    baseline: str = "supervised", modality: str = "image", metric: str = "sdr",
                    pairs: str = "random") -> pd.DataFrame:
    """Per system, split and placement: ``n``, the baseline's mean ``si_sdri`` and the mean paired change of
    ``metric`` (system - baseline, matched by split and item) with its bootstrap interval.

    ``nearest``: query key -> the class it reads as. An item whose query key is not in ``nearest`` is an error;
    an item without a value of ``metric`` for the system or the baseline (a skipped item) is left out of ``n``.

    Raises:
        ValueError: an unknown modality, a system or the baseline without rows, or a query missing from ``nearest``.
    """
    if modality not in KEY_COLUMN:
        raise ValueError(f"modality must be one of {sorted(KEY_COLUMN)}, got {modality!r}")
    rows = items[(items["modality"] == modality) & (items["pairs"] == pairs)]
    base = rows[rows["system"] == baseline].set_index(["split", "item"])
    if base.empty:
        raise ValueError(f"no {modality} rows of {baseline!r} ({pairs} pairs) in the items")
    missing = sorted(set(base[KEY_COLUMN[modality]]) - set(nearest))
    if missing:
        raise ValueError(f"{len(missing)} {modality} queries have no nearest class, e.g. {missing[0]!r}")
    placed = pd.Series([nearest[k] == t for k, t in zip(base[KEY_COLUMN[modality]], base["target"])],
                       index=base.index).map({True: "target", False: "other"})
    out = []
    for system in systems:
        sys_rows = rows[rows["system"] == system].set_index(["split", "item"])
        if sys_rows.empty:
            raise ValueError(f"no {modality} rows of {system!r} ({pairs} pairs) in the items")
        change = (sys_rows[metric] - base[metric]).dropna()
        keys = [change.index.get_level_values("split"), placed.loc[change.index]]
        for (split, where), idx in change.groupby(keys).groups.items():
            mean, lo, hi = bootstrap_mean_ci(change.loc[idx].to_numpy())
            out.append({"system": system, "split": split, "placement": where, "n": len(idx),
                        "baseline_si_sdri": float(base.loc[idx, "si_sdri"].mean()),
                        f"{metric}_change": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out)


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
    from mars_core.data.manifest import benchmark_dir
    from mars_core.encoders.load import load_query_encoder
    from mars_core.evaluation.query_diagnostics import nearest_reference_class
    from mars_core.queries import load_or_build_query_bank

    build = benchmark_dir(args.profile)
    bank = load_or_build_query_bank(load_query_encoder(args.profile), args.profile, build_dir=build, progress=False)
    nearest = nearest_reference_class(bank, build, args.modality)
    table = placement_table(pd.read_csv(args.items), nearest, args.systems, args.baseline, args.modality,
                            args.metric, args.pairs)
    print(table.round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
