"""mars_core.encoders.mobilenet: the pretrained MobileNetV2 trunk, against a Keras-layer interpreter (itself tested
against numpy loops in test_vision_probe_script.py), the committed weights, and MiniBind's image_tower option."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mars_core.config import get_profile
from mars_core.encoders import mobilenet as M
from mars_core.encoders.minibind import MiniBind, load_minibind, save_minibind
from mars_core.runs import encoder_fingerprint
from tests.repo_files import load_script

CPU = get_profile("cpu")


def _probe():
    return load_script("scripts/vision_probe.py")


def _hand_count() -> int:
    """Weights of Keras MobileNetV2 through block_14, written out: a BatchNormalization holds 4 per channel."""
    n = 3 * 3 * 3 * 32 + 4 * 32 + (9 * 32 + 4 * 32 + 32 * 16 + 4 * 16)  # Conv1, bn_Conv1, expanded_conv
    pairs = [(16, 24), (24, 24), (24, 32), (32, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64), (64, 96),
             (96, 96), (96, 96), (96, 160), (160, 160)]  # blocks 1..14, expansion 6
    for cin, cout in pairs:
        h = 6 * cin
        n += cin * h + 4 * h + 9 * h + 4 * h + h * cout + 4 * cout
    return n


def test_committed_weights_are_the_trunks():
    shapes = M.weight_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == _hand_count() == 1_040_704
    w = M.load_trunk_weights()
    assert {k: tuple(v.shape) for k, v in w.items()} == shapes
    assert all(torch.equal(v, v.half().float()) for v in w.values())  # float16-exact: a MiniBind checkpoint keeps them
    var = [v for k, v in w.items() if k.endswith("moving_variance")]
    assert all(bool((v >= 0).all()) for v in var)  # uint8 quantisation reaches 0; the BatchNorm epsilon 1e-3 keeps it finite
    with pytest.raises(FileNotFoundError, match="convert_mobilenet.py"):
        M.load_trunk_weights(Path("/nonexistent/mobilenet.pt"))


def _keras_topology(last: int = M.LAST_BLOCK) -> list[dict]:
    """The Keras layer list of MobileNetV2 (as the 224 x 224 model was built: (0, 1) padding before strided layers)."""
    def layer(kind, name, inbound, **cfg):
        return {"class_name": kind, "name": name, "config": cfg, "inbound_nodes": [[[inbound, 0, 0, {}]]] if inbound else []}

    def conv(name, inbound, k, stride=1, depthwise=False):
        return layer("DepthwiseConv2D" if depthwise else "Conv2D", name, inbound, kernel_size=[k, k], strides=[stride, stride],
                     padding="valid" if stride == 2 else "same")

    out = [layer("InputLayer", "input_1", None), layer("ZeroPadding2D", "Conv1_pad", "input_1", padding=[[0, 1], [0, 1]]),
           conv("Conv1", "Conv1_pad", 3, 2), layer("BatchNormalization", "bn_Conv1", "Conv1", epsilon=1e-3),
           layer("ReLU", "Conv1_relu", "bn_Conv1", max_value=6)]
    prev = "Conv1_relu"
    for prefix, cin, t, cout, stride in M.block_plan(last):
        x = prev
        if t != 1:
            out += [conv(f"{prefix}_expand", x, 1), layer("BatchNormalization", f"{prefix}_expand_BN", f"{prefix}_expand", epsilon=1e-3),
                    layer("ReLU", f"{prefix}_expand_relu", f"{prefix}_expand_BN", max_value=6)]
            x = f"{prefix}_expand_relu"
        if stride == 2:
            out.append(layer("ZeroPadding2D", f"{prefix}_pad", x, padding=[[0, 1], [0, 1]]))
            x = f"{prefix}_pad"
        out += [conv(f"{prefix}_depthwise", x, 3, stride, depthwise=True),
                layer("BatchNormalization", f"{prefix}_depthwise_BN", f"{prefix}_depthwise", epsilon=1e-3),
                layer("ReLU", f"{prefix}_depthwise_relu", f"{prefix}_depthwise_BN", max_value=6),
                conv(f"{prefix}_project", f"{prefix}_depthwise_relu", 1),
                layer("BatchNormalization", f"{prefix}_project_BN", f"{prefix}_project", epsilon=1e-3)]
        prev = f"{prefix}_project_BN"
        if stride == 1 and cin == cout:
            out.append({"class_name": "Add", "name": f"{prefix}_add", "config": {},
                        "inbound_nodes": [[[_block_input(out, prefix), 0, 0, {}], [prev, 0, 0, {}]]]})
            prev = f"{prefix}_add"
    return out


def _block_input(layers: list[dict], prefix: str) -> str:
    first = next(l for l in layers if l["name"] in (f"{prefix}_expand", f"{prefix}_depthwise"))
    return first["inbound_nodes"][0][0][0]


@pytest.mark.parametrize("size", [112, 64])
def test_trunk_equals_the_keras_interpreter(size):
    """Random weights (BatchNorm statistics positive), random images: the module and the independent interpreter agree."""
    g = torch.Generator().manual_seed(size)
    w = {}
    for name, shape in M.weight_shapes().items():
        if name.endswith("moving_variance"):
            w[name] = torch.rand(shape, generator=g) + 0.5
        elif name.endswith("gamma"):
            w[name] = torch.rand(shape, generator=g) + 0.5
        else:
            fan = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            w[name] = torch.randn(shape, generator=g) / np.sqrt(fan) * (0.3 if len(shape) == 1 else 1.0)
    x = torch.rand(2, 3, size, size, generator=g)
    trunk = M.MobileNetV2Trunk(w)
    with torch.no_grad():
        ref = _probe().keras_forward(_keras_topology(), w, x, ("block_14_add",))["block_14_add"]
        got = trunk.feature_map(x)
    side = size
    for _ in range(5):  # five stride-2 layers, each: pad (0, 1), 3 x 3 'valid' at stride 2
        side = (side + 1 - 3) // 2 + 1
    assert got.shape == ref.shape == (2, 160, side, side)
    scale = float(ref.abs().max())
    torch.testing.assert_close(got, ref, atol=1e-5 * max(1.0, scale), rtol=0)  # same float32 ops, other order
    torch.testing.assert_close(trunk(x), ref.mean(dim=(2, 3)), atol=1e-5 * max(1.0, scale), rtol=0)


def test_trunk_refusals():
    with pytest.raises(KeyError, match="Conv1/kernel"):
        M.MobileNetV2Trunk({})
    w = {k: torch.zeros(s) for k, s in M.weight_shapes().items()}
    w["Conv1/kernel"] = torch.zeros(3, 3, 3, 16)
    with pytest.raises(ValueError, match="Conv1/kernel: shape"):
        M.MobileNetV2Trunk(w)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
        M.MobileNetV2Trunk(None)(torch.zeros(1, 1, 32, 32))


def _minibind():
    return MiniBind(replace(CPU.encoder, image_tower="mobilenet_v2"), CPU.audio.sample_rate, seed=0)


def test_minibind_with_the_pretrained_tower_trains_only_its_adapter(tmp_path):
    m = _minibind()
    vit = MiniBind(replace(CPU.encoder, image_tower="vit"), CPU.audio.sample_rate, seed=0)
    d, e = CPU.encoder.vision_width, CPU.encoder.embed_dim
    # adapter LayerNorm(160) + Linear(160, d), head LayerNorm(d) + Linear(d, e, no bias): written out
    assert m.num_parameters()["vision"] == 2 * 160 + 160 * d + d + 2 * d + d * e
    assert m.num_parameters()["text"] == vit.num_parameters()["text"] and m.num_parameters()["audio"] == vit.num_parameters()["audio"]
    backbone = m.modality_preprocessors["vision"].backbone
    assert not any(True for _ in backbone.parameters())  # weights are buffers
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.testing.assert_close(before["Conv1__kernel"], M.load_trunk_weights()["Conv1/kernel"], rtol=0, atol=0)
    x = torch.randn(3, 3, CPU.encoder.image_size, CPU.encoder.image_size)
    m.head_embeddings("vision", m.trunk_features("vision", x)).sum().backward()
    assert m.modality_trunks["vision"].proj.weight.grad is not None
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    assert encoder_fingerprint(m) != encoder_fingerprint(vit)
    path = save_minibind(tmp_path / "m.pt", m)
    back = load_minibind(path)
    assert back.encoder_config.image_tower == "mobilenet_v2"
    with torch.no_grad():
        a = m.eval().head_embeddings("vision", m.trunk_features("vision", x))
        b = back.head_embeddings("vision", back.trunk_features("vision", x))
    # the adapter and head come back from float16: their rounding moves unit embeddings by about 1e-3
    torch.testing.assert_close(a, b, atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="image_tower must be one of"):
        MiniBind(replace(CPU.encoder, image_tower="resnet"), CPU.audio.sample_rate)


def test_the_pretrained_tower_reads_images_in_zero_one():
    """The CLIP-normalised input is brought back to [0, 1] before the trunk: equal to the trunk on the raw pixels."""
    m = _minibind().eval()
    raw = torch.rand(2, 3, CPU.encoder.image_size, CPU.encoder.image_size)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m.modality_preprocessors["vision"]((raw - mean) / std),
                                   m.modality_preprocessors["vision"].backbone(raw), atol=1e-5, rtol=0)


def test_the_judge_keeps_its_own_vision_transformer():
    from mars_core.encoders.judge import judge_encoder_config

    prof = replace(CPU, encoder=replace(CPU.encoder, image_tower="mobilenet_v2"))
    assert judge_encoder_config(prof).image_tower == "vit"  # independent of a reward encoder's pretrained trunk
    assert judge_encoder_config(CPU) == replace(judge_encoder_config(prof), image_tower="vit")


def test_a_missing_weights_file_is_said(monkeypatch, tmp_path):
    monkeypatch.setenv("MARS_CHECKPOINTS", str(tmp_path))
    with pytest.warns(UserWarning, match="pretrained image trunk starts at zero"):
        m = _minibind()
    assert all(float(v.abs().sum()) == 0 for v in m.modality_preprocessors["vision"].backbone.state_dict().values())


def test_the_weights_file_is_a_checkpoint_of_its_kind(tmp_path):
    from mars_core.checkpoints import save_checkpoint

    other = save_checkpoint(tmp_path / "other.pt", with_rng=False, kind="separator", weights={})
    with pytest.raises(ValueError, match="not a MobileNetV2 trunk file"):
        M.load_trunk_weights(other)


def _hand_block_count(blocks: range) -> int:
    """Trained entries of blocks (1-based indices into MobileNetV2's blocks 1..14, expansion 6): each block's expand,
    depthwise and project kernels and its three BatchNorms' gamma and beta (moving statistics stay fixed)."""
    pairs = {11: (96, 96), 12: (96, 96), 13: (96, 160), 14: (160, 160)}
    n = 0
    for b in blocks:
        cin, cout = pairs[b]
        h = 6 * cin
        n += cin * h + 2 * h + 9 * h + 2 * h + h * cout + 2 * cout
    return n


def test_the_last_blocks_train_and_nothing_before_them():
    from mars_core.encoders.train import param_groups

    frozen = _minibind()
    m = MiniBind(replace(CPU.encoder, image_tower="mobilenet_v2", image_trunk_train_blocks=2), CPU.audio.sample_rate, seed=0)
    backbone = m.modality_preprocessors["vision"].backbone
    assert sum(p.numel() for p in backbone.parameters()) == _hand_block_count(range(13, 15))
    assert {n.split("__")[0].rsplit("_", 1)[0] for n, _ in backbone.named_parameters()} >= {"block_13", "block_14"}
    assert not any("moving" in n for n, _ in backbone.named_parameters())
    # the same state dict (names, values) as the frozen tower's: checkpoints and fingerprints read alike
    a, b = frozen.state_dict(), m.state_dict()
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert encoder_fingerprint(frozen) == encoder_fingerprint(m)
    x = torch.rand(2, 3, CPU.encoder.image_size, CPU.encoder.image_size)
    m.head_embeddings("vision", m.trunk_features("vision", x)).sum().backward()
    grads = {n: p.grad for n, p in backbone.named_parameters()}
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads.values())
    # the outputs equal the frozen tower's (same weights): only what is recorded differs
    with torch.no_grad():
        torch.testing.assert_close(m.modality_preprocessors["vision"](x), frozen.modality_preprocessors["vision"](x),
                                   rtol=0, atol=0)
    groups = param_groups(m, 0.05, pretrained_lr=1e-4)
    assert len(groups) == 3 and groups[2]["lr"] == 1e-4 and groups[2]["weight_decay"] == 0.0
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in backbone.parameters()}
    assert len(param_groups(frozen, 0.05)) == 2  # no trained trunk: the groups as before
    with pytest.raises(ValueError, match="learning rate"):
        param_groups(m, 0.05)
    with pytest.raises(ValueError, match="trainable_blocks must be in 0..15"):
        M.MobileNetV2Trunk(None, trainable_blocks=16)
    with pytest.raises(ValueError, match="image_trunk_train_blocks needs image_tower='mobilenet_v2'"):
        MiniBind(replace(CPU.encoder, image_tower="vit", image_trunk_train_blocks=1), CPU.audio.sample_rate)


