#!/usr/bin/env python3
"""A third labelled folder for measuring learning quality, neither emoji nor photographs:
scikit-learn's scans of handwritten digits (1,797 images of 8 x 8 grey levels, 10 classes,
bundled with the package: no download), one class per digit. Shape is everything here: no
colour, and a mirrored 2 is no longer quite a 2, so it tests what the photographs' augmentation
recipe does where flips and colour are not what tells the classes apart.

  pip install scikit-learn pillow
  python3 scripts/make-digits-set.py OUT

Writes OUT/<digit>/<index>.png at 36 x 36 (the stored size of 32-px training), dark ink on white.
"""
import os
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

SIDE = 36


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        # 0..16 ink levels -> white paper, dark ink; a 2-pixel margin as a scan would have.
        grey = (255 - img / 16.0 * 255).clip(0, 255).astype(np.uint8)
        small = Image.fromarray(grey, mode="L").resize((SIDE - 8, SIDE - 8), Image.BICUBIC)
        page = Image.new("L", (SIDE, SIDE), 255)
        page.paste(small, (4, 4))
        folder = os.path.join(out, str(label))
        os.makedirs(folder, exist_ok=True)
        page.convert("RGB").save(os.path.join(folder, f"{i:04d}.png"))
    print(f"{len(digits.images)} images in {out}")


if __name__ == "__main__":
    main()
