"""mars_core.precision: on a CPU every context is a no-op (results bit-identical, TF32 flags untouched); on a
(faked) CUDA device the words mean bf16 autocast + TF32 or strict fp32; the bf16 path of the separator and the
encoders, exercised on the CPU by adding ``"cpu"`` to the autocast device types; ``maybe_compile`` falls back to
eager code with a warning; ``--precision`` on every command."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from mars_core import precision
from mars_core.audio import FrontEnd
from mars_core.config import get_profile
from mars_core.device import device_from_args
from mars_core.encoders.imagebind import ImageBind
from mars_core.encoders.minibind import MiniBind
from mars_core.precision import (PrecisionError, apply_precision, autocast, autocast_dtype, maybe_compile,
                                 precision_scope, set_precision, setup_fast_math)
from mars_core.separator import multi_query_logits, new_separator
from mars_core.supervised.loss import supervised_loss

from .one_thread import one_thread  # noqa: F401
from .test_device import _parsers

SMOKE = get_profile("smoke")


@pytest.fixture(autouse=True)
def restore_precision():
    """Every test leaves the process word and the TF32 flags as it found them."""
    word = precision.get_precision()
    flags = precision._tf32_flags()
    yield
    precision._state["precision"] = word
    precision._set_tf32_flags(*flags)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine that says it has a bf16-capable CUDA GPU (nothing is run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.fixture
def cpu_autocasts(monkeypatch):
    """The bf16 path on the CPU: forward passes on a CPU device autocast like a CUDA GPU's would."""
    monkeypatch.setattr(precision, "AUTOCAST_DEVICE_TYPES", frozenset({"cuda", "cpu"}))


def _batch(seed: int = 0) -> dict:
    """A supervised batch of smoke shapes: 1 mixture of 2 sources, each source an item.

    Shape: features, mix_mag ``(1, 1, F, T)``; queries ``(1, 2, D)``; targets ``(1, 2, F, T)``.
    """
    g = torch.Generator().manual_seed(seed)
    fe = FrontEnd(SMOKE.audio)
    sources = 0.1 * torch.randn(1, 2, SMOKE.audio.segment_samples, generator=g)
    mix = fe.warp(fe.stft(sources.sum(1)).abs()).unsqueeze(1)
    src = fe.warp(fe.stft(sources).abs())
    return {"features": torch.log(mix + 1e-10), "mix_mag": mix, "targets": (src > 0.5 * mix).float(),
            "queries": F.normalize(torch.randn(1, 2, SMOKE.separator.query_dim, generator=g), dim=-1)}


def _lively_separator() -> torch.nn.Module:
    """A smoke separator whose logits depend on its input: the reference init (convolutions N(0, 1e-3),
    query projection N(0, 1e-4)) gives logits of about 0 everywhere, where bf16 rounding cannot show."""
    model = new_separator(SMOKE, 0, query_init_std=0.5).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):  # He init
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
    return model


def _bce_by_formula(model, batch) -> torch.Tensor:
    """The weighted BCE written out here, with no autocast: mean(w BCE(z, M)), w = clamp(log1p|X|, 1e-3, 10)."""
    logits = multi_query_logits(model, batch["features"], batch["queries"])
    w = torch.log1p(batch["mix_mag"]).clamp(1e-3, 10.0).expand_as(logits)
    flat = lambda x: x.reshape(-1, *x.shape[-2:])  # noqa: E731
    return F.binary_cross_entropy_with_logits(flat(logits), flat(batch["targets"]), weight=flat(w))


# --------------------------------------------------------------------------- CPU: no-ops
@pytest.mark.parametrize("word", ["auto", "bf16", "fp32"])
def test_cpu_autocast_is_a_null_context(word):
    precision._state["precision"] = word  # bf16 is refused on a CPU by set_precision; the context ignores it
    assert isinstance(autocast("cpu"), contextlib.nullcontext)
    assert autocast_dtype("cpu") is None
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_supervised_loss_on_cpu_is_bit_identical_to_the_fp32_formula():
    model = _lively_separator()
    batch = _batch()
    with torch.no_grad():
        expected = _bce_by_formula(model, batch)
        for word in ("auto", "fp32"):
            set_precision(word, "cpu")
            got = supervised_loss(model, batch)
            assert got.dtype == torch.float32
            assert torch.equal(got, expected), word


