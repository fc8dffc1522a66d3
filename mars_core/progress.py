"""Progress a reader can see, and a training history a reader can open.

**Plain lines.** A ``tqdm.auto`` bar is a widget in a live Jupyter session, but an executed
notebook (papermill, nbval) keeps only its first frame, frozen at 0 %, so a long cell looks
stalled. :class:`Progress` drives the bar *and* prints a plain line every ``every`` steps and at
the end, to stdout, where executed notebooks and terminals keep it::

    [supervised smoke] step 120/400 (30%) loss 0.123 val_sdr 3.01 | elapsed 1m02s, ETA 2m25s

Who silences what:

=====================  ===========  ===========
                       bar          lines
=====================  ===========  ===========
``TQDM_DISABLE=1``     silenced     printed
``MARS_QUIET=1``       shown        silenced
``progress=False``     silenced     silenced
=====================  ===========  ===========

(``progress=False`` is the trainers' argument, passed here as ``enabled=False``.) The test
suite sets ``TQDM_DISABLE=1`` and keeps the lines: pytest captures them and shows them only
for a failing test.

**A CSV of metrics.** :class:`CsvLog` appends one row per logged step to a CSV file (the
trainers write ``metrics.csv`` in their run folder): readable with pandas or a spreadsheet while
the run goes on, left readable by a killed run, and truncated to the resumed step when a run
resumes, so that no step appears twice.

**TensorBoard.** A :class:`CsvLog` with a path also writes every number of each row as a TensorBoard
scalar (tag = the column, ``global_step`` = the row's ``step``; NaN left out) to event files in
``<the CSV's folder>/tb/<the CSV's name without .csv>/`` (:func:`tensorboard_dir`), so that
``tensorboard --logdir <runs folder>`` shows every run while it trains. The event files follow the
CSV: a fresh run removes the folder's old event files, a resumed run hides the steps after
``resume_step`` (``SummaryWriter(purge_step=...)``). Without the ``tensorboard`` package the CSV is
written alone and one warning says how to install it.

**Curves for the notebooks.** :func:`read_metrics` reads a metrics CSV as a DataFrame;
:func:`training_curves` gives the run folder's CSV when it is there (:func:`metrics_csv` finds it from a
model's ``history["source"]``), else the same frame rebuilt from the ``history`` a checkpoint keeps (a shipped
checkpoint comes without its run folder); ``frame.attrs["source"]`` says which.

Neither class draws a random number or touches a tensor: training results do not depend on
whether progress is shown.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

import pandas as pd
from tqdm.auto import tqdm

from .atomic import write_bytes_atomic

QUIET_ENV = "MARS_QUIET"
"""Environment variable: set to anything but ``""``/``"0"`` to silence the plain progress lines."""
DEFAULT_LINES = 10
"""Lines a loop prints when ``every`` is not given (about one per tenth of the loop)."""
DEFAULT_EVERY_S = 300.0
"""At most this many seconds between two lines of a slow loop (a full-size run with 100k steps)."""
TB_DIR = "tb"
"""Folder (beside a CSV) of the TensorBoard event files; one subfolder per CSV file (:func:`tensorboard_dir`)."""
TB_FLUSH_S = 10
"""Seconds between two flushes of the TensorBoard event files (and at close)."""
TB_INSTALL = "pip install -r requirements.txt (it pins tensorboard)"
"""How the missing-package warning says to install TensorBoard."""
_EVENTS_PREFIX = "events.out.tfevents."


def lines_enabled() -> bool:
    """Whether plain progress lines are printed (``MARS_QUIET`` unset, empty or ``0``)."""
    return os.environ.get(QUIET_ENV, "").strip() in ("", "0")


def default_every(total: int, lines: int = DEFAULT_LINES) -> int:
    """The step interval that prints about ``lines`` lines over ``total`` steps: ``ceil(total / lines)``, >= 1."""
    return max(1, math.ceil(total / max(1, lines)))


def format_duration(seconds: float) -> str:
    """``42s``, ``1m02s``, ``2h05m09s`` (rounded to the second); ``?`` for an unknown (NaN, inf) duration."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def format_value(value: Any) -> str:
    """A metric as a short string: integers as they are, other numbers with 4 significant digits."""
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        value = value.item()
    if isinstance(value, bool) or isinstance(value, int) or isinstance(value, str):
        return str(value)
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


