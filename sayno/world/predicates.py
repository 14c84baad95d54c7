"""World 4's predicates: people doing things, objects upside down, one object above another (issue 25).

Three *kinds* of statement about a scene that are not "an object is there":

- ``activity``: a person doing something ("a person swimming"); drawn with the emoji world's person-activity glyphs
  (``activities.json``: 24 activities, each drawn as its person form and, where Unicode has them, its man and
  woman forms, any of which the scene may show: the captions say "a person");
- ``attribute``: an object turned upside down (rotated 180 degrees by the renderer) or the right way up; only
  objects with a clear up and down (animals, vehicles, plants: :data:`ORIENTED_CATEGORIES`);
- ``relation``: one object above another (the first object's box ends above the second's).

A :class:`PredicateScene` is a scene plus the statements true of it; its *hard negative* is the same objects with
the statement false (another activity, the object turned back, the two objects swapped). Captions come in
families, split once into training and held-out families (:data:`PREDICATE_FAMILY_SPLITS`) as the object
negations' are: the held-out families use other words for the same meaning ("isn't", "no one", "which").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from sayno.world.captions import Caption, object_list
from sayno.world.concepts import Concept, pretrain_concepts
from sayno.world.scenes import Placed, Scene, make_scene, sample_background, sample_counts
from sayno.world.styles import Style, StyleError

ACTIVITIES_FILE = Path(__file__).with_name("activities.json")
KINDS = ("activity", "attribute", "relation")
#: categories whose emoji have a clear up and down, so that "upside down" is visible
ORIENTED_CATEGORIES = ("animal", "vehicle", "plant")


@dataclass(frozen=True)
class Activity:
    """One activity: ``predicate`` ("swimming", what captions say after "a person") and its ``drawings`` (person /
    man / woman forms as :class:`Concept` s named by CLDR short name, category ``"person"``)."""

    predicate: str
    drawings: tuple[Concept, ...]


@cache
def load_activities(path: str | None = None) -> tuple[Activity, ...]:
    """The activities of ``activities.json`` (or ``path``), in file order."""
    data = json.loads(Path(path or ACTIVITIES_FILE).read_text())
    return tuple(Activity(d["predicate"], tuple(Concept(name=x["name"], plural=x["name"], codepoint=x["codepoint"],
                                                          category="person", pretrain=True) for x in d["drawings"]))
                 for d in data)


def undrawable_people(style: Style) -> set[str]:
    """Names of the activities' drawings ``style`` cannot draw as one picture (``Style.glyph`` raises
    :class:`StyleError`; a font without the ligature of a zero-width-joiner sequence refuses it too)."""
    out = set()
    for act in load_activities():
        for d in act.drawings:
            try:
                style.glyph(d)
            except StyleError:
                out.add(d.name)
    return out


def oriented_concepts() -> tuple[Concept, ...]:
    """Pretraining concepts that can be told upside down (:data:`ORIENTED_CATEGORIES`)."""
    return tuple(c for c in pretrain_concepts() if c.category in ORIENTED_CATEGORIES)


@dataclass(frozen=True)
class Statement:
    """One thing true (or false) of a scene.

    kind: activity | attribute | relation; subject: the subject's phrase ("a person", "a cat"); predicate: what is
    said of it ("swimming", "upside down", "above a tree"); value: for activities the activity, for attributes
    ``"upside down"`` or ``"upright"``, for relations the other object's name.
    """

    kind: str
    subject: str
    predicate: str
    value: str = ""


@dataclass(frozen=True)
class PredicateScene:
    """A scene with the statement ``true`` of it and ``other``, a statement of the same kind that is false of it
    (another activity; the other orientation; the relation the other way round)."""

    scene: Scene
    true: Statement
    other: Statement
    meta: dict = field(default_factory=dict, compare=False)


# ------------------------------------------------------------------------------------------------ scenes
def _extras(rng: np.random.Generator, exclude: set[str], p_extra: float) -> tuple[tuple[Concept, int], ...]:
    """At most one bystander object (probability ``p_extra``), never one of ``exclude``."""
    if rng.random() >= p_extra:
        return ()
    return sample_counts(pretrain_concepts(), rng, n_objects=1, exclude=exclude)[:1]


def activity_scene(rng: np.random.Generator, size: int = 64, p_extra: float = 0.4) -> PredicateScene:
    """A person doing one of the activities (a random drawing of it), maybe beside one bystander object."""
    acts = load_activities()
    i, j = (int(x) for x in rng.choice(len(acts), size=2, replace=False))
    drawing = acts[i].drawings[int(rng.integers(len(acts[i].drawings)))]
    counts = ((drawing, 1), *_extras(rng, set(), p_extra))
    scene = make_scene(counts, rng, size)
    return PredicateScene(scene, Statement("activity", "a person", acts[i].predicate, acts[i].predicate),
                          Statement("activity", "a person", acts[j].predicate, acts[j].predicate))


def turned(scene: Scene, name: str, turn: int) -> Scene:
    """``scene`` with every instance of the object ``name`` rotated by ``turn`` degrees (0 or 180)."""
    placed = tuple(Placed(p.concept, p.x, p.y, p.size, turn if p.concept.name == name else p.turn)
                   for p in scene.placed)
    return Scene(scene.counts, placed, scene.background, scene.colors, scene.bg_seed, scene.size, dict(scene.meta))


def attribute_scene(rng: np.random.Generator, size: int = 64, p_extra: float = 0.4) -> PredicateScene:
    """One oriented object drawn upside down or the right way up (half each), maybe beside an upright bystander."""
    pool = oriented_concepts()
    c = pool[int(rng.integers(len(pool)))]
    scene = make_scene(((c, 1), *_extras(rng, {c.name}, p_extra)), rng, size)
    up = bool(rng.random() < 0.5)
    scene = turned(scene, c.name, 180 if up else 0)
    subject = c.phrase()
    states = ("upside down", "upright") if up else ("upright", "upside down")
    return PredicateScene(scene, Statement("attribute", subject, states[0], states[0]),
                          Statement("attribute", subject, states[1], states[1]))


def relation_layout(a: Concept, b: Concept, rng: np.random.Generator, size: int = 64) -> tuple[Placed, Placed]:
    """``a`` placed above ``b``: a's box ends at least 2 pixels above b's top; sizes 30-45% of the side."""
    lo, hi = max(8, int(0.3 * size)), max(9, int(0.45 * size))
    sa, sb = (int(rng.integers(lo, hi + 1)) for _ in range(2))
    gap = int(rng.integers(2, max(3, size - sa - sb) + 1)) if size - sa - sb >= 2 else 2
    top = int(rng.integers(0, max(1, size - sa - sb - gap) + 1))
    ya, yb = top, min(size - sb, top + sa + gap)
    # roughly one column: b's centre within a third of the side of a's
    xa = int(rng.integers(0, size - sa + 1))
    cx = xa + sa // 2 + int(rng.integers(-size // 6, size // 6 + 1))
    xb = int(np.clip(cx - sb // 2, 0, size - sb))
    return Placed(a, xa, ya, sa), Placed(b, xb, yb, sb)


def relation_scene(rng: np.random.Generator, size: int = 64) -> PredicateScene:
    """Two objects, one above the other; the statement names the upper one's relation to the lower one."""
    pool = pretrain_concepts()
    i, j = (int(x) for x in rng.choice(len(pool), size=2, replace=False))
    a, b = pool[i], pool[j]
    bg, colors, bg_seed = sample_background(rng)
    placed = relation_layout(a, b, rng, size)
    scene = Scene(((a, 1), (b, 1)), placed, bg, colors, bg_seed, size)
    if rng.random() < 0.5:  # say it from the upper object or from the lower one
        true = Statement("relation", a.phrase(), f"above {b.phrase()}", b.name)
        other = Statement("relation", a.phrase(), f"below {b.phrase()}", b.name)
    else:
        true = Statement("relation", b.phrase(), f"below {a.phrase()}", a.name)
        other = Statement("relation", b.phrase(), f"above {a.phrase()}", a.name)
    return PredicateScene(scene, true, other)


