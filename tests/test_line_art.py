"""The line-art image input (preprocess.line_art) and MiniBind's image_style option."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from mars_core.config import get_profile
from mars_core.encoders.minibind import MiniBind, encoder_config_from_dict, load_minibind, save_minibind
from mars_core.encoders.preprocess import CLIP_MEAN, CLIP_STD, LINE_ART_QUANTILE, line_art
from mars_core.runs import encoder_fingerprint

SMOKE = get_profile("smoke")
MEAN, STD = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]


def _normalise(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - MEAN) / STD


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def test_a_filled_square_becomes_its_outline():
    # a black 16 x 16 square on a white 48 x 48 page: after the 3x3 box blur and the 3x3 Sobel the gradient is
    # non-zero only within 2 pixels of the square's border, so every stroke lies in that band, and the band's
    # 4 sides all get strokes (the 14 % of pixels with the largest edge values: 323 of 2304, the band has 448)
    rgb = torch.ones(1, 3, 48, 48)
    rgb[:, :, 16:32, 16:32] = 0.0
    out = _pixels(line_art(_normalise(rgb)))[0]
    assert torch.allclose(out, out.round(), atol=1e-5)  # only black and white
    black = out[0] < 0.5
    assert torch.equal(black, out[1] < 0.5) and torch.equal(black, out[2] < 0.5)  # grey: all channels alike
    band = torch.zeros(48, 48, dtype=torch.bool)
    band[14:34, 14:34] = True
    band[18:30, 18:30] = False
    assert black.any() and not (black & ~band).any()
    assert not black[20:28, 20:28].any()  # the square's inside is white: its fill is gone
    for side in (black[14:18, 16:32], black[30:34, 16:32], black[16:32, 14:18], black[16:32, 30:34]):
        assert side.any()
    # strictly above the 86 % quantile: at most 14 % of the page (ties at the threshold stay white)
    assert 64 <= int(black.sum()) <= round((1 - LINE_ART_QUANTILE) * 48 * 48)


def test_a_blank_page_stays_blank():
    out = _pixels(line_art(_normalise(torch.full((2, 3, 16, 16), 0.7))))
    torch.testing.assert_close(out, torch.ones_like(out), rtol=0, atol=1e-5)


def test_line_art_ignores_colour_contrast_and_brightness():
    # a smooth random picture (no ties in its edge map) and the same picture at half contrast, shifted, with its
    # colours permuted within a grey-preserving mix: the edge map is divided by its maximum and thresholded at a
    # quantile, so only pixels within float rounding of the threshold may flip
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 1, 8, 8, generator=g), size=(64, 64), mode="bicubic",
                                           align_corners=False).clamp(0, 1)
    rgb = base.expand(1, 3, 64, 64) * 0.6 + 0.2
    other = rgb[:, [2, 0, 1]] * 0.5 + 0.25  # same grey level shape, other contrast, brightness and channel order
    a, b = line_art(_normalise(rgb)), line_art(_normalise(other))
    differ = (_pixels(a)[:, 0] - _pixels(b)[:, 0]).abs() > 0.5
    assert int(differ.sum()) <= 2  # of 4096 pixels


def test_line_art_refuses_other_shapes_and_quantiles():
    with pytest.raises(ValueError, match="B, 3, S, S"):
        line_art(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="B, 3, S, S"):
        line_art(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="quantile"):
        line_art(torch.zeros(1, 3, 8, 8), quantile=1.0)


def test_minibind_line_art_reads_line_art_of_its_images():
    # the oracle: the same weights with the images as drawn, fed line_art(x) by hand
    size = SMOKE.encoder.image_size
    drawn = MiniBind(SMOKE.encoder, SMOKE.audio.sample_rate, seed=0).eval()
    lined = MiniBind(replace(SMOKE.encoder, image_style="line_art"), SMOKE.audio.sample_rate, seed=0).eval()
    x = _normalise(torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1)))
    e_lined = lined.embed_image(x)
    torch.testing.assert_close(e_lined, drawn.embed_image(line_art(x)), rtol=0, atol=1e-6)
    assert (e_lined - drawn.embed_image(x)).abs().max() > 1e-3  # the option changes what the tower sees
    # clips (B, S, 3, H, W): each clip redrawn on its own, then averaged as the tower does
    clips = lined.trunk_features("vision", x[None])
    flat = drawn.trunk_features("vision", line_art(x)[None])
    torch.testing.assert_close(clips.tokens, flat.tokens, rtol=0, atol=1e-6)
    # text and audio are untouched
    torch.testing.assert_close(lined.embed_text(["a tuba"]), drawn.embed_text(["a tuba"]), rtol=0, atol=0)


def test_image_style_is_checked_and_survives_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="image_style"):
        MiniBind(replace(SMOKE.encoder, image_style="sketch"), SMOKE.audio.sample_rate, seed=0)
    model = MiniBind(replace(SMOKE.encoder, image_style="line_art"), SMOKE.audio.sample_rate, seed=0)
    loaded = load_minibind(save_minibind(tmp_path / "m.pt", model, metrics={}))
    assert loaded.encoder_config.image_style == "line_art"
    old = {k: v for k, v in asdict(SMOKE.encoder).items() if k != "image_style"}  # a checkpoint from before
    assert encoder_config_from_dict(old).image_style == "as_drawn"
    assert get_profile("smoke").encoder.image_style == "as_drawn"
    assert np.isclose(LINE_ART_QUANTILE, 0.86)


def test_fingerprint_tells_the_image_styles_apart_and_keeps_the_old_one():
    drawn = MiniBind(SMOKE.encoder, SMOKE.audio.sample_rate, seed=0)
    lined = MiniBind(replace(SMOKE.encoder, image_style="line_art"), SMOKE.audio.sample_rate, seed=0)
    assert encoder_fingerprint(drawn) != encoder_fingerprint(lined)  # same weights, other inputs
    # the as-drawn fingerprint is the one computed before the option existed: class, rate, state dict
    h = hashlib.sha256()
    h.update(b"MiniBind")
    h.update(str(SMOKE.audio.sample_rate).encode())
    for name, t in sorted(drawn.state_dict().items()):
        t = t.detach().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    assert encoder_fingerprint(drawn) == h.hexdigest()