class Progress:
    """A ``tqdm.auto`` bar plus a plain line every ``every`` steps; see the module docstring.

    Call :meth:`update` after each step with the number of steps done and any metrics;
    metrics are remembered, so a line shows the latest value of each (a validation score
    stays on the lines until the next validation). A line is printed when

    * ``done % every == 0``, or
    * ``done == total`` (the end), or
    * ``every_s`` seconds have passed since the last line (or the start),

    and :meth:`close` (or leaving a ``with`` block) prints the final state if its step has no
    line yet (a run stopped early). ``elapsed`` and the ETA count this session only: a resumed run
    (``initial`` steps already done) estimates its rate from the steps it did itself,
    ``ETA = (total - done) x elapsed / (done - initial)``.

    Args:
        total: steps of the whole loop; desc: the name in ``[...]`` and on the bar.
        every: line interval in steps (default :func:`default_every`: about ten lines).
        show: the metric names lines and bar show, in this order (default: every metric passed, in
            the order first seen); other metrics passed to :meth:`update` are ignored.
        every_s: also a line when this many seconds passed since the last one (``None``: never).
        initial: steps already done (a resumed run).
        enabled: ``False`` shows neither bar nor lines (a trainer's ``progress=False``).
        stream: where lines go (default ``sys.stdout`` at the time of printing).
        clock: seconds, monotonic (tests inject a fake one).
    """

    def __init__(self, total: int, desc: str, *, every: int | None = None, every_s: float | None = DEFAULT_EVERY_S,
                 show: Sequence[str] | None = None, initial: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.perf_counter):
        if total < 0 or initial < 0:
            raise ValueError(f"Progress {desc!r}: total ({total}) and initial ({initial}) must be >= 0")
        if every is not None and every < 1:
            raise ValueError(f"Progress {desc!r}: every must be >= 1 step, got {every}")
        if every_s is not None and every_s <= 0:
            raise ValueError(f"Progress {desc!r}: every_s must be > 0 seconds or None, got {every_s}")
        self.total, self.desc, self.initial = int(total), desc, int(initial)
        self.every = int(every) if every is not None else default_every(self.total)
        self.every_s = every_s
        self.stream, self.clock = stream, clock
        self.lines = enabled and lines_enabled()
        self.show = tuple(show) if show is not None else None
        self.metrics: dict[str, Any] = {}
        self.done = self.initial
        self._printed = self.initial  # the step of the last line (nothing to report before any step)
        self._t0 = self._t_line = clock()
        quiet = {} if enabled else {"disable": True}  # otherwise TQDM_DISABLE decides
        self.bar = tqdm(total=self.total, initial=self.initial, desc=desc, **quiet)

    # ------------------------------------------------------------------ steps
    def update(self, done: int, **metrics: Any) -> None:
        """Record that ``done`` steps are done (``initial < done <= total``) with ``metrics``; maybe print a line."""
        if self.show is not None:
            metrics = {k: metrics[k] for k in self.show if k in metrics}
        self.metrics.update(metrics)
        self.bar.update(done - self.done)
        self.done = done
        if metrics:
            self.bar.set_postfix({k: format_value(self.metrics[k]) for k in self._shown()}, refresh=False)
        now = self.clock()
        due = done == self.total or done % self.every == 0
        if self.every_s is not None and now - self._t_line >= self.every_s:
            due = True
        if due:
            self._emit(now)

    def close(self, final_line: bool = True) -> None:
        """Close the bar; print the last state if it has no line yet (and ``final_line``)."""
        if final_line and self.done != self._printed:
            self._emit(self.clock())
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(final_line=exc_type is None)

    # ------------------------------------------------------------------ lines
    def eta_s(self, now: float | None = None) -> float:
        """Seconds left at this session's rate; NaN before the first step of the session."""
        now = self.clock() if now is None else now
        steps = self.done - self.initial
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) * (now - self._t0) / steps if steps > 0 else math.nan

    def line(self, now: float | None = None) -> str:
        """The plain line for the current state (what :meth:`update` prints)."""
        now = self.clock() if now is None else now
        pct = int(100 * self.done / self.total) if self.total else 100
        parts = [f"[{self.desc}] step {self.done}/{self.total} ({pct}%)"]
        parts += [f"{k} {format_value(self.metrics[k])}" for k in self._shown()]
        return " ".join(parts) + f" | elapsed {format_duration(now - self._t0)}, ETA {format_duration(self.eta_s(now))}"

    def _shown(self) -> list[str]:
        return [k for k in (self.show if self.show is not None else self.metrics) if k in self.metrics]

    def _emit(self, now: float) -> None:
        self._printed, self._t_line = self.done, now
        if not self.lines:
            return
        stream = self.stream if self.stream is not None else sys.stdout
        tqdm.write(self.line(now), file=stream)  # clears and redraws a terminal bar around the line
        stream.flush()


