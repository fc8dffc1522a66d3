"""An RL run's settings: the checks of an :class:`~mars_core.config.RLConfig` and the run config that keys
its run folder (:func:`run_config`, hashed by ``config_hash`` into ``$MARS_DATA/runs/rl/<profile>-<preset>-<hash>``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from ..config import Profile, RLConfig
from ..config_checks import check_counts, is_real as _is_real
from ..data.recipe import AUDIO_SPLITS
from ..queries import TRAIN_QUERIES, encoder_fingerprint


def _check_choices(cfg: RLConfig) -> None:
    if cfg.trainable not in ("all", "head"):
        raise ValueError(f"trainable must be 'all' or 'head', got {cfg.trainable!r}")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")
    if cfg.advantage not in ("group", "loo", "ema", "none"):
        raise ValueError(f"advantage must be 'group', 'loo', 'ema' or 'none', got {cfg.advantage!r}")
    if cfg.advantage in ("group", "loo") and cfg.group_size == 1:
        raise ValueError(f"group_size=1 with advantage={cfg.advantage!r}: a group of one sample has no other sample "
                         "to compare with, so every advantage would be 0 and nothing would be learned; use "
                         "group_size >= 2 or advantage='ema' (the paper's batch-as-group reading)")
    if cfg.select not in ("val", "last"):
        raise ValueError(f"select must be 'val' or 'last', got {cfg.select!r}")
    if cfg.signal_reference not in ("source", "remainder"):
        raise ValueError(f"signal_reference must be 'source' or 'remainder', got {cfg.signal_reference!r}")
    _check_estimator(cfg)
    for name in ("pure_query_prob", "hard_pair_prob"):
        v = getattr(cfg, name)
        if not (_is_real(v) and 0 <= v <= 1):
            raise ValueError(f"{name} must be a finite number in [0, 1], got {v!r}")
    if cfg.pure_query_prob > 0 and cfg.query != "mixup":
        raise ValueError(f"pure_query_prob applies to Query-Mixup training (query='mixup'), not query={cfg.query!r}")
    if cfg.advantage != "none" and all(_is_real(w) and w == 0 for w in (cfg.lambda_sem, cfg.lambda_sig, cfg.lambda_neg,
                                                                         cfg.lambda_res)):
        raise ValueError("every reward weight is 0 (lambda_sem, lambda_sig, lambda_neg, lambda_res): every reward and advantage would "
                         "be 0 and nothing would be learned; set one > 0 (or advantage='none' for the no-gradient control)")
    _check_train_split(cfg)
    if cfg.minibatches > cfg.batch_mixtures:
        raise ValueError(f"minibatches ({cfg.minibatches}) cannot exceed batch_mixtures ({cfg.batch_mixtures}): "
                         "minibatches split the batch's mixtures")


def _check_train_split(cfg: RLConfig) -> None:
    if cfg.train_split not in AUDIO_SPLITS:
        raise ValueError(f"train_split must be one of {AUDIO_SPLITS}, got {cfg.train_split!r}")
    if cfg.train_split == "train":
        return
    what = f"train_split={cfg.train_split!r} adapts without references (the clean sources are never read)"
    if not (_is_real(cfg.lambda_sig) and cfg.lambda_sig == 0) and cfg.signal_reference != "remainder":
        raise ValueError(f"{what}, but lambda_sig={cfg.lambda_sig!r} rewards SI-SDR against them (and the pathwise "
                         "estimator differentiates it): set lambda_sig=0 or signal_reference='remainder' (the "
                         "mixture less the other items' estimates)")
    if cfg.hard_pair_prob > 0:
        raise ValueError(f"{what}; hard_pair_prob draws same-family pairs from the train split: set it to 0")


def _check_estimator(cfg: RLConfig) -> None:
    if cfg.estimator not in ("score", "pathwise"):
        raise ValueError(f"estimator must be 'score' or 'pathwise', got {cfg.estimator!r}")
    if cfg.estimator == "pathwise" and not (_is_real(cfg.lambda_sig) and cfg.lambda_sig > 0):
        raise ValueError("estimator='pathwise' differentiates the signal term (SI-SDR) through the sampled masks; "
                         "with lambda_sig=0 it has nothing to differentiate: set lambda_sig > 0 or estimator='score'")
    if cfg.segment_terms not in ("all", "signal"):
        raise ValueError(f"segment_terms must be 'all' or 'signal', got {cfg.segment_terms!r}")
    if cfg.estimator == "pathwise" and cfg.reward_segments:
        raise ValueError("reward_segments applies to the score-function estimator (it shapes its advantages); "
                         "estimator='pathwise' differentiates each sample's reward itself: set reward_segments=0")


def _check_reals(cfg: RLConfig) -> None:
    for name in ("kappa", "kappa_end", "lr", "grad_clip"):
        v = getattr(cfg, name)
        if not _is_real(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    for name in ("clip_eps", "ema_decay"):
        v = getattr(cfg, name)
        if not _is_real(v) or not 0 < v < 1:
            raise ValueError(f"{name} must be a finite number in (0, 1), got {v!r}")
    for name in ("ent_coef", "kl_coef", "lambda_sem", "lambda_sig", "lambda_neg", "lambda_res", "weight_decay",
                 "query_noise"):
        v = getattr(cfg, name)
        if not _is_real(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def check_config(cfg: RLConfig) -> None:
    """Raise ``ValueError`` naming the first invalid field of an :class:`RLConfig`.

    Counts are integers (>= 1, or >= 0 for ``reward_batch_size``, ``max_skipped_updates`` and ``reward_segments``); every
    real number is finite (NaN and inf are refused): ``kappa``, ``kappa_end``, ``lr`` and ``grad_clip``
    > 0, ``clip_eps`` and ``ema_decay`` in (0, 1), coefficients and weight decay >= 0.
    """
    check_counts(cfg, ("steps", "batch_mixtures", "group_size", "ppo_epochs", "minibatches", "eval_every",
                       "ckpt_every", "val_mixtures"), ("reward_batch_size", "max_skipped_updates", "reward_segments"))
    _check_choices(cfg)
    _check_reals(cfg)
    if cfg.kappa_schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"kappa_schedule must be constant, linear or cosine, got {cfg.kappa_schedule!r}")
    if cfg.query not in TRAIN_QUERIES:
        raise ValueError(f"query must be one of {TRAIN_QUERIES}, got {cfg.query!r}")


def separator_key(model: torch.nn.Module) -> str:
    """16 hex digits of the sha256 of a separator's weights (the start of an RL run)."""
    return encoder_fingerprint(model)[:16]


ADDED_FIELDS = {"lambda_sem": 1.0, "query_noise": 0.0, "pure_query_prob": 0.0, "hard_pair_prob": 0.0,
                "train_split": "train", "lambda_res": 0.0, "signal_reference": "source",
                "select": "val"}
"""RLConfig fields added after runs existed, with their defaults; at the default they are left out of :func:`run_config`,
so the keys of runs made without them stay what they were (the supervised trainer does the same)."""


def run_config(profile: Profile, cfg: RLConfig, start_key: str, bank_key: str, stack) -> dict[str, Any]:
    """What an RL run depends on: sizes, the RL config (less :data:`ADDED_FIELDS` at their defaults), the starting
    separator, the query bank and the reward stack."""
    rl = {k: v for k, v in asdict(cfg).items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
    return {"profile": profile.name, "audio": asdict(profile.audio), "data": asdict(profile.data),
            "separator": asdict(profile.separator), "rl": rl, "start": start_key, "queries": bank_key,
            "reward": stack.key, "aligned": bool(stack.aligned)}
