"""Mix-and-separate sampler over a built benchmark (docs/method.md section 3).

Item ``i`` of a split is a pure function of ``(seed, split, i, hard_pairs)``: its own
generator draws the target class, an interferer of a different class (of the same
acoustic family for *hard pairs*), one clip of each, the crop offsets, the gains,
and the query material of the target class (a text prompt, an image, and an audio
clip of the same class that is not the target clip). Nothing depends on iteration
order, worker count or process.

Gains: ``U(gain_low, gain_high)`` per source when ``random_gain`` (the default on
``train``), 1 otherwise (the paper's evaluation protocol); every source is then
divided by ``n_sources`` and the mixture is their exact float32 sum.

Every clip read is checked against the split's manifest (:mod:`.verify`): sample rate
and length on every read, sha256 on the first read of each file in a process. A
missing, truncated or modified clip raises ``BenchmarkFileError`` with the command that
repairs the build; it is never zero-padded or used silently.

**Builds without images.** An imported dataset may record in ``build_info.json["modalities"]``
that it has no query images (ESC-50: ``"unavailable: ESC-50 ships no images ..."``;
:func:`unavailable_modalities`). Its items then carry ``query_image=None`` and
``query_image_id=""`` and the dataset's ``unavailable`` says why; the text and audio queries work
unchanged, and :mod:`mars_core.queries` reports an image query as unavailable (naming the build)
instead of making one up. A build that does not record this still needs an image for every class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Profile, get_profile
from ..seeding import item_rng
from .manifest import SPLITS, benchmark_dir, read_table
from .verify import clip_row, read_benchmark_image, read_clip, repair_command

PROMPT_GROUP = {"train": "train", "val": "train", "test": "test", "test_timbre": "test"}
OPTIONAL_MODALITIES = ("image",)
"""Query modalities a build may record as unavailable (text and audio are what a build is made of)."""


def unavailable_modalities(build_dir: str | Path) -> dict[str, str]:
    """``{modality: why}`` for each optional query modality the build records as unavailable.

    Reads ``build_info.json["modalities"]`` (written by the importers, :mod:`mars_core.data.importers`):
    a status starting with ``unavailable`` marks the modality missing; ``why`` names the build and
    quotes the status. A build without that record (the offline benchmark) has every modality.

    Raises:
        ValueError: ``build_info.json`` exists but is not readable JSON (named, with what to do).
    """
    build_dir = Path(build_dir)
    info_path = build_dir / "build_info.json"
    if not info_path.is_file():
        return {}
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{info_path} is not readable JSON ({exc}): build or import the data again") from exc
    status = info.get("modalities") or {}
    return {m: f"{build_dir}: build_info.json records the {m} modality as {str(status[m])!r}"
            for m in OPTIONAL_MODALITIES
            if isinstance(status.get(m), str) and status[m].strip().lower().startswith("unavailable")}


@dataclass(frozen=True)
class _Clip:
    clip_id: str
    path: Path
    num_samples: int


def read_segment(path: Path, start: int, length: int, expected_sr: int) -> np.ndarray:
    """Read ``length`` mono samples from ``start`` of a benchmark clip, float32, checked against its manifest.

    Zero-padded only past the clip's length *in the manifest* (a clip shorter than a
    segment); a file that is shorter than its manifest says, or differs from it in rate
    or sha256, raises :class:`~mars_core.data.verify.BenchmarkFileError` naming the file
    and the repair command (:func:`~mars_core.data.verify.read_clip`).

    Shape:
        returns ``(length,)``.

    Raises:
        ValueError: the clip's sample rate is not ``expected_sr``.
        BenchmarkFileError: see :func:`~mars_core.data.verify.check_clip`.
    """
    row, build_dir = clip_row(path)
    if row.sample_rate != expected_sr:
        raise ValueError(f"{path}: sample rate {row.sample_rate} Hz, expected {expected_sr} Hz: build the benchmark "
                         f"of this profile (`{repair_command(build_dir)}` builds the one this clip belongs to)")
    return read_clip(path, start, length)


class MixtureDataset:
    """Seeded two-source mixtures with query material, usable as a torch ``Dataset``.

    Args:
        split: ``train``, ``val``, ``test`` or ``test_timbre``.
        profile: profile (or its name); sizes and the default seed come from it.
        n_items: dataset length; defaults to ``n_val_mixtures`` / ``n_test_mixtures``
            for evaluation splits and to ``n_sources x`` the number of train clips for train.
        hard_pairs: draw the interferer from the target's family (targets are then
            drawn only from classes that have a family partner in the split).
        random_gain: per-source gain ``U(low, high)``; default: ``split == "train"``.
        random_crop: random crop offsets; default: True (eval crops are still seeded).
        build_dir: benchmark directory (default :func:`benchmark_dir` of the profile).
        seed: default ``profile.data.seed``.
        load_images: decode the query image (set False for audio-only loops).

    Attributes:
        unavailable: ``{modality: why}`` of the query modalities the build records as unavailable
            (:func:`unavailable_modalities`; ``{}`` for the offline benchmark).

    Each item is a dict::

        mixture      (samples,) float32     sum of ``sources``
        sources      (n_sources, samples)    target first, then interferers
        classes      [target, interferer, ...]  labels: class indices (classes.csv)
        family       target's family; clip_ids; gains
        query_text   str; query_template (template id)
        query_image  (H, W, 3) uint8; query_image_id   (None and "" when the build has no images)
        query_audio  (samples,) float32; query_audio_clip_id (never the target clip)
    """

    def __init__(
        self,
        split: str,
        profile: Profile | str | None = None,
        n_items: int | None = None,
        hard_pairs: bool = False,
        random_gain: bool | None = None,
        random_crop: bool = True,
        build_dir: str | Path | None = None,
        seed: int | None = None,
        load_images: bool = True,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.profile = get_profile(profile)
        self.split = split
        self.build_dir = Path(build_dir) if build_dir is not None else benchmark_dir(self.profile.name)
        self.seed = self.profile.data.seed if seed is None else int(seed)
        self.hard_pairs = hard_pairs
        self.random_gain = (split == "train") if random_gain is None else random_gain
        self.random_crop = random_crop
        self.load_images = load_images
        self.sr = self.profile.audio.sample_rate
        self.length = self.profile.audio.segment_samples

        audio = read_table(self.build_dir, "audio", split)
        if audio.empty:
            raise ValueError(f"split {split!r} has no clips in {self.build_dir} (see build_info.json)")
        bad_sr = audio[audio["sample_rate"].astype(int) != self.sr]
        if len(bad_sr):
            raise ValueError(
                f"{self.build_dir}: clip {bad_sr.iloc[0]['clip_id']} is {bad_sr.iloc[0]['sample_rate']} Hz but profile "
                f"{self.profile.name!r} needs {self.sr} Hz: build the benchmark for this profile"
            )
        classes = read_table(self.build_dir, "classes")
        self.label_of = {c: int(i) for c, i in zip(classes["class_name"], classes["label"])}
        self.family_of = dict(zip(classes["class_name"], classes["family"]))
        self.clips: dict[str, list[_Clip]] = {}
        for row in audio.itertuples(index=False):
            self.clips.setdefault(row.class_name, []).append(
                _Clip(row.clip_id, self.build_dir / row.path, int(row.num_samples))
            )
        self.class_names = sorted(c for c, lst in self.clips.items() if len(lst) >= 2)
        if len(self.class_names) < 2:
            raise ValueError(f"split {split!r} needs >= 2 classes with >= 2 clips each (target + audio query)")

        prompts = read_table(self.build_dir, "prompts")
        group = prompts[prompts["split_group"] == PROMPT_GROUP[split]]
        self.prompts = {c: list(zip(g["template_id"], g["text"])) for c, g in group.groupby("class_name")}
        images = read_table(self.build_dir, "images", split)
        self.images = {c: list(zip(g["image_id"], g["path"])) for c, g in images.groupby("class_name")}
        self.unavailable = unavailable_modalities(self.build_dir)

        by_family: dict[str, list[str]] = {}
        for c in self.class_names:
            by_family.setdefault(self.family_of[c], []).append(c)
        self.family_members = by_family
        self.hard_targets = [c for c in self.class_names if len(by_family[self.family_of[c]]) >= 2]
        if hard_pairs and not self.hard_targets:
            raise ValueError(f"split {split!r} has no family with two classes: hard pairs are impossible")

        if n_items is None:
            n_items = {
                "train": self.profile.data.n_sources * len(audio),
                "val": self.profile.data.n_val_mixtures,
            }.get(split, self.profile.data.n_test_mixtures)
        self.n_items = int(n_items)

    def __len__(self) -> int:
        return self.n_items

    def _crop(self, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
        slack = max(clip.num_samples - self.length, 0)
        start = int(rng.integers(0, slack + 1)) if self.random_crop else slack // 2
        return read_segment(clip.path, start, self.length, self.sr)

    def pick_classes(self, rng: np.random.Generator) -> list[str]:
        """Target first, then ``n_sources - 1`` distinct interferer classes."""
        n_src = self.profile.data.n_sources
        pool = self.hard_targets if self.hard_pairs else self.class_names
        target = pool[int(rng.integers(len(pool)))]
        if self.hard_pairs:
            others = [c for c in self.family_members[self.family_of[target]] if c != target]
        else:
            others = [c for c in self.class_names if c != target]
        if len(others) < n_src - 1:
            raise ValueError(f"not enough interferer classes for target {target!r}")
        picks = rng.choice(len(others), size=n_src - 1, replace=False)
        return [target] + [others[int(i)] for i in picks]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n_items:
            raise IndexError(f"index {index} out of range for {self.n_items} items")
        d = self.profile.data
        rng = item_rng(self.seed, self.split, "hard" if self.hard_pairs else "random", int(index))
        classes = self.pick_classes(rng)
        clip_idx = [int(rng.integers(len(self.clips[c]))) for c in classes]
        clips = [self.clips[c][i] for c, i in zip(classes, clip_idx)]
        gains = rng.uniform(d.gain_low, d.gain_high, size=len(classes)) if self.random_gain else np.ones(len(classes))
        sources = np.stack([self._crop(rng, clip) for clip in clips]) * (gains / d.n_sources)[:, None].astype(np.float32)
        sources = sources.astype(np.float32)
        mixture = sources.sum(axis=0, dtype=np.float32)

        target = classes[0]
        q_choices = [i for i in range(len(self.clips[target])) if i != clip_idx[0]]
        q_clip = self.clips[target][q_choices[int(rng.integers(len(q_choices)))]]
        query_audio = self._crop(rng, q_clip)
        template_id, text = self._pick(rng, self.prompts, target, "prompt")
        if "image" in self.unavailable:  # no draw: the other draws of the item are unchanged
            image_id, image = "", None
        else:
            image_id, image_path = self._pick(rng, self.images, target, "image")
            image = self._load_image(image_path) if self.load_images else None
        return {
            "index": int(index),
            "mixture": mixture,
            "sources": sources,
            "classes": classes,
            "labels": np.array([self.label_of[c] for c in classes], dtype=np.int64),
            "family": self.family_of[target],
            "clip_ids": [c.clip_id for c in clips],
            "gains": gains.astype(np.float32),
            "query_text": text,
            "query_template": str(template_id),
            "query_image": image,
            "query_image_id": str(image_id),
            "query_audio": query_audio,
            "query_audio_clip_id": q_clip.clip_id,
        }

    def _pick(self, rng: np.random.Generator, table: dict[str, list], cls: str, what: str):
        options = table.get(cls)
        if not options:
            raise ValueError(f"class {cls!r} has no {what} in split {self.split!r} of {self.build_dir} (every class "
                             f"needs one; a build without any records it in build_info.json['modalities'])")
        return options[int(rng.integers(len(options)))]

    def _load_image(self, rel_path: str) -> np.ndarray:
        return read_benchmark_image(self.build_dir / rel_path)  # checked against images/<split>.csv (sha256)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items: arrays become torch tensors, the rest lists."""
    import torch

    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if isinstance(vals[0], np.ndarray):
            out[key] = torch.from_numpy(np.stack(vals))
        else:
            out[key] = vals
    return out
