"""Cost of one training step per profile size: steps per second and peak memory.

Every registered step (``STEPS``) is timed at every requested profile, each in a fresh
subprocess so that its peak memory is its own: on CPU the peak resident set size
(``resource.getrusage``; ``peak MB``) and its growth over the set-up (``step MB``: what
the step itself adds), on GPU ``torch.cuda.max_memory_allocated``. Inputs are synthetic
waveforms of the profile's segment length and random unit query embeddings, so no
benchmark build or encoder is needed; the step is everything a training step does after
the data loader: front end (STFT, warp, targets), forward, loss, backward, gradient
clipping, optimiser step.

A step is a factory ``make(profile, batch_mixtures, device) -> (step_fn, n_params)``;
register another one (the RL step) in ``STEPS`` and the table gains its rows and a
``x supervised`` column (its seconds per step over the supervised step's, same profile).

    python benchmarks/bench_train_step.py                       # smoke and cpu (full too on a GPU)
    python benchmarks/bench_train_step.py --profiles full --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mars_core.audio import FrontEnd  # noqa: E402
from mars_core.config import get_profile  # noqa: E402
from mars_core.separator import multi_query_logits, new_separator  # noqa: E402
from mars_core.supervised import make_optimizer  # noqa: E402
from mars_core.supervised.loss import mask_targets, weighted_bce  # noqa: E402


def synthetic_batch(profile, batch_mixtures: int, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random two-source mixtures and unit queries of the profile's sizes.

    Shape: ``sources (B, n_src, samples)``, ``mixture (B, samples)``, ``queries (B, n_src, D)``.
    """
    g = torch.Generator().manual_seed(seed)
    n_src, length, d = profile.data.n_sources, profile.audio.segment_samples, profile.separator.query_dim
    sources = 0.1 * torch.randn(batch_mixtures, n_src, length, generator=g)
    queries = torch.nn.functional.normalize(torch.randn(batch_mixtures, n_src, d, generator=g), dim=-1)
    return {"sources": sources.to(device), "mixture": sources.sum(1).to(device), "queries": queries.to(device)}


def supervised_step(profile, batch_mixtures: int, device) -> tuple[Callable[[], float], int]:
    """One supervised step (mars_core.supervised): front end, weighted BCE, backward, clip, Adam."""
    cfg = profile.supervised
    model = new_separator(profile, 0).to(device).train()
    opt, sched = make_optimizer(model, cfg)
    fe = FrontEnd(profile.audio)
    data = synthetic_batch(profile, batch_mixtures, device)

    def step() -> float:
        mix_w = fe.warp(fe.stft(data["mixture"]).abs())
        src_w = fe.warp(fe.stft(data["sources"]).abs())
        logits = multi_query_logits(model, torch.log(mix_w + 1e-10).unsqueeze(1), data["queries"])
        targets = mask_targets(src_w, mix_w.unsqueeze(1))
        flat = lambda x: x.reshape(-1, *x.shape[-2:])  # noqa: E731
        loss = weighted_bce(flat(logits), flat(targets), flat(mix_w.unsqueeze(1).expand_as(logits)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        return loss.item()  # synchronises a GPU

    return step, sum(p.numel() for p in model.parameters())


STEPS: dict[str, Callable] = {"supervised": supervised_step}
"""Registered steps; the RL issue adds ``"rl"``. Keys are the ``step`` column of the table."""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure(kind: str, profile_name: str, batch_mixtures: int | None, device: str, warmup: int, repeats: int) -> dict:
    """Time ``repeats`` steps after ``warmup`` ones; the median step and the memory peaks."""
    prof = get_profile(profile_name)
    bm = batch_mixtures or prof.supervised.batch_mixtures
    dev = torch.device(device)
    step, n_params = STEPS[kind](prof, bm, dev)
    base = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    s = times[len(times) // 2]
    row = {"step": kind, "profile": prof.name, "device": dev.type, "threads": torch.get_num_threads(),
           "items": bm * prof.data.n_sources, "params_M": round(n_params / 1e6, 2), "s_per_step": s,
           "steps_per_s": 1.0 / s, "items_per_s": bm * prof.data.n_sources / s}
    if dev.type == "cuda":
        row["peak_MB"] = torch.cuda.max_memory_allocated(dev) / 2**20
        row["step_MB"] = row["peak_MB"]
    else:
        row["peak_MB"] = _rss_mb()
        row["step_MB"] = row["peak_MB"] - base
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}; {os.cpu_count()} logical cores{gpu}; torch {torch.__version__}"


def table(rows: list[dict]):
    """Rows as a DataFrame with the ``x supervised`` ratio (same profile and device)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    ref = df[df["step"] == "supervised"].set_index(["profile", "device"])["s_per_step"]
    df["x_supervised"] = [r.s_per_step / ref.get((r.profile, r.device), float("nan")) for r in df.itertuples()]
    return df


def run_workers(script: str, profiles: list[str], kinds: list[str], args: argparse.Namespace) -> list[dict]:
    """Time each ``(profile, kind)`` in a fresh ``script --worker`` process (so peak memory is its own);
    the rows of those that succeeded (failures are printed to stderr)."""
    rows = []
    for prof in profiles:
        for kind in kinds:
            cmd = [sys.executable, script, "--worker", kind, prof, "--device", args.device, "--threads",
                   str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
            cmd += ["--batch", str(args.batch)] if args.batch else []
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"{kind} @ {prof} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    ap.add_argument("--profiles", nargs="+", default=["smoke", "cpu", "full"] if gpu else ["smoke", "cpu"])
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS), help="which steps to time")
    ap.add_argument("--batch", type=int, default=None,
                    help="mixtures per step (default: profile.supervised.batch_mixtures; items = 2 x this)")
    ap.add_argument("--device", default="cuda" if gpu else "cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--worker", nargs=2, metavar=("STEP", "PROFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(*args.worker, args.batch, args.device, args.warmup, args.repeats)))
        return 0
    rows = run_workers(__file__, args.profiles, args.steps, args)
    print(f"{machine()}; {args.threads} torch threads; median of {args.repeats} steps after {args.warmup} warm-up")
    print(table(rows).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
