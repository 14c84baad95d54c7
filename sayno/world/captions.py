"""Captions of the emoji world: affirmative ones for pretraining, negated and hedged ones for the benchmarks.

Every generated caption is a :class:`Caption` that carries its labels: the objects it affirms, the objects
it negates, whether the negation is hedged, and its NegBench template (positive / negative / hybrid).
The affirmative templates contain no negation word, so a CLIP pretrained on them never sees negation.

Negations come from a grammar of 79 constructions in 20 linguistic families: 76 of one object in 19 families
(:data:`FAMILIES`) and 3 of two ("neither ... nor", :data:`NEITHER_NOR`). The families are split once, by family and not by results, into *training* families
(:data:`TRAINING_FAMILIES`: the cue right before the object ("no", "without", "not a single", "no sign of",
"free of"), the object before "absent"/"not there"/"not present", "does not feature", "No X can be seen", and
hedges with an adverb before the cue) and *held-out* families (:data:`HELDOUT_FAMILIES`: "nowhere to be found",
"instead of"/"rather than", "X-free", "missing"/"excludes"/"omits" as verbs, "zero"/"none of"/"not even",
"you won't find", "no visible X", and hedges with a modal before "not"). The train and val splits use only
training families; the test split both, each row labelled. The world has no people, so the person families
of real captions ("no one", "nobody", "unoccupied") have no place in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sayno.world.concepts import Concept

AFFIRMATIVE_TEMPLATES = (
    "{}",
    "a photo of {}",
    "a picture of {}",
    "an image of {}",
    "a drawing of {}",
    "an emoji scene with {}",
    "this image shows {}",
    "a scene with {}",
    "{} in the picture",
    "here we see {}",
    "{} on a {bg} background",
    "a {bg} background with {}",
)

BACKGROUND_WORDS = {"plain": "plain", "gradient": "colourful", "noise": "noisy"}

# ---------------------------------------------------------------------------------------------- negation grammar
# Placeholders: "{a}" the object with its article ("a dog"), "{n}" its name ("dog"), "{p}" its plural ("dogs"),
# "{the}" "the dog", "{pos}" the affirmed objects ("two cats and an apple").


@dataclass(frozen=True)
class Construction:
    """One way to say that an object is absent.

    ``family``: its linguistic family (a key of :data:`FAMILIES`). A template with ``{pos}`` is only used in a
    hybrid caption; ``alone`` marks a template that is a whole caption by itself ("a picture with no {n}"),
    never joined to affirmed objects; any other template is a clause, used alone or joined ("{pos} but ...").
    """

    family: str
    template: str
    hedged: bool = False
    alone: bool = False

    @property
    def needs_pos(self) -> bool:
        return "{pos}" in self.template

    def usable(self, with_pos: bool) -> bool:
        """Whether it can say a negation with (hybrid) or without (negative template) affirmed objects."""
        return not self.alone if with_pos else not self.needs_pos

    def fits(self, concept: Concept) -> bool:
        """"X-free" only for one-word names; never a pair in :data:`MISREAD`."""
        if "-free" in self.template and not concept.name.isalpha():
            return False
        return concept.name not in MISREAD.get(self.template, ())

    def fill(self, concept: Concept, pos: str = "") -> str:
        return self.template.format(a=concept.phrase(1), n=concept.name, p=concept.plural, the=f"the {concept.name}",
                                    pos=pos)


def _family(family: str, *templates: str, hedged: bool = False) -> tuple[Construction, ...]:
    """Constructions of one family; a leading "=" marks a template that is a whole caption by itself."""
    return tuple(Construction(family, t.lstrip("="), hedged, alone=t.startswith("=")) for t in templates)


#: Every negation construction of the world, by linguistic family (docs/RESULTS.md lists the split).
FAMILIES: dict[str, tuple[Construction, ...]] = {c[0].family: c for c in (
    # ---- training families: the world's train and val splits use only these
    _family("no", "no {n}", "there is no {n}", "there is no {n} here", "no {n} in this picture",
            "{pos} with no {n}", "=a picture with no {n}", "=an image with no {n} in it"),
    _family("without", "without {a}", "without any {p}", "{pos} without {a}", "=a photo without {a}"),
    _family("not_any", "not a single {n}", "not a single {n} in sight", "there isn't any {n}",
            "there is not a single {n}", "there aren't any {p}"),
    _family("absent", "{the} is absent", "{the} is not there", "{the} isn't here", "{a} is noticeably absent",
            "absent is {a}", "{a} is missing"),
    _family("lack", "lacking {a}", "it lacks {a}", "the scene lacks {a}"),
    _family("free_of", "free of {p}", "devoid of {p}", "void of any {p}", "empty of {p}", "=a scene free of {p}"),
    _family("sign_of", "no sign of {a}", "no trace of {a}", "there is no sign of any {p}"),
    _family("does_not", "the picture does not feature {a}", "it does not include {a}", "the scene doesn't have {a}",
            "the image does not contain any {p}", "it doesn't show {a}"),
    _family("not_present", "{a} is not present", "{a} is not included in this image", "{the} isn't shown",
            "{the} is not visible"),
    _family("no_x_verb", "no {n} can be seen", "no {n} appears", "no {n} is included", "no {n} is visible"),
    _family("hedge", "probably no {n}", "maybe without {a}", "perhaps no {n}", "likely no {n}",
            "there might be no {n}", "possibly without {a}", hedged=True),
    # ---- held-out families: only in the test split, never trained on
    _family("nowhere", "{the} is nowhere to be found", "{pos}, with {the} nowhere to be seen",
            "{a} is nowhere in sight"),
    _family("contrast", "{pos} instead of {a}", "{pos} rather than {a}"),
    _family("affix_free", "={a}-free scene", "{pos} in {a}-free scene"),
    _family("missing_verb", "the image is missing {a}", "the scene excludes {a}", "the picture omits {a}"),
    _family("quantifier", "{pos} and zero {p}", "none of the {p} are here", "{pos} but none of the {p}",
            "not even a single {n}"),
    _family("modal", "you won't find {a} here", "you can't see {a}", "you will not spot any {p}"),
    _family("no_visible", "no visible {n}", "there is no visible {n}", "{pos} with no visible {n}"),
    _family("hedge_modal", "there may not be {a}", "there might not be any {p}", "{a} is probably not there",
            "{the} is likely missing", hedged=True),
)}
#: Two negated objects at once ("neither a dog nor a cat"): a training family of its own.
NEITHER_NOR = ("neither {a} nor {b}", "no {an} and no {bn}", "without {a} or {b}")
COORDINATION = "coordination"

TRAINING_FAMILIES = ("no", "without", "not_any", "absent", "lack", "free_of", "sign_of", "does_not", "not_present",
                     "no_x_verb", "hedge", COORDINATION)
HELDOUT_FAMILIES = ("nowhere", "contrast", "affix_free", "missing_verb", "quantifier", "modal", "no_visible",
                    "hedge_modal")
#: Family split names: "training" families teach (train/val splits), "held-out" ones only test.
FAMILY_SPLITS = {"training": TRAINING_FAMILIES, "held-out": HELDOUT_FAMILIES}

#: (construction, object) pairs that spaCy's small English pipeline 3.8 tags wrongly (the object's noun read as
#: a verb or adverb: "no game *die*", "any maple *leaves*", "free of *cacti*"), so the negation analyser cannot
#: read them; the world never writes them, so every caption it writes is read exactly
#: (tests/test_world_grammar.py).
MISREAD: dict[str, frozenset[str]] = {t: frozenset(names) for t, names in {
    "there is no {n} here": ("game die",),
    "no {n} in this picture": ("teddy bear",),
    "there aren't any {p}": ("maple leaf",),
    "{the} isn't here": ("game die",),
    "free of {p}": ("cactus",),
    "empty of {p}": ("cactus",),
    "a scene free of {p}": ("cactus",),
    "there is no sign of any {p}": ("maple leaf",),
    "no {n} can be seen": ("hedgehog",),
    "no {n} appears": ("locomotive",),
    "no {n} is visible": ("rose",),
    "no {n} is included": ("rose",),
    "{the} isn't shown": ("game die",),
    "{pos}, with {the} nowhere to be seen": ("game die",),
    "{the} is nowhere to be found": ("game die",),
    "{a}-free scene": ("castle", "cloud", "coconut", "grapes", "hedgehog"),
    "{pos} in {a}-free scene": ("castle", "cloud", "coconut", "grapes", "hedgehog"),
    "{pos} and zero {p}": ("basketball", "cactus", "four leaf clover", "grapes", "ice cream", "light bulb",
                           "magnifying glass", "maple leaf", "mobile phone", "rainbow", "top hat"),
    "{pos} but none of the {p}": ("ice cream", "maple leaf"),
    "you won't find {a} here": ("game die",),
    "you will not spot any {p}": ("maple leaf",),
    "no visible {n}": ("rose",),
    "there is no visible {n}": ("croissant", "locomotive", "rose"),
    "{pos} with no visible {n}": ("rose",),
}.items()}

# How a negation clause attaches to the affirmed part: "{pos}" affirmed phrase, "{neg}" negation clause.
HYBRID_JOINS = (
    "{pos} but {neg}",
    "{pos}, {neg}",
    "{pos} and {neg}",
    "{pos}; {neg}",
)


def family_split(family: str) -> str:
    """"training" or "held-out" for a family name; "" for none (an affirmative caption)."""
    for split, families in FAMILY_SPLITS.items():
        if family in families:
            return split
    return ""


def constructions() -> tuple[Construction, ...]:
    """Every single-object construction, in family order."""
    return tuple(c for fam in FAMILIES.values() for c in fam)


@dataclass(frozen=True)
class Caption:
    text: str
    positive: tuple[str, ...]  # objects the caption affirms
    negated: tuple[str, ...] = ()  # objects the caption negates
    hedged: bool = False
    template: str = "positive"  # NegBench: positive | negative | hybrid
    meta: dict = field(default_factory=dict, compare=False)
    family: str = ""  # the negation's family ("" for an affirmative caption)
    construction: str = ""  # the negation's template

    @property
    def family_split(self) -> str:
        """"training" or "held-out" (the family's split); "" for an affirmative caption."""
        return family_split(self.family)


def _pick(rng: np.random.Generator, seq: tuple[str, ...]) -> str:
    return seq[int(rng.integers(len(seq)))]


def object_list(counts: tuple[tuple[Concept, int], ...]) -> str:
    """'a dog', 'a dog and two cats', 'a dog, two cats and an apple'."""
    parts = [c.phrase(k) for c, k in counts]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def affirmative(
    counts: tuple[tuple[Concept, int], ...], rng: np.random.Generator, background: str | None = None
) -> Caption:
    """An affirmative caption naming every object (order shuffled, counts spoken)."""
    order = rng.permutation(len(counts))
    objs = object_list(tuple(counts[i] for i in order))
    tpl = _pick(rng, AFFIRMATIVE_TEMPLATES)
    if "{bg}" in tpl and background is None:
        tpl = "{}"
    text = tpl.format(objs, bg=BACKGROUND_WORDS.get(background or "", "plain"))
    return Caption(text, tuple(c.name for c, _ in counts), template="positive")


def choose(concept: Concept, rng: np.random.Generator, *, with_pos: bool, hedged: bool = False,
           split: str = "training") -> Construction:
    """A construction for negating ``concept``: a family of ``split`` ("training" | "held-out") with the right
    hedging and a usable construction, uniformly, then one of its constructions, uniformly."""
    families = FAMILY_SPLITS[split]
    options = [[c for c in FAMILIES[f] if c.hedged == hedged and c.usable(with_pos) and c.fits(concept)]
               for f in families if f in FAMILIES]
    options = [o for o in options if o]
    family = options[int(rng.integers(len(options)))]
    return family[int(rng.integers(len(family)))]


def negation_only(concept: Concept, rng: np.random.Generator, hedged: bool = False,
                  split: str = "training") -> Caption:
    """'there is no dog', 'a photo without a dog', 'probably no dog' (negative template)."""
    c = choose(concept, rng, with_pos=False, hedged=hedged, split=split)
    return Caption(c.fill(concept), (), (concept.name,), hedged=hedged, template="negative", family=c.family,
                   construction=c.template)


def hybrid(
    counts: tuple[tuple[Concept, int], ...],
    negated: Concept,
    rng: np.random.Generator,
    hedged: bool = False,
    split: str = "training",
) -> Caption:
    """'a dog but no cat', 'two apples without a pear', 'a car, probably no bus' (hybrid template)."""
    order = rng.permutation(len(counts))
    pos = object_list(tuple(counts[i] for i in order))
    c = choose(negated, rng, with_pos=True, hedged=hedged, split=split)
    text = c.fill(negated, pos) if c.needs_pos else _pick(rng, HYBRID_JOINS).format(pos=pos, neg=c.fill(negated))
    if rng.random() < 0.3 and not text.startswith(("a photo", "an image")):
        text = _pick(rng, ("a photo of ", "a picture of ", "an image of ")) + text
    return Caption(text, tuple(c_.name for c_, _ in counts), (negated.name,), hedged=hedged, template="hybrid",
                   family=c.family, construction=c.template)


def neither_nor(
    counts: tuple[tuple[Concept, int], ...] | None, a: Concept, b: Concept, rng: np.random.Generator
) -> Caption:
    """Two negated objects: 'a dog but neither a cat nor a cow', 'no cat and no cow'."""
    tpl = _pick(rng, NEITHER_NOR)
    neg = tpl.format(a=a.phrase(1), b=b.phrase(1), an=a.name, bn=b.name)
    if counts:
        text = f"{object_list(counts)} but {neg}"
        return Caption(text, tuple(c.name for c, _ in counts), (a.name, b.name), template="hybrid",
                       family=COORDINATION, construction=tpl)
    return Caption(neg, (), (a.name, b.name), template="negative", family=COORDINATION, construction=tpl)
