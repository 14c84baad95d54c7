import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from sayno.base.prompts import indefinite_article
from sayno.config import ConfigError
from sayno.errors import InputError
from sayno.world import (
    WorldConfig,
    build_world,
    get_style,
    load_concepts,
    make_scene,
    pretrain_concepts,
    render_scene,
    sample_counts,
    unseen_concepts,
)
from sayno.world.build import mcq_question, sample_group, split_rng
from sayno.world.captions import AFFIRMATIVE_TEMPLATES, affirmative, hybrid, negation_only, neither_nor
from sayno.world.styles import StyleError

NEGATION_WORDS = re.compile(r"\b(no|not|without|never|none|nothing|neither|nor|lacking|lacks|free|absent|isn't|"
                            r"n't|devoid|void|empty|missing|nowhere|instead|rather|zero|excludes|omits)\b|n't\b")

TINY = WorldConfig(train_groups=6, val_groups=3, test_groups=6, caption_images=8, classify_per_class=1, predicate_scenes=2, predicate_train_scenes=2,
                   ood_id_classes=5, ood_seen_classes=4, ood_id_per_class=2, ood_per_class=1)


def test_concepts_curated():
    cs = load_concepts()
    assert len(cs) >= 150
    assert {c.category for c in cs} == {"animal", "food", "vehicle", "plant", "object"}
    assert len(unseen_concepts()) >= 10 and len(pretrain_concepts()) + len(unseen_concepts()) == len(cs)
    assert all(c.name == c.name.lower().strip() and c.name for c in cs)
    assert len({c.codepoint for c in cs}) == len(cs)


@pytest.mark.parametrize("style", ["openmoji", "noto"])
def test_every_concept_has_a_picture(style):
    try:
        st = get_style(style)
    except StyleError as e:
        pytest.skip(str(e))
    for c in load_concepts():
        g = st.glyph(c)
        assert g.mode == "RGBA" and min(g.size) > 4, c.name


def test_folder_style(tmp_path):
    dog = load_concepts()[0]
    Image.new("RGBA", (20, 10), (255, 0, 0, 255)).save(tmp_path / f"{dog.codepoint}.png")
    st = get_style(f"folder:{tmp_path}")
    assert st.glyph(dog).size == (20, 10)
    with pytest.raises(StyleError, match="no .*png"):
        st.glyph(load_concepts()[1])
    with pytest.raises(StyleError, match="unknown style"):
        get_style("comic-sans")


def test_scenes_are_seeded_and_sized():
    cs = pretrain_concepts()
    a = [render_scene(make_scene(sample_counts(cs, r), r), get_style()) for r in [np.random.default_rng(3)]]
    b = [render_scene(make_scene(sample_counts(cs, r), r), get_style()) for r in [np.random.default_rng(3)]]
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert a[0].size == (64, 64) and a[0].mode == "RGB"
    r = np.random.default_rng(0)
    for _ in range(200):
        counts = sample_counts(cs, r)
        assert 1 <= len(counts) <= 3 and sum(k for _, k in counts) <= 4
        assert len({c.name for c, _ in counts}) == len(counts)


def test_affirmative_captions_never_negate():
    r = np.random.default_rng(1)
    cs = pretrain_concepts()
    for _ in range(500):
        counts = sample_counts(cs, r)
        cap = affirmative(counts, r, "plain")
        assert not NEGATION_WORDS.search(cap.text), cap.text
        assert cap.negated == () and cap.template == "positive"
    for t in AFFIRMATIVE_TEMPLATES:
        assert not NEGATION_WORDS.search(t)


def test_negated_captions_are_labelled():
    r = np.random.default_rng(2)
    cs = pretrain_concepts()
    dog, cat, cow = cs[0], cs[1], cs[3]
    for _ in range(100):
        c = negation_only(cat, r)
        assert c.negated == ("cat",) and NEGATION_WORDS.search(c.text) and "cat" in c.text
        h = hybrid(((dog, 2),), cat, r)
        assert h.template == "hybrid" and h.positive == ("dog",) and "two dogs" in h.text
        hh = hybrid(((dog, 1),), cat, r, hedged=True)
        assert hh.hedged and re.search(r"probably|maybe|perhaps|likely|might|possibly", hh.text)
        held = hybrid(((dog, 1),), cat, r, hedged=True, split="held-out")
        assert held.hedged and held.family_split == "held-out" and re.search(r"probably|likely|might|may", held.text)
        nn = neither_nor(None, cat, cow, r)
        assert nn.negated == ("cat", "cow")


def test_mcq_has_exactly_one_plausible_answer():
    r = np.random.default_rng(4)
    cs = pretrain_concepts()
    for t in ("positive", "negative", "hybrid"):
        for _ in range(30):
            scene = make_scene(sample_counts(cs, r), r)
            opts, ans = mcq_question(scene, r, cs, t)
            assert len(opts) == 4 and len(set(opts)) == 4 and 0 <= ans < 4


