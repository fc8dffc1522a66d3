"""Build the offline benchmark of a profile into ``benchmark_dir(profile)``.

:func:`build_benchmark` locates the material (:mod:`.sources`), plans every class
from the committed recipe (:mod:`.recipe`), renders the audio clips (:mod:`.clips`),
asks :mod:`.images` for the query images, and writes the manifests of
:mod:`.manifest` (each one atomically; audio files are written to a temporary
file and renamed).

Reuse and resumption: the build is keyed by two hashes, one of everything the audio
depends on (recipe, profile sizes, seed, material versions, this code) and one for
the images. ``.progress.json`` records which splits are complete under which hash,
so an interrupted build resumes where it stopped, and a finished build whose hashes
match and whose files still match their manifest sha256 is reused as is. A finished
split whose files no longer match (deleted, truncated, modified) is repaired by
re-rendering just those clips; every clip is a pure function of its recipe, class,
split, index and seed (:mod:`.clips`), so a resumed or repaired build equals a clean
one byte for byte.

Concurrency: one builder per folder. ``build_benchmark`` holds ``<out>/.build.lock``
(:mod:`filelock`, released by the OS if the process dies) for the whole build; a second
builder of the same folder waits, then finds the finished build and reuses it. Under
the lock the builder first removes every ``.*.tmp`` file in the folder: temporary files
of atomic writes killed before their rename.
"""

from __future__ import annotations

import hashlib
import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from filelock import FileLock, Timeout

from ..atomic import write_bytes_atomic
from ..config import Profile, get_profile, to_dict
from . import catalog, images
from .clips import ClipContext, clip_id, make_clip
from .manifest import (AUDIO_COLUMNS, IMAGE_COLUMNS, PROMPT_COLUMNS, SPLITS, benchmark_dir, data_root, sha256_file,
                       write_csv_atomic, write_json_atomic)
from .recipe import BuildPlan, load_recipe, make_plan, with_timbre_soundfont
from .sources import TIMBRE_KEY, SoundfontRenderer, locate_sources, render_rate_for, user_soundfont
from .sources.locate import ENV_ROOTS, pypi_version

BUILDER_VERSION = 1
ATTRIBUTION_COLUMNS = ("source", "package", "version", "license", "used_for", "credit")
CLASS_COLUMNS = ("class_name", "family", "kind", "label")
WAV_SUBTYPE = "FLOAT"
PROGRESS = ".progress.json"
LOCK = ".build.lock"


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, flush=True)


def wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    """32-bit float WAV bytes of a mono signal, identical for identical audio.

    libsndfile stamps the ``PEAK`` chunk of float WAV files with the wall-clock time;
    that field is zeroed so the file's sha256 depends on the audio only.
    """
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), sample_rate, subtype=WAV_SUBTYPE, format="WAV")
    data = bytearray(buf.getvalue())
    peak = data.find(b"PEAK", 0, data.find(b"data"))
    if peak >= 0:
        data[peak + 12 : peak + 16] = bytes(4)  # PEAK: id, size, version, timestamp
    return bytes(data)


def _code_hash(modules: list[str]) -> str:
    h = hashlib.sha256()
    for mod in modules:
        spec = importlib.util.find_spec(mod)
        if spec and spec.origin and os.path.exists(spec.origin):
            h.update(mod.encode() + Path(spec.origin).read_bytes())
    return h.hexdigest()


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


AUDIO_CODE = ["mars_core.data.build", "mars_core.data.clips", "mars_core.data.recipe", "mars_core.data.catalog",
              "mars_core.data.sources.dsp", "mars_core.data.sources.phrases", "mars_core.data.sources.quality",
              "mars_core.data.sources.recordings", "mars_core.data.sources.soundfont", "mars_core.data.sources.locate"]


def plan_summary(plan: BuildPlan) -> list[dict[str, Any]]:
    """Per class: label, family, kind and, per split, its soundfont, recordings and real fraction."""
    out = []
    for label, cp in enumerate(plan.classes):
        splits = {
            s: {"soundfont": sp.soundfont, "programs": list(sp.programs), "recordings": [r.recording_id for r in sp.recordings],
                "real_fraction": sp.real_fraction, "shares_train": sp.shares_train}
            for s, sp in cp.splits.items()
        }
        out.append({"class_name": cp.spec.name, "label": label, "family": cp.spec.family, "kind": cp.spec.kind, "splits": splits})
    return out


