"""Separate your own audio file with a text, image or audio query.

Modules: ``files`` (checking, reading and writing files), ``query`` (the user's queries and their
embeddings), ``overlap`` (overlap-add, level gain, blocks), ``run`` (:func:`separate`, the model),
``cli`` (the command line; ``__main__`` runs it). Every name below is re-exported here.

Command line (one output file per query; ``--residual`` adds mixture minus the estimates)::

    python -m mars_core.separate MIX.wav --text "a violin" [--text "a piano"] [--image IMG.png]
        [--audio QUERY.wav] [--profile cpu] [--checkpoint PATH] [--out OUT.wav]
        [--device auto|cpu|cuda] [--residual]

and the same from Python: :func:`separate` (files) or :func:`separate_waveform` (arrays).

What happens to the file:

1. it is read with ``soundfile`` (WAV, FLAC, OGG; integer or float samples; any rate) and
   checked: unreadable, empty, NaN/infinite or all-silent files raise
   :class:`SeparationInputError` naming the file (the command prints one line and exits 2);
2. every channel is separated on its own (a stereo file gives a stereo estimate), after
   resampling to the profile's rate with :func:`mars_core.inputs.resample_to` (band-limited sinc of
   ``torchaudio.functional.resample``) and a whole-file gain to the benchmark's level (:data:`INPUT_RMS_DBFS`; undone on output,
   so the estimate has the file's own level);
3. any length: the signal is cut into the separator's segments (``profile.audio.segment_samples``)
   with 50 % overlap, each segment's estimate is weighted by a Hann window and the sum is divided
   by the summed windows (:func:`overlap_add`), so an all-pass separator returns the input exactly.
   Segments go through the model ``batch_size`` at a time. A long file is read, separated and written
   :data:`BLOCK_SECONDS` at a time, each block with one segment of context on both sides and
   neighbouring blocks cross-faded (:func:`separate_blocks`), so memory does not grow with its length;
4. estimates are resampled back to the file's rate and written with its length, rate, channel
   count and (for the same container) sample format. The separator only sees the band below half the
   profile's rate (4 kHz at ``smoke``/``cpu``), so an estimate has no content above it; the residual
   ``mixture - sum(estimates)`` is computed at the file's rate and keeps everything above that band.

The separator is the shipped ``checkpoints/separator_<profile>.pt`` (``cpu``), a ``--checkpoint``
written by :func:`mars_core.supervised.save_separator` (supervised or RL ``final.pt``), or, for a
profile without a shipped one, :func:`mars_core.supervised.load_or_train` (trained on first use on
the offline benchmark). Queries are embedded by the profile's query encoder
(:func:`mars_core.encoders.load.load_query_encoder`, the shipped MiniBind), the one the separator was
trained with; a checkpoint trained with another encoder is refused.
"""

from __future__ import annotations

from .cli import main
from .files import SILENT_PEAK, AudioFileInfo, SeparationInputError, check_audio_file, read_audio, read_image, write_subtype
from .overlap import (INPUT_RMS_DBFS, block_plan, level_gain, overlap_add, segment_hop, separate_blocks,
                      separate_waveform)
from .query import QUERY_KINDS, Query, embed_queries
from .run import (BLOCK_SECONDS, CROSSFADE_SECONDS, DEFAULT_PROFILE, RESAMPLE_CONTEXT_SECONDS, load_model, output_paths,
                  resolve_device, separate)

__all__ = ["AudioFileInfo", "BLOCK_SECONDS", "CROSSFADE_SECONDS", "DEFAULT_PROFILE", "INPUT_RMS_DBFS", "QUERY_KINDS",
           "RESAMPLE_CONTEXT_SECONDS", "SILENT_PEAK", "Query", "SeparationInputError", "block_plan", "check_audio_file",
           "embed_queries", "level_gain", "load_model", "main", "output_paths", "overlap_add", "read_audio",
           "read_image", "resolve_device", "segment_hop", "separate", "separate_blocks", "separate_waveform",
           "write_subtype"]
