"""Re-record the data key of a shipped separator after a benchmark rebuild that kept the recipe.

A separator checkpoint is matched by its run config, whose ``queries`` entry is the query bank's key:
the query encoder's fingerprint and the hash of the benchmark's manifests (which hold every clip's
sha256). When the build's bytes change but not its recipe (e.g. the render-order fix of the soundfont
clips: median 33 dB SNR between old and new clips), the shipped weights stay a sensible separator but
no longer match, and ``load_or_train`` would retrain them. This script writes the current key into the
checkpoint, keeps the weights bit for bit, and records the old key and the reason in its history
(``rekeyed``), so the substitution is visible to anyone who loads the file.

    python scripts/rekey_separator.py --profile cpu --reason "..."
"""

from __future__ import annotations

import argparse
import datetime

from mars_core.config import get_profile
from mars_core.encoders.load import load_query_encoder
from mars_core.queries import load_or_build_query_bank
from mars_core.supervised import load_separator, save_separator, shipped_separator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", required=True)
    p.add_argument("--reason", required=True, help="why the data changed (kept in the checkpoint's history)")
    a = p.parse_args()
    prof = get_profile(a.profile)
    path = shipped_separator(prof)
    model, blob = load_separator(path)
    bank = load_or_build_query_bank(load_query_encoder(prof), prof, progress=False)
    run_cfg = dict(blob["config"])
    old = run_cfg["queries"]
    if old == bank.key:
        print(f"{path}: key {old} already matches this build")
        return
    run_cfg["queries"] = bank.key
    history = dict(blob["history"])
    history.setdefault("rekeyed", []).append(
        {"old_queries": old, "new_queries": bank.key, "reason": a.reason,
         "date": datetime.date.today().isoformat()})
    save_separator(path, model, run_cfg=run_cfg, history=history)
    print(f"{path}: queries key {old} -> {bank.key} (weights unchanged)")


if __name__ == "__main__":
    main()