def test_encoders_on_cpu_are_bit_identical_to_their_unwrapped_forward():
    enc = MiniBind.from_profile(SMOKE, seed=0).eval()
    texts = ["a violin", "a dog barking"]
    with torch.no_grad():
        ids = enc.prepare_text(texts)
        expected = F.normalize(enc.head_embeddings("text", enc.trunk_features("text", ids)).float(), dim=-1)
    for word in ("auto", "fp32"):
        set_precision(word, "cpu")
        assert torch.equal(enc.embed_text(texts), expected), word


def test_setup_fast_math_leaves_cpu_flags_alone():
    precision._set_tf32_flags(True, False, "high")  # sentinel: cuDNN TF32 off, which no call here would choose
    assert setup_fast_math("cpu") is False
    assert apply_precision("auto", "cpu") == "fp32"
    assert apply_precision("fp32", torch.device("cpu")) == "fp32"
    with precision_scope("auto", "cpu"):
        pass
    assert precision._tf32_flags() == (True, False, "high")


def test_bf16_refused_on_cpu_and_unknown_words_named():
    with pytest.raises(PrecisionError, match="--precision bf16: cpu has no bf16 autocast.*auto or fp32"):
        set_precision("bf16", "cpu")
    with pytest.raises(PrecisionError, match=r"expected one of auto\|fp32\|bf16"):
        set_precision("fp16")


# --------------------------------------------------------------------------- faked CUDA: what the words mean
def test_cuda_auto_and_bf16_give_a_bf16_autocast(fake_cuda):
    for word in ("auto", "bf16"):
        assert set_precision(word, "cuda") == "bf16"
        ctx = autocast(torch.device("cuda", 0))
        assert isinstance(ctx, torch.autocast)
        assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.bfloat16)
        assert isinstance(autocast("cuda", enabled=False), contextlib.nullcontext)
    assert set_precision("fp32", "cuda") == "fp32"
    assert isinstance(autocast("cuda"), contextlib.nullcontext)


@pytest.mark.parametrize("is_bf16_supported",
                         [lambda *a, **k: False, lambda including_emulation=True: including_emulation],
                         ids=["none", "emulated only (a V100)"])
def test_cuda_without_bf16(monkeypatch, is_bf16_supported):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert set_precision("auto", "cuda") == "fp32"
    assert isinstance(autocast("cuda"), contextlib.nullcontext)
    with pytest.raises(PrecisionError, match="--precision bf16: cuda has no bf16.*Ampere"):
        set_precision("bf16", "cuda")


def test_tf32_flags_on_cuda_and_restored_by_the_scope(fake_cuda):
    precision._set_tf32_flags(False, False, "highest")
    assert setup_fast_math("cuda") is True
    assert precision._tf32_flags() == (True, True, "high")
    with precision_scope("fp32", "cuda") as what:
        assert what == "fp32"
        assert precision._tf32_flags() == (False, False, "highest")
        assert precision.get_precision() == "fp32"
    assert precision._tf32_flags() == (True, True, "high")
    assert apply_precision("auto", "cuda") == "bf16 autocast + TF32"


# --------------------------------------------------------------------------- the bf16 path, run on the CPU
def test_supervised_loss_autocasts_the_forward_and_keeps_the_loss_fp32(cpu_autocasts):
    model = _lively_separator()
    batch = _batch()
    seen = []
    conv = next(m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    with torch.no_grad():
        ref = _bce_by_formula(model, batch)
        set_precision("bf16", "cpu")
        got = supervised_loss(model, batch)
    assert seen[-1] == torch.bfloat16 and seen[0] == torch.float32  # fp32 reference, then bf16
    assert got.dtype == torch.float32
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per op); the loss is a mean of O(1) terms over
    # 32k bins through 7 convolution levels: 2 % covers the accumulated rounding, and a 0 difference would
    # mean the forward did not autocast
    assert 0 < abs(got.item() - ref.item()) < 0.02 * ref.item()


