"""The lexical negation detector: English cue words, their scope (what is negated) and hedges.

``analyse("a cat but no dog")`` finds the cue ``no`` and the negated phrase ``"dog"``. The phrases serve
twice: as the Lens's pointer to *what* is negated (one ``h_neg`` per phrase) and as a derived label where a
dataset does not name its negated objects.

Rules, in order (docs/GLASSES.md lists them with examples):

- Text is lower-cased, curly apostrophes become ``'``, and it is split into words (letters, with an optional
  ``'`` suffix such as ``isn't``), numbers and punctuation. Cues match *whole words* only: ``notebook``,
  ``snowman``, ``knot`` or ``nothingness`` contain no cue.
- Forward cues (``no``, ``not``, ``without``, ``never``, ``neither``, ``nor``, ``lacking``, ``free of``,
  ``no sign of``, ``n't`` words, ...) negate the words after them up to a *boundary*: punctuation, a
  conjunction (``and``, ``but``, ...), a preposition of place (``in``, ``on``, ``here``, ``there``, ...) or
  another cue. ``or``/``nor`` inside a scope split it: "without a cat or a cow" negates two phrases.
- Postposed cues (``absent``, ``missing``, ``gone``) and a forward cue whose scope is empty after a copula
  ("the dog is not there", "the dog isn't here") negate the noun phrase *before* the copula.
- Leading determiners and quantifiers (``a``, ``the``, ``any``, ``single``, ``sign of`` ...) are dropped
  from a phrase; an empty phrase is dropped. A cue with no phrase ("no", "nothing here") still marks the
  caption as negating, but gives Glasses nothing to subtract (the caption keeps its plain CLIP score).
- A negation is *hedged* when a hedge word (``probably``, ``maybe``, ``might`` ...) precedes its cue in the
  same clause.
- Only English is understood: text in another language finds no cue (and keeps its plain CLIP score).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

# Words that negate what follows them.
FORWARD_CUES = frozenset({
    "no", "not", "without", "never", "neither", "nor", "lacking", "lacks", "lack", "cannot", "none",
    "nothing", "nobody", "nowhere", "minus",
})
# Two-word cues: (first, second) -> the cue's name. "free of a dog", "devoid of cats".
PAIR_CUES = {("free", "of"): "free of", ("devoid", "of"): "devoid of", ("absence", "of"): "absence of"}
# Words that negate what precedes them: "the dog is absent".
POSTPOSED_CUES = frozenset({"absent", "missing", "gone"})
COPULAS = frozenset({"is", "are", "was", "were", "be", "been", "being", "'s", "seems", "seem"})
HEDGES = frozenset({
    "probably", "maybe", "perhaps", "likely", "possibly", "might", "may", "could", "apparently",
    "presumably", "seemingly", "unlikely", "supposedly", "allegedly",
})
# Words that end a forward scope (besides punctuation and cues).
BOUNDARIES = frozenset({
    "and", "but", "while", "whereas", "though", "although", "with", "in", "on", "at", "inside", "under",
    "near", "next", "behind", "here", "there", "anywhere", "around", "visible", "present", "nearby",
    "whatsoever", "today", "either", "this", "that", "to", "for", "is", "are", "was", "were", "so",
    "because", "since", "which", "who", "it", "be", "only", "yet", "instead", "left", "seen", "shown",
    "anymore", "from", "by", "than", "as", "sight", "all",
})
SPLITTERS = frozenset({"or", "nor"})
# Leading words dropped from a negated phrase ("any dogs" -> "dogs", "a single dog" -> "dog").
DETERMINERS = frozenset({
    "a", "an", "the", "any", "single", "one", "some", "more", "other", "such", "its", "their", "his", "her",
    "my", "your", "our", "either", "kind", "sort", "sign", "signs", "trace", "traces", "hint", "of", "even",
    "real", "actual", "visible", "type",
})
# Words that may sit between a copula and a postposed "not": "the dog is not there".
_PLACE_WORDS = frozenset({"there", "here", "present", "visible", "around", "anywhere", "shown", "seen",
                          "to", "be", "in", "the", "picture", "image", "photo", "scene", "sight", "at", "all"})

# Words a negated clause extends back over ("a cat, there might be no dog") and forward over ("no dog in it").
_CLAUSE_BACK = frozenset({"there", "it", "be", "is", "are", "was", "were", "'s", "might", "may", "could", "can",
                          "will", "would", "should", "there's", "i", "we", "see"}) | HEDGES
_CLAUSE_JOIN = frozenset({"but", "and", "with", "while", "whereas", "though", "although", "yet", "so"})
_CLAUSE_FORWARD = frozenset({"in", "it", "here", "there", "sight", "this", "that", "picture", "image", "photo",
                             "scene", "at", "all", "anywhere", "around", "to", "be", "seen", "visible", "present",
                             "whatsoever", "nearby", "the", "either", "today", "anymore", "left", "shown"})
_DANGLING = frozenset({"but", "and", "with", "while", "whereas", "though", "although", "yet", "so", "or", "nor"})

_TOKEN = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*|\d+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class NegatedPhrase:
    """One negated phrase: its text (determiners dropped, lower case), its cue and whether it is hedged."""

    text: str
    cue: str
    hedged: bool


@dataclass(frozen=True)
class Negation:
    """One cue occurrence: the cue, its character span in the original text, the phrases it negates."""

    cue: str
    start: int
    end: int
    phrases: tuple[NegatedPhrase, ...]
    hedged: bool
    clause: tuple[int, int] = (0, 0)  # character span of the negated clause ("but no dog", "the dog is absent")


@dataclass(frozen=True)
class Analysis:
    """What the lexical detector found in one caption."""

    text: str
    negations: tuple[Negation, ...]

    @property
    def negated(self) -> bool:
        """Whether any cue was found (even one with nothing after it)."""
        return bool(self.negations)

    @property
    def phrases(self) -> tuple[NegatedPhrase, ...]:
        """Every negated phrase, in text order."""
        return tuple(p for n in self.negations for p in n.phrases)

    @property
    def hedged(self) -> bool:
        """Whether any negation is hedged."""
        return any(n.hedged for n in self.negations)

    @cached_property
    def affirmative_text(self) -> str:
        """The caption with every negated clause removed: "a cat but no dog" -> "a cat", "no dog" -> "".

        Cached on the (frozen, itself cached) analysis: scoring calls it for every negated caption."""
        if not self.negations:
            return self.text
        out, pos = [], 0
        for n in sorted(self.negations, key=lambda n: n.clause):
            a, b = n.clause
            if a >= pos:
                out.append(self.text[pos:a])
                pos = b
            else:
                pos = max(pos, b)
        out.append(self.text[pos:])
        text = " ".join(" ".join(out).split())
        text = re.sub(r"\s+([,;:.!?])", r"\1", text)
        text = re.sub(r"([,;:])\s*(?=[,;:.!?]|$)", "", text)
        words = text.split()
        while words and words[-1].lower().strip(",;:") in _DANGLING:
            words.pop()
        while words and words[0].lower().strip(",;:") in _DANGLING:
            words.pop(0)
        return " ".join(words).strip(" ,;:")


def _tokens(text: str) -> list[tuple[str, int, int]]:
    text = text.replace("\u2019", "'").replace("\u2018", "'").lower()
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _is_punct(tok: str) -> bool:
    return not (tok[0].isalnum())


def _cue_at(words: list[str], i: int) -> tuple[str, int] | None:
    """(cue name, number of words it spans) of a forward cue starting at word i, or None."""
    w = words[i]
    if i + 1 < len(words) and (w, words[i + 1]) in PAIR_CUES:
        return PAIR_CUES[(w, words[i + 1])], 2
    if w in FORWARD_CUES:
        return w, 1
    if w.endswith("n't"):
        return "n't", 1
    return None


def _is_cue_word(words: list[str], i: int) -> bool:
    return _cue_at(words, i) is not None or words[i] in POSTPOSED_CUES


def _clean_phrase(words: list[str]) -> str:
    k = 0
    while k < len(words) and words[k] in DETERMINERS:
        k += 1
    return " ".join(words[k:])


def _split_scope(words: list[str]) -> list[str]:
    parts, cur = [], []
    for w in words:
        if w in SPLITTERS:
            parts.append(cur)
            cur = []
        else:
            cur.append(w)
    parts.append(cur)
    return [p for p in (_clean_phrase(x) for x in parts) if p]


def _forward_scope(words: list[str], i: int) -> list[str]:
    out = []
    while i < len(words):
        w = words[i]
        if _is_punct(w) or w in BOUNDARIES or (w not in SPLITTERS and _is_cue_word(words, i)):
            break
        out.append(w)
        i += 1
    return out


def _backward_scope(words: list[str], i: int) -> list[str]:
    """The noun phrase ending just before word i, skipping copulas ("the dog is | absent")."""
    j = i - 1
    while j >= 0 and words[j] in COPULAS:
        j -= 1
    out: list[str] = []
    while j >= 0:
        w = words[j]
        if _is_punct(w) or w in BOUNDARIES or w in SPLITTERS or _is_cue_word(words, j) or w in HEDGES:
            break
        out.insert(0, w)
        j -= 1
    return out


def _phrase_start(words: list[str], i: int, n: int) -> int:
    """Index of the first word of the n-word phrase that ends before the copulas preceding word i."""
    j = i - 1
    while j >= 0 and words[j] in COPULAS:
        j -= 1
    return j - n + 1


def _clause(words: list[str], lo: int, hi: int) -> tuple[int, int]:
    """Grow [lo, hi) to the whole negated clause: back over hedges, "there is" and one joining word or
    punctuation mark; forward over place words ("in it", "here", "in sight")."""
    while lo > 0 and words[lo - 1] in _CLAUSE_BACK:
        lo -= 1
    if lo > 0 and (words[lo - 1] in _CLAUSE_JOIN or words[lo - 1] in (",", ";", ":")):
        lo -= 1
    while hi < len(words) and words[hi] in _CLAUSE_FORWARD:
        hi += 1
    return lo, hi


def _hedged_before(words: list[str], i: int) -> bool:
    j = i - 1
    while j >= 0 and not _is_punct(words[j]) and words[j] not in ("but", "and", "while", "whereas"):
        if words[j] in HEDGES:
            return True
        j -= 1
    return False


@lru_cache(maxsize=65536)
def analyse(text: str) -> Analysis:
    """Find negation cues, their negated phrases and hedges in one caption (pure, cached).

    >>> [p.text for p in analyse("a cat but no dog").phrases]
    ['dog']
    >>> [p.text for p in analyse("neither a cat nor a cow").phrases]
    ['cat', 'cow']
    >>> analyse("a notebook and a snowman").negated
    False
    """
    toks = _tokens(text if isinstance(text, str) else "")
    words = [t for t, _, _ in toks]
    negations: list[Negation] = []
    i = 0
    while i < len(words):
        cue = _cue_at(words, i)
        w = words[i]
        if cue is None and w not in POSTPOSED_CUES:
            i += 1
            continue
        hedged = _hedged_before(words, i)
        lo = i
        if cue is not None:
            name, span = cue
            scope = _forward_scope(words, i + span)  # "neither A nor B": "nor" splits the scope
            phrases = _split_scope(scope)
            rest = words[i + span + len(scope):]
            after_copula = i > 0 and (words[i - 1] in COPULAS or name == "n't")
            if not phrases and after_copula and all(x in _PLACE_WORDS for x in rest[:3] if not _is_punct(x)):
                back = _backward_scope(words, i)
                phrases = _split_scope(back)
                if phrases:
                    lo = _phrase_start(words, i, len(back))
            end = i + span + len(scope)
        else:
            name, span = w, 1
            back = _backward_scope(words, i)
            phrases = _split_scope(back)
            lo = _phrase_start(words, i, len(back))
            end = i + 1
        lo, hi = _clause(words, lo, end)
        negations.append(Negation(
            cue=name, start=toks[i][1], end=toks[i + span - 1][2],
            phrases=tuple(NegatedPhrase(p, name, hedged) for p in phrases), hedged=hedged,
            clause=(toks[lo][1], toks[hi - 1][2] if hi > lo else toks[lo][1])))
        i = max(end, i + span)
    return Analysis(text if isinstance(text, str) else "", tuple(negations))


def is_negated(text: str) -> bool:
    """Whether the caption contains an English negation cue (whole words only)."""
    return analyse(text).negated


def article_prompt(template: str, phrase: str) -> str:
    """The prompt that stands for a negated phrase or object: ``"This image shows {}."`` -> "... a dog."."""
    phrase = phrase.strip()
    article = "an" if phrase[:1].lower() in "aeiou" else "a"
    return template.replace("{}", f"{article} {phrase}")


class ObjectVocabulary:
    """Known object names and their surface forms, to find objects mentioned in a caption.

    ``forms`` maps each surface form ("dogs", "hot dog") to its name ("dog", "hot dog"). Longest forms match
    first, so "a hot dog" finds "hot dog", not "dog"; matches are whole words.
    """

    def __init__(self, forms: dict[str, str]):
        self.forms = {f.lower(): n for f, n in forms.items() if f.strip()}
        alts = sorted(self.forms, key=lambda f: (-len(f), f))
        self._re = re.compile(r"(?<![\w'])(?:" + "|".join(re.escape(f) for f in alts) + r")(?![\w'])") if alts else None

    @classmethod
    def from_names(cls, names, plurals: dict[str, str] | None = None) -> ObjectVocabulary:
        """Names plus naive plurals (and the given irregular ones: ``{"mouse": "mice"}``)."""
        forms: dict[str, str] = {}
        for n in names:
            for f in plural_forms(n):
                forms.setdefault(f, n)
        for n, p in (plurals or {}).items():
            forms[p] = n
        for n in names:  # a name always maps to itself
            forms[n] = n
        return cls(forms)

    def find(self, text: str) -> list[str]:
        """Object names mentioned in ``text``, in text order (repeats kept)."""
        if self._re is None:
            return []
        norm = " ".join(t for t, _, _ in _tokens(text))
        return [self.forms[m.group()] for m in self._re.finditer(norm)]

    def affirmed(self, text: str) -> list[str]:
        """Objects mentioned *outside* every negated phrase (a derived "positive" label)."""
        negated = {o for p in analyse(text).phrases for o in self.find(p.text)}
        return [o for o in dict.fromkeys(self.find(text)) if o not in negated]

    def negated(self, text: str) -> list[list[str]]:
        """Per negated phrase of :func:`analyse`, the objects it names (may be empty)."""
        return [self.find(p.text) for p in analyse(text).phrases]


def plural_forms(name: str) -> set[str]:
    """Naive English plurals of an object name ("dog" -> "dogs", "bus" -> "buses", "cherry" -> "cherries")."""
    forms = {name, name + "s", name + "es"}
    if name.endswith("y"):
        forms.add(name[:-1] + "ies")
    if name.endswith("f"):
        forms.add(name[:-1] + "ves")
    return forms
