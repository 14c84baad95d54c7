"""Captions of the emoji world: affirmative ones for pretraining, negated and hedged ones for the benchmarks.

Every generated caption is a :class:`Caption` that carries its labels: the objects it affirms, the objects
it negates, whether the negation is hedged, and its NegBench template (positive / negative / hybrid).
The affirmative templates contain no negation word, so a CLIP pretrained on them never sees negation.
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

# Firm negations of one object: "{}" is the object's phrase ("a dog"), "{n}" its bare name ("dog").
NEGATION_FORMS = (
    "no {n}",
    "without {}",
    "without any {p}",
    "not a single {n}",
    "{the} is absent",
    "there isn't any {n}",
    "there is no {n}",
    "with no {n}",
    "lacking {}",
    "free of {p}",
    "{the} is not there",
    "no sign of {}",
)

# How a negation attaches to the affirmed part: "{pos}" affirmed phrase, "{neg}" negation clause.
HYBRID_JOINS = (
    "{pos} but {neg}",
    "{pos}, {neg}",
    "{pos} and {neg}",
    "{pos}; {neg}",
)
HYBRID_WITH = ("{pos} without {obj}", "{pos} with no {n}", "{pos} but no {n}", "{pos} and no {n}")

STANDALONE_NEG = (
    "a picture with no {n}",
    "a photo without {}",
    "an image with no {n} in it",
    "there is no {n} here",
    "no {n} in this picture",
    "not a single {n} in sight",
)

HEDGES = (
    "probably no {n}",
    "maybe without {}",
    "perhaps no {n}",
    "likely no {n}",
    "there might be no {n}",
    "possibly without {}",
)

NEITHER_NOR = ("neither {a} nor {b}", "no {an} and no {bn}", "without {a} or {b}")


@dataclass(frozen=True)
class Caption:
    text: str
    positive: tuple[str, ...]  # objects the caption affirms
    negated: tuple[str, ...] = ()  # objects the caption negates
    hedged: bool = False
    template: str = "positive"  # NegBench: positive | negative | hybrid
    meta: dict = field(default_factory=dict, compare=False)


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


def _neg_clause(concept: Concept, rng: np.random.Generator, forms: tuple[str, ...] = NEGATION_FORMS) -> str:
    return _pick(rng, forms).format(concept.phrase(1), n=concept.name, p=concept.plural,
                                    the=f"the {concept.name}")


def negation_only(concept: Concept, rng: np.random.Generator, hedged: bool = False) -> Caption:
    """'there is no dog', 'a photo without a dog', 'probably no dog' (negative template)."""
    if hedged:
        text = _neg_clause(concept, rng, HEDGES)
    elif rng.random() < 0.5:
        text = _neg_clause(concept, rng, STANDALONE_NEG)
    else:
        text = _neg_clause(concept, rng)
    return Caption(text, (), (concept.name,), hedged=hedged, template="negative")


def hybrid(
    counts: tuple[tuple[Concept, int], ...],
    negated: Concept,
    rng: np.random.Generator,
    hedged: bool = False,
) -> Caption:
    """'a dog but no cat', 'two apples without a pear', 'a car, probably no bus' (hybrid template)."""
    order = rng.permutation(len(counts))
    pos = object_list(tuple(counts[i] for i in order))
    if hedged:
        text = _pick(rng, HYBRID_JOINS).format(pos=pos, neg=_neg_clause(negated, rng, HEDGES))
    elif rng.random() < 0.4:
        text = _pick(rng, HYBRID_WITH).format(pos=pos, obj=negated.phrase(1), n=negated.name)
    else:
        text = _pick(rng, HYBRID_JOINS).format(pos=pos, neg=_neg_clause(negated, rng))
    if rng.random() < 0.3 and not text.startswith(("a photo", "an image")):
        text = _pick(rng, ("a photo of ", "a picture of ", "an image of ")) + text
    return Caption(text, tuple(c.name for c, _ in counts), (negated.name,), hedged=hedged, template="hybrid")


def neither_nor(
    counts: tuple[tuple[Concept, int], ...] | None, a: Concept, b: Concept, rng: np.random.Generator
) -> Caption:
    """Two negated objects: 'a dog but neither a cat nor a cow', 'no cat and no cow'."""
    neg = _pick(rng, NEITHER_NOR).format(a=a.phrase(1), b=b.phrase(1), an=a.name, bn=b.name)
    if counts:
        text = f"{object_list(counts)} but {neg}"
        return Caption(text, tuple(c.name for c, _ in counts), (a.name, b.name), template="hybrid")
    return Caption(neg, (), (a.name, b.name), template="negative")