class CsvLog:
    """Metrics of a run, one CSV row per logged step, in ``path`` (nothing at all when ``path`` is None).

    * The header is ``step``, then ``fields``, then every other key in the order first seen;
      a row may leave columns empty, and a new key rewrites the file (atomically) with a wider header.
    * Each row is appended and flushed by itself, so a killed run leaves every finished row;
      a half-written last line (no newline) is dropped when the file is opened again.
    * ``resume_step=k > 0`` keeps the rows with ``step <= k`` (the steps the resumed checkpoint
      holds) and appends after them; ``resume_step=0`` (a fresh run) starts an empty file.
    * With ``tensorboard`` (the default), the numbers of each row also go to TensorBoard event files in
      :func:`tensorboard_dir` (:class:`TensorBoardLog`, which follows the same resume rule); :meth:`close`
      closes them (the trainers leave that to garbage collection at the end of their function).

    ``step`` is whatever the trainer counts; the trainers of this package log the number of
    steps done (1 = after the first update; 0 = before training, for an initial validation).
    """

    def __init__(self, path: str | os.PathLike | None, *, resume_step: int = 0, fields: Sequence[str] = (),
                 tensorboard: bool = True):
        self.path = Path(path) if path is not None else None
        self.fields = ["step"] + [f for f in fields if f != "step"]
        self.tb: TensorBoardLog | None = None
        if self.path is None:
            return
        if resume_step < 0:
            raise ValueError(f"CsvLog {self.path}: resume_step must be >= 0, got {resume_step}")
        old_fields, rows = (read_rows(self.path) if resume_step > 0 and self.path.exists() else ([], []))
        kept = [r for r in rows if _step_of(r) is not None and _step_of(r) <= resume_step]
        self.fields += [f for f in old_fields if f not in self.fields]
        self._rewrite(kept)
        if tensorboard:
            self.tb = TensorBoardLog(tensorboard_dir(self.path), resume_step=resume_step)

    def log(self, step: int, **values: Any) -> None:
        """Append the row ``step, **values`` (tensors and numpy scalars as numbers); its numbers also go to TensorBoard."""
        if self.path is None:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        new = [k for k in row if k not in self.fields]
        if new:
            _, rows = read_rows(self.path)
            self.fields += new
            self._rewrite(rows)
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, self.fields, restval="").writerow(row)
        if self.tb is not None:
            self.tb.log(row["step"], row)

    def close(self) -> None:
        """Flush and close the TensorBoard files (also done when the log is garbage-collected or at exit)."""
        if self.tb is not None:
            self.tb.close()

    def __enter__(self) -> "CsvLog":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, self.fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
        write_bytes_atomic(self.path, buf.getvalue().encode("utf-8"))


def tensorboard_dir(csv_path: str | os.PathLike) -> Path:
    """Where a :class:`CsvLog` at ``csv_path`` writes its TensorBoard files: ``<folder>/tb/<name without .csv>``
    (``run/metrics.csv`` -> ``run/tb/metrics``; the alignment stages' ``metrics_<stage>.csv`` side by side)."""
    p = Path(csv_path)
    return p.parent / TB_DIR / p.stem


