"""Which person-activity emoji each style of the emoji world draws (issue 25, first step).

    python scripts/person_glyph_probe.py --out /tmp/s31/glyphs/person_glyphs.png [--json FILE] [--zoom 2]

Candidates: the person-activity emoji of :data:`ACTIVITIES` (CLDR names), in their person form and, where Unicode
has them, their man and woman forms (base + ZWJ U+200D + U+2642/U+2640 + U+FE0F). The base's Unicode name comes
from Python's ``unicodedata``; every sequence is checked against the emoji list of the installed
``emoji-datasource-twitter`` package (``emoji.json``), which also says whether a base is fully qualified only
with U+FE0F (U+26F9 U+FE0F, U+1F3CB U+FE0F, ...). The skin-tone-free form is probed; no skin tones.

Each candidate is drawn with the project's own code path, ``sayno.world.styles.get_style(name).glyph(concept)``,
with a :class:`Concept` whose ``codepoint`` is the dash-joined sequence. A cell of the table is:

- ``yes``: drawn as one picture (for the font styles, the shaped text is one glyph advance wide: the font has a
  ligature for the whole sequence).
- ``parts``: the font has no ligature for the sequence and would draw its parts side by side (person + gender
  sign); ``FontStyle`` refuses such a sequence (:meth:`FontStyle.glyph_count`).
- ``no``: not drawn (the reason goes to the JSON file). Fluent files are looked up as ``<cldr-name>.svg``, then
  ``<cldr-name>-default.svg`` (the package's name for a person emoji that takes skin tones).

``same`` is added where a man/woman form is drawn with exactly the pixels of the person form. Printed too, per
style: how far apart the man and woman forms of an activity are at the world's size (:func:`tile_difference`),
and for scale, how far apart the person forms of two different activities are.
The contact sheet has one row per candidate and one 64 x 64 world tile per style (plain background, the glyph at
40 px, the middle of a single object's 28-51 px in ``scenes._size_range``, and at 20 px, the size of one of four
objects), drawn by ``sayno.world.render_scene``; tiles are enlarged ``--zoom`` times, nearest neighbour.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sayno.world.concepts import Concept
from sayno.world.scenes import GlyphCache, Placed, Scene, render_scene
from sayno.world.styles import (
    FontStyle,
    Style,
    StyleError,
    get_style,
    npm_package_dir,
)

STYLES = ("openmoji", "noto", "twemoji", "fluent")
TRAINING_STYLES = ("openmoji", "noto", "twemoji")
ZWJ, FE0F, MALE, FEMALE = 0x200D, 0xFE0F, 0x2642, 0x2640
# (CLDR name of the person form, base code point); the man/woman forms are probed for every one
ACTIVITIES = (
    ("person running", 0x1F3C3), ("person walking", 0x1F6B6), ("person standing", 0x1F9CD),
    ("person kneeling", 0x1F9CE), ("person swimming", 0x1F3CA), ("person surfing", 0x1F3C4),
    ("person rowing boat", 0x1F6A3), ("person biking", 0x1F6B4), ("person mountain biking", 0x1F6B5),
    ("person climbing", 0x1F9D7), ("person lifting weights", 0x1F3CB), ("person bouncing ball", 0x26F9),
    ("person cartwheeling", 0x1F938), ("person juggling", 0x1F939), ("person playing water polo", 0x1F93D),
    ("person playing handball", 0x1F93E), ("person golfing", 0x1F3CC), ("person in lotus position", 0x1F9D8),
    ("person in steamy room", 0x1F9D6), ("person bowing", 0x1F647), ("person gesturing NO", 0x1F645),
    ("person gesturing OK", 0x1F646), ("person raising hand", 0x1F64B), ("person facepalming", 0x1F926),
    ("person shrugging", 0x1F937), ("woman dancing", 0x1F483), ("man dancing", 0x1F57A),
    ("person fencing", 0x1F93A), ("horse racing", 0x1F3C7), ("skier", 0x26F7), ("snowboarder", 0x1F3C2),
    ("person taking bath", 0x1F6C0), ("person in bed", 0x1F6CC),
)
BIG, SMALL = 40, 20  # glyph sizes in a 64-pixel tile


@dataclass(frozen=True)
class Candidate:
    name: str  # "woman swimming"
    codepoint: str  # "1f3ca-200d-2640-fe0f", fully qualified
    base: str  # the person form's codepoint
    unicode_name: str  # unicodedata name of the base code point, "" if Python does not know it
    listed: bool | None  # in the emoji package's list (None: no list installed)


def emoji_list() -> dict[str, dict]:
    """Fully qualified sequence (lower case, ``-``) -> entry of ``emoji-datasource-twitter``'s ``emoji.json``;
    empty when the package is not installed."""
    try:
        path = npm_package_dir("twemoji") / "emoji.json"
    except StyleError:
        return {}
    return {e["unified"].lower(): e for e in json.loads(path.read_text())}


def _key(cps: list[int]) -> str:
    return "-".join(f"{cp:x}" for cp in cps)


def candidates(listing: dict[str, dict]) -> list[Candidate]:
    """The person forms of :data:`ACTIVITIES` and the man/woman forms ``listing`` has (all of them when it is
    empty, unverified). A base is followed by U+FE0F where only that form is in ``listing``."""
    out = []
    for name, cp in ACTIVITIES:
        base = [cp, FE0F] if listing and _key([cp]) not in listing and _key([cp, FE0F]) in listing else [cp]
        uname = unicodedata.name(chr(cp), "")
        out.append(Candidate(name, _key(base), _key(base), uname, (_key(base) in listing) if listing else None))
        if not name.startswith("person "):
            continue
        for word, sign in (("man", MALE), ("woman", FEMALE)):
            key = _key([*base, ZWJ, sign, FE0F])
            if listing and key not in listing:
                continue
            out.append(Candidate(word + name[len("person"):], key, _key(base), uname, bool(listing) or None))
    return out


def concept(c: Candidate) -> Concept:
    return Concept(name=c.name, plural=c.name, codepoint=c.codepoint, category="person", pretrain=False)


@dataclass
class Cell:
    status: str  # yes | parts | no
    why: str = ""
    same_as_person: bool = False


def probe(style: Style, c: Candidate) -> tuple[Cell, Style | None]:
    """Draw ``c`` in ``style``; the cell and the style that drew it (None: not drawn)."""
    con = concept(c)
    if isinstance(style, FontStyle) and chr(ZWJ) in con.char and style.glyph_count(con.char) != 1:
        n = style.glyph_count(con.char)
        return Cell("parts", f"the font shapes {c.codepoint} into {n} glyphs (no ligature)"), None
    try:
        style.glyph(con)
    except StyleError as e:
        return Cell("no", str(e)), None
    return Cell("yes"), style


def same_picture(style: Style, a: Candidate, b: Candidate) -> bool:
    ga, gb = style.glyph(concept(a)), style.glyph(concept(b))
    return ga.size == gb.size and np.array_equal(np.asarray(ga), np.asarray(gb))


def tile_difference(a: Candidate, style_a: Style, b: Candidate, style_b: Style) -> float:
    """Fraction of a 64 x 64 tile's pixels (glyph at 40 px, plain grey) where ``a`` (drawn by ``style_a``) and
    ``b`` differ by more than 32 in some channel: how far apart two glyphs are at the world's size."""
    def pixels(c: Candidate, style: Style) -> np.ndarray:
        con = concept(c)
        scene = Scene(counts=((con, 1),), placed=(Placed(con, 12, 12, BIG),), background="plain",
                      colors=((215, 215, 215), (215, 215, 215)), bg_seed=0, size=64)
        return np.asarray(render_scene(scene, style, GlyphCache()), dtype=np.int16)
    return float((np.abs(pixels(a, style_a) - pixels(b, style_b)).max(-1) > 32).mean())


