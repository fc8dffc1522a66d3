"""Several processes train one model: torchrun's environment, the process group, DDP and batch norm over all ranks.

::

    torchrun --nproc_per_node 2 -m mars_core.supervised --profile smoke --device cpu
    torchrun --nproc_per_node 8 -m mars_core.supervised --profile full          # one GPU per rank
    torchrun --nproc_per_node 2 -m mars_core.rl --profile smoke --device cpu    # RL fine-tuning

``torchrun`` starts ``W`` copies of the command (the *ranks*) and gives each ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init` joins them into one process group (``nccl``
when the rank computes on CUDA, ``gloo`` on a CPU); without ``WORLD_SIZE > 1`` nothing here does anything, so
a plain ``python -m ...`` run is the one-process run it always was.

What the ranks share in the supervised trainer (:func:`mars_core.supervised.trainer.train_supervised`):

* the batch: ``batch_mixtures`` is the **global** batch ``G``; rank ``r`` of ``W`` trains on mixtures
  ``r G/W ... (r+1) G/W - 1`` of each step (:func:`part`), so ``W`` ranks see exactly the mixtures, queries and
  draws of the one-process run with batch ``G``;
* the gradient: :func:`data_parallel` wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`,
  which averages the gradients over the ranks -- the gradient of the mean loss over all ``G`` mixtures, since
  every rank holds as many loss terms;
* batch-norm statistics: :func:`sync_batchnorm` makes every ``BatchNorm2d`` normalise with the mean and variance
  of the global batch (:class:`GlobalBatchNorm2d`). torch's own ``SyncBatchNorm`` refuses CPU tensors (torch
  2.13: "expected input tensor to be on GPU"), so this module does the same with two autograd-aware all-reduces,
  on every device: the path a CPU test proves is the path a GPU run takes.

What they share in RL (:func:`mars_core.rl.trainer.train_rl`; batch norm runs in eval mode there, so no
statistics are shared):

* the start: every rank copies rank 0's separator (:func:`broadcast_module`; under torchrun the supervised stage's
  ranks other than 0 return its last weights, rank 0 the best), which keys the run;
* the batch, as above (:func:`part`): rank ``r`` builds its mixtures' queries, with the Query-Mixup weights the
  whole step draws, and runs the old policy on them;
* the sampled masks: a Beta draw consumes a data-dependent number of random numbers, so every rank gathers the
  old policy's ``P`` of the whole batch (:func:`gather`), draws every mask with the step's seed as one process
  would and keeps its own items' (:func:`mars_core.rl.rollout.rollout`); waveforms and rewards are per rank;
* the rewards: every rank gathers the whole batch's, so the advantages -- group ones per item, the EMA baseline
  and its batch normalisation over the batch -- and the logged statistics are the one-process ones;
* the updates (:func:`mars_core.rl.update.ppo_update`): the one-process minibatches, each rank on the mixtures of
  each that it holds, its mean loss weighted by its share ``n_r W / n``; :func:`average_gradients` then leaves the
  gradient of the minibatch's mean loss on every rank, before the norm clip (the global norm) and the step, and
  :func:`total` the minibatch's statistics. Every rank takes the same step, so the weights stay equal.

The pathwise estimator (a diagnostic) draws its noise for a whole minibatch and stays one process.

Up to the order of float32 sums, ``W`` ranks with per-rank batch ``B`` therefore end at the weights of one
process with batch ``W B`` (``tests/test_distributed.py``, ``tests/test_rl_distributed.py``); a one-process run
touches none of this. Rank 0 (:func:`is_main`) alone validates, writes checkpoints and metrics and prints; the
others wait for it at a :func:`barrier`; every rank resumes from ``last.pt``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer: it is set by torchrun "
                         f"(torchrun --nproc_per_node N -m ...); unset it for a one-process run") from None


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when unset): how many ranks this command was started as."""
    return _env_int("WORLD_SIZE", 1)


