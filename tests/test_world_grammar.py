"""The emoji world's negation grammar: 60+ constructions in training and held-out families, split by family,
the splits labelled in the world's files, and every caption the world writes read exactly by the negation
analyser (the world knows the truth: negated objects, affirmed objects, hedges)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from sayno.world import WorldConfig, build_world, pretrain_concepts
from sayno.world import captions as world_captions
from sayno.world.build import WORLD_VERSION, group_captions, mcq_question, sample_group, split_rng
from sayno.world.captions import (
    COORDINATION,
    FAMILIES,
    FAMILY_SPLITS,
    HELDOUT_FAMILIES,
    NEITHER_NOR,
    TRAINING_FAMILIES,
    constructions,
    family_split,
    hybrid,
    negation_only,
)

TINY = WorldConfig(train_groups=8, val_groups=4, test_groups=24, caption_images=2, classify_per_class=1,
                   ood_id_classes=3, ood_seen_classes=2, ood_id_per_class=1, ood_per_class=1)


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_at_least_60_constructions_split_by_family():
    assert len(constructions()) + len(NEITHER_NOR) >= 60
    assert len({c.template for c in constructions()}) == len(constructions())
    assert set(TRAINING_FAMILIES).isdisjoint(HELDOUT_FAMILIES)
    assert set(FAMILIES) | {COORDINATION} == set(TRAINING_FAMILIES) | set(HELDOUT_FAMILIES)
    assert all(c.family == name for name, fam in FAMILIES.items() for c in fam)
    for split, families in FAMILY_SPLITS.items():
        assert any(c.hedged for f in families if f in FAMILIES for c in FAMILIES[f]), split  # hedges in both
        assert all(family_split(f) == split for f in families)
    assert len([c for c in constructions() if family_split(c.family) == "held-out"]) >= 20


def test_captions_come_from_the_asked_family_split():
    r = np.random.default_rng(0)
    cs = pretrain_concepts()
    for _ in range(200):
        for split in FAMILY_SPLITS:
            a = negation_only(cs[int(r.integers(len(cs)))], r, split=split)
            h = hybrid(((cs[0], 1),), cs[1], r, hedged=bool(r.random() < 0.3), split=split)
            assert a.family_split == h.family_split == split
            assert "{pos}" not in a.construction and a.template == "negative"


def test_train_and_val_use_only_training_families_and_test_labels_both(tmp_path):
    m = build_world(tmp_path / "w", TINY, progress=False, parts=("train", "val", "test"))
    w = tmp_path / "w"
    assert m["version"] == WORLD_VERSION and m["families"]["held-out"] == list(HELDOUT_FAMILIES)
    for split in ("train", "val"):
        for name in (f"negation_{split}.csv", f"ccneg_{split}.csv", f"mcq_{split}.csv"):
            rows = _rows(w / name)
            assert {r["family_split"] for r in rows} <= {"training", ""}, name
        assert not (w / f"mcq_{split}_heldout.csv").exists()
    for stem in ("mcq_test", "ccneg_test"):
        rows = _rows(w / f"{stem}.csv")
        assert {r["family_split"] for r in rows} == {"training", "held-out"}
        parts = [_rows(w / f"{stem}_{s}.csv") for s in ("trainfam", "heldout")]
        assert [r["family_split"] for r in parts[0]] == ["training"] * len(parts[0])
        assert sorted(map(str, parts[0] + parts[1])) == sorted(map(str, rows))
    cc = _rows(w / "ccneg_test.csv")
    assert all(family_split(r["family"]) == r["family_split"] for r in cc)


@pytest.fixture(scope="module")
def analyse():
    pytest.importorskip("spacy")
    from sayno.negation import ParserMissing, parse_many

    try:
        parse_many(["no dog"])
    except ParserMissing:
        pytest.skip("no spaCy English pipeline installed")
    return parse_many


def _world_captions(groups: int) -> list:
    """Captions the world writes: scene-group captions and MCQ options, in both family splits."""
    concepts = pretrain_concepts()
    rng = split_rng(0, "test")
    caps = []
    for gid in range(groups):
        g = sample_group(gid, rng, concepts, 64)
        for split in FAMILY_SPLITS:
            caps += [cap for _, cap, _ in group_captions(g, rng, 0.25, split)]
            for t in ("positive", "negative", "hybrid"):
                caps.append((g.a, t, split))
    out = []
    for c in caps:
        if isinstance(c, tuple):  # an MCQ question: its options carry no labels, so re-draw them as captions
            scene, t, split = c
            present = scene.counts
            absent = [x for x in concepts if x.name not in scene.names][int(rng.integers(10))]
            out.append(hybrid(present, absent, rng, split=split))
            out.append(negation_only(absent, rng, split=split))
            mcq_question(scene, rng, concepts, t, split)
        else:
            out.append(c)
    return out


def _check(caps, analyses):
    from sayno.negation import ObjectVocabulary
    from sayno.world import load_concepts

    concepts = load_concepts()
    vocab = ObjectVocabulary.from_names([c.name for c in concepts], {c.name: c.plural for c in concepts})
    wrong = []
    for cap, a in zip(caps, analyses):
        negated = sorted(o for p in a.phrases for o in vocab.find(p.text))
        affirmed = set(vocab.find(a.affirmative_text))
        if (negated != sorted(cap.negated) or affirmed != set(cap.positive) or a.hedged != cap.hedged
                or a.negated != bool(cap.negated) or len(a.phrases) != len(cap.negated)):
            wrong.append((cap.text, [p.text for p in a.phrases], a.affirmative_text))
    return wrong


def test_every_world_caption_is_read_exactly(analyse):
    caps = _world_captions(100)
    assert {c.family for c in caps if c.negated} >= set(FAMILIES)
    wrong = _check(caps, analyse([c.text for c in caps]))
    assert not wrong, wrong[:5]


def test_every_construction_is_read_exactly_for_many_objects(analyse, monkeypatch):
    """Each construction with 12 objects (rotating through all of them), alone and in a hybrid caption."""
    concepts = pretrain_concepts()
    rng = np.random.default_rng(1)
    caps = []
    for k, c in enumerate(constructions()):
        monkeypatch.setattr(world_captions, "FAMILIES", {c.family: (c,)})  # only this construction
        split = family_split(c.family)
        for obj in [concepts[(k * 12 + j) % len(concepts)] for j in range(12)]:
            if not c.fits(obj):
                continue
            pos = concepts[(concepts.index(obj) + 7) % len(concepts)]
            if c.usable(with_pos=False):
                caps.append(negation_only(obj, rng, hedged=c.hedged, split=split))
            if c.usable(with_pos=True):
                caps.append(hybrid(((pos, 2),), obj, rng, hedged=c.hedged, split=split))
    monkeypatch.undo()
    assert len({c.construction for c in caps}) == len(constructions())
    wrong = _check(caps, analyse([c.text for c in caps]))
    assert not wrong, wrong[:5]


def test_world_json_records_the_version(tmp_path):
    build_world(tmp_path / "w", TINY, progress=False, parts=("test",))
    assert json.loads((tmp_path / "w" / "world.json").read_text())["version"] == WORLD_VERSION
