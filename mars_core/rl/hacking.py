"""The reward-hacking probe: how often does a degenerate output score at or above the oracle mask's?

RL maximises the reward, not separation quality; a reward is **hackable** when an output the policy can
reach without separating scores as high as a good separation. For every test mixture and every reward
variant (:func:`reward_variants`: the terms of :class:`~mars_core.rl.rewards.RewardModel` with the weights
of a preset) the probe scores these candidate outputs of the target (:func:`candidate_outputs`):

==========================  =========  ==================================================================
candidate                   kind       what it is
==========================  =========  ==================================================================
``oracle_irm``              reference  the ideal-ratio-mask estimate (warped domain, as the benchmark's row)
``target``                  clean      the clean target: a *better* output than the oracle
``mixture``                 hack       the all-pass mask (mask 1): no separation
``silence``                 hack       all zeros (mask 0); the signal term special-cases it
``near_silence``            hack       ``1e-4 x`` the mixture: silence that the silence test misses
``interferer``              hack       the other source: the wrong answer
``target_x0.1``             scaled     ``0.1 x`` the clean target
``target_x10``              scaled     ``10 x`` the clean target
``target_at_mixture_level`` scaled     the clean target scaled to the mixture's RMS
``oracle_x0.1``             scaled     ``0.1 x`` the oracle output (a mask can reach it: the oracle mask / 10)
==========================  =========  ==================================================================

:func:`hacking_table` reports, per variant and candidate, ``rate`` = the fraction of items with
``R(candidate) >= R(oracle_irm)`` and its 95 % Wilson interval (:func:`wilson_interval`).

**What "a scaled target beats the oracle" means.** A scaled clean target is a perfect separation up to
gain: SI-SDR and the benchmark's BSS Eval v4 SDR (with its distortion filter) barely see the gain, so a
reward that ranks it above the oracle output is *right*, not hacked (the SI-SDR term of ``plus`` gives
every scaled target its +30 dB ceiling). What is a hack is a reward that pays for the gain itself,
because a mask policy can move its output's gain (scale the mask down) without separating any better.
So for a scaled copy ``g s`` of an output ``s`` (``s`` = the clean target, or the oracle output for
``oracle_x0.1``) the table also reports ``gain_rate`` = the fraction of items with
``R(g s) >= R(oracle) > R(s)`` and ``R(g s) > R(s) + GAIN_TOL``: the gain, not the content, lifted the
copy to the oracle's reward (for ``oracle_x0.1``, whose unscaled copy *is* the oracle, the fraction with
``R(g s) > R(oracle) + GAIN_TOL``: a mask divided by 10 would earn more). A gain-invariant reward scores 0
there (:data:`GAIN_TOL` absorbs float rounding).

**The oracle output** is the benchmark's ``oracle IRM`` row, reconstructed as every separator's output is
(:meth:`~mars_core.audio.FrontEnd.reconstruct`, free of the iSTFT tail spikes since that fix: docs/method.md
section 1; before it, the spikes alone let the mixture reach the oracle's ``plus`` reward on 16.5 % of cpu
test items).

The **hack rates**: ``rate`` of the ``hack`` candidates and ``gain_rate`` of the ``scaled`` ones;
:func:`hack_summary` checks them against a limit (:data:`HACK_LIMIT`, 5 %).

Command line (the profile's test mixtures, the RL reward stack, every variant)::

    python -m mars_core.rl.hacking --profile cpu [--proposed] [--n-items 200] [--out table.csv]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Profile, get_profile, rl_preset
from ..data.mixing import MixtureDataset
from ..alignment.stack import load_reward_stack
from ..evaluation.evaluate import load_eval_set, reference_estimates
from ..metrics import SILENCE_L1
from ..queries import item_queries
from .rewards import RewardModel, anchors, reward_bank

REFERENCE = "oracle_irm"
"""The candidate every other one is compared with."""
NEAR_SILENCE_GAIN = 1e-4
"""Gain of the ``near_silence`` candidate (times the mixture)."""
CANDIDATE_KINDS: dict[str, str] = {
    "oracle_irm": "reference",
    "target": "clean",
    "mixture": "hack",
    "silence": "hack",
    "near_silence": "hack",
    "interferer": "hack",
    "target_x0.1": "scaled",
    "target_x10": "scaled",
    "target_at_mixture_level": "scaled",
    "oracle_x0.1": "scaled",
}
"""Every candidate of :func:`candidate_outputs` and its kind (module docstring)."""
SCALED_SOURCE = {"target_x0.1": "target", "target_x10": "target", "target_at_mixture_level": "target",
                 "oracle_x0.1": "oracle_irm"}
"""The unscaled output of each ``scaled`` candidate."""
HACK_LIMIT = 0.05
"""The largest acceptable hack rate (5 %)."""
GAIN_TOL = 1e-4
"""A scaled copy counts as preferred to its unscaled output only when its reward is higher by more than this:
a gain-invariant reward gives the two rewards that differ by float rounding (up to 8e-6 measured at cpu size),
while the gain preferences measured with the shipped encoders are of order 1e-2."""
LEVEL_RMS = 0.05
"""RMS at which :func:`proposed_variants` embeds every non-silent estimate: about the level of the benchmark's
clips in a mixture segment (whole-segment RMS of the cpu test targets measured 0.036-0.052; the recipe sets
the active-frame RMS to -20 dBFS = 0.1)."""


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (two-sided, ``level`` coverage).

    ``(p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)`` with ``z`` the normal quantile
    ``1 - (1 - level) / 2``. It stays inside [0, 1] and is not empty at ``k = 0`` or ``k = n``.

    Raises:
        ValueError: ``n < 1``, ``k`` outside ``[0, n]`` or ``level`` outside (0, 1).
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = statistics.NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the ends (not a rounding residue)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return float(lo), float(hi)


@dataclass(frozen=True)
class RewardVariant:
    """A reward to probe: :class:`~mars_core.rl.rewards.RewardModel` with these keyword weights."""

    name: str
    weights: Mapping[str, float] = field(default_factory=dict)
    """Keyword arguments of ``RewardModel`` (``lambda_sig``, ``lambda_neg``; 0 or absent: term off)."""
    description: str = ""
    level_rms: float = 0.0
    """If > 0, the encoder embeds every non-silent estimate scaled to this RMS (:class:`LevelNormalizedEncoder`):
    the semantic and contamination terms no longer see the gain (a proposal, not a preset)."""


class LevelNormalizedEncoder(torch.nn.Module):
    """An audio encoder that embeds each waveform scaled to a fixed RMS (silent ones, ``sum |x| <= SILENCE_L1``,
    as they are), so its embeddings do not depend on the estimate's gain."""

    def __init__(self, encoder, rms: float):
        super().__init__()
        if not rms > 0:
            raise ValueError(f"LevelNormalizedEncoder needs rms > 0, got {rms}")
        self.encoder, self.rms = encoder, float(rms)
        self.sample_rate = encoder.sample_rate

    def embed_audio(self, waveforms: torch.Tensor, sample_rate: int, **kwargs) -> torch.Tensor:
        """Shape: ``(N, samples)`` -> ``(N, D)``, as the wrapped encoder's."""
        w = waveforms.double()
        rms = w.pow(2).mean(-1, keepdim=True).sqrt()
        silent = w.abs().sum(-1, keepdim=True) <= SILENCE_L1
        scaled = torch.where(silent, w, w * (self.rms / rms.clamp_min(1e-30)))
        return self.encoder.embed_audio(scaled.to(waveforms.dtype), sample_rate, **kwargs)


