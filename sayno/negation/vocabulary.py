"""Object names in captions: :class:`ObjectVocabulary` (surface forms -> names) and :func:`plural_forms`
(moved here from ``sayno.glasses.lexical``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from sayno.negation.analyser import parse
from sayno.negation.types import Analysis

_TOKEN = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*|\d+|[^\w\s]", re.UNICODE)


def _norm_words(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").lower()
    return " ".join(m.group() for m in _TOKEN.finditer(text))


def plural_forms(name: str) -> set[str]:
    """Naive English plurals of an object name ("dog" -> "dogs", "bus" -> "buses", "cherry" -> "cherries")."""
    forms = {name, name + "s", name + "es"}
    if name.endswith("y"):
        forms.add(name[:-1] + "ies")
    if name.endswith("f"):
        forms.add(name[:-1] + "ves")
    return forms


class ObjectVocabulary:
    """Known object names and their surface forms, to find objects mentioned in a caption.

    ``forms`` maps each surface form ("dogs", "hot dog") to its name ("dog", "hot dog"). Longest forms match
    first, so "a hot dog" finds "hot dog", not "dog"; matches are whole words. ``analyse`` (text -> Analysis)
    is the negation analyser :meth:`affirmed` and :meth:`negated` use (default: :func:`sayno.negation.parse`).
    """

    def __init__(self, forms: dict[str, str], analyse: Callable[[str], Analysis] | None = None):
        self.forms = {f.lower(): n for f, n in forms.items() if f.strip()}
        self._analyse = analyse
        alts = sorted(self.forms, key=lambda f: (-len(f), f))
        self._re = (re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(f) for f in alts) + r")(?![\w'])")
                    if alts else None)

    @classmethod
    def from_names(cls, names: Iterable[str], plurals: dict[str, str] | None = None,
                   analyse: Callable[[str], Analysis] | None = None) -> ObjectVocabulary:
        """Names plus naive plurals (and the given irregular ones: ``{"mouse": "mice"}``)."""
        names = list(names)
        forms: dict[str, str] = {}
        for n in names:
            for f in plural_forms(n):
                forms.setdefault(f, n)
        for n, p in (plurals or {}).items():
            forms[p] = n
        for n in names:  # a name always maps to itself
            forms[n] = n
        return cls(forms, analyse)

    def _analysis(self, text: str) -> Analysis:
        if self._analyse is not None:
            return self._analyse(text)
        return parse(text)

    def find(self, text: str) -> list[str]:
        """Object names mentioned in ``text``, in text order (repeats kept)."""
        if self._re is None:
            return []
        return [self.forms[m.group()] for m in self._re.finditer(_norm_words(text))]

    def _phrase_objects(self, phrase, affirmative: set[str]) -> list[str]:
        """The objects a phrase negates: all it names for an object phrase; for a predicate phrase, its subject's
        when the subject is not kept in the affirmative text ("no cow is lying down": no cow; "a horse not
        galloping": the horse is there, only not galloping; "a cup not on the shelf": nothing is said about a
        shelf)."""
        if phrase.kind == "object":
            return self.find(phrase.text)
        return [o for o in self.find(phrase.subject) if o not in affirmative]

    def affirmed(self, text: str) -> list[str]:
        """Objects mentioned *outside* every negated phrase, or kept in the affirmative text (a derived
        "positive" label)."""
        a = self._analysis(text)
        kept = set(self.find(a.affirmative_text))
        inside = {o for p in a.phrases for o in self.find(p.text)}
        return [o for o in dict.fromkeys(self.find(text)) if o not in inside or o in kept]

    def negated(self, text: str) -> list[list[str]]:
        """Per negated phrase of the analysis, the objects it negates (may be empty)."""
        a = self._analysis(text)
        kept = set(self.find(a.affirmative_text))
        return [self._phrase_objects(p, kept) for p in a.phrases]
