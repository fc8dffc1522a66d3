"""Would training the top of the pretrained image trunk place the held-out drawing style? A classifier screen.

    python scripts/trunk_probe.py --profile cpu                      # K = 0, 1, 2, 4 trained blocks
    python scripts/trunk_probe.py --profile cpu --blocks 2 --steps 600 --classes dog drums cat

Issue 16's last two failing cells are image queries for animals and percussion: MiniBind's image tower (the frozen
MobileNetV2 trunk under a trained adapter, ``EncoderConfig.image_tower="mobilenet_v2"``) places the held-out OpenMoji
pictures of ``dog`` and ``drums`` nearest other classes. Training the trunk's last K blocks inside MiniBind
(``EncoderConfig.image_trunk_train_blocks``) costs about 50 minutes of MiniBind training and 35 of a separator before
any family cell can be read. This script screens K in minutes, with the same trunk and the same trained entries:

1. for each K of ``--blocks``, the trunk's last K blocks (:class:`mars_core.encoders.mobilenet.MobileNetV2Trunk` with
   ``trainable_blocks=K``: kernels, BatchNorm scales and shifts; moving statistics fixed; no weight decay) and a
   LayerNorm + Linear classifier are trained by cross-entropy on the profile's *training* pictures, ``--steps`` batches
   of 64 with MiniBind's image augmentation (:class:`mars_core.encoders.train_config.TrainConfig`'s defaults, applied
   to CLIP-normalised pictures as MiniBind's training applies it); K = 0 is the frozen trunk with the classifier alone;
2. the *test* pictures (each class's held-out style) are read two ways: by the classifier, and by the nearest
   training-class mean of the trunk's pooled features (``scripts/vision_probe.py``'s ``nearest_mean``): how an image
   query lands among the classes, which is what fails in the separator;
3. it prints, per K, both accuracies and the pictures placed right for each of ``--classes``.

A classifier trained on 18-22 class labels is not MiniBind's contrastive stage: the screen says whether the trained
blocks *can* carry a class to the held-out style, not what MiniBind will learn. The diagnostics of a trained MiniBind
are ``python scripts/diagnose_queries.py --query-encoder``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mars_core.config import get_profile  # noqa: E402
from mars_core.data.manifest import benchmark_dir  # noqa: E402
from mars_core.encoders.minibind import PretrainedImageFeatures  # noqa: E402
from mars_core.encoders.mobilenet import load_trunk_weights  # noqa: E402
from mars_core.encoders.pairs import augment_images  # noqa: E402
from mars_core.encoders.preprocess import CLIP_MEAN, CLIP_STD  # noqa: E402
from mars_core.encoders.train_config import TrainConfig  # noqa: E402

BATCH = 64
HEAD_LR = 1e-2
HEAD_WEIGHT_DECAY = 1e-4


def train_top(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, n_classes: int, blocks: int, *,
              steps: int, lr: float, seed: int = 0, aug: TrainConfig | None = None):
    """Train the trunk's last ``blocks`` blocks (``lr``, no decay) and a LayerNorm + Linear classifier (``HEAD_LR``).

    Args:
        weights: the pretrained trunk (:func:`~mars_core.encoders.mobilenet.load_trunk_weights`).
        x: pictures in ``[0, 1]``; y: their class indices.
        blocks: trained blocks (0: the frozen trunk, the classifier alone).
        aug: the image augmentation's settings (default: ``TrainConfig()``'s, MiniBind's).

    Shape:
        x: ``(N, 3, S, S)``; y: ``(N,)`` int64.

    Returns:
        ``(trunk, head, losses)``: the trained :class:`~mars_core.encoders.mobilenet.MobileNetV2Trunk` (it reads
        pictures in ``[0, 1]``) and the classifier, both in eval mode, and the loss of every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if x.ndim != 4 or x.shape[1] != 3 or y.shape != (x.shape[0],):
        raise ValueError(f"expected x (N, 3, S, S) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    aug = aug or TrainConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tower = PretrainedImageFeatures(weights, trainable_blocks=blocks)  # MiniBind's vision input: normalised pictures
    trunk = tower.backbone
    head = nn.Sequential(nn.LayerNorm(trunk.out_channels), nn.Linear(trunk.out_channels, n_classes))
    groups = [{"params": list(head.parameters()), "lr": HEAD_LR, "weight_decay": HEAD_WEIGHT_DECAY}]
    if blocks:
        groups.append({"params": list(trunk.parameters()), "lr": lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    xn = (x.float() - mean) / std  # MiniBind augments CLIP-normalised pictures
    losses = []
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), size=BATCH, replace=len(x) < BATCH))
        xb = augment_images(xn[idx], rng, aug.image_scale_low, aug.image_rotation_deg, aug.flip_prob,
                            aug.color_jitter, aug.gray_prob, aug.channel_shuffle_prob)
        loss = F.cross_entropy(head(tower(xb)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return trunk.eval(), head.eval(), losses


def placement(pred: np.ndarray, truth: np.ndarray, classes: list[str], names: list[str]) -> dict[str, tuple[int, int]]:
    """``{name: (pictures of that class predicted as it, pictures of that class)}`` for each of ``names``.

    Raises:
        ValueError: a name that is not one of ``classes``.
    """
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; the build has {', '.join(classes)}")
    pred, truth = np.asarray(pred), np.asarray(truth)
    out = {}
    for n in names:
        mine = truth == classes.index(n)
        out[n] = (int((pred[mine] == classes.index(n)).sum()), int(mine.sum()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--blocks", type=int, nargs="+", default=[0, 1, 2, 4], help="trained blocks K to screen")
    p.add_argument("--steps", type=int, default=300, help=f"training batches of {BATCH} pictures per K")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the trained blocks")
    p.add_argument("--size", type=int, default=None, help="picture side in pixels (default: the profile's encoder's)")
    p.add_argument("--classes", nargs="+", default=["dog", "drums"], help="classes whose test pictures are counted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or max(1, min(2, os.cpu_count() or 1)))
    from vision_probe import nearest_mean, pictures  # noqa: E402  (the screen's sibling script)

    size = args.size or get_profile(args.profile).encoder.image_size
    build = benchmark_dir(args.profile)
    (tr_rows, tr_x), (te_rows, te_x) = pictures(build, "train", size), pictures(build, "test", size)
    classes = sorted({r["class_name"] for r in tr_rows})
    y = torch.tensor([classes.index(r["class_name"]) for r in tr_rows])
    y_test = np.array([classes.index(r["class_name"]) for r in te_rows])
    try:
        placement(y_test, y_test, classes, args.classes)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    weights = load_trunk_weights()
    print(f"{len(tr_rows)} training pictures, {len(te_rows)} test pictures (held-out styles: "
          f"{', '.join(sorted({r['style'] for r in te_rows}))}), {len(classes)} classes (chance "
          f"{1 / len(classes):.2f}); {size} px, {args.steps} steps of {BATCH}, trunk lr {args.lr:g}, seed {args.seed}")
    for k in args.blocks:
        t0 = time.perf_counter()
        trunk, head, losses = train_top(weights, tr_x, y, len(classes), k, steps=args.steps, lr=args.lr,
                                        seed=args.seed)
        with torch.no_grad():
            f_tr = torch.cat([trunk(tr_x[i:i + BATCH]) for i in range(0, len(tr_x), BATCH)])
            f_te = torch.cat([trunk(te_x[i:i + BATCH]) for i in range(0, len(te_x), BATCH)])
            by_head = head(f_te).argmax(1).numpy()
        by_mean = nearest_mean(f_tr, y, f_te, len(classes))
        for name, pred in (("classifier", by_head), ("nearest training-class mean", by_mean)):
            counts = placement(pred, y_test, classes, args.classes)
            print(f"K={k:2d} {name:28s} test {np.mean(pred == y_test):.2f} | "
                  + " ".join(f"{n} {r}/{t}" for n, (r, t) in counts.items())
                  + (f" | last loss {np.mean(losses[-20:]):.3f}, {time.perf_counter() - t0:.0f} s"
                     if name == "classifier" else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
