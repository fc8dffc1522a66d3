"""Does the shipped separator follow its query? The five probes of mars_core.evaluation.query_diagnostics, as tables.

    python scripts/diagnose_queries.py --profile cpu [--n 200] [--n-val 200] [--out runs/cpu/query_diagnostics]

Loads the query encoder, its query bank and the separator checkpoint (default: the shipped
``checkpoints/separator_<profile>.pt``) **directly**: nothing is trained, even when the checkpoint's
recorded data fingerprint differs from this machine's build (then a note says so). Writes
``family.csv``, ``swap.csv``, ``retrieval.csv``, ``held_out_shift.csv``, ``placement.csv``, ``probes.csv``, ``temperature.csv``
and ``report.md`` (every table as text) under ``--out``, and prints the report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.evaluation import query_diagnostics as qd  # noqa: E402
from mars_core.audio import FrontEnd  # noqa: E402
from mars_core.data.manifest import benchmark_dir, read_table  # noqa: E402
from mars_core.evaluation.evaluate import EVAL_MODALITIES, eval_queries, load_eval_set, score_estimates, separate  # noqa: E402
from mars_core.commands import start_command  # noqa: E402
from mars_core.device import add_device_arguments  # noqa: E402
from mars_core.encoders.load import add_imagebind_argument, load_query_encoder  # noqa: E402
from mars_core.encoders.minibind import load_minibind  # noqa: E402
from mars_core.queries import load_or_build_query_bank  # noqa: E402
from mars_core.supervised import load_separator, run_config, shipped_separator  # noqa: E402

SETS = (("test", "random"), ("test", "hard"), ("test_timbre", "random"))
TEMPERATURES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--n", type=int, default=200, help="test mixtures per set (default 200)")
    p.add_argument("--n-val", type=int, default=200, help="val mixtures for the temperature fit (default 200)")
    p.add_argument("--checkpoint", default=None, help="separator .pt (default: the shipped one)")
    p.add_argument("--query-encoder", default=None, metavar="MINIBIND_PT",
                   help="a MiniBind checkpoint as the query encoder, read with its own recorded config (default: the "
                        "profile's shipped one); e.g. a candidate trained with another EncoderConfig option")
    p.add_argument("--out", default=None, help="output folder (default runs/<profile>/query_diagnostics)")
    return add_imagebind_argument(add_device_arguments(p)).parse_args(argv)


def show(title: str, df: pd.DataFrame, lines: list[str]) -> None:
    text = f"### {title}\n\n```\n{df.round(2).to_string()}\n```\n"
    print(text, flush=True)
    lines.append(text)


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    prof, device = start_command(args)
    build = benchmark_dir(prof.name)
    out = Path(args.out or Path("runs") / prof.name / "query_diagnostics")
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Query diagnostics ({prof.name})\n\ncommand: `python {' '.join(sys.argv)}`\n"]

    encoder = (load_minibind(args.query_encoder) if args.query_encoder else load_query_encoder(prof)).to(device)
    bank = load_or_build_query_bank(encoder, prof, progress=False)
    ckpt = Path(args.checkpoint) if args.checkpoint else shipped_separator(prof)
    model, blob = load_separator(ckpt, map_location=device)
    if blob.get("config") != run_config(prof, prof.supervised, bank):
        note = (f"note: {ckpt} was trained on another build/encoder fingerprint than this machine's "
                f"(recorded queries key {blob.get('config', {}).get('queries')}, here {bank.key}); its weights are "
                "loaded directly and nothing is retrained")
        print(note, flush=True)
        lines.append(note + "\n")
    kinds = dict(zip(read_table(build, "classes")["class_name"], read_table(build, "classes")["kind"]))
    fe = FrontEnd(prof.audio)

    family_rows, swap_rows, probe_rows = [], [], []
    for split, pairs in SETS:
        name = f"{split}/{pairs}"
        es = load_eval_set(prof, split, args.n, hard_pairs=pairs == "hard")
        probes = qd.probe_queries(bank, es, build)
        q = torch.cat([eval_queries(bank, es), torch.stack(list(probes.values()), dim=1)], dim=1)
        est, _ = separate(model, fe, es.mixtures, q)
        keys = [("baseline", m) for m in EVAL_MODALITIES] + [("probe", p) for p in probes]
        estimates = {k: est[:, j] for j, k in enumerate(keys)}
        estimates[("mixture / 2", "-")] = 0.5 * es.mixtures
        items = score_estimates(estimates, es).assign(set=name, kind=lambda d: d["target"].map(kinds))
        base = items[items["system"] == "baseline"]
        fam = qd.family_table(base)
        show(f"SI-SDRi (dB) by target family x query, {name}, {len(es)} mixtures", fam, lines)
        show(f"SI-SDRi (dB) by target kind x query, {name}", qd.family_table(base, by="kind"), lines)
        family_rows.append(fam.reset_index().assign(set=name))
        sdr = items.groupby(["system", "modality"], sort=False)[["sdr", "si_sdri"]].mean()
        show(f"all queries and probes, mean SDR and SI-SDRi (dB), {name}", sdr, lines)
        probe_rows.append(sdr.reset_index().assign(set=name))
        show(f"probes by target kind, SI-SDRi (dB), {name}",
             items[items["system"] != "mixture / 2"].pivot_table(index="modality", columns="kind", values="si_sdri",
                                                                   aggfunc="mean", sort=False), lines)

        swap = qd.swap_test(model, prof, bank, es, qd.interferer_refs(es, prof, hard_pairs=pairs == "hard"))
        summ = qd.swap_summary(swap, by="modality")
        show(f"query swap, {name}: SI-SDR (dB) of the output of the target's query (tq) / interferer's query (iq) "
             "against target / interferer; drop = mean fall of the target's SI-SDR; own_* = fraction closer to "
             "its own source", summ.set_index("modality"), lines)
        swap_rows.append(summ.assign(set=name))

    retrieval = qd.encoder_family_retrieval(encoder, build)
    show("query encoder retrieval R@1 per family of the audio clip", retrieval.set_index(["split", "family"]), lines)
    shift = pd.DataFrame([{"modality": m, "split": sp, **qd.held_out_shift(bank, build, m, sp)}
                          for m in ("text", "image") for sp in ("test", "test_timbre")])
    show("held-out queries vs training queries: cos of class means, same class / best other class; r1 = fraction "
         "of classes whose held-out mean is closest to its own training mean", shift.set_index(["modality", "split"]),
         lines)
    placed = pd.concat([qd.placement_by_class(bank, build, "image", sp).assign(split=sp)
                        for sp in ("test", "test_timbre")])
    show("held-out images per class: how many land nearest their own class's training mean (own of n), and the "
         "other class that takes most of the rest", placed.set_index(["split", "class"]), lines)

    val = load_eval_set(prof, "val", args.n_val)
    sweep = qd.temperature_sweep(model, prof, bank, val, TEMPERATURES)
    t_best = qd.best_temperature(sweep)
    val_tab = sweep.pivot_table(index="temperature", columns="modality", values="si_sdri", aggfunc="mean")
    val_tab["mean"] = val_tab.mean(axis=1)
    show(f"val SI-SDRi (dB) vs logit temperature T (P = sigmoid(z / T)), {len(val)} mixtures; best T = {t_best:g}",
         val_tab, lines)
    test = load_eval_set(prof, "test", args.n)
    on_test = qd.temperature_sweep(model, prof, bank, test, sorted({1.0, t_best}))
    test_tab = on_test.pivot_table(index="temperature", columns="modality", values=["sdr", "si_sdri"], aggfunc="mean")
    test_tab.columns = [f"{metric} {m}" for metric, m in test_tab.columns]
    show(f"test/random at T = 1 and the val-fitted T = {t_best:g}", test_tab, lines)

    pd.concat(family_rows).to_csv(out / "family.csv", index=False)
    pd.concat(swap_rows).to_csv(out / "swap.csv", index=False)
    retrieval.to_csv(out / "retrieval.csv", index=False)
    shift.to_csv(out / "held_out_shift.csv", index=False)
    placed.to_csv(out / "placement.csv", index=False)
    pd.concat(probe_rows).to_csv(out / "probes.csv", index=False)
    pd.concat([val_tab.reset_index().assign(split="val"), test_tab.reset_index().assign(split="test")]
              ).to_csv(out / "temperature.csv", index=False)
    lines.append(f"wall time {time.time() - t0:.0f} s\n")
    (out / "report.md").write_text("\n".join(lines))
    print(f"wall time {time.time() - t0:.0f} s; tables in {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
