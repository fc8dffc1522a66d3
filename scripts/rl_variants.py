"""Train RL variants of a preset from the shipped supervised separator and print their val tables.

    python scripts/rl_variants.py --profile cpu --variant plus --variant entropy-only:advantage=none \\
        --variant seg64:reward_segments=64,segment_terms=signal [--seed 0 1 2]
    python scripts/rl_variants.py --profile cpu --base dense --variant dense --variant dense-hard:hard_pair_prob=0.25 \\
        --benchmark runs/cpu/dense_options

Each ``NAME:field=value,...`` is ``rl_preset(profile, BASE)`` (``--base``, default ``plus``) with those fields and
``preset=NAME`` (a variant named like the base is the preset itself), trained (or loaded: runs are cached by their
config, so the benchmark reuses them) by :func:`mars_core.rl.trainer.load_or_train_rl`. Prints, per variant and seed,
the validation history's start and best SDR / SI-SDRi / semantic score and the training wall time; writes them to
``--out`` (CSV). Selection of a preset is done on these val numbers, never on test. ``--benchmark DIR`` also runs the
test-set benchmark (:func:`mars_core.benchmark.run_benchmark`: every test set, pair type and query) of the variants
beside ``supervised`` and the ``supervised (continued)`` control with each variant's own budget (updates, trainable
weights, optimiser, learning rate, seed: :func:`mars_core.supervised.continued.continued_config`; the benchmark's own
control when it equals ``plus``'s, else one named after the variant), and adds to DIR's ``bootstrap.csv`` the paired
intervals of every variant against its control (rows whose ``baseline`` is it); ``--against VARIANT`` adds every
other variant against that one, seed by seed (rows whose ``baseline`` is it), for a control that is itself a variant.

Adaptation without references (``train_split``, :class:`mars_core.config.RLConfig`): RL on another split's mixtures
against the entropy/KL terms alone on the same mixtures, beside the supervised control on ``train``::

    python scripts/rl_variants.py --profile cpu --variant "adapt:train_split=test_timbre,lambda_sig=0" \
        --variant "adapt-entropy:train_split=test_timbre,lambda_sig=0,advantage=none" --against adapt-entropy \
        --benchmark runs/cpu/adapt
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
from mars_core.config import RL_PRESETS, RLConfig, rl_preset  # noqa: E402
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
    p.add_argument("--base", default="plus", choices=RL_PRESETS, help="the preset the variants change (default plus)")
    p.add_argument("--benchmark", default=None, metavar="DIR",
                   help="also benchmark the variants on the test sets against supervised and supervised (continued)")
    p.add_argument("--against", nargs="+", default=[], metavar="VARIANT",
                   help="with --benchmark: also the paired intervals of every other variant against each of these "
                        "variants, seed by seed (e.g. the entropy-only control trained on the same mixtures)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="RL seeds (default 0)")
    p.add_argument("--out", default=None, help="CSV of the table (default runs/<profile>/rl_variants.csv)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = add_imagebind_argument(add_device_arguments(p)).parse_args(argv)
    prof, device = start_command(args)
    variants = [(text, *parse_variant(text, rl_preset(prof, args.base))) for text in args.variant]
    comparisons = against_pairs([name for _, name, _ in variants], args.seed, args.against)  # before any training
    rows, systems = [], {}
    for text, name, cfg in variants:
        for seed in args.seed:
            t0 = time.time()
            run_cfg = replace(cfg, seed=seed)
            _, h = load_or_train_rl(prof, args.base, config=run_cfg, device=device, progress=False)
            systems[system_name(name, seed)] = run_cfg
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
    if args.benchmark:
        benchmark_variants(prof, systems, Path(args.benchmark), device, comparisons)
    return 0


def system_name(variant: str, seed: int) -> str:
    """The benchmark's name of a variant's run: the variant's name at seed 0, ``"NAME, seed S"`` otherwise."""
    return variant if seed == 0 else f"{variant}, seed {seed}"


def against_pairs(variants: list[str], seeds: list[int], against: list[str]) -> list[tuple[str, list[str]]]:
    """``--against``: ``(baseline, systems)`` per named variant and seed, each of the other variants' runs with that
    seed against that variant's run with that seed. Raises ``SystemExit`` for a name that is not a variant."""
    unknown = [a for a in against if a not in variants]
    if unknown:
        raise SystemExit(f"--against {', '.join(unknown)}: not a --variant name (variants: {', '.join(variants)})")
    return [(system_name(a, seed), [system_name(v, seed) for v in variants if v != a])
            for a in dict.fromkeys(against) for seed in seeds]


def benchmark_variants(prof, systems: dict[str, RLConfig], out: Path, device,
                       comparisons: list[tuple[str, list[str]]] = ()) -> None:
    """The test-set benchmark of ``systems`` (name -> RL config, trained above) beside the supervised baseline and
    each variant's ``supervised (continued)`` control (same budget), saved in ``out``; ``bootstrap.csv`` gains each
    variant against its control, and each ``(baseline, systems)`` of ``comparisons`` (:func:`against_pairs`)."""
    from mars_core.benchmark import registry as R, run_benchmark, save_results
    from mars_core.benchmark.bootstrap import paired_bootstrap
    from mars_core.supervised.continued import continued_config, load_or_continue

    on = lambda ctx: {} if ctx.device is None else {"device": ctx.device}  # noqa: E731

    def rl_loader(cfg):
        return lambda ctx: load_or_train_rl(ctx.profile, cfg.preset, config=cfg, progress=False, **on(ctx))

    def control_loader(cfg):
        return lambda ctx: load_or_continue(ctx.profile, ctx.supervised().model, cfg, bank=ctx.query_bank(),
                                            build_dir=ctx.build_dir, progress=False, **on(ctx))

    plus_budget = continued_config(prof, rl_preset(prof, "plus"))
    controls: dict[str, RLConfig] = {}  # control name -> an RL config with its budget
    control_of: dict[str, str] = {}  # variant -> its control
    for name, cfg in systems.items():
        budget = continued_config(prof, cfg)
        same = [c for c, rc in controls.items() if continued_config(prof, rc) == budget]
        if not same:
            same = ["supervised (continued)" if budget == plus_budget else f"supervised (continued), budget of {name}"]
            controls[same[0]] = cfg
        control_of[name] = same[0]
    registry = {"supervised": R.load_supervised,
                **{c: R.load_supervised_continued if c == "supervised (continued)" else control_loader(cfg)
                   for c, cfg in controls.items()},
                **{name: rl_loader(cfg) for name, cfg in systems.items()}}
    result = run_benchmark(prof, systems=registry, progress=False, device=device,
                           command="python " + " ".join(sys.argv))
    against = [paired_bootstrap(result.items, baseline=c, systems=[n for n, m in control_of.items() if m == c])
               for c in controls]
    against += [paired_bootstrap(result.items, baseline=b, systems=names) for b, names in comparisons]
    result = replace(result, bootstrap=pd.concat([result.bootstrap, *against], ignore_index=True))
    save_results(result, out)
    sdr = result.bootstrap[(result.bootstrap["metric"] == "sdr") & (result.bootstrap["pairs"] == "random")]
    print(sdr[["split", "system", "baseline", "modality", "mean_diff", "ci_low", "ci_high"]].round(2).to_string(index=False))
    print(f"-> {out}")


if __name__ == "__main__":
    sys.exit(main())
