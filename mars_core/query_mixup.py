"""Query-Mixup, the omni query, and a query of any kind from the modality embeddings (:func:`compose`).

Queries (all embeddings unit-norm first, ``n(x) = x / |x|``):

* Query-Mixup (OmniSep, training): ``w_v, w_t, w_a ~ U(0, 1)``, ``w <- w / sum(w)``,
  ``q = w_v n(e_v) + w_t n(e_t) + w_a n(e_a)`` (not renormalised);
* omni (evaluation): ``q = n((2 e_v + 2 e_t + e_a) / 5)``;
* audio at evaluation: ``n(mean_i n(e_i))`` over the *other* clips of the target's class.

**A modality the data does not have.** A build may record that it has no images (an imported
ESC-50: :func:`mars_core.data.mixing.unavailable_modalities`). Its :class:`~mars_core.queries.QueryRef` objects then
say so (``unavailable``), :func:`~mars_core.queries.modality_embeddings` passes that on, and :func:`compose`:

* refuses an ``image`` query with :class:`ModalityUnavailableError`, naming the build and the
  modality (never a made-up image);
* makes the omni query from the modalities present, with their omni weights:
  ``n((2 e_t + e_a) / 3)`` without images (= :func:`present_omni`);
* draws Query-Mixup over the modalities present: the weights of a missing one are set to 0 and
  the others renormalised to sum 1.

An embedding that is missing *without* that record (a caller's mistake) is still an error.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

MODALITIES = ("image", "text", "audio")
"""Query modalities in the order of the Query-Mixup weights ``(w_v, w_t, w_a)``."""
EVAL_MODALITIES = ("text", "image", "audio", "omni")
"""Query kinds of the evaluation tables (docs/method.md section 8)."""
TRAIN_QUERIES = ("mixup", "text", "image", "audio", "omni")
"""Allowed values of ``SupervisedConfig.query``."""
OMNI_WEIGHTS = (2.0, 2.0, 1.0)
"""Weights of (image, text, audio) in the omni query ``n((2 e_v + 2 e_t + e_a) / 5)``."""


class ModalityUnavailableError(ValueError):
    """A query kind needs a modality the data records as unavailable (the message names the build and modality)."""


# --------------------------------------------------------------------------- composition
def mixup_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """Query-Mixup weights ``(w_v, w_t, w_a) ~ U(0, 1)^3`` normalised to sum 1. Shape ``(n, 3)``."""
    w = rng.uniform(0.0, 1.0, size=(n, 3))
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)


def query_mixup(e_image: torch.Tensor, e_text: torch.Tensor, e_audio: torch.Tensor, weights) -> torch.Tensor:
    """``q = w_v n(e_v) + w_t n(e_t) + w_a n(e_a)`` per row (not renormalised).

    Shape:
        e_image, e_text, e_audio: ``(n, D)``; weights: ``(n, 3)`` in the order (image, text, audio).
        returns ``(n, D)``.
    """
    w = torch.as_tensor(np.asarray(weights), dtype=e_text.dtype)
    if w.shape != (e_text.shape[0], 3):
        raise ValueError(f"weights must be ({e_text.shape[0]}, 3), got {tuple(w.shape)}")
    stack = torch.stack([F.normalize(e, dim=-1) for e in (e_image, e_text, e_audio)], dim=1)  # (n, 3, D)
    return (w[:, :, None] * stack).sum(1)


def omni_query(e_image: torch.Tensor, e_text: torch.Tensor, e_audio: torch.Tensor) -> torch.Tensor:
    """``n((2 e_v + 2 e_t + e_a) / 5)`` (docs/method.md section 8). Shape: ``(n, D)`` each, returns ``(n, D)``."""
    wv, wt, wa = OMNI_WEIGHTS
    return F.normalize((wv * e_image + wt * e_text + wa * e_audio) / (wv + wt + wa), dim=-1)


def present_omni(embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
    """The omni query over the modalities present: ``n(sum_m w_m e_m / sum_m w_m)`` with the omni
    weights ``w`` (image 2, text 2, audio 1) of the modalities in ``embeddings``; equal to
    :func:`omni_query` when all three are there. Shape: each ``(n, D)``, returns ``(n, D)``."""
    present = [(w, embeddings[m]) for m, w in zip(MODALITIES, OMNI_WEIGHTS) if embeddings.get(m) is not None]
    if not present:
        raise ValueError("the omni query needs at least one of the image, text and audio embeddings")
    return F.normalize(sum(w * e for w, e in present) / sum(w for w, _ in present), dim=-1)


KIND_MODALITIES = {"text": ("text",), "image": ("image",), "audio": ("audio",), "omni": MODALITIES,
                   "mixup": MODALITIES}
"""The embeddings each query kind is made of."""
MEAN_KINDS = ("omni", "mixup")
"""Kinds that mix several modalities and, on data without one of them, use the others (module docstring)."""


def kind_available(kind: str, unavailable) -> bool:
    """Whether a query of ``kind`` can be made when the modalities in ``unavailable`` are missing."""
    needed = KIND_MODALITIES[kind]
    return any(m not in unavailable for m in needed) if kind in MEAN_KINDS else all(m not in unavailable for m in needed)


def unavailable_error(kind: str, unavailable: dict[str, str]) -> ModalityUnavailableError:
    """The error for a ``kind`` query on data without one of its modalities (names the build and the modality)."""
    gone = [m for m in KIND_MODALITIES[kind] if m in unavailable]
    others = [k for k in EVAL_MODALITIES if kind_available(k, unavailable)]
    return ModalityUnavailableError(
        f"the {kind} query is unavailable on this data: no {' and no '.join(gone)} "
        f"({'; '.join(unavailable[m] for m in gone)}); ask for a {', '.join(others)} query instead")


def compose(embeddings: dict[str, torch.Tensor], kind: str, weights=None) -> torch.Tensor:
    """The query of kind ``text``, ``image``, ``audio``, ``omni`` or ``mixup`` (needs ``weights``).

    Shape:
        embeddings: :func:`modality_embeddings` output, each ``(n, D)``; returns ``(n, D)``.

    Raises:
        ValueError: an unknown (or ``None``) kind, naming the allowed ones; an embedding the kind
            needs is missing (naming it: an omni query without an image says ``image``).
        ModalityUnavailableError: the kind needs only modalities the data records as unavailable
            (``embeddings.unavailable``, e.g. an image query on ESC-50), naming the build.

    On data that records a modality as unavailable, ``omni`` and ``mixup`` use the others (module docstring).
    """
    if not isinstance(kind, str) or kind not in KIND_MODALITIES:
        raise ValueError(f"query kind must be one of {TRAIN_QUERIES}, got {kind!r}")
    if not isinstance(embeddings, dict):
        raise TypeError(f"embeddings must be a dict modality -> (n, D) tensor (modality_embeddings), "
                        f"got {type(embeddings).__name__}")
    missing = [m for m in KIND_MODALITIES[kind] if embeddings.get(m) is None]
    declared = getattr(embeddings, "unavailable", {})
    if missing and all(m in declared for m in missing):
        if not kind_available(kind, declared):
            raise unavailable_error(kind, declared)
        if kind == "omni":
            return present_omni(embeddings)
        if weights is None:
            raise ValueError("Query-Mixup needs weights (mixup_weights)")
        w = np.array(weights, dtype=np.float64, copy=True)
        w[:, [MODALITIES.index(m) for m in missing]] = 0.0
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        zeros = torch.zeros_like(next(e for e in embeddings.values() if e is not None))
        return query_mixup(*[zeros if m in missing else embeddings[m] for m in MODALITIES], w)
    if missing:
        raise ValueError(f"the {kind} query needs the {', '.join(KIND_MODALITIES[kind])} embedding(s); missing: "
                         f"{', '.join(missing)} (give the item its {' and '.join(missing)}, or ask for another kind)")
    if kind in MODALITIES:
        return F.normalize(embeddings[kind], dim=-1)
    e = [embeddings[m] for m in MODALITIES]
    if kind == "omni":
        return omni_query(*e)
    if kind == "mixup":
        if weights is None:
            raise ValueError("Query-Mixup needs weights (mixup_weights)")
        return query_mixup(*e, weights)
    raise ValueError(f"query kind must be one of {TRAIN_QUERIES}, got {kind!r}")


# --------------------------------------------------------------------------- training-query augmentation
def noisy_embeddings(emb: dict[str, torch.Tensor], rng: np.random.Generator, noise: float,
                     rows: slice | None = None, total: int | None = None) -> dict[str, torch.Tensor]:
    """``e <- n(e + s xi)`` for every row of every modality, ``s ~ U(0, noise)`` per row, ``xi ~ N(0, I / D)``
    (so ``|xi|`` is about 1 and the cosine of the result with ``e`` is about ``1 / sqrt(1 + s^2)``).

    Shape: each ``(n, D)`` -> ``(n, D)`` unit rows. ``noise = 0`` returns ``emb`` unchanged (no draw).
    With ``rows`` and ``total``, ``emb`` holds rows ``rows`` of ``total`` (one rank's share): the draws are those
    of all ``total`` rows, of which ``rows`` are used.
    """
    if noise <= 0:
        return emb
    out = copy.copy(emb)  # the same mapping type, with what it records (ModalityEmbeddings.unavailable)
    for m in sorted(emb):
        e = emb[m]
        if e is None:
            continue
        n, d = e.shape
        n, take = (n, slice(None)) if rows is None else (total, rows)
        s = torch.as_tensor(rng.uniform(0.0, noise, (n, 1))[take], dtype=e.dtype)
        xi = torch.as_tensor(rng.standard_normal((n, d))[take], dtype=e.dtype) / math.sqrt(d)
        out[m] = F.normalize(F.normalize(e, dim=-1) + s * xi, dim=-1)
    return out


def with_pure_queries(weights: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Query-Mixup weights where a share ``prob`` of the rows is made one-hot on a uniformly drawn modality.

    Shape: ``(n, 3) -> (n, 3)``. ``prob = 0`` returns ``weights`` unchanged (no draw).
    """
    if prob <= 0:
        return weights
    n = weights.shape[0]
    pure = rng.random(n) < prob
    which = rng.integers(0, weights.shape[1], n)
    out = weights.copy()
    out[pure] = np.eye(weights.shape[1])[which[pure]]
    return out
