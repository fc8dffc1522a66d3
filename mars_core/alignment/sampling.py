"""What the stages draw from: the train/val mixture datasets, the fixed train pool, seeded batches.

Every batch is a pure function of ``(cfg.seed, stage, step[, replay stage])``, so a killed
run trained again draws the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.mixing import MixtureDataset
from ..seeding import item_rng
from .config import AlignmentConfig
from .embedding import AlignmentBatch, make_batch


@dataclass
class AlignmentData:
    """Mixture datasets the stages draw from (``*_hard``: same-family interferers, or None)."""

    train: Any
    val: Any
    train_hard: Any = None
    val_hard: Any = None

    @property
    def sample_rate(self) -> int:
        """Rate of the datasets' waveforms."""
        return int(self.train.sr)

    @classmethod
    def from_build(
        cls, profile: Any = None, build_dir: str | Path | None = None, seed: int | None = None
    ) -> "AlignmentData":
        """Train and val ``MixtureDataset`` s of a built benchmark (hard-pair ones where possible)."""
        def make(split: str, hard: bool):
            try:
                return MixtureDataset(split, profile, hard_pairs=hard, build_dir=build_dir, seed=seed)
            except ValueError:
                if hard:  # no family with two classes in this split
                    return None
                raise

        return cls(make("train", False), make("val", False), make("train", True), make("val", True))


def _split_sizes(n: int, cfg: AlignmentConfig, hard_available: bool) -> tuple[int, int]:
    n_hard = int(round(cfg.hard_pair_fraction * n)) if hard_available else 0
    return n - n_hard, n_hard


def train_pool(data: AlignmentData, cfg: AlignmentConfig) -> list[tuple[str, int]] | None:
    """The fixed train pool ``[(dataset tag, index)]`` of ``cfg.pool_items`` items, or None.

    Items ``0..`` of ``train`` and ``train_hard`` (each index is already a random mixture).
    """
    if cfg.pool_items is None:
        return None
    n_rand, n_hard = _split_sizes(cfg.pool_items, cfg, data.train_hard is not None)
    pool = [("train", i) for i in range(min(n_rand, len(data.train)))]
    return pool + [("train_hard", i) for i in range(min(n_hard, len(data.train_hard)))] if n_hard else pool


def draw_batch(data: AlignmentData, cfg: AlignmentConfig, n: int, pool, *seed_keys: Any) -> AlignmentBatch:
    """A batch of ``n`` train items (``hard_pair_fraction`` hard pairs, or from the pool), seeded by ``seed_keys``."""
    rng = item_rng(cfg.seed, "align", *seed_keys)
    if pool is not None:
        picks = [pool[int(i)] for i in rng.integers(len(pool), size=n)]
    else:
        n_rand, n_hard = _split_sizes(n, cfg, data.train_hard is not None)
        picks = [("train", int(i)) for i in rng.integers(len(data.train), size=n_rand)]
        picks += [("train_hard", int(i)) for i in rng.integers(len(data.train_hard), size=n_hard)] if n_hard else []
    return make_batch([getattr(data, tag)[i] for tag, i in picks], [f"{tag}:{i}" for tag, i in picks])


def val_batches(data: AlignmentData, cfg: AlignmentConfig) -> list[AlignmentBatch]:
    """Fixed validation batches: the first items of val (and of val_hard, half of them)."""
    n_hard = cfg.n_val_items // 2 if data.val_hard is not None else 0
    picks = [("val", i) for i in range(min(cfg.n_val_items - n_hard, len(data.val)))]
    picks += [("val_hard", i) for i in range(min(n_hard, len(data.val_hard)))] if n_hard else []
    chunks = [picks[i : i + cfg.batch_size] for i in range(0, len(picks), cfg.batch_size)]
    return [make_batch([getattr(data, t)[i] for t, i in c], [f"{t}:{i}" for t, i in c]) for c in chunks if len(c) >= 2]