def sample_predicate_scene(rng: np.random.Generator, kind: str | None = None, size: int = 64) -> PredicateScene:
    """A scene of ``kind`` (a random kind when None)."""
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind not in KINDS:
        raise ValueError(f"unknown predicate kind {kind!r}; one of {', '.join(KINDS)}")
    sampler = {"activity": activity_scene, "attribute": attribute_scene, "relation": relation_scene}[kind]
    return sampler(rng, size=size)


def hard_negative(ps: PredicateScene, rng: np.random.Generator) -> PredicateScene:
    """The same scene with ``ps.true`` false and ``ps.other`` true (another activity's drawing in the person's
    place; the object turned the other way; the two objects' places swapped)."""
    s = ps.scene
    if ps.true.kind == "activity":
        act = next(a for a in load_activities() if a.predicate == ps.other.predicate)
        drawing = act.drawings[int(rng.integers(len(act.drawings)))]
        person = next(p for p in s.placed if p.concept.category == "person")
        placed = tuple(Placed(drawing, p.x, p.y, p.size) if p is person else p for p in s.placed)
        counts = tuple((drawing, k) if c.category == "person" else (c, k) for c, k in s.counts)
        scene = Scene(counts, placed, s.background, s.colors, s.bg_seed, s.size)
    elif ps.true.kind == "attribute":
        name = s.counts[0][0].name
        scene = turned(s, name, 0 if ps.true.value == "upside down" else 180)
    else:
        pa, pb = s.placed
        placed = (Placed(pa.concept, pa.x, pb.y + pb.size - pa.size, pa.size),
                  Placed(pb.concept, pb.x, pa.y, pb.size))
        scene = Scene(s.counts, placed, s.background, s.colors, s.bg_seed, s.size)
    return PredicateScene(scene, ps.other, ps.true)


