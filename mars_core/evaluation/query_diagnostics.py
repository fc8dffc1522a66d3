"""Does a separator follow its query? Measurements that say where a weak query-conditioned separator fails.

Five probes, each built on the evaluation code (:mod:`mars_core.evaluation.evaluate`, :mod:`mars_core.queries`,
:mod:`mars_core.encoders.retrieval`); nothing here re-implements separation or a metric:

1. **Family table**: SI-SDRi by target family x query modality (:func:`family_table`, on the per-item
   frame of :func:`~mars_core.evaluation.evaluate.evaluate_systems` / :func:`~mars_core.evaluation.evaluate.score_estimates`).
2. **Query swap**: the same mixture ``x = s_t + s_i`` separated twice, once with the target's query
   (output ``y_t``) and once with the interferer's (output ``y_i``). With ``SI(a, b)`` the SI-SDR of
   estimate ``a`` against reference ``b`` (:func:`mars_core.metrics.si_sdr`), per item::

       drop       = SI(y_t, s_t) - SI(y_i, s_t)
       own_target = 1[SI(y_t, s_t) > SI(y_t, s_i)],   own_interferer = 1[SI(y_i, s_i) > SI(y_i, s_t)]

   A separator that ignores its query gives ``y_t = y_i`` and ``drop = 0`` exactly (and
   ``own_target + own_interferer = 1`` per item); one that returns exactly the queried source gives
   ``drop = SI(s_t, s_t) - SI(s_i, s_t)``, large (:func:`swap_scores`, :func:`swap_summary`).
3. **Retrieval per family**: audio->text and audio->image R@1 of the query encoder, split by the clip's
   family (:func:`family_retrieval`), with the class prototypes of
   :mod:`mars_core.encoders.retrieval`; and how far held-out prompts/images sit from the training ones
   (:func:`held_out_shift`).
4. **Encoder vs separator**: the same separator fed (a) **class-mean** queries, the normalised mean of
   the bank's ``train`` embeddings of the target class per modality (:func:`class_mean_queries`), an
   upper bound on what a better query encoder could give this separator; (b) the **modality-gap
   shift** ``q' = n(q + mean_audio - mean_m)`` of a text or image query (:func:`modality_gap_shift`).
5. **Mask calibration**: ``P = sigmoid(z / T)`` for a logit temperature ``T``
   (:func:`temperature_scaled`; exact for both fusions because ``z`` is linear in ``scale`` and ``bias``),
   SI-SDRi as a function of ``T`` (:func:`temperature_sweep`), ``T`` fitted on ``val`` (:func:`best_temperature`).

``scripts/diagnose_queries.py --profile cpu`` runs all five and writes the tables.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..audio import FrontEnd
from ..config import Profile, get_profile
from ..data.manifest import read_table
from ..data.mixing import PROMPT_GROUP, MixtureDataset
from ..encoders.pairs import load_split
from ..encoders.retrieval import class_prototypes, recall_at_1, split_embeddings
from .evaluate import EvalSet, eval_queries, score_estimates, separate
from ..metrics import is_silent, si_sdr
from ..queries import EVAL_MODALITIES, MODALITIES, QueryBank, QueryRef, compose, item_queries, modality_embeddings

SWAP_COLUMNS = ("si_tq_target", "si_tq_interferer", "si_iq_target", "si_iq_interferer")
"""Per-item SI-SDR (dB) of the swap test: output of the target's query (``tq``) or the interferer's
(``iq``) against the target or the interferer."""


# --------------------------------------------------------------------------- 1. family table
def family_table(per_item: pd.DataFrame, metric: str = "si_sdri", by: str = "family",
                 modalities: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ``metric`` by ``by`` (rows) x query modality (columns), with an ``all`` row and item counts.

    Skipped items (silent, ``skipped=True``) are left out, as in :func:`mars_core.evaluation.evaluate.results_table`.

    Args:
        per_item: one row per (item, modality), with columns ``modality``, ``by`` and ``metric``
            (e.g. :func:`mars_core.evaluation.evaluate.evaluate_systems`'s frame of one system).
        modalities: column order (default: those present, in :data:`EVAL_MODALITIES` order first).

    Returns:
        index ``by`` values then ``all``; one column per modality and ``n`` (items per row, first modality).
    """
    for col in ("modality", by, metric):
        if col not in per_item.columns:
            raise ValueError(f"per_item has no {col!r} column (columns: {', '.join(map(str, per_item.columns))})")
    if "system" in per_item.columns and per_item["system"].nunique() > 1:
        raise ValueError(f"per_item holds several systems ({', '.join(map(str, per_item['system'].unique()))}): "
                         "pass one system's rows")
    df = per_item[~per_item["skipped"]] if "skipped" in per_item.columns else per_item
    present = list(dict.fromkeys(df["modality"]))
    if modalities is None:
        modalities = [m for m in EVAL_MODALITIES if m in present] + [m for m in present if m not in EVAL_MODALITIES]
    wide = df.pivot_table(index=by, columns="modality", values=metric, aggfunc="mean")
    wide.loc["all"] = df.groupby("modality")[metric].mean()
    counts = df[df["modality"] == modalities[0]].groupby(by).size()
    out = wide.reindex(columns=list(modalities))
    out["n"] = counts.reindex(out.index).fillna(0).astype(int)
    out.loc["all", "n"] = int(counts.sum())
    out["n"] = out["n"].astype(int)
    return out.rename_axis(index=by, columns=None)


