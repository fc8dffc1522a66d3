"""Query embeddings: the query bank and its disk cache, and the query material of every source.

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

Query-Mixup, the omni query and :func:`compose` (a query of any kind from the modality embeddings,
also on data without a modality) live in :mod:`mars_core.query_mixup` and are re-exported here;
the encoder's fingerprint is :func:`mars_core.runs.encoder_fingerprint`.

Every source of a mixture is a training item with its own query (K = 2 items per
mixture). :class:`~mars_core.data.mixing.MixtureDataset` draws query material for the
target only; :func:`item_queries` draws the interferer's from the dataset's own tables
with a generator seeded by the item, so it is a pure function of ``(seed, split, index)``.
"""

from __future__ import annotations

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
from .data.verify import read_benchmark_image, read_clip
from .query_mixup import (EVAL_MODALITIES, KIND_MODALITIES, MEAN_KINDS, MODALITIES, OMNI_WEIGHTS,  # noqa: F401
                          TRAIN_QUERIES, ModalityUnavailableError, compose, kind_available, mixup_weights,
                          omni_query, present_omni, query_mixup, unavailable_error)
from .precision import autocast_dtype
from .runs import encoder_fingerprint, manifest_hash
from .seeding import item_rng

BANK_KIND = "query_bank"


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
        precision: ``"fp32"``, or ``"bf16"`` when the encoder's forward passes ran under bf16 autocast
            (:mod:`mars_core.precision`): such a bank differs in its last bits, so it has its own key.
    """

    ids: dict[str, list[str]]
    classes: dict[str, list[str]]
    embeddings: dict[str, torch.Tensor]
    encoder: str
    manifest: str
    precision: str = "fp32"
    _row: dict[str, dict[str, int]] = field(init=False, repr=False)

    def __post_init__(self):
        bank_key(self.encoder, self.manifest, self.precision)  # refuses an unknown precision
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
        """``<encoder[:16]>-<manifest[:16]>`` (``-bf16`` appended for a bf16 bank): names the cache file and keys
        separator runs."""
        return bank_key(self.encoder, self.manifest, self.precision)

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
                "encoder": self.encoder, "manifest": self.manifest, "precision": self.precision}


def bank_key(encoder_fp: str, manifest: str, precision: str = "fp32") -> str:
    """The key of a bank (see :attr:`QueryBank.key`); an fp32 bank's key has no precision suffix, as before."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"bank precision {precision!r}: expected 'fp32' or 'bf16'")
    base = f"{encoder_fp[:16]}-{manifest[:16]}"
    return base if precision == "fp32" else f"{base}-{precision}"


def bank_precision(encoder) -> str:
    """``"bf16"`` when ``encoder``'s forward passes autocast to bf16 under the process's precision, else ``"fp32"``."""
    device = getattr(encoder, "device", None)
    if not isinstance(device, torch.device):
        p = next(encoder.parameters(), None) if hasattr(encoder, "parameters") else None
        device = p.device if p is not None else torch.device("cpu")
    return "fp32" if autocast_dtype(device) is None else "bf16"


def _read_audio(path: Path) -> np.ndarray:
    return read_clip(path)  # checked against the manifest (length, rate, sha256), mono float32


def _read_image(path: Path) -> np.ndarray:
    return read_benchmark_image(path)  # checked against the image manifest (sha256), RGB uint8


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
                     encoder_fingerprint(encoder), digest, bank_precision(encoder))


def query_cache_dir() -> Path:
    """``$MARS_DATA/cache/queries``."""
    return data_root() / "cache" / "queries"


def load_or_build_query_bank(encoder, profile: str | Profile | None = None, *, build_dir: str | os.PathLike | None = None,
                             cache_dir: str | os.PathLike | None = None, progress: bool = True,
                             rebuild: bool = False) -> QueryBank:
    """The cached :class:`QueryBank` of ``encoder`` on a build, embedding it on the first call.

    The cache file is ``<cache_dir>/<profile>/<encoder fp[:16]>-<manifest hash[:16]>.pt``, with ``-bf16``
    before ``.pt`` when the encoder runs under bf16 autocast (:func:`bank_precision`), so an fp32 run never
    reads a bf16 bank or the reverse (default ``cache_dir``: :func:`query_cache_dir`), written atomically. ``rebuild=True``
    (``--retrain`` of the training commands) embeds again and overwrites it.

    Raises:
        CheckpointError: the cache file is unreadable (named, with the command that rebuilds it).
    """
    prof = get_profile(profile)
    build_dir = Path(build_dir) if build_dir is not None else benchmark_dir(prof.name)
    key = bank_key(encoder_fingerprint(encoder), manifest_hash(build_dir), bank_precision(encoder))
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
