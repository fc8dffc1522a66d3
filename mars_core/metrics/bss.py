"""BSS Eval SDR, SIR and SAR (versions v4 and v3), batched; the equations are in :mod:`mars_core.metrics`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import SILENCE_L1, _as_float64, _check_audio, is_silent

FILTER_LENGTH = 512
"""Distortion-filter taps of BSS Eval (museval and mir_eval default)."""
BSS_VERSIONS = ("v4", "v3")
"""``v4``: museval ``bss_eval(window=inf)`` (paper); ``v3``: mir_eval ``bss_eval_sources``."""
DEFAULT_CHUNK = 4
"""Items per batched solve: a 2-source chunk of 4 holds about 32 MB of Toeplitz systems, plus
cross-correlations that grow with the estimates per item (:func:`mars_core.metrics.evaluate_many`)."""
SINGULAR_LOAD = 1e-10
"""Diagonal loading (signals are unit-norm) used only when a Gram matrix is exactly singular,
e.g. an interferer identical to the target; museval falls back to least squares there."""


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)``; a zero (or round-off negative) denominator gives +inf."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.inf)
    ok = den > 0
    with np.errstate(divide="ignore"):
        out[ok] = 10.0 * np.log10(num[ok] / den[ok])
    return out


def _check_version(version: str) -> None:
    if version not in BSS_VERSIONS:
        raise ValueError(f"version must be one of {BSS_VERSIONS}, got {version!r}")


# ----------------------------------------------------------------------------- BSS Eval
def _source_stack(est: np.ndarray, reference: Any, interferer: Any, target_index: int) -> tuple[np.ndarray, int]:
    """Reference sources as ``(*batch, n_src, time)`` and the target's row in it."""
    ref = _as_float64(reference, "reference")
    if ref.ndim == est.ndim:
        stack = [ref[..., None, :]]
        if interferer is not None:
            itf = _as_float64(interferer, "interferer")
            itf = itf[..., None, :] if itf.ndim == est.ndim else itf
            if itf.ndim != est.ndim + 1 or itf.shape[:-2] != est.shape[:-1] or itf.shape[-1] != est.shape[-1]:
                raise ValueError(f"interferer shape {tuple(itf.shape)} does not fit estimate shape {est.shape}: "
                                 "expected (*batch, time) or (*batch, n_interferers, time)")
            stack.append(itf)
        if target_index != 0:
            raise ValueError("target_index applies only when reference holds all sources (*batch, n_src, time)")
        ref = np.concatenate(stack, axis=-2)
    elif ref.ndim == est.ndim + 1:
        if interferer is not None:
            raise ValueError("pass either reference=(*batch, n_src, time) or reference + interferer, not both")
    else:
        raise ValueError(f"reference must be (*batch, time) or (*batch, n_src, time) for an estimate of shape "
                         f"{est.shape}; got {ref.shape}")
    if ref.shape[:-2] != est.shape[:-1] or ref.shape[-1] != est.shape[-1]:
        raise ValueError(f"shape mismatch: estimate {est.shape} vs references {ref.shape} (*batch, n_src, time)")
    if not 0 <= target_index < ref.shape[-2]:
        raise ValueError(f"target_index {target_index} out of range for {ref.shape[-2]} source(s)")
    return ref, target_index