def audio_hash(profile: Profile, seed: int, recipe: dict, plan: BuildPlan, sources: dict) -> str:
    """Hash of everything the audio depends on (not of paths, so it is machine-independent)."""
    versions = {k: [m.package, m.version] for k, m in sources.items() if m.available}
    d = profile.data
    sizes = {"sample_rate": profile.audio.sample_rate, "clip_seconds": d.clip_seconds, "clips": counts_per_split(profile)}
    return _hash({"builder": BUILDER_VERSION, "sizes": sizes, "seed": seed, "recipe": recipe, "plan": plan_summary(plan), "versions": versions,
                  "code": _code_hash(AUDIO_CODE), "soundfile": pypi_version("soundfile"), "scipy": pypi_version("scipy"),
                  "tinysoundfont": pypi_version("tinysoundfont")})


def images_hash(profile: Profile, seed: int, classes: list[str]) -> str:
    d = profile.data
    sizes = [d.train_images_per_class, d.test_images_per_class, d.image_size]
    return _hash({"sizes": sizes, "seed": seed, "classes": classes,
                  "code": _code_hash(["mars_core.data.images", "mars_core.data.image_sources"]),
                  "material": images.material_fingerprint()})


def counts_per_split(profile: Profile) -> dict[str, int]:
    d = profile.data
    return {"train": d.train_clips_per_class, "val": d.val_clips_per_class, "test": d.test_clips_per_class,
            "test_timbre": d.test_timbre_clips_per_class}


def verify_rows(out: Path, rows: list[dict[str, str]]) -> bool:
    """Every file of a manifest exists and matches its sha256."""
    return all((out / r["path"]).is_file() and sha256_file(out / r["path"]) == r["sha256"] for r in rows)


def read_rows(path: Path) -> list[dict[str, str]] | None:
    import csv

    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def render_clip_file(ctx: ClipContext, cp, split: str, k: int, n: int, out: Path) -> dict:
    """Render clip ``k`` of ``n`` of a class in a split, write its WAV atomically, return its manifest row."""
    x, meta = make_clip(ctx, cp, split, k, n)
    cid = clip_id(split, cp.spec.name, k)
    rel = f"audio/{split}/{cp.spec.name}/{cid}.wav"
    data = wav_bytes(x, ctx.sample_rate)
    write_bytes_atomic(out / rel, data)
    return {"clip_id": cid, "class_name": cp.spec.name, "family": cp.spec.family, "source": meta["source"],
            "recording_id": meta["recording_id"], "license": meta["license"], "path": rel,
            "sample_rate": ctx.sample_rate, "num_samples": len(x), "duration": len(x) / ctx.sample_rate,
            "sha256": hashlib.sha256(data).hexdigest()}


def build_audio_split(ctx: ClipContext, plan: BuildPlan, split: str, n: int, out: Path, progress: bool) -> list[dict]:
    """Render and write every clip of a split; return its manifest rows."""
    from tqdm.auto import tqdm

    jobs = [(cp, k) for cp in plan.classes if split in cp.splits for k in range(n)]
    bar = {} if progress else {"disable": True}  # no hard-coded disable: TQDM_DISABLE=1 silences CI
    return [render_clip_file(ctx, cp, split, k, n, out) for cp, k in tqdm(jobs, desc=f"audio {split}", leave=False, **bar)]


def _row_ok(out: Path, row: dict[str, str]) -> bool:
    path = out / row["path"]
    return path.is_file() and sha256_file(path) == row["sha256"]


def repair_audio_split(ctx: ClipContext, plan: BuildPlan, split: str, n: int, out: Path,
                       rows: list[dict[str, str]]) -> int | None:
    """Re-render the clips of a finished split whose file is missing or differs from its manifest row.

    Returns the number of clips re-rendered, or None when a re-rendered clip does not
    reproduce its manifest row (the manifest comes from other code): rebuild the split.
    """
    classes = {cp.spec.name: cp for cp in plan.classes if split in cp.splits}
    bad = [r for r in rows if not _row_ok(out, r)]
    for r in bad:
        cp, k = classes.get(r["class_name"]), int(r["clip_id"].rsplit("-", 1)[1])
        if cp is None or clip_id(split, cp.spec.name, k) != r["clip_id"]:
            return None
        new = render_clip_file(ctx, cp, split, k, n, out)
        if new["sha256"] != r["sha256"] or new["path"] != r["path"]:
            return None
    return len(bad)


