"""Trained separators on held-out material of your own: a build whose ``test_timbre`` comes from another soundfont.

The benchmark's ``test_timbre`` split is rendered from one soundfont the training never heard
(TimGM6mb). To ask whether a separator keeps working on a timbre family rendered independently,
build the benchmark again with a SoundFont 2 file of your own for that split (train, val and
test stay the default build's, byte for byte)::

    python -m mars_core.data build --profile cpu --timbre-soundfont /usr/share/sounds/sf2/OPL-3_FM_128M.sf2

and evaluate checkpoints **as they are** on it (:func:`evaluate_checkpoints`; ``scripts/timbre_check.py``
does both). Nothing is retrained: the run configuration of a trained model names the manifests of the
build it was trained on, so :func:`~mars_core.supervised.store.load_or_train` on another build would
train a new model. Here each checkpoint is loaded directly, its recorded query encoder checked against
the one embedding this build's queries (:func:`checkpoint_system`), and the usual harness
(:func:`~mars_core.benchmark.harness.run_benchmark`) scores it with the reference systems on the same
mixtures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from ..config import Profile, get_profile
from ..data.manifest import data_root
from ..encoders.load import load_query_encoder
from ..queries import QueryBank, load_or_build_query_bank
from ..supervised.store import load_separator, shipped_separator
from .harness import BenchmarkResult, run_benchmark
from .io import REPO_ROOT
from .registry import BenchmarkContext, SystemModel
from .tables import PAIR_TYPES, REFERENCE_SYSTEMS


def checkpoint_system(path: str | os.PathLike, bank: QueryBank) -> SystemModel:
    """A separator checkpoint (:func:`~mars_core.supervised.store.save_separator`'s file) as a benchmark system.

    Raises:
        FileNotFoundError: no file. ValueError: not a separator checkpoint, or one trained on queries of
            another encoder than ``bank``'s (its queries would be embeddings it never saw).
    """
    path = Path(path)
    model, blob = load_separator(path)
    recorded = str(blob.get("config", {}).get("queries", ""))
    if not recorded.startswith(bank.encoder[:16]):
        raise ValueError(f"{path} was trained on queries of encoder {recorded.split('-')[0] or '(unrecorded)'}, "
                         f"not of this bank's encoder {bank.encoder[:16]}: evaluate it with the query encoder "
                         "it was trained with")
    return SystemModel(model, None, blob.get("history"), str(path))


def checkpoints_from_run(run_json: str | os.PathLike, systems: Sequence[str] | None = None) -> dict[str, Path]:
    """``{system: checkpoint}`` of the learned systems a benchmark ``run.json`` records (its ``systems``:
    name -> source), so a held-out check scores exactly the models of a published table.

    Paths are resolved as :func:`~mars_core.benchmark.io.portable_path` wrote them (``$MARS_DATA`` and the
    repository root). Systems whose source is not a single checkpoint file (e.g. ``aligned encoder, no RL``,
    the shipped separator asked through another encoder) are left out.

    Raises:
        KeyError: a requested system is not in the run.
    """
    recorded = json.loads(Path(run_json).read_text(encoding="utf-8"))["systems"]
    names = list(recorded) if systems is None else list(systems)
    out = {}
    for name in names:
        if name not in recorded:
            raise KeyError(f"{name!r} is not a system of {run_json} (it has: {', '.join(recorded)})")
        src = str(recorded[name])
        if not src.endswith(".pt"):
            continue
        src = src.replace("$MARS_DATA", str(data_root()))
        path = Path(src)
        out[name] = path if path.is_absolute() else REPO_ROOT / path
    return out


def evaluate_checkpoints(profile: str | Profile | None, build_dir: str | os.PathLike,
                         checkpoints: Mapping[str, str | os.PathLike] | None = None, *,
                         splits: Sequence[str] = ("test_timbre",), pair_types: Sequence[str] = PAIR_TYPES,
                         n_items: int | None = None, seed: int = 0, out: str | os.PathLike | None = None,
                         judge="auto", query_encoder=None, progress: bool = True) -> BenchmarkResult:
    """Score trained separators, unchanged, on the test sets of another build of the same profile.

    Args:
        build_dir: the build (e.g. ``python -m mars_core.data build --timbre-soundfont F``'s folder).
        checkpoints: ``{system name: separator checkpoint}`` (default: ``{"supervised": the shipped one}``).
        splits, pair_types, n_items, seed, out: as :func:`~mars_core.benchmark.harness.run_benchmark`.
        judge: as :class:`~mars_core.benchmark.registry.BenchmarkContext` (``None``: no semantic scores).
        query_encoder: the encoder embedding the queries (default: the profile's,
            :func:`~mars_core.encoders.load.load_query_encoder`), e.g. a MiniBind candidate read with
            :func:`~mars_core.encoders.minibind.load_minibind`; each checkpoint must have been trained on it.

    Returns:
        the :class:`~mars_core.benchmark.harness.BenchmarkResult` (its ``summary`` and ``items`` hold the
        reference systems and every checkpoint).
    """
    prof = get_profile(profile)
    encoder = query_encoder if query_encoder is not None else load_query_encoder(prof)
    bank = load_or_build_query_bank(encoder, prof, build_dir=build_dir, progress=progress)
    ctx = BenchmarkContext(prof, build_dir=build_dir, bank=bank, judge=judge, progress=progress)
    checkpoints = dict(checkpoints or {"supervised": shipped_separator(prof)})
    loaded = {name: checkpoint_system(path, bank) for name, path in checkpoints.items()}
    return run_benchmark(prof, context=ctx, loaded=loaded, missing={}, splits=splits, pair_types=pair_types,
                         n_items=n_items, seed=seed, out=out, progress=progress)


def held_out_table(summary: pd.DataFrame, z: float = 1.96) -> pd.DataFrame:
    """Per test set and query: mean SI-SDRi with its normal 95 % interval (mean +- ``z`` s.e.) and the
    SDR above the query-blind ``mixture / 2``, for every learned system of a :func:`evaluate_checkpoints`
    summary.

    Columns: ``split, pairs, system, modality, si_sdri, ci_low, ci_high, sdr_over_half, n``.
    """
    s = summary[~summary["system"].isin(REFERENCE_SYSTEMS)]
    sis = s[s["metric"] == "si_sdri"].set_index(["split", "pairs", "system", "modality"])
    sdr = s[s["metric"] == "sdr"].set_index(["split", "pairs", "system", "modality"])["mean"]
    half = summary[(summary["system"] == "mixture / 2") & (summary["metric"] == "sdr")].set_index(["split", "pairs"])["mean"]
    rows = []
    for key, r in sis.iterrows():
        split, pairs = key[0], key[1]
        rows.append({"split": split, "pairs": pairs, "system": key[2], "modality": key[3], "si_sdri": r["mean"],
                     "ci_low": r["mean"] - z * r["sem"], "ci_high": r["mean"] + z * r["sem"],
                     "sdr_over_half": sdr[key] - half[(split, pairs)], "n": int(r["n"])})
    return pd.DataFrame(rows, columns=["split", "pairs", "system", "modality", "si_sdri", "ci_low", "ci_high",
                                       "sdr_over_half", "n"])
