"""Executed notebooks keep their figures: the notebook guard (conftest.py) and scripts/check_figures.py.

A tiny notebook that draws one plot is executed the ways the README's two commands execute notebooks
(``pytest --nbval-lax`` as in scripts/test.sh, papermill as in scripts/main.sh). With the kernel's inline
backend it yields an ``image/png`` output; with ``MPLBACKEND=Agg`` in the environment it yields none, and
both checks must then fail and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check_figures.py"


def _notebook(*sources: str) -> dict:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": s}
             for i, s in enumerate(sources)]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


PLOT = _notebook("import matplotlib.pyplot as plt", "plt.plot([0, 1], [1, 0]);")


def _env(backend: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if backend:
        env["MPLBACKEND"] = backend
    return env


@pytest.fixture()
def guarded_project(tmp_path) -> Path:
    """A copy of the repository's conftest.py beside a notebooks/ folder holding one plotting notebook."""
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_plot.ipynb").write_text(json.dumps(PLOT))
    return tmp_path


def _run_nbval(project: Path, backend: str | None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "notebooks", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
           "-q", f"--rootdir={project}"]
    return subprocess.run(cmd, cwd=project, env=_env(backend), capture_output=True, text=True, timeout=300)


def test_notebook_guard_passes_with_the_inline_backend(guarded_project):
    res = _run_nbval(guarded_project, None)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "notebook guard: all 1 notebooks executed every cell and drew figures (01: 1 image/png" in res.stdout


def test_notebook_guard_fails_when_agg_hides_the_figures(guarded_project):
    res = _run_nbval(guarded_project, "Agg")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "01_plot.ipynb: no image/png output" in res.stdout


def test_papermill_copy_has_a_figure_and_check_figures_counts_it(tmp_path):
    src, out = tmp_path / "01_plot.ipynb", tmp_path / "out.ipynb"
    src.write_text(json.dumps(PLOT))
    subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(tmp_path), str(src), str(out)],
                   env=_env(None), capture_output=True, text=True, timeout=300, check=True)
    res = subprocess.run([sys.executable, str(CHECK), str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and f"{out}: 1 image/png outputs" in res.stdout, res.stdout + res.stderr


def test_check_figures_names_the_notebooks_without_a_figure(tmp_path):
    png = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}
    text = {"output_type": "stream", "name": "stdout", "text": "image/png\n"}  # the word alone is not a figure
    with_fig, without = _notebook("a", "b"), _notebook("a")
    with_fig["cells"][1]["outputs"] = [text, png]
    without["cells"][0]["outputs"] = [text]
    (tmp_path / "fig.ipynb").write_text(json.dumps(with_fig))
    (tmp_path / "nofig.ipynb").write_text(json.dumps(without))
    res = subprocess.run([sys.executable, str(CHECK), str(tmp_path / "fig.ipynb"), str(tmp_path / "nofig.ipynb")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "fig.ipynb: 1 image/png outputs" in res.stdout and "nofig.ipynb: 0 image/png outputs" in res.stdout
    assert "no figure in" in res.stderr and "nofig.ipynb" in res.stderr and "MPLBACKEND" in res.stderr
