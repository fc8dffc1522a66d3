"""``python -m mars_core.supervised``: train (or find) the supervised separator and print its test table.

Writes ``final.pt`` in the run directory and, with ``--out``, a copy::

    python -m mars_core.supervised --profile cpu --out checkpoints/separator_cpu.pt
    python -m mars_core.supervised --profile full --workers 8 --compile   # GPU: mixtures read by 8 workers

Several processes (one per GPU, or ``gloo`` ranks on a CPU) train the same run through DDP
(:mod:`mars_core.distributed`; the profile's ``batch_mixtures`` is split over the ranks)::

    torchrun --nproc_per_node 2 -m mars_core.supervised --profile smoke --device cpu

Rank 0 builds the query bank first, then the others read it; rank 0 alone writes the files and prints.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path


from .. import distributed
from ..commands import start_command
from ..device import add_device_arguments, to_device
from ..encoders.load import add_clap_argument, add_imagebind_argument, load_judge, load_query_encoder
from ..evaluation.evaluate import evaluate_all, results_table
from ..queries import load_or_build_query_bank
from .store import load_or_train, save_separator
from .trainer import check_config, run_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mars_core.supervised", description="Supervised mix-and-separate training of the query-conditioned separator.")
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: $MARS_PROFILE or smoke)")
    p.add_argument("--steps", type=int, default=None, help="override profile.supervised.steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="also copy the trained separator here (e.g. checkpoints/separator_cpu.pt)")
    p.add_argument("--retrain", action="store_true", help="train afresh even if a matching run exists")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split table")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="DataLoader worker processes reading the training mixtures (default: the profile's "
                        "num_workers, 0 = in this process); the same mixtures, so the same weights, for any N")
    p.add_argument("--compile", action="store_true",
                   help="run the separator's training forward through torch.compile (default off; eager with a "
                        "warning where compiling fails)")
    return add_clap_argument(add_imagebind_argument(add_device_arguments(p)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.device = distributed.local_device(args.device)  # under torchrun with CUDA: this rank's GPU
    prof, device = start_command(args)
    cfg = prof.supervised if args.steps is None else replace(prof.supervised, steps=args.steps)
    cfg = cfg if args.workers is None else replace(cfg, num_workers=args.workers)

    def check() -> None:  # before the encoders load: a bad value is named at once
        check_config(cfg)
        distributed.part(cfg.batch_mixtures)  # the ranks share the batch evenly

    return distributed.run_command(_parser(), device, check, lambda: _train_and_report(args, prof, cfg, device))


def _train_and_report(args: argparse.Namespace, prof, cfg, device) -> int:
    with distributed.main_first():  # rank 0 builds the query bank, the other ranks then read it
        encoder = to_device(load_query_encoder(prof), device)
        bank = load_or_build_query_bank(encoder, prof, rebuild=args.retrain and distributed.is_main())
    t0 = time.perf_counter()
    model, history = load_or_train(prof, cfg, bank=bank, retrain=args.retrain, device=device)
    if not distributed.is_main():
        return 0
    print(f"separator from {history['source']}: best step {history['best_step']} (val SDR "
          f"{history['best_sdr']:.2f} dB), training wall time {history['wall_s']:.0f} s, "
          f"this call {time.perf_counter() - t0:.0f} s")
    if args.out:
        save_separator(args.out, model, run_cfg=run_config(prof, cfg, bank),
                       history={k: v for k, v in history.items() if k != "source"})
        print(f"-> {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
    if not args.no_eval:
        table = results_table(evaluate_all(model, prof, bank, split="test", judge=to_device(load_judge(prof), device)))
        print(table.to_string(index=False))
    return 0

