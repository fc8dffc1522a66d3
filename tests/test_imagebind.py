"""ImageBind against the recorded official fixture (tests/fixtures/imagebind, README.md there).

The fixture was made by running the official ImageBind code: the huge model's key list,
a tiny model's weights, inputs, preprocessed tensors and every intermediate output.
Matching it is the evidence that the official ``imagebind_huge.pth`` loads and runs here.
Tolerances follow the fixture's FACTS.md (section 9), except for log-mel features, whose float32 FFT
rounding differs between CPUs (:func:`fbank_atol`).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mars_core.encoders import CONFIGS, ImageBind, from_pretrained
from mars_core.encoders import preprocess as P
from mars_core.encoders.hub import ChecksumError, DownloadError, download_checkpoint, sha256_of
from mars_core.encoders.tokenizer import VOCAB_PATH, BPETokenizer
from tests.conftest import imagebind_fixture
from tests.tolerances import EPS32, assert_within

ATOL_SCALED = 1e-4  # logit-scaled outputs and intermediate activations
ATOL_UNIT = 1e-5  # unit-norm outputs
ATOL_PRE = 1e-5  # preprocessing
AUDIO_NAMES = ("mono16k_5s", "stereo44k_2p3s", "mono16k_1p3s")
AUDIO_RATES = {"mono16k_5s": 16000, "stereo44k_2p3s": 44100, "mono16k_1p3s": 16000}


@pytest.fixture(scope="module")
def fx() -> Path:
    return imagebind_fixture("tiny_state_dict.pt").parent


@pytest.fixture(scope="module")
def ref(fx):
    return torch.load(fx / "reference_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def meta(fx):
    return json.loads((fx / "reference_io_index.json").read_text())["meta"]


@pytest.fixture(scope="module")
def tiny_sd(fx):
    return torch.load(fx / "tiny_state_dict.pt", weights_only=True)


@pytest.fixture(scope="module")
def tiny(tiny_sd):
    model = ImageBind("tiny")
    model.load_state_dict(tiny_sd)
    return model.eval()


def model_inputs(ref) -> dict[str, torch.Tensor]:
    """The fixture's model inputs (reference_io_index.json, meta.model_inputs)."""
    vision = torch.stack(
        [ref["vision.random_input"], ref["vision.image_landscape.preprocessed"], ref["vision.image_portrait_small.preprocessed"]]
    )
    audio = torch.stack([ref[f"audio.{n}.preprocessed"] for n in AUDIO_NAMES])
    return {"vision": vision, "text": ref["text.tokens"], "audio": audio}


def pcm(ref, name: str) -> torch.Tensor:
    """The fixture's int16 PCM as torchaudio.load returns it: ``int16 / 32768``."""
    return ref[f"audio.{name}.int16"].to(torch.float32) / 32768


# ----------------------------------------------------------------------------- structure
def test_huge_state_dict_equals_official_keys_and_shapes(fx):
    official = json.loads((fx / "huge_keys.json").read_text())
    with torch.device("meta"):
        model = ImageBind("huge")
    ours = [(k, list(v.shape), "float32" if v.dtype == torch.float32 else str(v.dtype)) for k, v in model.state_dict().items()]
    kept = [(e["key"], e["shape"], e["dtype"]) for e in official["keys"] if not e["key"].startswith(model.ignored_prefixes)]
    assert ours == kept  # same keys, same order, same shapes and dtypes
    ignored = [e["key"] for e in official["keys"] if e["key"].startswith(model.ignored_prefixes)]
    assert {k.split(".")[1] for k in ignored} == {"depth", "thermal", "imu"}
    assert len(ours) + len(ignored) == official["num_state_dict_entries"] == 1311
    buffers = {name for name, _ in model.named_buffers()}
    kinds = {e["key"]: e["kind"] for e in official["keys"]}
    assert buffers == {k for k, _, _ in kept if kinds[k] == "buffer"}


def test_huge_parameter_counts_per_modality(fx):
    official = json.loads((fx / "huge_keys.json").read_text())["per_modality_parameter_numel"]
    with torch.device("meta"):
        model = ImageBind("huge")
    for m in ("vision", "text", "audio"):
        n = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[1] == m)
        assert n == official[m], m


