"""One rollout (docs/method.md section 5): old-policy masks, G samples per item, waveforms, rewards.

For ``B`` training mixtures with ``K = n_sources`` items each (every source is a target with
its own query, as in supervised training; ``N = B K`` items, item ``n = b K + k``):

1. ``P_old = sigmoid(z)`` from the frozen old policy, one U-Net pass per mixture, no gradient;
2. ``G`` masks per item ``M ~ prod_ft Beta(1 + kappa P_old, 1 + kappa (1 - P_old))``
   (:func:`~mars_core.rl.policy.sample_masks`), with the torch generator seeded by
   ``(seed, step)`` so a step's samples depend on nothing else (resumption is exact). Under torchrun
   (:mod:`mars_core.distributed`) a rank holds only its share of the mixtures: it gathers every rank's
   ``P_old``, draws the masks of the whole batch as one process would, and keeps its own items' (a Beta draw
   consumes a data-dependent number of random numbers, so the whole batch's draws are the only way to the
   one-process masks);
3. their per-bin log-probabilities under the old policy (kept fixed for the whole update);
4. ``G x N`` waveforms: each mask unwarped, applied to the mixture magnitude, iSTFT with the
   mixture phase -- one batched :meth:`~mars_core.audio.FrontEnd.reconstruct` call;
5. their rewards in one batched reward-encoder call (:class:`~mars_core.rl.rewards.RewardModel`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .. import distributed
from ..audio import FrontEnd
from ..data.mixing import MixtureDataset, collate
from ..precision import autocast
from ..queries import QueryBank, compose, item_queries, mixup_weights, modality_embeddings
from ..query_mixup import noisy_embeddings, with_pure_queries
from ..seeding import item_rng
from ..separator import logits_from_trunk
from . import head, policy
from .rewards import RewardModel, anchors
from .segments import frame_segments


@dataclass
class RLBatch:
    """The inputs of one step (on the policy's device).

    Shape:
        features ``(B, 1, F, T)``; queries ``(B, K, D_q)``; mixtures ``(B, samples)``;
        sources ``(B, K, samples)`` (source k is item k's clean target);
        z ``(N, D_r)`` target anchors; z_neg ``(N, K - 1, D_r)`` anchors of the other sources.
    """

    features: torch.Tensor
    queries: torch.Tensor
    mixtures: torch.Tensor
    sources: torch.Tensor
    z: torch.Tensor
    z_neg: torch.Tensor

    @property
    def n_mixtures(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.queries.shape[0] * self.queries.shape[1])


def rl_batch(ds: MixtureDataset, bank: QueryBank, reward_bank: QueryBank, stack, fe: FrontEnd, step: int,
             batch_mixtures: int, query: str = "mixup", seed: int = 0,
             device: str | torch.device = "cpu", part: slice | None = None, query_noise: float = 0.0,
             pure_query_prob: float = 0.0) -> RLBatch:
    """Mixtures ``step * B ... step * B + B - 1`` of ``ds`` with every source as an item (``ds`` may also be a
    :class:`~mars_core.supervised.trainer.TrainingData`: its ``step_items`` then choose each mixture's set, random or
    same-family pairs).

    Queries from the separator's ``bank`` (Query-Mixup weights from
    ``item_rng(seed, "rl-query-mixup", step)``); anchors from the reward encoder's ``reward_bank``.
    ``query_noise`` and ``pure_query_prob`` augment the separator's queries as supervised training does
    (:func:`~mars_core.query_mixup.noisy_embeddings`, :func:`~mars_core.query_mixup.with_pure_queries`, drawn from
    ``item_rng(seed, "rl-query-augment", step)``; 0 draws nothing); the anchors are never augmented.
    A pure function of ``(data seed, seed, step)``. ``part`` (one rank's share,
    :func:`mars_core.distributed.part`) keeps mixtures ``part`` of the step's ``B``, with the Query-Mixup weights
    and augmentation draws the whole step makes (the ranks together hold the one-process batch).
    """
    share = slice(0, batch_mixtures) if part is None else part
    if hasattr(ds, "step_items"):  # random and same-family pairs (TrainingData)
        pairs = ds.step_items(step, share)
    else:
        pairs = [(ds, ds[step * batch_mixtures + j]) for j in range(share.start, share.stop)]
    items = [it for _, it in pairs]
    b = len(items)
    batch = collate(items)
    refs = [r for d, it in pairs for r in item_queries(d, it)]
    k = len(items[0]["classes"])
    total = batch_mixtures * k  # the step's items; this share holds rows ``rows`` of them
    rows = slice(0, total) if part is None else slice(part.start * k, part.stop * k)
    aug = item_rng(seed, "rl-query-augment", step)
    weights = None
    if query == "mixup":  # the step's B K weights, then this share's rows
        weights = with_pure_queries(mixup_weights(item_rng(seed, "rl-query-mixup", step), total), aug,
                                    pure_query_prob)[rows]
    emb = noisy_embeddings(modality_embeddings(bank, refs), aug, query_noise, rows, total)
    q = compose(emb, query, weights).reshape(b, k, -1)
    z = anchors(stack, reward_bank, refs).reshape(b, k, -1)
    others = [[j for j in range(k) if j != i] for i in range(k)]
    z_neg = torch.stack([z[:, o] for o in others], dim=1)  # (B, K, K - 1, D)
    mix = batch["mixture"].to(device)
    return RLBatch(fe.features(mix), q.float().to(device), mix, batch["sources"].to(device),
                   z.reshape(b * k, -1).to(device), z_neg.reshape(b * k, k - 1, -1).to(device))


class Trunk(torch.nn.Module):
    """``model.unet.trunk`` (the U-Net without its head) as a module's forward: what RL's ``--compile`` compiles
    (:func:`mars_core.precision.maybe_compile`), for the old policy's rollout pass and, when the whole network
    trains, the update's forward. Holds ``model`` (its parameters, no others), so a compiled ``Trunk`` of the old
    policy stays valid when that policy's weights are reloaded in place each step.

    Shape: ``(B, 1, F, T) -> (B, C, F/2, T/2)``.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.unet.trunk(features)


def policy_proposal(model: torch.nn.Module, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``P = sigmoid(z)`` for every item, one U-Net pass per mixture.

    Shape:
        features ``(B, 1, F, T)``; queries ``(B, K, D)``; returns ``(B K, F, T)`` (item ``b K + k``).
    """
    return proposal_from_trunk(model, model.unet.trunk(features), queries)


def proposal_from_trunk(model: torch.nn.Module, trunk: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """:func:`policy_proposal` from the U-Net trunk's output (``model.unet.trunk(features)``).

    Shape:
        trunk ``(B, C, F/2, T/2)``; queries ``(B, K, D)``; returns ``(B K, F, T)``.
    """
    logits = logits_from_trunk(model, trunk, queries)
    return torch.sigmoid(logits).reshape(-1, *logits.shape[-2:])


def proposal_from_head_input(model: torch.nn.Module, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """:func:`proposal_from_trunk` from the head's convolution input (:func:`~mars_core.rl.head.head_input`):
    the same operations in the same order, so the same ``P``.

    Shape:
        x ``(B, C, F, T)``; queries ``(B, K, D)``; returns ``(B K, F, T)``.
    """
    logits = head.logits_from_head_input(model, x, queries)
    return torch.sigmoid(logits).reshape(-1, *logits.shape[-2:])


def reconstruct_group(fe: FrontEnd, masks: torch.Tensor, mixtures: torch.Tensor) -> torch.Tensor:
    """Waveforms of many warped masks per mixture with the mixture's magnitude and phase (one batched call).

    Shape:
        masks ``(B, ..., F, T)`` (e.g. ``(B, K, G, F, T)``); mixtures ``(B, samples)``;
        returns ``(B, ..., samples)``.
    """
    extra = masks.dim() - 3
    return fe.reconstruct(masks, mixtures.reshape(mixtures.shape[0], *([1] * extra), mixtures.shape[-1]))


@dataclass
class Rollout:
    """Everything the update needs from one rollout (items ``n = b K + k``).

    Shape:
        features ``(B, 1, F, T)``; queries ``(B, K, D)``; trunk ``(B, C, F/2, T/2)`` the old
        policy's U-Net trunk output (reused by updates that train only the head); P_old ``(N, F, T)``;
        masks, old_logp ``(N, G, F, T)``; mask_logit, mask_log1m ``(N, G, F, T)``: ``log m - log(1 - m)``
        and ``log(1 - m)`` of the masks (:func:`~mars_core.rl.policy.mask_logs`); rewards ``(N, G)``, or ``(N, G, S)``
        with ``S`` segment rewards; terms: each like rewards; waveforms ``(N, G, samples)``; timings: seconds of
        ``policy``, ``rollout`` (sampling, log-probs, reconstruction) and ``reward``; frame_segment ``(T,)`` the
        segment of each STFT frame (:func:`~mars_core.rl.segments.frame_segments`; ``None`` without segments);
        batch: the step's inputs (the pathwise estimator rebuilds waveforms from its mixtures and sources);
        head_input ``(B, C, F, T)``: the old policy's trunk output after the head's parameter-free layers
        (:func:`~mars_core.rl.head.head_input`, fp32), which head-only updates start from; ``None`` when the head
        is not :func:`~mars_core.rl.head.foldable`.
    """

    features: torch.Tensor
    queries: torch.Tensor
    trunk: torch.Tensor
    P_old: torch.Tensor
    masks: torch.Tensor
    old_logp: torch.Tensor
    mask_logit: torch.Tensor
    mask_log1m: torch.Tensor
    rewards: torch.Tensor
    terms: dict[str, torch.Tensor]
    waveforms: torch.Tensor
    kappa: float
    timings: dict[str, float] = field(default_factory=dict)
    frame_segment: torch.Tensor | None = None
    batch: RLBatch | None = None
    head_input: torch.Tensor | None = None

    @property
    def group_size(self) -> int:
        return int(self.masks.shape[1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def remainder_references(fe: FrontEnd, P: torch.Tensor, mixtures: torch.Tensor) -> torch.Tensor:
    """The signal term's reference with ``signal_reference='remainder'``: for item ``k`` of mixture ``x``,
    ``x - sum_{j != k} y_j``, where ``y_j`` is the waveform of mask ``P_j`` (the old policy's mode). It reads no clean
    source: what the mixture's other items' estimates leave of it.

    Shape:
        P ``(B K, F, T)`` (item ``b K + k``); mixtures ``(B, samples)``; returns ``(B K, samples)``.
    """
    b = mixtures.shape[0]
    with torch.no_grad():  # a fixed reference: no gradient flows through the other items' estimates
        y = reconstruct_group(fe, P.reshape(b, -1, *P.shape[-2:]), mixtures)  # (B, K, samples)
        rest = mixtures.unsqueeze(1) - (y.sum(1, keepdim=True) - y)
    return rest.reshape(-1, rest.shape[-1])


@torch.no_grad()
def rollout(old_policy: torch.nn.Module, batch: RLBatch, fe: FrontEnd, reward_model: RewardModel, kappa: float,
            group_size: int, seed: int | None = None, reward_segments: int = 0, trunk=None,
            signal_reference: str = "source") -> Rollout:
    """Sample ``group_size`` masks per item from ``old_policy``, rebuild and reward them.

    ``seed``: the torch generator is seeded with it for the sampling (and restored after), so
    equal seeds give equal masks; ``None`` uses the global generator as it is. ``reward_segments``
    S > 0: one reward per time segment (:mod:`~mars_core.rl.segments`), rewards ``(N, G, S)``.
    ``trunk``: what computes ``old_policy.unet.trunk(features)`` (a compiled :class:`Trunk` of ``old_policy``
    under ``--compile``); ``None`` calls the old policy's own. ``signal_reference``: the signal term's reference,
    ``'source'`` (the clean sources) or ``'remainder'`` (:func:`remainder_references` of the old policy's modes).
    """
    dev = batch.features.device
    t0 = time.perf_counter()
    with autocast(dev):  # bf16 on a CUDA GPU with bf16 (mars_core.precision), a no-op on a CPU
        trunk = (trunk if trunk is not None else old_policy.unet.trunk)(batch.features)
        if head.foldable(old_policy):  # the head's parameter-free layers once per rollout, kept for the updates
            x = head.head_input(old_policy, trunk)
            P_old = proposal_from_head_input(old_policy, x, batch.queries).float()
            x = x.float()
        else:
            x, P_old = None, proposal_from_trunk(old_policy, trunk, batch.queries).float()
    trunk = trunk.float()  # kept for the head-only updates: fp32 whatever the precision
    _sync(dev)
    t1 = time.perf_counter()
    P_all = distributed.gather(P_old)  # several ranks: the P of the whole batch (P_old itself with one rank)
    if seed is None:
        masks = policy.sample_masks(P_all, kappa, group_size)
    else:
        cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            masks = policy.sample_masks(P_all, kappa, group_size)
    if P_all is not P_old:  # this rank's items of the whole batch's draws
        first = distributed.rank() * P_old.shape[0]
        masks = masks[first:first + P_old.shape[0]].clone()
    del P_all
    logit_m, log_1m = policy.mask_logs(masks)
    old_logp = policy.beta_log_prob_from_logs(P_old.unsqueeze(1), logit_m, log_1m, kappa)
    b, n, g = batch.n_mixtures, batch.n_items, group_size
    wav = reconstruct_group(fe, masks.reshape(b, n // b, g, *masks.shape[-2:]), batch.mixtures).reshape(n, g, -1)
    _sync(dev)
    t2 = time.perf_counter()
    rep = lambda x: x.repeat_interleave(g, dim=0)  # noqa: E731  item-major: row n G + i is sample i of item n
    uses_neg = reward_model.lambda_neg or reward_model.lambda_res
    z_neg = rep(batch.z_neg) if uses_neg and batch.z_neg.shape[1] else None
    if not reward_model.lambda_sig:
        refs = None
    elif signal_reference == "remainder":
        refs = rep(remainder_references(fe, P_old, batch.mixtures))
    elif signal_reference == "source":
        refs = rep(batch.sources.reshape(n, -1))
    else:
        raise ValueError(f"signal_reference must be 'source' or 'remainder', got {signal_reference!r}")
    seg = int(reward_segments)
    kw = {"segments": seg} if seg else {}  # the reward model's default call when there are no segments
    if reward_model.lambda_res:  # each waveform's own mixture, for the residual term
        kw["mixtures"] = batch.mixtures.repeat_interleave(n // b * g, dim=0)
    rewards, terms = reward_model(wav.reshape(n * g, -1), rep(batch.z), z_neg, refs, **kw)
    _sync(dev)
    t3 = time.perf_counter()
    shape = (n, g, seg) if seg else (n, g)
    frames = frame_segments(masks.shape[-1], fe.cfg.hop_length, wav.shape[-1], seg) if seg else None
    return Rollout(batch.features, batch.queries, trunk, P_old, masks, old_logp, logit_m, log_1m, rewards.reshape(shape),
                   {k: v.reshape(shape) for k, v in terms.items()}, wav, float(kappa),
                   {"policy": t1 - t0, "rollout": t2 - t1, "reward": t3 - t2}, frames, batch, x)


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of a step: a stable 63-bit integer from ``(seed, step)``."""
    return int(item_rng(seed, "rl-masks", step).integers(0, 2**63 - 1))

