"""Listening widget: static fallback detection, one shared peak for every player, the static view."""

from __future__ import annotations

import base64
import io
import re
import sys
import types

import numpy as np
import pytest
import soundfile as sf

from mars_core.benchmark import widgets
from tests.test_benchmark import small_result


@pytest.fixture(scope="module")
def result(fake_build):
    return small_result(fake_build, n_items=2, splits=("test",))


def decoded_players(html: str) -> list[np.ndarray]:
    """Every player's samples, decoded from the base64 WAV inside the HTML (int16 -> float)."""
    out = []
    for b64 in re.findall(r"data:audio/wav;base64,([A-Za-z0-9+/=]+)", html):
        data, _ = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="int16")
        out.append(data.astype(np.float64) / 32767)
    return out


# --------------------------------------------------------------------------- static mode
def test_static_mode_detection(monkeypatch):
    import IPython

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    kernel_shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel_shell)
    assert widgets.static_mode() is False  # a live kernel with ipywidgets: interactive
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    assert widgets.static_mode() is True
    monkeypatch.setenv(widgets.STATIC_ENV, "0")
    assert widgets.static_mode() is False
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # plain Python, no kernel
    assert widgets.static_mode() is True
    monkeypatch.setattr(IPython, "get_ipython", lambda: kernel_shell)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # ipywidgets not installed
    assert widgets.static_mode() is True
    monkeypatch.delitem(sys.modules, "ipywidgets")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "x")  # nbval's kernel inherits pytest's environment
    assert widgets.static_mode() is True


# --------------------------------------------------------------------------- one shared peak
def test_players_share_one_peak():
    rng = np.random.default_rng(0)
    signals = {"mixture": 0.8 * rng.uniform(-1, 1, 800), "estimate": 0.1 * rng.uniform(-1, 1, 800),
               "loud": np.r_[np.zeros(799), -1.6]}
    peak = 1.6  # by hand: the largest |sample| over all signals
    decoded = decoded_players(widgets.players(signals, 8000).data)
    assert len(decoded) == 3
    for got, x in zip(decoded, signals.values()):
        np.testing.assert_allclose(got, x / peak, atol=1.5 / 32767)  # 16-bit rounding
    # the quiet estimate stays quiet: its loudest sample is 1/16 of the loudest player's
    assert np.abs(decoded[1]).max() == pytest.approx(np.abs(signals["estimate"]).max() / peak, abs=1e-4)


def test_players_of_silence_do_not_divide_by_zero():
    decoded = decoded_players(widgets.players({"a": np.zeros(100), "b": np.zeros(100)}, 8000).data)
    assert all((d == 0).all() for d in decoded)


# --------------------------------------------------------------------------- the static view
def test_static_view_shows_queries_players_and_metrics(result):
    view = widgets.listening_widget(result, "test/random", 1, "text", static=True)
    html = view.data
    meta = result.test_sets["test/random"].eval_set.meta.iloc[1]
    assert meta["query_text"] in html and meta["interferer_text"] in html and "data:image/png;base64" in html
    signals = widgets.listening_signals(result, "test/random", 1, "text", ["supervised", "MARS-Sep plus", "oracle IRM"])
    assert list(signals)[1:] == ["mixture", "reference (target)", "supervised", "MARS-Sep plus", "oracle IRM"]
    assert list(signals)[0].startswith("audio query (")
    peak = max(np.abs(x).max() for x in signals.values())
    decoded = decoded_players(html)
    assert len(decoded) == len(signals)
    for got, x in zip(decoded, signals.values()):
        np.testing.assert_allclose(got, np.clip(x / peak, -1, 1), atol=1.5 / 32767)
    # the metric table is the item's rows: mixture + the chosen systems for this query
    table = widgets.item_metrics(result, "test/random", 1, "text", ["supervised", "oracle IRM"])
    assert list(table["system"]) == ["mixture", "oracle IRM", "supervised"]
    it = result.items
    sdr = it[(it["split"] == "test") & (it["pairs"] == "random") & (it["item"] == 1) & (it["system"] == "supervised")
             & (it["modality"] == "text")]["sdr"].item()
    assert f"{sdr:.2f}" in html


def test_static_view_rejects_bad_choices(result):
    with pytest.raises(IndexError):
        widgets.listening_view(result, "test/random", 99)
    with pytest.raises(ValueError):
        widgets.listening_view(result, "test/random", 0, "smell")
    with pytest.raises(KeyError):
        widgets.listening_view(result, "test_timbre/hard", 0)


def test_interactive_widget_builds_and_rerenders(result):
    ipywidgets = pytest.importorskip("ipywidgets")
    box = widgets.listening_widget(result, static=False)
    assert isinstance(box, ipywidgets.VBox)
    sets, item = box.children[0].children
    query, chosen = box.children[1], box.children[2]
    assert list(sets.options) == list(result.test_sets) and len(item.options) == 2
    query.value = "omni"  # triggers a render; must not raise
    sets.value = "test/hard"
    assert item.value == 0 and item.options[0][0].startswith("0: ")
    assert set(chosen.value) == {"supervised", "MARS-Sep plus", "oracle IRM"}