class TensorBoardLog:
    """The numbers of :class:`CsvLog` rows as TensorBoard scalars in ``log_dir`` (see the module docstring).

    * ``resume_step == 0`` (a fresh run) removes the event files already in ``log_dir`` (not its
      subfolders), as the CSV starts empty; the writer still marks a session start at step 0.
    * ``resume_step = k > 0`` keeps the old files and writes ``SummaryWriter(purge_step=k + 1)``: a
      session start that tells TensorBoard to drop the old events of steps > k, which the CSV drops too.
      TensorBoard reads a run's files in name order, and a name starts with its second of creation, so a
      resume waits (at most 1 s) until the clock is past the second of the newest old file.
    * Flushed every :data:`TB_FLUSH_S` seconds (a background thread of the writer) and closed by
      :meth:`close`, when this object is garbage-collected, or at interpreter exit.

    Without the ``tensorboard`` package this object does nothing (one warning per process).
    """

    def __init__(self, log_dir: str | os.PathLike, *, resume_step: int = 0):
        self.log_dir = Path(log_dir)
        self.writer = None
        writer_class = _summary_writer_class(self.log_dir)
        if writer_class is None:
            return
        old = sorted(self.log_dir.glob(_EVENTS_PREFIX + "*")) if self.log_dir.is_dir() else []
        if resume_step == 0:
            for f in old:
                f.unlink(missing_ok=True)
        else:
            _wait_past_second(max((_created_second(f) for f in old), default=None))
        self.writer = writer_class(log_dir=str(self.log_dir), purge_step=resume_step + 1 if resume_step > 0 else 0,
                                   flush_secs=TB_FLUSH_S)
        self._finalizer = weakref.finalize(self, self.writer.close)

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        """One scalar per number of ``row`` except ``step`` (bools, strings, empty and NaN values left out)."""
        if self.writer is None:
            return
        for tag, value in row.items():
            if tag != "step" and _is_number(value) and not math.isnan(value):
                self.writer.add_scalar(tag, float(value), global_step=int(step))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self._finalizer()  # runs writer.close() once; later calls (and garbage collection) do nothing


_tb_warned = False


def _summary_writer_class(log_dir: Path):
    """``torch.utils.tensorboard.SummaryWriter``, or None (with one warning per process) without the tensorboard package."""
    global _tb_warned
    try:
        from torch.utils.tensorboard import SummaryWriter  # here, not on top: optional, and its import takes ~1.5 s
    except ImportError as exc:
        if not _tb_warned:
            _tb_warned = True
            warnings.warn(f"TensorBoard logging is off ({exc}): training writes its metrics CSV only, no event files "
                          f"in {log_dir}. To watch runs in TensorBoard, install it: {TB_INSTALL}.", stacklevel=4)
        return None
    return SummaryWriter


def _created_second(event_file: Path) -> int | None:
    """The creation second in an event file's name ``events.out.tfevents.<seconds>.<host>...``; None if unreadable."""
    try:
        return int(event_file.name[len(_EVENTS_PREFIX):].split(".")[0])
    except ValueError:
        return None


def _wait_past_second(second: int | None) -> None:
    """Sleep until ``time.time()`` is past the whole ``second`` (at most 1 s more; nothing if None or already past)."""
    if second is not None:
        time.sleep(min(1.0, max(0.0, second + 1 - time.time())))