def reward_variants(profile: str | Profile | None = None) -> list[RewardVariant]:
    """The rewards the probe compares, with the weights of the profile's presets.

    * ``semantic``: ``cos(phi_a(y^), z*)`` alone;
    * ``semantic - contamination``: plus the ``plus`` preset's contamination penalty ``lambda_neg``;
    * ``plus`` (the default reward): ``rl_preset(profile, 'plus')``'s ``lambda_sig`` and ``lambda_neg``;
    * ``paper``: ``rl_preset(profile, 'paper')``'s weights (the semantic reward: both are 0).
    """
    plus, paper = rl_preset(profile, "plus"), rl_preset(profile, "paper")
    return [
        RewardVariant("semantic", {}, "cos(phi_a(y^), z*)"),
        RewardVariant("semantic - contamination", {"lambda_neg": plus.lambda_neg},
                      f"semantic - {plus.lambda_neg:g} cos(phi_a(y^), z-)"),
        RewardVariant("plus", {"lambda_sig": plus.lambda_sig, "lambda_neg": plus.lambda_neg},
                      f"semantic + {plus.lambda_sig:g} SI-SDR/10 - {plus.lambda_neg:g} contamination (default)"),
        RewardVariant("paper", {"lambda_sig": paper.lambda_sig, "lambda_neg": paper.lambda_neg},
                      f"the paper preset: lambda_sig={paper.lambda_sig:g}, lambda_neg={paper.lambda_neg:g}"),
    ]


