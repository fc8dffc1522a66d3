"""The separator's head as the PPO updates evaluate it: the same logits, with less arithmetic.

After the U-Net trunk the separator runs its head (:meth:`~mars_core.separator.UNet.head`: ReLU, 2x bilinear
upsampling, then a 3x3 convolution with weights ``W_i`` and biases ``c_i`` for each of its ``C`` maps ``A_i``)
and the inner-product fusion with the query vector ``q~`` (:meth:`~mars_core.separator.QuerySeparator.inner_logits`):
``z_k = sum_i s_i q~_ki A_i + b``. Two rearrangements of that arithmetic:

* the ReLU and the upsampling have no parameters, so a rollout runs them once (:func:`head_input`) and every update
  starts from their output;
* the convolution and the fusion are both linear in the maps, so with ``w_ki = s_i q~_ki``::

      z_k = (sum_i w_ki W_i) * x  +  (sum_i w_ki c_i + b)

  one convolution with ``K`` output channels per mixture (its own folded kernel) replaces one with ``C`` output
  channels followed by the ``C -> K`` product: ``C / K`` times fewer multiply-adds (16 at cpu size), in the forward
  and the backward pass (:func:`folded_logits`). That small convolution runs as one matrix product per mixture,
  every kernel tap of every output channel applied to every pixel (``(K kh kw, C_in) @ (C_in, F T)``), whose
  shifted tap images are summed by ``F.fold`` (col2im) with the kernel flipped: convolution kernels handle 2 output
  channels poorly (forward and backward on one CPU core: a convolution per mixture 1.6x and one grouped
  convolution 4x slower than this; the unfolded head itself 3.4x).

The logits and their gradients equal the separator's own (:func:`~mars_core.separator.logits_from_trunk`) up to
float32 rounding (``tests/test_rl_fast_paths.py``). Heads of another form (FiLM conditioning, other layers) are
not folded: :func:`foldable` says so and the callers use the separator's path.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_PARAMETER_FREE = (nn.ReLU, nn.Upsample, nn.Identity)
"""Head layers that :func:`head_input` may run once per rollout (no parameters, the same in train and eval mode)."""


def foldable(model: nn.Module) -> bool:
    """Whether the model's head is parameter-free layers then one plain ``Conv2d``, with inner-product fusion."""
    if getattr(getattr(model, "cfg", None), "conditioning", None) != "inner":
        return False
    layers = model.unet.head_modules()
    conv = layers[-1] if layers else None
    if not isinstance(conv, nn.Conv2d) or not all(isinstance(m, _PARAMETER_FREE) for m in layers[:-1]):
        return False
    same = tuple(k // 2 for k in conv.kernel_size)  # odd kernel, stride 1, 'same' zero padding: output = input size
    return (conv.groups == 1 and conv.padding_mode == "zeros" and all(k % 2 for k in conv.kernel_size)
            and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1) and conv.padding in (same, "same"))


def head_input(model: nn.Module, trunk: torch.Tensor) -> torch.Tensor:
    """The head's parameter-free layers applied to the trunk's output (the input of its convolution).

    Like :meth:`~mars_core.separator.UNet.head`, an in-place ReLU rectifies ``trunk`` itself.

    Shape:
        trunk ``(B, 2 ch_0, F/2, T/2)``; returns ``(B, 2 ch_0, F, T)``.
    """
    for layer in model.unet.head_modules()[:-1]:
        trunk = layer(trunk)
    return trunk


def logits_from_head_input(model: nn.Module, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """:func:`~mars_core.separator.logits_from_trunk` from :func:`head_input`'s output, the same operations in the
    same order (bit-identical logits): the head's convolution, then the inner-product fusion.

    Shape:
        x ``(B, C_in, F, T)``; queries ``(B, K, D)``; returns ``(B, K, F, T)``.
    """
    b, k, d = queries.shape
    maps = model.unet.head_modules()[-1](x)
    return model.inner_logits(maps, model.query_vector(queries.reshape(b * k, d)).reshape(b, k, -1))


def folded_logits(model: nn.Module, x: torch.Tensor, queries: torch.Tensor,
                  rows: torch.Tensor | None = None) -> torch.Tensor:
    """The logits of :func:`logits_from_head_input` with the fusion folded into the convolution (module docstring).

    ``rows``: the mixtures of ``x`` the queries belong to (default: all, in order), so a minibatch is read
    without gathering a copy of its head inputs.

    Shape:
        x ``(B_all, C_in, F, T)``; queries ``(B, K, D)``; rows ``(B,)``; returns ``(B, K, F, T)``.
    """
    conv = model.unet.head_modules()[-1]
    b, k, d = queries.shape
    rows = list(range(b)) if rows is None else [int(i) for i in rows]
    if len(rows) != b:
        raise ValueError(f"{len(rows)} rows for {b} mixtures of queries")
    kh, kw = conv.kernel_size
    w = model.query_vector(queries.reshape(b * k, d)) * model.scale  # (B K, C): s_i q~_ki
    kernels = (w @ conv.weight.flatten(1)).reshape(b, k, -1, kh, kw)  # (B, K, C_in, kh, kw)
    taps = kernels.flip(-2, -1).permute(0, 1, 3, 4, 2).reshape(b, k * kh * kw, -1)  # (B, K kh kw, C_in)
    cols = torch.stack([taps[j] @ x[i].flatten(1) for j, i in enumerate(rows)])  # (B, K kh kw, F T)
    out = F.fold(cols, x.shape[-2:], (kh, kw), padding=(kh // 2, kw // 2))  # (B, K, F, T)
    bias = (w @ conv.bias if conv.bias is not None else w.new_zeros(b * k)).reshape(b, k) + model.bias
    return out + bias[..., None, None]