def _unit_norm(x: np.ndarray) -> np.ndarray:
    """Scale each signal to unit L2 norm (projections and coherences are scale-free)."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _coherences(est: np.ndarray, refs: np.ndarray, target_index: int, filter_length: int,
                chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared cosines ``|P_t e|^2/|e|^2`` and ``|P_a e|^2/|e|^2`` via fast_bss_eval (numpy).

    Shape:
        est: ``(n, n_est, time)``; refs: ``(n, n_src, time)``; returns two ``(n, n_est)``.
    """
    from fast_bss_eval.numpy import square_cosine_metrics

    def solve(r: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            c_pair, c_all = square_cosine_metrics(r, e, filter_length=filter_length, pairwise=True)
        except np.linalg.LinAlgError:  # exactly singular Gram matrix (e.g. duplicated sources)
            if len(r) > 1:  # retry item by item: only the singular ones get loaded
                parts = [solve(r[k : k + 1], e[k : k + 1]) for k in range(len(r))]
                return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            c_pair, c_all = square_cosine_metrics(r, e, filter_length=filter_length, pairwise=True,
                                                  load_diag=SINGULAR_LOAD)
        return c_pair[:, target_index, :], c_all[:, target_index, :]  # (n, n_src, n_est) -> target row

    coh_t = np.empty(est.shape[:2])
    coh_a = np.empty(est.shape[:2])
    for lo in range(0, est.shape[0], chunk_size):
        sl = slice(lo, lo + chunk_size)
        coh_t[sl], coh_a[sl] = solve(_unit_norm(refs[sl]), _unit_norm(est[sl]))
    return coh_t, coh_a


def _ratios(est: np.ndarray, target: np.ndarray, coh_t: np.ndarray, coh_a: np.ndarray,
            n_src: int, version: str) -> dict[str, np.ndarray]:
    """SDR/SIR/SAR (dB) from the two coherences (module docstring equations).

    Shape:
        est, target: ``(n, time)``; coh_t, coh_a: ``(n,)``.
    """
    if version == "v4":
        sdr = _db(np.sum(target**2, -1), np.sum((est - target) ** 2, -1))
    else:
        sdr = _db(coh_t, 1.0 - coh_t)
    sir = _db(coh_t, coh_a - coh_t) if n_src > 1 else np.full(coh_t.shape, np.inf)
    return {"sdr": sdr, "sir": sir, "sar": _db(coh_a, 1.0 - coh_a)}


def _bss_core(est: np.ndarray, refs: np.ndarray, target_index: int, version: str, filter_length: int,
              chunk_size: int, silence_threshold: float) -> dict[str, np.ndarray]:
    """BSS Eval of the target row for ``n_est`` estimates per item, solved together; NaN where silent.

    The ``n_est`` estimates of an item share its sources' Toeplitz systems (one factorisation,
    ``n_est`` right-hand sides). Silence is per (item, estimate): a silent source voids the item's
    row, a silent estimate only its own entry (it is solved as the target, then discarded).

    Shape:
        est: ``(n, n_est, time)``; refs: ``(n, n_src, time)``; returns ``(n, n_est)`` arrays.
    """
    if est.shape[-1] < filter_length:
        raise ValueError(f"signals have {est.shape[-1]} samples, fewer than filter_length={filter_length}")
    if not silence_threshold >= 0:
        raise ValueError(f"silence_threshold must be >= 0, got {silence_threshold}")
    ok = ~is_silent(refs, silence_threshold).any(-1)
    silent = is_silent(est, silence_threshold) | ~ok[:, None]
    out = {k: np.full(est.shape[:2], np.nan) for k in ("sdr", "sir", "sar")}
    if ok.any():
        target = np.broadcast_to(refs[ok][:, target_index : target_index + 1], est[ok].shape)
        e = np.where(silent[ok][..., None], target, est[ok])  # a placeholder keeps the unit norm defined
        coh_t, coh_a = _coherences(e, refs[ok], target_index, filter_length, chunk_size)
        res = _ratios(e, target, coh_t, coh_a, refs.shape[1], version)
        for k, v in res.items():
            out[k][ok] = np.where(silent[ok], np.nan, v)
    return out


def bss_eval(estimate: Any, reference: Any, *, interferer: Any = None, target_index: int = 0,
             version: str = "v4", filter_length: int = FILTER_LENGTH, chunk_size: int = DEFAULT_CHUNK,
             silence_threshold: float = SILENCE_L1) -> dict[str, np.ndarray]:
    """BSS Eval SDR, SIR, SAR (dB) of the target row, whole signal as one window, batched.

    Two ways to give the sources:

    * ``reference`` = target ``(*batch, time)`` plus ``interferer`` ``(*batch, time)`` or
      ``(*batch, n_interferers, time)``: the source set is ``(target, interferers...)``;
    * ``reference`` = all sources ``(*batch, n_src, time)`` and ``target_index``: the row
      ``target_index`` is the target (harness form: ``references[:, target_index]``).

    Without interferers SIR is +inf (museval's single-source convention). Items whose
    estimate or any source is silent (see :func:`is_silent`) get NaN. An estimate that
    exactly equals its projection gives +inf, as in museval. If the sources' Gram matrix is
    exactly singular (an interferer identical to the target), that item is solved with a
    tiny diagonal loading (:data:`SINGULAR_LOAD`) instead of raising.

    Args:
        version: ``"v4"`` (museval ``bss_eval(window=inf)``, the paper) or ``"v3"``
            (mir_eval ``bss_eval_sources``); see the module docstring.
        filter_length: distortion-filter taps (512 in museval and mir_eval).
        chunk_size: items per batched linear solve (memory bound).

    Shape:
        estimate: ``(*batch, time)`` numpy or torch (any float dtype; computed in float64).
        reference: ``(*batch, time)`` or ``(*batch, n_src, time)``.
        interferer: ``(*batch, time)`` or ``(*batch, n_interferers, time)``.
        Returns ``{"sdr", "sir", "sar"}``, each float64 ``(*batch,)``.
    """
    _check_version(version)
    _check_audio(estimate, "estimate", filter_length)
    _check_audio(reference, "reference", filter_length)
    if interferer is not None:
        _check_audio(interferer, "interferer", filter_length)
    est = _as_float64(estimate, "estimate")
    refs, t = _source_stack(est, reference, interferer, target_index)
    batch = est.shape[:-1]
    out = _bss_core(est.reshape(-1, 1, est.shape[-1]), refs.reshape(-1, *refs.shape[-2:]), t, version,
                    filter_length, chunk_size, silence_threshold)
    return {k: v[:, 0].reshape(batch) for k, v in out.items()}


def sdr(estimate: Any, reference: Any, *, version: str = "v4", filter_length: int = FILTER_LENGTH,
        silence_threshold: float = SILENCE_L1) -> np.ndarray:
    """SDR (dB) against a single reference, batched; NaN where either signal is silent.

    ``v4``: ``10 log10(|s|^2 / |s_hat - s|^2)`` (museval ``bss_eval`` with one source).
    ``v3``: ``10 log10(|P_t s_hat|^2 / |s_hat - P_t s_hat|^2)`` with a ``filter_length``-tap
    distortion filter (mir_eval ``bss_eval_sources`` with one source).

    Shape:
        estimate, reference: ``(*batch, time)`` numpy or torch. Returns float64 ``(*batch,)``.
    """
    _check_version(version)
    n_min = filter_length if version == "v3" else None
    _check_audio(estimate, "estimate", n_min)
    _check_audio(reference, "reference", n_min)
    est, ref = _as_float64(estimate, "estimate"), _as_float64(reference, "reference")
    if est.shape != ref.shape:
        raise ValueError(f"shape mismatch: estimate {est.shape} vs reference {ref.shape}")
    silent = is_silent(est, silence_threshold) | is_silent(ref, silence_threshold)
    out = np.full(est.shape[:-1], np.nan)
    if version == "v4":
        val = _db(np.sum(ref**2, -1), np.sum((est - ref) ** 2, -1))
        return np.where(silent, np.nan, val)
    if est.shape[-1] < filter_length:
        raise ValueError(f"signals have {est.shape[-1]} samples, fewer than filter_length={filter_length}")
    if (~silent).any():
        from fast_bss_eval.numpy import sdr_loss

        # pairwise form with one channel each: (n, 1, time) -> (n, 1, 1); the non-pairwise
        # form passes a stacked right-hand side that numpy >= 2 rejects.
        e, r = (_unit_norm(x[~silent])[:, None, :] for x in (est, ref))
        out[~silent] = -sdr_loss(e, r, filter_length=filter_length, pairwise=True)[:, 0, 0]
    return out
