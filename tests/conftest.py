"""Shared fixtures: a tiny hand-made benchmark (independent of the builder) and the path of the
recorded official ImageBind fixture (``tests/fixtures/imagebind``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mars_core.data.manifest import AUDIO_COLUMNS, IMAGE_COLUMNS, PROMPT_COLUMNS, sha256_file, write_csv_atomic

os.environ.setdefault("TQDM_DISABLE", "1")

IMAGEBIND_FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "imagebind"


def imagebind_fixture(name: str) -> Path:
    """One file of the recorded official ImageBind fixture (provenance: ``tests/fixtures/imagebind/README.md``)."""
    path = IMAGEBIND_FIXTURE_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the ImageBind fixture is part of the repository; restore the folder "
                    "tests/fixtures/imagebind from git", pytrace=False)
    return path

# class -> (family, tone frequency in Hz)
FAKE_CLASSES = {
    "violin": ("bowed_strings", 440.0),
    "cello": ("bowed_strings", 220.0),
    "trumpet": ("brass", 660.0),
    "dog": ("animals", 900.0),
}


def make_fake_build(root: Path, sample_rate: int = 8000, seconds: float = 2.5, clips: int = 3) -> Path:
    """Write a benchmark directory by hand: pure tones per class, flat-colour images."""
    from PIL import Image

    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    classes = [{"class_name": c, "family": f, "kind": "instrument", "label": i} for i, (c, (f, _)) in enumerate(FAKE_CLASSES.items())]
    write_csv_atomic(root / "classes.csv", classes, ["class_name", "family", "kind", "label"])
    prompts = []
    for c in FAKE_CLASSES:
        prompts += [
            {"class_name": c, "template_id": "t0", "split_group": "train", "text": f"the sound of a {c}"},
            {"class_name": c, "template_id": "t1", "split_group": "train", "text": f"a {c} playing"},
            {"class_name": c, "template_id": "t9", "split_group": "test", "text": f"listen: {c}"},
        ]
    write_csv_atomic(root / "prompts.csv", prompts, PROMPT_COLUMNS)
    for split in ("train", "val", "test", "test_timbre"):
        audio_rows, image_rows = [], []
        for ci, (c, (fam, f0)) in enumerate(FAKE_CLASSES.items()):
            for k in range(clips):
                clip_id = f"{split}-{c}-{k}"
                rel = f"audio/{split}/{c}/{clip_id}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                x = (0.5 * np.sin(2 * np.pi * f0 * (1 + 0.01 * k) * t)).astype(np.float32)
                sf.write(root / rel, x, sample_rate, subtype="FLOAT")
                audio_rows.append(dict(clip_id=clip_id, class_name=c, family=fam, source="fake", recording_id=clip_id,
                                       license="CC0", path=rel, sample_rate=sample_rate, num_samples=n,
                                       duration=seconds, sha256=sha256_file(root / rel)))
            image_id = f"{split}-{c}-img"
            rel = f"images/{split}/{c}/{image_id}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (ci * 60, 100, 200)).save(root / rel)
            image_rows.append(dict(image_id=image_id, class_name=c, style="flat", source="fake", license="CC0",
                                   path=rel, sha256=sha256_file(root / rel)))
        write_csv_atomic(root / "audio" / f"{split}.csv", audio_rows, AUDIO_COLUMNS)
        write_csv_atomic(root / "images" / f"{split}.csv", image_rows, IMAGE_COLUMNS)
    return root


@pytest.fixture(scope="session")
def fake_build(tmp_path_factory) -> Path:
    return make_fake_build(tmp_path_factory.mktemp("fake_build"))
