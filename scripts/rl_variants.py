"""Train RL variants of the ``plus`` preset from the shipped supervised separator and print their val tables.

    python scripts/rl_variants.py --profile cpu --variant plus --variant entropy-only:advantage=none \\
        --variant seg64:reward_segments=64,segment_terms=signal [--seed 0 1 2]

Each ``NAME:field=value,...`` is ``rl_preset(profile, "plus")`` with those fields and ``preset=NAME`` (``plus``
alone: the preset itself; ``preset`` stays ``plus`` for any variant named ``plus``), trained (or loaded: runs are
cached by their config, so the benchmark reuses them) by :func:`mars_core.rl.trainer.load_or_train_rl`. Prints, per
variant and seed, the validation history's start and best SDR / SI-SDRi / semantic score and the training wall time;
writes them to ``--out`` (CSV). Selection of a preset is done on these val numbers, never on test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.commands import start_command  # noqa: E402
from mars_core.config import RLConfig, rl_preset  # noqa: E402
from mars_core.device import add_device_arguments  # noqa: E402
from mars_core.encoders.load import add_imagebind_argument  # noqa: E402
from mars_core.rl.trainer import load_or_train_rl  # noqa: E402

TYPES = {f.name: f.type for f in fields(RLConfig)}


def parse_variant(text: str, base: RLConfig) -> tuple[str, RLConfig]:
    """``NAME[:field=value,...]`` -> ``(NAME, config)``; values are cast to the field's type."""
    name, _, spec = text.partition(":")
    changes = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in TYPES:
            raise SystemExit(f"--variant {text!r}: RLConfig has no field {key!r}")
        kind = type(getattr(base, key))
        changes[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return name, replace(base, preset=name, **changes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--variant", action="append", required=True, help="NAME[:field=value,...] (repeatable)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="RL seeds (default 0)")
    p.add_argument("--out", default=None, help="CSV of the table (default runs/<profile>/rl_variants.csv)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = add_imagebind_argument(add_device_arguments(p)).parse_args(argv)
    prof, device = start_command(args)
    rows = []
    for text in args.variant:
        name, cfg = parse_variant(text, rl_preset(prof, "plus"))
        for seed in args.seed:
            t0 = time.time()
            _, h = load_or_train_rl(prof, "plus", config=replace(cfg, seed=seed), device=device, progress=False)
            best = h["val_step"].index(h["best_step"]) if h["best_step"] in h["val_step"] else -1
            row = {"variant": name, "seed": seed, "val_sdr_start": h["val_sdr"][0], "val_sdr_best": h["val_sdr"][best],
                   "best_step": h["best_step"], "val_sdr_last": h["val_sdr"][-1],
                   "val_si_sdri_start": h["val_si_sdri"][0], "val_si_sdri_best": h["val_si_sdri"][best],
                   "val_semantic_start": h["val_semantic"][0], "val_semantic_best": h["val_semantic"][best],
                   "wall_s": round(h.get("wall_s", float("nan")), 1), "this_call_s": round(time.time() - t0, 1),
                   "config": text}
            rows.append(row)
            print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out or Path("runs") / prof.name / "rl_variants.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.drop(columns="config").round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