def make_context(profile: Profile, seed: int, recipe: dict, sources: dict) -> ClipContext:
    """Loaded soundfonts, low-pass range and quality settings of a build."""
    sr = profile.audio.sample_rate
    nyq = sr / 2
    lp = recipe["lowpass"]
    lo = min(lp["min_fraction_of_nyquist"] * nyq, lp["min_hz_cap"])
    hi = lp["max_fraction_of_nyquist"] * nyq
    rate = render_rate_for(sr, recipe["render"]["min_render_rate"])
    renderers = {k: SoundfontRenderer(sources[k].path, rate) for k in ("fluidr3", "timgm6mb", TIMBRE_KEY)
                 if k in sources and sources[k].available}
    qc = dict(recipe["quality"], min_bandwidth_hz=lo)
    return ClipContext(seed, sr, int(round(profile.data.clip_seconds * sr)), recipe["split_codes"], (lo, hi, lp["order"]),
                       qc, recipe["augment"], recipe["loudness"], renderers, {k: m.license for k, m in sources.items()})


def attribution_rows(plan: BuildPlan, sources: dict, images_rows: list[dict]) -> list[dict[str, str]]:
    """One row per soundfont and per recording used, then the images' rows."""
    rows = []
    for key in sorted({s for s in plan.soundfonts.values() if s}):
        m = sources[key]
        used = sorted(s for s, k in plan.soundfonts.items() if k == key)
        rows.append({"source": key, "package": m.package, "version": m.version, "license": m.license,
                     "used_for": f"soundfont renders of instrument and effect classes, splits {', '.join(used)}",
                     "credit": m.credit})
    seen = {}
    for cp in plan.classes:
        for split, sp in cp.splits.items():
            for r in sp.recordings:
                seen.setdefault(r.recording_id, (r, cp.spec.name, set()))[2].add(split)
    for rid, (r, cls, splits) in seen.items():
        m = sources[r.source]
        rows.append({"source": r.source, "package": m.package, "version": m.version, "license": r.license,
                     "used_for": f"{cls} clips ({', '.join(sorted(splits))}): {rid}", "credit": r.credit})
    return rows + list(images_rows)


class _Progress:
    """``.progress.json``: which splits are complete under which hash."""

    def __init__(self, out: Path):
        self.path = out / PROGRESS
        try:
            self.state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.state = {}

    def done(self, step: str, h: str) -> bool:
        return self.state.get(step) == h

    def mark(self, step: str, h: str) -> None:
        self.state[step] = h
        write_json_atomic(self.path, self.state)


def _reusable(out: Path, recipe_hash: str) -> bool:
    try:
        info = json.loads((out / "build_info.json").read_text())
    except (OSError, ValueError):
        return False
    if info.get("recipe_hash") != recipe_hash:
        return False
    for kind in ("audio", "images"):
        for split in SPLITS:
            rows = read_rows(out / kind / f"{split}.csv")
            if rows is None or not verify_rows(out, rows):
                return False
    return True


def build_image_manifests(out: Path, profile: Profile, classes: list[str], seed: int, h: str, prog: _Progress,
                          log: list[str], progress: bool) -> tuple[dict[str, list], list[dict], str]:
    """Images via ``images.build_images`` (or reused); returns rows per split, attribution rows, status."""
    old = {s: read_rows(out / "images" / f"{s}.csv") for s in SPLITS}
    if prog.done("images", h) and all(r is not None and verify_rows(out, r) for r in old.values()):
        rows, status = old, "reused"
    else:
        for s in SPLITS:  # folders of classes this build does not have (the module cleans the others)
            for d in (out / "images" / s).glob("*"):
                if d.is_dir() and d.name not in classes:
                    shutil.rmtree(d)
        _say(f"rendering query images for {len(classes)} classes ...", progress)
        result = images.build_images(out, profile, classes, seed, progress=progress)
        rows, status = {s: list(result.get(s, [])) for s in SPLITS}, "built"
    for s in SPLITS:
        write_csv_atomic(out / "images" / f"{s}.csv", rows[s], IMAGE_COLUMNS)
    prog.mark("images", h)
    return rows, list(images.attribution_rows()), status


