"""One row per (item, estimate): every metric of a batch (:func:`evaluate_batch`, :func:`evaluate_many`)
and their per-group summary (:func:`summarize`); skip reasons for silent items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .bss import DEFAULT_CHUNK, FILTER_LENGTH, _bss_core, _check_version
from .checks import SILENCE_L1, _as_float64, _check_audio, _is_torch, is_silent
from .scale_invariant import si_sdr

SUMMARY_METRICS = ("sdr", "sir", "sar", "sdri", "si_sdr", "si_sdri")
"""Columns :func:`summarize` reports by default (those present in the frame)."""
SCORE_COLUMNS = ("sdr", "sir", "sar", "sdr_mix", "sdri", "si_sdr", "si_sdr_mix", "si_sdri")
"""Metric columns of :func:`evaluate_batch` / :func:`evaluate_many`, in order."""


def _skip_reasons(silent_est: np.ndarray, silent_ref: np.ndarray, silent_mix: np.ndarray,
                  target_index: int) -> np.ndarray:
    """Why each (item, estimate) is skipped: ``""`` when it is evaluated.

    Shape:
        silent_est: ``(batch, n_est)``; silent_ref: ``(batch, n_src)``; silent_mix: ``(batch,)``.
        Returns an object array ``(batch, n_est)`` of strings.
    """
    out = np.empty(silent_est.shape, dtype=object)
    for i in range(silent_est.shape[0]):
        item = ["silent target reference"] if silent_ref[i, target_index] else []
        item += [f"silent interferer (source {j})" for j in np.flatnonzero(silent_ref[i]) if j != target_index]
        for k in range(silent_est.shape[1]):
            why = item + ["silent estimate"] * bool(silent_est[i, k]) + ["silent mixture"] * bool(silent_mix[i])
            out[i, k] = "; ".join(why)
    return out


def _as_array(x: Any) -> Any:
    """Torch tensors and numpy arrays as they are (no copy); anything else as a float64 array."""
    return x if _is_torch(x) or isinstance(x, np.ndarray) else np.asarray(x, dtype=np.float64)


def _estimate_columns(estimates: Any) -> tuple[list, list]:
    """``(names, [(batch, time) arrays])`` from a mapping or a ``(batch, n_est, time)`` array (views, no copy)."""
    if isinstance(estimates, Mapping):
        names, cols = list(estimates), [_as_array(v) for v in estimates.values()]
    else:
        arr = _as_array(estimates)
        if arr.ndim != 3:
            raise ValueError(f"estimates must be a mapping name -> (batch, time) or an array (batch, n_est, time); "
                             f"got shape {tuple(arr.shape)}")
        names, cols = list(range(arr.shape[1])), [arr[:, k] for k in range(arr.shape[1])]
    if not names:
        raise ValueError("no estimates given")
    return names, cols


def _check_table_inputs(cols: list, labels: list[str], references: Any, mixtures: Any, target_index: int) -> None:
    """Shapes ``(batch, time)`` per estimate, ``(batch, n_src, time)``, ``(batch, time)``; finite values."""
    shapes = [tuple(c.shape) for c in cols]
    refs, mix = tuple(references.shape), tuple(mixtures.shape)
    if any(len(sh) != 2 for sh in shapes) or len(mix) != 2 or len(refs) != 3:
        raise ValueError(f"expected estimates (batch, time), references (batch, n_src, time), mixtures "
                         f"(batch, time); got {', '.join(map(str, shapes))}, {refs}, {mix}")
    for sh, label in zip(shapes, labels):
        if sh != mix or refs[0] != mix[0] or refs[2] != mix[1]:
            raise ValueError(f"shape mismatch: {label} {sh}, references {refs}, mixtures {mix}")
    if not 0 <= target_index < refs[1]:
        raise ValueError(f"target_index {target_index} out of range for {refs[1]} source(s)")
    for x, label in zip((*cols, references, mixtures), (*labels, "references", "mixtures")):
        _check_audio(x, label)


def _score_items(cols: list, labels: list[str], references: Any, mixtures: Any, target_index: int, version: str,
                 filter_length: int, silence_threshold: float, chunk_size: int) -> dict[str, np.ndarray]:
    """Every metric of every (item, estimate), item chunk by item chunk (float64 only per chunk).

    Per chunk, the estimates and the mixture form one ``(chunk, n_est + 1, time)`` stack scored by
    a single :func:`_bss_core` call. Returns :data:`SCORE_COLUMNS` plus ``skipped`` and
    ``skip_reason``, each ``(batch, n_est)``.
    """
    _check_version(version)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    _check_table_inputs(cols, labels, references, mixtures, target_index)
    n, k = mixtures.shape[0], len(cols)
    out = {c: np.full((n, k), np.nan) for c in SCORE_COLUMNS}
    reasons = np.empty((n, k), dtype=object)
    for lo in range(0, n, chunk_size):
        sl = slice(lo, lo + chunk_size)
        refs = _as_float64(references[sl], "references")
        mix = _as_float64(mixtures[sl], "mixtures")
        est = np.stack([_as_float64(c[sl], "estimates") for c in cols] + [mix], axis=1)  # (c, k + 1, time)
        reasons[sl] = _skip_reasons(is_silent(est[:, :k], silence_threshold), is_silent(refs, silence_threshold),
                                    is_silent(mix, silence_threshold), target_index)
        bss = _bss_core(est, refs, target_index, version, filter_length, chunk_size, silence_threshold)
        si = si_sdr(est, np.broadcast_to(refs[:, target_index : target_index + 1], est.shape))
        out["sdr"][sl], out["sir"][sl], out["sar"][sl] = bss["sdr"][:, :k], bss["sir"][:, :k], bss["sar"][:, :k]
        out["sdr_mix"][sl] = bss["sdr"][:, k:]
        out["si_sdr"][sl], out["si_sdr_mix"][sl] = si[:, :k], si[:, k:]
    out["sdri"] = out["sdr"] - out["sdr_mix"]
    out["si_sdri"] = out["si_sdr"] - out["si_sdr_mix"]
    skipped = reasons.astype(bool)
    for c in SCORE_COLUMNS:
        out[c][skipped] = np.nan
    return {**out, "skipped": skipped, "skip_reason": reasons}


def evaluate_batch(estimates: Any, references: Any, mixtures: Any, target_index: int = 0, *,
                   version: str = "v4", filter_length: int = FILTER_LENGTH,
                   silence_threshold: float = SILENCE_L1, chunk_size: int = DEFAULT_CHUNK,
                   metadata: Mapping[str, Sequence] | pd.DataFrame | None = None) -> pd.DataFrame:
    """Evaluate a batch of target estimates; one row per item (the paper's protocol).

    Columns: ``item``; BSS Eval ``sdr``, ``sir``, ``sar`` of the estimate and ``sdr_mix``
    of the mixture, ``sdri = sdr - sdr_mix`` (see :func:`bss_eval`); ``si_sdr``,
    ``si_sdr_mix``, ``si_sdri``; ``skipped`` and ``skip_reason``; then the ``metadata``
    columns (e.g. the query modality, for ``summarize(df, by=["modality"])``).
    Items whose estimate, mixture or any reference source is silent
    (:func:`is_silent`) are skipped: NaN metrics, ``skipped=True``, a reason.
    To score several estimates of the same items, :func:`evaluate_many` is much faster.

    Raises ``ValueError`` on shape mismatch or on NaN/inf input (naming the item).

    Shape:
        estimates: ``(batch, time)`` target estimates.
        references: ``(batch, n_src, time)`` all sources; row ``target_index`` is the target.
        mixtures: ``(batch, time)``.
    """
    res = _score_items([_as_array(estimates)], ["estimates"], _as_array(references), _as_array(mixtures),
                       target_index, version, filter_length, silence_threshold, chunk_size)
    df = pd.DataFrame({"item": np.arange(res["skipped"].shape[0]), **{c: v[:, 0] for c, v in res.items()}})
    return _join_metadata(df, metadata)


def evaluate_many(estimates: Mapping[Any, Any] | Any, references: Any, mixtures: Any, target_index: int = 0, *,
                  version: str = "v4", filter_length: int = FILTER_LENGTH, silence_threshold: float = SILENCE_L1,
                  chunk_size: int = DEFAULT_CHUNK,
                  metadata: Mapping[str, Sequence] | pd.DataFrame | None = None) -> pd.DataFrame:
    """Evaluate several estimates of the same items (systems x queries) in one BSS Eval pass.

    Returns exactly what one :func:`evaluate_batch` call per estimate returns, concatenated in
    the estimates' order (all items of the first estimate, then the next...), with a leading
    column ``estimate`` (the mapping key, or the index ``0..n_est-1`` of an array). The
    estimates of an item share its reference projections (see the module docstring), so this
    costs about one :func:`evaluate_batch` call, not ``n_est``. Skipping is per row: a silent
    estimate skips its own row only; a silent source or mixture skips the item's rows of every
    estimate. ``metadata`` (one row per item) is repeated for each estimate.

    Inputs are converted to float64 one chunk of ``chunk_size`` items at a time, so float32 torch
    tensors (and views of a ``(batch, n_queries, time)`` output) can be passed as they are.

    Raises ``ValueError`` on shape mismatch or NaN/inf input (naming the estimate and item), or no estimate.

    Shape:
        estimates: mapping ``name -> (batch, time)``, or an array ``(batch, n_est, time)``.
        references: ``(batch, n_src, time)`` all sources; row ``target_index`` is the target.
        mixtures: ``(batch, time)``.
        Returns ``n_est * batch`` rows.
    """
    names, cols = _estimate_columns(estimates)
    res = _score_items(cols, [f"estimates[{name!r}]" for name in names], _as_array(references),
                       _as_array(mixtures), target_index, version, filter_length, silence_threshold, chunk_size)
    n = res["skipped"].shape[0]
    keys = np.empty(len(names), dtype=object)
    keys[:] = names  # element-wise, so tuple names stay tuples
    df = pd.DataFrame({"estimate": pd.Series(np.repeat(keys, n)).infer_objects(),
                       "item": np.tile(np.arange(n), len(names)), **{c: v.T.reshape(-1) for c, v in res.items()}})
    return _join_metadata(df, metadata, repeat=len(names))


def _join_metadata(df: pd.DataFrame, metadata: Mapping[str, Sequence] | pd.DataFrame | None,
                   repeat: int = 1) -> pd.DataFrame:
    """Append per-item metadata columns (length must equal the batch), repeated ``repeat`` times."""
    if metadata is None:
        return df
    meta = pd.DataFrame(metadata).reset_index(drop=True)
    if len(meta) * repeat != len(df):
        raise ValueError(f"metadata has {len(meta)} rows for a batch of {len(df) // repeat}")
    clash = sorted(set(meta.columns) & set(df.columns))
    if clash:
        raise ValueError(f"metadata columns {clash} clash with metric columns")
    if repeat > 1:
        meta = pd.concat([meta] * repeat, ignore_index=True)
    return pd.concat([df, meta], axis=1)


def summarize(df: pd.DataFrame, by: str | Sequence[str] | None = None,
              metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, standard error, median and counts of each metric, per group.

    ``sem = std(x, ddof=1) / sqrt(n)`` over the non-skipped, non-NaN values ``x`` of a
    group (NaN when ``n < 2``; mean and median NaN when ``n == 0``). ``n_skipped`` counts
    the group's rows with ``skipped=True`` (0 if the frame has no such column).
    Infinite values are kept: BSS Eval gives SAR = +inf to an estimate with no artefact term
    (the unprocessed mixture, exactly target + interference) and SIR = +inf without interferers.
    A group holding any gets mean +inf (or -inf), the median of its values and sem NaN (an
    infinite spread); +inf and -inf together give mean and median NaN. No numpy warning.

    Returns one row per (group, metric): columns ``[*by, "metric", "mean", "sem",
    "median", "n", "n_skipped"]``. ``metrics`` defaults to :data:`SUMMARY_METRICS` present in ``df``.
    """
    by = [by] if isinstance(by, str) else list(by or [])
    metrics = [m for m in SUMMARY_METRICS if m in df.columns] if metrics is None else list(metrics)
    missing = [c for c in [*by, *metrics] if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the frame (has {list(df.columns)})")
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    rows = []
    for key, g in groups:
        skipped = g["skipped"].astype(bool) if "skipped" in g else pd.Series(False, index=g.index)
        for m in metrics:
            x = g.loc[~skipped, m].to_numpy(dtype=float)
            rows.append({**dict(zip(by, key)), "metric": m, **_stats(x[~np.isnan(x)]),
                         "n_skipped": int(skipped.sum())})
    return pd.DataFrame(rows, columns=[*by, "metric", "mean", "sem", "median", "n", "n_skipped"])


def _stats(x: np.ndarray) -> dict[str, float]:
    """Mean, standard error (ddof=1), median and count of a 1-D array without NaN (infinite values: see
    :func:`summarize`; handled here because ``np.std`` would compute ``inf - inf`` and warn)."""
    n = len(x)
    infinite = np.isinf(x)
    if infinite.any():
        signs = np.unique(np.sign(x[infinite]))
        value = float(signs[0]) * np.inf if len(signs) == 1 else np.nan
        return {"mean": value, "sem": np.nan, "median": float(np.median(x)) if len(signs) == 1 else np.nan, "n": n}
    return {"mean": float(x.mean()) if n else np.nan,
            "sem": float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan,
            "median": float(np.median(x)) if n else np.nan, "n": n}
