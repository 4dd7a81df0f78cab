#!/usr/bin/env python3
"""The README's PyTorch block, run as it stands on a run that pcl-studio trained and exported.

Usage: readme_snippet.py README.md RUN_DIR ENCODER.safetensors IMAGES_DIR
Takes the first ```python block under "## Exports for PyTorch", runs it, and embeds every image
of the run's embeddings.csv with the block's `embed` (where PyTorch and safetensors are
installed) or with the block's own `preprocess` and `metadata` followed by the forward pass in
numpy below (where they are not). Fails unless the mean cosine to embeddings.csv is at least
0.999 and the worst at least 0.99.
"""
import csv
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

from numpy_encoder import conv3x3

readme, run, weights, images = sys.argv[1:5]
text = Path(readme).read_text()
section = text[text.index("## Exports for PyTorch"):]
block = re.search(r"```python\n(.*?)```", section, re.S).group(1)

try:
    import safetensors  # noqa: F401
    import torch  # noqa: F401
    with_torch = True
except ImportError:
    with_torch = False

ns = {"__name__": "readme"}
if with_torch:
    exec(compile(block, "README.md", "exec"), ns)
else:
    exec(compile(block[:block.index("\nimport torch")], "README.md", "exec"), ns)


def load(path):
    """Every tensor of a safetensors file, as float64 arrays."""
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], "<f4").reshape(t["shape"]).astype(np.float64)
    return out


def forward(t, x):
    """The README's module in evaluation mode (BatchNorm runs), in numpy."""
    for b in range(4):
        bn = lambda k: t[f"backbone.{3 * b + 1}.{k}"][None, :, None, None]
        x = conv3x3(x, t[f"backbone.{3 * b}.weight"], 1 if b == 0 else 2)
        x = (x - bn("running_mean")) / np.sqrt(bn("running_var") + 1e-5) * bn("weight") + bn("bias")
        x = np.maximum(x, 0)
    x = x.mean(axis=(2, 3))
    x = np.maximum(x @ t["head.0.weight"].T + t["head.0.bias"], 0)
    x = x @ t["head.2.weight"].T + t["head.2.bias"]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


with open(Path(run) / "embeddings.csv", newline="") as f:
    rows = list(csv.reader(f))[1:]
files = [str(Path(images) / r[0]) for r in rows]
want = np.array([[float(v) for v in r[2:]] for r in rows])
if with_torch:
    got = ns["embed"](files, weights)
else:
    meta = ns["metadata"](weights)
    x = np.stack([ns["preprocess"](f, meta) for f in files]).astype(np.float64)
    got = forward(load(weights), x)
cos = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
how = "PyTorch" if with_torch else "its preprocessing, numpy's forward pass"
print(f"README block ({how}) on {len(files)} images: cosine to embeddings.csv "
      f"mean {cos.mean():.5f}, worst {cos.min():.5f}")
assert cos.mean() >= 0.999 and cos.min() >= 0.99, "the README's recipe does not give the run's embeddings"
