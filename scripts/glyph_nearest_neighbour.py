"""How close is each art style's drawing of a concept to the other styles' drawings, in raw pixels?

    python scripts/glyph_nearest_neighbour.py [--sizes 32,16,8] [--blur 1.5]

Each of the 185 pretraining concepts' glyphs is drawn centred on mid-grey at SIZE x SIZE pixels (optionally
Gaussian-blurred). A style's glyphs are classified by their nearest neighbour (squared L2 distance on RGB pixels)
among the glyphs of the reference styles; printed: the share of concepts whose nearest neighbour is the same
concept. Two rows per setting: fluent against openmoji, noto and twemoji (the embedded CLIP's training styles),
and twemoji against openmoji and noto (a training style held out the same way). A baseline without learning for
the embedded CLIP's cross-style zero-shot accuracy (docs/RESULTS.md, "A three-style embedded CLIP").
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageFilter

from sayno.world import get_style, pretrain_concepts
from sayno.world.scenes import GlyphCache


def glyph_pixels(style: str, size: int, blur: float, glyphs: GlyphCache) -> np.ndarray:
    """(185, size * size * 3) float pixels in [0, 1] of every pretraining concept's glyph in ``style``."""
    rows = []
    for concept in pretrain_concepts():
        g = glyphs.get(get_style(style), concept, size)
        canvas = Image.new("RGBA", (size, size), (128, 128, 128, 255))
        canvas.paste(g, ((size - g.width) // 2, (size - g.height) // 2), g)
        im = canvas.convert("RGB")
        if blur > 0:
            im = im.filter(ImageFilter.GaussianBlur(blur))
        rows.append(np.asarray(im, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows)


def nearest_neighbour_accuracy(queries: np.ndarray, references: list[np.ndarray]) -> float:
    """Share of rows i of ``queries`` (N, P) whose nearest row among the stacked ``references`` (each (N, P), row
    i = concept i) is a row of concept i."""
    ref = np.concatenate(references)
    labels = np.tile(np.arange(len(queries)), len(references))
    d = (queries ** 2).sum(1)[:, None] - 2 * queries @ ref.T + (ref ** 2).sum(1)[None]
    return float((labels[d.argmin(1)] == np.arange(len(queries))).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,16,8", help="comma-separated glyph sizes in pixels")
    ap.add_argument("--blur", type=float, default=1.5, help="Gaussian blur radius of the blurred rows (0 = none)")
    args = ap.parse_args()
    glyphs = GlyphCache()
    settings = [(int(s), 0.0) for s in args.sizes.split(",")]
    if args.blur > 0:
        settings.append((int(args.sizes.split(",")[0]), args.blur))
    for size, blur in settings:
        px = {s: glyph_pixels(s, size, blur, glyphs) for s in ("openmoji", "noto", "twemoji", "fluent")}
        fl = nearest_neighbour_accuracy(px["fluent"], [px["openmoji"], px["noto"], px["twemoji"]])
        tw = nearest_neighbour_accuracy(px["twemoji"], [px["openmoji"], px["noto"]])
        print(f"{size}px blur {blur}: fluent vs openmoji+noto+twemoji {100 * fl:.1f}%, "
              f"twemoji vs openmoji+noto {100 * tw:.1f}%")


if __name__ == "__main__":
    main()
