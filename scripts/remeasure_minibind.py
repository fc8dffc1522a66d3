"""Re-measure a shipped MiniBind checkpoint's retrieval numbers on the benchmark built here.

A shipped encoder's ``.json`` records the fingerprint of the build it was trained on (``data``) and its
retrieval numbers there (``metrics``). When the build's bytes change but not its recipe (the render-order
fix of the soundfont clips), the weights stay what they are, but their recorded numbers no longer describe
this build. This script leaves ``data``/``metrics`` untouched and adds ``remeasured``: the fingerprint of the
current build, its retrieval table, the date and the reason, so the reproduction test
(``tests/test_minibind.py``) checks the weights against numbers measured on the build it finds.

    python scripts/remeasure_minibind.py --profile smoke cpu --reason "..."
"""

from __future__ import annotations

import argparse
import datetime
import json

from mars_core.data.manifest import benchmark_dir, write_json_atomic
from mars_core.encoders.minibind import load_minibind, shipped_checkpoint
from mars_core.encoders.retrieval import evaluate_retrieval
from mars_core.runs import data_fingerprint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", nargs="+", required=True)
    p.add_argument("--role", nargs="+", default=["reward", "judge"])
    p.add_argument("--reason", required=True)
    a = p.parse_args()
    for profile in a.profile:
        build = benchmark_dir(profile)
        fp = data_fingerprint(build)
        for role in a.role:
            path = shipped_checkpoint(profile, role)
            rec_path = path.with_suffix(".json")
            rec = json.loads(rec_path.read_text())
            table = evaluate_retrieval(load_minibind(path), build)
            rec["remeasured"] = {"data": fp, "date": datetime.date.today().isoformat(), "reason": a.reason,
                                 "metrics": json.loads(table.to_json(orient="records"))}
            write_json_atomic(rec_path, rec)
            rows = {r["split"]: (round(r["a2t_r1"], 3), round(r["family_acc"], 3)) for r in rec["remeasured"]["metrics"]}
            old = {r["split"]: (round(r["a2t_r1"], 3), round(r["family_acc"], 3)) for r in rec["metrics"]}
            print(f"{path.name}: data {rec['data']} -> {fp}; (a2t_r1, family_acc) recorded {old} now {rows}")


if __name__ == "__main__":
    main()