# --------------------------------------------------------------------------- 2. query swap
def interferer_refs(eval_set: EvalSet, profile: str | Profile | None, *, hard_pairs: bool = False,
                    build_dir: str | os.PathLike | None = None) -> list[QueryRef]:
    """The interferer's evaluation query of every item of ``eval_set``, built like the target's.

    Prompt and image: :func:`~mars_core.queries.item_queries` (seeded by the item); audio: every
    clip of the interferer's class in the split except the interferer clip (as
    :func:`~mars_core.queries.evaluation_ref` does for the target). ``hard_pairs`` and ``build_dir``
    must be those the eval set was loaded with.
    """
    ds = MixtureDataset(eval_set.split, profile, n_items=int(eval_set.meta["index"].max()) + 1, hard_pairs=hard_pairs,
                        random_gain=False, random_crop=False, build_dir=build_dir, load_images=False)
    refs = []
    for pos, idx in enumerate(eval_set.meta["index"]):
        item = ds[int(idx)]
        if item["clip_ids"][1] != eval_set.meta["interferer_clip"].iloc[pos]:
            raise ValueError(f"item {idx}: the dataset's interferer clip {item['clip_ids'][1]!r} is not the eval set's "
                             f"{eval_set.meta['interferer_clip'].iloc[pos]!r}: pass the hard_pairs/build_dir the eval "
                             "set was loaded with")
        drawn = item_queries(ds, item)[1]
        cls = item["classes"][1]
        others = tuple(c.clip_id for c in ds.clips[cls] if c.clip_id != item["clip_ids"][1])
        refs.append(QueryRef(cls, drawn.text, drawn.image_id, others))
    return refs


def ref_queries(bank: QueryBank, refs: Sequence[QueryRef], modalities: Sequence[str] = EVAL_MODALITIES) -> torch.Tensor:
    """Queries of every kind in ``modalities`` for ``refs`` (:func:`~mars_core.queries.compose`).

    Shape: returns ``(len(refs), len(modalities), D)``.
    """
    emb = modality_embeddings(bank, refs)
    return torch.stack([compose(emb, m) for m in modalities], dim=1)


