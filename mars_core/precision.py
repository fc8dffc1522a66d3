"""Numerics of a run on a GPU: bf16 autocast, TF32 matmuls, optional ``torch.compile``.

One word per process, ``--precision auto|fp32|bf16`` (next to ``--device`` on every command; applied by
:func:`mars_core.device.device_from_args`, so by every command that resolves its device there):

* ``auto`` (default): bf16 autocast and TF32 on a CUDA device that supports bf16; plain fp32 elsewhere.
* ``bf16``: the same, but a CUDA device without bf16 (or a CPU) is an error instead of a silent fp32.
* ``fp32``: no autocast and no TF32 anywhere (the reference the GPU check compares against).

:func:`autocast` is what the forward passes wrap themselves in (the separator's in
:func:`mars_core.supervised.loss.supervised_loss`, every encoder's in
:meth:`mars_core.encoders.base.TriModalEncoder.encode`); losses, log-probabilities, advantages and
metrics stay fp32 (their callers cast with ``.float()``). **On a CPU every context here is a no-op**, so
CPU results are bit-identical with and without it.

    with autocast(device):
        logits = model(features, queries)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target)

``--compile`` (off by default; :func:`set_compile`, read back by :func:`compile_requested`): the supervised
trainer runs the separator's multi-query forward through ``torch.compile`` (:func:`maybe_compile`, which falls
back to eager with a warning where compiling fails), and the RL trainer the U-Net trunk of its rollouts (and of
its updates when the whole network trains: :class:`mars_core.rl.rollout.Trunk`). It changes speed, not the
computation (up to float rounding: a compiled graph may fuse and reorder float32 operations).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16")
"""The words of ``--precision``."""
AUTOCAST_DEVICE_TYPES = frozenset({"cuda"})
"""Device types whose forward passes autocast (a test adds ``"cpu"`` to exercise the bf16 path)."""

_state = {"precision": "auto", "compile": False}


class PrecisionError(ValueError):
    """A precision word that cannot be used on this device (the message says what to do)."""


def _check_word(word: str) -> str:
    text = str(word).strip().lower()
    if text not in PRECISIONS:
        raise PrecisionError(f"--precision {word!r}: expected one of {'|'.join(PRECISIONS)}")
    return text


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 autocast here: a device type in :data:`AUTOCAST_DEVICE_TYPES`
    (CUDA) whose hardware has bf16 (``torch.cuda.is_bf16_supported``, Ampere and later)."""
    dev = torch.device(device)
    if dev.type not in AUTOCAST_DEVICE_TYPES:
        return False
    if dev.type == "cuda":
        try:
            if not torch.cuda.is_available():
                return False
            try:  # native bf16 only: a pre-Ampere GPU emulates it, slower than fp32
                return bool(torch.cuda.is_bf16_supported(including_emulation=False))
            except TypeError:  # a torch without the argument
                return bool(torch.cuda.is_bf16_supported())
        except (AssertionError, RuntimeError):  # a CPU-only torch build asked about CUDA
            return False
    return True


def get_precision() -> str:
    """The process's precision word (``auto`` until :func:`set_precision`)."""
    return _state["precision"]


def set_precision(word: str, device: torch.device | str | None = None) -> str:
    """Make ``word`` the process's precision; returns what it means on ``device``: ``"bf16"`` or ``"fp32"``.

    Raises:
        PrecisionError: an unknown word, or ``bf16`` on a device without bf16 autocast (a CPU, a
            pre-Ampere GPU) when ``device`` is given.
    """
    text = _check_word(word)
    if text == "bf16" and device is not None and not bf16_supported(device):
        raise PrecisionError(f"--precision bf16: {torch.device(device)} has no bf16 autocast here (it runs on "
                             "CUDA GPUs with bf16, Ampere or later); use --precision auto or fp32")
    _state["precision"] = text
    return "bf16" if device is not None and autocast_dtype(device) is not None else "fp32"


def autocast_dtype(device: torch.device | str, precision: str | None = None) -> torch.dtype | None:
    """``torch.bfloat16`` when forward passes on ``device`` autocast under ``precision`` (default: the
    process's word), else ``None`` (plain fp32)."""
    word = _check_word(precision if precision is not None else get_precision())
    if word == "fp32" or not bf16_supported(device):
        return None
    return torch.bfloat16


def autocast(device: torch.device | str, enabled: bool = True):
    """The context a forward pass on ``device`` runs in: ``torch.autocast(<cuda>, dtype=torch.bfloat16)``
    when ``enabled`` and :func:`autocast_dtype` says bf16, else ``contextlib.nullcontext()`` (always on a CPU).

    Outputs of an autocast region may be bf16: cast them with ``.float()`` before a loss or a metric.
    """
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _tf32_flags() -> tuple[bool, bool, str]:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


