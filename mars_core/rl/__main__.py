"""Command line: fine-tune the profile's separator with RL and print the val table before and after.

    python -m mars_core.rl --profile cpu --preset plus
    python -m mars_core.rl --profile cpu --preset paper --unaligned --steps 50
    python -m mars_core.rl --profile cpu --set trainable=all --set lr=1e-4   # any RLConfig field

Several processes (one per GPU, or ``gloo`` ranks on a CPU) train the same run (:mod:`mars_core.distributed`; the
preset's ``batch_mixtures`` is the global batch, split over the ranks)::

    torchrun --nproc_per_node 2 -m mars_core.rl --profile smoke --device cpu

Rank 0 builds the caches first, then the others read them; rank 0 alone validates, writes the files and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import pandas as pd

from .. import distributed
from ..commands import start_command
from ..config import rl_preset
from ..device import to_device
from ..encoders.load import load_judge, load_query_encoder
from ..evaluation.evaluate import compact_table, evaluate_all, results_table
from ..queries import load_or_build_query_bank
from ..supervised import load_or_train
from .cli import base_parser, parse_overrides
from .config import check_config
from .trainer import check_ranks, load_or_train_rl


def _parser() -> argparse.ArgumentParser:
    p = base_parser(__doc__.split("\n")[0], prog="python -m mars_core.rl")
    p.add_argument("--unaligned", action="store_true", help="reward with the un-aligned encoder (the paper's ablation)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--retrain", action="store_true", help="train afresh even if a matching run exists")
    p.add_argument("--no-eval", action="store_true", help="skip the val table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.device = distributed.local_device(args.device)  # under torchrun with CUDA: this rank's GPU
    prof, device = start_command(args)
    cfg = rl_preset(prof, args.preset)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    cfg = replace(cfg, **parse_overrides(args.set))

    def check() -> None:  # before the encoders load: a bad value or a batch the ranks cannot share is named at once
        check_config(cfg)
        check_ranks(cfg)

    return distributed.run_command(_parser(), device, check, lambda: _train_and_report(args, prof, cfg, device))


def _train_and_report(args: argparse.Namespace, prof, cfg, device) -> int:
    t0 = time.perf_counter()
    model, history = load_or_train_rl(prof, args.preset, aligned=not args.unaligned, retrain=args.retrain,
                                      config=cfg, device=device)
    if not distributed.is_main():
        return 0
    print(f"RL separator ({args.preset}, {'un-aligned' if args.unaligned else 'aligned'} reward) from "
          f"{history['source']}: best step {history['best_step']} (val SDR {history['best_sdr']:.2f} dB, start "
          f"{history['val_sdr'][0]:.2f} dB), training wall time {history['wall_s']:.0f} s, this call "
          f"{time.perf_counter() - t0:.0f} s")
    if not args.no_eval:
        bank = load_or_build_query_bank(load_query_encoder(prof), prof)
        baseline, _ = load_or_train(prof, bank=bank, device=device)
        judge = to_device(load_judge(prof), device)
        before = evaluate_all(baseline, prof, bank, split="val", judge=judge, system="supervised")
        after = evaluate_all(model, prof, bank, split="val", judge=judge, system=f"rl-{args.preset}",
                             references=False)
        print(compact_table(results_table(pd.concat([before, after], ignore_index=True))).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
