"""scripts/rl_gradient_check.py: the matched-noise directions of its calibration runs."""

from __future__ import annotations

import pytest
import torch

from tests.repo_files import load_script
from tests.test_rl_rollout import parts  # noqa: F401  (fixture)


def _script():
    return load_script("scripts/rl_gradient_check.py")


@pytest.mark.parametrize("cos", [1.0, 0.7, 0.3, 0.0])
def test_noisy_direction_has_the_set_cosine_and_the_gradients_norm(cos):
    g = torch.randn(5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = _script().noisy_direction(g, cos, torch.Generator().manual_seed(1))
    got = float(d @ g / (d.norm() * g.norm()))
    assert got == pytest.approx(cos, abs=1e-9)  # float64 arithmetic on 5000 numbers
    assert float(d.norm()) == pytest.approx(float(g.norm()), rel=1e-9)


def test_noisy_directions_differ_between_draws():
    mod = _script()
    g = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    a, b = mod.noisy_direction(g, 0.5, gen), mod.noisy_direction(g, 0.5, gen)
    assert float(a @ b / (a.norm() * b.norm())) < 0.5  # two noises, each orthogonal to g: cos(a, b) = 0.25 + noise


def test_trainer_variants_type_their_fields_and_refuse_bad_ones():
    from types import SimpleNamespace

    from mars_core.config import get_profile, rl_preset

    prof = get_profile("smoke")
    su = SimpleNamespace(cfg=rl_preset(prof, "plus"), prof=prof, stack=object())
    mod = _script()
    out = mod.trainer_variants(su, ["plus", "sig:lambda_sig=1000,lambda_neg=0,advantage=none"])
    assert out["plus"][0] == su.cfg
    cfg, rm = out["sig"]
    assert (cfg.lambda_sig, cfg.lambda_neg, cfg.advantage) == (1000.0, 0.0, "none")
    assert isinstance(cfg.lambda_sig, float) and (rm.lambda_sig, rm.lambda_neg) == (1000.0, 0.0)
    with pytest.raises(SystemExit, match="no_such_field"):
        mod.trainer_variants(su, ["x:no_such_field=1"])
    with pytest.raises(ValueError, match="group_size=1"):
        mod.trainer_variants(su, ["x:group_size=1,advantage=loo"])


def test_reward_gradients_table_against_the_diagnostics_by_hand(parts, tmp_path):
    """--reward-gradient: one row per term and batch whose cosine is the one computed here from the diagnostics'
    two exact gradients (the same batches: rl_batch of steps 0 and 1), and a summary whose cosine of the sums is that
    of the gradients added by hand."""
    from dataclasses import replace
    from types import SimpleNamespace

    from mars_core.config import rl_preset
    from mars_core.rl.diagnostics import cosine, exact_gradient, exact_reward_gradient
    from mars_core.rl.rewards import RewardModel
    from mars_core.rl.rollout import rl_batch
    from mars_core.rl.update import trainable_parameters
    from tests.test_rl_rollout import SMOKE, trained_looking_separator

    cfg = replace(rl_preset(SMOKE, "plus"), batch_mixtures=2, lambda_sig=0.0)
    rm = RewardModel.from_config(parts["stack"], SMOKE.audio.sample_rate, cfg)
    su = SimpleNamespace(cfg=cfg, fe=parts["fe"], bank=parts["bank"], rbank=parts["rbank"], stack=parts["stack"],
                         device=torch.device("cpu"), reward_model=rm)
    model = trained_looking_separator(3)
    params = trainable_parameters(model, "head")
    args = SimpleNamespace(reward_gradient=2)
    table, summary = _script().reward_gradients(args, su, params, model, parts["ds"], tmp_path)
    assert (tmp_path / "reward_gradient.csv").is_file()
    assert list(table["term"]) == ["semantic", "contamination", "reward"] * 2
    assert (table["aligned"] == bool(parts["stack"].aligned)).all()
    sums, star = 0.0, 0.0
    for j in range(2):
        batch = rl_batch(parts["ds"], parts["bank"], parts["rbank"], parts["stack"], parts["fe"], j, 2, cfg.query,
                         cfg.seed, torch.device("cpu"))
        g_star, _ = exact_gradient(model, params, batch, parts["fe"])
        g, _ = exact_reward_gradient(model, params, batch, parts["fe"], rm, cfg.lambda_sem, cfg.lambda_neg)
        row = table[(table["batch"] == j) & (table["term"] == "reward")].iloc[0]
        assert row["cos"] == pytest.approx(cosine(g, g_star), abs=1e-5)
        sums, star = sums + g, star + g_star
    assert summary.loc["reward", "cos_of_sums"] == pytest.approx(cosine(sums, star), abs=1e-5)
    assert summary.loc["reward", "count"] == 2


def _setup(parts, seed: int):
    """The script's setup (``su``) for random-pair batches of two mixtures with plus's encoder reward (no signal term),
    a trained-looking smoke separator and its head parameters."""
    from dataclasses import replace
    from types import SimpleNamespace

    from mars_core.config import rl_preset
    from mars_core.rl.rewards import RewardModel
    from mars_core.rl.update import trainable_parameters
    from tests.test_rl_rollout import SMOKE, trained_looking_separator

    cfg = replace(rl_preset(SMOKE, "plus"), batch_mixtures=2, lambda_sig=0.0)
    rm = RewardModel.from_config(parts["stack"], SMOKE.audio.sample_rate, cfg)
    su = SimpleNamespace(cfg=cfg, fe=parts["fe"], bank=parts["bank"], rbank=parts["rbank"], stack=parts["stack"],
                         device=torch.device("cpu"), reward_model=rm)
    model = trained_looking_separator(seed)
    return su, model, trainable_parameters(model, "head")


def test_candidate_terms_table_against_the_diagnostics_by_hand(parts, tmp_path):
    """--candidate-terms: one row per term (and mix) and batch; the residual mix's cosine is the one computed here from
    the gradients of mode_candidate_terms' two residual cosines (interferer minus target), and the consistency row's
    from its own gradient, on the same batches."""
    from types import SimpleNamespace

    from mars_core.rl.diagnostics import CANDIDATE_TERMS, cosine, exact_gradient, flat, mode_candidate_terms
    from mars_core.rl.rollout import rl_batch

    su, model, params = _setup(parts, 4)
    cfg, rm = su.cfg, su.reward_model
    script = _script()
    table, summary = script.candidate_gradients(SimpleNamespace(candidate_terms=2), su, params, model, parts["ds"],
                                                tmp_path)
    assert (tmp_path / "candidate_gradient.csv").is_file()
    assert list(table["term"]) == [*CANDIDATE_TERMS, *script.CANDIDATE_MIXES] * 2
    for j in range(2):
        batch = rl_batch(parts["ds"], parts["bank"], parts["rbank"], parts["stack"], parts["fe"], j, 2, cfg.query,
                         cfg.seed, torch.device("cpu"))
        g_star, _ = exact_gradient(model, params, batch, parts["fe"])
        v = mode_candidate_terms(model, batch, parts["fe"], rm)
        residual = flat(torch.autograd.grad(v["residual_interferer"] - v["residual_target"], params, retain_graph=True))
        consistency = flat(torch.autograd.grad(v["consistency"], params))
        rows = table[table["batch"] == j].set_index("term")
        assert rows.loc["residual", "cos"] == pytest.approx(cosine(residual, g_star), abs=1e-4)
        assert rows.loc["consistency", "cos"] == pytest.approx(cosine(consistency, g_star), abs=1e-4)
        assert rows.loc["consistency", "value"] == pytest.approx(v["consistency"].item(), rel=1e-5)
    assert summary.loc["residual", "count"] == 2


def test_judge_gradient_rows_score_each_items_own_prompt(parts, tmp_path):
    """--judge-gradient: the 'judge' rows' values are the judge's semantic score of the mode's waveforms against each
    item's own prompt, recomputed here on the no-gradient path (embed_audio of the mode's waveforms, embed_text of the
    prompts that item_queries gives the batch's mixtures in order); float32 cosines: 1e-5."""
    from dataclasses import replace
    from types import SimpleNamespace

    from mars_core.config import rl_preset
    from mars_core.encoders.load import load_judge
    from mars_core.queries import item_queries
    from mars_core.rl.rewards import RewardModel
    from mars_core.rl.rollout import proposal_from_trunk, reconstruct_group, rl_batch
    from mars_core.rl.update import trainable_parameters
    from tests.test_rl_rollout import SMOKE, trained_looking_separator

    cfg = replace(rl_preset(SMOKE, "plus"), batch_mixtures=2, lambda_sig=0.0)
    su = SimpleNamespace(cfg=cfg, fe=parts["fe"], bank=parts["bank"], rbank=parts["rbank"], stack=parts["stack"],
                         device=torch.device("cpu"), prof=SMOKE,
                         reward_model=RewardModel.from_config(parts["stack"], SMOKE.audio.sample_rate, cfg))
    model = trained_looking_separator(4)
    params = trainable_parameters(model, "head")
    table, _ = _script().reward_gradients(SimpleNamespace(reward_gradient=2, judge_gradient=True), su, params, model,
                                          parts["ds"], tmp_path)
    judge = load_judge(SMOKE)
    for j in range(2):
        batch = rl_batch(parts["ds"], parts["bank"], parts["rbank"], parts["stack"], parts["fe"], j, 2, cfg.query,
                         cfg.seed, torch.device("cpu"))
        prompts = [r.text for i in range(2) for r in item_queries(parts["ds"], parts["ds"][2 * j + i])]
        with torch.no_grad():
            P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
            wav = reconstruct_group(parts["fe"], P.reshape(batch.n_mixtures, -1, *P.shape[-2:]), batch.mixtures)
            want = torch.nn.functional.cosine_similarity(judge.embed_audio(wav.reshape(batch.n_items, -1),
                                                                           SMOKE.audio.sample_rate),
                                                         judge.embed_text(prompts), dim=-1).mean().item()
        row = table[(table["batch"] == j) & (table["term"] == "judge")].iloc[0]
        assert row["value"] == pytest.approx(want, abs=1e-5) and -1 <= row["cos"] <= 1


def test_remainder_batch_replaces_each_source_by_the_mixture_less_the_other_mode(parts):
    """--reference remainder: with two sources, item k's reference is the mixture less the other item's mode
    waveform, rebuilt here with FrontEnd.reconstruct; everything else in the batch is unchanged."""
    from mars_core.rl.rollout import proposal_from_trunk
    from tests.test_rl_rollout import SMOKE, _batch, trained_looking_separator
    from tests.tolerances import assert_within, reconstruct_atol

    model = trained_looking_separator(7)
    batch = _batch(parts)
    fe = parts["fe"]
    rb = _script().remainder_batch(model, batch, fe)
    assert rb.sources.shape == batch.sources.shape and torch.equal(rb.mixtures, batch.mixtures)
    assert torch.equal(rb.queries, batch.queries) and torch.equal(rb.z, batch.z)
    with torch.no_grad():
        P = proposal_from_trunk(model, model.unet.trunk(batch.features), batch.queries)
    k = SMOKE.data.n_sources
    assert k == 2
    atol = reconstruct_atol(SMOKE.audio, batch.mixtures.shape[-1], batch.mixtures.abs().max().item())
    for b in range(batch.n_mixtures):
        for i in range(k):
            other = fe.reconstruct(P[b * k + 1 - i], batch.mixtures[b])
            assert_within(rb.sources[b, i], batch.mixtures[b] - other, atol, "remainder reference")


def test_sqrt_law_figure_draws_the_four_estimators_of_the_readme_table(tmp_path):
    """The figure keeps GRPO, leave-one-out, segments and pathwise (the README's table) and leaves the variants to
    the CSV; a table of other rows only draws them all. Cosines at and below 0 stay on the linear y axis."""
    import pandas as pd

    gc = _script()
    rows = [{"estimator": e, "kappa": k, "N": n, "cos": c, "cos_se": 0.05, "cos_avg": c}
            for k in (30.0, 300.0) for e, c in (("score", -0.02), ("segments-window", 0.3), ("pathwise", 0.99))
            for n in (32, 128)]
    dims = pd.DataFrame({"estimator": "score", "kappa": 30.0, "N": 128, "D": [265, 16384], "cos": [0.0, 0.2],
                         "cos_se": [0.1, 0.1]})
    assert gc.plot(pd.DataFrame(rows), dims, tmp_path / "a.png", 64) == ["score", "pathwise"]
    assert (tmp_path / "a.png").stat().st_size > 1000
    only = pd.DataFrame([dict(r, estimator="trainer:plus") for r in rows if r["estimator"] == "score"])
    assert gc.plot(only, dims.iloc[:0], tmp_path / "b.png") == ["trainer:plus"]


def test_plot_only_redraws_from_a_runs_tables_and_names_a_missing_one(tmp_path, capsys):
    import pandas as pd

    gc = _script()
    with pytest.raises(SystemExit, match="no cosine_table.csv"):
        gc.main(["--plot-only", str(tmp_path)])
    pd.DataFrame([{"estimator": "loo", "kappa": 30.0, "N": n, "cos": 0.1, "cos_se": 0.02, "cos_avg": 0.1}
                  for n in (32, 128)]).to_csv(tmp_path / "cosine_table.csv", index=False)
    assert gc.main(["--plot-only", str(tmp_path)]) == 0  # no dimension.csv: the N panels alone
    assert (tmp_path / "sqrt_law.png").stat().st_size > 1000 and "(loo)" in capsys.readouterr().out
