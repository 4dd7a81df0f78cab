#!/usr/bin/env python3
"""Reference for the encoder's safetensors export (numpy only; no PyTorch needed).

Run: python3 tests/reference/safetensors_reference.py
Writes tests/reference/encoder.safetensors (seeded weights under PyTorch's names and layouts,
the layout pcl-studio exports) and tests/reference/encoder_forward.json (a few images and the
embeddings of this file's forward pass: conv 3x3 / BatchNorm in evaluation mode / ReLU, four
times, global average pooling, Linear / ReLU / Linear, L2 normalisation). The Rust test
(tests/engine/export.rs) loads the file into the engine, embeds the same images and compares
within 1e-4, then exports it again and compares every tensor.
"""
import json
import struct
from pathlib import Path

import numpy as np

from numpy_encoder import conv3x3

rng = np.random.default_rng(20261130)
HERE = Path(__file__).parent
W, FEAT, EPS = 4, 8, 1e-5


tensors = {}
channels = [(3, W), (W, 2 * W), (2 * W, 4 * W), (4 * W, 8 * W)]
for b, (cin, cout) in enumerate(channels):
    conv, bn = 3 * b, 3 * b + 1
    tensors[f"backbone.{conv}.weight"] = rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3))
    tensors[f"backbone.{bn}.weight"] = rng.uniform(0.5, 1.5, cout)
    tensors[f"backbone.{bn}.bias"] = rng.normal(0, 0.1, cout)
    tensors[f"backbone.{bn}.running_mean"] = rng.normal(0, 0.2, cout)
    tensors[f"backbone.{bn}.running_var"] = rng.uniform(0.5, 2.0, cout)
d = 8 * W
tensors["head.0.weight"] = rng.normal(0, d ** -0.5, (d, d))
tensors["head.0.bias"] = rng.normal(0, 0.1, d)
tensors["head.2.weight"] = rng.normal(0, d ** -0.5, (FEAT, d))
tensors["head.2.bias"] = rng.normal(0, 0.1, FEAT)
tensors = {k: v.astype(np.float32) for k, v in tensors.items()}

# Pixel values k / 256: exact in f32 and short in JSON.
images = (rng.integers(0, 256, (2, 3, 32, 32)) / 256).astype(np.float32)
x = images.astype(np.float64)
for b, _ in enumerate(channels):
    conv, bn = 3 * b, 3 * b + 1
    t = lambda name: tensors[f"backbone.{bn}.{name}"].astype(np.float64)[None, :, None, None]
    x = conv3x3(x, tensors[f"backbone.{conv}.weight"].astype(np.float64), 1 if b == 0 else 2)
    x = (x - t("running_mean")) / np.sqrt(t("running_var") + EPS) * t("weight") + t("bias")
    x = np.maximum(x, 0)
x = x.mean(axis=(2, 3))
x = np.maximum(x @ tensors["head.0.weight"].T + tensors["head.0.bias"], 0)
x = x @ tensors["head.2.weight"].T + tensors["head.2.bias"]
emb = x / np.linalg.norm(x, axis=1, keepdims=True)

header, blobs, offset = {}, [], 0
for name, v in tensors.items():
    raw = v.astype("<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
for b in range(4):
    header[f"backbone.{3 * b + 1}.num_batches_tracked"] = {
        "dtype": "I64", "shape": [], "data_offsets": [offset, offset + 8]}
    blobs.append(struct.pack("<q", 0))
    offset += 8
head = json.dumps(header).encode()
head += b" " * ((8 - (8 + len(head)) % 8) % 8)
(HERE / "encoder.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
(HERE / "encoder_forward.json").write_text(json.dumps({
    "width": W, "feature_dim": FEAT,
    "images": images.reshape(-1).tolist(), "shape": list(images.shape),
    "embeddings": emb.reshape(-1).tolist(),
}))
print(f"wrote encoder.safetensors ({offset} data bytes) and encoder_forward.json")