def local_device(spec: str | None) -> str | None:
    """The device string of this rank: under torchrun with CUDA, ``auto`` and ``cuda`` become
    ``cuda:LOCAL_RANK`` (one GPU per rank); anything else is returned unchanged."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if launched_world_size() > 1 and text in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{_env_int('LOCAL_RANK', 0)}"
    return spec


def init(device: torch.device | str = "cpu") -> bool:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (``nccl`` for a CUDA ``device``, else ``gloo``);
    returns whether this process is one rank of several. Already joined: returns True.

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` malformed, or ``MASTER_ADDR``/``MASTER_PORT`` missing.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world = launched_world_size()
    if world <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: start several ranks with "
                         "torchrun --nproc_per_node N -m ..., or unset WORLD_SIZE for one process")
    device = torch.device(device)
    rank_ = _env_int("RANK", 0)
    if device.type == "cuda":  # one GPU per rank, bound to the group (barriers then know their device)
        device = device if device.index is not None else torch.device("cuda", _env_int("LOCAL_RANK", 0))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank_, world_size=world, device_id=device)
    else:
        dist.init_process_group("gloo", rank=rank_, world_size=world)
    return True


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """How many ranks train together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one that validates, writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (nothing with one rank)."""
    if world_size() > 1:
        dist.barrier()


def teardown() -> None:
    """Leave the process group (nothing without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_command(parser: Any, device: torch.device | str, check: Callable[[], None], body: Callable[[], int]) -> int:
    """A command's life under torchrun or not: join the group (:func:`init`), ``check()`` (a ``ValueError`` there
    leaves the group and becomes ``parser.error``: a usage error before any model loads), then ``body()``; the group
    is left however ``body`` ends."""
    try:
        init(device)
        check()
    except ValueError as exc:
        teardown()
        parser.error(str(exc))
    try:
        return body()
    finally:
        teardown()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (building a cache, say), the others after it, when the cache is there."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def part(n: int) -> slice:
    """This rank's share of ``n`` items: ``slice(r n/W, (r+1) n/W)``.

    Raises:
        ValueError: ``n`` is not a multiple of the world size (every rank must hold as many items, so that the
            average of the ranks' mean losses is the mean over all items).
    """
    w, r = world_size(), rank()
    if n % w:
        raise ValueError(f"batch_mixtures={n} is not a multiple of the {w} ranks: every rank trains on an equal "
                         f"share of the global batch; start torchrun with --nproc_per_node dividing {n}")
    return slice(r * n // w, (r + 1) * n // w)


def broadcast_module(module: nn.Module) -> nn.Module:
    """Give every parameter and buffer of ``module`` rank 0's values, in place (as DDP does when it wraps a model);
    returns ``module``. Nothing with one rank."""
    if world_size() > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)
    return module


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order (no gradient; ``x`` itself with one rank). Every
    rank must hold the same shape (:func:`part`). Shape: ``(n, ...)`` -> ``(W n, ...)``."""
    if world_size() == 1:
        return x
    x = x.detach().contiguous()
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x)
    return torch.cat(out)


def total(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Each of ``values`` summed over the ranks, in float64 (``values`` with one rank). ``device``: where the
    reduction runs (the rank's GPU under ``nccl``)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params: list[torch.Tensor]) -> None:
    """Replace every parameter's gradient by its average over the ranks, in place (nothing with one rank).

    A rank whose loss did not reach a parameter (no gradient, e.g. no data of a minibatch on this rank)
    counts as a zero gradient; a parameter that no rank's loss reached keeps ``grad = None`` (an optimiser then
    skips it, as in a one-process run). One all-reduce of the flattened gradients (and one of the flags).
    """
    w = world_size()
    if w == 1 or not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has)
    used = [p for p, h in zip(params, has.tolist()) if h]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not used:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in used])
    dist.all_reduce(flat)
    flat /= w
    for p, g in zip(used, flat.split([p.numel() for p in used])):
        p.grad.copy_(g.view_as(p.grad))


def mean(value: torch.Tensor) -> torch.Tensor:
    """The average of ``value`` over the ranks (no gradient; ``value`` itself with one rank). Shape: any."""
    if world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


class _SumOverRanks(torch.autograd.Function):
    """``y = sum over ranks of x``; its backward is the same sum of the gradients (every rank's ``y`` depends on
    every rank's ``x``). torch's ``torch.distributed.nn.functional.all_reduce`` does this but is deprecated."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.contiguous().clone()
        dist.all_reduce(g)
        return g


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over all ranks, differentiable (gradients are summed over the ranks too). Shape: any."""
    return _SumOverRanks.apply(x)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the batch of all ranks together.

    With one rank, in eval mode or without a process group it is ``BatchNorm2d``. Otherwise the mean and the
    (biased) variance come from two sums all-reduced with :func:`sum_over_ranks`,
    whose backward all-reduces the gradient, so every rank's gradient is that of the global batch; the running
    statistics are updated with the global mean and the unbiased global variance. Every rank must hold as many
    elements (:func:`part`). Same parameters and buffers (and state-dict keys) as ``BatchNorm2d``.

    Shape: ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        n = x.numel() // x.shape[1] * world_size()  # equal shares on every rank
        x32 = x.float()  # statistics in float32 under a bf16 autocast too
        mu = sum_over_ranks(x32.sum(dims)) / n
        centred = x32 - mu[None, :, None, None]
        var = sum_over_ranks(centred.square().sum(dims)) / n  # two passes: no E[x^2] - E[x]^2 cancellation
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mu.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def _swap_batchnorm(module: nn.Module, old: type, new: type) -> nn.Module:
    for name, child in module.named_children():
        if type(child) is old:
            twin = new(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            twin._parameters, twin._buffers = child._parameters, child._buffers  # the same tensors, not copies
            twin.train(child.training)
            setattr(module, name, twin)
        else:
            _swap_batchnorm(child, old, new)
    return module


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every ``BatchNorm2d`` of ``model`` a :class:`GlobalBatchNorm2d` in place (same tensors); returns it."""
    return _swap_batchnorm(model, nn.BatchNorm2d, GlobalBatchNorm2d)


def local_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`sync_batchnorm` in place (plain ``BatchNorm2d`` again, same tensors); returns ``model``."""
    return _swap_batchnorm(model, GlobalBatchNorm2d, nn.BatchNorm2d)


class _Forward(nn.Module):
    """``fn(model, *args)`` as a module's forward, so that DDP sees the pass whose backward it averages."""

    def __init__(self, model: nn.Module, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args: Any) -> torch.Tensor:
        return self.fn(self.model, *args)


def data_parallel(model: nn.Module, fn: Callable[..., torch.Tensor],
                  device: torch.device | str = "cpu") -> Callable[..., torch.Tensor] | None:
    """``fn(model, *args)`` (a loss) run through :class:`~torch.nn.parallel.DistributedDataParallel`: its
    backward leaves in every parameter the gradient averaged over the ranks. ``None`` with one rank (call
    ``fn`` directly). The ranks' initial weights are rank 0's (DDP broadcasts them)."""
    if world_size() == 1:
        return None
    device = torch.device(device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(_Forward(model, fn), device_ids=ids)