def _set_tf32_flags(matmul: bool, cudnn: bool, matmul_precision: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.set_float32_matmul_precision(matmul_precision)


def setup_fast_math(device: torch.device | str, enabled: bool = True) -> bool:
    """TF32 for fp32 matmuls and convolutions on a CUDA ``device`` (``allow_tf32`` for cuBLAS and cuDNN,
    ``set_float32_matmul_precision("high")``); ``enabled=False`` turns them off (strict fp32). A no-op on
    any other device (the process's flags are left as they are). Returns whether the flags were set."""
    if torch.device(device).type != "cuda":
        return False
    _set_tf32_flags(enabled, enabled, "high" if enabled else "highest")
    return True


def apply_precision(word: str, device: torch.device | str) -> str:
    """:func:`set_precision` and the TF32 flags that go with it (on for ``auto``/``bf16``, off for ``fp32``);
    returns a few words for the command's first line: ``"bf16 autocast + TF32"`` (CUDA with bf16),
    ``"fp32 + TF32"`` (CUDA without bf16) or ``"fp32"``.

    Raises:
        PrecisionError: as :func:`set_precision`.
    """
    set_precision(word, device)
    setup_fast_math(device, enabled=get_precision() != "fp32")
    return describe_precision(device)


def describe_precision(device: torch.device | str) -> str:
    """What forward passes on ``device`` run in now: ``"bf16 autocast + TF32"``, ``"fp32 + TF32"`` or ``"fp32"``."""
    tf32 = torch.device(device).type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return ("bf16 autocast" if autocast_dtype(device) is not None else "fp32") + (" + TF32" if tf32 else "")


@contextlib.contextmanager
def precision_scope(word: str, device: torch.device | str) -> Iterator[str]:
    """:func:`apply_precision` for the ``with`` block only (the word and the TF32 flags are restored after);
    yields what :func:`apply_precision` returns. Used to compare bf16 with fp32 in one process."""
    saved_word, saved_flags = get_precision(), _tf32_flags()
    try:
        yield apply_precision(word, device)
    finally:
        _state["precision"] = saved_word
        if torch.device(device).type == "cuda":
            _set_tf32_flags(*saved_flags)


def set_compile(enabled: bool) -> None:
    """``--compile``: whether the training commands compile the separator's forward pass (:func:`maybe_compile`
    where :func:`compile_requested`; applied by :func:`mars_core.commands.start_command`). Off by default."""
    _state["compile"] = bool(enabled)


def compile_requested() -> bool:
    """Whether ``--compile`` was given to this process's command (:func:`set_compile`)."""
    return _state["compile"]


class _CompiledOrEager(torch.nn.Module):
    """``compiled(*args)`` until its first call fails, then the eager ``module`` (with one warning)."""

    def __init__(self, module: torch.nn.Module, compiled):
        super().__init__()
        self.module = module
        self._compiled = [compiled]  # a list: not registered as a submodule (its parameters are module's)
        self._proven = False

    def forward(self, *args, **kwargs):
        if self._compiled[0] is not None:
            if self._proven:
                return self._compiled[0](*args, **kwargs)
            try:
                out = self._compiled[0](*args, **kwargs)
                self._proven = True
                return out
            except Exception as err:  # noqa: BLE001 -- any compile failure falls back to eager
                warnings.warn(f"torch.compile of {type(self.module).__name__} failed at its first call "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); running it "
                              "eagerly (same results, slower). Drop --compile to silence this.", stacklevel=2)
                self._compiled[0] = None
        return self.module(*args, **kwargs)


def maybe_compile(module: torch.nn.Module, enabled: bool, **compile_kwargs) -> torch.nn.Module:
    """``torch.compile(module)`` when ``enabled``, falling back to ``module`` itself with a warning when
    compiling fails (at wrap time or at the first call: no Triton, no C++ compiler, an unsupported op).

    The returned module shares ``module``'s parameters: call it for forward passes, but save and load
    ``module.state_dict()`` (the wrapper's keys carry a prefix). ``enabled=False`` returns ``module``.
    """
    if not enabled:
        return module
    try:
        compiled = torch.compile(module, **compile_kwargs)
    except Exception as err:  # noqa: BLE001 -- any compile failure falls back to eager
        warnings.warn(f"torch.compile of {type(module).__name__} is not available here ({type(err).__name__}: "
                      f"{err}); running it eagerly (same results, slower).", stacklevel=2)
        return module
    return _CompiledOrEager(module, compiled)
