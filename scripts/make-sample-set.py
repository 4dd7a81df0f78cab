#!/usr/bin/python3
"""Builds the built-in sample set (www/sample/) from Debian packages:

  apt-get install fonts-noto-color-emoji unicode-data python3-pil
  /usr/bin/python3 scripts/make-sample-set.py   (Debian's python, which has python3-pil)

Every fully-qualified emoji of Unicode's emoji-test.txt, without skin-tone variants (near
copies) and without the "Component" group, rendered with Noto Color Emoji on white, centred,
at the stored size of the default 32-px training (36 px). Labels are Unicode's two-level
grouping: group (coarse, e.g. "Animals & Nature") and subgroup (fine, e.g. "animal-bird"),
the hierarchy PCL's levels of K should find. Output: one PNG atlas (row-major tiles), a JSON
index (names and labels) and the licence notice.
"""
import json
import os
import shutil
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
TEST = "/usr/share/unicode/emoji/emoji-test.txt"
SIDE = 36  # PclConfig::stored_size(32)
COLS = 64
SKIN = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "www", "sample")


def emoji_list():
    group = subgroup = None
    items = []
    for line in open(TEST, encoding="utf-8"):
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and group != "Component":
            cps = [int(c, 16) for c in line.split(";")[0].split()]
            if SKIN & set(cps):
                continue
            name = line.split("#", 1)[1].split(None, 2)[2].strip()
            items.append(("".join(map(chr, cps)), group, subgroup, name))
    return items


def render(font, text):
    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((10, 10), text, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    # A square on white with a small margin, the emoji centred.
    pad = int(side * 0.06)
    square = Image.new("RGBA", (side + 2 * pad, side + 2 * pad), (255, 255, 255, 255))
    off = (pad + (side - glyph.size[0]) // 2, pad + (side - glyph.size[1]) // 2)
    square.alpha_composite(glyph, off)
    return square.convert("RGB").resize((SIDE, SIDE), Image.LANCZOS)


def main():
    font = ImageFont.truetype(FONT, 109)  # the only size of the font's bitmap strikes
    tiles, index = [], []
    for text, group, subgroup, name in emoji_list():
        tile = render(font, text)
        if tile is None:
            print("no glyph:", name, file=sys.stderr)
            continue
        tiles.append(tile)
        index.append([group, subgroup, name])
    rows = (len(tiles) + COLS - 1) // COLS
    atlas = Image.new("RGB", (COLS * SIDE, rows * SIDE), (255, 255, 255))
    for i, t in enumerate(tiles):
        atlas.paste(t, ((i % COLS) * SIDE, (i // COLS) * SIDE))
    os.makedirs(OUT, exist_ok=True)
    atlas.save(os.path.join(OUT, "emoji.png"), optimize=True)
    meta = {"side": SIDE, "cols": COLS, "count": len(tiles), "items": index,
            "source": "Noto Color Emoji (Debian fonts-noto-color-emoji, SIL OFL 1.1); groups and "
                      "subgroups from Unicode emoji-test.txt (Debian unicode-data)"}
    with open(os.path.join(OUT, "emoji.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, separators=(",", ":"))
    shutil.copy("/usr/share/doc/fonts-noto-color-emoji/copyright", os.path.join(OUT, "LICENSE-noto-emoji.txt"))
    groups = sorted({g for g, _, _ in index})
    subgroups = sorted({(g, s) for g, s, _ in index})
    print(f"{len(tiles)} images, {len(groups)} groups, {len(subgroups)} subgroups, "
          f"atlas {os.path.getsize(os.path.join(OUT, 'emoji.png')) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
