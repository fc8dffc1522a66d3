"""Listen to the benchmark: one test item, one query, several systems, side by side.

:func:`listening_widget` shows the query (prompt text, image, and a clip of the audio
query), the mixture, the reference and each system's estimate as audio players scaled by
**one shared peak** (:func:`mars_core.viz.shared_peak`, so a quiet estimate stays quiet
next to its mixture), with the item's metrics. With ipywidgets in a live kernel the test
set, item, query and systems are picked with controls; otherwise (no ipywidgets, no kernel,
``MARS_STATIC=1``, or under pytest/nbval) it returns the same view as static HTML: a pandas
table and static players.
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import viz
from ..data.manifest import benchmark_dir, read_table
from ..data.verify import read_clip
from ..queries import EVAL_MODALITIES
from .harness import item_signals

STATIC_ENV = "MARS_STATIC"
"""Set to 1 to force the static view (CI, papermill, exported HTML)."""
TABLE_METRICS = ("sdr", "sir", "sar", "si_sdri", "semantic", "contamination", "semantic_margin")
"""Columns of the per-item metric table (those present)."""
ORACLES = ("oracle IBM", "oracle IRM")


def static_mode() -> bool:
    """True when widgets cannot be interactive: ``MARS_STATIC`` set (not ``0``), running under pytest
    (nbval's kernel inherits ``PYTEST_CURRENT_TEST``), ipywidgets missing, or no IPython kernel."""
    flag = os.environ.get(STATIC_ENV, "").strip().lower()
    if flag and flag not in ("0", "false", "no"):
        return True
    if "PYTEST_CURRENT_TEST" in os.environ:
        return True
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or getattr(shell, "kernel", None) is None


def players(signals: Mapping[str, Any], sample_rate: int):
    """Audio players of every signal, all divided by one shared peak (:func:`mars_core.viz.shared_peak`)."""
    return viz.audio_players(signals, sample_rate, peak=viz.shared_peak(signals))


def _image_html(image: np.ndarray, width: int = 96) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return f"<img width={width} src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>"


def query_material(result, test_set: str, index: int) -> dict[str, Any]:
    """The item's queries: prompt text, query image, and the first clip of its audio query
    (the audio query is the mean embedding of all the class's other clips; one is played)."""
    ts = result.test_sets[test_set]
    es = ts.eval_set
    ref, meta = es.refs[index], es.meta.iloc[index]
    build = result.context.build_dir or benchmark_dir(result.profile.name)
    table = read_table(build, "audio", ts.split).set_index("clip_id")
    clip = ref.audio_ids[0] if ref.audio_ids else None
    audio = None
    if clip is not None and clip in table.index:
        audio = read_clip(os.path.join(build, table.loc[clip, "path"]))  # checked against the manifest
    return {"text": ref.text, "image": es.images[index], "audio_clip": clip, "audio": audio,
            "n_audio_clips": len(ref.audio_ids), "target": meta["target"], "interferer": meta["interferer"],
            "interferer_text": meta.get("interferer_text", "")}


def item_metrics(result, test_set: str, index: int, modality: str, systems: Sequence[str]) -> pd.DataFrame:
    """The item's rows of ``result.items``: the mixture, the chosen systems (their ``modality`` query)."""
    split, pairs = test_set.split("/")
    it = result.items
    sel = it[(it["split"] == split) & (it["pairs"] == pairs) & (it["item"] == index)
             & it["system"].isin(["mixture", *systems]) & it["modality"].isin([modality, "-"])]
    cols = ["system", "modality", *[m for m in TABLE_METRICS if m in it.columns]]
    return sel[cols].reset_index(drop=True)


def listening_signals(result, test_set: str, index: int, modality: str,
                      systems: Sequence[str]) -> dict[str, np.ndarray]:
    """``{label: waveform}`` in display order: audio query clip, mixture, reference, then each system."""
    learned = [s for s in systems if s in result.systems]
    sig = item_signals(result, test_set, index, modality, learned)
    q = query_material(result, test_set, index)
    out = {} if q["audio"] is None else {f"audio query ({q['audio_clip']})": q["audio"]}
    out.update({"mixture": sig["mixture"], "reference (target)": sig["target"]})
    out.update({s: sig[s] for s in systems if s in sig})
    return out


def listening_view(result, test_set: str = "test/random", index: int = 0, modality: str = "text",
                   systems: Sequence[str] | None = None):
    """The static view of one item (``IPython.display.HTML``): queries, shared-peak players, metric table."""
    from IPython.display import HTML

    if modality not in EVAL_MODALITIES:
        raise ValueError(f"modality must be one of {EVAL_MODALITIES}, got {modality!r}")
    if test_set not in result.test_sets:
        raise KeyError(f"test set {test_set!r} not in this run ({list(result.test_sets)})")
    n = len(result.test_sets[test_set].eval_set)
    if not 0 <= index < n:
        raise IndexError(f"item {index} out of range for {n} items of {test_set}")
    systems = list(systems if systems is not None else [*result.systems, "oracle IRM"])
    q = query_material(result, test_set, index)
    table = item_metrics(result, test_set, index, modality, systems)
    head = (f"<h4>{test_set} · item {index}: target <i>{q['target']}</i> + interferer <i>{q['interferer']}</i></h4>"
            f"<p><b>{modality} query.</b> text: “{q['text']}” · image: "
            f"{'n/a (this data has no images)' if q['image'] is None else _image_html(q['image'])} · audio: mean "
            f"embedding of {q['n_audio_clips']} other clip(s) of the class (one is played) · interferer's prompt "
            f"(contamination): “{q['interferer_text']}”</p>")
    sig = players(listening_signals(result, test_set, index, modality, systems), result.profile.audio.sample_rate)
    return HTML(head + sig.data + table.to_html(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))


def listening_widget(result, test_set: str = "test/random", index: int = 0, modality: str = "text",
                     systems: Sequence[str] | None = None, static: bool | None = None):
    """Pick a test item, a query and systems; listen with one shared peak and read the metrics.

    Returns an ``ipywidgets.VBox`` in a live kernel, else (``static`` True, or :func:`static_mode`)
    the static :func:`listening_view` of the given item.
    """
    if static is None:
        static = static_mode()
    systems = list(systems if systems is not None else [*result.systems, "oracle IRM"])
    if static:
        return listening_view(result, test_set, index, modality, systems)
    import ipywidgets as W
    from IPython.display import display

    sets = W.Dropdown(options=list(result.test_sets), value=test_set, description="test set")
    item = W.Dropdown(description="item")
    query = W.ToggleButtons(options=list(EVAL_MODALITIES), value=modality, description="query")
    chosen = W.SelectMultiple(options=[*result.systems, *ORACLES], value=tuple(systems), description="systems")
    out = W.Output()

    def items_of(name: str) -> list[tuple[str, int]]:
        meta = result.test_sets[name].eval_set.meta
        return [(f"{i}: {t} + {f}", i) for i, (t, f) in enumerate(zip(meta["target"], meta["interferer"]))]

    def render(*_):
        with out:
            out.clear_output(wait=True)
            display(listening_view(result, sets.value, item.value, query.value, list(chosen.value)))

    def on_set(*_):
        item.options = items_of(sets.value)
        item.value = 0

    item.options, item.value = items_of(test_set), index
    sets.observe(on_set, names="value")
    for w in (item, query, chosen):
        w.observe(render, names="value")
    render()
    return W.VBox([W.HBox([sets, item]), query, chosen, out])
