"""Query images of the offline benchmark: augmentation and the per-split image sets.

Each class is drawn in several styles (:mod:`mars_core.data.image_sources`). Train and
val use the training styles, test and test_timbre the held-out style, so the image
query test always sees pictures the model never trained on. Every image is a base
cut-out pasted by :func:`augment` on a random background.

Determinism: image ``i`` of class ``c`` in split ``s`` uses its own generator
``numpy.random.default_rng([seed, SPLIT_CODES[s], IMAGE_CLASSES.index(c), i])`` and a
fixed (style, variant) plan, so the same seed gives byte-identical PNGs in any
process, order or subset of classes.

Which picture each image shows: images cycle through the split's styles
(image ``i`` uses style ``i % n_styles``) and, within a style, its variants. When a
training style has several variants (e.g. four dog emoji), its last one is kept for
val only, so val shows glyphs train never saw; otherwise val differs from train only
by the augmentation draws.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..atomic import write_bytes_atomic
from .image_sources import (  # noqa: F401  (re-exported: the builder calls images.*)
    IMAGE_CLASSES,
    LICENSES,
    MissingMaterialWarning,
    NoImageMaterialError,
    attribution_rows,
    clear_caches,
    available_styles,
    held_out_style,
    material_fingerprint,
    render_base,
    source_key,
    style_variants,
    train_styles,
)
from .manifest import IMAGE_COLUMNS, SPLITS

SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "test_timbre": 3}
"""Second entry of every per-image RNG seed."""
SCALE_RANGE = (0.55, 0.95)
"""Longest side of the object as a fraction of the canvas side."""
MAX_ROTATION = 25.0
"""Rotation is uniform in +-MAX_ROTATION degrees."""
MIN_CONTRAST = 0.3
"""The background's mean luminance stays at least this far from the object's."""
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --- augmentation -----------------------------------------------------------------------
def _colour_with_luminance(rng: np.random.Generator, lum: float) -> np.ndarray:
    """A random RGB colour in [0, 1] whose luminance is ``lum`` (mixing with black/white)."""
    c = rng.random(3).astype(np.float32)
    cur = float(c @ _LUMA)
    if cur < lum:
        c = c + (1.0 - c) * (lum - cur) / max(1.0 - cur, 1e-6)
    else:
        c = c * lum / max(cur, 1e-6)
    return np.clip(c, 0.0, 1.0)


def _background_luminance(rng: np.random.Generator, obj_lum: float) -> float:
    """Uniform over [0.05, 0.95] minus the band within MIN_CONTRAST of the object."""
    lo, hi = obj_lum - MIN_CONTRAST, obj_lum + MIN_CONTRAST
    parts = [(0.05, min(lo, 0.95)), (max(hi, 0.05), 0.95)]
    parts = [(a, b) for a, b in parts if b > a]
    widths = np.array([b - a for a, b in parts])
    u = rng.random() * widths.sum()
    k = 0 if len(parts) == 1 or u < widths[0] else 1
    return float(parts[k][0] + (u - (widths[0] if k else 0.0)))


def make_background(rng: np.random.Generator, size: int, lum: float) -> np.ndarray:
    """A plain, gradient or smooth-noise background of mean luminance about ``lum``.

    Shape: returns ``(size, size, 3)`` float32 in [0, 1].
    """
    kind = rng.integers(3)
    spread = rng.uniform(0.0, 0.12)
    c0 = _colour_with_luminance(rng, float(np.clip(lum - spread, 0, 1)))
    c1 = _colour_with_luminance(rng, float(np.clip(lum + spread, 0, 1)))
    if kind == 0:  # plain colour
        t = np.full((size, size), 0.5, dtype=np.float32)
    elif kind == 1:  # linear gradient at a random angle
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
        t = (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:  # smooth value noise: a coarse random grid upsampled bicubically
        cells = int(rng.integers(2, 12))
        grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
        t = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    return c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]


def _jitter(rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter of the object's pixels (float [0, 1])."""
    brightness, contrast, saturation = rng.uniform(0.75, 1.25), rng.uniform(0.75, 1.25), rng.uniform(0.6, 1.4)
    rgb = rgb * brightness
    w = alpha[..., None]
    mean = float((rgb * w).sum() / max(float(w.sum()) * 3, 1e-6))
    rgb = (rgb - mean) * contrast + mean
    gray = (rgb @ _LUMA)[..., None]
    return np.clip(gray + (rgb - gray) * saturation, 0.0, 1.0)


