"""Query augmentation of supervised training and image restyling of MiniBind training (oracles by hand)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_core.config import SupervisedConfig, get_profile
from mars_core.data.mixing import MixtureDataset
from mars_core.encoders.pairs import generic_words, recompose_prompt, restyle_images
from mars_core.encoders.preprocess import CLIP_MEAN, CLIP_STD
from mars_core.runs import config_hash
from mars_core.supervised import check_config, run_config
from mars_core.supervised.trainer import TrainingData, noisy_embeddings, with_pure_queries

SMOKE = get_profile("smoke")
TINY = SupervisedConfig(steps=6, batch_mixtures=4, warmup_steps=2, eval_every=3, val_mixtures=2, ckpt_every=2)


def _unit(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_noisy_embeddings_mean_cosine_matches_the_integral():
    # s ~ U(0, a), |xi| ~ 1: E[cos] = E[1 / sqrt(1 + s^2)] = asinh(a) / a (0.7965 for a = 1.5)
    e = {"text": _unit(4000, 256), "audio": _unit(4000, 256, 1)}
    out = noisy_embeddings(e, np.random.default_rng(0), 1.5)
    for m in e:
        assert torch.allclose(out[m].norm(dim=-1), torch.ones(4000), atol=1e-5)
        cos = (out[m] * e[m]).sum(-1).mean().item()
        # |xi|^2 ~ chi2_256 / 256 (sd 0.09) shifts E[cos] by < 0.005; s.e. of the mean over 4000 rows < 0.003
        assert abs(cos - math.asinh(1.5) / 1.5) < 0.015
    assert not torch.equal(out["text"], e["text"]) and e["text"].norm(dim=-1).allclose(torch.ones(4000))


def test_zero_noise_and_zero_share_draw_nothing():
    e = {"text": _unit(3, 8)}
    rng = np.random.default_rng(5)
    w = np.full((3, 3), 1 / 3)
    assert noisy_embeddings(e, rng, 0.0) is e and with_pure_queries(w, rng, 0.0) is w
    assert rng.random() == np.random.default_rng(5).random()  # the stream is untouched


def test_pure_queries_are_one_hot_on_each_modality_about_equally():
    w = np.random.default_rng(1).dirichlet(np.ones(3), size=3000)
    out = with_pure_queries(w, np.random.default_rng(2), 1.0)
    assert set(map(tuple, out.tolist())) == {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)}
    share = out.mean(0)  # each 1/3, s.e. sqrt(2/9 / 3000) = 0.009
    np.testing.assert_allclose(share, 1 / 3, atol=0.04)
    half = with_pure_queries(w, np.random.default_rng(2), 0.5)
    one_hot = (half.max(1) == 1.0).mean()
    assert abs(one_hot - 0.5) < 0.05  # s.e. 0.009
    np.testing.assert_array_equal(half[half.max(1) < 1], w[half.max(1) < 1])  # the others keep their weights


def test_hard_pair_share_draws_same_family_interferers(fake_build):
    cfg = replace(TINY, hard_pair_prob=1.0)
    data = TrainingData(SMOKE, cfg, fake_build)
    for step in range(3):
        for ds, item in data.step_items(step):
            assert ds is data.hard
            fam = {ds.family_of[c] for c in item["classes"]}
            assert len(fam) == 1
    plain = TrainingData(SMOKE, TINY, fake_build)
    ref = MixtureDataset("train", SMOKE, n_items=TINY.steps * TINY.batch_mixtures, build_dir=fake_build,
                         load_images=False)
    assert plain.hard is None
    got = [it["clip_ids"] for _, it in plain.step_items(1)]
    assert got == [ref[4 + j]["clip_ids"] for j in range(4)]


def test_new_fields_keep_old_run_keys_and_are_checked():
    bank = type("Bank", (), {"key": "x"})()
    run = run_config(SMOKE, TINY, bank)
    assert not {"query_noise", "pure_query_prob", "hard_pair_prob"} & set(run["supervised"])
    assert config_hash(run_config(SMOKE, replace(TINY, query_noise=1.0), bank)) != config_hash(run)
    for field, value in (("query_noise", -1.0), ("pure_query_prob", 1.5), ("hard_pair_prob", float("nan"))):
        with pytest.raises(ValueError, match=field):
            check_config(replace(TINY, **{field: value}))
    with pytest.raises(ValueError, match="pure_query_prob"):
        check_config(replace(TINY, query="text", pure_query_prob=0.5))
    with pytest.raises(ValueError, match="trainable"):
        check_config(replace(TINY, trainable="trunk"))
    assert "trainable" not in run["supervised"]  # at its default 'all' the old keys stay
    assert run_config(SMOKE, replace(TINY, trainable="head"), bank)["supervised"]["trainable"] == "head"


def _pixels(x):
    m, s = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return x * s + m


def test_restyled_images_are_line_art_or_posterised_cartoons():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(6, 3, 32, 32, generator=g) * 0.3 + 0.2
    rgb[:, :, 8:24, 8:24] += 0.5  # a bright square: edges on its border
    x = (rgb - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    line = _pixels(restyle_images(x, np.random.default_rng(0), 0.0, 1.0))
    vals = torch.unique(torch.round(line * 1e4) / 1e4)
    assert set(vals.tolist()) <= {0.0, 1.0} and (line == 0).any()  # black strokes on white
    cartoon = _pixels(restyle_images(x, np.random.default_rng(0), 1.0, 0.0))
    for img in cartoon:
        for ch in img:  # at most 5 levels per channel (k / (L - 1), L in 3..5) plus black
            assert len(torch.unique(torch.round(ch * 1e4))) <= 6
    rng = np.random.default_rng(3)
    assert restyle_images(x, rng, 0.0, 0.0) is x and rng.random() == np.random.default_rng(3).random()


def test_generic_words_are_the_shared_template_words_without_class_names():
    classes = ["dog", "acoustic_guitar", "cat", "flute"]
    prompts = ["the sound of a dog", "a dog barking", "the sound of a acoustic guitar", "strummed acoustic guitar",
               "the sound of a cat", "a cat purring", "flute music", "a flute"]
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    # by hand: 'the', 'sound', 'of' are in 3 of 4 classes, 'a' in 4; 'barking', 'music', ... in 1; names excluded
    assert generic_words(prompts, labels, classes) == ["a", "of", "sound", "the"]


def test_recomposed_prompts_hold_the_name_once_between_generic_words():
    vocab = ["a", "of", "sound", "the"]
    rng = np.random.default_rng(0)
    fills = []
    for _ in range(300):
        words = recompose_prompt("acoustic_guitar", vocab, rng).split()
        i = words.index("acoustic")
        assert words[i + 1] == "guitar" and words.count("acoustic") == 1
        rest = words[:i] + words[i + 2:]
        assert set(rest) <= set(vocab)
        assert 0 <= i <= 4 and 0 <= len(rest) - i <= 4
        fills.append(len(rest))
    assert set(fills) == set(range(9))  # 0..4 before plus 0..4 after, every total reached
    assert recompose_prompt("dog", [], rng) == "dog"


def test_prompt_recomposition_off_leaves_batches_unchanged(fake_build):
    from mars_core.encoders.minibind import MiniBind
    from mars_core.encoders.pairs import load_split, sample_batch
    from mars_core.encoders.train import TrainConfig

    model = MiniBind(SMOKE.encoder, SMOKE.audio.sample_rate, seed=0).eval()
    data = load_split(fake_build, "train", 8000, model.image_size)
    cfg = TrainConfig.for_profile("smoke")
    a = sample_batch(data, model, cfg, 3)
    b = sample_batch(data, model, replace(cfg, prompt_recompose_prob=0.0), 3)
    assert torch.equal(a.text, b.text) and torch.equal(a.images, b.images)
    c = sample_batch(data, model, replace(cfg, prompt_recompose_prob=1.0), 3)
    assert not torch.equal(a.text, c.text) and torch.equal(a.labels, c.labels)


def test_noisy_embeddings_keep_what_the_data_records_and_leave_the_input_alone():
    from mars_core.queries import ModalityEmbeddings

    e = ModalityEmbeddings({"text": _unit(3, 8), "audio": _unit(3, 8, 1)}, {"image": "no images in this build"})
    before = {m: v.clone() for m, v in e.items()}
    out = noisy_embeddings(e, np.random.default_rng(0), 1.0)
    assert isinstance(out, ModalityEmbeddings) and out.unavailable == {"image": "no images in this build"}
    assert sorted(out) == ["audio", "text"] and all(torch.equal(e[m], before[m]) for m in before)
