"""Time batched BSS Eval (mars_core.metrics) against per-item mir_eval and museval.

Same data for every method: ``--items`` two-source items of ``--seconds`` s at ``--sr`` Hz
(target and interferer are band-limited noises; the estimate is the target plus a filtered
leak of the interferer and white noise at varied levels). Prints wall-clock seconds, the
per-item/batched ratio, and the largest disagreement in dB (target row only).

    python benchmarks/bench_metrics.py                 # 100 items of 4 s at 8 kHz
    python benchmarks/bench_metrics.py --baseline-items 20   # extrapolate the slow baselines
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.signal as sps

from mars_core.metrics import bss_eval


def load_museval_metrics():
    """``museval.metrics`` without ``museval/__init__`` (which imports musdb -> stempeg -> ffmpeg)."""
    try:
        return importlib.import_module("museval.metrics")
    except Exception:  # noqa: BLE001 - any import-time failure of the package wrapper
        spec = importlib.util.find_spec("museval")
        path = Path(list(spec.submodule_search_locations)[0]) / "metrics.py"
        mod_spec = importlib.util.spec_from_file_location("_museval_metrics", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module


def make_items(n: int, n_samples: int, sr: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``references (n, 2, time)`` and target ``estimates (n, time)``, one generator per item."""
    refs, ests = np.empty((n, 2, n_samples)), np.empty((n, n_samples))
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        lo = rng.uniform(100, 1500)
        bands = [(lo, lo * rng.uniform(1.5, 3)), (rng.uniform(300, 2000), 0.45 * sr)]
        for k, (f1, f2) in enumerate(bands):
            taps = sps.firwin(129, [f1, min(f2, 0.45 * sr)], fs=sr, pass_zero=False)
            refs[i, k] = sps.lfilter(taps, 1, rng.standard_normal(n_samples))
        leak = sps.lfilter([1.0, rng.uniform(-0.8, 0.8)], 1, refs[i, 1])
        ests[i] = refs[i, 0] + rng.uniform(0.05, 0.6) * leak + rng.uniform(0.01, 0.3) * rng.standard_normal(n_samples)
    return refs, ests


def per_item(fn, refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    """``(n, 3)`` target-row (sdr, sir, sar) of a per-item baseline; each call gets the target
    estimate and its complement, as an evaluation loop over items would pass them."""
    return np.array([fn(r, np.stack([e, r.sum(0) - e])) for r, e in zip(refs, ests)])


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--sr", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    ap.add_argument("--baseline-items", type=int, default=None, help="run baselines on the first N items only")
    args = ap.parse_args()
    refs, ests = make_items(args.items, int(args.seconds * args.sr), args.sr)
    nb = args.items if args.baseline_items is None else min(args.baseline_items, args.items)
    print(f"{args.items} items x {args.seconds} s at {args.sr} Hz, 2 sources; baselines on {nb} item(s), "
          f"{args.repeats} interleaved repeat(s), medians")

    museval_metrics = load_museval_metrics()
    import mir_eval.separation

    def mir(r, e):
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(r, e, compute_permutation=False)
        return sdr[0], sir[0], sar[0]

    def mus(r, e):
        sdr, _, sir, sar, _ = museval_metrics.bss_eval(r, e, window=np.inf)
        return sdr[0, 0], sir[0, 0], sar[0, 0]

    def ours(version):
        res = bss_eval(ests, refs, target_index=0, version=version)
        return np.stack([res["sdr"], res["sir"], res["sar"]], axis=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # mir_eval 0.8 deprecates bss_eval_sources
        for version, name, fn in (("v3", "mir_eval.separation.bss_eval_sources", mir),
                                  ("v4", "museval.metrics.bss_eval(window=inf)", mus)):
            per_item(fn, refs[:1], ests[:1])  # untimed warm-up of both paths
            bss_eval(ests[:2], refs[:2], version=version)
            t_batch, t_item = [], []
            for _ in range(args.repeats):
                t, got = timed(ours, version)
                t_batch.append(t)
                t, base = timed(per_item, fn, refs[:nb], ests[:nb])
                t_item.append(t * args.items / nb)
            tb, ti = float(np.median(t_batch)), float(np.median(t_item))
            diff = np.abs(got[:nb] - base).max()
            print(f"[{version}] batched mars_core.metrics.bss_eval {tb:7.2f} s | per-item {name} {ti:7.2f} s"
                  f"{' (extrapolated)' if nb < args.items else ''} | per-item/batched {ti / tb:5.1f}x "
                  f"| max |diff| {diff:.1e} dB | all batched runs {np.round(t_batch, 2).tolist()}")


if __name__ == "__main__":
    main()
