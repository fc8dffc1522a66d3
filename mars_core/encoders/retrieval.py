"""Zero-shot retrieval of a tri-modal encoder on a benchmark split.

Per split, every audio clip (whole clip, the encoder's own clip averaging) is compared
with one **class prototype** per candidate class:

* text: the mean of the class's prompt embeddings from the split's template group
  (held-out templates for ``test``/``test_timbre``), re-normalised;
* image: the mean of the class's image embeddings of the split (the held-out image
  style for test splits), re-normalised.

Metrics: audio->text and audio->image recall@1 (the own class has the highest cosine
among all candidate classes), and same-family discrimination: among the text
prototypes of the classes of the clip's own family only (clips whose family has a
single candidate class are skipped); chance levels are reported beside each number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .pairs import SplitData, load_split


def class_prototypes(emb: torch.Tensor, labels: np.ndarray, n_classes: int) -> tuple[torch.Tensor, np.ndarray]:
    """Re-normalised mean embedding per class present in ``labels``.

    Shape:
        emb: ``(N, D)``; returns ``(C', D)`` and the ``(C',)`` class ids they belong to.
    """
    present = np.array(sorted(set(labels.tolist())), dtype=np.int64)
    if len(present) == 0:
        return emb.new_zeros(0, emb.shape[1]), present
    lab = torch.from_numpy(np.array(labels, dtype=np.int64)).to(emb.device)
    protos = torch.stack([emb[lab == c].mean(dim=0) for c in present.tolist()])
    return F.normalize(protos, dim=-1), present


def recall_at_1(queries: torch.Tensor, query_labels: np.ndarray, protos: torch.Tensor, proto_labels: np.ndarray) -> float:
    """Fraction of queries whose most similar prototype is their own class.

    Queries whose class has no prototype are excluded; NaN if none is left.

    Shape:
        queries: ``(N, D)``, protos: ``(C, D)``.
    """
    keep = np.isin(query_labels, proto_labels)
    if not keep.any() or len(proto_labels) == 0:
        return float("nan")
    best = (queries[torch.as_tensor(keep)] @ protos.T).argmax(dim=1).cpu().numpy()
    return float(np.mean(proto_labels[best] == query_labels[keep]))


def family_accuracy(queries: torch.Tensor, query_labels: np.ndarray, protos: torch.Tensor, proto_labels: np.ndarray,
                    families: Sequence[str]) -> tuple[float, float, int]:
    """Accuracy of picking the own class among the prototypes of the own family's classes.

    Returns ``(accuracy, chance, n_clips)``; clips whose family has fewer than two
    prototype classes are skipped (``(nan, nan, 0)`` if none is left).
    """
    fam = np.asarray(families)
    hits, chance = [], []
    for q, c in zip(queries, query_labels):
        cand = proto_labels[fam[proto_labels] == fam[c]]
        if len(cand) < 2 or c not in cand:
            continue
        sims = protos[np.isin(proto_labels, cand)] @ q
        hits.append(cand[int(sims.argmax())] == c)
        chance.append(1.0 / len(cand))
    if not hits:
        return float("nan"), float("nan"), 0
    return float(np.mean(hits)), float(np.mean(chance)), len(hits)


@torch.no_grad()
def split_embeddings(model, data: SplitData, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Audio, text and image embeddings of a loaded split (eval mode). Shapes: ``(N_m, D)``."""
    with model.eval_mode():
        out = {
            "audio": model.embed_audio([torch.from_numpy(w) for w in data.audio], data.sample_rate, batch_size=batch_size),
            "text": model.embed_text(data.prompts),
        }
        out["image"] = model.embed_image(data.images, batch_size=batch_size) if len(data.images) else None
    return out


def retrieval_metrics(model, data: SplitData, batch_size: int = 32) -> dict[str, float]:
    """All retrieval numbers of one loaded split (see the module docstring)."""
    emb = split_embeddings(model, data, batch_size)
    n = len(data.classes)
    t_protos, t_cls = class_prototypes(emb["text"], data.prompt_labels, n)
    row = {
        "split": data.split,
        "clips": len(data.audio),
        "text_classes": len(t_cls),
        "a2t_r1": recall_at_1(emb["audio"], data.audio_labels, t_protos, t_cls),
        "a2t_chance": 1.0 / max(len(t_cls), 1),
    }
    if emb["image"] is not None:
        i_protos, i_cls = class_prototypes(emb["image"], data.image_labels, n)
        row.update(image_classes=len(i_cls), a2i_r1=recall_at_1(emb["audio"], data.audio_labels, i_protos, i_cls),
                   a2i_chance=1.0 / max(len(i_cls), 1),
                   i2t_r1=recall_at_1(emb["image"], data.image_labels, t_protos, t_cls))
    acc, chance, n_fam = family_accuracy(emb["audio"], data.audio_labels, t_protos, t_cls, data.families)
    row.update(family_clips=n_fam, family_acc=acc, family_chance=chance)
    return row


def evaluate_retrieval(model, build_dir: str | Path, splits: Sequence[str] = ("test", "test_timbre"),
                       batch_size: int = 32):
    """Retrieval table of ``model`` on ``splits`` of a build (one row per split).

    Columns: split, clips, text_classes, a2t_r1, a2t_chance, image_classes, a2i_r1,
    a2i_chance, i2t_r1, family_clips, family_acc, family_chance.

    Returns:
        a pandas DataFrame.
    """
    import pandas as pd

    rows = []
    for split in splits:
        data = load_split(build_dir, split, model.sample_rate, model.image_size)
        rows.append(retrieval_metrics(model, data, batch_size))
    return pd.DataFrame(rows)