def test_groups_share_objects_plus_one():
    g = sample_group(0, split_rng(0, "train"), pretrain_concepts(), 64)
    assert set(g.b.names) == set(g.a.names) | {g.extra.name}
    assert g.extra.name not in g.a.names
    assert all(c.name not in g.b.names for c in g.absent)


def test_splits_use_distinct_streams():
    a = split_rng(0, "train").random(4)
    b = split_rng(0, "test").random(4)
    assert not np.allclose(a, b)
    assert np.allclose(split_rng(0, "test").random(4), b)


def test_build_world_formats(tmp_path):
    m = build_world(tmp_path, TINY, progress=False)
    assert json.loads((tmp_path / "world.json").read_text())["parts"].keys() == m["parts"].keys()
    with open(tmp_path / "mcq_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * TINY.test_groups
    assert set(rows[0]) == {"image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
                            "correct_answer_template", "family_split"}
    assert {r["correct_answer_template"] for r in rows} <= {"positive", "negative", "hybrid"}
    for r in rows:
        assert (tmp_path / r["image_path"]).exists()
    with open(tmp_path / "retrieval_neg_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert json.loads(rows[0]["negative_objects"]) and isinstance(json.loads(rows[0]["captions"]), list)
    with open(tmp_path / "negation_train.csv") as f:
        rows = list(csv.DictReader(f))
    hedged = [r for r in rows if r["hedged"] == "1"]
    assert len(hedged) == TINY.train_groups
    negated_true = [r for r in rows if r["true"] == "1" and json.loads(r["negated_objects"])]
    assert all(r["hard_negative"] for r in negated_true)
    ids = (tmp_path / "ood" / "id_classes.txt").read_text().split("\n")
    assert len([i for i in ids if i]) == TINY.ood_id_classes
    unseen = {c.name.replace(" ", "_") for c in unseen_concepts()}
    assert {p.name for s in ("unseen_near", "unseen_far") for p in (tmp_path / "ood" / s).iterdir()} == unseen
    assert len(list((tmp_path / "classify").iterdir())) == len(pretrain_concepts())


def test_styles_draw_the_same_scenes(tmp_path):
    try:
        get_style("noto")
    except StyleError as e:
        pytest.skip(str(e))
    cfg_o = TINY
    cfg_n = WorldConfig(**{**TINY.__dict__, "style": "noto"})
    build_world(tmp_path / "o", cfg_o, parts=("test",), progress=False)
    build_world(tmp_path / "n", cfg_n, parts=("test",), progress=False)
    assert (tmp_path / "o" / "mcq_test.csv").read_text() == (tmp_path / "n" / "mcq_test.csv").read_text()
    a = np.asarray(Image.open(tmp_path / "o" / "images/test/000000a.png"))
    b = np.asarray(Image.open(tmp_path / "n" / "images/test/000000a.png"))
    assert not np.array_equal(a, b)


def test_articles_follow_the_one_rule():
    for c in load_concepts():
        assert c.article == indefinite_article(c.name)
        assert c.phrase(1) == f"{c.article} {c.name}"
    phrases = {c.name: c.phrase(1) for c in load_concepts()}
    assert phrases["hourglass"] == "an hourglass" and phrases["umbrella"] == "an umbrella"


def test_world_config_and_parts_are_checked(tmp_path):
    cfg = WorldConfig.from_dict({"seed": 3, "test_groups": 5})
    assert cfg.seed == 3 and cfg.test_groups == 5
    with pytest.raises(ConfigError, match="test_grups"):
        WorldConfig.from_dict({"test_grups": 5})
    with pytest.raises(InputError, match="'tests'"):  # before anything is written
        build_world(tmp_path / "w", TINY, progress=False, parts=("test", "tests"))
    assert not (tmp_path / "w").exists()


def test_concept_files_reject_unknown_keys(tmp_path):
    bad = tmp_path / "concepts.json"
    bad.write_text(json.dumps([{"name": "dog", "plural": "dogs", "codepoint": "1f415", "category": "animal",
                                "pretrain": True, "colour": "brown"}]))
    with pytest.raises(ConfigError, match="colour"):
        load_concepts(str(bad))


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_worker_processes_draw_the_same_files(tmp_path):
    """A part large enough for the worker pool (two chunks or more) gives the same files as one process."""
    from sayno.world.build import PAINT_CHUNK

    cfg = WorldConfig(**{**TINY.__dict__, "classify_per_class": 3})
    assert 3 * len(pretrain_concepts()) >= 2 * PAINT_CHUNK
    one = build_world(tmp_path / "one", cfg, parts=("classify", "test"), progress=False, workers=1)
    two = build_world(tmp_path / "two", cfg, parts=("classify", "test"), progress=False, workers=2)
    assert one == two
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")
    with pytest.raises(InputError, match="workers"):
        build_world(tmp_path / "bad", cfg, parts=("test",), progress=False, workers=0)
