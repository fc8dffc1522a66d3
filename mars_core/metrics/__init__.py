"""Separation metrics: BSS Eval (SDR, SIR, SAR), SI-SDR, semantic and contamination scores.

One module per concern, re-exported here (``from mars_core.metrics import X`` is the public path):
``checks`` (input checks, the silence rule), ``bss`` (BSS Eval v4/v3), ``scale_invariant`` (SI-SDR,
SI-SDRi), ``tables`` (``evaluate_batch``/``evaluate_many``/``summarize``), ``embedding`` (semantic
and contamination scores).

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

from .bss import BSS_VERSIONS, DEFAULT_CHUNK, FILTER_LENGTH, SINGULAR_LOAD, bss_eval, sdr  # noqa: F401
from .checks import SILENCE_L1, is_silent  # noqa: F401
from .embedding import contamination_score, semantic_score
from .scale_invariant import SI_SDR_EPS, si_sdr, si_sdri  # noqa: F401
from .tables import SCORE_COLUMNS, SUMMARY_METRICS, evaluate_batch, evaluate_many, summarize  # noqa: F401

__all__ = ["bss_eval", "sdr", "si_sdr", "si_sdri", "is_silent", "evaluate_batch", "evaluate_many", "summarize",
           "semantic_score", "contamination_score"]
