"""scripts/vision_probe.py: tfjs weight decoding and the Keras-layer interpreter, against loops written out in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.repo_files import load_script


def _script():
    return load_script("scripts/vision_probe.py")


def test_weights_are_dequantised_and_split_as_the_manifest_says():
    s = _script()
    q = {"name": "a/kernel", "shape": [2, 2], "dtype": "float32", "quantization": {"min": -1.0, "scale": 0.5, "dtype": "uint8"}}
    f = {"name": "b/bias", "shape": [3], "dtype": "float32"}
    blob = bytes([0, 1, 2, 4]) + np.array([1.5, -2.0, 0.25], np.float32).tobytes()
    w = s.load_weights([q, f], blob)
    np.testing.assert_array_equal(w["a/kernel"].numpy(), [[-1.0, -0.5], [0.0, 1.0]])  # q * 0.5 - 1, exact in float32
    np.testing.assert_array_equal(w["b/bias"].numpy(), [1.5, -2.0, 0.25])
    with pytest.raises(ValueError, match="bytes described"):
        s.load_weights([q], blob)


def _conv_np(x, k, stride, groups_depthwise=False):
    """x (C, H, W) already padded; k Keras (kh, kw, in, out) or depthwise (kh, kw, C, 1): explicit loops."""
    kh, kw = k.shape[:2]
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    cout = x.shape[0] if groups_depthwise else k.shape[3]
    y = np.zeros((cout, ho, wo))
    for o in range(cout):
        for i in range(ho):
            for j in range(wo):
                patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
                if groups_depthwise:
                    y[o, i, j] = np.sum(patch[o] * k[:, :, o, 0])
                else:
                    y[o, i, j] = sum(np.sum(patch[c] * k[:, :, c, o]) for c in range(x.shape[0]))
    return y


def _layer(kind, name, inbound, **cfg):
    return {"class_name": kind, "name": name, "config": cfg, "inbound_nodes": [[[n, 0, 0, {}] for n in inbound]] if inbound else []}


def test_interpreter_matches_the_layers_written_out():
    s = _script()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = {"c/kernel": rng.standard_normal((3, 3, 2, 3)), "bn/gamma": rng.uniform(0.5, 2, 3), "bn/beta": rng.standard_normal(3),
         "bn/moving_mean": rng.standard_normal(3), "bn/moving_variance": rng.uniform(0.5, 2, 3),
         "d/depthwise_kernel": rng.standard_normal((3, 3, 3, 1))}
    layers = [_layer("InputLayer", "in", []),
              _layer("ZeroPadding2D", "pad", ["in"], padding=[[0, 1], [0, 1]]),
              _layer("Conv2D", "c", ["pad"], strides=[2, 2], kernel_size=[3, 3], padding="valid"),
              _layer("BatchNormalization", "bn", ["c"], epsilon=1e-3),
              _layer("ReLU", "r", ["bn"], max_value=6),
              _layer("DepthwiseConv2D", "d", ["r"], strides=[1, 1], kernel_size=[3, 3], padding="same"),
              _layer("Add", "sum", ["r", "d"]),
              _layer("Dense", "head", ["sum"])]
    got = s.keras_forward(layers, {k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()}, torch.from_numpy(x),
                          ("c", "r", "sum"))
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (0, 1), (0, 1)))  # 6 x 6: bottom and right, as Keras pads
    c = _conv_np(xp, w["c/kernel"], 2)
    bn = (c - w["bn/moving_mean"][:, None, None]) / np.sqrt(w["bn/moving_variance"][:, None, None] + 1e-3) \
        * w["bn/gamma"][:, None, None] + w["bn/beta"][:, None, None]
    r = np.clip(bn, 0, 6)
    d = _conv_np(np.pad(r, ((0, 0), (1, 1), (1, 1))), w["d/depthwise_kernel"], 1, groups_depthwise=True)
    # float32 sums of at most 18 products of numbers below 10: errors near 1e-5 of values near 10
    np.testing.assert_allclose(got["c"][0].numpy(), c, atol=1e-4)
    np.testing.assert_allclose(got["r"][0].numpy(), r, atol=1e-4)
    np.testing.assert_allclose(got["sum"][0].numpy(), r + d, atol=1e-4)
    with pytest.raises(ValueError, match="not reached"):
        s.keras_forward(layers, {k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()}, torch.from_numpy(x), ("head",))
    strided = [dict(l, config=dict(l["config"], strides=[2, 2])) if l["name"] == "d" else l for l in layers]
    with pytest.raises(ValueError, match="'same' padding only at stride 1"):
        s.keras_forward(strided, {k: torch.tensor(v, dtype=torch.float32) for k, v in w.items()}, torch.from_numpy(x), ("sum",))
