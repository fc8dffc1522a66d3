"""The one place that hands out encoders: the profile's query encoder and its judge.

* :func:`load_query_encoder`: the frozen encoder whose embeddings condition the separator
  (and, after progressive alignment, produce the reward: :mod:`mars_core.alignment.stack`).
* :func:`load_judge`: a second encoder that never produced a query or a reward, for the
  semantic score (:mod:`.judge`; at ``full`` the CLAP judge of :mod:`.clap`).

Both come in eval mode; neither is trained here.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from ..config import Profile, get_profile
from .hub import OFFICIAL_HUGE_URL, from_pretrained
from .judge import JUDGE_SEED, judge_encoder_config
from .minibind import MiniBind, load_shipped


def add_imagebind_argument(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--imagebind PATH`` (the official ImageBind-Huge ``.pth``; default ``$MARS_IMAGEBIND``)."""
    p.add_argument("--imagebind", default=None, metavar="PATH",
                   help="the official imagebind_huge.pth (about 4.5 GB, CC-BY-NC 4.0) for the full profile "
                        "(default: $MARS_IMAGEBIND, else the official URL, downloaded once)")
    return p


def use_imagebind_argument(path: str | os.PathLike | None) -> None:
    """Make ``--imagebind PATH`` the ``$MARS_IMAGEBIND`` of this process (every loader below reads it).

    Raises:
        SystemExit: ``path`` is not a file (named, with what to do).
    """
    if path is None:
        return
    if not Path(path).is_file():
        raise SystemExit(f"error: --imagebind {path}: no such file; give the path of the downloaded "
                         f"imagebind_huge.pth ({OFFICIAL_HUGE_URL})")
    os.environ["MARS_IMAGEBIND"] = str(Path(path).resolve())


def add_clap_argument(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--clap DIR`` (a local transformers CLAP checkpoint, the ``full`` judge; default ``$MARS_CLAP``)."""
    p.add_argument("--clap", default=None, metavar="DIR",
                   help="a downloaded transformers CLAP directory (laion/clap-htsat-unfused, about 0.6 GB, Apache-2.0): "
                        "the judge of the semantic score where no MiniBind judge is shipped (full) "
                        "(default: $MARS_CLAP; without either that score is left out)")
    return p


def use_clap_argument(path: str | os.PathLike | None) -> None:
    """Make ``--clap DIR`` the ``$MARS_CLAP`` of this process (:func:`load_judge` reads it).

    Raises:
        SystemExit: ``path`` is not a directory (named, with what to do).
    """
    if path is None:
        return
    if not Path(path).is_dir():
        raise SystemExit(f"error: --clap {path}: no such directory; give the folder of a downloaded transformers CLAP "
                         f"checkpoint (docs/environment.md section 7)")
    os.environ["MARS_CLAP"] = str(Path(path).resolve())


def load_query_encoder(profile: str | Profile | None = None):
    """The profile's frozen query encoder (eval mode).

    * ``encoder.kind == "minibind"``: the shipped reward MiniBind
      (:func:`mars_core.encoders.minibind.load_shipped`). At ``smoke`` size, if none is
      shipped, a seeded **untrained** MiniBind stands in (with a warning): its embeddings
      still tell prompts, images and clips apart, which is all a smoke run checks.
    * ``encoder.kind == "imagebind"``: ImageBind-Huge from ``$MARS_IMAGEBIND`` (a local
      ``.pth``) or the official URL (downloaded once into ``$MARS_DATA/models``).

    Raises:
        ValueError: an encoder kind other than ``minibind`` or ``imagebind`` in the profile.
    """
    prof = get_profile(profile)
    if prof.encoder.kind == "minibind":
        try:
            return load_shipped(prof, "reward").eval()
        except FileNotFoundError as exc:
            if prof.name != "smoke":
                raise
            warnings.warn(f"{exc}; using an untrained seeded MiniBind as the smoke query encoder", stacklevel=2)
            return MiniBind.from_profile(prof, seed=0).eval()
    if prof.encoder.kind == "imagebind":
        return from_pretrained(os.environ.get("MARS_IMAGEBIND", OFFICIAL_HUGE_URL), modalities=("vision", "text", "audio"))
    raise ValueError(f"unknown encoder kind {prof.encoder.kind!r}")


def load_judge(profile: str | Profile | None = None):
    """The shipped judge MiniBind of the profile (eval mode); where none is shipped (``full``), the CLAP judge
    of ``$MARS_CLAP`` (:func:`mars_core.encoders.clap.load_clap_judge`), else ``None`` (with a warning).

    At ``smoke`` size without a shipped judge, a seeded untrained judge-sized MiniBind
    stands in (the scores then test the code path only); ``$MARS_CLAP`` is not read there.

    Raises:
        FileNotFoundError, ValueError: ``$MARS_CLAP`` is set but is not a complete CLAP directory.
    """
    prof = get_profile(profile)
    try:
        return load_shipped(prof, "judge").eval()
    except FileNotFoundError as exc:
        if prof.name == "smoke":
            warnings.warn(f"{exc}; using an untrained seeded judge at smoke size", stacklevel=2)
            return MiniBind(judge_encoder_config(prof), prof.audio.sample_rate, seed=JUDGE_SEED).eval()
        if os.environ.get("MARS_CLAP"):
            from .clap import load_clap_judge  # transformers takes about 2 s to import: only when a CLAP judge is asked for

            return load_clap_judge(os.environ["MARS_CLAP"])
        warnings.warn(f"{exc}; the semantic score is left out (for the paper's CLAP judge set MARS_CLAP=DIR or pass "
                      f"--clap DIR, a downloaded transformers CLAP checkpoint: docs/environment.md section 7)",
                      stacklevel=2)
        return None
