"""Fit one logit temperature of a trained separator on ``val`` and fold it into its weights.

    python scripts/calibrate_separator.py --profile cpu --checkpoint runs/cpu/separator.pt --out checkpoints/separator_cpu.pt

``P = sigmoid(z / T)``; both fusions are linear in the separator's ``scale`` and ``bias``, so dividing those two
parameters by ``T`` is the calibrated model exactly (:func:`mars_core.evaluation.query_diagnostics.temperature_scaled`).
``T`` is the grid value with the highest mean SI-SDRi over the four evaluation queries (text, image, audio, omni)
on the first ``--n-val`` val mixtures (docs/method.md section 3). The output checkpoint keeps the run config and
history of the input and adds ``history["calibration"]``: the grid, the val SI-SDRi table and the chosen ``T``
(``T = 1`` leaves the weights unchanged). Written atomically.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.commands import start_command  # noqa: E402
from mars_core.device import add_device_arguments  # noqa: E402
from mars_core.encoders.load import add_imagebind_argument, load_query_encoder  # noqa: E402
from mars_core.evaluation import query_diagnostics as qd  # noqa: E402
from mars_core.evaluation.evaluate import load_eval_set  # noqa: E402
from mars_core.queries import load_or_build_query_bank  # noqa: E402
from mars_core.supervised import load_separator, save_separator  # noqa: E402

TEMPERATURES = (0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--checkpoint", required=True, help="the trained separator .pt")
    p.add_argument("--out", required=True, help="where the calibrated separator is written")
    p.add_argument("--n-val", type=int, default=100, help="val mixtures for the fit (default 100)")
    return add_imagebind_argument(add_device_arguments(p)).parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    t0 = time.time()
    prof, device = start_command(args)
    encoder = load_query_encoder(prof).to(device)
    bank = load_or_build_query_bank(encoder, prof, progress=False)
    model, blob = load_separator(args.checkpoint, map_location=device)
    if "calibration" in blob.get("history", {}):
        raise SystemExit(f"{args.checkpoint} is already calibrated (T = {blob['history']['calibration']['temperature']})")
    val = load_eval_set(prof, "val", args.n_val)
    sweep = qd.temperature_sweep(model, prof, bank, val, TEMPERATURES)
    t_best = qd.best_temperature(sweep)
    table = sweep.pivot_table(index="temperature", columns="modality", values="si_sdri", aggfunc="mean")
    table["mean"] = table.mean(axis=1)
    print(f"val SI-SDRi (dB) vs T, {len(val)} mixtures:\n{table.round(3).to_string()}\nbest T = {t_best:g}")
    calibrated = qd.temperature_scaled(model, t_best).cpu()
    history = copy.deepcopy(blob["history"])
    history["calibration"] = {
        "temperature": float(t_best), "grid": list(TEMPERATURES), "n_val": len(val), "metric": "si_sdri",
        "val_si_sdri": {str(t): {m: float(v) for m, v in row.items()} for t, row in table.iterrows()},
        "command": "python scripts/calibrate_separator.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "wall_s": round(time.time() - t0, 1),
    }
    save_separator(args.out, calibrated, run_cfg=blob["config"], history=history)
    print(f"T = {t_best:g} folded into scale and bias -> {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