def read_rows(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """``(header, complete rows)`` of a :class:`CsvLog` file; a last line without its newline (a killed
    write) and rows with another number of cells than the header are left out."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    lines = list(csv.reader(io.StringIO(text, newline="")))
    if not lines:
        return [], []
    header = lines[0]
    return header, [dict(zip(header, cells)) for cells in lines[1:] if len(cells) == len(header)]


def last_row(history: Mapping[str, Sequence], step_keys: Sequence[str], val_keys: Sequence[str] = (), *,
             at: int | None = None, val_step_key: str = "val_step") -> dict[str, Any]:
    """The newest entry of each ``step_keys`` list of a trainer's ``history``, plus the newest entry of
    each ``val_keys`` list when the newest validation happened at step ``at`` (``history[val_step_key][-1]``):
    the row a trainer logs after a step. Keys absent from ``history`` or with empty lists are left out."""
    row = {k: history[k][-1] for k in step_keys if len(history.get(k, ())) > 0}
    vs = history.get(val_step_key, ())
    if len(vs) > 0 and vs[-1] == at:
        row.update({k: history[k][-1] for k in val_keys if len(history.get(k, ())) > 0})
    return row


def _step_of(row: Mapping[str, str]) -> int | None:
    try:
        return int(row.get("step", ""))
    except ValueError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------- curves for the notebooks
CURVES_FROM_HISTORY = "checkpoint history"
"""``frame.attrs["source"]`` of a :func:`training_curves` frame rebuilt from a history (no CSV found)."""


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A :class:`CsvLog` file as a DataFrame: one row per logged step, in file order; every column numeric
    (``step`` as integers), an empty cell NaN. A killed write's half last line is left out (:func:`read_rows`).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file has no ``step`` column, a step that is not an integer, or a cell that is not a
            number (the message names the file, the column and the step).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} not found: a trainer writes metrics.csv in its run folder "
                                "(pass run_dir); plot from the checkpoint's history instead (training_curves)")
    header, rows = read_rows(path)
    if "step" not in header:
        raise ValueError(f"{path} is not a metrics CSV: its header {header[:5]} has no 'step' column")
    columns: dict[str, list[float]] = {name: [] for name in header}
    for row in rows:
        for name in header:
            cell = row[name].strip()
            try:
                columns[name].append(float(cell) if cell else math.nan)
            except ValueError:
                raise ValueError(f"{path}: column {name!r} holds {cell!r} at step {row.get('step')!r}, not a number; "
                                 "the file is damaged (delete it and rerun, or plot from the history)") from None
    frame = pd.DataFrame(columns, columns=header)
    steps = frame["step"]
    bad = steps.isna() | (steps != steps.round())
    if bad.any():
        raise ValueError(f"{path}: every row needs an integer step, found {steps[bad].tolist()[:3]}")
    frame["step"] = steps.astype("int64")
    return frame


def history_curves(history: Mapping[str, Any], *, step_is_index: bool = True,
                   val_step_key: str = "val_step") -> pd.DataFrame:
    """The frame :func:`read_metrics` would read from the CSV of the run that produced ``history``.

    A row per step (``step`` = steps done: ``history["step"] + 1`` when ``step_is_index``, as the supervised
    and RL trainers count; the entry itself for the alignment stages, ``step_is_index=False``) with every
    per-step list (a list of numbers as long as ``history["step"]``), plus each ``val_*`` list (as long as
    ``history[val_step_key]``) on the row of its validation step; a validation before any step (step 0) gets
    a row of its own. Columns in the history's order, without ``val_step``, as :class:`CsvLog` writes them
    through :func:`last_row`.
    """
    step_list = list(history.get("step", ()))
    val_steps = [int(v) for v in history.get(val_step_key, ())]

    def numbers(key: str, n: int) -> bool:
        v = history[key]
        return (isinstance(v, (list, tuple)) and len(v) == n and n > 0
                and all(_is_number(_plain(x)) for x in v))

    step_keys = [k for k in history if k not in ("step", val_step_key) and not k.startswith("val_")
                 and numbers(k, len(step_list))]
    val_keys = [k for k in history if k.startswith("val_") and k != val_step_key and numbers(k, len(val_steps))]
    rows: dict[int, dict[str, float]] = {}
    for i, s in enumerate(step_list):
        rows[int(s) + int(step_is_index)] = {k: float(_plain(history[k][i])) for k in step_keys}
    for i, s in enumerate(val_steps):
        rows.setdefault(s, {}).update({k: float(_plain(history[k][i])) for k in val_keys})
    order = [k for k in history if k in step_keys or k in val_keys]
    frame = pd.DataFrame([{"step": s, **rows[s]} for s in sorted(rows)], columns=["step", *order])
    return frame.astype({"step": "int64"})


def metrics_csv(history: Mapping[str, Any], name: str = "metrics.csv") -> Path | None:
    """The metrics CSV of the run that trained the model of ``history``, or None when it is not on disk.

    A model trained here comes from ``<run folder>/final.pt`` (``history["source"]``, set by
    ``load_or_train`` / ``load_or_train_rl``), beside which the trainer wrote ``name``; a shipped checkpoint
    (``checkpoints/separator_<profile>.pt``) has no run folder, so None.
    """
    source = history.get("source")
    if not source or Path(source).name != "final.pt":
        return None
    path = Path(source).parent / name
    return path if path.is_file() else None


def training_curves(history: Mapping[str, Any], csv_path: str | os.PathLike | None = None, *,
                    step_is_index: bool = True) -> pd.DataFrame:
    """A run's metrics for plotting: ``csv_path`` (default :func:`metrics_csv` of ``history``) read by
    :func:`read_metrics` when that file exists, else :func:`history_curves` of ``history`` (the same frame).
    ``frame.attrs["source"]`` is the CSV's path or :data:`CURVES_FROM_HISTORY`."""
    path = Path(csv_path) if csv_path is not None else metrics_csv(history)
    if path is not None and path.is_file():
        frame = read_metrics(path)
        frame.attrs["source"] = str(path)
    else:
        frame = history_curves(history, step_is_index=step_is_index)
        frame.attrs["source"] = CURVES_FROM_HISTORY
    return frame