@pytest.mark.parametrize("name", ["huge", "tiny"])
def test_configs_equal_official_constructor_arguments(fx, name):
    if name == "huge":
        kwargs = json.loads((fx / "huge_keys.json").read_text())["effective_constructor_args"]
    else:
        kwargs = json.loads((fx / "tiny_config.json").read_text())["constructor_kwargs"]
    cfg = CONFIGS[name]
    for key in (
        "out_embed_dim", "video_frames", "audio_kernel_size", "audio_stride", "audio_num_mel_bins", "audio_target_len",
        "audio_drop_path", "vision_embed_dim", "vision_num_blocks", "vision_num_heads", "text_embed_dim",
        "text_num_blocks", "text_num_heads", "audio_embed_dim", "audio_num_blocks", "audio_num_heads",
    ):  # fmt: skip
        assert getattr(cfg, key) == kwargs[key], key
    assert list(cfg.kernel_size) == list(kwargs["kernel_size"])


def test_constant_buffers_and_initial_scale_equal_official(fx):
    official = json.loads((fx / "huge_keys.json").read_text())
    model = ImageBind("tiny")
    sd = model.state_dict()
    audio = official["constant_buffers"]["modality_postprocessors.audio.1.log_logit_scale"]["value"]
    assert sd["modality_postprocessors.audio.1.log_logit_scale"].item() == pytest.approx(audio, abs=1e-7)
    text = official["learnable_scalars_at_init"]["modality_postprocessors.text.1.log_logit_scale"]["init_value"]
    assert sd["modality_postprocessors.text.1.log_logit_scale"].item() == pytest.approx(text, abs=1e-6)
    mask = sd["modality_preprocessors.text.mask"]
    upper = torch.ones(77, 77, dtype=torch.bool).triu(1)
    assert torch.isneginf(mask[upper]).all() and (mask[~upper] == 0).all()


# ----------------------------------------------------------------------------- loading
def test_tiny_checkpoint_loads_strictly_ignoring_other_modalities(tiny_sd):
    model = ImageBind("tiny")
    result = model.load_state_dict(tiny_sd)
    assert not result.missing_keys and not result.unexpected_keys
    for m in ("depth", "thermal", "imu"):
        assert any(k.split(".")[1] == m for k in tiny_sd)  # the file does carry them
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_sd[k]), k


def test_missing_kept_key_raises(tiny_sd):
    sd = dict(tiny_sd)
    del sd["modality_heads.audio.2.weight"]
    with pytest.raises(RuntimeError, match="modality_heads.audio.2.weight"):
        ImageBind("tiny").load_state_dict(sd)


def test_unexpected_kept_key_raises(tiny_sd):
    sd = dict(tiny_sd)
    sd["modality_trunks.audio.blocks.2.norm_1.weight"] = torch.ones(40)
    with pytest.raises(RuntimeError, match="blocks.2.norm_1.weight"):
        ImageBind("tiny").load_state_dict(sd)


def test_unknown_modality_key_is_not_silently_ignored(tiny_sd):
    sd = dict(tiny_sd)
    sd["modality_heads.smell.0.weight"] = torch.ones(3)
    with pytest.raises(RuntimeError, match="smell"):
        ImageBind("tiny").load_state_dict(sd)


def test_transposed_weight_raises(tiny_sd):
    sd = dict(tiny_sd)
    sd["modality_trunks.audio.blocks.0.mlp.fc1.weight"] = sd["modality_trunks.audio.blocks.0.mlp.fc1.weight"].T
    with pytest.raises(RuntimeError, match="size mismatch"):
        ImageBind("tiny").load_state_dict(sd)


def test_single_modality_model_ignores_the_others(tiny_sd, ref):
    model = ImageBind("tiny", modalities=("audio",)).eval()
    model.load_state_dict(tiny_sd)
    assert {k.split(".")[1] for k in model.state_dict()} == {"audio"}
    with torch.no_grad():
        out = model({"audio": model_inputs(ref)["audio"]})["audio"]
    torch.testing.assert_close(out, ref["out.audio.final"], atol=ATOL_SCALED, rtol=0)
    with pytest.raises(ValueError, match="not built"):
        model.trunk_features("text", ref["text.tokens"])


