"""Promises the repository makes: stripped notebooks, a parameters cell, CI == README's test command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no NN_*.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_outputs_are_stripped(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        if "NBVAL_CHECK_OUTPUT" in src:
            continue  # small deterministic check outputs may stay
        assert not cell.get("outputs"), f"{path.name} cell {i} has committed outputs"
        assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_a_unique_nbformat_id(path):
    """nbformat 4.5 cell ids (a missing one is a warning today and an error in later nbformat versions): present,
    unique in the notebook, 1-64 characters of letters, digits, '-' and '_'."""
    nb = json.loads(path.read_text())
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5)
    ids = [c.get("id") for c in nb["cells"]]
    bad = [i for i, x in enumerate(ids) if not (isinstance(x, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", x))]
    assert not bad, f"{path.name}: cells {bad} have no valid id"
    assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_a_papermill_parameters_cell_with_profile(path):
    nb = json.loads(path.read_text())
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert re.search(r"^profile\s*=", "".join(params[0]["source"]), re.M)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert m, "README must mark its test command with <!-- test-command -->"
    command = m.group(1).strip().splitlines()[-1].strip()
    assert command in ci.splitlines(), f"CI must run exactly the README's test command: {command!r}"
