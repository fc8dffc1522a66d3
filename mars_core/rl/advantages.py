"""Advantages (docs/method.md section 6): group-relative (GRPO), leave-one-out, or an EMA baseline (the paper's reading).

Advantages are computed once per sampled batch and never re-normalised per
minibatch (that would undo the group normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ZERO_STD = 1e-8


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, float]:
    """``A_i = (R_i - mean_group(R)) / (std_group(R) + eps)`` within each item's group.

    ``std`` is the population standard deviation (ddof 0) of the group. A group whose
    rewards are all equal (std below 1e-8, or a group of one) gets ``A = 0`` and is
    counted in ``frac_zero_std``.

    Shape:
        rewards: ``(n_items, group_size)``.
        returns: advantages ``(n_items, group_size)`` and ``frac_zero_std`` (float in [0, 1]).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (n_items, group_size), got {tuple(rewards.shape)}")
    if not torch.all(torch.isfinite(rewards)):
        raise ValueError("rewards must be finite")
    r = rewards.double()  # float64: near-equal float32 rewards would give a visibly non-zero group mean
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, unbiased=False, keepdim=True)
    zero = std < ZERO_STD
    adv = torch.where(zero, torch.zeros_like(r), (r - mean) / (std + eps))
    return adv.float(), zero.float().mean().item()


def loo_advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Leave-one-out baseline: ``A_g = R_g - mean_{h != g} R_h`` within each item's group (RLOO).

    The baseline of a sample never contains the sample itself, so it is independent of it and the
    estimate stays unbiased at any group size; ``A_g = G / (G - 1) (R_g - mean_group(R))``, so it ranks
    like ``'group'`` but is *not* divided by the group's spread: a group whose rewards barely differ
    moves the weights little (``'group'`` inflates its noise to unit variance). A group of equal
    rewards (spread below 1e-8) gets ``A = 0`` and counts in ``frac_zero_std``.

    Shape:
        rewards: ``(n_items, group_size)``, ``group_size >= 2``; returns ``(n_items, group_size)`` and ``frac_zero_std``.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (n_items, group_size >= 2) for leave-one-out, got {tuple(rewards.shape)}")
    if not torch.all(torch.isfinite(rewards)):
        raise ValueError("rewards must be finite")
    r = rewards.double()
    g = r.shape[1]
    others = (r.sum(dim=1, keepdim=True) - r) / (g - 1)
    zero = r.std(dim=1, unbiased=False, keepdim=True) < ZERO_STD
    adv = torch.where(zero, torch.zeros_like(r), r - others)
    return adv.float(), zero.float().mean().item()


@dataclass
class EMABaseline:
    """The paper's reading: ``A = R - b`` with ``b`` an exponential moving average of the
    batch-mean reward (decay 0.92), then divided by the batch standard deviation of ``A``.

    Only the scale is normalised (not the mean), so the baseline keeps its meaning; the
    baseline is updated *after* computing the advantages of a batch. The first batch
    initialises ``b`` to its own mean.

    Non-finite rewards (NaN, inf) are ignored: they get advantage 0, enter neither the batch mean,
    the standard deviation nor the baseline, and are counted in ``nonfinite``; a batch with no
    finite reward leaves the baseline as it was (all advantages 0, ``frac_zero_std`` 1).
    """

    decay: float = 0.92
    eps: float = 1e-6
    value: float | None = None
    nonfinite: int = 0

    def __call__(self, rewards: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Shape: rewards ``(n_items, group_size)`` (any shape); returns advantages and frac_zero_std."""
        rewards = rewards.float()
        finite = torch.isfinite(rewards)
        if finite.all():
            return self._advantages(rewards)
        self.nonfinite += int((~finite).sum())
        adv = torch.zeros_like(rewards)
        if not finite.any():
            return adv, 1.0
        adv[finite], frac_zero = self._advantages(rewards[finite])
        return adv, frac_zero

    def _advantages(self, rewards: torch.Tensor) -> tuple[torch.Tensor, float]:
        batch_mean = rewards.mean().item()
        b = batch_mean if self.value is None else self.value
        adv = rewards - b
        std = adv.std(unbiased=False)
        if std < ZERO_STD:
            adv = adv - adv.mean()  # equal rewards: all advantages equal, their mean carries no ranking
            adv = torch.where(adv.abs() < ZERO_STD, torch.zeros_like(adv), adv)
            frac_zero = 1.0
        else:
            adv = adv / (std + self.eps)
            frac_zero = 0.0
        self.value = batch_mean if self.value is None else self.decay * self.value + (1 - self.decay) * batch_mean
        return adv, frac_zero

    def state_dict(self) -> dict:
        return {"decay": self.decay, "eps": self.eps, "value": self.value, "nonfinite": self.nonfinite}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.eps, self.value = state["decay"], state["eps"], state["value"]
        self.nonfinite = int(state.get("nonfinite", 0))