def recordings_info(plan: BuildPlan) -> tuple[list[dict], list[str]]:
    """What this run saw of each recording (bandwidth, native rate, rejected items)."""
    table, log, seen = [], [], set()
    for cp in plan.classes:
        for split, sp in cp.splits.items():
            for r in sp.recordings:
                if r.recording_id in seen:
                    continue
                seen.add(r.recording_id)
                table.append({"recording_id": r.recording_id, "class_name": cp.spec.name, "source": r.source,
                              "license": r.license, "items": len(r.names), "items_loaded": len(r.bandwidths),
                              "items_rejected": len(r.rejected), "native_rates": sorted(set(r.native_rates.values())),
                              "min_bandwidth_hz": min(r.bandwidths.values()) if r.bandwidths else None})
                if r.rejected:
                    example = next(iter(r.rejected.values()))
                    log.append(f"{r.recording_id}: {len(r.rejected)} item(s) rejected, e.g. {example}")
    return table, log


def build_audio(ctx: ClipContext, plan: BuildPlan, profile: Profile, out: Path, h: str, prog: _Progress,
                progress: bool) -> dict[str, dict[str, int]]:
    """Render (or reuse) every audio split; returns clip counts per split and class."""
    counts = {}
    for split, n in counts_per_split(profile).items():
        manifest = out / "audio" / f"{split}.csv"
        rows = read_rows(manifest) if prog.done(f"audio/{split}", h) else None
        repaired = None if rows is None else repair_audio_split(ctx, plan, split, n, out, rows)
        if repaired is not None:
            _say(f"audio {split}: reused {len(rows)} clips" + (f", re-rendered {repaired} that differed from the "
                                                                f"manifest" if repaired else ""), progress)
        else:
            manifest.unlink(missing_ok=True)  # never leave a manifest describing files being replaced
            shutil.rmtree(out / "audio" / split, ignore_errors=True)
            t = time.perf_counter()
            rows = build_audio_split(ctx, plan, split, n, out, progress)
            write_csv_atomic(manifest, rows, AUDIO_COLUMNS)
            prog.mark(f"audio/{split}", h)
            _say(f"audio {split}: {len(rows)} clips in {time.perf_counter() - t:.1f} s", progress)
        counts[split] = {}
        for r in rows:
            counts[split][r["class_name"]] = counts[split].get(r["class_name"], 0) + 1
    return counts


def package_versions(sources: dict) -> dict[str, str]:
    pkgs = {m.package: m.version for m in sources.values()}
    for dist in ("tinysoundfont", "soundfile", "numpy", "scipy", "pillow"):
        pkgs[f"pypi:{dist}"] = pypi_version(dist)
    return pkgs


def build_info(prof: Profile, seed: int, hashes: tuple[str, str, str], ctx: ClipContext, recipe: dict, plan: BuildPlan,
               sources: dict, counts: dict, image_rows: dict, image_status: str, log: list[str]) -> dict[str, Any]:
    """The content of ``build_info.json`` (all but ``elapsed_seconds``)."""
    rec_table, rec_log = recordings_info(plan)
    fonts = {s: ({"key": k, "path": str(sources[k].path), "package": sources[k].package, "version": sources[k].version}
                 if k else None) for s, k in plan.soundfonts.items()}
    return {
        "profile": prof.name, "seed": seed, "recipe_hash": hashes[0], "audio_hash": hashes[1], "images_hash": hashes[2],
        "builder_version": BUILDER_VERSION, "sample_rate": ctx.sample_rate, "clip_samples": ctx.n_samples,
        "clip_seconds": prof.data.clip_seconds, "wav_subtype": WAV_SUBTYPE, "lowpass_hz": list(ctx.lowpass[:2]),
        "render_rate": render_rate_for(ctx.sample_rate, recipe["render"]["min_render_rate"]), "soundfonts": fonts,
        "packages": package_versions(sources), "classes": plan_summary(plan),
        "counts": counts, "totals": {s: sum(c.values()) for s, c in counts.items()},
        "images": {"status": image_status, "totals": {s: len(r) for s, r in image_rows.items()}},
        "val_shares_train": [cp.spec.name for cp in plan.classes if "val" in cp.splits and cp.splits["val"].shares_train],
        "degraded": plan.degraded, "recordings": rec_table, "warnings": log + rec_log,
        "profile_config": to_dict(prof), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@contextlib.contextmanager
def _system_roots_env(roots):
    old = os.environ.get(ENV_ROOTS)
    os.environ[ENV_ROOTS] = os.pathsep.join(str(Path(r).expanduser()) for r in roots)
    images.clear_caches()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_ROOTS, None)
        else:
            os.environ[ENV_ROOTS] = old
        images.clear_caches()


