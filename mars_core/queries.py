"""Query embeddings: a disk cache, the query of every source, Query-Mixup and the omni query.

The separator is conditioned on an embedding ``q`` from a **frozen** tri-modal encoder
(docs/method.md sections 3 and 8). Running that encoder at every training step would cost
more than the separator itself, so every query the benchmark can ask is embedded once:

* text: every prompt of ``prompts.csv`` (training and held-out templates);
* image: every query image of every split;
* audio: every clip of every split (the whole stored clip; an audio query is
  "another clip of the same class").

The result, a :class:`QueryBank`, is cached on disk under a name made of the
**encoder's fingerprint** (sha256 of its class, sample rate and weights) and the
**manifest hash** (sha256 of the benchmark's manifest CSVs): retraining the encoder or
rebuilding the data gives another file, never a stale one.

Queries (all embeddings unit-norm first, ``n(x) = x / |x|``):

* Query-Mixup (OmniSep, training): ``w_v, w_t, w_a ~ U(0, 1)``, ``w <- w / sum(w)``,
  ``q = w_v n(e_v) + w_t n(e_t) + w_a n(e_a)`` (not renormalised);
* omni (evaluation): ``q = n((2 e_v + 2 e_t + e_a) / 5)``;
* audio at evaluation: ``n(mean_i n(e_i))`` over the *other* clips of the target's class.

**A modality the data does not have.** A build may record that it has no images (an imported
ESC-50: :func:`mars_core.data.mixing.unavailable_modalities`). Its :class:`QueryRef` objects then
say so (``unavailable``), :func:`modality_embeddings` passes that on, and :func:`compose`:

* refuses an ``image`` query with :class:`ModalityUnavailableError`, naming the build and the
  modality (never a made-up image);
* makes the omni query from the modalities present, with their omni weights:
  ``n((2 e_t + e_a) / 3)`` without images (= :func:`present_omni`);
* draws Query-Mixup over the modalities present: the weights of a missing one are set to 0 and
  the others renormalised to sum 1.

An embedding that is missing *without* that record (a caller's mistake) is still an error.

Every source of a mixture is a training item with its own query (K = 2 items per
mixture). :class:`~mars_core.data.mixing.MixtureDataset` draws query material for the
target only; :func:`item_queries` draws the interferer's from the dataset's own tables
with a generator seeded by the item, so it is a pure function of ``(seed, split, index)``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .config import Profile, get_profile
from .data.manifest import SPLITS, benchmark_dir, data_root, read_table
from .data.verify import read_clip
from .runs import manifest_hash
from .seeding import item_rng

MODALITIES = ("image", "text", "audio")
"""Query modalities in the order of the Query-Mixup weights ``(w_v, w_t, w_a)``."""
EVAL_MODALITIES = ("text", "image", "audio", "omni")
"""Query kinds of the evaluation tables (docs/method.md section 8)."""
TRAIN_QUERIES = ("mixup", "text", "image", "audio", "omni")
"""Allowed values of ``SupervisedConfig.query``."""
OMNI_WEIGHTS = (2.0, 2.0, 1.0)
"""Weights of (image, text, audio) in the omni query ``n((2 e_v + 2 e_t + e_a) / 5)``."""
BANK_KIND = "query_bank"


class ModalityUnavailableError(ValueError):
    """A query kind needs a modality the data records as unavailable (the message names the build and modality)."""


# --------------------------------------------------------------------------- fingerprints
def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 (hex) of an encoder's identity: class name, native sample rate, and every
    state-dict entry (name, dtype, shape, bytes). Equal weights give equal fingerprints."""
    h = hashlib.sha256()
    h.update(type(encoder).__name__.encode())
    h.update(str(getattr(encoder, "sample_rate", "")).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- the bank
@dataclass
class QueryBank:
    """Unit-norm embeddings of every prompt, query image and audio clip of a build.

    Attributes:
        ids: per modality (``"text"``, ``"image"``, ``"audio"``) the row keys: the
            prompt text, the ``image_id``, the ``clip_id``.
        classes: per modality the class of each row.
        embeddings: per modality a float32 ``(rows, D)`` tensor of unit rows.
        encoder: fingerprint of the encoder that produced them.
        manifest: :func:`manifest_hash` of the build they describe.
    """

    ids: dict[str, list[str]]
    classes: dict[str, list[str]]
    embeddings: dict[str, torch.Tensor]
    encoder: str
    manifest: str
    _row: dict[str, dict[str, int]] = field(init=False, repr=False)

    def __post_init__(self):
        self._row = {}
        for m in MODALITIES:
            if len(self.ids[m]) != self.embeddings[m].shape[0] or len(self.ids[m]) != len(self.classes[m]):
                raise ValueError(f"{m}: {len(self.ids[m])} ids, {len(self.classes[m])} classes, "
                                 f"{self.embeddings[m].shape[0]} embeddings")
            rows = {k: i for i, k in enumerate(self.ids[m])}
            if len(rows) != len(self.ids[m]):
                raise ValueError(f"{m}: duplicated ids in the bank")
            self._row[m] = rows

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return int(self.embeddings["text"].shape[1])

    @property
    def key(self) -> str:
        """``<encoder[:16]>-<manifest[:16]>``: names the cache file and keys separator runs."""
        return f"{self.encoder[:16]}-{self.manifest[:16]}"

    def get(self, modality: str, keys: Sequence[str]) -> torch.Tensor:
        """Rows for ``keys``. Shape: returns ``(len(keys), D)``.

        Raises:
            KeyError: naming the first key the bank does not hold.
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        rows = self._row[modality]
        missing = [k for k in keys if k not in rows]
        if missing:
            raise KeyError(f"{modality} query {missing[0]!r} is not in the bank (built for another manifest?)")
        return self.embeddings[modality][torch.as_tensor([rows[k] for k in keys], dtype=torch.long)]

    def mean(self, modality: str, groups: Sequence[Sequence[str]]) -> torch.Tensor:
        """``n(mean_i e_i)`` over each group of keys (the evaluation audio query). Shape ``(len(groups), D)``."""
        if any(len(g) == 0 for g in groups):
            raise ValueError("every group needs at least one key")
        return F.normalize(torch.stack([self.get(modality, list(g)).mean(0) for g in groups]), dim=-1)

    def to_payload(self) -> dict[str, Any]:
        return {"ids": self.ids, "classes": self.classes, "embeddings": self.embeddings,
                "encoder": self.encoder, "manifest": self.manifest}


def _read_audio(path: Path) -> np.ndarray:
    return read_clip(path)  # checked against the manifest (length, rate, sha256), mono float32


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _embed_in_chunks(fn, items: list, chunk: int, desc: str, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    quiet = {} if progress else {"disable": True}
    outs = [fn(items[i : i + chunk]) for i in tqdm(range(0, len(items), chunk), desc=desc, **quiet)]
    return torch.cat(outs).float().cpu() if outs else torch.zeros(0, 0)


@torch.no_grad()
def build_query_bank(encoder, build_dir: str | os.PathLike, sample_rate: int, *, splits: Sequence[str] = SPLITS,
                     chunk: int = 32, progress: bool = True) -> QueryBank:
    """Embed every prompt, and every image and audio clip of ``splits``, with a frozen encoder.

    Args:
        encoder: a :class:`~mars_core.encoders.base.TriModalEncoder` (put in eval mode here).
        build_dir: the benchmark build.
        sample_rate: rate of the build's audio; resampled to the encoder's native rate if it differs.
        splits: splits whose images and clips are embedded (splits absent from the build are skipped).
    """
    build_dir = Path(build_dir)
    digest = manifest_hash(build_dir)
    prompts = read_table(build_dir, "prompts")
    ids = {"text": list(prompts["text"])}
    classes = {"text": list(prompts["class_name"])}
    paths: dict[str, list[Path]] = {"image": [], "audio": []}
    for m, kind, id_col in (("image", "images", "image_id"), ("audio", "audio", "clip_id")):
        ids[m], classes[m] = [], []
        for s in splits:
            if not (build_dir / kind / f"{s}.csv").exists():
                continue
            table = read_table(build_dir, kind, s)
            ids[m] += list(table[id_col])
            classes[m] += list(table["class_name"])
            paths[m] += [build_dir / p for p in table["path"]]
    resample = int(sample_rate) != int(encoder.sample_rate)
    with encoder.eval_mode():
        emb = {
            "text": _embed_in_chunks(lambda t: encoder.embed_text(t), ids["text"], 256, "embed text", progress),
            "image": _embed_in_chunks(lambda p: encoder.embed_image([_read_image(x) for x in p]), paths["image"],
                                      chunk, "embed images", progress),
            "audio": _embed_in_chunks(
                lambda p: encoder.embed_audio([_read_audio(x) for x in p], sample_rate, resample=resample),
                paths["audio"], chunk, "embed audio", progress),
        }
    return QueryBank(ids, classes, {m: F.normalize(e, dim=-1) for m, e in emb.items()},
                     encoder_fingerprint(encoder), digest)


def query_cache_dir() -> Path:
    """``$MARS_DATA/cache/queries``."""
    return data_root() / "cache" / "queries"


def load_or_build_query_bank(encoder, profile: str | Profile | None = None, *, build_dir: str | os.PathLike | None = None,
                             cache_dir: str | os.PathLike | None = None, progress: bool = True,
                             rebuild: bool = False) -> QueryBank:
    """The cached :class:`QueryBank` of ``encoder`` on a build, embedding it on the first call.

    The cache file is ``<cache_dir>/<profile>/<encoder fp[:16]>-<manifest hash[:16]>.pt``
    (default ``cache_dir``: :func:`query_cache_dir`), written atomically. ``rebuild=True``
    (``--retrain`` of the training commands) embeds again and overwrites it.

    Raises:
        CheckpointError: the cache file is unreadable (named, with the command that rebuilds it).
    """
    prof = get_profile(profile)
    build_dir = Path(build_dir) if build_dir is not None else benchmark_dir(prof.name)
    key = f"{encoder_fingerprint(encoder)[:16]}-{manifest_hash(build_dir)[:16]}"
    path = Path(cache_dir or query_cache_dir()) / prof.name / f"{key}.pt"
    if path.exists() and not rebuild:
        todo = (f"delete it (rm {shlex.quote(str(path))}): the query bank is embedded again on next use; or pass "
                f"rebuild=True (command line: python -m mars_core.supervised --profile {prof.name} --retrain)")
        blob = load_checkpoint(path, rebuild=todo)
        if blob.get("kind") == BANK_KIND:
            try:
                bank = QueryBank(**blob["bank"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CheckpointError(f"{path} is not a readable query bank ({type(exc).__name__}: {exc}). "
                                      f"To rebuild it: {todo}", path) from exc
            if bank.key == key:
                return bank
    bank = build_query_bank(encoder, build_dir, prof.audio.sample_rate, progress=progress)
    save_checkpoint(path, with_rng=False, kind=BANK_KIND, bank=bank.to_payload())
    return bank


# --------------------------------------------------------------------------- per-item queries
@dataclass(frozen=True)
class QueryRef:
    """The query material of one item (one source of one mixture).

    ``audio_ids`` holds one clip in training; at evaluation, every other clip of the class
    in the split (the audio query is then the normalised mean of their embeddings).
    """

    class_name: str
    text: str
    image_id: str | None
    audio_ids: tuple[str, ...]
    unavailable: tuple[tuple[str, str], ...] = ()
    """``(modality, why)`` pairs the data records as unavailable (``image`` on a build without images)."""


def _pick(rng: np.random.Generator, table: dict[str, list], cls: str, what: str, split: str):
    options = table.get(cls)
    if not options:
        raise ValueError(f"class {cls!r} has no {what} in split {split!r}")
    return options[int(rng.integers(len(options)))]


def item_queries(ds, item: dict[str, Any]) -> list[QueryRef]:
    """Query material for every source of a :class:`MixtureDataset` item, target first.

    The target's comes from the item itself. For source ``k >= 1`` a prompt, an image and
    an audio clip of ``classes[k]`` (never that source's own clip) are drawn from the
    dataset's tables with ``item_rng(ds.seed, ds.split, pairing, index, "query", k)``. On a build
    without images (``ds.unavailable``) no image is drawn and the refs say why.
    """
    missing = _unavailable_of(ds)
    refs = [QueryRef(item["classes"][0], item["query_text"], item["query_image_id"] or None,
                     (item["query_audio_clip_id"],), missing)]
    pairing = "hard" if ds.hard_pairs else "random"
    for k in range(1, len(item["classes"])):
        cls = item["classes"][k]
        rng = item_rng(ds.seed, ds.split, pairing, int(item["index"]), "query", k)
        clips = [c.clip_id for c in ds.clips[cls] if c.clip_id != item["clip_ids"][k]]
        if not clips:
            raise ValueError(f"class {cls!r} has no second clip in split {ds.split!r} for an audio query")
        audio = clips[int(rng.integers(len(clips)))]
        _, text = _pick(rng, ds.prompts, cls, "prompt", ds.split)
        image_id = None if "image" in dict(missing) else str(_pick(rng, ds.images, cls, "image", ds.split)[0])
        refs.append(QueryRef(cls, text, image_id, (audio,), missing))
    return refs


def _unavailable_of(ds) -> tuple[tuple[str, str], ...]:
    """The dataset's unavailable modalities as ``QueryRef.unavailable`` pairs (``()`` for a plain dataset)."""
    return tuple(sorted((getattr(ds, "unavailable", None) or {}).items()))


def evaluation_ref(ds, item: dict[str, Any]) -> QueryRef:
    """The target's evaluation query: the item's prompt and image, and as audio every
    clip of the target's class in the split except the target clip (docs/method.md section 8)."""
    cls = item["classes"][0]
    others = tuple(c.clip_id for c in ds.clips[cls] if c.clip_id != item["clip_ids"][0])
    return QueryRef(cls, item["query_text"], item["query_image_id"] or None, others, _unavailable_of(ds))


_REF_FIELDS = {"image": "image_id", "text": "text", "audio": "audio_ids"}


class ModalityEmbeddings(dict):
    """``{modality: (n, D) tensor}`` (a plain dict to every reader) plus ``unavailable``: ``{modality: why}``
    of the modalities that are absent because the data records them as unavailable."""

    def __init__(self, embeddings: dict[str, torch.Tensor], unavailable: dict[str, str] | None = None):
        super().__init__(embeddings)
        self.unavailable = dict(unavailable or {})


def modality_embeddings(bank: QueryBank, refs: Sequence[QueryRef]) -> ModalityEmbeddings:
    """Unit-norm ``image``, ``text`` and ``audio`` embeddings of each ref. Each ``(len(refs), D)``.

    A modality that no ref has (``image_id``/``text`` ``None`` or empty, ``audio_ids`` empty) is left
    out of the dict, so :func:`compose` can name it if a query kind needs it; when every ref records
    it as unavailable (``QueryRef.unavailable``), the result's ``unavailable`` carries the reason.

    Raises:
        TypeError: a ref is not a :class:`QueryRef` (e.g. ``None``).
        ValueError: no refs, or some refs have a modality and others do not (naming the first without).
    """
    if refs is None or len(refs) == 0:
        raise ValueError("refs is empty: pass one QueryRef(class_name, text, image_id, audio_ids) per item")
    for i, r in enumerate(refs):
        if not isinstance(r, QueryRef):
            raise TypeError(f"refs[{i}] is {type(r).__name__}, not a QueryRef(class_name, text, image_id, audio_ids)")
    out, unavailable = {}, {}
    for m in MODALITIES:
        has = [bool(getattr(r, _REF_FIELDS[m])) for r in refs]
        if not any(has):
            why = [dict(r.unavailable).get(m) for r in refs]
            if all(why):
                unavailable[m] = why[0]
            continue
        if not all(has):
            i = has.index(False)
            raise ValueError(f"refs[{i}] has no {m} ({_REF_FIELDS[m]}={getattr(refs[i], _REF_FIELDS[m])!r}) but "
                             f"other refs have one: give every item its {m}, or none")
        if m == "audio":
            out[m] = bank.mean(m, [r.audio_ids for r in refs])
        else:
            out[m] = bank.get(m, [getattr(r, _REF_FIELDS[m]) for r in refs])
    return ModalityEmbeddings({m: out[m] for m in ("image", "text", "audio") if m in out}, unavailable)


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
