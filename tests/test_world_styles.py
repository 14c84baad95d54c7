"""Art styles: twemoji / fluent (npm packages), folder styles with variation-selector names, odd PNG modes,
SVG files, missing glyphs. Hand-made fixture folders, so nothing here needs npm; the real packages are checked
when installed."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sayno.cli import app
from sayno.world import WorldConfig, build_world, load_concepts, pretrain_concepts, styles
from sayno.world import scenes as world_scenes
from sayno.world.concepts import concept_by_name
from sayno.world.styles import (
    STYLES,
    StyleError,
    codepoint_key,
    drawable_concepts,
    emoji_dir,
    get_style,
    style_coverage,
    to_rgba,
)

TINY = WorldConfig(train_groups=6, val_groups=3, test_groups=8, caption_images=8, classify_per_class=1,
                   ood_id_classes=5, ood_seen_classes=4, ood_id_per_class=1, ood_per_class=1)
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
       '<rect x="8" y="4" width="16" height="24" fill="#{color}"/></svg>')
REAL_EMOJI_DIR = emoji_dir()  # before any test changes SAYNO_EMOJI_DIR


@pytest.fixture(autouse=True)
def fresh_styles():
    """Styles, coverage and resized glyphs are cached by style name: start and end every test without them."""
    def clear() -> None:
        get_style.cache_clear()
        style_coverage.cache_clear()
        styles.svg_renderer.cache_clear()
        world_scenes._GLYPHS._d.clear()
    clear()
    yield
    clear()


def square(path: Path, color=(200, 30, 30, 255), size: int = 12) -> None:
    im = Image.new("RGBA", (size + 4, size + 4), (0, 0, 0, 0))
    im.paste(Image.new("RGBA", (size, size), color), (2, 2))
    im.save(path)


def folder_with(tmp_path: Path, concepts, name: str = "art", fe0f: bool = False) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, c in enumerate(concepts):
        square(folder / f"{c.codepoint}{'-fe0f' if fe0f else ''}.png", (i % 256, 80, 160, 255))
    return folder


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("stem, key", [
    ("1f6cf", "1f6cf"), ("1f6cf-fe0f", "1f6cf"), ("1F6CF-FE0F", "1f6cf"), ("1f6cf_fe0e", "1f6cf"),
    ("emoji_u1f6cf", "1f6cf"), ("U+1F6CF", "1f6cf"), ("0023-fe0f-20e3", "23-20e3"),
    ("1f468-200d-1f469", "1f468-200d-1f469"), ("dog", None), ("fe0f", None), ("", None), ("1f6cf-zz", None),
])
def test_codepoint_key_ignores_variation_selectors(stem, key):
    assert codepoint_key(stem) == key


def test_folder_style_takes_fe0f_and_plain_names(tmp_path):
    bed, dog, cat = concept_by_name("bed"), concept_by_name("dog"), concept_by_name("cat")
    folder = tmp_path / "art"
    folder.mkdir()
    square(folder / f"{bed.codepoint}-fe0f.png", size=10)  # how emoji-datasource names it: 1f6cf-fe0f.png
    square(folder / f"{dog.codepoint.upper()}.PNG", size=12)
    square(folder / f"emoji_u{cat.codepoint}.png", size=14)  # Noto's repository names
    st = get_style(f"folder:{folder}")
    assert st.glyph(bed).size == (10, 10) and st.glyph(dog).size == (12, 12) and st.glyph(cat).size == (14, 14)
    with pytest.raises(StyleError, match=r"no 1f40e\.png .*horse"):
        st.glyph(concept_by_name("horse"))


def test_plain_name_wins_over_fe0f_and_png_over_svg(tmp_path):
    dog = concept_by_name("dog")
    folder = tmp_path / "art"
    folder.mkdir()
    square(folder / f"{dog.codepoint}-fe0f.png", size=10)
    square(folder / f"{dog.codepoint}.png", size=12)
    (folder / f"{dog.codepoint}.svg").write_text(SVG.format(color="00ff00"))
    assert get_style(f"folder:{folder}").glyph(dog).size == (12, 12)


# ---------------------------------------------------------------------------------------------- pixels
def test_palette_png_keeps_its_transparency(tmp_path):
    dog = concept_by_name("dog")
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (5, 5, 15, 12))
    pal.save(tmp_path / f"{dog.codepoint}.png", transparency=0)
    g = get_style(f"folder:{tmp_path}").glyph(dog)
    assert g.mode == "RGBA" and g.size == (10, 7)  # cropped to the opaque red block
    assert g.getpixel((0, 0)) == (255, 0, 0, 255)


def test_la_png_keeps_its_alpha(tmp_path):
    dog = concept_by_name("dog")
    a = np.zeros((16, 16, 2), np.uint8)
    a[4:10, 2:14] = (90, 200)
    Image.fromarray(a, "LA").save(tmp_path / f"{dog.codepoint}.png")
    assert Image.open(tmp_path / f"{dog.codepoint}.png").mode == "LA"
    g = get_style(f"folder:{tmp_path}").glyph(dog)
    assert g.size == (12, 6) and g.getpixel((0, 0)) == (90, 90, 90, 200)


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    dog = concept_by_name("dog")
    a = np.full((8, 8), 32768, np.uint16)
    a[0, 0] = 65535
    Image.fromarray(a).save(tmp_path / f"{dog.codepoint}.png")
    assert Image.open(tmp_path / f"{dog.codepoint}.png").mode.startswith("I")
    g = np.asarray(get_style(f"folder:{tmp_path}").glyph(dog))
    assert g[0, 0].tolist() == [255, 255, 255, 255] and g[1, 1].tolist() == [128, 128, 128, 255]


def test_to_rgba_keeps_colour_key_and_16_bit_key():
    rgb = Image.new("RGB", (4, 4), (10, 20, 30))
    rgb.info["transparency"] = (10, 20, 30)
    assert to_rgba(rgb).getpixel((0, 0))[3] == 0
    grey = Image.fromarray(np.array([[0, 40000]], np.uint16))
    grey.info["transparency"] = 0
    assert [px[3] for px in np.asarray(to_rgba(grey))[0]] == [0, 255]


def test_unreadable_and_empty_pictures_are_style_errors(tmp_path):
    dog, cat = concept_by_name("dog"), concept_by_name("cat")
    (tmp_path / f"{dog.codepoint}.png").write_bytes(b"not a png")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / f"{cat.codepoint}.png")
    st = get_style(f"folder:{tmp_path}")
    with pytest.raises(StyleError, match="cannot read style image"):
        st.glyph(dog)
    with pytest.raises(StyleError, match="empty picture for cat"):
        st.glyph(cat)


# ---------------------------------------------------------------------------------------------- SVG
def test_svg_files_are_rendered(tmp_path):
    dog = concept_by_name("dog")
    (tmp_path / f"{dog.codepoint}-fe0f.svg").write_text(SVG.format(color="ff0000"))
    g = get_style(f"folder:{tmp_path}").glyph(dog)
    assert g.mode == "RGBA" and g.size == (64, 96)  # the 16x24 rectangle of a 32-unit view box at 128 pixels
    assert g.getpixel((30, 40)) == (255, 0, 0, 255)


def test_svg_without_a_renderer_is_refused(tmp_path, monkeypatch):
    (tmp_path / "1f415.svg").write_text(SVG.format(color="ff0000"))
    monkeypatch.setitem(sys.modules, "cairosvg", None)  # import fails
    monkeypatch.setattr(styles.shutil, "which", lambda name: None)
    with pytest.raises(StyleError, match="needs an SVG renderer: pip install cairosvg .* librsvg2-bin"):
        get_style(f"folder:{tmp_path}")


def test_a_broken_svg_is_a_style_error(tmp_path):
    (tmp_path / "1f415.svg").write_text("<svg")
    with pytest.raises(StyleError, match="cannot render SVG"):
        get_style(f"folder:{tmp_path}").glyph(concept_by_name("dog"))


# ---------------------------------------------------------------------------------------------- missing glyphs
def test_missing_glyphs_are_reported_and_the_rest_is_built(tmp_path):
    gone = {"dog", "cat", "bed", "owl"}
    folder = folder_with(tmp_path, [c for c in load_concepts() if c.name not in gone], fe0f=True)
    name = f"folder:{folder}"
    with pytest.warns(UserWarning, match=rf"cannot draw 4 of {len(load_concepts())} concepts; building without them: .*bed"):
        cov = style_coverage(name)
    assert set(cov.missing) == gone and len(cov.drawn) == len(load_concepts()) - 4
    assert not {c.name for c in drawable_concepts(name, pretrain_concepts())} & gone
    cfg = WorldConfig(**{**TINY.__dict__, "style": name, "classify_per_class": 1})
    m = build_world(tmp_path / "w", cfg, progress=False, parts=("test", "classify", "ood"))
    assert sorted(m["concepts"]["missing_in_style"]) == sorted(gone)
    with open(tmp_path / "w" / "negation_test.csv") as f:
        used = {o for row in csv.DictReader(f) for col in ("positive_objects", "negated_objects")
                for o in json.loads(row[col])}
    assert used and not used & gone
    classes = {p.name for p in (tmp_path / "w" / "classify").iterdir()}
    assert "dog" not in classes and len(classes) == len(pretrain_concepts()) - len(gone & {
        c.name for c in pretrain_concepts()})


def test_too_few_glyphs_is_a_clear_error(tmp_path):
    folder = folder_with(tmp_path, load_concepts()[:20])
    with pytest.raises(StyleError, match=r"draws only 20 of the 185 pretraining concepts \(needs at least 50%\)"):
        build_world(tmp_path / "w", WorldConfig(**{**TINY.__dict__, "style": f"folder:{folder}"}), progress=False,
                    parts=("test",))
    assert not (tmp_path / "w").exists()


def test_folders_without_pictures_are_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "dog.png").write_bytes(b"")
    with pytest.raises(StyleError, match="no PNG or SVG files named by code point"):
        get_style(f"folder:{tmp_path}")
    with pytest.raises(StyleError, match="style folder not found"):
        get_style(f"folder:{tmp_path / 'nope'}")


def test_unknown_style_lists_the_styles():
    for bad in ("comic-sans", "folder:", "Twemoji"):
        with pytest.raises(StyleError, match="unknown style .*: use openmoji, noto, twemoji, fluent or folder:"):
            get_style(bad)


# ---------------------------------------------------------------------------------------------- npm packages
def fake_package(root: Path, package: str) -> Path:
    pkg = root / "node_modules" / package
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": package}))
    return pkg


def test_twemoji_reads_its_package_from_sayno_emoji_dir(tmp_path, monkeypatch):
    pkg = fake_package(tmp_path, "emoji-datasource-twitter")
    (pkg / "img" / "twitter" / "64").mkdir(parents=True)
    square(pkg / "img" / "twitter" / "64" / "1f6cf-fe0f.png", size=9)
    monkeypatch.setenv("SAYNO_EMOJI_DIR", str(tmp_path))
    st = get_style("twemoji")
    assert st.name == "twemoji" and st.glyph(concept_by_name("bed")).size == (9, 9)


def test_fluent_maps_concepts_to_emoji_names(tmp_path, monkeypatch):
    flat = fake_package(tmp_path, "fluentui-emoji") / "icons" / "flat"
    flat.mkdir(parents=True)
    for stem in ("dog", "ewe", "honeybee", "camel"):  # concept name, CLDR alias, Unicode name, concept name
        (flat / f"{stem}.svg").write_text(SVG.format(color="0000ff"))
    monkeypatch.setenv("SAYNO_EMOJI_DIR", str(tmp_path))
    st = get_style("fluent")
    for name in ("dog", "sheep", "bee", "camel"):
        assert st.glyph(concept_by_name(name)).size == (64, 96), name
    with pytest.raises(StyleError, match=r"style 'fluent' has no picture for cat \(1f408\)"):
        st.glyph(concept_by_name("cat"))
    assert styles.fluent_candidates(concept_by_name("dinosaur")) == ["sauropod", "dinosaur"]


@pytest.mark.parametrize("style, package", [("twemoji", "emoji-datasource-twitter"), ("fluent", "fluentui-emoji")])
def test_a_missing_package_names_the_install_command(tmp_path, monkeypatch, style, package):
    monkeypatch.setenv("SAYNO_EMOJI_DIR", str(tmp_path))
    with pytest.raises(StyleError, match=f"the {style} style needs the npm package {package} in .*: run bash "
                                         f"setup.sh, or npm install --prefix .* {package}@"):
        get_style(style)


@pytest.mark.parametrize("style", ["twemoji", "fluent"])
def test_real_package_draws_every_concept(style, monkeypatch):
    monkeypatch.setenv("SAYNO_EMOJI_DIR", str(REAL_EMOJI_DIR))
    package = styles.NPM_PACKAGES[style].rsplit("@", 1)[0]
    if not (REAL_EMOJI_DIR / "node_modules" / package).is_dir():
        pytest.skip(f"npm package {package} is not installed in {REAL_EMOJI_DIR} (bash setup.sh installs it)")
    cov = style_coverage(style)
    assert cov.missing == {} and len(cov.drawn) == len(load_concepts())
    assert all(min(get_style(style).glyph(c).size) > 4 for c in load_concepts())


# ---------------------------------------------------------------------------------------------- command line
def test_world_build_command_with_a_folder_style(tmp_path):
    folder = folder_with(tmp_path, load_concepts()[1:], fe0f=True)
    runner = CliRunner()
    with pytest.warns(UserWarning, match=f"cannot draw 1 of {len(load_concepts())} concepts; building without them: dog"):
        r = runner.invoke(app, ["world", "build", str(tmp_path / "w"), "--style", f"folder:{folder}", "--scale",
                                "0.002", "--parts", "test"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "w" / "mcq_test.csv").is_file()
    r = runner.invoke(app, ["world", "build", str(tmp_path / "x"), "--style", "comic"])
    assert r.exit_code == 2 and "unknown style 'comic'" in r.output
    helptext = runner.invoke(app, ["world", "build", "--help"], terminal_width=200).output
    assert all(s.split(":")[0] in helptext for s in STYLES)