# ----------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("modality", ["vision", "text", "audio"])
def test_tiny_intermediate_and_final_outputs_match_official(tiny, ref, modality):
    x = model_inputs(ref)[modality]
    rows = 3 if modality == "audio" else x.shape[0]  # the fixture keeps audio item 0's 3 clips
    with torch.no_grad():
        flat = x.reshape(-1, *x.shape[2:]) if x.ndim >= 5 else x
        tokens = tiny.modality_preprocessors[modality](flat)
        feats = tiny.trunk_features(modality, x)
        head = tiny.head_embeddings(modality, feats, postprocess=False)
        post = tiny.modality_postprocessors[modality](head)
        final = tiny({modality: x})[modality]
    close = lambda a, key, tol=ATOL_SCALED: torch.testing.assert_close(a, ref[f"out.{modality}.{key}"], atol=tol, rtol=0)  # noqa: E731
    close(tokens[:rows], "trunk_input_tokens")
    close(feats.tokens[:rows], "trunk_output")
    close(head, "head_output")
    close(post, "postprocessed_per_clip", ATOL_UNIT if modality == "vision" else ATOL_SCALED)
    close(final, "final", ATOL_UNIT if modality == "vision" else ATOL_SCALED)


def test_vision_clip_axis_and_video_input_match_official(tiny, ref):
    vision = model_inputs(ref)["vision"]
    video = torch.stack([ref["vision.random_input"], ref["vision.image_landscape.preprocessed"]], dim=1)[None, None]
    with torch.no_grad():
        five = tiny({"vision": vision[None]})["vision"]
        six = tiny({"vision": video})["vision"]
    torch.testing.assert_close(five, ref["out.vision_5d.final"], atol=ATOL_UNIT, rtol=0)
    torch.testing.assert_close(six, ref["out.vision_video_6d.final"], atol=ATOL_UNIT, rtol=0)
    assert five.norm() < 0.999  # mean of unit vectors, not renormalised (official behaviour)


def test_text_head_reads_the_first_eot(ref, meta):
    eos = ref["text.tokens"].argmax(dim=-1).tolist()
    assert eos == meta["text"]["eos_position_used_by_head (argmax of ids)"]


# ----------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("name,geometry", [("image_landscape", "landscape"), ("image_portrait_small", "portrait_small")])
def test_image_transform_matches_official(ref, meta, name, geometry):
    raw = ref[f"vision.{name}.uint8_hwc"].numpy()
    geo = meta["vision_preprocess_geometry"][geometry]
    resized = P.resize_short_side(P.to_pil(raw))
    assert [resized.height, resized.width] == geo["resized_hw"]
    top, left = int(round((resized.height - 224) / 2.0)), int(round((resized.width - 224) / 2.0))
    assert [top, left] == geo["crop_top_left"]  # banker's rounding (36.5 -> 36, 38.5 -> 38)
    out = P.transform_image(raw)
    torch.testing.assert_close(out, ref[f"vision.{name}.preprocessed"], atol=ATOL_PRE, rtol=0)


@pytest.mark.parametrize("name", AUDIO_NAMES)
def test_clip_placement_matches_pinned_sampler(meta, name):
    info = meta["audio"][name]
    ranges = P.clip_sample_ranges(info["resampled_num_samples"])
    assert ranges == [(c["sample_start"], c["sample_end"]) for c in info["clips"]]
    for (start, _), clip in zip(ranges, info["clips"]):  # the exact-fraction start times
        assert start == int(Fraction(clip["start_s"]) * 16000)


def fbank_atol(official: torch.Tensor, n_fft: int = 512) -> torch.Tensor:
    """Per-element tolerance of normalised log-mel features ``(log mel + 4.268) / 9.138`` made in float32.

    The FFT's rounding error is about ``EPS32 log2(n_fft)`` times the frame's magnitude in every bin; relative
    to a mel band of power ``mel`` in a frame of power ``E`` (sum of the bands) that is
    ``EPS32 log2(n_fft) sqrt(E / mel)`` in ``log mel``, so quiet bands carry larger errors (up to 4e-3 on an
    Intel Xeon, where the fixture's FFT kernel differs; 8x the estimate). 32x, plus the log's own rounding.

    Shape:
        official: ``(clips, 1, mel bins, frames)``; returns the same shape.
    """
    log_mel = official.double() * 9.138 - 4.268
    mel = log_mel.exp()
    frame = mel.sum(dim=-2, keepdim=True)
    tol_log = 32 * math.log2(n_fft) * EPS32 * (frame / mel).sqrt() + 8 * EPS32 * log_mel.abs()
    return tol_log / 9.138 + ATOL_PRE


