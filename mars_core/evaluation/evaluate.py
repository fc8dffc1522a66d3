"""Evaluate a query-conditioned separator per query modality (docs/method.md section 8).

The protocol: seeded test mixtures (one target + one random interferer, no gain
randomisation, centred crops); the deterministic mask ``P`` (the Beta policy's mode);
the mixture phase; BSS Eval v4 SDR/SIR/SAR over the whole signal, SI-SDR and SI-SDRi,
silent items skipped and counted. Every estimate of an eval set (all systems, all queries)
is scored in one :func:`mars_core.metrics.evaluate_many` pass (:func:`evaluate_systems`), so
the reference side of BSS Eval is computed once per item.

Queries for the target (:mod:`mars_core.queries`): ``text`` (the split's prompt
templates, held out from training on ``test``), ``image`` (the held-out image style on
``test``), ``audio`` (normalised mean embedding of the *other* clips of the target's
class) and ``omni`` ``= n((2 e_v + 2 e_t + e_a) / 5)``.

Semantic score: ``100 cos(judge(estimate), judge(text))`` (and against the query image)
from the **judge** encoder, an encoder that never produced a query or a reward
(:mod:`mars_core.encoders.judge`, loaded by :func:`mars_core.encoders.load.load_judge`); :func:`evaluate_all` refuses the query encoder.

Any separator ``model(features, query) -> P`` works here, so the RL notebook evaluates
its policy (whose mode is ``P``) with the same functions.

On data without images (an imported ESC-50; :attr:`EvalSet.unavailable`) the image query is not
made up: its rows are kept with NaN metrics, ``skipped=True`` and a ``skip_reason`` that names the
build, so :func:`compact_table` shows ``n/a``; omni is the weighted mean of the modalities present
(:func:`mars_core.queries.present_omni`) and the judge's image score is NaN.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..audio import FrontEnd
from ..config import Profile, get_profile
from ..data.mixing import MixtureDataset, collate
from ..inputs import validate_audio
from ..metrics import evaluate_many, is_silent, semantic_score, summarize
from ..queries import EVAL_MODALITIES, TRAIN_QUERIES, QueryBank, QueryRef, compose, \
    evaluation_ref, KIND_MODALITIES, kind_available, modality_embeddings, unavailable_error
from ..runs import encoder_fingerprint
from ..separator import multi_query_logits

SEMANTIC_METRICS = ("semantic", "semantic_image")
"""Judge scores: ``100 cos(judge_audio(estimate), judge_text(prompt))`` and ``... judge_image(image)``."""
TABLE_METRICS = ("sdr", "sir", "sar", "si_sdri", *SEMANTIC_METRICS)
"""Columns of :func:`results_table`."""


# --------------------------------------------------------------------------- data
@dataclass
class EvalSet:
    """Seeded evaluation mixtures of one split, loaded once and shared by every system.

    Attributes:
        split: the split name.
        mixtures: ``(N, samples)`` float32; sources: ``(N, n_src, samples)`` (target first).
        refs: the target's :class:`~mars_core.queries.QueryRef` per item (audio = other clips).
        images: the query image of each item, ``(H, W, 3)`` uint8 (for the judge's image score);
            ``None`` items on a build without images.
        meta: per-item ``index, target, interferer, family, target_clip, interferer_clip,
            query_text, query_image_id``.
    """

    split: str
    mixtures: torch.Tensor
    sources: torch.Tensor
    refs: list[QueryRef]
    images: list[np.ndarray]
    meta: pd.DataFrame

    def __len__(self) -> int:
        return int(self.mixtures.shape[0])

    @property
    def unavailable(self) -> dict[str, str]:
        """``{modality: why}`` of the query modalities the build records as unavailable (``{}`` normally)."""
        return dict(self.refs[0].unavailable) if self.refs else {}


def load_eval_set(profile: str | Profile | None = None, split: str = "test", n_items: int | None = None, *,
                  hard_pairs: bool = False, build_dir: str | Path | None = None) -> EvalSet:
    """The first ``n_items`` (default: the profile's ``n_test_mixtures`` / ``n_val_mixtures``)
    mixtures of ``split`` with gain 1 and centred crops (the paper's evaluation protocol)."""
    ds = MixtureDataset(split, profile, n_items=n_items, hard_pairs=hard_pairs, random_gain=False,
                        random_crop=False, build_dir=build_dir)
    items = [ds[i] for i in range(len(ds))]
    batch = collate(items)
    meta = pd.DataFrame({
        "index": [it["index"] for it in items],
        "target": [it["classes"][0] for it in items],
        "interferer": [it["classes"][1] for it in items],
        "family": [it["family"] for it in items],
        "target_clip": [it["clip_ids"][0] for it in items],
        "interferer_clip": [it["clip_ids"][1] for it in items],
        "query_text": [it["query_text"] for it in items],
        "query_image_id": [it["query_image_id"] for it in items],
    })
    return EvalSet(split, batch["mixture"], batch["sources"], [evaluation_ref(ds, it) for it in items],
                   [it["query_image"] for it in items], meta)


def eval_queries(bank: QueryBank, eval_set: EvalSet, modalities: Sequence[str] = EVAL_MODALITIES) -> torch.Tensor:
    """The target's query of every kind in ``modalities``. Shape: ``(N, len(modalities), D)``."""
    emb = modality_embeddings(bank, eval_set.refs)
    return torch.stack([compose(emb, m) for m in modalities], dim=1)


# --------------------------------------------------------------------------- separation
def check_queries(queries, n_mixtures: int, name: str = "queries") -> torch.Tensor:
    """``queries`` as a float tensor ``(N, K, D)`` of finite query embeddings, or a clear error.

    Shape:
        queries: ``(N, K, D)`` (numpy or torch); returns a tensor (no copy for a tensor).
    """
    if queries is None:
        raise ValueError(f"{name} is None: pass query embeddings (N, K, D), one row per mixture and query kind; "
                         f"the kinds are {', '.join(TRAIN_QUERIES)} (mars_core.queries.compose, or "
                         f"mars_core.evaluation.evaluate.eval_queries for an eval set)")
    if isinstance(queries, np.ndarray):
        queries = torch.from_numpy(queries)
    if not isinstance(queries, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (N, K, D) of query embeddings, got {type(queries).__name__}")
    if queries.dim() != 3 or queries.shape[0] != n_mixtures or 0 in queries.shape:
        raise ValueError(f"{name} must be (N={n_mixtures}, K, D) query embeddings, got shape {tuple(queries.shape)}"
                         + ("; one query per mixture is queries[:, None]" if queries.dim() == 2 else ""))
    if not queries.is_floating_point():
        raise ValueError(f"{name} must be float embeddings, got dtype {queries.dtype}")
    if not bool(torch.isfinite(queries).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return queries


@torch.no_grad()
def separate(model: torch.nn.Module, fe: FrontEnd, mixtures: torch.Tensor, queries: torch.Tensor,
             batch_size: int = 16, progress: bool = False, *,
             sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic-mask estimates for ``K`` queries per mixture (one U-Net pass per mixture).

    The mixtures go through :meth:`FrontEnd.check_input` first (:func:`mars_core.inputs.validate_audio`):
    float, finite, mono ``(N, samples)``, exactly one segment of ``fe.cfg.segment_samples`` samples and,
    when ``sample_rate`` is given, the front end's rate; anything else raises a ``ValueError`` that
    says what to do (resample with :func:`mars_core.inputs.resample_to`, downmix, cut or pad).

    Args:
        sample_rate: the mixtures' rate in Hz, checked against ``fe.cfg.sample_rate`` when given.

    Shape:
        mixtures: ``(N, samples)`` numpy or torch; queries: ``(N, K, D)``.
        returns ``(estimates (N, K, samples), masks P (N, K, F, T))``.
    """
    mixtures = fe.check_input(mixtures, "mixtures", sample_rate=sample_rate, ndim=2)
    if isinstance(mixtures, np.ndarray):
        mixtures = torch.from_numpy(mixtures)
    queries = check_queries(queries, int(mixtures.shape[0]))
    was = model.training
    model.eval()
    est, masks = [], []
    quiet = {} if progress else {"disable": True}
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    for lo in tqdm(range(0, mixtures.shape[0], batch_size), desc="separate", **quiet):
        mix = mixtures[lo : lo + batch_size].to(device, dtype)
        q = queries[lo : lo + batch_size].to(device, dtype)
        p = torch.sigmoid(multi_query_logits(model, fe.features(mix), q))
        est.append(fe.reconstruct(p, mix.unsqueeze(1)).cpu())
        masks.append(p.cpu())
    model.train(was)
    return torch.cat(est), torch.cat(masks)


# --------------------------------------------------------------------------- judge scores
class JudgeScorer:
    """Semantic scores of waveforms against each item's prompt and query image, judge embeddings cached.

    Shape:
        :meth:`__call__` takes ``waveforms (N, samples)`` aligned with ``eval_set`` and returns
        ``{"semantic": (N,), "semantic_image": (N,)}`` numpy arrays (NaN for silent waveforms).
    """

    def __init__(self, judge, eval_set: EvalSet, sample_rate: int):
        self.judge, self.sample_rate = judge, int(sample_rate)
        with torch.no_grad(), judge.eval_mode():
            self.text = judge.embed_text(list(eval_set.meta["query_text"]))
            # a build without images, or a judge without an image tower (CLAP): NaN image score
            has_images = hasattr(judge, "embed_image") and all(im is not None for im in eval_set.images)
            self.image = judge.embed_image(list(eval_set.images)) if has_images else None

    def scores(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores of the judge's audio embeddings ``a (N, D)``; subclasses add their own."""
        image = (semantic_score(a, self.image) if self.image is not None
                 else torch.full((a.shape[0],), float("nan"), dtype=a.dtype, device=a.device))
        return {"semantic": semantic_score(a, self.text), "semantic_image": image}

    @torch.no_grad()
    def __call__(self, waveforms: torch.Tensor) -> dict[str, np.ndarray]:
        wav = torch.as_tensor(validate_audio(waveforms, "waveforms", ndim=2, layout="(N, samples)")).float()
        silent = is_silent(wav)
        with self.judge.eval_mode():
            a = self.judge.embed_audio(wav, self.sample_rate, resample=self.sample_rate != self.judge.sample_rate)
        return {k: np.where(silent, np.nan, v.cpu().numpy().astype(np.float64)) for k, v in self.scores(a).items()}


# --------------------------------------------------------------------------- tables
def one_blas_thread():
    """Context limiting BLAS to one thread (BSS Eval's solves run 5-10x faster that way on a busy
    2-core machine, where multi-threaded OpenBLAS spins against other processes)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional speed-up
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


Estimates = dict[tuple[str, str], torch.Tensor]
"""Target estimates keyed by ``(system, modality)``, each ``(N, samples)`` aligned with an eval set."""


def score_estimates(estimates: Estimates, eval_set: EvalSet, scorer: JudgeScorer | None = None) -> pd.DataFrame:
    """Per-item metrics of every ``(system, modality)`` estimate in one BSS Eval pass, plus judge scores.

    One :func:`~mars_core.metrics.evaluate_many` call scores all estimates (the sources' projections
    are shared); rows come in the order of ``estimates``, items in order within each. Columns: those
    of :func:`~mars_core.metrics.evaluate_batch`, the eval set's metadata, ``system``, ``modality``,
    and ``semantic``/``semantic_image`` (NaN on skipped rows) when a scorer is given.

    Shape:
        each estimate ``(N, samples)``, ``N = len(eval_set)``.
    """
    keys = list(estimates)
    with one_blas_thread():
        df = evaluate_many(dict(enumerate(estimates.values())), eval_set.sources, eval_set.mixtures, target_index=0,
                           metadata=eval_set.meta)
    df = df.assign(system=[keys[k][0] for k in df["estimate"]], modality=[keys[k][1] for k in df["estimate"]])
    df = df.drop(columns="estimate")
    if scorer is not None:
        scores = [scorer(est) for est in estimates.values()]
        for k in scores[0]:
            df[k] = np.where(df["skipped"], np.nan, np.concatenate([sc[k] for sc in scores]))
    return df


def separator_estimates(model: torch.nn.Module, profile: str | Profile | None, bank: QueryBank, eval_set: EvalSet, *,
                        system: str = "baseline", modalities: Sequence[str] = EVAL_MODALITIES, batch_size: int = 16,
                        progress: bool = True) -> Estimates:
    """``model``'s estimate for every query kind: ``{(system, modality): (N, samples)}`` (views of one
    :func:`separate` output). Kinds the eval set cannot make (an image query on a build without
    images, :attr:`EvalSet.unavailable`) are left out; if that leaves none, the error names why.

    Raises:
        ModalityUnavailableError: every kind asked for is unavailable on this eval set.
    """
    fe = FrontEnd(get_profile(profile).audio)
    kinds = [m for m in modalities if kind_available(m, eval_set.unavailable)]
    if not kinds:
        raise unavailable_error(modalities[0], eval_set.unavailable)
    est, _ = separate(model, fe, eval_set.mixtures, eval_queries(bank, eval_set, kinds), batch_size, progress)
    return {(system, m): est[:, k] for k, m in enumerate(kinds)}


def unavailable_rows(eval_set: EvalSet, systems: Sequence[str], modalities: Sequence[str]) -> pd.DataFrame:
    """Rows for the query kinds the eval set cannot make: NaN metrics, ``skipped=True`` and a
    ``skip_reason`` naming the build, one per (system, kind, item); an empty frame if there are none."""
    un = eval_set.unavailable
    frames = [eval_set.meta.assign(item=np.arange(len(eval_set)), skipped=True, system=name, modality=m,
                                   skip_reason=f"{m} query unavailable: "
                                   + "; ".join(un[x] for x in KIND_MODALITIES[m] if x in un))
              for name in systems for m in modalities if not kind_available(m, un)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def reference_estimates(profile: str | Profile | None, eval_set: EvalSet) -> Estimates:
    """The query-blind systems of :func:`evaluate_references`, keyed ``(name, "-")``."""
    fe = FrontEnd(get_profile(profile).audio)
    mix, src = eval_set.mixtures, eval_set.sources
    systems = {"mixture": mix, "mixture / 2": 0.5 * mix}
    for kind in ("ibm", "irm"):
        systems[f"oracle {kind.upper()}"] = fe.oracle_separate(src.double(), mix.double(), kind, "warped")[:, 0].float()
    return {(name, "-"): est for name, est in systems.items()}


def clean_target_rows(eval_set: EvalSet, scorer: JudgeScorer) -> pd.DataFrame:
    """The judge's scores of the clean target itself (system ``clean target``): one row per item, with
    ``item``, the metadata and ``skipped=False``; its BSS Eval metrics would be infinite and are absent."""
    rows = eval_set.meta.assign(item=np.arange(len(eval_set)), system="clean target", modality="-", skipped=False)
    return rows.assign(**scorer(eval_set.sources[:, 0]))


def evaluate_systems(profile: str | Profile | None, eval_set: EvalSet,
                     separators: Mapping[str, tuple[torch.nn.Module, QueryBank]], *, references: bool = True,
                     scorer: JudgeScorer | None = None, modalities: Sequence[str] = EVAL_MODALITIES,
                     batch_size: int = 16, progress: bool = True) -> pd.DataFrame:
    """The reference systems (optional) and every separator x query on one eval set, in one BSS Eval pass.

    Every estimate is made first (``separators``: ``{system: (model, query bank)}``), then all are
    scored by one :func:`score_estimates` call. Rows: the reference systems, the ``clean target``
    (with a scorer), then each separator's queries in order; items in order within each. A query
    kind the eval set cannot make keeps its rows, skipped with the reason (:func:`unavailable_rows`).

    Raises:
        ValueError: nothing to evaluate (no references and no separator).
        ModalityUnavailableError: no kind in ``modalities`` can be made on this eval set.
    """
    estimates = reference_estimates(profile, eval_set) if references else {}
    n_ref = len(estimates) * len(eval_set)
    for name, (model, bank) in separators.items():
        estimates.update(separator_estimates(model, profile, bank, eval_set, system=name, modalities=modalities,
                                             batch_size=batch_size, progress=progress))
    if not estimates:
        raise ValueError("nothing to evaluate: no reference systems and no separator")
    df = score_estimates(estimates, eval_set, scorer)
    if references and scorer is not None:
        df = pd.concat([df.iloc[:n_ref], clean_target_rows(eval_set, scorer), df.iloc[n_ref:]], ignore_index=True)
    na = unavailable_rows(eval_set, list(separators), modalities)
    if len(na):  # back into (system, query) order, after the reference rows
        df = pd.concat([df, na], ignore_index=True)
        order = {key: i for i, key in enumerate((s, m) for s in separators for m in modalities)}
        rank = np.array([order.get(key, -1) for key in zip(df["system"], df["modality"])])
        df = df.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)
    return df


def evaluate_references(profile: str | Profile | None, eval_set: EvalSet, *, scorer: JudgeScorer | None = None
                        ) -> pd.DataFrame:
    """The same table for systems that ignore the query: ``mixture`` (no separation),
    ``mixture / 2`` (a constant mask of 0.5), oracle ``IBM`` and ``IRM`` on the warped grid (the
    ceiling of a mask separator), and, for the semantic score only, the ``clean target`` (its
    SDR would be infinite and is left NaN; its ``item`` column numbers the items like the others').

    ``mixture / 2`` is there because BSS Eval v4's SDR is not scale-invariant: for a target and
    an interferer of equal power, ``c x`` has SDR ``-10 log10((1 - c)^2 + c^2)``, largest (+3 dB over
    the mixture) at ``c = 1/2``. A separator must beat this query-blind estimate, not only the mixture.
    """
    return evaluate_systems(profile, eval_set, {}, scorer=scorer)


def evaluate_all(model: torch.nn.Module, profile: str | Profile | None, bank: QueryBank, *, split: str = "test",
                 n_items: int | None = None, judge=None, system: str = "baseline", references: bool = True,
                 hard_pairs: bool = False, progress: bool = True) -> pd.DataFrame:
    """Reference systems (optional) and ``model`` per query modality on ``split``: one per-item frame.

    Raises:
        ValueError: ``judge`` is the query encoder (same fingerprint as the bank's).
    """
    prof = get_profile(profile)
    eval_set = load_eval_set(prof, split, n_items, hard_pairs=hard_pairs)
    scorer = None
    if judge is not None:
        if encoder_fingerprint(judge) == bank.encoder:
            raise ValueError("the judge must be another encoder than the query/reward encoder (docs/method.md section 8)")
        scorer = JudgeScorer(judge, eval_set, prof.audio.sample_rate)
    df = evaluate_systems(prof, eval_set, {system: (model, bank)}, references=references, scorer=scorer,
                          progress=progress)
    return df.assign(split=split)


def results_table(df: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """:func:`~mars_core.metrics.summarize` by ``(system, modality)`` over the metrics present:
    one row per (system, modality, metric) with mean, sem, median, n, n_skipped."""
    present = [m for m in metrics if m in df.columns and df[m].notna().any()]
    by = [c for c in ("split", "system", "modality") if c in df.columns]
    with np.errstate(invalid="ignore"):  # the mixture's SAR is +inf (no artefacts): its sem is NaN
        out = summarize(df, by=by, metrics=present)
    rank = {k: i for i, k in enumerate([*dict.fromkeys(df["system"]), "-", *EVAL_MODALITIES, *present])}
    key = lambda col: col.map(lambda v: rank.get(v, len(rank)))  # noqa: E731
    return out.sort_values(by=[c for c in ("split", "system", "modality", "metric") if c in out.columns],
                           key=lambda col: col if col.name == "split" else key(col), kind="stable").reset_index(drop=True)


def compact_table(summary: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``mean ± sem`` strings, one row per (system, modality), one column per metric; ``n/a`` where no
    item was scored (``n == 0``: e.g. the image query on a build without images)."""
    n = summary["n"] if "n" in summary else pd.Series(1, index=summary.index)
    s = summary.assign(value=["n/a" if k == 0 else f"{m:.{digits}f} ± {e:.{digits}f}" if np.isfinite(e)
                              else f"{m:.{digits}f}" for m, e, k in zip(summary["mean"], summary["sem"], n)])
    keys = [c for c in ("split", "system", "modality") if c in s.columns]
    wide = s.pivot_table(index=keys, columns="metric", values="value", aggfunc="first", sort=False)
    cols = [m for m in TABLE_METRICS if m in wide.columns] + [c for c in wide.columns if c not in TABLE_METRICS]
    return wide[cols].reset_index().rename_axis(columns=None)
