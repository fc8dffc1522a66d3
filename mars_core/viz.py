"""Plots and audio players for the notebooks.

Plot functions take an ``ax`` (created if ``None``), draw, and return it; they never
call ``plt.show()`` and save nothing unless asked. Audio players share one peak
across every signal they show, so a quiet estimate stays quiet next to its mixture.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _np(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def shared_peak(signals: Mapping[str, object]) -> float:
    """Largest absolute sample over all signals (1.0 if they are all silent)."""
    peak = max((float(np.max(np.abs(_np(s)))) if _np(s).size else 0.0) for s in signals.values())
    return peak if peak > 0 else 1.0


def audio_players(signals: Mapping[str, object], sample_rate: int, peak: float | None = None):
    """HTML table of ``IPython.display.Audio`` players scaled by one shared peak.

    Args:
        signals: ``{label: waveform (samples,)}``, e.g. mixture, reference, estimate.
        peak: scale; default :func:`shared_peak` of ``signals``.

    Returns an ``IPython.display.HTML`` object (renders in JupyterLab and as static HTML).
    """
    from IPython.display import HTML, Audio

    peak = peak or shared_peak(signals)
    cells = []
    for label, wav in signals.items():
        scaled = np.clip(_np(wav).astype(np.float64) / peak, -1.0, 1.0)
        player = Audio(scaled, rate=sample_rate, normalize=False)._repr_html_().strip()
        cells.append(f"<td style='text-align:center'><b>{label}</b><br>{player}</td>")
    return HTML("<table><tr>" + "".join(cells) + "</tr></table>")


def plot_spectrogram(
    mag, ax=None, sample_rate: int | None = None, hop_length: int | None = None, title: str = "",
    db: bool = True, warped: bool = False, vmin: float | None = -80.0, cmap: str = "magma",
):
    """Draw a magnitude spectrogram (freq x frames) in dB re its maximum.

    Shape:
        mag: ``(freq, frames)``.
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5, 3))[1]
    m = _np(mag).astype(np.float64)
    if db:
        m = 20 * np.log10(np.maximum(m, 1e-10) / max(m.max(), 1e-10))
    extent = None
    if sample_rate and hop_length and not warped:
        extent = (0, m.shape[1] * hop_length / sample_rate, 0, sample_rate / 2 / 1000)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (kHz)")
    else:
        ax.set_xlabel("frame")
        ax.set_ylabel("log-frequency row" if warped else "frequency bin")
    im = ax.imshow(m, origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=vmin if db else None)
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="dB" if db else "")
    return ax


def plot_mask(mask, ax=None, title: str = "", cmap: str = "viridis"):
    """Draw a mask in [0, 1] (freq x frames)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5, 3))[1]
    im = ax.imshow(_np(mask), origin="lower", aspect="auto", vmin=0, vmax=1, cmap=cmap)
    ax.set_title(title)
    ax.set_xlabel("frame")
    ax.set_ylabel("row")
    ax.figure.colorbar(im, ax=ax)
    return ax


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] = (), ncols: int = 6, size: float = 1.6):
    """A figure with one axis per image (uint8 ``(H, W, 3)``); returns the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, list(titles) + [""] * n):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_warp_curve(n_linear: int, n_warped: int, ax=None):
    """Which linear-frequency bin each warped row reads (the log-frequency warp)."""
    import matplotlib.pyplot as plt

    from .audio import warp_source_coords

    ax = ax or plt.subplots(figsize=(4, 3))[1]
    rows = np.arange(n_warped)
    src_bin = (warp_source_coords(n_warped) + 1) / 2 * (n_linear - 1)
    ax.plot(rows, src_bin)
    ax.plot(rows, rows * (n_linear - 1) / (n_warped - 1), "--", color="grey", label="identity (linear)")
    ax.set_xlabel("warped row")
    ax.set_ylabel("linear STFT bin read")
    ax.legend()
    return ax
