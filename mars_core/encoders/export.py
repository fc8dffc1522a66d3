"""The record of a shipped MiniBind checkpoint: float16 weights, test-split retrieval metrics of the
reloaded model, reference embeddings of fixed inputs, the command, machine and data fingerprint.

What ``python -m mars_core.encoders.train`` writes next to ``checkpoints/*.pt`` (see checkpoints/README.md);
the reference embeddings let a test check that a shipped file still loads to the same model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..config import Profile
from ..data.manifest import write_json_atomic
from ..runs import data_fingerprint
from .minibind import MiniBind, load_minibind, save_minibind
from .retrieval import evaluate_retrieval
from .train_config import TrainConfig


def reference_inputs(model: MiniBind) -> dict[str, Any]:
    """Fixed inputs for checking a shipped checkpoint: a 2 s tone + seeded noise, a prompt, a seeded image."""
    g = torch.Generator().manual_seed(0)
    n = 2 * model.sample_rate
    t = torch.arange(n, dtype=torch.float32) / model.sample_rate
    wav = 0.3 * torch.sin(2 * math.pi * 440.0 * t) + 0.05 * torch.randn(n, generator=g)
    image = torch.randint(0, 256, (1, 224, 224, 3), generator=g, dtype=torch.int64).to(torch.uint8)
    return {"audio": wav[None], "text": ["the sound of a violin"], "image": image}


@torch.no_grad()
def reference_embeddings(model: MiniBind, n: int = 8) -> dict[str, list[float]]:
    """First ``n`` coordinates of the embeddings of :func:`reference_inputs`."""
    x = reference_inputs(model)
    with model.eval_mode():
        return {
            "audio": model.embed_audio(x["audio"], model.sample_rate)[0, :n].tolist(),
            "text": model.embed_text(x["text"])[0, :n].tolist(),
            "image": model.embed_image(x["image"])[0, :n].tolist(),
        }


def machine_description() -> str:
    """CPU model, logical cores and torch threads (for the metrics record)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} logical cores; torch {torch.__version__}, {torch.get_num_threads()} threads"


def export_checkpoint(model: MiniBind, history: dict, out: str | os.PathLike, *, profile: Profile, role: str,
                      config: TrainConfig, build_dir: Path, command: str, progress: bool = True) -> dict:
    """Save ``model`` as float16 to ``out``, reload it, evaluate the reloaded model on the
    test splits, store the metrics in the checkpoint and in ``out.json``; return the record."""
    out = Path(out)
    save_minibind(out, model)
    reloaded = load_minibind(out)
    table = evaluate_retrieval(reloaded, build_dir)
    record = {
        "role": role,
        "profile": profile.name,
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(history["wall_s"], 1),
        "machine": machine_description(),
        "parameters": reloaded.num_parameters(),
        "encoder": asdict(reloaded.encoder_config),
        "sample_rate": reloaded.sample_rate,
        "train": asdict(config),
        "data": data_fingerprint(build_dir),
        "best_step": history["best_step"],
        "val_best": {k: history[f"val_{k}"][history["val_step"].index(history["best_step"])]
                     for k in ("a2t", "a2i", "score", "margin")},
        "metrics": json.loads(table.to_json(orient="records")),
        "reference": reference_embeddings(reloaded),
    }
    save_minibind(out, model, metrics=record, history=history)
    record["checkpoint_bytes"] = out.stat().st_size
    record["checkpoint_sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    write_json_atomic(out.with_suffix(".json"), record)
    return record
