"""Write a tiny three-class image folder for the example: imgs/train/<class>/*.png and
imgs/test/<class>/*.png, 32 x 32 grayscale, bars / circles / crosses of random place and size
under noise. The same files every time (a fixed seed).

    python make_images.py            # into ./imgs beside this file
    python make_images.py OTHER_DIR
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
PER_CLASS = {"train": 120, "test": 40}  # 360 training and 120 test images in all
CLASSES = ("bars", "circles", "crosses")


def draw(kind: str, rng: np.random.Generator) -> Image.Image:
    """One image of `kind`: a bright shape at a random place and size on a noisy background."""
    background = rng.integers(0, 90, (SIZE, SIZE), dtype=np.uint8)
    shape = Image.new("L", (SIZE, SIZE), 0)
    pen = ImageDraw.Draw(shape)
    r = int(rng.integers(6, 12))  # half the shape's size, in pixels
    cx, cy = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, 2))
    line = int(rng.integers(2, 4))
    if kind == "bars":  # two or three parallel bars, horizontal or vertical
        step = 2 * r // int(rng.integers(2, 4))
        upright = rng.random() < 0.5
        for k in range(-r, r + 1, step):
            if upright:
                pen.line([(cx + k, cy - r), (cx + k, cy + r)], fill=255, width=line)
            else:
                pen.line([(cx - r, cy + k), (cx + r, cy + k)], fill=255, width=line)
    elif kind == "circles":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=line)
    else:  # an upright or a diagonal cross
        if rng.random() < 0.5:
            pen.line([(cx - r, cy), (cx + r, cy)], fill=255, width=line)
            pen.line([(cx, cy - r), (cx, cy + r)], fill=255, width=line)
        else:
            pen.line([(cx - r, cy - r), (cx + r, cy + r)], fill=255, width=line)
            pen.line([(cx - r, cy + r), (cx + r, cy - r)], fill=255, width=line)
    brightness = int(rng.integers(120, 166))
    pixels = np.maximum(background, (np.asarray(shape) > 0) * (brightness + 89))
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def main(root: Path) -> None:
    """Write every split's images of every class under `root`."""
    rng = np.random.default_rng(2024)
    for split, count in PER_CLASS.items():
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw(kind, rng).save(folder / f"{i:03d}.png")
    total = sum(PER_CLASS.values()) * len(CLASSES)
    print(f"wrote {total} images of {len(CLASSES)} classes under {root}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "imgs")