def tile(style: Style | None, c: Candidate, zoom: int) -> Image.Image:
    """A 64 x 64 world tile of ``c`` at 40 and 20 px (grey when not drawn), enlarged ``zoom`` times."""
    if style is None:
        im = Image.new("RGB", (64, 64), (120, 120, 120))
        ImageDraw.Draw(im).text((24, 26), "no", fill=(255, 255, 255))
    else:
        con = concept(c)
        scene = Scene(counts=((con, 2),), placed=(Placed(con, 1, 12, BIG), Placed(con, 43, 22, SMALL)),
                      background="plain", colors=((215, 215, 215), (215, 215, 215)), bg_seed=0, size=64)
        im = render_scene(scene, style, GlyphCache())
    return im.resize((64 * zoom, 64 * zoom), Image.NEAREST)


def contact_sheet(rows: list[tuple[Candidate, dict[str, tuple[Cell, Style | None]]]], zoom: int) -> Image.Image:
    font = ImageFont.load_default(size=13)
    t, label, head = 64 * zoom, 230, 22
    sheet = Image.new("RGB", (label + len(STYLES) * (t + 4), head + len(rows) * (t + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, s in enumerate(STYLES):
        draw.text((label + j * (t + 4) + 4, 4), s, fill=(0, 0, 0), font=font)
    for i, (c, cells) in enumerate(rows):
        y = head + i * (t + 4)
        draw.text((4, y + t // 2 - 14), c.name, fill=(0, 0, 0), font=font)
        draw.text((4, y + t // 2 + 2), c.codepoint, fill=(90, 90, 90), font=font)
        for j, s in enumerate(STYLES):
            cell, drew = cells[s]
            x = label + j * (t + 4)
            sheet.paste(tile(drew, c, zoom), (x, y))
            if cell.status != "yes" or cell.same_as_person:
                mark = cell.status + (" same" if cell.same_as_person else "")
                draw.text((x + 2, y + t - 15), mark, fill=(200, 0, 0), font=font)
    return sheet


def markdown(rows: list[tuple[Candidate, dict[str, tuple[Cell, Style | None]]]]) -> str:
    lines = ["| emoji | code points | " + " | ".join(STYLES) + " |", "|---|---|" + "---|" * len(STYLES)]
    for c, cells in rows:
        marks = [cells[s][0].status + (" (same)" if cells[s][0].same_as_person else "") for s in STYLES]
        lines.append(f"| {c.name} | {c.codepoint.upper().replace('-', ' ')} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="contact sheet PNG")
    ap.add_argument("--json", help="per-cell results with the reasons")
    ap.add_argument("--zoom", type=int, default=2)
    args = ap.parse_args()
    listing = emoji_list()
    cands = candidates(listing)
    styles = {s: get_style(s) for s in STYLES}
    by_code = {c.codepoint: c for c in cands}
    rows = []
    for c in cands:
        cells = {s: probe(styles[s], c) for s in STYLES}
        if c.codepoint != c.base:
            for s, (cell, drew) in cells.items():
                person = by_code[c.base]
                if drew is not None and cell.status != "no":
                    try:
                        cell.same_as_person = same_picture(drew, c, person)
                    except StyleError:
                        pass
        rows.append((c, cells))
    print(markdown(rows))
    cell_of = {(c.codepoint, s): cell for c, cells in rows for s, cell in cells.items()}
    differences: dict[str, dict[str, float]] = {}
    for s in STYLES:
        differences[s] = {}
        for m in (c for c in cands if c.codepoint.endswith("200d-2642-fe0f")):
            w = by_code.get(m.codepoint.replace("2642", "2640"))
            if w is None or any(cell_of[c.codepoint, s][0].status == "no" for c in (m, w)):
                continue
            differences[s][m.name[len("man "):]] = tile_difference(m, cell_of[m.codepoint, s][1], w, cell_of[w.codepoint, s][1])
        if differences[s]:
            d = differences[s]
            low = min(d, key=d.get)
            print(f"man vs woman at {BIG} px, {s}: {len(d)} pairs, pixels that differ: median "
                  f"{np.median(list(d.values())):.3f}, min {d[low]:.3f} ({low}), max {max(d.values()):.3f}")
        persons = [c for c in cands if c.codepoint == c.base and cell_of[c.codepoint, s][0].status != "no"]
        apart = [tile_difference(a, cell_of[a.codepoint, s][1], b, cell_of[b.codepoint, s][1])
                 for i, a in enumerate(persons) for b in persons[i + 1:]]
        if apart:
            print(f"  for scale, two different activities (person forms) at {BIG} px, {s}: {len(apart)} pairs, "
                  f"median {np.median(apart):.3f}, min {min(apart):.3f}")
    ok = {s: {c.codepoint for c, cells in rows if cells[s][0].status == "yes"} for s in STYLES}
    all_three = [c for c, _ in rows if all(c.codepoint in ok[s] for s in TRAINING_STYLES)]
    fluent = {c.codepoint: cells["fluent"][0].status for c, cells in rows}
    fluent_too = [c for c in all_three if fluent[c.codepoint] == "yes"]
    print(f"\n{len(cands)} candidates ({sum(c.listed is True for c in cands)} in the emoji list); drawn as one "
          "picture: " + ", ".join(f"{s} {len(ok[s])}" for s in STYLES))
    print(f"drawn by all three training styles: {len(all_three)}; of them fluent draws {len(fluent_too)}")
    print("all three: " + ", ".join(c.name for c in all_three))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(rows, args.zoom).save(args.out, optimize=True)
    print(f"contact sheet: {args.out} ({Path(args.out).stat().st_size / 1000:.0f} kB)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"cells": [{**asdict(c), "cells": {s: asdict(cell) for s, (cell, _) in cells.items()}}
                       for c, cells in rows],
             "man_vs_woman_pixels_differ": differences}, indent=1))


if __name__ == "__main__":
    main()
