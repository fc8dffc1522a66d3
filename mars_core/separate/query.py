"""A user's query (text, image or audio file) and its embedding by the profile's query encoder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .files import SeparationInputError, check_audio_file, read_audio, read_image

QUERY_KINDS = ("text", "image", "audio")


@dataclass(frozen=True)
class Query:
    """One query: ``kind`` is ``text`` (``value`` the text), ``image`` or ``audio`` (``value`` a path)."""

    kind: str
    value: str

    def __post_init__(self):
        if self.kind not in QUERY_KINDS:
            raise SeparationInputError(f"query kind must be one of {QUERY_KINDS}, got {self.kind!r}")
        if not str(self.value).strip():
            raise SeparationInputError(f"empty {self.kind} query")

    def check(self) -> None:
        """Raise :class:`SeparationInputError` now if the query's file is missing or unusable."""
        if self.kind == "image":
            read_image(self.value)
        elif self.kind == "audio":
            check_audio_file(self.value)

    @property
    def slug(self) -> str:
        """File-name part derived from the query: ``a-violin``, ``image-cat``, ``audio-flute``."""
        base = self.value if self.kind == "text" else f"{self.kind}-{Path(self.value).stem}"
        slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:48].strip("-")
        return slug or self.kind


@torch.no_grad()
def embed_queries(encoder, queries: Sequence[Query]) -> torch.Tensor:
    """Unit-norm query embeddings with the profile's query encoder (what the separator was trained on).

    An audio query is read like the mixture (checked, channels averaged) and resampled to the
    encoder's rate.

    Shape:
        returns ``(len(queries), D)`` float32 on the CPU.
    """
    rows = []
    with encoder.eval_mode():
        for q in queries:
            if q.kind == "image":
                material = read_image(q.value)
            elif q.kind == "audio":
                wav, sr = read_audio(q.value)
                material = torch.from_numpy(wav.mean(axis=1))
            try:
                if q.kind == "text":
                    e = encoder.embed_text([q.value])
                elif q.kind == "image":
                    e = encoder.embed_image([material])
                else:
                    e = encoder.embed_audio([material], sr, resample=True)
            except ValueError as exc:  # e.g. an audio query shorter than the encoder's window
                raise SeparationInputError(f"{q.value}: cannot be used as {'an' if q.kind[0] in 'ai' else 'a'} {q.kind} query ({exc})") from exc
            rows.append(e.float().cpu())
    return F.normalize(torch.cat(rows), dim=-1)