def build_benchmark(
    profile: str | Profile | None,
    root: str | os.PathLike | None = None,
    seed: int | None = None,
    progress: bool = True,
    system_roots: list[str | os.PathLike] | None = None,
    recipe_path: str | os.PathLike | None = None,
    timbre_soundfont: str | os.PathLike | None = None,
) -> Path:
    """Build (or reuse) the benchmark of a profile; return its directory.

    Args:
        profile: profile or its name (``smoke``, ``cpu``, ``full``).
        root: output directory (default ``benchmark_dir(profile.name)``).
        seed: build seed (default ``profile.data.seed``).
        progress: print steps and progress bars.
        system_roots: where to look for unpacked/installed Debian packages
            (default ``MARS_SYSTEM_ROOTS`` or ``$MARS_DATA/system`` then ``/``);
            an empty directory gives the degraded pure-PyPI build.
        recipe_path: recipe file (default ``datasets/recipe.json``).
        timbre_soundfont: a SoundFont 2 file of your own that renders the ``test_timbre`` split instead
            of the recipe's held-out soundfont (further held-out material: train, val and test are the
            default build's, byte for byte). Its build goes to :func:`timbre_build_dir` unless ``root``
            is given, so the profile's own build is never replaced.

    Raises:
        ValueError: unknown profile.
        FileNotFoundError: no ``timbre_soundfont`` file.
        MaterialError: missing or bad material that cannot be degraded around, or a ``timbre_soundfont``
            that is not a SoundFont 2 file.
    """
    if system_roots is not None:  # one search path for audio and images: through the environment
        with _system_roots_env(system_roots):
            return build_benchmark(profile, root, seed, progress, None, recipe_path, timbre_soundfont)
    t0 = time.perf_counter()
    prof = get_profile(profile)
    seed = prof.data.seed if seed is None else int(seed)
    timbre = user_soundfont(timbre_soundfont) if timbre_soundfont is not None else None
    out = benchmark_dir(prof.name, root) if root is not None or timbre is None else timbre_build_dir(prof.name, timbre.version)
    out.mkdir(parents=True, exist_ok=True)
    with build_lock(out):
        removed = remove_temporaries(out)
        if removed:
            _say(f"removed {len(removed)} temporary file(s) left by an interrupted write", progress)
        return _build_locked(prof, out, seed, recipe_path, progress, t0, timbre)


def timbre_build_dir(profile_name: str, font_sha256: str) -> Path:
    """Default folder of a build whose ``test_timbre`` comes from a user soundfont:
    ``$MARS_DATA/benchmark/<profile>-timbre-<first 12 hex of the font's sha256>``."""
    return data_root() / "benchmark" / f"{profile_name}-timbre-{font_sha256[:12]}"


