"""Separation metrics: BSS Eval (SDR, SIR, SAR), SI-SDR, semantic and contamination scores.

Conventions (Asteroid): every metric is *higher is better* and takes
``(estimate, reference)`` in that order. ``bss_eval``/``sdr`` always return numpy
float64; ``si_sdr``, ``semantic_score`` and ``contamination_score`` return the
type they were given (torch in, torch out: usable inside a loss or a reward).

BSS Eval, two versions (docs/method.md section 8; docs/environment.md section 6)
--------------------------------------------------------------------------------
Let ``s`` be the target reference, ``s_hat`` the estimate, ``P_t`` the orthogonal
projection on the span of the target delayed by 0..L-1 samples (a distortion filter
of ``L = 512`` taps, the default of museval and mir_eval) and ``P_a`` the projection
on the span of *all* sources (target and interferers) delayed the same way. Then

    SIR = 10 log10(|P_t s_hat|^2 / |P_a s_hat - P_t s_hat|^2)
    SAR = 10 log10(|P_a s_hat|^2 / |s_hat - P_a s_hat|^2)

in both versions, and the SDR differs:

* ``version="v4"`` (default, the paper's protocol): BSS Eval v4 as computed by
  ``museval.metrics.bss_eval(references, estimates, window=np.inf)`` with its default
  ``bsseval_sources_version=False`` (the "images" decomposition) — the call used by
  OmniSep's evaluation. For mono signals its SDR is the plain signal-to-noise ratio
  ``10 log10(|s|^2 / |s_hat - s|^2)``: *not* invariant to gain or filtering.
* ``version="v3"``: ``mir_eval.separation.bss_eval_sources`` (and
  ``fast_bss_eval.bss_eval_sources``), where the SDR forgives the 512-tap filter:
  ``10 log10(|P_t s_hat|^2 / |s_hat - P_t s_hat|^2)``.

The projections come from ``fast_bss_eval``'s **numpy** backend (never its torch
backend: batched ``torch.linalg.solve`` with 2 threads silently returns wrong
results on some CPUs). Items are processed in chunks to bound memory.

Silence
-------
A signal is *silent* when ``sum(|x|) <= SILENCE_L1`` (1e-5), the validity test of
CLIPSep/OmniSep's evaluation. BSS Eval returns NaN for items whose target
reference, any interferer, or estimate is silent; :func:`evaluate_batch` marks them
``skipped`` with a reason and :func:`summarize` counts them.

Many estimates of the same items
--------------------------------
The expensive part of BSS Eval is the reference side: the sources' correlations, their
(block-)Toeplitz systems and the factorisation of those. It depends on the item only, so
:func:`evaluate_many` scores every estimate of an item (all systems, all queries, and the
mixture) as columns of one right-hand side: ``K`` estimates cost about one solve instead of
``K``, with the same values as ``K`` calls of :func:`evaluate_batch`. Silence is judged per
estimate: a silent estimate skips its own row, not the item's other estimates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .inputs import validate_audio

__all__ = ["bss_eval", "sdr", "si_sdr", "si_sdri", "is_silent", "evaluate_batch", "evaluate_many", "summarize",
           "semantic_score", "contamination_score"]

FILTER_LENGTH = 512
"""Distortion-filter taps of BSS Eval (museval and mir_eval default)."""
SILENCE_L1 = 1e-5
"""A signal with ``sum(|x|) <= SILENCE_L1`` is silent (CLIPSep/OmniSep evaluation rule)."""
SI_SDR_EPS = 1e-8
"""Additive energy floor of :func:`si_sdr`; keeps it finite for silent inputs."""
BSS_VERSIONS = ("v4", "v3")
"""``v4``: museval ``bss_eval(window=inf)`` (paper); ``v3``: mir_eval ``bss_eval_sources``."""
DEFAULT_CHUNK = 4
"""Items per batched solve: a 2-source chunk of 4 holds about 32 MB of Toeplitz systems, plus
cross-correlations that grow with the estimates per item (:func:`evaluate_many`)."""
SINGULAR_LOAD = 1e-10
"""Diagonal loading (signals are unit-norm) used only when a Gram matrix is exactly singular,
e.g. an interferer identical to the target; museval falls back to least squares there."""
SUMMARY_METRICS = ("sdr", "sir", "sar", "sdri", "si_sdr", "si_sdri")
"""Columns :func:`summarize` reports by default (those present in the frame)."""


# ----------------------------------------------------------------------------- helpers
def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _as_float64(x: Any, name: str) -> np.ndarray:
    """Any array-like (torch tensors detached, moved to CPU) as a float64 numpy array."""
    if _is_torch(x):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a time axis; got a scalar")
    return arr


def _check_audio(x: Any, name: str, min_samples: int | None = None) -> None:
    """The shared audio checks at a metric's entry (:func:`mars_core.inputs.validate_audio`): float
    dtype (integer PCM is refused: an int16 estimate against a float reference would score -93 dB),
    finite (naming the first bad item), non-empty time axis, ``min_samples`` for BSS Eval's filter."""
    validate_audio(x, name, min_samples=min_samples, allow_empty_batch=True,
                   min_reason=None if min_samples is None else f"filter_length={min_samples} of BSS Eval's "
                   "distortion filter")


