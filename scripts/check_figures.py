"""Check that executed notebooks hold figures: each must have at least one ``image/png`` output.

Usage: ``python scripts/check_figures.py runs/smoke/01_data_mixing.ipynb [...]``. Prints the count per
notebook and exits 1 naming every notebook without a figure. ``scripts/main.sh`` runs it after papermill:
a notebook without figures usually means a non-inline matplotlib backend (for example ``MPLBACKEND=Agg``
exported into the kernel's environment), which silently drops every plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def count_png_outputs(path: Path) -> int:
    """Number of outputs carrying ``image/png`` in the code cells of the notebook at ``path``."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"check_figures: cannot read notebook {path}: {err}") from None
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.get("cells", [])
        if cell.get("cell_type") == "code"
        for out in cell.get("outputs", [])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="executed .ipynb files")
    args = parser.parse_args(argv)
    missing = []
    for path in args.notebooks:
        n = count_png_outputs(path)
        print(f"[check_figures] {path}: {n} image/png outputs")
        if n == 0:
            missing.append(path)
    if missing:
        names = ", ".join(str(p) for p in missing)
        print(f"[check_figures] ERROR: no figure in {names}. Is MPLBACKEND set to a non-inline backend "
              "(e.g. Agg) in this shell? Unset it and rerun.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