@pytest.mark.parametrize("make", [lambda: MiniBind.from_profile(SMOKE, seed=0), lambda: ImageBind("tiny")],
                         ids=["minibind", "imagebind-tiny"])
def test_encoders_run_under_bf16_and_return_fp32_unit_rows(cpu_autocasts, make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = make().eval()
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, enc.sample_rate, generator=g)
    texts = ["a violin", "a dog barking"]
    images = torch.randint(0, 256, (2, 48, 48, 3), dtype=torch.uint8, generator=g)
    set_precision("fp32")
    ref = [enc.embed_audio(wav, enc.sample_rate), enc.embed_text(texts), enc.embed_image(images)]
    set_precision("bf16", "cpu")
    got = [enc.embed_audio(wav, enc.sample_rate), enc.embed_text(texts), enc.embed_image(images)]
    for name, r, x in zip(("audio", "text", "image"), ref, got):
        assert x.dtype == torch.float32, name
        assert torch.allclose(x.norm(dim=-1), torch.ones(2), atol=1e-5), name
        cos = (r * x).sum(-1)
        # bf16 rounding moves a unit embedding by about 1e-2 at most here; cos 0.99 leaves room and still
        # fails for a wrong dtype path (garbage embeddings have cos ~ 0 with the fp32 ones)
        assert bool((cos > 0.99).all()), (name, cos)
        assert not torch.equal(r, x), name  # the forward did autocast


# --------------------------------------------------------------------------- torch.compile fallback
class _Double(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.w * x


def test_maybe_compile_disabled_returns_the_module():
    m = _Double()
    assert maybe_compile(m, False) is m


def test_maybe_compile_falls_back_when_compile_is_unavailable(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", broken)
    m = _Double()
    with pytest.warns(UserWarning, match="torch.compile of _Double is not available.*eagerly"):
        assert maybe_compile(m, True) is m


def test_maybe_compile_falls_back_when_the_first_call_fails(monkeypatch):
    calls = {"n": 0}

    def compile_that_fails_once(module, **kwargs):
        def run(x):
            calls["n"] += 1
            raise RuntimeError("backend 'inductor' failed: no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", compile_that_fails_once)
    m = _Double()
    wrapped = maybe_compile(m, True)
    x = torch.tensor([1.0, -3.0])
    with pytest.warns(UserWarning, match="failed at its first call.*no C\\+\\+ compiler.*eagerly"):
        assert wrapped(x).tolist() == [2.0, -6.0]  # 2 x by hand
    assert wrapped(x).tolist() == [2.0, -6.0] and calls["n"] == 1  # the compiled path is not retried
    assert list(wrapped.parameters()) == [m.w]  # shares the module's parameters, nothing more


def test_maybe_compile_uses_the_compiled_module_once_it_works(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **k: (lambda x: module(x) + 100.0))
    wrapped = maybe_compile(_Double(), True)
    assert wrapped(torch.tensor([1.0])).tolist() == [102.0]
    assert wrapped(torch.tensor([2.0])).tolist() == [104.0]


# --------------------------------------------------------------------------- --precision on every command
def test_every_command_parses_precision():
    for name, (parse, extra) in _parsers().items():
        assert parse(extra).precision == "auto", name
        assert parse([*extra, "--precision", "fp32"]).precision == "fp32", name
        with pytest.raises(SystemExit):
            parse([*extra, "--precision", "fp16"])


def test_device_from_args_applies_precision(monkeypatch):
    from mars_core.supervised.cli import _parser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_from_args(_parser().parse_args(["--device", "cpu", "--precision", "fp32"]), "smoke")
    assert precision.get_precision() == "fp32"
    with pytest.raises(SystemExit, match="--precision bf16: cpu has no bf16 autocast"):
        device_from_args(_parser().parse_args(["--device", "cpu", "--precision", "bf16"]), "smoke")