def test_a_trained_trunk_checkpoint_comes_back(tmp_path):
    m = MiniBind(replace(CPU.encoder, image_tower="mobilenet_v2", image_trunk_train_blocks=1), CPU.audio.sample_rate, seed=0)
    backbone = m.modality_preprocessors["vision"].backbone
    with torch.no_grad():
        backbone.block_14_project__kernel.mul_(0.5)  # as if trained
    back = load_minibind(save_minibind(tmp_path / "m.pt", m))
    assert back.encoder_config.image_trunk_train_blocks == 1
    got = back.modality_preprocessors["vision"].backbone.block_14_project__kernel
    torch.testing.assert_close(got, backbone.block_14_project__kernel.half().float(), rtol=0, atol=0)


def test_runs_made_before_the_option_keep_their_configuration(monkeypatch):
    """A MiniBind run's configuration (what resuming compares) leaves the new fields out at their defaults."""
    from mars_core.encoders import train as T
    from mars_core.encoders.train_config import TrainConfig

    monkeypatch.setattr(T, "data_fingerprint", lambda build_dir: "data")
    cfg = TrainConfig.for_profile(CPU)
    plain = T._run_config(CPU, CPU.encoder, cfg, Path("."))
    assert "image_trunk_train_blocks" not in plain["encoder"] and "image_trunk_lr_ratio" not in plain["train"]
    assert plain["encoder"]["image_tower"] == "mobilenet_v2"  # the other fields are all there
    trained = T._run_config(CPU, replace(CPU.encoder, image_trunk_train_blocks=4), replace(cfg, image_trunk_lr_ratio=0.25),
                            Path("."))
    assert trained["encoder"]["image_trunk_train_blocks"] == 4 and trained["train"]["image_trunk_lr_ratio"] == 0.25
