"""The documented fallback: sayno's original token-window negation rules (``Analyser(parser="rules")``).

Exact on the emoji world's own caption templates, weak on real captions: a forward cue negates the words after
it up to a boundary word; ``absent``/``missing``/``gone`` and an empty forward scope after a copula negate the
noun phrase before. Never used unless asked for by name: the default analyser reads scope from a spaCy parse.
"""

from __future__ import annotations

import re

from sayno.negation.types import Analysis, NegatedPhrase, Negation

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


def analyse_rules(text: str) -> Analysis:
    """The old token-window rules on one text (only used with ``Analyser(parser="rules")``)."""
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
            phrases=tuple(NegatedPhrase(p, name, hedged, *_find_span(toks, p, lo, end)) for p in phrases),
            hedged=hedged,
            clause=(toks[lo][1], toks[hi - 1][2] if hi > lo else toks[lo][1])))
        i = max(end, i + span)
    text = text if isinstance(text, str) else ""
    negations_t = tuple(negations)
    return Analysis(text, negations_t, remove_clauses(text, [n.clause for n in negations_t]), parser="rules")


def _find_span(toks: list[tuple[str, int, int]], phrase: str, lo: int, hi: int) -> tuple[int, int]:
    """Character span of the words of ``phrase`` inside token range [lo, hi) (last occurrence)."""
    words = phrase.split()
    n = len(words)
    for k in range(min(hi, len(toks)) - n, max(lo, 0) - 1, -1):
        if [t for t, _, _ in toks[k:k + n]] == words:
            return toks[k][1], toks[k + n - 1][2]
    return -1, -1


def remove_clauses(text: str, clauses: list[tuple[int, int]]) -> str:
    """``text`` without the given character spans, tidied: spaces and punctuation mended, dangling
    conjunctions at either end dropped ("a cat but no dog" minus "but no dog" -> "a cat")."""
    if not clauses:
        return text
    out, pos = [], 0
    for a, b in sorted(clauses):
        if a >= pos:
            out.append(text[pos:a])
            pos = b
        else:
            pos = max(pos, b)
    out.append(text[pos:])
    text = " ".join(" ".join(out).split())
    text = re.sub(r"\s+([,;:.!?])", r"\1", text)
    text = re.sub(r"([,;:])\s*(?=[,;:.!?]|$)", "", text)
    text = re.sub(r"^[\s,;:.!?]+", "", text)
    words = text.split()
    while words and words[-1].lower().strip(",;:") in _DANGLING:
        words.pop()
    while words and words[0].lower().strip(",;:") in _DANGLING:
        words.pop(0)
    return " ".join(words).strip(" ,;:")