@contextlib.contextmanager
def build_lock(out: Path):
    """Hold ``<out>/.build.lock``; if another process holds it, say so on stderr and wait."""
    lock = FileLock(str(out / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"another process is building {out}; waiting for it to finish (lock file {out / LOCK})",
              file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def remove_temporaries(out: Path) -> list[Path]:
    """Remove every ``.*.tmp`` file under ``out`` (call only while holding :func:`build_lock`)."""
    found = [p for p in out.rglob(".*.tmp") if p.is_file()]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def _build_locked(prof: Profile, out: Path, seed: int, recipe_path, progress: bool, t0: float,
                  timbre=None) -> Path:
    _say(f"building benchmark: profile {prof.name}, seed {seed}, {prof.audio.sample_rate} Hz -> {out}", progress)
    recipe = load_recipe(recipe_path)
    sources = locate_sources(None)  # the search path is in the environment (see build_benchmark)
    if timbre is not None:
        _say(f"test_timbre rendered from {timbre.path} (sha256 {timbre.version[:12]})", progress)
        sources[TIMBRE_KEY] = timbre
        recipe = with_timbre_soundfont(recipe, TIMBRE_KEY)
        size = timbre.path.stat().st_size  # hash a recipe font only when its size matches (FluidR3 is 140 MB)
        same = [k for k in ("fluidr3", "timgm6mb") if sources[k].available and sources[k].path.stat().st_size == size
                and sha256_file(sources[k].path) == timbre.version]
        if same:
            warnings.warn(f"{timbre.path} is the {same[0]} soundfont the recipe already uses: its test_timbre is "
                          "not independent material", stacklevel=3)
    ctx = make_context(prof, seed, recipe, sources)
    image_styles = images.available_styles()
    plan = make_plan(recipe, sources, ctx.sample_rate, ctx.renderers, ctx.qc,
                     has_images=lambda c: bool(image_styles.get(c)))
    classes = [cp.spec.name for cp in plan.classes]
    ah, ih = audio_hash(prof, seed, recipe, plan, sources), images_hash(prof, seed, classes)
    recipe_hash = _hash([ah, ih])
    if _reusable(out, recipe_hash):
        _say(f"reused existing build in {out} (recipe hash {recipe_hash[:12]}, all files match their sha256) "
             f"in {time.perf_counter() - t0:.1f} s", progress)
        return out
    (out / "build_info.json").unlink(missing_ok=True)  # written last: its presence means the build is complete
    prog = _Progress(out)
    counts = build_audio(ctx, plan, prof, out, ah, prog, progress)
    log = list(plan.warnings)
    image_rows, image_attr, image_status = build_image_manifests(out, prof, classes, seed, ih, prog, log, progress)
    write_csv_atomic(out / "classes.csv", catalog.class_rows(classes), CLASS_COLUMNS)
    write_csv_atomic(out / "prompts.csv", catalog.prompt_rows(classes, recipe["prompts"]["test_template_ids"]), PROMPT_COLUMNS)
    write_csv_atomic(out / "attribution.csv", attribution_rows(plan, sources, image_attr), ATTRIBUTION_COLUMNS)
    info = build_info(prof, seed, (recipe_hash, ah, ih), ctx, recipe, plan, sources, counts, image_rows, image_status, log)
    info["elapsed_seconds"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(out / "build_info.json", info)
    _say(describe_build(out), progress)
    return out


def describe_build(build_dir: str | os.PathLike) -> str:
    """A short text summary of a finished build (profile, classes, clips and images per split, warnings).

    Raises:
        FileNotFoundError: no ``build_info.json`` there, with the command that builds it.
    """
    path = Path(build_dir) / "build_info.json"
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark build in {build_dir}: run `python -m mars_core.data build --profile <P>`")
    info = json.loads(path.read_text())
    lines = [
        f"benchmark {info['profile']} (seed {info['seed']}, {info['sample_rate']} Hz, {info['clip_seconds']} s clips) in {build_dir}",
        f"  {len(info['classes'])} classes: {', '.join(c['class_name'] for c in info['classes'])}",
    ]
    for s in SPLITS:
        lines.append(f"  {s:12s} {info['totals'].get(s, 0):6d} clips  {info['images']['totals'].get(s, 0):5d} images")
    deg = info["degraded"]
    if deg["missing_sources"] or deg["dropped_classes"]:
        lines.append(f"  degraded: missing {deg['missing_sources']}, dropped {deg['dropped_classes']}")
    lines.append(f"  test_timbre: {deg['test_timbre']}")
    if info["val_shares_train"]:
        lines.append(f"  val shares train recordings for: {', '.join(info['val_shares_train'])}")
    if info["warnings"]:
        lines.append(f"  {len(info['warnings'])} warning(s), see build_info.json")
    lines.append(f"  built in {info['elapsed_seconds']} s ({info['created_utc']})")
    return "\n".join(lines)
