"""The CLIP byte-level BPE tokenizer that ImageBind's text tower reads.

Pipeline for one string (reproduces ImageBind's ``SimpleTokenizer`` at its HEAD):

1. clean: ``ftfy.fix_text``, ``html.unescape`` twice, strip, collapse whitespace, lowercase;
2. split with the CLIP pattern (``'s 't 're 've 'm 'll 'd``, runs of letters, single
   digits, runs of other non-space characters, the two special tokens);
3. each piece -> UTF-8 bytes -> printable "byte characters" -> BPE merges by lowest rank,
   the last symbol carrying the end-of-word marker ``</w>``;
4. sequence ``[SOT] + ids`` truncated to ``context_length - 1`` entries, then ``EOT``,
   zero-padded to ``context_length`` (so EOT always survives, at ``min(len(ids) + 1, 76)``).

Bounded work on long prompts (ours; ImageBind's tokenizer runs BPE over the whole string, and BPE
is quadratic in the length of a piece: a 20,000-character prompt took seconds). Only
``context_length - 2`` ids can reach the output and every piece gives at least one id, so
:meth:`BPETokenizer.__call__` stops splitting after the piece that fills the context; and a piece
longer than :data:`MAX_PIECE_BYTES` bytes (no word is: the longest vocabulary token has 32 byte
characters) is cut to that many bytes before BPE. Every id of an ordinary prompt is unchanged; a
pathological run of letters without spaces may differ in the ids around its cut. Cleaning (step 1)
stays linear in the prompt's length.

The merges file ships in ``assets/`` (OpenAI CLIP's, MIT; see ``assets/README.md``).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

VOCAB_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
SOT_TOKEN, EOT_TOKEN = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
MAX_PIECE_BYTES = 256
"""Longest pre-split piece (in UTF-8 bytes) that goes through BPE whole; longer ones are cut first."""
N_MERGES = 49152 - 256 - 2  # merges used from the file (lines 1 .. 48894)

_SPLIT_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)


@lru_cache(maxsize=None)
def byte_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character (GPT-2/CLIP convention).

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to themselves;
    the other 68 bytes map, in increasing order, to ``chr(256)``, ``chr(257)``, ...
    The dict's order (printable bytes first, then the 68 others) is the order of the
    first 256 vocabulary ids.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def clean_text(text: str) -> str:
    """ftfy fix, HTML-unescape twice, strip, collapse whitespace, lowercase."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def _bpe_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Repeatedly merge the adjacent pair with the lowest rank until none is mergeable."""
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


class BPETokenizer:
    """CLIP BPE tokenizer: ``tokenizer(["a dog"]) -> LongTensor (1, 77)``.

    Args:
        vocab_path: gzip merges file; defaults to the bundled CLIP file (hash-checked).
        context_length: output length (77 for ImageBind).
    """

    def __init__(self, vocab_path: str | Path | None = None, context_length: int = CONTEXT_LENGTH):
        import regex

        path = Path(vocab_path) if vocab_path is not None else VOCAB_PATH
        raw = path.read_bytes()
        if vocab_path is None and hashlib.sha256(raw).hexdigest() != VOCAB_SHA256:
            raise RuntimeError(f"{path} is corrupted: its sha256 is not {VOCAB_SHA256}")
        lines = gzip.decompress(raw).decode("utf-8").split("\n")[1 : N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        chars = list(byte_to_unicode().values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.pattern = regex.compile(_SPLIT_PATTERN, regex.IGNORECASE)
        self.context_length = context_length
        self.sot_id, self.eot_id = self.encoder[SOT_TOKEN], self.encoder[EOT_TOKEN]
        self._cache: dict[str, list[str]] = {SOT_TOKEN: [SOT_TOKEN], EOT_TOKEN: [EOT_TOKEN]}

    @property
    def vocab_size(self) -> int:
        """Number of token ids (49408 for CLIP)."""
        return len(self.encoder)

    def bpe(self, piece: str) -> list[str]:
        """BPE symbols of one pre-split piece already mapped to byte characters."""
        if piece not in self._cache:
            symbols = list(piece[:-1]) + [piece[-1] + "</w>"]
            self._cache[piece] = _bpe_merge(symbols, self.ranks)
        return self._cache[piece]

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids of ``text`` without SOT/EOT; with ``max_tokens``, the first ``max_tokens`` ids only,
        splitting and BPE-merging no further than needed (pieces cut to :data:`MAX_PIECE_BYTES`)."""
        ids: list[int] = []
        for match in self.pattern.finditer(clean_text(text)):
            if max_tokens is not None and len(ids) >= max_tokens:
                break
            raw = match.group().encode("utf-8")[:MAX_PIECE_BYTES]
            chars = "".join(self.byte_encoder[b] for b in raw)
            ids.extend(self.encoder[s] for s in self.bpe(chars))
        return ids if max_tokens is None else ids[:max_tokens]

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of :meth:`encode` up to cleaning (``</w>`` becomes a space)."""
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in (0, self.sot_id, self.eot_id))
        words = [bytearray(self.byte_decoder[c] for c in w).decode("utf-8", errors="replace") for w in text.split("</w>")]
        return " ".join(words).strip()

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Tokenize a string or a list of strings.

        Shape:
            returns ``(len(texts), context_length)`` int64; a single string gives ``(1, L)``.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            seq = ([self.sot_id] + self.encode(text, self.context_length - 2))[: self.context_length - 1] + [self.eot_id]
            out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out


@lru_cache(maxsize=4)
def get_tokenizer(vocab_path: str | None = None, context_length: int = CONTEXT_LENGTH) -> BPETokenizer:
    """A cached :class:`BPETokenizer` (building one reads 49k merges, about 0.3 s)."""
    return BPETokenizer(vocab_path, context_length)
