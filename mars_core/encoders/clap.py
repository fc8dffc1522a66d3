"""The CLAP judge: the paper's semantic score at ``full`` size, from a checkpoint the user supplies.

The paper scores separations with CLAP (docs/method.md section 8) but does not name a checkpoint. We
use LAION-CLAP through its maintained implementation in Hugging Face ``transformers`` (``ClapModel``,
``ClapProcessor``), and document :data:`DEFAULT_CHECKPOINT`, ``laion/clap-htsat-unfused``: LAION-CLAP's
HTSAT-tiny audio tower and RoBERTa-base text tower trained on LAION-Audio-630K (Wu et al. 2023,
arXiv 2211.06687), converted by Hugging Face; Apache-2.0; ``pytorch_model.bin`` about 615 MB. It is
the unfused model, which embeds a clip of up to 10 s in one deterministic pass (the fused model adds
a random-crop branch meant for longer clips). Any ``transformers`` CLAP directory loads the same way.

Nothing is ever downloaded: :func:`load_clap_judge` reads a local directory
(``from_pretrained(path, local_files_only=True)``); docs/environment.md section 7 says how to fetch it
on another machine. :func:`mars_core.encoders.load.load_judge` returns this judge at ``full`` when
``$MARS_CLAP`` (or ``--clap PATH``) names such a directory.

What a waveform goes through, deterministically:

1. resampled to CLAP's rate (48 kHz) when ``resample=True`` (:func:`resample_for_clap`; without it
   another rate raises, like every encoder here);
2. longer than the feature extractor's window (10 s): its **first** 10 s are kept (the extractor would
   pick a random crop);
3. the checkpoint's own feature extractor: log-mel, shorter clips repeated then zero-padded to 10 s;
   ``is_longer`` is always ``False`` (true after step 2; the extractor would set one at random).

The judge has no image tower: it has no ``embed_image``, and
:class:`mars_core.evaluation.evaluate.JudgeScorer` then reports the image score as NaN.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio.functional as AF

from ..precision import autocast
from .base import as_text_list, as_waveform_list, eval_mode_of

try:
    from transformers import ClapModel, ClapProcessor
except ImportError as exc:  # pinned in requirements.txt; say so rather than fail on a bare name
    raise ImportError("mars_core.encoders.clap needs Hugging Face transformers (pinned in requirements.txt: "
                      "pip install transformers==5.25.0)") from exc

DEFAULT_CHECKPOINT = "laion/clap-htsat-unfused"
"""The Hugging Face name of the CLAP checkpoint we document for the ``full`` judge (module docstring)."""
TEXT_MAX_TOKENS = 77
"""Prompt length in tokens, LAION-CLAP's (longer prompts are truncated)."""

_HOW_TO_GET = (f"download a transformers CLAP checkpoint on a machine with internet, e.g. "
               f"`hf download {DEFAULT_CHECKPOINT} --local-dir DIR` (about 0.6 GB, Apache-2.0), "
               f"copy DIR here and set MARS_CLAP=DIR or pass --clap DIR (docs/environment.md section 7)")


KAISER_BEST = dict(lowpass_filter_width=64, rolloff=0.9475, resampling_method="sinc_interp_kaiser",
                   beta=14.769656459379492)
"""torchaudio's settings of resampy's ``kaiser_best`` filter (images of the source band below -150 dB)."""