def swap_scores(target_query_estimates, interferer_query_estimates, sources) -> pd.DataFrame:
    """Per-item SI-SDR of the swap test (module docstring): :data:`SWAP_COLUMNS`, ``drop``,
    ``own_target``, ``own_interferer`` and ``skipped`` (a silent output, target or interferer: NaN row).

    Shape:
        target_query_estimates, interferer_query_estimates: ``(N, samples)``;
        sources: ``(N, 2, samples)``, target first then interferer.
    """
    yt = torch.as_tensor(target_query_estimates).double()
    yi = torch.as_tensor(interferer_query_estimates).double()
    src = torch.as_tensor(sources).double()
    if src.dim() != 3 or src.shape[1] < 2:
        raise ValueError(f"sources must be (N, 2, samples) with the target first, got {tuple(src.shape)}")
    if yt.shape != yi.shape or yt.shape != src[:, 0].shape:
        raise ValueError(f"estimates {tuple(yt.shape)} and {tuple(yi.shape)} must both be (N, samples) = "
                         f"{tuple(src[:, 0].shape)}")
    st, si = src[:, 0], src[:, 1]
    cols = {"si_tq_target": si_sdr(yt, st), "si_tq_interferer": si_sdr(yt, si),
            "si_iq_target": si_sdr(yi, st), "si_iq_interferer": si_sdr(yi, si)}
    df = pd.DataFrame({k: v.numpy() for k, v in cols.items()})
    skipped = is_silent(yt) | is_silent(yi) | is_silent(st) | is_silent(si)
    df.loc[skipped, list(SWAP_COLUMNS)] = np.nan
    df["drop"] = df["si_tq_target"] - df["si_iq_target"]
    df["own_target"] = np.where(skipped, np.nan, (df["si_tq_target"] > df["si_tq_interferer"]).astype(float))
    df["own_interferer"] = np.where(skipped, np.nan, (df["si_iq_interferer"] > df["si_iq_target"]).astype(float))
    df["skipped"] = skipped
    return df


