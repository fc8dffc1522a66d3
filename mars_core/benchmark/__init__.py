"""The benchmark: every system, every query, both test splits, random and hard pairs (docs/method.md section 8).

One harness evaluates the reference systems and the learned separators on the **same**
seeded test mixtures with the functions of :mod:`mars_core.evaluation.evaluate` (nothing here
re-implements separation or BSS Eval):

* systems: ``mixture``, ``mixture / 2``, ``oracle IBM``, ``oracle IRM`` (and the judge's
  score of the ``clean target``), the reference systems of
  :func:`~mars_core.evaluation.evaluate.evaluate_references`; the learned systems of the registry
  :data:`SYSTEMS` (name -> loader). All estimates of a test set are scored in one BSS Eval
  pass (:func:`~mars_core.evaluation.evaluate.evaluate_systems`);
* queries: :data:`~mars_core.queries.EVAL_MODALITIES` (text, image, audio, omni);
* test sets: ``test`` (in-domain) and ``test_timbre`` (an independent soundfont), each with
  random pairs and hard (same-family) pairs;
* metrics: SDR, SIR, SAR, SI-SDRi, the judge's semantic scores and, against the
  interferer's own prompt (drawn by :func:`~mars_core.queries.item_queries`),

      contamination = 100 cos(judge(y^), judge(interferer prompt)),
      semantic_margin = semantic - contamination = 100 (cos_target - cos_interferer)

  (:func:`~mars_core.metrics.contamination_score`; margin here in percentage points);
* statistics: mean, standard error, median, counts per (test set, pair type, system,
  query, metric), and a **paired bootstrap** of the mean difference between every learned
  system and the supervised baseline over the same items (:func:`paired_bootstrap`).

Outputs (all written atomically): ``items.csv`` (one row per item x system x query x test
set), ``summary.csv``, ``bootstrap.csv``, ``run.json`` (command, profile, date, machine,
git commit, seed, wall time, missing systems), ``histories.json`` (training histories, for
the curves) and ``examples.npz`` (waveforms of one test item, for the spectrograms).
The same seed gives byte-identical CSV files. Sentences and the comparison with the paper's
numbers are in :mod:`.reading`.

Modules: :mod:`.tables` (names and tables), :mod:`.bootstrap` (paired bootstrap),
:mod:`.registry` (the learned systems), :mod:`.harness` (test sets, scoring, the run),
:mod:`.io` (results on disk), :mod:`.cli` (the command line), :mod:`.figures`, :mod:`.reading`
(sentences) and :mod:`.widgets` (the listening view).

Command line::

    python -m mars_core.benchmark --profile cpu [--out DIR] [--systems supervised plus ...]
    python -m mars_core.benchmark figures --csv DIR --out figures/
"""

from .bootstrap import bootstrap_mean_ci, paired_bootstrap
from .harness import (BenchmarkResult, BenchmarkScorer, TestSet, evaluate_test_set, item_signals, load_test_set,
                      run_benchmark, save_results)
from .io import SavedResults, git_commit, load_results, machine_info, portable_path
from .registry import (SYSTEM_ALIASES, SYSTEM_DESCRIPTIONS, SYSTEMS, BenchmarkContext, Loader, SystemModel,
                       SystemUnavailable, load_aligned_no_rl, load_rl, load_supervised, load_systems, resolve_systems)
from .tables import (BASELINE, CI_LEVEL, METRIC_NAMES, METRIC_UNITS, METRICS, N_RESAMPLES, PAIR_TYPES,
                     REFERENCE_SYSTEMS, SPLITS, bootstrap_table, summary_table, tidy_items, wide_table)

__all__ = ["BASELINE", "CI_LEVEL", "METRICS", "METRIC_NAMES", "METRIC_UNITS", "N_RESAMPLES", "PAIR_TYPES",
           "REFERENCE_SYSTEMS", "SPLITS", "SYSTEMS", "SYSTEM_ALIASES", "SYSTEM_DESCRIPTIONS", "BenchmarkContext",
           "BenchmarkResult", "BenchmarkScorer", "Loader", "SavedResults", "SystemModel", "SystemUnavailable",
           "TestSet", "bootstrap_mean_ci", "bootstrap_table", "evaluate_test_set", "git_commit", "item_signals",
           "load_aligned_no_rl", "load_results", "load_rl", "load_supervised", "load_systems", "load_test_set",
           "machine_info", "paired_bootstrap", "portable_path", "resolve_systems", "run_benchmark", "save_results",
           "summary_table", "tidy_items", "wide_table"]