# ---------------------------------------------------------------------------------------------- captions
#: affirmative forms, per kind: {s} the subject ("a person"), {p} the predicate ("swimming")
AFFIRMATIVE = {
    "activity": ("{s} {p}", "{s} who is {p}", "someone {p}", "a picture of {s} {p}", "{s} is {p}"),
    "attribute": ("{s} {p}", "{s} that is {p}", "a picture of {s} {p}", "{s} which is {p}", "{s}, {p}"),
    "relation": ("{s} {p}", "{s} that is {p}", "a picture of {s} {p}", "{s} is {p}", "{s} placed {p}"),
}
#: negated forms in families: family -> (kinds it applies to, templates)
PREDICATE_FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # training families
    "not-participle": (("activity", "attribute", "relation"), ("{s} not {p}", "a picture of {s} not {p}")),
    "that-is-not": (("activity", "attribute", "relation"), ("{s} that is not {p}", "{s} who is not {p}")),
    "nobody": (("activity",), ("nobody is {p}", "nobody {p}")),
    # held-out families
    "isnt": (("activity", "attribute", "relation"), ("{s} which isn't {p}", "{s} that isn't {p}")),
    "no-one": (("activity",), ("no one is {p}", "there is no one {p}")),
    "is-not": (("activity", "attribute", "relation"), ("{s} is not {p}", "here {s} is not {p}")),
}
PREDICATE_FAMILY_SPLITS = {"training": ("not-participle", "that-is-not", "nobody"),
                           "held-out": ("isnt", "no-one", "is-not")}


def predicate_family_split(family: str) -> str:
    """"training" or "held-out"."""
    for split, fams in PREDICATE_FAMILY_SPLITS.items():
        if family in fams:
            return split
    raise KeyError(f"unknown predicate family {family!r}")


def _fill(template: str, st: Statement) -> str:
    text = template.format(s=st.subject, p=st.predicate)
    if st.kind == "activity":  # "who" for people, "that" / "which" for things
        return text.replace(" that is", " who is").replace(" which is", " who is")
    return text.replace(" who is", " that is")


def affirm(st: Statement, rng: np.random.Generator) -> Caption:
    """An affirmative caption of ``st`` ("a person swimming", "a cat that is upside down")."""
    forms = AFFIRMATIVE[st.kind]
    tpl = forms[int(rng.integers(len(forms)))]
    return Caption(_fill(tpl, st), (st.subject,), template="positive", meta={"kind": st.kind, "predicate": st.predicate})


def deny(st: Statement, rng: np.random.Generator, split: str = "training") -> Caption:
    """A negated caption of ``st`` ("a person not swimming", "nobody is swimming") from a family of ``split``."""
    fams = [f for f in PREDICATE_FAMILY_SPLITS[split] if st.kind in PREDICATE_FAMILIES[f][0]]
    fam = fams[int(rng.integers(len(fams)))]
    tpls = PREDICATE_FAMILIES[fam][1]
    tpl = tpls[int(rng.integers(len(tpls)))]
    return Caption(_fill(tpl, st), (), negated=(f"{st.subject} {st.predicate}",), template="negative",
                   meta={"kind": st.kind, "predicate": st.predicate}, family=fam, construction=tpl)


def describe(ps: PredicateScene, rng: np.random.Generator) -> Caption:
    """An affirmative caption of what is true of ``ps`` (pretraining): the statement, and at half the time the
    bystander objects too ("a person swimming and a tiger")."""
    cap = affirm(ps.true, rng)
    others = bystanders(ps)
    if others and ps.true.kind != "relation" and rng.random() < 0.5:
        return Caption(f"{cap.text} and {object_list(others)}", (*cap.positive, *(c.name for c, _ in others)),
                       template="positive", meta=cap.meta)
    return cap


#: retrieval forms that affirm the true statement and deny the other one (NegBench's "hybrid" queries): {a} the
#: affirmation ("a person running"), {p} the other statement's predicate ("swimming")
HYBRID = ("{a} but not {p}", "{a} and not {p}", "{a}, not {p}")


def bystanders(ps: PredicateScene) -> tuple[tuple[Concept, int], ...]:
    """The objects of ``ps`` that its statements do not name (a person's drawing and the subject excluded)."""
    named = {ps.true.subject, ps.true.value}
    return tuple((c, k) for c, k in ps.scene.counts
                 if c.category != "person" and c.phrase() != ps.true.subject and c.name not in named)