@pytest.mark.parametrize("name", AUDIO_NAMES)
def test_audio_preprocessing_matches_official(ref, name):
    wav = P.resample(pcm(ref, name), AUDIO_RATES[name], 16000)  # (C, n)
    if name == "stereo44k_2p3s":
        torch.testing.assert_close(wav[0], ref["audio.stereo44k_2p3s.resampled_16k"], atol=ATOL_PRE, rtol=0)
    out = P.preprocess_audio([wav])[0]
    official = ref[f"audio.{name}.preprocessed"]
    assert_within(out, official, fbank_atol(official), f"log-mel of {name}")
    # padding frames of short clips are exactly the normalised zero: (0 + 4.268) / 9.138
    if name == "mono16k_1p3s":
        assert torch.allclose(out[..., 200:], torch.tensor(4.268 / 9.138))


def _preprocess_without_quirk(wav: torch.Tensor) -> torch.Tensor:
    """Clips cut from an untouched waveform (what a 'clean' reimplementation would do)."""
    clips = [wav[:, s:e] - wav[:, s:e].mean() for s, e in P.clip_sample_ranges(wav.shape[-1])]
    feats = [P.kaldi_fbank(c[:1])[0].T for c in clips]
    feats = [F.pad(f, (0, 204 - f.shape[-1])) if f.shape[-1] < 204 else f[:, :204] for f in feats]
    return (torch.stack(feats) + 4.268) / 9.138


@pytest.mark.parametrize("name", AUDIO_NAMES)
def test_inplace_mean_quirk_is_reproduced_and_matters(ref, meta, name):
    wav = P.resample(pcm(ref, name), AUDIO_RATES[name], 16000)
    clean = _preprocess_without_quirk(wav)
    official = ref[f"audio.{name}.preprocessed"][:, 0]
    err = (clean - official).abs().flatten(1)
    atol = fbank_atol(official.unsqueeze(1)).flatten(1)
    expected = meta["audio_inplace_quirk"][name]["max_abs_diff_official_vs_cloned_clips_per_clip"]
    for clip, want in enumerate(expected):
        if want == 0.0:  # a clip the quirk does not touch: equal up to float32 rounding
            assert_within(clean[clip], official[clip], atol[clip].reshape(official[clip].shape), f"{name} clip {clip}")
        else:  # the recorded largest change, up to the rounding of the element where it occurs
            worst = int(err[clip].argmax())
            assert float(err[clip, worst]) == pytest.approx(want, abs=float(atol[clip, worst]))


