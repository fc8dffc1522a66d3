"""Supervised mix-and-separate training of the query-conditioned separator (docs/method.md section 3).

One step, for ``B = batch_mixtures`` training mixtures:

1. mixtures ``step * B ... step * B + B - 1`` of the ``train`` split (each a pure function of
   its index, so a step's data depends on nothing but the step);
2. every source ``n`` of a mixture is an item with its own query: Query-Mixup
   ``q = w_v n(e_v) + w_t n(e_t) + w_a n(e_a)`` with ``w ~ U(0, 1)^3 / sum`` drawn from
   ``item_rng(seed, "query-mixup", step)`` and embeddings from the cached
   :class:`~mars_core.queries.QueryBank`;
3. target in the warped domain: ``M = 1[|S_n| > 0.5 |X|]`` (or the ratio mask);
4. loss: ``mean(w * BCE(P, M))`` with ``w = clamp(log(1 + |X|), 1e-3, 10)`` (or weighted L1);
5. Adam(W) with linear warm-up and linear decay to ``final_lr_ratio x lr``, gradient norm
   clipped to ``grad_clip``.

The U-Net does not see the query (it meets the K feature maps only at the output), so the
``n_sources`` items of one mixture share one U-Net pass (:func:`mars_core.separator.multi_query_logits`).

Validation every ``eval_every`` steps: SDR (BSS Eval v4, whole signal) and SI-SDRi of the
first ``val_mixtures`` ``val`` mixtures with the deterministic mask ``P`` and the omni
query; the best step's weights are kept. ``last.pt`` (model, optimiser, scheduler, step,
history, best weights, RNG state, run config) is written atomically every ``ckpt_every``
steps: a killed run started again resumes and reaches the same weights as an
uninterrupted one.

Modules: :mod:`.loss` (the losses), :mod:`.trainer` (the loop), :mod:`.loader` (a step's mixtures, in
DataLoader workers with ``num_workers > 0``: the same mixtures), :mod:`.store` (saved separators,
``load_or_train``); the multi-query forward pass is :func:`mars_core.separator.multi_query_logits`,
the validation :mod:`mars_core.evaluation.validation`, the run bookkeeping :mod:`mars_core.runs`.

Command line (:mod:`.cli`; writes ``final.pt`` in the run directory and, with ``--out``, a copy)::

    python -m mars_core.supervised --profile cpu --out checkpoints/separator_cpu.pt
"""

from .loss import bce_weight, mask_targets, supervised_loss, weighted_bce, weighted_l1
from .store import SEPARATOR_KIND, load_or_train, load_separator, save_separator, shipped_separator
from .trainer import (HISTORY_KEYS, check_config, lr_factor, make_optimizer, run_config, train_dataset,
                      train_supervised, training_batch)

__all__ = ["HISTORY_KEYS", "SEPARATOR_KIND", "bce_weight", "check_config", "load_or_train", "load_separator",
           "lr_factor", "make_optimizer", "mask_targets", "run_config", "save_separator", "shipped_separator",
           "supervised_loss", "train_dataset", "train_supervised", "training_batch", "weighted_bce", "weighted_l1"]