def resample_for_clap(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling with a long Kaiser-windowed sinc (:data:`KAISER_BEST`).

    Not the encoders' default (:func:`mars_core.encoders.preprocess.resample`, 6 zero crossings): upsampled
    8 or 16 kHz audio keeps that filter's spectral images at about -70 dB above the source's Nyquist,
    where CLAP's log-mel (64 bands up to 14 kHz, floored at -100 dB, no ``top_db``) would read them as
    content. Measured on tones and noise at 8 kHz: images at -71 dB with the default, -160 dB with this one.

    Shape:
        wav: ``(..., n)``; returns ``(..., ceil(n * new_sr / orig_sr))``.
    """
    if int(orig_sr) == int(new_sr):
        return wav
    return AF.resample(wav, int(orig_sr), int(new_sr), **KAISER_BEST)


class ClapJudge(nn.Module):
    """A CLAP model with the judge interface of :func:`mars_core.encoders.judge.semantic_score`.

    ``embed_audio`` and ``embed_text`` return L2-normalised float32 ``(N, D)`` embeddings on the
    model's device; ``.to(device)`` moves the model, :meth:`eval_mode` is the encoders' context.

    Args:
        model: a ``transformers.ClapModel`` (put in eval mode here).
        processor: its ``ClapProcessor`` (feature extractor + RoBERTa tokenizer).
        source: where it was loaded from (for messages).
    """

    modalities = ("audio", "text")

    def __init__(self, model: ClapModel, processor: ClapProcessor, source: str = ""):
        super().__init__()
        self.model = model.eval()
        self.feature_extractor = processor.feature_extractor
        self.tokenizer = processor.tokenizer
        self.source = source
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        """Native audio rate in Hz (48 kHz for LAION-CLAP)."""
        self.max_samples = int(self.feature_extractor.nb_max_samples)
        """Samples the audio tower sees at once (10 s); longer clips keep their first ``max_samples``."""
        self.embed_dim = int(model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if torch.is_floating_point(p)).dtype

    def prepare_audio(self, waveforms: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """1-D float waveforms at :attr:`sample_rate` -> model inputs on the model's device.

        Shape:
            returns ``input_features (N, 1, frames, mel_bins)`` (``frames`` = 1001 for 10 s at hop 480)
            and ``is_longer (N, 1)`` bool, all ``False``.
        """
        clips = [w[: self.max_samples].detach().float().cpu().numpy() for w in waveforms]
        feats = self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt")
        x = feats["input_features"].to(self.device, self.dtype)
        return {"input_features": x, "is_longer": torch.zeros(len(clips), 1, dtype=torch.bool, device=self.device)}

    def prepare_text(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Strings -> ``input_ids`` and ``attention_mask`` ``(N, L)`` on the model's device (``L <= 77``)."""
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt")
        return {k: tok[k].to(self.device) for k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def embed_audio(self, waveforms: Any, sample_rate: int, *, batch_size: int = 32,
                    resample: bool = False) -> torch.Tensor:
        """Embed mono waveforms (module docstring: resampling, cropping, padding).

        Args:
            waveforms: ``(N, T)`` / ``(T,)`` float tensor or array, or a list of 1-D ones.
            sample_rate: their rate in Hz; must equal :attr:`sample_rate` unless ``resample``.

        Shape:
            returns ``(N, D)`` float32, unit L2 norm, on the model's device.

        Raises:
            ValueError: another rate without ``resample=True`` (naming both), empty batch, NaN/inf, ...
        """
        items = as_waveform_list(waveforms)
        if int(sample_rate) != self.sample_rate:
            if not resample:
                raise ValueError(f"audio is at {sample_rate} Hz but the CLAP judge's native rate is {self.sample_rate} Hz; "
                                 f"pass resample=True (mars_core.encoders.clap.resample_for_clap, a long Kaiser "
                                 f"filter) or give {self.sample_rate} Hz audio")
            items = [resample_for_clap(w.float(), int(sample_rate), self.sample_rate) for w in items]
        out = []
        for lo in range(0, len(items), batch_size):
            inputs = self.prepare_audio(items[lo: lo + batch_size])
            with autocast(self.device):
                out.append(self.model.get_audio_features(**inputs).pooler_output.float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embed prompts. Shape: returns ``(N, D)`` float32, unit L2 norm, on the model's device.

        Raises:
            ValueError: an empty or whitespace-only prompt, an empty batch.
        """
        texts = as_text_list(texts)
        out = []
        for lo in range(0, len(texts), batch_size):
            inputs = self.prepare_text(texts[lo: lo + batch_size])
            with autocast(self.device):
                out.append(self.model.get_text_features(**inputs).pooler_output.float())
        return F.normalize(torch.cat(out), dim=-1)

    def eval_mode(self):
        """Temporarily switch to eval mode (restores the previous mode): ``with encoder.eval_mode(): ...``."""
        return eval_mode_of(self)


_NEEDED_FILES = {
    "weights": (("model.safetensors",), ("pytorch_model.bin",), ("model.safetensors.index.json",),
                ("pytorch_model.bin.index.json",)),
    "feature extractor": (("preprocessor_config.json",), ("processor_config.json",)),
    "tokenizer": (("tokenizer.json",), ("vocab.json", "merges.txt")),
}
"""What a CLAP directory must hold besides ``config.json``: per part, alternative sets of files. Checked by
hand because transformers 5 builds a default five-token tokenizer, without an error, when its files are absent."""


def check_clap_dir(path: str | os.PathLike) -> Path:
    """``path`` as a resolved directory holding a transformers CLAP checkpoint (``config.json`` with
    ``"model_type": "clap"``, the weights, the feature extractor and the tokenizer), else a clear error.

    Raises:
        FileNotFoundError: no such directory, or a part missing in it (named, with what to download).
        ValueError: ``config.json`` is not a CLAP model's.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"CLAP checkpoint {p}: no such directory; {_HOW_TO_GET}")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"CLAP checkpoint {p}: no config.json, so this is not a Hugging Face model directory; "
                                f"{_HOW_TO_GET}")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ValueError(f"CLAP checkpoint {p}: config.json is not a JSON object ({exc}); {_HOW_TO_GET}") from exc
    if model_type != "clap":
        raise ValueError(f"CLAP checkpoint {p}: config.json says model_type {model_type!r}, not 'clap'; {_HOW_TO_GET}")
    missing = [f"{part} ({' or '.join(' + '.join(names) for names in options)})"
               for part, options in _NEEDED_FILES.items()
               if not any(all((p / n).is_file() for n in names) for names in options)]
    if missing:
        raise FileNotFoundError(f"CLAP checkpoint {p} is incomplete: no {', no '.join(missing)}; {_HOW_TO_GET}")
    return p.resolve()


def load_clap_judge(path: str | os.PathLike) -> ClapJudge:
    """The CLAP judge (eval mode, CPU, float32) from a local transformers CLAP directory; never downloads.

    Raises:
        FileNotFoundError: the directory, its config, weights, feature extractor or tokenizer is missing.
        ValueError: the directory holds another kind of model.
    """
    p = check_clap_dir(path)
    try:
        model = ClapModel.from_pretrained(p, local_files_only=True)
        processor = ClapProcessor.from_pretrained(p, local_files_only=True)
    except OSError as exc:  # transformers' word for a missing file in the directory
        raise FileNotFoundError(f"CLAP checkpoint {p} is incomplete ({exc}); it needs the weights, "
                                f"preprocessor_config.json and the tokenizer files: {_HOW_TO_GET}") from exc
    return ClapJudge(model, processor, source=str(p)).eval()