def _check_finite(x: Any, name: str) -> None:
    """Raise ``ValueError`` naming the first item (index over leading dims) holding NaN/inf.

    Shape:
        x: ``(*batch, ..., time)``; the item index is taken over the first axis.
    """
    if _is_torch(x):
        import torch

        bad = ~torch.isfinite(x.detach())
        if not bool(bad.any()):
            return
        bad = bad.cpu().numpy()
    else:
        bad = ~np.isfinite(x)
        if not bad.any():
            return
    if bad.ndim <= 1:
        raise ValueError(f"{name} contains NaN or inf")
    item = int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))
    raise ValueError(f"{name}: item {item} contains NaN or inf")


def is_silent(x: Any, threshold: float = SILENCE_L1) -> np.ndarray:
    """True where a signal is silent: ``sum_t |x_t| <= threshold``.

    Shape:
        x: ``(*batch, time)`` numpy or torch. Returns a bool array ``(*batch,)``.
    """
    return np.abs(_as_float64(x, "x")).sum(axis=-1) <= threshold


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


# ----------------------------------------------------------------------------- SI-SDR
def si_sdr(estimate: Any, reference: Any, zero_mean: bool = True, eps: float = SI_SDR_EPS) -> Any:
    """Scale-invariant SDR (dB), batched over leading dims; numpy or torch (differentiable).

    With ``e = s_hat`` and ``s`` (means removed when ``zero_mean``):

        alpha = <e, s> / (|s|^2 + eps),   SI-SDR = 10 log10((|alpha s|^2 + eps) / (|e - alpha s|^2 + eps))

    ``eps`` keeps the value finite for silent inputs: both silent -> 0 dB; silent
    reference -> ``10 log10(eps / (|e|^2 + eps))``; silent estimate -> 0 dB. Those
    numbers mean nothing, which is why :func:`evaluate_batch` skips silent items.

    Shape:
        estimate, reference: ``(*batch, time)``, same shape. Returns ``(*batch,)``,
        torch for torch input, float64 numpy otherwise.
    """
    est, ref = _pair(estimate, reference)
    if zero_mean:
        est = est - est.mean(-1, keepdims=True)
        ref = ref - ref.mean(-1, keepdims=True)
    alpha = (est * ref).sum(-1, keepdims=True) / ((ref**2).sum(-1, keepdims=True) + eps)
    target = alpha * ref
    ratio = ((target**2).sum(-1) + eps) / (((est - target) ** 2).sum(-1) + eps)
    return 10.0 * (ratio.log10() if _is_torch(ratio) else np.log10(ratio))


