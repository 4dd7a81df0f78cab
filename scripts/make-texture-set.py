#!/usr/bin/env python3
"""A second labelled folder for measuring learning quality, besides the emoji sample set:
grey-scale crops of ten photographs that scikit-image ships (no download), one class per
photograph. Labels are texture and content, not colour (every image is grey), and crops of one
photograph differ in place, scale and orientation, so neighbouring pixels alone do not give the
class away.

  pip install scikit-image pillow
  python3 scripts/make-texture-set.py OUT [PER_CLASS]    (default 180: 1,800 images)

Writes OUT/<photo>/<index>.png at 36 x 36 (the stored size of 32-px training).
"""
import os
import sys

import numpy as np
from PIL import Image
from skimage import color, data

SOURCES = ["brick", "grass", "gravel", "coins", "moon", "text", "camera",
           "hubble_deep_field", "chelsea", "coffee"]
SIDE = 36


def grey(name):
    img = getattr(data, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    img = img.astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    return img


def main():
    out = sys.argv[1]
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 180
    rng = np.random.default_rng(0)
    for name in SOURCES:
        img = grey(name)
        h, w = img.shape
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for i in range(per):
            side = int(rng.integers(min(h, w) // 10, min(h, w) // 4))
            y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            crop = img[y:y + side, x:x + side]
            crop = np.rot90(crop, int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            pil = Image.fromarray((crop * 255).clip(0, 255).astype(np.uint8))
            pil.resize((SIDE, SIDE), Image.BILINEAR).convert("RGB").save(
                os.path.join(out, name, f"{i:04d}.png"))
    print(f"wrote {per * len(SOURCES)} images in {len(SOURCES)} classes to {out}")


if __name__ == "__main__":
    main()
