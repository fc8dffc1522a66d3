"""Tri-modal encoders: the interface, ImageBind (vision/text/audio) and its input pipelines.

>>> from mars_core.encoders import from_pretrained
>>> model = from_pretrained("path/to/imagebind_huge.pth")            # doctest: +SKIP
>>> model.embed_audio(wavs, sample_rate=16000)                       # doctest: +SKIP
"""

from .base import TriModalEncoder
from .hub import OFFICIAL_HUGE_URL, ChecksumError, DownloadError, download_checkpoint, from_pretrained
from .imagebind import CONFIGS, ImageBind, ImageBindConfig, get_config
from .tokenizer import BPETokenizer, get_tokenizer

__all__ = [
    "TriModalEncoder",
    "ImageBind",
    "ImageBindConfig",
    "CONFIGS",
    "get_config",
    "BPETokenizer",
    "get_tokenizer",
    "from_pretrained",
    "download_checkpoint",
    "OFFICIAL_HUGE_URL",
    "ChecksumError",
    "DownloadError",
]
