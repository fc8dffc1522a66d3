"""The tri-modal encoder interface every reward/query encoder implements.

``embed_audio``, ``embed_text`` and ``embed_image`` validate their inputs, cut them
into chunks of ``batch_size``, run the model and return **L2-normalised float32**
``(N, D)`` embeddings on the model's device.

Gradients (``grad=``):

* ``False`` (default): everything under ``torch.no_grad()``;
* ``"heads"``: the backbone (preprocessor + trunk) under ``no_grad``, the projection
  heads with autograd: the cheap mode for aligning the heads of a frozen backbone;
* ``True``: autograd through everything (to the inputs too, where they are tensors).

Sample rate: an encoder has a native rate (:attr:`TriModalEncoder.sample_rate`). Audio at
another rate raises ``ValueError`` naming both rates, unless ``resample=True`` asks for
explicit band-limited resampling (:func:`mars_core.encoders.preprocess.resample`).

Subclasses implement the ``prepare_*`` hooks (raw input -> model input) and the
``trunk_features`` / ``head_embeddings`` split of the forward pass.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..inputs import validate_audio
from ..precision import autocast

GradMode = Union[bool, str]
MIN_AUDIO_SAMPLES = 16
"""Fewer samples than this cannot hold one analysis frame of any encoder; a ``(T, 2)`` stereo array
read as ``T`` two-sample waveforms is caught here and named (each encoder checks its own frame)."""
MODALITIES = ("vision", "text", "audio")


def _grad_context(enabled: bool):
    return torch.enable_grad() if enabled else torch.no_grad()


def _check_grad(grad: GradMode) -> GradMode:
    if grad not in (False, True, "heads"):
        raise ValueError(f"grad must be False, True or 'heads', got {grad!r}")
    return grad


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"expected a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_finite_float(x: torch.Tensor, what: str) -> None:
    if not torch.is_floating_point(x):
        raise ValueError(f"{what} must be floating point, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or infinite values")


def as_waveform_list(waveforms: Any) -> list[torch.Tensor]:
    """Validate audio input and return a list of 1-D float tensors.

    Accepts a ``(N, T)`` or ``(T,)`` tensor/array, or a sequence of 1-D tensors/arrays
    (lengths may differ). Every input goes through :func:`mars_core.inputs.validate_audio`
    (integer PCM is refused: scale it to [-1, 1] first; stereo layouts are named in the error).

    Raises:
        ValueError: empty batch, empty waveform, non-float dtype, NaN/inf, wrong rank.
    """
    if isinstance(waveforms, (torch.Tensor, np.ndarray)):
        if waveforms.shape[:1] == (0,):
            raise ValueError("embed_audio: empty batch (no waveforms)")
        # one finite check (one device sync) for the whole batch
        x = _as_tensor(validate_audio(waveforms, "waveforms", ndim=(1, 2), layout="(N, T), (T,) or a list of 1-D",
                                      min_samples=MIN_AUDIO_SAMPLES, min_reason="shorter than any encoder's frame"))
        return list(x.unsqueeze(0) if x.ndim == 1 else x)
    elif isinstance(waveforms, Sequence) and not isinstance(waveforms, str):
        items = [_as_tensor(w) for w in waveforms]
    else:
        raise TypeError(f"waveforms must be a tensor, an array or a list of them, got {type(waveforms).__name__}")
    if len(items) == 0:
        raise ValueError("embed_audio: empty batch (no waveforms)")
    for i, w in enumerate(items):
        validate_audio(w, f"waveform {i}", ndim=1, layout="1-D (samples,)", min_samples=MIN_AUDIO_SAMPLES,
                       min_reason="shorter than any encoder's frame")
    return items


def as_text_list(texts: Any, allow_empty: bool = False) -> list[str]:
    """Validate text input: a non-empty list (or tuple) of strings, none empty or whitespace only
    (unless ``allow_empty``: the reproduction of ImageBind embeds ``""`` as ``[SOT, EOT]``).

    Long prompts are fine: the tokenizer reads only what fits its context (77 tokens).
    """
    if isinstance(texts, str):
        raise TypeError("embed_text expects a list of strings; wrap a single prompt as [prompt]")
    if texts is None:
        raise TypeError("embed_text expects a list of strings, got None")
    texts = list(texts)
    if len(texts) == 0:
        raise ValueError("embed_text: empty batch (no strings)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
        if not allow_empty and not t.strip():
            raise ValueError(f"text {i} is {'empty' if not t else 'whitespace only'} ({t!r}): a prompt needs at least "
                             f"one word, e.g. 'the sound of a violin'")
    return texts


def as_image_batch(images: Any, size: int) -> list | torch.Tensor:
    """Validate image input.

    Returns either a list of images still to be transformed (PIL images or uint8
    ``(H, W, 3)`` arrays) or a float ``(N, 3, size, size)`` tensor already normalised.

    Raises:
        ValueError: empty batch, wrong rank/layout/dtype, wrong float size, NaN/inf.
    """
    from PIL import Image

    if isinstance(images, (torch.Tensor, np.ndarray)):
        x = _as_tensor(images)
        if x.shape[0:1] == (0,) or x.numel() == 0:
            raise ValueError("embed_image: empty batch (no images)")
        if x.dtype == torch.uint8:
            if x.ndim != 4 or x.shape[-1] != 3:
                raise ValueError(f"uint8 images must be (N, H, W, 3) RGB, got shape {tuple(x.shape)}")
            return list(x)
        if torch.is_floating_point(x):
            if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (size, size):
                raise ValueError(
                    f"float images must be normalised (N, 3, {size}, {size}) tensors, got shape {tuple(x.shape)}; "
                    "pass uint8 (N, H, W, 3) or PIL images to have them resized and normalised"
                )
            _check_finite_float(x, "images")
            return x
        raise ValueError(f"images must be uint8 (N, H, W, 3) or float (N, 3, H, W), got dtype {x.dtype}")
    if isinstance(images, Sequence) and not isinstance(images, str):
        items = list(images)
        if len(items) == 0:
            raise ValueError("embed_image: empty batch (no images)")
        for i, im in enumerate(items):
            if isinstance(im, Image.Image):
                continue
            arr = _as_tensor(im)
            if arr.dtype != torch.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
                raise ValueError(f"image {i}: expected a PIL image or uint8 (H, W, 3), got {arr.dtype} {tuple(arr.shape)}")
        return items
    raise TypeError(f"images must be an array, a tensor or a list of PIL images, got {type(images).__name__}")


def _chunks(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))



@contextlib.contextmanager
def eval_mode_of(module: torch.nn.Module):
    """``module`` in eval mode inside the ``with`` block, its previous mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)

