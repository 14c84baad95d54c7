"""Zero-shot accuracy of a backbone on single-object fluent scenes whose glyphs are altered before drawing.

    python scripts/fluent_glyph_probe.py [MODEL] [--per-class 4] [--threads 1]

MODEL is a backbone spec (default ``embedded``) or a folder written by train_embedded.py. Each variant draws the
same scenes (the train script's monitor stream: 4 per concept, seed 0) with the fluent glyph as drawn, blurred
(Gaussian, radius 2), drawn at half resolution (32 px, then resized per scene as usual), with a black outline
(as openmoji's drawings have), or with its saturation scaled by 0.7 or 1.3; twemoji as drawn for reference. If an
alteration of the rendering moved fluent far, the gap would be a rendering artefact rather than the model's.
Used for docs/RESULTS.md, "A three-style embedded CLIP".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from per_concept_zero_shot import concept_texts, load_model  # scripts/, on sys.path when run as a script
from PIL import Image, ImageEnhance, ImageFilter

from sayno.world import get_style, pretrain_concepts, render_scene
from sayno.world.concepts import Concept
from sayno.world.scenes import GlyphCache, make_scene
from sayno.world.styles import Style


class AlteredStyle(Style):
    """``base``'s glyphs passed through ``alter`` (RGBA -> RGBA)."""

    def __init__(self, base: Style, alter: Callable[[Image.Image], Image.Image], name: str):
        self.base, self.alter, self.name = base, alter, name

    def _draw(self, concept: Concept) -> Image.Image:
        return self.alter(self.base.glyph(concept))


def outline(glyph: Image.Image, width: int = 7) -> Image.Image:
    """A black rim ``width // 2`` pixels wide around the glyph's silhouette."""
    rim = glyph.getchannel("A").filter(ImageFilter.MaxFilter(width)).point(lambda v: 255 if v > 64 else 0)
    out = Image.composite(Image.new("RGBA", glyph.size, (0, 0, 0, 255)), Image.new("RGBA", glyph.size), rim)
    out.alpha_composite(glyph)
    return out


def saturation(factor: float) -> Callable[[Image.Image], Image.Image]:
    def alter(glyph: Image.Image) -> Image.Image:
        out = ImageEnhance.Color(glyph.convert("RGB")).enhance(factor)
        out.putalpha(glyph.getchannel("A"))
        return out
    return alter


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="embedded")
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_model(args.model)
    concepts, text = pretrain_concepts(), concept_texts(backbone)
    fluent = get_style("fluent")
    variants: dict[str, Style] = {
        "twemoji as drawn": get_style("twemoji"),
        "fluent as drawn": fluent,
        "fluent, blurred": AlteredStyle(fluent, lambda g: g.filter(ImageFilter.GaussianBlur(2)), "fluent-blur"),
        "fluent, half resolution": AlteredStyle(
            fluent, lambda g: g.resize((32, max(1, round(32 * g.height / g.width))), Image.LANCZOS), "fluent-32"),
        "fluent, black outline": AlteredStyle(fluent, outline, "fluent-outline"),
        "fluent, saturation x0.7": AlteredStyle(fluent, saturation(0.7), "fluent-sat07"),
        "fluent, saturation x1.3": AlteredStyle(fluent, saturation(1.3), "fluent-sat13"),
    }
    for label, style in variants.items():
        rng, images, labels = np.random.default_rng([0, 99]), [], []
        for ci, c in enumerate(concepts):
            for _ in range(args.per_class):
                images.append(render_scene(make_scene(((c, 1),), rng), style, GlyphCache()))
                labels.append(ci)
        pred = (backbone.encode_image(images) @ text.T).argmax(1).numpy()
        print(f"{label}: {(pred == np.array(labels)).mean() * 100:.1f}%", flush=True)


if __name__ == "__main__":
    main()
