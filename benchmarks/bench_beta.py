"""Beta mask sampling: torch's own sampler against the vectorised Marsaglia-Tsang sampler.

Times ``Beta(1 + kappa P, 1 + kappa (1 - P))`` draws for every bin of a step's masks, at the
``cpu`` size (B*G = 8 items x 4 samples, 128 x 128 bins) and the ``full`` size (B*G = 128 items x 8
samples, 256 x 256 bins), with three samplers:

* ``torch_beta``: ``torch.distributions.Beta(alpha, beta).sample()`` (one Dirichlet call);
* ``torch_gamma``: ``X / (X + Y)`` with ``X, Y`` from ``torch._standard_gamma`` (what
  :func:`mars_core.rl.policy.sample_beta` does now);
* ``marsaglia_tsang``: the vectorised rejection sampler the project used before (kept here only
  as the comparison: rounds of ``randn``/``rand`` over the whole tensor).

``ratio`` is the Marsaglia-Tsang time over the torch sampler's (above 1: torch is faster). The best
of ``--repeats`` runs is reported (the machine is shared). On 2026-12-07 (torch 2.13.0+cpu, one thread)
it read 0.45 at the cpu size and 1.19 at the full size. The full size takes about 270 MB per
tensor and most of the run's minute; ``--sizes cpu`` skips it.

    OMP_NUM_THREADS=1 python benchmarks/bench_beta.py
    python benchmarks/bench_beta.py --sizes cpu --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

SIZES = {"cpu": (8 * 4, 128, 128), "full": (128 * 8, 256, 256)}
"""Masks per step (items x G) and bins (F, T) of each profile."""


def marsaglia_tsang_gamma(shape: torch.Tensor, max_rounds: int = 32) -> torch.Tensor:
    """Gamma(shape, 1) for ``shape >= 1``: accept ``d v`` (``d = a - 1/3``, ``v = (1 + x / sqrt(9 d))^3``)
    when ``log u < x^2 / 2 + d - d v + d log v``; rejected elements are drawn again."""
    d = shape - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    out = torch.empty_like(shape)
    todo = None
    for _ in range(max_rounds):
        dd, cc = (d, c) if todo is None else (d.reshape(-1)[todo], c.reshape(-1)[todo])
        x = torch.randn_like(dd)
        v = torch.addcmul(torch.ones_like(dd), cc, x).pow_(3)
        u = torch.rand_like(dd)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + dd - dd * v + dd * torch.log(v.clamp_min(1e-30)))
        if todo is None:
            out = torch.where(ok, dd * v, out)
            todo = (~ok).reshape(-1).nonzero().squeeze(1)
        else:
            out.view(-1)[todo[ok]] = (dd * v)[ok]
            todo = todo[~ok]
        if todo.numel() == 0:
            return out
    out.view(-1)[todo] = torch._standard_gamma(shape.reshape(-1)[todo])
    return out


SAMPLERS = {
    "torch_beta": lambda a, b: torch.distributions.Beta(a, b).sample(),
    "torch_gamma": lambda a, b: (lambda x, y: x / (x + y))(torch._standard_gamma(a), torch._standard_gamma(b)),
    "marsaglia_tsang": lambda a, b: (lambda x, y: x / (x + y))(marsaglia_tsang_gamma(a), marsaglia_tsang_gamma(b)),
}


def best_time(fn, a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """Best wall-clock seconds of ``fn(a, b)`` over ``repeats`` runs (after one warm-up below 10^7 elements;
    a large tensor is its own warm-up)."""
    if a.numel() < 10**7:
        fn(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(a, b)
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["cpu", "full"], choices=list(SIZES))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kappa", type=float, default=30.0)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kappa {args.kappa:g}, best of {args.repeats}")
    print(f"{'size':>5} {'elements':>10} " + " ".join(f"{k:>16}" for k in SAMPLERS) + f" {'ratio':>7}")
    with torch.no_grad():
        for name in args.sizes:
            P = torch.rand(SIZES[name])
            a, b = 1.0 + args.kappa * P, 1.0 + args.kappa * (1.0 - P)
            t = {k: best_time(fn, a, b, args.repeats) for k, fn in SAMPLERS.items()}
            ratio = t["marsaglia_tsang"] / min(t["torch_beta"], t["torch_gamma"])
            print(f"{name:>5} {P.numel():>10} " + " ".join(f"{t[k]:>15.4f}s" for k in SAMPLERS) + f" {ratio:>7.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