def retrieval_captions(ps: PredicateScene, rng: np.random.Generator) -> tuple[Caption, Caption]:
    """(affirmative, hybrid) retrieval captions of ``ps``: "a person running, with a tiger" and "a person running
    but not swimming, with a tiger". The hybrid one denies ``ps.other``, which the hard negative makes true, so the
    twin image is the trap; the bystanders are named so that few other scenes fit the caption. ``positive``: the
    scene's object names ("person" for a person's drawing); ``negated``: the denied statement ("a person swimming")."""
    cap = affirm(ps.true, rng)
    extra = bystanders(ps)
    tail = f", with {object_list(extra)}" if extra else ""
    positive = tuple(dict.fromkeys("person" if c.category == "person" else c.name for c, _ in ps.scene.counts))
    tpl = HYBRID[int(rng.integers(len(HYBRID)))]
    hybrid = tpl.format(a=cap.text, p=ps.other.predicate) + tail
    meta = {"kind": ps.true.kind, "predicate": ps.true.predicate}
    return (Caption(cap.text + tail, positive, template="positive", meta=meta),
            Caption(hybrid, positive, negated=(f"{ps.other.subject} {ps.other.predicate}",), template="hybrid",
                    meta=meta, construction=tpl))


def sample_predicate_pretrain(rng: np.random.Generator, size: int = 64, kinds: tuple[str, ...] = KINDS
                              ) -> list[tuple[Scene, Caption]]:
    """Two (scene, affirmative caption) pairs for contrastive pretraining: a predicate scene of a random kind of
    ``kinds`` and its hard negative (:func:`hard_negative`), so that a batch holds the contrast the captions draw."""
    ps = sample_predicate_scene(rng, kinds[int(rng.integers(len(kinds)))], size=size)
    twin = hard_negative(ps, rng)
    return [(ps.scene, describe(ps, rng)), (twin.scene, describe(twin, rng))]


# ------------------------------------------------------------------------------------------- benchmark rows
def _absent_object(rng: np.random.Generator, exclude: set[str]) -> Concept:
    pool = [c for c in pretrain_concepts() if c.name not in exclude]
    return pool[int(rng.integers(len(pool)))]


def affirm_options(ps: PredicateScene, rng: np.random.Generator) -> list[Statement]:
    """Four statements of ``ps``'s kind, the first one true: the backbone's affirmative test (issue 25).

    activity: the true activity and three others; attribute: the object upside down / upright, and another object
    (absent) upside down / upright; relation: the true relation, the other one, the other one said from the other
    object, and the true one with the other object replaced by an absent one."""
    t, o = ps.true, ps.other
    names = {c.name for c, _ in ps.scene.counts}
    if t.kind == "activity":
        acts = [a.predicate for a in load_activities() if a.predicate not in (t.predicate, o.predicate)]
        picks = [acts[int(i)] for i in rng.choice(len(acts), size=2, replace=False)]
        return [t, o, *(Statement("activity", "a person", p, p) for p in picks)]
    x = _absent_object(rng, names)
    if t.kind == "attribute":
        return [t, o, Statement("attribute", x.phrase(), t.predicate, t.value),
                Statement("attribute", x.phrase(), o.predicate, o.value)]
    subject = next(c for c, _ in ps.scene.counts if c.phrase() == t.subject)
    obj = next(c for c, _ in ps.scene.counts if c.name == t.value)
    word = t.predicate.split(" ")[0]  # "above" | "below"
    return [t, o, Statement("relation", obj.phrase(), f"{word} {subject.phrase()}", subject.name),
            Statement("relation", t.subject, f"{word} {x.phrase()}", x.name)]


def mcq_options(ps: PredicateScene, rng: np.random.Generator, template: str, split: str
                ) -> list[Caption]:
    """Four captions, the first one true of ``ps``, NegBench style, negations from the families of ``split``.

    positive: the true statement affirmed; wrong: the other one affirmed, the true one denied twice.
    negative: the other statement denied; wrong: the true one denied, the other one affirmed, the true one denied
    again (another wording)."""
    t, o = ps.true, ps.other
    if template == "positive":
        return [affirm(t, rng), affirm(o, rng), *denials(t, rng, split, 2)]
    first, second = denials(t, rng, split, 2)
    return [deny(o, rng, split), first, affirm(o, rng), second]


def denials(st: Statement, rng: np.random.Generator, split: str, k: int, tries: int = 16) -> list[Caption]:
    """``k`` denials of ``st`` from the families of ``split``, in different words where the families allow."""
    out: list[Caption] = []
    for _ in range(tries):
        c = deny(st, rng, split)
        if all(c.text != d.text for d in out):
            out.append(c)
        if len(out) == k:
            return out
    return (out * k)[:k]
