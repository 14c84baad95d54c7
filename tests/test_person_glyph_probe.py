"""scripts/person_glyph_probe.py on cases whose answer is known: the sequences it builds, a font's ligature told
from a fallback that draws a sequence's parts side by side, and the fluent ``-default`` lookup."""

from __future__ import annotations

import pytest
from PIL import features

from sayno.world.styles import FluentStyle, StyleError, get_style

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
       '<rect x="4" y="4" width="24" height="24" fill="#c00"/></svg>')


@pytest.fixture(scope="module")
def pg(scripts):
    with scripts("scripts/person_glyph_probe.py") as module:
        yield module


def test_candidates_follow_the_emoji_list(pg):
    listing = {k: {} for k in ("1f3ca", "1f3ca-200d-2640-fe0f", "1f3cb-fe0f", "1f3cb-fe0f-200d-2642-fe0f")}
    cands = {c.name: c for c in pg.candidates(listing)}
    assert cands["woman swimming"].codepoint == "1f3ca-200d-2640-fe0f"
    assert cands["person swimming"].unicode_name == "SWIMMER"
    assert cands["person lifting weights"].codepoint == "1f3cb-fe0f"  # only the FE0F form is listed
    assert cands["man lifting weights"].codepoint == "1f3cb-fe0f-200d-2642-fe0f"
    assert "man swimming" not in cands and "woman lifting weights" not in cands  # not in the list: not probed
    assert "man horse racing" not in cands and "woman dancing" in cands  # no gendered forms of non-person names
    built = {c.name: c for c in pg.candidates({})}  # no list: every man/woman form, unverified
    assert built["man swimming"].codepoint == "1f3ca-200d-2642-fe0f" and built["man swimming"].listed is None


@pytest.mark.skipif(not features.check("raqm"), reason="Pillow without raqm does not shape ZWJ sequences")
def test_font_ligature_told_from_parts_side_by_side(pg):
    openmoji = get_style("openmoji")
    listing = {k: {} for k in ("1f3ca", "1f3ca-200d-2640-fe0f")}
    woman = next(c for c in pg.candidates(listing) if c.name == "woman swimming")
    assert pg.probe(openmoji, woman)[0].status == "yes" and openmoji.glyph_count(pg.concept(woman).char) == 1
    # dog + ZWJ + female sign is no emoji: the font would draw a dog and a female sign; FontStyle refuses it
    dog = pg.Candidate("woman dog", "1f415-200d-2640-fe0f", "1f415", "DOG", None)
    with pytest.raises(StyleError, match="side by side"):
        openmoji.glyph(pg.concept(dog))
    cell, drew = pg.probe(openmoji, dog)
    assert cell.status == "parts" and "2 glyphs" in cell.why and drew is None


def test_fluent_finds_the_default_name_of_a_person_emoji(pg, tmp_path):
    (tmp_path / "person-running-default.svg").write_text(SVG)
    (tmp_path / "skier.svg").write_text(SVG)
    (tmp_path / "dog.svg").write_text(SVG)
    (tmp_path / "dog-default.svg").write_text(SVG.replace("#c00", "#0c0"))
    fluent = FluentStyle(tmp_path)
    runner = pg.Candidate("person running", "1f3c3", "1f3c3", "RUNNER", None)
    skier = pg.Candidate("skier", "26f7-fe0f", "26f7-fe0f", "SKIER", None)
    walker = pg.Candidate("person walking", "1f6b6", "1f6b6", "PEDESTRIAN", None)
    cell, drew = pg.probe(fluent, runner)
    assert cell.status == "yes" and drew is fluent and fluent.glyph(pg.concept(runner)).size == (96, 96)
    assert pg.probe(fluent, skier)[0].status == "yes"
    assert pg.probe(fluent, walker)[0].status == "no"
    dog = pg.Candidate("dog", "1f415", "1f415", "DOG", None)
    assert fluent._file(pg.concept(dog)).name == "dog.svg"  # a plain name first: no drawn concept changes
