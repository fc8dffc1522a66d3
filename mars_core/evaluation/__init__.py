"""Evaluation: the trainers' validation and the per-query-modality protocol (docs/method.md section 8).

* :mod:`.validation` -- the fixed validation mixtures and the SDR / SI-SDRi that pick the best step
  (supervised and RL trainers alike);
* :mod:`.evaluate` -- eval sets, deterministic-mask separation, judge scores, result tables;
* :mod:`.query_diagnostics` -- probes of whether a separator follows its query.

The benchmark harness that compares trained systems sits a floor above the trainers, in
:mod:`mars_core.benchmark`; this package sits below them (it imports no trainer).
"""