def proposed_variants(profile: str | Profile | None = None) -> list[RewardVariant]:
    """Rewards that are not presets, measured beside :func:`reward_variants`: ``plus`` with the semantic and
    contamination terms computed on the estimate scaled to :data:`LEVEL_RMS` (gain-invariant, like its
    SI-SDR term)."""
    plus = rl_preset(profile, "plus")
    return [RewardVariant("plus, level-normalised", {"lambda_sig": plus.lambda_sig, "lambda_neg": plus.lambda_neg},
                          f"plus with every non-silent estimate embedded at RMS {LEVEL_RMS:g}", LEVEL_RMS)]


def candidate_outputs(mixture: torch.Tensor, target: torch.Tensor, interferer: torch.Tensor,
                      oracle: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every candidate of :data:`CANDIDATE_KINDS` (module docstring), in that order.

    Shape:
        each input ``(N, samples)`` float; returns ``{name: (N, samples)}`` float32.
    """
    shapes = {tuple(x.shape) for x in (mixture, target, interferer, oracle)}
    if len(shapes) != 1 or mixture.dim() != 2:
        raise ValueError(f"mixture, target, interferer and oracle must all be (N, samples), got {sorted(shapes)}")
    mix, tgt = mixture.float(), target.float()
    rms = lambda x: x.double().pow(2).mean(-1, keepdim=True).sqrt()  # noqa: E731
    level = torch.where(rms(tgt) > 0, rms(mix) / rms(tgt).clamp_min(1e-30), torch.ones_like(rms(tgt))).float()
    return {
        "oracle_irm": oracle.float(),
        "target": tgt,
        "mixture": mix,
        "silence": torch.zeros_like(mix),
        "near_silence": NEAR_SILENCE_GAIN * mix,
        "interferer": interferer.float(),
        "target_x0.1": 0.1 * tgt,
        "target_x10": 10.0 * tgt,
        "target_at_mixture_level": level * tgt,
        "oracle_x0.1": 0.1 * oracle.float(),
    }


@torch.no_grad()
def candidate_rewards(stack, sample_rate: int, candidates: Mapping[str, torch.Tensor], z: torch.Tensor,
                      z_neg: torch.Tensor, references: torch.Tensor, variants: Sequence[RewardVariant],
                      batch_size: int = 64) -> dict[str, dict[str, torch.Tensor]]:
    """``{variant: {candidate: R (N,)}}``: each variant's :class:`RewardModel` on every candidate.

    Shape:
        candidates: each ``(N, samples)``; z ``(N, D)`` target anchors; z_neg ``(N, D)`` or ``(N, K, D)``
        interferer anchors; references ``(N, samples)`` clean targets (for the signal term).
    """
    out: dict[str, dict[str, torch.Tensor]] = {}
    for v in variants:
        st = replace(stack, encoder=LevelNormalizedEncoder(stack.encoder, v.level_rms)) \
            if v.level_rms else stack
        model = RewardModel(st, sample_rate, batch_size=batch_size, **dict(v.weights))
        out[v.name] = {}
        for name, wav in candidates.items():
            parts = [model(wav[i : i + batch_size], z[i : i + batch_size], z_neg[i : i + batch_size],
                           references[i : i + batch_size])[0] for i in range(0, wav.shape[0], batch_size)]
            out[v.name][name] = torch.cat(parts).double().cpu()
    return out


def _rate_row(hits: torch.Tensor, level: float) -> dict[str, float]:
    k, n = int(hits.sum()), int(hits.numel())
    lo, hi = wilson_interval(k, n, level)
    return {"k": k, "rate": k / n, "ci_low": lo, "ci_high": hi}


def hacking_table(rewards: Mapping[str, Mapping[str, torch.Tensor]], level: float = 0.95) -> pd.DataFrame:
    """One row per (variant, candidate other than the oracle): how often it reaches the oracle's reward.

    Args:
        rewards: ``{variant: {candidate: R (N,)}}`` (:func:`candidate_rewards`); each variant needs
            ``oracle_irm`` and, for the ``gain_*`` columns, the unscaled outputs of :data:`SCALED_SOURCE`.

    Returns:
        DataFrame ``variant, candidate, kind, n, k, rate, ci_low, ci_high, gain_k, gain_rate,
        gain_ci_low, gain_ci_high, mean_margin, hack_rate`` where ``rate = k / n`` is the fraction of
        items with ``R(candidate) >= R(oracle)``, ``gain_*`` the scaled candidates' gain-only rate
        (module docstring; NaN for other kinds), ``mean_margin`` the mean of ``R(candidate) -
        R(oracle)`` and ``hack_rate`` the rate that counts as hacking for this kind (``rate`` for
        ``hack``, ``gain_rate`` for ``scaled``, NaN otherwise).
    """
    rows = []
    nan = float("nan")
    for variant, by_cand in rewards.items():
        if REFERENCE not in by_cand:
            raise ValueError(f"rewards[{variant!r}] has no {REFERENCE!r} entry to compare with")
        ref = by_cand[REFERENCE].double()
        for cand, r in by_cand.items():
            if cand == REFERENCE:
                continue
            r = r.double()
            if r.shape != ref.shape:
                raise ValueError(f"rewards[{variant!r}][{cand!r}] has shape {tuple(r.shape)}, "
                                 f"oracle {tuple(ref.shape)}")
            kind = CANDIDATE_KINDS.get(cand, "other")
            row: dict[str, Any] = {"variant": variant, "candidate": cand, "kind": kind, "n": int(r.numel()),
                                   **_rate_row(r >= ref, level)}
            gain = {"gain_k": nan, "gain_rate": nan, "gain_ci_low": nan, "gain_ci_high": nan}
            src = SCALED_SOURCE.get(cand)
            if kind == "scaled" and src is not None and src in by_cand:
                r_src = by_cand[src].double()
                raised = r > r_src + GAIN_TOL  # the gain itself raised the reward
                hits = raised if src == REFERENCE else (r >= ref) & (r_src < ref) & raised
                g = _rate_row(hits, level)
                gain = {"gain_k": g["k"], "gain_rate": g["rate"], "gain_ci_low": g["ci_low"],
                        "gain_ci_high": g["ci_high"]}
            row.update(gain)
            row["mean_margin"] = float((r - ref).mean())
            row["hack_rate"] = row["rate"] if kind == "hack" else gain["gain_rate"] if kind == "scaled" else nan
            rows.append(row)
    return pd.DataFrame(rows)


def hack_summary(table: pd.DataFrame, limit: float = HACK_LIMIT) -> pd.DataFrame:
    """Per variant: the largest hack rate, the candidate that has it, and whether every hack rate is <= ``limit``."""
    rows = []
    for variant, t in table.groupby("variant", sort=False):
        t = t.dropna(subset=["hack_rate"])
        worst = t.loc[t["hack_rate"].idxmax()] if len(t) else None
        rows.append({"variant": variant, "worst_candidate": None if worst is None else worst["candidate"],
                     "worst_hack_rate": float("nan") if worst is None else float(worst["hack_rate"]),
                     "passes": bool((t["hack_rate"] <= limit).all())})
    return pd.DataFrame(rows)


@dataclass
class ProbeInputs:
    """The test mixtures of a probe and their anchors.

    Shape:
        mixtures, targets, interferers, oracle: ``(N, samples)`` float32; z, z_neg: ``(N, D)``.
    """

    mixtures: torch.Tensor
    targets: torch.Tensor
    interferers: torch.Tensor
    oracle: torch.Tensor
    z: torch.Tensor
    z_neg: torch.Tensor


def probe_inputs(profile: str | Profile | None, stack, bank, split: str = "test", n_items: int | None = None,
                 hard_pairs: bool = False, build_dir=None) -> ProbeInputs:
    """The benchmark's seeded test mixtures of ``split`` (:func:`mars_core.evaluation.evaluate.load_eval_set`: gain 1,
    centred crops, the first ``n_items``), an oracle IRM output, the target's evaluation anchor and the
    interferer's anchor (its query material from :func:`~mars_core.queries.item_queries`), both from the
    reward encoder's ``bank``.
    """
    prof = get_profile(profile)
    es = load_eval_set(prof, split, n_items, hard_pairs=hard_pairs, build_dir=build_dir)
    ds = MixtureDataset(split, prof, n_items=len(es), hard_pairs=hard_pairs, random_gain=False, random_crop=False,
                        build_dir=build_dir, load_images=False)
    neg_refs = [item_queries(ds, ds[int(i)])[1] for i in es.meta["index"]]
    mix, src = es.mixtures, es.sources
    est = reference_estimates(prof, es)[("oracle IRM", "-")]
    return ProbeInputs(mix.float(), src[:, 0].float(), src[:, 1].float(), est.float(),
                       anchors(stack, bank, es.refs).cpu(), anchors(stack, bank, neg_refs).cpu())


def hacking_probe(profile: str | Profile | None = None, *, stack=None, bank=None, split: str = "test",
                  n_items: int | None = None, variants: Sequence[RewardVariant] | None = None,
                  hard_pairs: bool = False, level: float = 0.95, build_dir=None) -> pd.DataFrame:
    """:func:`hacking_table` on the profile's test mixtures with the RL reward stack.

    Args:
        stack: the reward stack (default :func:`mars_core.alignment.stack.load_reward_stack`, trained on
            first use); bank: its embeddings of the build (default :func:`mars_core.rl.rewards.reward_bank`).
        n_items: test mixtures (default the profile's ``n_test_mixtures``, as the benchmark).
        variants: default :func:`reward_variants`.
    """
    prof = get_profile(profile)
    stack = stack if stack is not None else load_reward_stack(prof)
    bank = bank if bank is not None else reward_bank(stack, prof, build_dir=build_dir, progress=False)
    inp = probe_inputs(prof, stack, bank, split, n_items, hard_pairs, build_dir)
    cands = candidate_outputs(inp.mixtures, inp.targets, inp.interferers, inp.oracle)
    rewards = candidate_rewards(stack, prof.audio.sample_rate, cands, inp.z, inp.z_neg, inp.targets,
                                variants if variants is not None else reward_variants(prof))
    return hacking_table(rewards, level)


def format_table(table: pd.DataFrame) -> str:
    """A markdown table of the hack rates: one row per candidate, one column per variant,
    ``rate [ci_low, ci_high]`` in percent (``rate`` for the clean and hack candidates; ``gain_rate`` for the
    scaled ones, followed by their plain ``rate`` in parentheses)."""
    cols = list(dict.fromkeys(table["variant"]))
    lines = ["| candidate | kind | counted | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for cand, t in table.groupby("candidate", sort=False):
        kind = t["kind"].iloc[0]
        gain = kind == "scaled"
        cells = []
        for v in cols:
            r = t[t["variant"] == v].iloc[0]
            rate, lo, hi = (r["gain_rate"], r["gain_ci_low"], r["gain_ci_high"]) if gain else \
                (r["rate"], r["ci_low"], r["ci_high"])
            cell = f"{100 * rate:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
            cells.append(cell + (f" (>= oracle: {100 * r['rate']:.1f})" if gain else ""))
        counted = "R(gs) >= R(oracle) > R(s)" if gain else "R >= R(oracle)"
        if cand == "oracle_x0.1":
            counted = "R(0.1 oracle) > R(oracle)"
        lines.append(f"| {cand} | {kind} | {counted} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mars_core.rl.hacking", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: $MARS_PROFILE or smoke)")
    p.add_argument("--split", default="test", help="test split (default: test)")
    p.add_argument("--n-items", type=int, default=None, help="test mixtures (default: the profile's n_test_mixtures)")
    p.add_argument("--proposed", action="store_true", help="also probe proposed_variants() (not presets)")
    p.add_argument("--out", default=None, help="also write the full table to this CSV file")
    a = p.parse_args(argv)
    variants = reward_variants(a.profile) + (proposed_variants(a.profile) if a.proposed else [])
    table = hacking_probe(a.profile, split=a.split, n_items=a.n_items, variants=variants)
    print(format_table(table))
    print()
    print(hack_summary(table).to_string(index=False))
    if a.out:
        table.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
