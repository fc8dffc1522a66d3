"""Load ImageBind weights from a local file or a URL (cached, hash-checked, atomic).

The official checkpoint (``imagebind_huge.pth``, about 4.5 GB, CC-BY-NC 4.0) is not
shipped with this project. On a machine with internet, ``from_pretrained(OFFICIAL_HUGE_URL)``
downloads it once into ``$MARS_DATA/models``; offline, download it elsewhere and pass the
local path.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shlex
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Sequence

import torch

from ..checkpoints import CheckpointError
from .base import MODALITIES
from .imagebind import CONFIGS, ImageBind, ImageBindConfig

OFFICIAL_HUGE_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
"""Where the official ``imagebind_huge`` checkpoint is published."""
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one."""


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded (offline, unreachable host, HTTP error)."""


def default_cache_dir() -> Path:
    """``$MARS_DATA/models`` (``MARS_DATA`` defaults to ``~/.cache/mars``)."""
    from ..data.manifest import data_root

    return data_root() / "models"


# (resolved path, size, mtime_ns) -> hex sha256: ImageBind-Huge is 4.5 GB (7-8 s to hash), so a
# process hashes one file once; a rewritten file (new size or mtime) is hashed again.
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; cached by ``(path, size, mtime)`` for this process."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    key = (str(resolved), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_CACHE:
        h = hashlib.sha256()
        with open(resolved, "rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
        _SHA256_CACHE[key] = h.hexdigest()
    return _SHA256_CACHE[key]


def _check_hash(path: Path, expected: str | None, actual: str | None = None) -> None:
    if expected is None:
        return
    actual = actual or sha256_of(path)
    if actual.lower() != expected.lower():
        raise ChecksumError(f"sha256 mismatch for {path}: expected {expected.lower()}, actual {actual}")


def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(str(s)).scheme in ("http", "https", "file")


def _offline_message(url: str, reason: object) -> str:
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint.pth"
    return (
        f"could not download {url} ({reason}). This machine may be offline or the host unreachable. "
        f"Download the file manually on a machine with internet access, copy it here, and pass its "
        f"local path instead: from_pretrained('/path/to/{name}', sha256=...)"
    )


def download_checkpoint(
    url: str, cache_dir: str | os.PathLike | None = None, sha256: str | None = None, progress: bool = True
) -> Path:
    """Download ``url`` into the cache (once) and return the local path.

    A cached file is reused (and hash-checked when ``sha256`` is given). A new download
    streams into a temporary file in the cache folder, is hash-checked, then renamed
    into place, so an interrupted download never leaves a file under the final name.

    Raises:
        DownloadError: the URL cannot be reached (with instructions for a manual download).
        ChecksumError: the file's sha256 differs from ``sha256``.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot derive a file name from {url!r}")
    target = cache / name
    if target.exists():
        _check_hash(target, sha256)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(url, out, progress)
        _check_hash(Path(tmp), sha256, digest)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _stream(url: str, out, progress: bool) -> str:
    """Copy ``url`` into the open file ``out``; return the sha256 of the bytes."""
    from tqdm.auto import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=30)
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(_offline_message(url, getattr(exc, "reason", exc))) from exc
    h = hashlib.sha256()
    total = int(response.headers.get("Content-Length") or 0) or None
    quiet = {} if progress else {"disable": True}  # else TQDM_DISABLE=1 still silences it
    with response, tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, **quiet) as bar:
        try:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                h.update(block)
                bar.update(len(block))
        except OSError as exc:
            raise DownloadError(_offline_message(url, exc)) from exc
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def resolve_checkpoint(path_or_url: str | os.PathLike, sha256: str | None = None, cache_dir=None) -> Path:
    """A local checkpoint path: downloaded/cached for URLs, checked for local files."""
    if _is_url(str(path_or_url)):
        return download_checkpoint(str(path_or_url), cache_dir, sha256)
    path = Path(path_or_url).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (pass a local file or an http(s)/file URL)")
    _check_hash(path, sha256)
    return path


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` on CPU, memory-mapped when the format allows.

    Raises:
        CheckpointError: a truncated, corrupt or non-state-dict file, or one holding objects a
            weights-only load refuses (nothing in it runs); the message names the file and its size.
    """
    path = Path(path)
    size = path.stat().st_size
    todo = (f"download it again (delete it: rm {shlex.quote(str(path))}; from_pretrained(URL) fetches it anew) "
            "and pass sha256=... to verify it")
    try:  # a zip-format file is memory-mapped; the legacy format (or a truncated zip) cannot be
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:")[-1].strip().split("\n")[0][:300]
        raise CheckpointError(f"{path} ({size} bytes) was refused by a weights-only load ({detail}); nothing in "
                              f"it ran. A state-dict file holds only tensors: {todo}", path) from None
    except Exception as exc:
        first = str(exc).split("\n")[0].split(". ")[0][:200]  # torch's zip errors go on for a paragraph
        raise CheckpointError(f"{path} ({size} bytes) is not a readable weights file, truncated or corrupt "
                              f"({type(exc).__name__}: {first}): {todo}", path) from exc
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a flat state dict (dict of tensors)", path)
    return sd


class WeightsMismatchError(RuntimeError):
    """A weights file whose keys or shapes do not fit the model config (the message is a short summary)."""


def _first(names, n: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def check_state_dict_fits(model: ImageBind, state: dict[str, torch.Tensor], path: str | os.PathLike,
                          config_name: str) -> None:
    """Raise :class:`WeightsMismatchError` with counts and the first few keys when ``state`` does not fit ``model``
    (after dropping :attr:`ImageBind.ignored_prefixes`), naming any known config the file does fit."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    kept = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(model.ignored_prefixes)}
    missing = sorted(expected.keys() - kept.keys())
    unexpected = sorted(kept.keys() - expected.keys())
    shapes = sorted(k for k in expected.keys() & kept.keys() if expected[k] != kept[k])
    if not (missing or unexpected or shapes):
        return
    parts = [f"{len(missing)} of {len(expected)} expected keys missing ({_first(missing)})" if missing else "",
             f"{len(unexpected)} unexpected keys ({_first(unexpected)})" if unexpected else "",
             f"{len(shapes)} shape mismatches (" + _first(f"{k}: file {kept[k]} vs model {expected[k]}"
                                                          for k in shapes) + ")" if shapes else ""]
    fits = [name for name in CONFIGS if name != config_name and _fits(name, model.modalities, kept)]
    advice = (f"The file fits config={fits[0]!r}; pass that" if fits else
              "Pass the config the file was made for (config='huge', 'tiny' or an ImageBindConfig)")
    raise WeightsMismatchError(f"{path} ({len(state)} tensors) does not fit ImageBind config {config_name!r} with "
                               f"modalities {tuple(model.modalities)}: " + "; ".join(p for p in parts if p) +
                               f". {advice}.")


def _fits(config_name: str, modalities: Sequence[str], kept_shapes: dict[str, tuple]) -> bool:
    with torch.device("meta"):
        other = ImageBind(config_name, modalities)
    want = {k: tuple(v.shape) for k, v in other.state_dict().items()}
    got = {k: v for k, v in kept_shapes.items() if not k.startswith(other.ignored_prefixes)}
    return want == got


def from_pretrained(
    path_or_url: str | os.PathLike,
    sha256: str | None = None,
    config: str | ImageBindConfig = "huge",
    modalities: Sequence[str] = MODALITIES,
    half: bool = False,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ImageBind:
    """Build :class:`ImageBind` and load official weights strictly for the kept modalities.

    Args:
        path_or_url: a local ``.pth`` or an ``http(s)://`` / ``file://`` URL (cached).
        sha256: expected hex digest of the file; checked when given.
        config: ``"huge"`` (the official checkpoint), ``"tiny"`` or a config.
        modalities: towers to keep; the other modalities' keys are ignored.
        half: float16 weights (for GPUs); embeddings are still returned in float32.
        device: defaults to CUDA when available, else CPU.
        cache_dir: download cache, default ``$MARS_DATA/models``.

    Returns:
        the model in eval mode.
    """
    path = resolve_checkpoint(path_or_url, sha256, cache_dir)
    state = load_state_dict_file(path)
    with torch.device("meta"):
        model = ImageBind(config, modalities)
    check_state_dict_fits(model, state, path, config if isinstance(config, str) else "custom")
    model.load_state_dict(state, strict=True, assign=True)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device=device, dtype=torch.float16 if half else torch.float32).eval()


__all__ = [
    "OFFICIAL_HUGE_URL",
    "ChecksumError",
    "WeightsMismatchError",
    "check_state_dict_fits",
    "DownloadError",
    "default_cache_dir",
    "download_checkpoint",
    "from_pretrained",
    "load_state_dict_file",
    "resolve_checkpoint",
    "sha256_of",
]
