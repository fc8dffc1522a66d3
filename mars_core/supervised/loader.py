"""The training mixtures of a supervised run, step by step, in the training process or in DataLoader workers.

A step's mixtures are a pure function of ``(data seed, cfg.seed, step, rank share)``: mixture ``j`` of step ``s``
is item ``s B + j`` of the random-pair (or, by a draw from ``(cfg.seed, "hard-share", s)``, the hard-pair) set,
and every item draws from its own generator (:mod:`mars_core.data.mixing`). Reading them is the slow part of a
step on a GPU (clips read, checked, cropped and mixed), so :func:`step_loader` can do it in
``SupervisedConfig.num_workers`` worker processes: a :class:`~torch.utils.data.DataLoader` over
:class:`StepDataset`, whose item ``i`` is step ``start + i`` (:func:`load_step`), delivered in step order, in pinned
memory when the run is on CUDA. Worker count, worker seeds and process make no difference: the batches, and so
the trained weights, are those of the in-process loop (``tests/test_dataloader.py``), after a resume too (the
loader starts at the resumed step) and under torchrun (each rank loads its own share).

What stays in the training process (:func:`mars_core.supervised.trainer.batch_from_mixtures`): the STFTs on the
run's device, the query embeddings (the bank) and the query draws.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.mixing import MixtureDataset, collate

WAVEFORMS = ("mixture", "sources", "query_audio")
"""Item keys left out of :attr:`StepMixtures.items` (the waveforms a step needs are stacked once instead)."""


@dataclass
class StepMixtures:
    """This rank's mixtures of one step, as a worker hands them over.

    Attributes:
        step: the step; part: the share of the step's ``B`` mixtures (:func:`mars_core.distributed.part`).
        hard: per mixture, whether it comes from the hard-pair set (else the random-pair set).
        items: the :class:`~mars_core.data.mixing.MixtureDataset` items less their :data:`WAVEFORMS`
            (classes, clip ids, query text and ids: what the queries are built from).
        mixture: ``(n, samples)`` float32; sources: ``(n, n_sources, samples)`` float32 (``n`` = the share's size).
    """

    step: int
    part: slice
    hard: list[bool]
    items: list[dict[str, Any]]
    mixture: torch.Tensor
    sources: torch.Tensor

    def pin_memory(self) -> StepMixtures:
        """The same with the waveforms in page-locked memory (the DataLoader's pinning thread calls this)."""
        return replace(self, mixture=self.mixture.pin_memory(), sources=self.sources.pin_memory())

    def pairs(self, ds) -> list[tuple[MixtureDataset, dict[str, Any]]]:
        """``(dataset, item)`` of every mixture, the datasets those of ``ds`` (the one :func:`load_step` read)."""
        return [(_source(ds, h), it) for h, it in zip(self.hard, self.items)]


def _source(ds, hard: bool) -> MixtureDataset:
    """The dataset of a mixture: ``ds`` itself (a :class:`MixtureDataset`), or its hard- or random-pair set
    (a :class:`~mars_core.supervised.trainer.TrainingData`)."""
    return ds.hard if hard else getattr(ds, "random", ds)


def load_step(ds, step: int, batch_mixtures: int, part: slice) -> StepMixtures:
    """Mixtures ``part`` of step ``step`` of ``ds`` (a ``TrainingData``: its ``step_items``; a plain
    :class:`MixtureDataset`: items ``step B + j``), waveforms stacked as :func:`~mars_core.data.mixing.collate` does.

    Shape: ``mixture (n, samples)``, ``sources (n, n_sources, samples)`` with ``n = len(range(B)[part])``.
    """
    if hasattr(ds, "step_items"):
        pairs = ds.step_items(step, part)
    else:
        pairs = [(ds, ds[step * batch_mixtures + j]) for j in range(batch_mixtures)[part]]
    items = [it for _, it in pairs]
    waves = collate([{"mixture": it["mixture"], "sources": it["sources"]} for it in items])
    hard_set = getattr(ds, "hard", None)
    return StepMixtures(step, part, [hard_set is not None and d is hard_set for d, _ in pairs],
                        [{k: v for k, v in it.items() if k not in WAVEFORMS} for it in items],
                        waves["mixture"], waves["sources"])


class StepDataset(Dataset):
    """Map-style dataset over steps: item ``i`` is :func:`load_step` of step ``steps[i]``.

    Args:
        ds: the run's training data (``TrainingData`` or a :class:`MixtureDataset`).
        batch_mixtures: ``B``, the global batch; steps: the steps to load, in order; part: this rank's share.
    """

    def __init__(self, ds, batch_mixtures: int, steps: range, part: slice):
        self.ds, self.batch_mixtures, self.steps, self.part = ds, batch_mixtures, steps, part

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> StepMixtures:
        return load_step(self.ds, self.steps[i], self.batch_mixtures, self.part)


def _as_is(x: StepMixtures) -> StepMixtures:
    """The DataLoader's ``collate_fn``: a step is already a batch (module level, so spawned workers can import it)."""
    return x


def step_loader(ds, batch_mixtures: int, steps: range, part: slice, num_workers: int,
                device: torch.device | str = "cpu") -> DataLoader:
    """A DataLoader yielding :class:`StepMixtures` of ``steps`` in order, read by ``num_workers >= 1`` processes,
    pinned when ``device`` is CUDA (so the copy to the GPU can overlap the step: ``.to(device, non_blocking=True)``).

    Raises:
        ValueError: ``num_workers < 1`` (0 workers is the in-process loop: :func:`load_step` directly).
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1 for a DataLoader, got {num_workers!r} "
                         "(0 reads the mixtures in the training process)")
    return DataLoader(StepDataset(ds, batch_mixtures, steps, part), batch_size=None, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.device(device).type == "cuda", collate_fn=_as_is)