def swap_summary(scores: pd.DataFrame, by: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Means of :func:`swap_scores`' columns (skipped rows left out), ``n`` items, optionally grouped.

    ``drop`` is the mean fall of the target's SI-SDR when the query names the interferer;
    ``own_target`` / ``own_interferer`` the fraction of items whose output is closer to its own source.
    """
    cols = [*SWAP_COLUMNS, "drop", "own_target", "own_interferer"]
    df = scores[~scores["skipped"]]
    if by is None:
        return df[cols].mean().to_frame().T.assign(n=len(df))
    g = df.groupby(by, sort=False)
    return g[cols].mean().assign(n=g.size()).reset_index()


def swap_test(model: torch.nn.Module, profile: str | Profile | None, bank: QueryBank, eval_set: EvalSet,
              interferers: Sequence[QueryRef], modalities: Sequence[str] = EVAL_MODALITIES,
              batch_size: int = 16) -> pd.DataFrame:
    """:func:`swap_scores` of ``model`` for every query kind, one U-Net pass per mixture
    (:func:`mars_core.evaluation.evaluate.separate` with the target's and the interferer's queries stacked).

    Returns:
        one row per (item, modality) with the eval set's metadata and ``modality``.
    """
    fe = FrontEnd(get_profile(profile).audio)
    k = len(modalities)
    q = torch.cat([eval_queries(bank, eval_set, modalities), ref_queries(bank, interferers, modalities)], dim=1)
    est, _ = separate(model, fe, eval_set.mixtures, q, batch_size)
    frames = [swap_scores(est[:, j], est[:, k + j], eval_set.sources[:, :2])
              .join(eval_set.meta.reset_index(drop=True)).assign(modality=m) for j, m in enumerate(modalities)]
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- 3. retrieval per family
def family_retrieval(embeddings: Mapping[str, torch.Tensor], data) -> pd.DataFrame:
    """Audio->text and audio->image R@1 per family of the audio clip (all classes of the split are candidates).

    Args:
        embeddings: ``{"audio": (N_a, D), "text": (N_t, D), "image": (N_v, D) or None}``
            (:func:`mars_core.encoders.retrieval.split_embeddings`).
        data: a :class:`mars_core.encoders.pairs.SplitData` (labels, classes, families).

    Returns:
        one row per family present among the clips, then ``all``: ``split, family, clips, a2t_r1, a2i_r1``.
    """
    n = len(data.classes)
    t_protos, t_cls = class_prototypes(embeddings["text"], data.prompt_labels, n)
    img = embeddings.get("image")
    i_protos, i_cls = (class_prototypes(img, data.image_labels, n) if img is not None and len(img) else (None, None))
    fam = np.asarray(data.families)[np.asarray(data.audio_labels)]
    rows = []
    for name in [*dict.fromkeys(fam.tolist()), "all"]:
        keep = np.ones(len(fam), bool) if name == "all" else fam == name
        a, lab = embeddings["audio"][torch.as_tensor(keep)], np.asarray(data.audio_labels)[keep]
        rows.append({"split": data.split, "family": name, "clips": int(keep.sum()),
                     "a2t_r1": recall_at_1(a, lab, t_protos, t_cls),
                     "a2i_r1": recall_at_1(a, lab, i_protos, i_cls) if i_protos is not None else float("nan")})
    return pd.DataFrame(rows)


def encoder_family_retrieval(encoder, build_dir: str | os.PathLike, splits: Sequence[str] = ("test", "test_timbre"),
                             batch_size: int = 32) -> pd.DataFrame:
    """:func:`family_retrieval` of a tri-modal encoder on ``splits`` of a build (rows of all splits)."""
    frames = []
    for split in splits:
        data = load_split(build_dir, split, encoder.sample_rate, encoder.image_size)
        frames.append(family_retrieval(split_embeddings(encoder, data, batch_size), data))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- 4. encoder vs separator
def split_ids(build_dir: str | os.PathLike, split: str = "train") -> dict[str, set[str]]:
    """The bank keys of one split: prompts of its template group, its image ids and clip ids."""
    prompts = read_table(build_dir, "prompts")
    return {"text": set(prompts.loc[prompts["split_group"] == PROMPT_GROUP[split], "text"]),
            "image": set(read_table(build_dir, "images", split)["image_id"]),
            "audio": set(read_table(build_dir, "audio", split)["clip_id"])}


def class_mean_queries(bank: QueryBank, classes: Sequence[str], modality: str,
                       keep: set[str] | None = None) -> torch.Tensor:
    """``n(mean_i e_i)`` over the bank's ``modality`` rows of each class (only keys in ``keep`` if given).

    Shape: returns ``(len(classes), D)``.

    Raises:
        ValueError: a class without rows (naming it).
    """
    groups: dict[str, list[str]] = {}
    for key, cls in zip(bank.ids[modality], bank.classes[modality]):
        if keep is None or key in keep:
            groups.setdefault(cls, []).append(key)
    missing = [c for c in dict.fromkeys(classes) if c not in groups]
    if missing:
        raise ValueError(f"class {missing[0]!r} has no {modality} rows in the bank"
                         + (" among the kept keys" if keep is not None else ""))
    means = {c: bank.mean(modality, [groups[c]])[0] for c in dict.fromkeys(classes)}
    return torch.stack([means[c] for c in classes])


def held_out_shift(bank: QueryBank, build_dir: str | os.PathLike, modality: str, split: str = "test",
                   reference: str = "train") -> dict[str, float]:
    """How far the held-out queries of ``split`` sit from the ``reference`` queries the separator was trained on.

    Per class present in both, ``h_c`` and ``r_c`` are the class means of ``modality`` over the two splits'
    bank rows (:func:`class_mean_queries`). Returns the mean ``cos(h_c, r_c)`` (``same``), the mean over
    classes of the highest ``cos(h_c, r_c')`` with ``c' != c`` (``other``), and ``r1``: the fraction of
    classes whose held-out mean is closest to its own reference mean, with ``classes`` (how many).
    """
    ids_h, ids_r = split_ids(build_dir, split)[modality], split_ids(build_dir, reference)[modality]
    in_h = {c for k, c in zip(bank.ids[modality], bank.classes[modality]) if k in ids_h}
    in_r = {c for k, c in zip(bank.ids[modality], bank.classes[modality]) if k in ids_r}
    classes = sorted(in_h & in_r)
    if len(classes) < 2:
        raise ValueError(f"{modality}: {len(classes)} class(es) in both {split!r} and {reference!r}; need two")
    sims = class_mean_queries(bank, classes, modality, ids_h) @ class_mean_queries(bank, classes, modality, ids_r).T
    eye = torch.eye(len(classes), dtype=torch.bool)
    return {"same": float(sims.diag().mean()), "other": float(sims.masked_fill(eye, -2.0).max(1).values.mean()),
            "r1": float((sims.argmax(1) == torch.arange(len(classes))).float().mean()), "classes": len(classes)}


def nearest_reference_class(bank: QueryBank, build_dir: str | os.PathLike, modality: str,
                            reference: str = "train") -> dict[str, str]:
    """For every ``modality`` row of the bank, the class whose ``reference``-split mean (:func:`class_mean_queries`
    over that split's keys) is nearest by cosine: where the separator, trained on the reference split's queries,
    will read the query as pointing. Keys are the bank's row keys (prompt text, ``image_id``, ``clip_id``).

    Raises:
        ValueError: fewer than two classes among the reference split's rows.
    """
    ref = split_ids(build_dir, reference)[modality]
    classes = sorted({c for k, c in zip(bank.ids[modality], bank.classes[modality]) if k in ref})
    if len(classes) < 2:
        raise ValueError(f"{modality}: {len(classes)} class(es) in {reference!r}; need two")
    nearest = (bank.embeddings[modality] @ class_mean_queries(bank, classes, modality, ref).T).argmax(1)
    return {k: classes[int(i)] for k, i in zip(bank.ids[modality], nearest)}


def placement_by_class(bank: QueryBank, build_dir: str | os.PathLike, modality: str, split: str = "test",
                       reference: str = "train") -> pd.DataFrame:
    """Per class: how many of its ``split`` queries land nearest their own ``reference``-class mean
    (:func:`nearest_reference_class`), and which other class takes most of the rest.

    Returns one row per class of ``split`` (sorted): ``class``, ``n`` (its queries in ``split``), ``own`` (how many
    are nearest their own class), ``most_other`` (the most frequent other nearest class, ties by name; missing (NaN)
    when every query is placed on its own class) and ``most_other_n``.
    """
    near = nearest_reference_class(bank, build_dir, modality, reference)
    keys = split_ids(build_dir, split)[modality]
    placed: dict[str, Counter] = {}
    for key, cls in zip(bank.ids[modality], bank.classes[modality]):
        if key in keys:
            placed.setdefault(cls, Counter())[near[key]] += 1
    rows = []
    for cls in sorted(placed):
        others = [(-n, c) for c, n in placed[cls].items() if c != cls]
        top_n, top = (-min(others)[0], min(others)[1]) if others else (0, None)
        rows.append({"class": cls, "n": sum(placed[cls].values()), "own": placed[cls][cls],
                     "most_other": top, "most_other_n": top_n})
    return pd.DataFrame(rows, columns=["class", "n", "own", "most_other", "most_other_n"])


def modality_gap(bank: QueryBank, source: str = "text", target: str = "audio") -> torch.Tensor:
    """``mean(e_target) - mean(e_source)`` over all bank rows of each modality. Shape ``(D,)``."""
    return bank.embeddings[target].mean(0) - bank.embeddings[source].mean(0)


def modality_gap_shift(queries: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """``n(q + gap)`` per row: a query moved by the modality gap. Shape: ``(N, D)`` and ``(D,)`` -> ``(N, D)``."""
    return F.normalize(queries + gap, dim=-1)


def probe_queries(bank: QueryBank, eval_set: EvalSet, build_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Oracle and shifted queries of every item:

    * ``class-mean <m>`` for each modality: the ``train`` rows of the target's class (what training showed);
    * ``class-mean <m> (eval split)`` for text and image: the rows the eval queries are drawn from (the
      split's prompt templates, its image style), averaged: separates per-query noise from a shift of
      the held-out material as a whole;
    * ``text + gap``, ``image + gap``: the item's query shifted towards the mean audio embedding.

    Shape: each ``(N, D)``.
    """
    keep = split_ids(build_dir, "train")
    own = split_ids(build_dir, eval_set.split)
    classes = list(eval_set.meta["target"])
    out = {f"class-mean {m}": class_mean_queries(bank, classes, m, keep[m]) for m in MODALITIES}
    for m in ("text", "image"):
        out[f"class-mean {m} (eval split)"] = class_mean_queries(bank, classes, m, own[m])
    emb = modality_embeddings(bank, eval_set.refs)
    for m in ("text", "image"):
        out[f"{m} + gap"] = modality_gap_shift(emb[m], modality_gap(bank, m, "audio"))
    return out


# --------------------------------------------------------------------------- 5. calibration
def temperature_scaled(model: torch.nn.Module, temperature: float) -> torch.nn.Module:
    """A copy of a :class:`~mars_core.separator.QuerySeparator` whose logits are ``z / temperature``.

    Both fusions are linear in ``scale`` and ``bias`` (``z = sum_c s_c q~_c A_c + b``, or
    ``z = s . FiLM(A) + b``), so dividing those two parameters by ``T`` divides ``z`` by ``T`` exactly.
    """
    if not float(temperature) > 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    for name in ("scale", "bias"):
        if not isinstance(getattr(model, name, None), torch.nn.Parameter):
            raise TypeError(f"{type(model).__name__} has no {name!r} parameter: temperature_scaled needs a "
                            "QuerySeparator (logits linear in scale and bias)")
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.scale.div_(float(temperature))
        out.bias.div_(float(temperature))
    return out.eval()


def temperature_sweep(model: torch.nn.Module, profile: str | Profile | None, bank: QueryBank, eval_set: EvalSet,
                      temperatures: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0),
                      modalities: Sequence[str] = EVAL_MODALITIES, batch_size: int = 16) -> pd.DataFrame:
    """Per-item metrics (:func:`mars_core.evaluation.evaluate.score_estimates`) of ``P = sigmoid(z / T)`` for each ``T``.

    Returns:
        one row per (T, modality, item); ``system`` is ``"T=<T>"`` and column ``temperature`` holds ``T``.
    """
    fe = FrontEnd(get_profile(profile).audio)
    q = eval_queries(bank, eval_set, modalities)
    estimates = {}
    for t in temperatures:
        est, _ = separate(temperature_scaled(model, t), fe, eval_set.mixtures, q, batch_size)
        estimates.update({(f"T={t:g}", m): est[:, k] for k, m in enumerate(modalities)})
    df = score_estimates(estimates, eval_set)
    return df.assign(temperature=df["system"].str.slice(2).astype(float))


def best_temperature(sweep: pd.DataFrame, metric: str = "si_sdri") -> float:
    """The ``T`` of :func:`temperature_sweep` with the highest mean ``metric`` over all modalities and items
    (skipped rows left out; ties: the one closest to 1)."""
    df = sweep[~sweep["skipped"]] if "skipped" in sweep.columns else sweep
    means = df.groupby("temperature")[metric].mean()
    best = means.max()
    cands = means.index[means == best]
    return float(min(cands, key=lambda t: abs(np.log(t))))
