"""The TriModalEncoder contract: shapes, normalisation, batching, gradients, input errors.

Runs on the fixture's tiny ImageBind (real weights of the official structure) and on a
minimal toy encoder, which shows what a new encoder has to implement.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from mars_core.encoders import ImageBind, TriModalEncoder
from mars_core.encoders.base import as_image_batch, as_waveform_list
from mars_core.encoders.preprocess import resample
from tests.conftest import imagebind_fixture


@pytest.fixture(scope="module")
def model():
    m = ImageBind("tiny")
    m.load_state_dict(torch.load(imagebind_fixture("tiny_state_dict.pt"), weights_only=True))
    return m.eval()


@pytest.fixture(scope="module")
def wavs():
    gen = torch.Generator().manual_seed(7)
    return torch.randn(4, 40000, generator=gen) * 0.1


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(3, 180, 250, 3), dtype=np.uint8)


PROMPTS = ["a violin", "a dog barking", "rain on a roof", "applause"]


# ----------------------------------------------------------------------------- outputs
def test_outputs_are_unit_norm_float32(model, wavs, images):
    for emb, n in [
        (model.embed_audio(wavs, 16000), 4),
        (model.embed_text(PROMPTS), 4),
        (model.embed_image(images), 3),
    ]:
        assert emb.shape == (n, model.embed_dim) and emb.dtype == torch.float32
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(n), atol=1e-6, rtol=0)
        assert not emb.requires_grad  # no_grad by default


def test_chunking_does_not_change_results(model, wavs, images):
    torch.testing.assert_close(model.embed_audio(wavs, 16000, batch_size=2), model.embed_audio(wavs, 16000), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.embed_text(PROMPTS, batch_size=1), model.embed_text(PROMPTS), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.embed_image(images, batch_size=2), model.embed_image(images), atol=1e-6, rtol=0)


def test_audio_input_forms_agree(model, wavs):
    ref = model.embed_audio(wavs, 16000)
    torch.testing.assert_close(model.embed_audio(wavs.numpy(), 16000), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.embed_audio(list(wavs), 16000), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.embed_audio(wavs[0], 16000), ref[:1], atol=1e-6, rtol=0)
    mixed = model.embed_audio([wavs[0], wavs[1, :20000]], 16000)  # different lengths in one batch
    torch.testing.assert_close(mixed[0], ref[0], atol=1e-6, rtol=0)


def test_image_input_forms_agree(model, images):
    ref = model.embed_image(images)
    torch.testing.assert_close(model.embed_image(torch.from_numpy(images)), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.embed_image([Image.fromarray(im) for im in images]), ref, atol=1e-6, rtol=0)
    normalised = model.prepare_images(list(images))
    torch.testing.assert_close(model.embed_image(normalised), ref, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- sample rate
def test_wrong_sample_rate_names_both_rates(model, wavs):
    with pytest.raises(ValueError, match="44100 Hz.*16000 Hz"):
        model.embed_audio(wavs, 44100)


def test_resample_true_resamples_explicitly(model):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 22050, generator=gen) * 0.1
    got = model.embed_audio(x, 22050, resample=True)
    manual = model.embed_audio(resample(x, 22050, 16000), 16000)
    torch.testing.assert_close(got, manual, atol=1e-6, rtol=0)
    assert resample(x, 22050, 16000).shape[-1] == 16000


# ----------------------------------------------------------------------------- gradients
def _grad_flags(model, modality):
    head = [p.grad is not None for p in model.modality_heads[modality].parameters()]
    trunk = [p.grad is not None for p in model.modality_trunks[modality].parameters()]
    return head, trunk


def test_grad_heads_reaches_heads_only(model, wavs):
    model.zero_grad(set_to_none=True)
    emb = model.embed_audio(wavs[:2], 16000, grad="heads")
    assert emb.requires_grad
    emb.sum().backward()
    head, trunk = _grad_flags(model, "audio")
    assert all(head) and not any(trunk)
    model.zero_grad(set_to_none=True)


def test_grad_true_reaches_the_trunk(model):
    model.zero_grad(set_to_none=True)
    model.embed_text(PROMPTS[:2], grad=True).sum().backward()
    head, trunk = _grad_flags(model, "text")
    assert all(head) and all(trunk)
    model.zero_grad(set_to_none=True)


def test_grad_true_flows_to_float_image_inputs(model, images):
    x = model.prepare_images(list(images[:1])).requires_grad_(True)
    model.embed_image(x, grad=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_invalid_grad_value(model):
    with pytest.raises(ValueError, match="grad must be"):
        model.embed_text(PROMPTS, grad="yes")


def test_freeze_backbone_leaves_heads_trainable_and_trunk_in_eval():
    m = ImageBind("tiny")
    params = m.freeze_backbone()
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("modality_heads.", "modality_postprocessors.text")) for n in names)
    assert len(params) == len(names)
    m.train()
    assert m.modality_heads.training and not m.modality_trunks.training
    assert not any(mod.training for mod in m.modality_trunks.modules())


# ----------------------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.zeros(0, 16000), "empty batch"),
        ([], "empty batch"),
        (torch.zeros(2, 0), "is empty"),
        (torch.tensor([[0.0, float("nan")] * 500]), "NaN or infinite"),
        (torch.tensor([[0.0, float("inf")] * 500]), "NaN or infinite"),
        (torch.zeros(2, 1000, dtype=torch.int16), "int16 PCM"),
        (torch.zeros(2, 2, 1000), r"\(N, T\)"),
        ([torch.zeros(2, 1000)], "1-D"),
    ],
)
def test_bad_audio_raises(model, bad, match):
    with pytest.raises(ValueError, match=match):
        model.embed_audio(bad, 16000)


def test_audio_too_short_for_one_frame(model):
    with pytest.raises(ValueError, match="at least 400"):
        model.embed_audio(torch.zeros(1, 300), 16000)


def test_bad_batch_size(model, wavs):
    with pytest.raises(ValueError, match="batch_size"):
        model.embed_audio(wavs, 16000, batch_size=0)


def test_bad_text_raises(model):
    with pytest.raises(TypeError, match="list of strings"):
        model.embed_text("a violin")
    with pytest.raises(TypeError, match="not str"):
        model.embed_text(["ok", 3])
    with pytest.raises(ValueError, match="empty batch"):
        model.embed_text([])


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((0, 10, 10, 3), np.uint8), "empty batch"),
        ([], "empty batch"),
        (np.zeros((10, 10, 3), np.uint8), r"\(N, H, W, 3\)"),
        (np.zeros((2, 10, 10, 4), np.uint8), r"\(N, H, W, 3\)"),
        (torch.zeros(2, 3, 100, 100), r"\(N, 3, 224, 224\)"),
        (torch.zeros(2, 224, 224, 3), r"\(N, 3, 224, 224\)"),
        (torch.full((1, 3, 224, 224), float("nan")), "NaN"),
        (np.zeros((2, 10, 10, 3), np.int32), "dtype"),
        ([np.zeros((10, 10), np.uint8)], "image 0"),
    ],
)
def test_bad_images_raise(model, bad, match):
    with pytest.raises(ValueError, match=match):
        model.embed_image(bad)


def test_validators_on_their_own():
    assert [w.shape for w in as_waveform_list([np.zeros(500), torch.zeros(600)])] == [(500,), (600,)]
    assert isinstance(as_image_batch(torch.zeros(1, 3, 8, 8), 8), torch.Tensor)
    with pytest.raises(TypeError):
        as_waveform_list("not audio")


# ----------------------------------------------------------------------------- a minimal encoder
class ToyEncoder(TriModalEncoder):
    """The smallest encoder that satisfies the interface (mean-pooled linear maps)."""

    sample_rate = 8000
    image_size = 8
    embed_dim = 4

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(1, 3)
        self.head = nn.Linear(3, 4)

    def prepare_audio(self, waveforms):
        return torch.stack([w.float().abs().mean().reshape(1) for w in waveforms])

    def prepare_text(self, texts):
        return torch.tensor([[float(len(t))] for t in texts])

    def prepare_images(self, images):
        arr = np.stack([np.asarray(im.resize((8, 8)) if isinstance(im, Image.Image) else im) for im in images])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255

    def trunk_features(self, modality, inputs):
        x = inputs.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(-1) if modality == "vision" else inputs
        return self.backbone(x)

    def head_embeddings(self, modality, features):
        return self.head(features)

    def freeze_backbone(self):
        self.backbone.requires_grad_(False)
        return list(self.head.parameters())


def test_interface_is_abstract():
    with pytest.raises(TypeError):
        TriModalEncoder()


def test_toy_encoder_gets_validation_batching_and_normalisation():
    toy = ToyEncoder()
    emb = toy.embed_audio(torch.rand(5, 800), 8000, batch_size=2)
    assert emb.shape == (5, 4) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(5), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="16000 Hz.*8000 Hz"):
        toy.embed_audio(torch.rand(1, 800), 16000)
    assert toy.embed_text(["a", "bb"]).shape == (2, 4)
    assert toy.embed_image(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 4)
    toy.freeze_backbone()
    toy.embed_text(["a"], grad="heads").sum().backward()
    assert toy.head.weight.grad is not None and toy.backbone.weight.grad is None
