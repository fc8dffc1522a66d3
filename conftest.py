"""Repository-level pytest hooks: a guard that every notebook was collected and executed.

PyTorch's tutorials learned this the hard way: a notebook that silently did not run
looks green. When ``notebooks/`` is on the command line, every ``notebooks/NN_*.ipynb``
must be collected by nbval and every one of its cells must have run (passed), and its
outputs must include at least one figure (``image/png``): a notebook that was not
collected, whose cells were skipped or failed, or that drew no figure (e.g. because
``MPLBACKEND=Agg`` replaced the kernel's inline backend) fails the session with its name printed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
NB_DIR = ROOT / "notebooks"

_expected: set[str] = set()
_cells: dict[str, int] = defaultdict(int)
_passed: dict[str, int] = defaultdict(int)
_figures: dict[str, int] = defaultdict(int)


def _nb_of(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return Path(path).name if path.endswith(".ipynb") else None


def pytest_collection_modifyitems(session, config, items):
    args = [Path(a.split("::")[0]).resolve() for a in config.args]
    for a in args:  # the whole folder: every numbered notebook; a single notebook: that one
        if a == NB_DIR:
            _expected.update(p.name for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
        elif a.suffix == ".ipynb" and NB_DIR in a.parents:
            _expected.add(a.name)
    for item in items:
        nb = _nb_of(item.nodeid)
        if nb:
            _cells[nb] += 1


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Count the ``image/png`` outputs nbval received from the kernel for this cell (``item.test_outputs``)."""
    try:
        return (yield)
    finally:
        nb = _nb_of(item.nodeid)
        if nb:
            outputs = getattr(item, "test_outputs", None) or []
            _figures[nb] += sum("image/png" in (out.get("data") or {}) for out in outputs)


def pytest_runtest_logreport(report):
    nb = _nb_of(report.nodeid)
    if nb and report.when == "call" and report.passed:
        _passed[nb] += 1


def pytest_sessionfinish(session, exitstatus):
    if not _expected:
        return
    problems = []
    for nb in sorted(_expected):
        if _cells[nb] == 0:
            problems.append(f"{nb}: not collected (is nbval installed and --nbval-lax given?)")
        elif _passed[nb] != _cells[nb]:
            problems.append(f"{nb}: {_passed[nb]} of {_cells[nb]} cells ran and passed")
        elif _figures[nb] == 0:
            problems.append(f"{nb}: no image/png output (is MPLBACKEND set to a non-inline backend such as Agg? unset it)")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if problems:
        if reporter:
            reporter.write_sep("=", "notebook guard: FAILED", red=True)
            for p in problems:
                reporter.write_line(p)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter:
        reporter.write_line(f"notebook guard: all {len(_expected)} notebooks executed every cell and drew figures "
                            f"({', '.join(f'{nb[:2]}: {_figures[nb]}' for nb in sorted(_expected))} image/png outputs)")