def _place(img: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """Flip, scale (longest side SCALE_RANGE x size), rotate; the result fits the canvas."""
    flip, scale, angle = rng.random() < 0.5, rng.uniform(*SCALE_RANGE), rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    obj = img.convert("RGBA")
    if flip:
        obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    k = scale * size / max(obj.size)
    obj = obj.resize((max(1, round(obj.width * k)), max(1, round(obj.height * k))), Image.Resampling.LANCZOS)
    obj = obj.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    bbox = obj.getchannel("A").getbbox()
    obj = obj.crop(bbox) if bbox else obj
    if max(obj.size) > size:  # a rotated long object can exceed the canvas: shrink to fit
        k = size / max(obj.size)
        obj = obj.resize((max(1, int(obj.width * k)), max(1, int(obj.height * k))), Image.Resampling.LANCZOS)
    return obj


def augment(img: Image.Image, rng: np.random.Generator, size: int, return_mask: bool = False):
    """Paste a cut-out on a random ``size x size`` canvas.

    Steps: flip (p=0.5), scale to 0.55-0.95 of the canvas, rotate +-25 degrees, colour
    jitter, random position (fully inside), a background whose mean luminance differs
    from the object's by at least :data:`MIN_CONTRAST`, Gaussian blur (p=0.3) and
    Gaussian pixel noise (p=0.5).

    Args:
        img: RGBA cut-out (transparent background), e.g. from :func:`render_base`.
        rng: the per-image generator; the same generator state gives the same image.
        size: canvas side in pixels (>= 16).
        return_mask: also return the object's coverage on the canvas.

    Shape:
        returns ``(size, size, 3)`` uint8 (and, with ``return_mask``, a
        ``(size, size)`` float32 alpha in [0, 1]).

    Raises:
        ValueError: size < 16 or a fully transparent ``img``.
    """
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if img.convert("RGBA").getchannel("A").getbbox() is None:
        raise ValueError("cannot augment a fully transparent image")
    size = int(size)
    obj = _place(img, rng, size)
    arr = np.asarray(obj, dtype=np.float32) / 255.0
    alpha = arr[..., 3]
    rgb = _jitter(arr[..., :3], alpha, rng)
    obj_lum = float(((rgb @ _LUMA) * alpha).sum() / max(float(alpha.sum()), 1e-6))
    canvas = make_background(rng, size, _background_luminance(rng, obj_lum))
    x = int(rng.integers(0, size - obj.width + 1))
    y = int(rng.integers(0, size - obj.height + 1))
    mask = np.zeros((size, size), dtype=np.float32)
    mask[y : y + obj.height, x : x + obj.width] = alpha
    region = canvas[y : y + obj.height, x : x + obj.width]
    canvas[y : y + obj.height, x : x + obj.width] = rgb * alpha[..., None] + region * (1 - alpha[..., None])
    blur, radius = rng.random() < 0.3, rng.uniform(0.3, 1.2)
    noisy, sigma = rng.random() < 0.5, rng.uniform(1.0, 8.0)
    out = Image.fromarray(np.round(canvas * 255).astype(np.uint8))
    if blur:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    result = np.asarray(out, dtype=np.float32)
    if noisy:
        result = result + rng.normal(0.0, sigma, result.shape).astype(np.float32)
    result = np.clip(np.round(result), 0, 255).astype(np.uint8)
    return (result, mask) if return_mask else result


# --- planning which picture each image shows -----------------------------------------
def _pool(class_name: str, split: str) -> list[tuple[str, int]]:
    """Ordered ``(style, variant)`` choices of a split, interleaved across styles."""
    if split in ("test", "test_timbre"):
        held = held_out_style(class_name)
        per_style = [[(held, v) for v in range(len(style_variants(class_name, held)))]]
    else:
        per_style = []
        for style in train_styles(class_name):
            n = len(style_variants(class_name, style))
            train_v, val_v = (list(range(n - 1)), [n - 1]) if n >= 2 else ([0], [])
            per_style.append([(style, v) for v in (train_v if split == "train" else val_v)])
        if split == "val" and not any(per_style):  # no spare glyphs: same pictures, new draws
            per_style = [[(s, v) for v in range(len(style_variants(class_name, s)))] for s in train_styles(class_name)]
        per_style = [p for p in per_style if p]
    width = max(len(p) for p in per_style)
    return [p[j % len(p)] for j in range(width) for p in per_style]


def plan_images(class_name: str, split: str, count: int) -> list[tuple[str, int]]:
    """``(style, variant)`` of each of ``count`` images of a class in a split.

    Image ``i`` takes entry ``i`` of the cycled :func:`_pool`, so styles alternate and
    every variant is used before any repeats.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pool = _pool(class_name, split)
    return [pool[i % len(pool)] for i in range(count)]


def render_image(class_name: str, split: str, index: int, style: str, variant: int, seed: int, size: int) -> bytes:
    """PNG bytes of one benchmark image (deterministic in all its arguments)."""
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], IMAGE_CLASSES.index(class_name), int(index)])
    arr = augment(render_base(class_name, style, variant), rng, size)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


# --- writing the image sets -----------------------------------------------------------
def _write_if_changed(path: Path, data: bytes) -> None:
    """Keep an identical file; otherwise write it atomically."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    write_bytes_atomic(path, data)


def _split_counts(profile) -> dict[str, int]:
    data = profile.data
    counts = {
        "train": data.train_images_per_class,
        "val": data.train_images_per_class,
        "test": data.test_images_per_class,
        "test_timbre": data.test_images_per_class,
    }
    for split, n in counts.items():
        if int(n) != n or n < 0:
            raise ValueError(f"{split}: images per class must be a non-negative integer, got {n!r}")
    return counts


def _check_classes(classes: list[str]) -> list[str]:
    unknown = [c for c in classes if c not in IMAGE_CLASSES]
    if unknown:
        raise ValueError(f"no image catalog for classes {unknown}; known: {', '.join(IMAGE_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate classes in {classes}")
    return list(classes)


def build_images(
    build_dir: Path, profile, classes: list[str], seed: int, progress: bool = True
) -> dict[str, list[dict]]:
    """Render and write ``images/<split>/<class>/<image_id>.png``; return manifest rows.

    Counts per class: ``data.train_images_per_class`` for train and for val,
    ``data.test_images_per_class`` for test and for test_timbre; side
    ``data.image_size``. A class with no picture on this machine is skipped with a
    :class:`MissingMaterialWarning` (it has no rows). Existing identical PNGs are kept,
    others are replaced atomically, and stale PNGs in the class folders are removed.

    Returns:
        ``{split: [row, ...]}`` for every split in ``SPLITS``; each row has exactly
        ``IMAGE_COLUMNS`` (``path`` relative to ``build_dir``).
    """
    from tqdm.auto import tqdm

    build_dir = Path(build_dir)
    classes = _check_classes(classes)
    counts, size = _split_counts(profile), int(profile.data.image_size)
    styles = available_styles()
    missing = [c for c in classes if not styles[c]]
    if missing:
        warnings.warn(f"no images for classes {missing}: no material on this machine", MissingMaterialWarning, 2)
    todo = [(s, c) for s in SPLITS for c in classes if styles[c]]
    bar = tqdm(total=sum(counts[s] for s, _ in todo), desc="images", **({} if progress else {"disable": True}))
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split, cls in todo:
        folder = build_dir / "images" / split / cls
        keep = set()
        for i, (style, variant) in enumerate(plan_images(cls, split, counts[split])):
            image_id = f"{cls}-{split}-{i:04d}"
            data = render_image(cls, split, i, style, variant, seed, size)
            path = folder / f"{image_id}.png"
            _write_if_changed(path, data)
            keep.add(path.name)
            glyph = style_variants(cls, style)[variant]
            rows[split].append(dict(
                image_id=image_id, class_name=cls, style=style, source=f"{source_key(style)}:{glyph}",
                license=LICENSES[source_key(style)], path=path.relative_to(build_dir).as_posix(),
                sha256=hashlib.sha256(data).hexdigest(),
            ))  # fmt: skip
            bar.update(1)
        if folder.is_dir():
            for stale in folder.iterdir():
                if stale.is_file() and stale.name not in keep and (stale.suffix in (".png", ".tmp")):
                    stale.unlink()
    bar.close()
    return rows
