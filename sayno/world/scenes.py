"""Scenes of the emoji world: 1-4 objects at random sizes and places on a plain, gradient or noise background.

A :class:`Scene` is pure data (what is where); :func:`render_scene` draws it in a style. Everything random
comes from the ``numpy.random.Generator`` passed in, so a seed fixes every scene.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sayno.world.concepts import Concept
from sayno.world.styles import Style

BACKGROUNDS = ("plain", "gradient", "noise")


@dataclass(frozen=True)
class Placed:
    concept: Concept
    x: int  # top-left corner, pixels
    y: int
    size: int  # longest side, pixels
    turn: int = 0  # degrees the glyph is rotated: 0 or 180 (upside down, world 4's attribute)


@dataclass(frozen=True)
class Scene:
    """What an image shows: objects (with counts) and where, plus the background."""

    counts: tuple[tuple[Concept, int], ...]  # (concept, how many) in caption order
    placed: tuple[Placed, ...]
    background: str  # plain | gradient | noise
    colors: tuple[tuple[int, int, int], ...]  # background colours
    bg_seed: int
    size: int = 64
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def concepts(self) -> tuple[Concept, ...]:
        return tuple(c for c, _ in self.counts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c, _ in self.counts)


def _size_range(n_instances: int, size: int) -> tuple[int, int]:
    frac = {1: (0.45, 0.8), 2: (0.34, 0.55), 3: (0.3, 0.45)}.get(n_instances, (0.27, 0.38))
    return max(8, int(frac[0] * size)), max(9, int(frac[1] * size))


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    ax, ay, asz = a
    bx, by, bsz = b
    w = max(0, min(ax + asz, bx + bsz) - max(ax, bx))
    h = max(0, min(ay + asz, by + bsz) - max(ay, by))
    return w * h / float(min(asz, bsz) ** 2)


def layout(
    counts: tuple[tuple[Concept, int], ...], rng: np.random.Generator, size: int = 64
) -> tuple[Placed, ...]:
    """Random non-overlapping-ish positions for every instance (at most 25% of the smaller one covered)."""
    instances = [c for c, k in counts for _ in range(k)]
    lo, hi = _size_range(len(instances), size)
    for _attempt in range(50):
        boxes: list[tuple[int, int, int]] = []
        ok = True
        for _ in instances:
            for _try in range(30):
                s = int(rng.integers(lo, hi + 1))
                x = int(rng.integers(0, size - s + 1))
                y = int(rng.integers(0, size - s + 1))
                if all(_overlap((x, y, s), b) <= 0.25 for b in boxes):
                    boxes.append((x, y, s))
                    break
            else:
                ok = False
                break
        if ok:
            order = rng.permutation(len(instances))  # drawing order: who covers whom
            return tuple(Placed(instances[i], *boxes[i]) for i in order)
        lo, hi = max(8, lo - 2), max(9, hi - 3)
    raise RuntimeError("could not place the objects")  # pragma: no cover - sizes always fit eventually


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(40, 256, size=3))  # type: ignore[return-value]


def sample_background(rng: np.random.Generator) -> tuple[str, tuple[tuple[int, int, int], ...], int]:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    colors = (_random_color(rng), _random_color(rng))
    return kind, colors, int(rng.integers(2**31))


def make_scene(
    counts: tuple[tuple[Concept, int], ...], rng: np.random.Generator, size: int = 64
) -> Scene:
    """A scene with exactly these objects and counts, random layout and background."""
    bg, colors, bg_seed = sample_background(rng)
    return Scene(counts=counts, placed=layout(counts, rng, size), background=bg, colors=colors,
                 bg_seed=bg_seed, size=size)


def sample_counts(
    concepts: tuple[Concept, ...] | list[Concept],
    rng: np.random.Generator,
    n_objects: int | None = None,
    max_objects: int = 3,
    p_count: float = 0.2,
    exclude: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[tuple[Concept, int], ...]:
    """Draw distinct concepts (1..max_objects) and their counts (mostly 1; up to 4 instances in all)."""
    if n_objects is None:
        n_objects = int(rng.integers(1, max_objects + 1))
    pool = [c for c in concepts if c.name not in exclude]
    idx = rng.choice(len(pool), size=n_objects, replace=False)
    counts = []
    budget = 4 - n_objects
    for i in idx:
        c = pool[int(i)]
        k = 1
        if budget > 0 and c.plural != c.name and rng.random() < p_count:
            k = 1 + int(rng.integers(1, min(budget, 2) + 1))
            budget -= k - 1
        counts.append((c, k))
    return tuple(counts)


def _background(scene: Scene) -> np.ndarray:
    s = scene.size
    c0 = np.array(scene.colors[0], dtype=np.float32)
    c1 = np.array(scene.colors[1], dtype=np.float32)
    if scene.background == "plain":
        img = np.broadcast_to(c0, (s, s, 3)).copy()
    elif scene.background == "gradient":
        r = np.random.default_rng(scene.bg_seed)
        angle = r.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / (s - 1)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    else:  # noise: smooth blobs plus grain
        r = np.random.default_rng(scene.bg_seed)
        low = r.random((5, 5, 1)).astype(np.float32)
        t = np.asarray(Image.fromarray((low[..., 0] * 255).astype(np.uint8)).resize((s, s), Image.BICUBIC),
                       dtype=np.float32)[..., None] / 255.0
        img = c0 * (1 - t) + c1 * t + r.normal(0, 12, (s, s, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


class GlyphCache:
    """Resized glyphs per (style, concept, size, turn), least recently used first out."""

    def __init__(self, maxsize: int = 20000):
        self.maxsize = maxsize
        self._d: OrderedDict[tuple[str, str, int, int], Image.Image] = OrderedDict()

    def get(self, style: Style, concept: Concept, size: int, turn: int = 0) -> Image.Image:
        key = (style.name, concept.codepoint, size, turn)
        im = self._d.get(key)
        if im is None:
            g = style.glyph(concept)
            scale = size / max(g.size)
            im = g.resize((max(1, round(g.width * scale)), max(1, round(g.height * scale))), Image.LANCZOS)
            if turn == 180:
                im = im.transpose(Image.Transpose.ROTATE_180)
            elif turn:
                raise ValueError(f"a glyph turns by 0 or 180 degrees, got {turn}")
            self._d[key] = im
            if len(self._d) > self.maxsize:
                self._d.popitem(last=False)
        else:
            self._d.move_to_end(key)
        return im


_GLYPHS = GlyphCache()


def render_scene(scene: Scene, style: Style, glyphs: GlyphCache | None = None) -> Image.Image:
    """Draw a scene: (size, size) RGB PIL image."""
    glyphs = glyphs or _GLYPHS
    canvas = Image.fromarray(_background(scene))
    for p in scene.placed:
        g = glyphs.get(style, p.concept, p.size, p.turn)
        ox = p.x + (p.size - g.width) // 2
        oy = p.y + (p.size - g.height) // 2
        canvas.paste(g, (ox, oy), g)
    return canvas
