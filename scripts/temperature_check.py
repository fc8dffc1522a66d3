"""How much of a change could a logit temperature alone make? The oracle temperature sweep on one test set.

    python scripts/temperature_check.py --profile cpu --split test_timbre [--pairs hard] [--checkpoint sep.pt]

Scales the separator's logits, ``P = sigmoid(z / T)`` (:func:`mars_core.evaluation.query_diagnostics.temperature_scaled`:
exact, both fusions are linear in ``scale`` and ``bias``), for each ``--temperatures`` T and scores the benchmark's
mixtures of ``--split`` / ``--pairs`` (:func:`mars_core.evaluation.evaluate.load_eval_set`, every query modality).
T = 1 is the checkpoint as it is (the shipped one is already calibrated on ``val``). Picking T on the test set reads
its clean sources, so the best row is an *oracle*: an upper bound on what a method that only softens or sharpens the
masks could gain there, the control an adaptation result that moves SIR and SAR in opposite directions needs.
Prints SI-SDRi and SDR (dB) per modality and their mean per T, and writes ``temperature_SPLIT_PAIRS.csv`` to
``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.commands import start_command  # noqa: E402
from mars_core.device import add_device_arguments  # noqa: E402
from mars_core.encoders.load import add_imagebind_argument, load_query_encoder  # noqa: E402
from mars_core.evaluation import query_diagnostics as qd  # noqa: E402
from mars_core.evaluation.evaluate import load_eval_set  # noqa: E402
from mars_core.queries import load_or_build_query_bank  # noqa: E402
from mars_core.supervised import load_separator, shipped_separator  # noqa: E402


def temperature_table(sweep):
    """Mean SI-SDRi and SDR per temperature (rows) and modality (columns), with each metric's ``mean`` over the
    modalities and its ``change`` from T = 1 (which ``sweep`` must hold). Columns ``(metric, modality)``."""
    if not (sweep["temperature"] == 1.0).any():
        raise ValueError("the sweep has no T = 1 row to compare with")
    table = sweep.pivot_table(index="temperature", columns="modality", values=["si_sdri", "sdr"], aggfunc="mean")
    for metric in ("si_sdri", "sdr"):
        table[(metric, "mean")] = table[metric].mean(axis=1)
        table[(metric, "change")] = table[(metric, "mean")] - table.loc[1.0, (metric, "mean")]
    return table.sort_index(axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    ap.add_argument("--checkpoint", default=None, help="separator checkpoint (default: the profile's shipped one)")
    ap.add_argument("--split", default="test_timbre", choices=["val", "test", "test_timbre"])
    ap.add_argument("--pairs", default="random", choices=["random", "hard"])
    ap.add_argument("--n", type=int, default=200, help="mixtures (default 200, the benchmark's)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.8, 1.0, 1.25, 1.5, 2.0])
    ap.add_argument("--threads", type=int, default=None)
    add_device_arguments(ap)
    add_imagebind_argument(ap)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default runs/<profile>/temperature)")
    args = ap.parse_args(argv)
    if any(not t > 0 for t in args.temperatures):
        raise SystemExit(f"--temperatures must be > 0, got {args.temperatures}")
    prof, _ = start_command(args)
    t0 = time.time()
    model = load_separator(args.checkpoint or shipped_separator(prof))[0]
    bank = load_or_build_query_bank(load_query_encoder(prof), prof, progress=False)
    es = load_eval_set(prof, args.split, args.n, hard_pairs=args.pairs == "hard")
    sweep = qd.temperature_sweep(model, prof, bank, es, sorted(set(args.temperatures) | {1.0}))
    table = temperature_table(sweep)
    print(f"{args.split}/{args.pairs}, {len(es)} mixtures: SI-SDRi and SDR (dB) against the logit temperature "
          f"(P = sigmoid(z / T); T = 1: the checkpoint; 'change': the mean over queries minus T = 1's)")
    print(table.round(2).to_string())
    out = args.out or Path("runs") / prof.name / "temperature"
    out.mkdir(parents=True, exist_ok=True)
    flat = table.copy()
    flat.columns = [f"{metric}_{m}" for metric, m in flat.columns]
    flat.reset_index().to_csv(out / f"temperature_{args.split}_{args.pairs}.csv", index=False)
    print(f"wall time {time.time() - t0:.0f} s; wrote {out / f'temperature_{args.split}_{args.pairs}.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