class TriModalEncoder(nn.Module, ABC):
    """An audio/text/image encoder into one embedding space of size :attr:`embed_dim`."""

    sample_rate: int = 16000
    """Native audio rate in Hz."""
    image_size: int = 224
    """Side of the normalised square images the vision tower takes."""
    embed_dim: int
    """Embedding size D."""

    # ---- hooks a subclass implements --------------------------------------------
    @abstractmethod
    def prepare_audio(self, waveforms: list[torch.Tensor]) -> Any:
        """1-D float waveforms at :attr:`sample_rate` -> model input (on the model's device)."""

    @abstractmethod
    def prepare_text(self, texts: list[str]) -> Any:
        """Strings -> model input (e.g. token ids on the model's device)."""

    @abstractmethod
    def prepare_images(self, images: list) -> torch.Tensor:
        """PIL / uint8 ``(H, W, 3)`` images -> normalised float ``(N, 3, S, S)``."""

    @abstractmethod
    def trunk_features(self, modality: str, inputs: Any) -> Any:
        """Everything before the projection heads (frozen during head alignment)."""

    @abstractmethod
    def head_embeddings(self, modality: str, features: Any) -> torch.Tensor:
        """Projection heads (+ any pooling) -> ``(N, D)`` embeddings, not necessarily unit-norm."""

    @abstractmethod
    def freeze_backbone(self) -> list[nn.Parameter]:
        """Freeze everything but the heads; return the parameters left trainable."""

    # ---- shared machinery --------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for a parameter-less module)."""
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters (float16 after ``half()``)."""
        p = next((p for p in self.parameters() if torch.is_floating_point(p)), None)
        return p.dtype if p is not None else torch.float32

    def encode(self, modality: str, inputs: Any, grad: GradMode = False) -> torch.Tensor:
        """Model input -> L2-normalised float32 ``(N, D)``, with the chosen gradient mode; the forward pass
        runs under :func:`mars_core.precision.autocast` (bf16 on a CUDA GPU, a no-op on a CPU)."""
        grad = _check_grad(grad)
        with _grad_context(grad is True), autocast(self.device):
            feats = self.trunk_features(modality, inputs)
        with _grad_context(bool(grad)):
            with autocast(self.device):
                heads = self.head_embeddings(modality, feats)
            return F.normalize(heads.float(), dim=-1)

    def _embed(self, modality: str, items, prepare, batch_size: int, grad: GradMode) -> torch.Tensor:
        outs = []
        for sl in _chunks(len(items), batch_size):
            with _grad_context(grad is True):
                inputs = prepare(items[sl])
            outs.append(self.encode(modality, inputs, grad))
        return torch.cat(outs)

    def embed_audio(
        self,
        waveforms: Any,
        sample_rate: int,
        *,
        batch_size: int = 32,
        grad: GradMode = False,
        resample: bool = False,
    ) -> torch.Tensor:
        """Embed mono waveforms.

        Args:
            waveforms: ``(N, T)`` / ``(T,)`` float tensor or array, or a list of 1-D ones.
            sample_rate: their rate in Hz; must equal :attr:`sample_rate` unless ``resample``.
            resample: resample explicitly to the native rate instead of raising.

        Shape:
            returns ``(N, D)`` float32, unit L2 norm.

        Raises:
            ValueError: sample-rate mismatch (naming both rates), empty batch, NaN/inf,
                integer dtype, a waveform too short for the encoder.
        """
        items = as_waveform_list(waveforms)
        if int(sample_rate) != self.sample_rate:
            if not resample:
                raise ValueError(
                    f"audio is at {sample_rate} Hz but this encoder's native rate is {self.sample_rate} Hz; "
                    f"resample it first (mars_core.inputs.resample_to(x, {sample_rate}, {self.sample_rate})) "
                    f"or pass resample=True"
                )
            from .preprocess import resample as _resample

            items = [_resample(w.float(), int(sample_rate), self.sample_rate) for w in items]
        return self._embed("audio", items, self.prepare_audio, batch_size, grad)

    def embed_text(self, texts: Sequence[str], *, batch_size: int = 256, grad: GradMode = False,
                   allow_empty: bool = False) -> torch.Tensor:
        """Embed strings. Shape: returns ``(N, D)`` float32, unit L2 norm.

        Raises:
            ValueError: an empty or whitespace-only prompt (unless ``allow_empty``), an empty batch.
        """
        return self._embed("text", as_text_list(texts, allow_empty), self.prepare_text, batch_size, grad)

    def embed_image(self, images: Any, *, batch_size: int = 32, grad: GradMode = False) -> torch.Tensor:
        """Embed images.

        Args:
            images: uint8 ``(N, H, W, 3)`` array/tensor, a list of PIL images (or of uint8
                ``(H, W, 3)`` arrays), or float ``(N, 3, S, S)`` already normalised.

        Shape:
            returns ``(N, D)`` float32, unit L2 norm.
        """
        batch = as_image_batch(images, self.image_size)
        if isinstance(batch, torch.Tensor):
            prepare = lambda x: x.to(self.device, self.dtype)  # noqa: E731
        else:
            prepare = lambda x: self.prepare_images(list(x)).to(self.device, self.dtype)  # noqa: E731
        return self._embed("vision", batch, prepare, batch_size, grad)

    def eval_mode(self):
        """Temporarily switch to eval mode (restores the previous mode): ``with encoder.eval_mode(): ...``."""
        return eval_mode_of(self)