def _pair(estimate: Any, reference: Any, names: tuple[str, str] = ("estimate", "reference")) -> tuple[Any, Any]:
    """Validate an ``(estimate, reference)`` pair: float, same shape, finite, a time axis."""
    if _is_torch(estimate) != _is_torch(reference):
        raise TypeError(f"{names[0]} and {names[1]} must both be torch tensors or both be array-likes")
    _check_audio(estimate, names[0])  # before any float conversion: integer PCM is refused
    _check_audio(reference, names[1])
    if not _is_torch(estimate):
        estimate, reference = _as_float64(estimate, names[0]), _as_float64(reference, names[1])
    if tuple(estimate.shape) != tuple(reference.shape):
        raise ValueError(f"shape mismatch: {names[0]} {tuple(estimate.shape)} vs {names[1]} {tuple(reference.shape)}")
    return estimate, reference


def si_sdri(estimate: Any, reference: Any, mixture: Any, zero_mean: bool = True, eps: float = SI_SDR_EPS) -> Any:
    """SI-SDR improvement (dB): ``si_sdr(estimate, reference) - si_sdr(mixture, reference)``.

    Shape:
        estimate, reference, mixture: ``(*batch, time)``, same shape. Returns ``(*batch,)``.
    """
    _pair(mixture, reference, ("mixture", "reference"))
    return si_sdr(estimate, reference, zero_mean, eps) - si_sdr(mixture, reference, zero_mean, eps)


# ----------------------------------------------------------------------------- evaluation table
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


# ----------------------------------------------------------------------------- embedding scores
def _cosine(a: Any, b: Any, name_a: str, name_b: str) -> Any:
    """Row-wise cosine similarity after L2-normalising each row; broadcasts leading dims.

    Shape:
        a: ``(*batch, dim)``; b: ``(*batch, dim)`` or ``(dim,)``. Returns ``(*batch,)``.
    """
    if _is_torch(a) != _is_torch(b):
        raise TypeError(f"{name_a} and {name_b} must both be torch tensors or both be array-likes")
    if not _is_torch(a):
        a, b = _as_float64(a, name_a), _as_float64(b, name_b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embedding sizes differ: {name_a} {tuple(a.shape)} vs {name_b} {tuple(b.shape)}")
    unit = []
    for x, name in ((a, name_a), (b, name_b)):
        _check_finite(x, name)
        norm = x.norm(dim=-1, keepdim=True) if _is_torch(x) else np.linalg.norm(x, axis=-1, keepdims=True)
        zero = (norm == 0).reshape(-1)
        if bool(zero.any()):
            row = int(np.argmax(zero.cpu().numpy() if _is_torch(zero) else zero))
            raise ValueError(f"{name}: row {row} has zero norm; its cosine is undefined")
        unit.append(x / norm)
    return (unit[0] * unit[1]).sum(-1)


def semantic_score(estimate_embeddings: Any, target_embeddings: Any) -> Any:
    """Semantic score ``100 * cos(e_est, e_target)`` (the paper's CLAP score, in percent).

    Use embeddings from an encoder *other* than the reward encoder (docs/method.md section 8).
    Rows are L2-normalised inside; a zero row raises ``ValueError``.

    Shape:
        estimate_embeddings: ``(batch, dim)``; target_embeddings: ``(batch, dim)`` or
        ``(dim,)`` (one query for all). Returns ``(batch,)``, torch for torch input.
    """
    return 100.0 * _cosine(estimate_embeddings, target_embeddings, "estimate_embeddings", "target_embeddings")


def contamination_score(estimate_embeddings: Any, target_embeddings: Any, interferer_embeddings: Any) -> dict:
    """How much the estimate sounds like the interferer, and the target-vs-interferer margin.

    Returns ``{"contamination": 100 * cos(e_est, e_interf),
    "margin": cos(e_est, e_target) - cos(e_est, e_interf)}``. The margin is in raw
    cosine units (not x100), comparable to the paper's target-vs-mixture similarity gap.

    Shape:
        estimate_embeddings: ``(batch, dim)``; target_embeddings and interferer_embeddings:
        ``(batch, dim)`` or ``(dim,)``. Each value is ``(batch,)``, torch for torch input.
    """
    cos_t = _cosine(estimate_embeddings, target_embeddings, "estimate_embeddings", "target_embeddings")
    cos_i = _cosine(estimate_embeddings, interferer_embeddings, "estimate_embeddings", "interferer_embeddings")
    return {"contamination": 100.0 * cos_i, "margin": cos_t - cos_i}