def test_batched_fbank_equals_torchaudio_kaldi():
    from torchaudio.compliance.kaldi import fbank

    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 7013, generator=gen) * 0.2 + torch.linspace(-0.1, 0.1, 3)[:, None]
    ours = P.kaldi_fbank(batch)
    for i in range(3):
        theirs = fbank(
            batch[i : i + 1], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
            num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10,
        )  # fmt: skip
        assert ours[i].shape == theirs.shape == (1 + (7013 - 400) // 160, 128)
        torch.testing.assert_close(ours[i], theirs, atol=1e-5, rtol=0)


def test_fbank_is_differentiable_with_torchaudio_values_and_gradients():
    """A waveform that requires a gradient takes the autograd path: the same filterbank (oracle: torchaudio's
    kaldi.fbank, which autograd differentiates) and the same gradient of a weighted sum of it. Tolerances: the
    energies as in the test above; gradients relative to their largest entry, float32 FFTs of 512 points summed
    over 128 mel bands (about 1e-6 x the largest; 1e-4 leaves room for other CPUs' FFT kernels)."""
    from torchaudio.compliance.kaldi import fbank

    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 4013, generator=gen) * 0.2).requires_grad_(True)
    weights = torch.rand(1 + (4013 - 400) // 160, 128, generator=gen)
    ours = P.kaldi_fbank(x)
    (ours * weights).sum().backward()
    for i in range(2):
        xi = x.detach()[i : i + 1].clone().requires_grad_(True)
        theirs = fbank(xi, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                       num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)
        torch.testing.assert_close(ours[i].detach(), theirs.detach(), atol=1e-5, rtol=0)
        (theirs * weights).sum().backward()
        scale = float(xi.grad.abs().max())
        torch.testing.assert_close(x.grad[i], xi.grad[0], atol=1e-4 * scale, rtol=0)
    with torch.no_grad():  # the fast path gives the same numbers
        torch.testing.assert_close(P.kaldi_fbank(x), ours.detach(), atol=1e-5, rtol=0)


def test_batch_preprocessing_equals_per_item(ref):
    a = pcm(ref, "mono16k_5s")[0]
    b = torch.roll(a, 12345) * 0.5
    short = pcm(ref, "mono16k_1p3s")[0]
    batch = P.preprocess_audio([a, short, b])
    for i, w in enumerate([a, short, b]):
        torch.testing.assert_close(batch[i], P.preprocess_audio([w])[0], atol=1e-6, rtol=0)


def test_audio_shorter_than_one_frame_is_refused():
    with pytest.raises(ValueError, match="at least 400"):
        P.preprocess_audio([torch.zeros(399)])


# ----------------------------------------------------------------------------- tokenizer
def test_bundled_vocab_is_the_official_file():
    # sha256 of CLIP's bpe_simple_vocab_16e6.txt.gz, as recorded with the fixture (FACTS.md: 924691ac...6804a)
    assert sha256_of(VOCAB_PATH) == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def test_tokenizer_reproduces_official_ids(ref, meta):
    tok = BPETokenizer()
    assert tok.vocab_size == meta["text"]["vocab_size"]
    assert torch.equal(tok(meta["text"]["prompts"]), ref["text.tokens"])
    assert torch.equal(BPETokenizer(VOCAB_PATH)(meta["text"]["prompts"]), ref["text.tokens"])  # an explicit path
    for prompt, ids, pieces in zip(
        meta["text"]["prompts"], meta["text"]["bpe_ids_without_sot_eot"], meta["text"]["bpe_tokens_without_sot_eot"]
    ):
        assert tok.encode(prompt) == ids
        assert [tok.decoder[i] for i in ids] == pieces
    for case in meta["text_tokenizer_extra"]:
        assert [tok.sot_id] + tok.encode(case["text"]) + [tok.eot_id] == case["ids_with_sot_eot_unpadded"], case["text"]


def test_long_text_keeps_eot_in_last_slot():
    tok = BPETokenizer()
    ids = tok(["word " * 200])[0]
    assert ids[0] == 49406 and ids[76] == 49407 and (ids[1:76] != 0).all()


# ----------------------------------------------------------------------------- interface on the fixture
def test_embed_methods_reproduce_official_final_embeddings(tiny, ref, meta):
    audio = tiny.embed_audio([pcm(ref, "mono16k_5s")[0], pcm(ref, "mono16k_1p3s")[0]], 16000)
    torch.testing.assert_close(audio, F.normalize(ref["out.audio.final"][[0, 2]], dim=-1), atol=ATOL_UNIT, rtol=0)
    text = tiny.embed_text(meta["text"]["prompts"], allow_empty=True)  # the fixture embeds ""
    torch.testing.assert_close(text, F.normalize(ref["out.text.final"], dim=-1), atol=ATOL_UNIT, rtol=0)
    images = [ref["vision.image_landscape.uint8_hwc"].numpy(), ref["vision.image_portrait_small.uint8_hwc"].numpy()]
    vision = tiny.embed_image(images)
    torch.testing.assert_close(vision, ref["out.vision.final"][1:], atol=ATOL_UNIT, rtol=0)


# ----------------------------------------------------------------------------- hub
@pytest.fixture()
def tiny_file(tmp_path, tiny_sd):
    path = tmp_path / "src" / "imagebind_tiny.pth"
    path.parent.mkdir()
    torch.save(tiny_sd, path)
    return path


def test_from_pretrained_local_file_with_hash(tiny_file, ref):
    model = from_pretrained(tiny_file, sha256=sha256_of(tiny_file), config="tiny", device="cpu")
    assert not model.training and model.device.type == "cpu" and model.dtype == torch.float32
    with torch.no_grad():
        out = model(model_inputs(ref))
    for m in ("vision", "text", "audio"):
        torch.testing.assert_close(out[m], ref[f"out.{m}.final"], atol=ATOL_SCALED, rtol=0)


def test_from_pretrained_wrong_hash_names_both(tiny_file):
    actual = sha256_of(tiny_file)
    with pytest.raises(ChecksumError) as err:
        from_pretrained(tiny_file, sha256="0" * 64, config="tiny", device="cpu")
    assert "0" * 64 in str(err.value) and actual in str(err.value)


def test_from_pretrained_missing_file():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_pretrained("no/such/imagebind.pth", config="tiny", device="cpu")


def test_unreachable_url_says_how_to_download_manually(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="Download the file manually") as err:
        from_pretrained("http://127.0.0.1:9/x.pth", config="tiny", device="cpu", cache_dir=cache)
    assert "local path" in str(err.value) and "x.pth" in str(err.value)
    assert not cache.exists() or not any(cache.iterdir())  # no partial file left behind


def test_file_url_goes_through_download_cache(tiny_file, tmp_path, ref):
    cache = tmp_path / "cache"
    digest = sha256_of(tiny_file)
    model = from_pretrained(tiny_file.as_uri(), sha256=digest, config="tiny", device="cpu", cache_dir=cache)
    cached = cache / tiny_file.name
    assert cached.is_file() and sha256_of(cached) == digest
    assert sorted(p.name for p in cache.iterdir()) == [tiny_file.name]  # temp file renamed away
    tiny_file.unlink()  # the second call must be served from the cache
    again = from_pretrained(tiny_file.as_uri(), sha256=digest, config="tiny", device="cpu", cache_dir=cache)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_file_url_with_wrong_hash_leaves_nothing_in_cache(tiny_file, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="expected 1111"):
        download_checkpoint(tiny_file.as_uri(), cache, sha256="1" * 64, progress=False)
    assert list(cache.iterdir()) == []


def test_half_precision_weights_give_float32_embeddings(tiny_file, ref, meta):
    half = from_pretrained(tiny_file, config="tiny", device="cpu", half=True)
    assert half.dtype == torch.float16
    emb = half.embed_text(meta["text"]["prompts"][:3])
    assert emb.dtype == torch.float32
    full = F.normalize(ref["out.text.final"][:3], dim=-1)
    assert (emb * full).sum(-1).min() > 0.999
    audio = half.embed_audio([pcm(ref, "mono16k_5s")[0]], 16000)
    assert audio.dtype == torch.float32
    assert float((audio[0] * F.normalize(ref["out.audio.final"][0], dim=-1)).sum()) > 0.99
    assert math.isclose(float(audio.norm()), 1.0, rel_tol=1e-5)


def test_drop_path_rates_and_token_layout():
    """Official rates linspace(0, 0.1, 12) in the audio trunk; sequence-first timm DropPath
    drops whole token positions for the entire batch (training mode only)."""
    model = ImageBind("tiny")
    rates = [b.drop_path.p for b in model.modality_trunks["audio"].blocks]
    assert rates == pytest.approx([0.0, 0.1])
    assert all(b.drop_path.p == 0 for m in ("vision", "text") for b in model.modality_trunks[m].blocks)
    drop = model.modality_trunks["audio"].blocks[1].drop_path.train()
    torch.manual_seed(0)
    y = drop(torch.ones(4, 500, 3))
    kept = y[:, :, 0] != 0
    assert (kept == kept[0]).all()  # same positions dropped in every batch item
    assert 0.8 < kept[0].float().mean() < 0.98 and torch.allclose(y[kept[0].expand(4, -1)], torch.tensor(1 / 0.9))
    assert torch.equal(drop.eval()(torch.ones(2, 5, 3)), torch.ones(2, 5, 3))
