"""Query diagnostics: family table, query swap, retrieval per family, oracle/shifted queries, temperature."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mars_core.evaluation import query_diagnostics as qd
from mars_core.config import get_profile
from mars_core.data.manifest import read_table
from mars_core.evaluation.evaluate import load_eval_set
from mars_core.metrics import SI_SDR_EPS
from mars_core.queries import QueryBank
from mars_core.separator import multi_query_logits, new_separator
from tests.test_queries import fake_bank

SMOKE = get_profile("smoke")


@pytest.fixture(scope="module")
def eval_set(fake_build):
    return load_eval_set(SMOKE, "test", 6, build_dir=fake_build)


@pytest.fixture(scope="module")
def bank(fake_build):
    return fake_bank(fake_build, SMOKE.separator.query_dim)


def orthogonal_sources(n_items: int = 3, samples: int = 4000) -> torch.Tensor:
    """Target and interferer: zero-mean sines of equal power with whole periods (exactly orthogonal).

    Shape: ``(n_items, 2, samples)``.
    """
    t = torch.arange(samples, dtype=torch.float64)
    rows = []
    for k in range(n_items):
        a = torch.sin(2 * math.pi * (10 + k) * t / samples)
        b = torch.sin(2 * math.pi * (37 + 2 * k) * t / samples)
        rows.append(torch.stack([a, b]))
    return torch.stack(rows)


# --------------------------------------------------------------------------- 1. family table
def test_family_table_means_by_hand():
    rows = [  # family, modality, value, skipped
        ("brass", "text", 1.0, False), ("brass", "text", 3.0, False), ("brass", "audio", -2.0, False),
        ("brass", "audio", 4.0, False), ("animals", "text", 5.0, False), ("animals", "audio", 7.0, False),
        ("animals", "text", 1000.0, True), ("animals", "audio", 1000.0, True),  # skipped: left out
    ]
    df = pd.DataFrame(rows, columns=["family", "modality", "si_sdri", "skipped"])
    tab = qd.family_table(df)
    assert list(tab.columns) == ["text", "audio", "n"]
    assert tab.loc["brass", "text"] == 2.0 and tab.loc["brass", "audio"] == 1.0
    assert tab.loc["animals", "text"] == 5.0 and tab.loc["animals", "audio"] == 7.0
    assert tab.loc["all", "text"] == 3.0 and tab.loc["all", "audio"] == 3.0  # (1 + 3 + 5) / 3, (-2 + 4 + 7) / 3
    assert tab.loc["brass", "n"] == 2 and tab.loc["animals", "n"] == 1 and tab.loc["all", "n"] == 3
    with pytest.raises(ValueError, match="several systems"):
        qd.family_table(df.assign(system=["a", "b"] * 4))
    with pytest.raises(ValueError, match="no 'kind' column"):
        qd.family_table(df, by="kind")


# --------------------------------------------------------------------------- 2. query swap
def test_swap_scores_oracle_separator_is_large_and_known():
    src = orthogonal_sources()
    s = swap = qd.swap_scores(src[:, 0], src[:, 1], src)  # output = exactly the queried source
    power = (src[:, 0] ** 2).sum(-1).numpy()  # equal for both sources, zero mean
    perfect = 10 * np.log10((power + SI_SDR_EPS) / SI_SDR_EPS)  # SI(s, s): residual 0
    orthogonal = 10 * np.log10(SI_SDR_EPS / (power + SI_SDR_EPS))  # SI(s_i, s_t): alpha = 0
    np.testing.assert_allclose(s["si_tq_target"], perfect, rtol=1e-6)
    np.testing.assert_allclose(s["si_iq_interferer"], perfect, rtol=1e-6)
    np.testing.assert_allclose(s["si_iq_target"], orthogonal, atol=1e-3)  # |<a, b>| ~ 1e-12 of power
    np.testing.assert_allclose(s["drop"], perfect - orthogonal, rtol=1e-4)
    assert (s["drop"] > 200).all()
    assert (swap["own_target"] == 1).all() and (swap["own_interferer"] == 1).all() and not swap["skipped"].any()
    summ = qd.swap_summary(s)
    assert summ.loc[0, "n"] == 3 and summ.loc[0, "own_target"] == 1.0


def test_swap_scores_query_blind_separator_drops_exactly_zero():
    src = orthogonal_sources()
    y = src.sum(1)  # both queries give the mixture: equal-power orthogonal sources -> SI-SDR 0 dB against each
    s = qd.swap_scores(y, y, src)
    assert (s["drop"] == 0).all()
    np.testing.assert_allclose(s[list(qd.SWAP_COLUMNS)].to_numpy(), 0.0, atol=1e-9)
    y2 = src[:, 0] + 0.5 * src[:, 1]  # closer to the target: SI = 10 log10(1 / 0.25) vs 10 log10(0.25)
    s2 = qd.swap_scores(y2, y2, src)
    np.testing.assert_allclose(s2["si_tq_target"], 10 * np.log10(4.0), atol=1e-9)
    np.testing.assert_allclose(s2["si_tq_interferer"], 10 * np.log10(0.25), atol=1e-9)
    assert (s2["drop"] == 0).all() and (s2["own_target"] == 1).all() and (s2["own_interferer"] == 0).all()


def test_swap_scores_skips_silent_outputs_and_checks_shapes():
    src = orthogonal_sources()
    yt = src[:, 0].clone()
    yt[1] = 0.0
    s = qd.swap_scores(yt, src[:, 1], src)
    assert s["skipped"].tolist() == [False, True, False] and s.loc[1, list(qd.SWAP_COLUMNS)].isna().all()
    assert qd.swap_summary(s).loc[0, "n"] == 2
    with pytest.raises(ValueError, match="must both be"):
        qd.swap_scores(src[:, 0, :100], src[:, 1], src)
    with pytest.raises(ValueError, match="target first"):
        qd.swap_scores(src[:, 0], src[:, 1], src[:, 0])


def test_interferer_refs_follow_the_manifests(eval_set, fake_build):
    refs = qd.interferer_refs(eval_set, SMOKE, build_dir=fake_build)
    audio = read_table(fake_build, "audio", "test")
    prompts = read_table(fake_build, "prompts")
    images = read_table(fake_build, "images", "test")
    for r, (_, m) in zip(refs, eval_set.meta.iterrows()):
        assert r.class_name == m["interferer"]
        clips = set(audio.loc[audio["class_name"] == m["interferer"], "clip_id"]) - {m["interferer_clip"]}
        assert set(r.audio_ids) == clips and len(r.audio_ids) == 2  # 3 clips per class in the fake build
        assert r.text in set(prompts.loc[(prompts["class_name"] == r.class_name) & (prompts["split_group"] == "test"),
                                         "text"])
        assert r.image_id in set(images.loc[images["class_name"] == r.class_name, "image_id"])
    with pytest.raises(ValueError, match="hard_pairs"):
        qd.interferer_refs(eval_set, SMOKE, hard_pairs=True, build_dir=fake_build)


def test_swap_test_query_blind_separator(eval_set, bank, fake_build):
    model = new_separator(SMOKE, 0)
    with torch.no_grad():
        torch.nn.init.normal_(model.scale, 0, 1.0)  # maps mixed, but the same for every query:
        model.query_proj.weight.zero_()  # q~ = sigmoid(bias) whatever the query
        model.query_proj.bias.normal_(0, 1.0)
    refs = qd.interferer_refs(eval_set, SMOKE, build_dir=fake_build)
    df = qd.swap_test(model, SMOKE, bank, eval_set, refs)
    assert len(df) == 4 * len(eval_set) and set(df["modality"]) == {"text", "image", "audio", "omni"}
    ok = df[~df["skipped"]]
    assert len(ok) > 0 and (ok["drop"] == 0).all()
    ties = ok["si_tq_target"] == ok["si_tq_interferer"]
    assert ((ok["own_target"] + ok["own_interferer"])[~ties] == 1).all()


# --------------------------------------------------------------------------- 3. retrieval per family
def test_family_retrieval_counts_by_hand():
    e = torch.eye(4)
    data = SimpleNamespace(split="test", classes=["a", "b", "c", "d"], families=["f1", "f1", "f2", "f2"],
                           prompt_labels=np.array([0, 1, 2, 3]), image_labels=np.array([0, 1, 2, 3]),
                           audio_labels=np.array([0, 0, 1, 2, 3, 3]))
    # audio rows: class a right, a wrong (-> b), b right, c wrong (-> d), d right, d right
    audio = torch.stack([e[0], e[1], e[1], e[3], e[3], e[3]])
    image = torch.stack([e[1], e[0], e[2], e[3]])  # image prototypes of a and b swapped
    tab = qd.family_retrieval({"audio": audio, "text": e, "image": image}, data).set_index("family")
    assert tab.loc["f1", "clips"] == 3 and tab.loc["f2", "clips"] == 3 and tab.loc["all", "clips"] == 6
    assert tab.loc["f1", "a2t_r1"] == pytest.approx(2 / 3) and tab.loc["f2", "a2t_r1"] == pytest.approx(2 / 3)
    assert tab.loc["all", "a2t_r1"] == pytest.approx(4 / 6)
    assert tab.loc["f1", "a2i_r1"] == pytest.approx(1 / 3)  # only the a clip mapped to b is 'right' for images
    assert tab.loc["f2", "a2i_r1"] == pytest.approx(2 / 3)
    no_img = qd.family_retrieval({"audio": audio, "text": e, "image": None}, data)
    assert no_img["a2i_r1"].isna().all()


# --------------------------------------------------------------------------- 4. oracle and shifted queries
def tiny_bank() -> QueryBank:
    v = lambda *x: F.normalize(torch.tensor([x], dtype=torch.float32), dim=-1)[0]  # noqa: E731
    emb = {"text": torch.stack([v(1, 0, 0), v(0, 1, 0)]),
           "image": torch.stack([v(1, 1, 0), v(0, 0, 1)]),
           "audio": torch.stack([v(1, 0, 0), v(0, 1, 0), v(0, 0, 1)])}
    ids = {"text": ["ta", "tb"], "image": ["ia", "ib"], "audio": ["a1", "a2", "b1"]}
    classes = {"text": ["a", "b"], "image": ["a", "b"], "audio": ["a", "a", "b"]}
    return QueryBank(ids, classes, emb, encoder="x" * 64, manifest="y" * 64)


def test_class_mean_queries_and_gap_by_hand():
    bank = tiny_bank()
    r = 1 / math.sqrt(2)
    q = qd.class_mean_queries(bank, ["a", "b", "a"], "audio")
    torch.testing.assert_close(q, torch.tensor([[r, r, 0.0], [0.0, 0.0, 1.0], [r, r, 0.0]]))
    only_first = qd.class_mean_queries(bank, ["a"], "audio", keep={"a1", "b1"})
    torch.testing.assert_close(only_first, torch.tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="'b' has no audio rows"):
        qd.class_mean_queries(bank, ["b"], "audio", keep={"a1"})
    # mean audio (1/3)(1, 1, 1), mean text (1/2)(1, 1, 0): gap (-1/6, -1/6, 1/3)
    torch.testing.assert_close(qd.modality_gap(bank, "text", "audio"), torch.tensor([-1 / 6, -1 / 6, 1 / 3]))
    shifted = qd.modality_gap_shift(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(shifted, torch.tensor([[r, r, 0.0]]))


def _placed_text_bank(fake_build, held_out) -> tuple[QueryBank, list[str], torch.Tensor]:
    """The fake build's bank with every train prompt of class c at e_c and every held-out prompt of class c at
    ``held_out(c, e)`` (classes in prompt order: violin, cello, trumpet, dog); also the classes and the text rows."""
    prompts = read_table(fake_build, "prompts")
    classes = list(dict.fromkeys(prompts["class_name"]))
    e = torch.eye(4)
    rows = torch.stack([e[classes.index(p["class_name"])] if p["split_group"] == "train"
                        else held_out(classes.index(p["class_name"]), e) for _, p in prompts.iterrows()])
    bank = fake_bank(fake_build, 4)
    return (QueryBank(bank.ids, bank.classes, {**bank.embeddings, "text": rows}, bank.encoder, bank.manifest),
            classes, rows)


def test_held_out_shift_by_hand(fake_build):
    # train prompts (two per class) at e_c; the held-out prompt of class c at n(2 e_c + e_{c+1}) (own class
    # cos 2/sqrt(5), next class 1/sqrt(5)), except dog's at e_violin (own 0, violin 1)
    bank, _, rows = _placed_text_bank(fake_build, lambda c, e: F.normalize(2 * e[c] + e[c + 1], dim=0) if c < 3
                                      else e[0])
    out = qd.held_out_shift(bank, fake_build, "text")
    r5 = 1 / math.sqrt(5)
    assert out["classes"] == 4
    assert out["same"] == pytest.approx((3 * 2 * r5 + 0) / 4, abs=1e-6)
    assert out["other"] == pytest.approx((3 * r5 + 1) / 4, abs=1e-6)
    assert out["r1"] == 0.75  # dog's held-out mean is closest to violin's
    with pytest.raises(ValueError, match="need two"):
        qd.held_out_shift(QueryBank({**bank.ids, "text": bank.ids["text"][:3]}, {**bank.classes,
                          "text": bank.classes["text"][:3]}, {**bank.embeddings, "text": rows[:3]},
                          bank.encoder, bank.manifest), fake_build, "text")


def test_probe_queries_use_train_rows_of_the_target_class(eval_set, bank, fake_build):
    probes = qd.probe_queries(bank, eval_set, fake_build)
    assert set(probes) == {"class-mean image", "class-mean text", "class-mean audio", "text + gap", "image + gap",
                           "class-mean text (eval split)", "class-mean image (eval split)"}
    prompts = read_table(fake_build, "prompts")
    for i, cls in enumerate(eval_set.meta["target"]):  # the fake build has one held-out template per class
        text = prompts.loc[(prompts["class_name"] == cls) & (prompts["split_group"] == "test"), "text"].item()
        torch.testing.assert_close(probes["class-mean text (eval split)"][i], bank.get("text", [text])[0])
    audio = read_table(fake_build, "audio", "train")
    row = {k: i for i, k in enumerate(bank.ids["audio"])}
    for i, cls in enumerate(eval_set.meta["target"]):
        keys = audio.loc[audio["class_name"] == cls, "clip_id"]
        mean = bank.embeddings["audio"][[row[k] for k in keys]].mean(0)
        torch.testing.assert_close(probes["class-mean audio"][i], mean / mean.norm())
    norms = torch.stack([p.norm(dim=-1) for p in probes.values()])
    torch.testing.assert_close(norms, torch.ones_like(norms))


# --------------------------------------------------------------------------- 5. calibration
@pytest.mark.parametrize("conditioning", ["inner", "film"])
def test_temperature_scaled_divides_the_logits(conditioning):
    prof = dataclasses.replace(SMOKE, separator=dataclasses.replace(SMOKE.separator, conditioning=conditioning))
    model = new_separator(prof, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, prof.audio.n_freq_warped, prof.audio.n_frames, generator=g)
    q = F.normalize(torch.randn(2, 3, prof.separator.query_dim, generator=g), dim=-1)
    with torch.no_grad():
        z = multi_query_logits(model.eval(), x, q)
        z2 = multi_query_logits(qd.temperature_scaled(model, 2.5), x, q)
        z_again = multi_query_logits(model, x, q)
    assert z.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(z2, z / 2.5, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z_again, z)  # the original is untouched
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            qd.temperature_scaled(model, bad)
    with pytest.raises(TypeError, match="QuerySeparator"):
        qd.temperature_scaled(torch.nn.Linear(2, 2), 1.0)


def test_temperature_sweep_constant_mask(eval_set, bank):
    model = new_separator(SMOKE, 0)
    with torch.no_grad():
        model.scale.zero_()
        model.bias.fill_(1.0)  # P = sigmoid(1 / T) everywhere: a scaled mixture, SI-SDRi 0 at every T
    sweep = qd.temperature_sweep(model, SMOKE, bank, eval_set, temperatures=(0.5, 2.0), modalities=("text",))
    assert sorted(set(sweep["temperature"])) == [0.5, 2.0] and len(sweep) == 2 * len(eval_set)
    ok = sweep[~sweep["skipped"]]
    np.testing.assert_allclose(ok["si_sdri"], 0.0, atol=1e-3)


def test_best_temperature_by_hand():
    sweep = pd.DataFrame({"temperature": [0.5, 0.5, 1.0, 1.0, 2.0, 2.0, 3.0],
                          "si_sdri": [1.0, 2.0, 2.0, 2.0, 0.0, 4.0, 99.0],
                          "skipped": [False] * 6 + [True]})
    assert qd.best_temperature(sweep) == 1.0  # 1.0 and 2.0 tie at 2.0 dB: the one closest to 1
    assert qd.best_temperature(sweep.assign(si_sdri=[1.0, 2.0, 2.0, 2.0, 1.0, 4.0, 0.0])) == 2.0


def test_nearest_reference_class_by_hand(fake_build):
    # train prompts of class c at e_c; every held-out prompt of class c at n(e_c + 2 e_{c+1}) (nearer the next
    # class's train mean), the last class's at e_0: each held-out prompt reads as the next class (dog as violin)
    bank, classes, _ = _placed_text_bank(fake_build, lambda c, e: F.normalize(e[c] + 2 * e[c + 1], dim=0) if c < 3
                                         else e[0])
    prompts = read_table(fake_build, "prompts")
    near = qd.nearest_reference_class(bank, fake_build, "text")
    assert set(near) == set(bank.ids["text"])
    for _, p in prompts.iterrows():
        c = classes.index(p["class_name"])
        expected = classes[c] if p["split_group"] == "train" else classes[(c + 1) % 4]
        assert near[p["text"]] == expected, p["text"]


def test_placement_by_class_by_hand(fake_build):
    # train prompts of class c at e_c; held-out prompts of violin and cello at their own e_c, of trumpet at
    # n(e_violin + 0.1 e_trumpet) and of dog at n(e_cello + 0.1 e_dog): the last two read as another class
    def held_out(c, e):
        return e[c] if c < 2 else F.normalize(e[c - 2] + 0.1 * e[c], dim=0)
    bank, classes, _ = _placed_text_bank(fake_build, held_out)
    prompts = read_table(fake_build, "prompts")
    n_test = prompts[prompts["split_group"] == qd.PROMPT_GROUP["test"]].groupby("class_name").size()
    tab = qd.placement_by_class(bank, fake_build, "text", "test").set_index("class")
    assert list(tab.index) == sorted(classes)
    for c in classes:
        assert tab.loc[c, "n"] == n_test[c]
    assert tab.loc["violin", "own"] == n_test["violin"] and pd.isna(tab.loc["violin", "most_other"])
    assert tab.loc["cello", "own"] == n_test["cello"] and tab.loc["cello", "most_other_n"] == 0
    assert tab.loc["trumpet", "own"] == 0 and tab.loc["trumpet", "most_other"] == "violin"
    assert tab.loc["trumpet", "most_other_n"] == n_test["trumpet"]
    assert tab.loc["dog", "own"] == 0 and tab.loc["dog", "most_other"] == "cello"
    # the training prompts are placed on their own class by construction
    train = qd.placement_by_class(bank, fake_build, "text", "train").set_index("class")
    assert (train["own"] == train["n"]).all()
