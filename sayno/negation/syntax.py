"""Negation scope from a spaCy parse: cues, what each negates, the negated clause, hedges.

Works on one parsed ``Doc`` (tagger + dependency parser). Every rule is general English syntax; none names a
sentence. The construction families of :mod:`sayno.negation.families` (predicate negation, negative-quantified
subjects, comparison, "without" + gerund, not-a-cue cases) are tried first on each cue word; the object rules
below read what no family claims. In order:

1. **Not a negation**: cue words inside quotes (sign text: ``a "no parking" sign``), "no" after an article or
   before an *-ing* word and "sign"/"zone" (``a no parking sign``), "nothing but X" (affirms X), "none other
   than", "not only/just/merely", "no longer/matter/doubt/wonder", "rather than"/"instead of" followed by a verb.
2. **Forward cues** negate the noun phrase after them: "no" (determiner), "not"/"n't"/"never" (skipping the
   presence verb after them: "does not *feature* a dog", "you won't *find* a dog"), "without", "w/o", "sans",
   "minus", "zero", "neither ... nor", "none of", "lack"/"lacking"/"lack of", "absence of", "missing" with an
   object ("the image is missing a sink"), "exclude", "omit", "fail to show", "free/devoid/void/empty/bare/clear
   of", "instead of"/"rather than" (the thing after is the one *not* there). Quantifiers, determiners and light
   nouns are skipped ("no *sign of* a dog", "without *the need for* a chair", "no *visible* dog"); "or"/"nor"
   (and "and" after "both"/"either") join more phrases.
3. **Backward cues** negate the subject of their predicate: "X is absent/missing/gone", "X is nowhere to be
   found", and "not"/"n't" when nothing negatable follows ("X is not present in this image", "the dog does not
   appear"). The subject comes from the dependency parse, checked against the noun phrase right before the
   copula (which wins when the parse joined two subjects: "a cat and the dog is absent"). "Absent is a X",
   "Missing from the scene is a X": the noun phrase after the copula.
4. **Words that name what is absent**: "nobody"/"no one"/"noone" and un- adjectives of presence ("unoccupied",
   "unattended", "uninhabited", "unmanned", ...) negate "person"; "X-free", "X-less" (hyphenated, or a short
   list of common ones: "shirtless", "leafless", "treeless", ...) negate X.
5. A phrase is the noun phrase's content words, lower case: determiners, quantifiers and "visible"-like
   adjectives dropped, number as written ("no people" -> "people"). A cue with nothing negatable after it
   ("no", "nothing here", "it is not") still makes the text negated, with no phrase.
6. The **negated clause** (removed from the affirmative text) runs from the cue or negated subject to the end of
   its predicate (its own dependents, not coordinated clauses), then grows back over hedges, "there is",
   auxiliaries and one joining word or comma, and forward over place words ("in sight", "in this image").
7. A negation is **hedged** when a hedge word ("probably", "maybe", "might", ...) precedes its cue in the same
   clause (as in the original rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEDGES = frozenset({
    "probably", "maybe", "perhaps", "likely", "possibly", "might", "may", "could", "apparently",
    "presumably", "seemingly", "unlikely", "supposedly", "allegedly",
})
# Determiners, quantifiers and fillers skipped before a negated noun phrase.
SKIP = frozenset({
    "a", "an", "the", "any", "single", "one", "even", "so", "much", "as", "some", "more", "other", "such",
    "its", "their", "his", "her", "my", "your", "our", "this", "that", "these", "those", "of", "for", "both",
    "either", "also", "really", "actually", "at", "all", "just", "whatsoever", "additional", "extra", "further",
    "kind", "sort", "type", "real", "actual", "visible", "apparent", "obvious", "noticeable", "discernible",
    "evident", "recognizable", "recognisable", "identifiable", "particular", "specific", "distinct", "clear",
    "individual", "lone", "solitary", "trace", "traces", "sign", "signs", "hint", "hints", "evidence", "glimpse",
    "presence", "need", "mention", "indication", "form", "shred", "bit", "instance", "instances", "sight",
    "sighting", "view", "example", "examples", "amount", "number", "use", "types", "kinds", "sorts",
    "visibly", "clearly", "currently", "presently", "again", "certainly", "definitely", "to", "be",
    "only", "representation", "representations", "depiction", "depictions",
})
# Light nouns: "no sign of a dog" negates the dog.
LIGHT = frozenset({
    "sign", "signs", "trace", "traces", "hint", "hints", "evidence", "presence", "need", "kind", "kinds", "sort",
    "sorts", "type", "types", "form", "forms", "indication", "glimpse", "instance", "instances", "example",
    "examples", "mention", "amount", "number", "use", "variety", "bit", "shred", "sight", "sighting", "view",
    "appearance", "existence", "inclusion", "depiction", "feature", "features", "element", "elements", "part",
    "representation", "representations", "depictions", "reference", "references", "suggestion", "mentions",
    "indications",
})
# Adjectives dropped from the front of a phrase.
DROP_ADJ = frozenset({
    "single", "visible", "other", "such", "more", "additional", "extra", "further", "real", "actual", "apparent",
    "obvious", "noticeable", "discernible", "evident", "recognizable", "recognisable", "identifiable",
    "particular", "specific", "distinct", "individual", "lone", "solitary", "whatsoever", "present", "any",
})
PLACE_NOUNS = frozenset({
    "image", "images", "picture", "pictures", "photo", "photos", "photograph", "photographs", "scene", "scenes",
    "frame", "shot", "view", "sight", "snapshot", "pic", "foreground", "background", "vicinity", "it", "this",
    "here", "there", "setting", "composition", "depiction", "illustration", "drawing", "visual", "capture",
    "one", "that", "which", "what", "they", "them", "he", "she", "you", "we", "i", "something",
    "anything", "everything", "nothing",
})
# Verbs of presence and perception skipped after "not": "does not feature a dog".
PRESENCE = frozenset({
    "be", "have", "include", "feature", "contain", "show", "depict", "display", "portray", "present", "picture",
    "capture", "see", "find", "spot", "notice", "observe", "detect", "appear", "exist", "seem", "locate",
    "showcase", "reveal", "boast", "hold", "get", "come", "make", "spy", "encounter", "discover", "identify",
    "visible", "there", "here", "illustrate", "incorporate", "involve", "comprise", "shown", "seen",
})
AUX_BACK = frozenset({
    "is", "are", "was", "were", "be", "been", "being", "'s", "'re", "seems", "seem", "appears", "appear", "do",
    "does", "did", "has", "have", "had", "can", "ca", "could", "will", "wo", "would", "should", "must", "may",
    "might", "shall", "there", "it", "i", "we", "you", "see", "'ll", "'d", "'ve", "there's", "also", "still",
    "just", "noticeably", "clearly", "conspicuously", "notably", "completely", "entirely", "totally",
    "absolutely", "visibly", "currently", "definitely", "simply", "obviously", "evidently", "apparently",
    "remarkably", "strikingly", "curiously", "interestingly", "however", "though", "unfortunately", "sadly",
    "surprisingly", "notice", "noticeable", "find", "spot",
}) | HEDGES
RELATIVE_WORDS = frozenset({"that", "which", "who", "where", "whose", "whom"})
JOINS = frozenset({"but", "and", "with", "while", "whereas", "though", "although", "yet", "so", "or", "however"})
FORWARD_PLACE = frozenset({
    "in", "it", "here", "there", "sight", "this", "that", "picture", "image", "photo", "scene", "at", "all",
    "anywhere", "around", "to", "be", "seen", "visible", "present", "whatsoever", "nearby", "the", "either",
    "today", "anymore", "left", "shown", "found", "within", "frame", "view", "photograph", "shot", "snapshot",
    "noticed", "spotted", "observed", "detected", "located", "pictured", "featured", "included", "depicted",
    "displayed", "captured", "evident", "apparent", "discernible", "or", "anyplace", "from", "of", "on",
    "is", "are", "can", "could", "hidden", "too", "as", "well", "currently", "about",
})
DANGLING = frozenset({"but", "and", "with", "while", "whereas", "though", "although", "yet", "so", "or", "nor"})
PERSON_WORDS = frozenset({"nobody", "noone", "no-one"})
PERSON_PRONOUNS = frozenset({"anyone", "anybody", "someone", "somebody", "one", "soul", "individual"})
# "un-...-ed by X": X is absent ("undisturbed by any people", "unencumbered by a handbag").
UN_BY = frozenset({"unaccompanied", "undisturbed", "unencumbered", "unspoiled", "unspoilt", "untouched",
                   "uninterrupted", "unburdened", "unobstructed", "uncluttered", "unmarred", "unoccupied",
                   "unpopulated", "uninhabited", "unattended", "unmanned"})
UN_PERSON = frozenset({
    "unoccupied", "uninhabited", "unattended", "unmanned", "unpeopled", "unaccompanied", "unpopulated",
    "unstaffed", "untended", "unsupervised", "uncrowded", "unridden", "unpiloted",
})
# "-less" adjectives that do not name an absent object ("stainless steel", "a wireless mouse"); every other
# "X-less" (stem of three letters or more) negates X: "shirtless" -> "shirt", "chairless" -> "chair".
NOT_LESS = frozenset({
    "unless", "regardless", "nevertheless", "nonetheless", "endless", "countless", "careless", "useless",
    "helpless", "homeless", "wireless", "motionless", "seamless", "timeless", "spotless", "flawless", "priceless",
    "pointless", "harmless", "restless", "fearless", "hopeless", "lifeless", "sleepless", "tireless", "needless",
    "speechless", "breathless", "effortless", "relentless", "reckless", "ruthless", "thoughtless", "worthless",
    "shameless", "senseless", "limitless", "boundless", "weightless", "colorless", "colourless", "odorless",
    "tasteless", "nameless", "aimless", "mindless", "heartless", "painless", "powerless", "matchless",
    "stainless", "spineless", "pitiless", "doubtless", "dauntless", "defenseless", "defenceless", "jobless",
    "penniless", "cordless", "sleeveless", "strapless", "backless", "bottomless", "hapless", "feckless",
    "listless", "luckless", "tactless", "artless", "guileless", "selfless", "ageless", "dateless", "gutless",
    "fruitless", "bloodless", "boneless", "brainless", "dreamless", "graceless", "joyless", "loveless",
    "noiseless", "soundless", "expressionless", "blameless", "bless", "less", "clueless", "fingerless", "frameless", "rimless", "thankless", "topless", "cashless", "paperless",
    "skinless", "seedless", "tubeless", "brushless", "keyless", "handsfree",
    "ceaseless", "tuneless", "faultless", "measureless", "numberless", "airless", "nerveless",
})
# Unhyphenated "-less" adjectives always read as negation (kept for the rule-based documentation).
LESS_WORDS = frozenset({
    "shirtless", "hatless", "shoeless", "leafless", "treeless", "cloudless", "riderless", "driverless",
    "peopleless", "windowless", "roofless", "wheelless", "carless", "humanless", "personless", "doorless",
    "furnitureless", "saddleless", "sailless", "grassless",
})
OF_ADJ = frozenset({"free", "devoid", "void", "empty", "vacant", "bare", "clear", "bereft", "absent", "lacking", "short",
                    "emptied", "cleared", "stripped", "lack", "absence", "lacks"})
_VERBS = PRESENCE | frozenset({"lack", "exclude", "omit", "miss"})
NOT_AFTER = frozenset({"only", "just", "merely", "simply", "far", "unlike", "too", "exactly", "quite",
                       "necessarily", "mention", "least", "bad", "alone", "all", "uncommon", "unusual"})
NO_AFTER = frozenset({"longer", "matter", "doubt", "wonder", "less", "sooner", "problem", "way", "end",
                      "questions", "question", "big", "different", "exception"})
SIGN_NOUNS = frozenset({"sign", "signs", "zone", "zones", "symbol", "symbols", "sticker", "stickers", "placard",
                        "placards", "notice", "notices", "logo", "label", "poster", "banner", "area", "lane",
                        "signage", "board", "plate", "markings", "marking", "arrow", "emblem", "icon"})
_IRREGULAR = {
    "is": "be", "are": "be", "was": "be", "were": "be", "been": "be", "being": "be", "am": "be", "'s": "be",
    "'re": "be", "'m": "be", "has": "have", "had": "have", "having": "have", "'ve": "have", "seen": "see",
    "saw": "see", "found": "find", "shown": "show", "held": "hold", "got": "get", "gotten": "get",
    "came": "come", "made": "make", "spied": "spy", "spies": "spy", "lacks": "lack", "lacking": "lack",
    "lacked": "lack", "missing": "miss", "missed": "miss", "misses": "miss", "omitted": "omit",
    "omitting": "omit", "omits": "omit", "excluded": "exclude", "excluding": "exclude", "excludes": "exclude",
}


def _lemma(word: str) -> str:
    """Base form of the verbs the rules look for (so spaCy's lemmatizer need not run): "features" -> "feature"."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("es", ""),
                         ("s", ""), ("d", "")):
        if w.endswith(suffix):
            base = w[: -len(suffix)] + repl
            if base in _VERBS:
                return base
            if len(base) > 2 and base[-1] == base[-2] and base[:-1] in _VERBS:  # "spotted" -> "spot"
                return base[:-1]
    return w


NOUNISH = frozenset({"NOUN", "PROPN"})
# Penn Treebank tag -> universal POS: what spaCy's attribute_ruler does, done here so that component need not
# run (it costs a fifth of the parse time).
_UPOS = {
    ".": "PUNCT", ",": "PUNCT", "-LRB-": "PUNCT", "-RRB-": "PUNCT", "``": "PUNCT", '""': "PUNCT", "''": "PUNCT",
    ":": "PUNCT", "HYPH": "PUNCT", "NFP": "PUNCT", "$": "SYM", "#": "SYM", "SYM": "SYM", "AFX": "ADJ",
    "CC": "CCONJ", "CD": "NUM", "DT": "DET", "EX": "PRON", "FW": "X", "IN": "ADP", "JJ": "ADJ", "JJR": "ADJ",
    "JJS": "ADJ", "LS": "X", "MD": "AUX", "NN": "NOUN", "NNS": "NOUN", "NNP": "PROPN", "NNPS": "PROPN",
    "PDT": "DET", "POS": "PART", "PRP": "PRON", "PRP$": "PRON", "RB": "ADV", "RBR": "ADV", "RBS": "ADV",
    "RP": "ADP", "TO": "PART", "UH": "INTJ", "VB": "VERB", "VBD": "VERB", "VBG": "VERB", "VBN": "VERB",
    "VBP": "VERB", "VBZ": "VERB", "WDT": "PRON", "WP": "PRON", "WP$": "PRON", "WRB": "ADV", "ADD": "X",
    "XX": "X", "_SP": "SPACE", "SP": "SPACE",
}
_AUX_WORDS = frozenset({"be", "is", "are", "was", "were", "been", "being", "am", "'s", "'re", "'m", "s", "have",
                        "has", "had", "having", "'ve", "'d", "do", "does", "did", "ca", "wo", "can", "could",
                        "will", "would", "shall", "should", "may", "might", "must", "'ll"})
_SCONJ = frozenset({"that", "because", "if", "while", "whether", "although", "though", "since", "unless",
                    "whereas", "once", "as", "so", "until", "till", "than", "like", "for", "before", "after"})


_INDEF_PRON = frozenset({"something", "someone", "somebody", "anyone", "anybody", "anything", "everyone",
                         "everybody", "everything", "nobody", "nothing", "noone"})


def upos(tag: str, lower: str, dep: str = "", has_expl: bool = False) -> str:
    """Universal POS of a token from its fine tag, lower-case text and dependency label (the attribute_ruler's
    mapping, closely: measured equal on 98.5% of NegBench tokens, the rest on words the rules do not read)."""
    p = _UPOS.get(tag, "X")
    if p == "VERB" and lower in _AUX_WORDS:
        if lower in ("has", "have", "had", "having", "'ve"):
            return "AUX" if dep in ("aux", "auxpass") else "VERB"
        return "VERB" if has_expl else "AUX"
    if p == "ADV" and lower in ("where", "how", "when") and tag == "WRB":
        return "SCONJ"
    if p == "ADV" and lower in ("not", "n't", "nt", "never"):
        return "PART"
    if p == "NOUN" and lower in _INDEF_PRON:
        return "PRON"
    if p == "ADP" and dep == "mark":
        return "SCONJ"
    if p == "DET" and dep not in ("det", "predet", "preconj", "quantmod", ""):
        return "PRON"
    return p


_UPOS_MEMO: dict[tuple[int, int, int, bool], int] = {}


def set_pos(doc) -> None:
    """Fill ``token.pos_`` from ``token.tag_`` when the pipeline ran without its attribute_ruler.

    Works on the doc's attribute arrays (no Token objects: a third of the analyser's time went to creating
    them); :func:`upos` results are memoised per (tag, word, label)."""
    import numpy as np
    from spacy.attrs import DEP, HEAD, LOWER, POS, TAG
    from spacy.parts_of_speech import IDS

    if not len(doc):
        return
    strings = doc.vocab.strings
    arr = doc.to_array([TAG, LOWER, DEP, HEAD])
    heads = arr[:, 3].astype(np.int64) + np.arange(len(doc))
    expl = strings["expl"]
    expl_heads = set(heads[arr[:, 2] == expl].tolist())
    out = np.empty((len(doc), 1), dtype=np.uint64)
    memo = _UPOS_MEMO
    if len(memo) > 200_000:
        memo.clear()
    for j, (tag, lower, dep) in enumerate(arr[:, :3].tolist()):
        key = (tag, lower, dep, j in expl_heads)
        p = memo.get(key)
        if p is None:
            t, w = strings[tag], strings[lower]
            has_expl = key[3] and t.startswith("VB") and w in _AUX_WORDS
            p = memo[key] = IDS[upos(t, w, strings[dep], has_expl)]
        out[j, 0] = p
    doc.from_array([POS], out)


NOMINAL_DEPS = frozenset({"pobj", "dobj", "attr", "nsubj", "nsubjpass", "conj", "ROOT", "appos", "npadvmod", "dep",
                          "oprd"})
NOT_HEADS = DROP_ADJ | frozenset({"present", "visible", "available", "around", "nearby", "shown", "absent",
                                  "missing", "gone", "empty", "free", "here", "there", "seen", "found"})


def _headlike(t) -> bool:
    """A noun, or a word the tagger called an adjective that the parser uses as a noun phrase's head
    ("no hedgehog" tagged JJ)."""
    if t.pos_ in NOUNISH:
        return True
    return t.pos_ in ("ADJ", "X") and t.dep_ in NOMINAL_DEPS and t.lower_ not in NOT_HEADS and t.is_alpha


def _after_det(doc, k: int) -> bool:
    """A word right after a determiner and before a boundary is a noun, whatever the tagger says ("no rose")."""
    t = doc[k]
    if k == 0 or not t.is_alpha or t.pos_ in ("AUX", "ADP", "CCONJ", "SCONJ", "PRON", "PART", "DET", "ADV") \
            or t.lower_ in NOT_HEADS:
        return False
    prev = doc[k - 1]
    if not (prev.lower_ in ("a", "an", "no", "any", "the", "single") or prev.tag_ == "DT"):
        return False
    return k + 1 >= len(doc) or doc[k + 1].is_punct or doc[k + 1].pos_ in ("CCONJ", "ADP")
# Short quoted text (at most four words) is sign or label text: 'a "no parking" sign'.
QUOTES = re.compile(r"\"[^\"\s]+(?:\s[^\"\s]+){0,3}\"|\u201c[^\u201d\s]+(?:\s[^\u201d\s]+){0,3}\u201d|"
                    r"(?<![\w'])'[^'\s]+(?:\s[^'\s]+){0,3}'(?![\w'])")


@dataclass
class Found:
    """One negation found in a parse (token indices; ``phrases`` are (text, first token, end token))."""

    cue: str
    lo: int  # cue token range
    hi: int
    phrases: list[tuple[str, int, int]]
    clause_lo: int
    clause_hi: int
    hedged: bool = False
    #: set for a predicate negation (``sayno.negation.families``): its subject ("" when none) and predicate text;
    #: then ``phrases`` holds one (subject + predicate, first predicate token, end token)
    subject: str | None = None
    predicate: str = ""


# --------------------------------------------------------------------------------------------- phrases
def _np_run(doc, j: int, end: int, in_pp: bool = False) -> tuple[int, int]:
    """[a, b) of the noun-phrase words starting at j: nouns, adjectives, compounds, hyphens; b trimmed to its
    last noun. (a, a) when there is no noun."""
    k = j
    while k < end:
        t = doc[k]
        if t.pos_ in NOUNISH or t.pos_ in ("ADJ", "X") or (k == j and _after_det(doc, k)) or (t.pos_ == "NUM" and k + 1 < end and doc[k + 1].pos_ in NOUNISH) or t.tag_ == "HYPH" and k > j and k + 1 < end and not t.whitespace_ and not doc[k - 1].whitespace_ or t.pos_ == "VERB" and t.tag_ in ("VBG", "VBN") and t.dep_ in ("amod", "compound") and k + 1 < end \
                and doc[k + 1].pos_ in NOUNISH | {"ADJ"} or t.tag_ == "POS" and k > j and k + 1 < end and doc[k + 1].pos_ in NOUNISH or t.tag_ in ("VB", "VBP") and k + 1 < end and doc[k + 1].pos_ in NOUNISH:
            k += 1
        elif t.tag_ in ("VB", "VBP") and k > j and doc[k - 1].tag_ == "NN" and \
                (k + 1 >= end or doc[k + 1].is_punct or doc[k + 1].pos_ in ("ADP", "CCONJ")):
            k += 1  # a singular noun cannot take a plural verb: "no game die in this picture" is a noun
        elif in_pp and t.tag_ in ("VBZ", "VBD") and k > j and doc[k - 1].pos_ in NOUNISH and \
                (k + 1 >= end or doc[k + 1].is_punct or doc[k + 1].pos_ in ("ADP", "CCONJ")):
            k += 1  # a preposition's object holds no finite verb: "without any maple leaves"
        else:
            break
    b = k
    while b > j and not (_headlike(doc[b - 1]) or doc[b - 1].lower_ in PERSON_PRONOUNS or
                         (b - 1 == j and _after_det(doc, j)) or
                         (doc[b - 1].tag_ in ("VB", "VBP") and b - 1 > j and doc[b - 2].tag_ == "NN") or
                         (in_pp and doc[b - 1].tag_ in ("VBZ", "VBD") and b - 1 > j and doc[b - 2].pos_ in NOUNISH)):
        b -= 1
    if b > j and doc[b - 1].lower_ in ("present", "visible", "available", "around", "nearby", "shown"):
        b -= 1
    return j, b


def _phrase_text(doc, a: int, b: int) -> tuple[str, int, int]:
    """Lower-case text of doc[a:b] with leading quantifier-like adjectives and possessives dropped, and a
    trailing light noun after a modifier ("human presence" -> "human")."""
    while a < b - 1 and (doc[a].lower_ in DROP_ADJ or doc[a].lower_ in SKIP or doc[a].pos_ in ("DET", "PRON")):
        a += 1
    end = b  # the span keeps the light noun: it leaves the affirmative text with the phrase
    if b - a > 1 and doc[b - 1].lower_ in ("presence", "activity", "life", "figure", "figures", "element",
                                           "elements", "traffic"):
        b -= 1
    if b - a == 1 and doc[a].lower_ in PERSON_PRONOUNS:
        return "person", a, b
    text = doc[a:b].text.lower().replace("\u2019", "'")
    text = re.sub(r"\s*-\s*", "-", text) if "-" in text else text
    return text, a, end


def _forward(doc, j: int, end: int, allow_and: bool = False, in_pp: bool = False
             ) -> tuple[list[tuple[str, int, int]], int]:
    """Negated noun phrases starting at token j (skipping determiners and light nouns), and where they end."""
    out: list[tuple[str, int, int]] = []
    both = allow_and
    k = j
    while True:
        while k < end and (doc[k].lower_ in SKIP or doc[k].pos_ == "DET" or doc[k].dep_ in ("predet", "preconj")):
            if doc[k].lower_ in ("both", "either", "neither"):
                both = True
            if doc[k].lower_ in LIGHT and (k + 1 >= end or doc[k + 1].lower_ not in ("of", "for", "to")):
                break  # a light noun is only light before "of"/"for"/"to": "a field with no signs" negates signs
            k += 1
        if k < end and doc[k].pos_ == "PRON" and doc[k].lower_ in PERSON_PRONOUNS:
            out.append(("person", k, k + 1))
            k += 1
        else:
            a, b = _np_run(doc, k, end, in_pp)
            if b <= a and out and k < end and doc[k].tag_ == "VBG" and doc[k].dep_ == "conj":
                a, b = k, k + 1  # a gerund joined to the phrase before: "no snow or sledding"
            if b <= a:
                break
            # a light noun followed by of/for: the phrase is what comes after ("no sign of a dog")
            if doc[b - 1].lower_ in LIGHT and b < end and doc[b].lower_ in ("of", "for", "to"):
                k = b + 1
                continue
            if doc[b - 1].lower_ in PLACE_NOUNS and b - a == 1:
                break
            out.append(_phrase_text(doc, a, b))
            k = b
            # "a man's hat"-like runs end at the noun; a run may end in an adjective we trimmed
            while k < end and doc[k].pos_ == "ADJ" and doc[k].lower_ in DROP_ADJ:
                k += 1
        # more phrases joined by "or", "nor" (and "and" after "both")
        m = k
        if m < end and doc[m].text == "," and m + 1 < end and doc[m + 1].lower_ in ("or", "nor"):
            m += 1
        if m < end and (doc[m].lower_ in ("or", "nor") or (both and doc[m].lower_ in ("and", "&"))):
            k = m + 1
            continue
        if m < end and doc[m].text == "," and any(doc[x].lower_ in ("or", "nor") for x in range(m, min(end, m + 6))):
            k = m + 1
            continue
        break
    return out, (out[-1][2] if out else j)


def _subject_np(doc, s) -> tuple[str, int, int] | None:
    """The noun phrase of a subject token (its compound/amod children to the left), or None for pronouns and
    picture words."""
    if s.lower_ in PERSON_WORDS or s.lower_ in PERSON_PRONOUNS and s.pos_ == "PRON":
        return ("person", s.i, s.i + 1)
    if s.pos_ not in NOUNISH or s.lower_ in PLACE_NOUNS:
        return None
    a = s.i
    for c in reversed(list(s.lefts)):
        if c.i == a - 1 and c.dep_ in ("compound", "amod", "nmod", "nummod") or (c.i == a - 1 and c.tag_ == "HYPH"):
            a = c.i
        elif c.i == a - 1:
            break
    # hyphenated pieces ("t - shirt") may hang off the compound
    while a > 0 and doc[a - 1].tag_ == "HYPH" and not doc[a - 1].whitespace_ and a > 1 and doc[a - 2].pos_ in NOUNISH:
        a -= 2
    return _phrase_text(doc, a, s.i + 1)


def _np_before(doc, i: int, floor: int) -> tuple[int, int, int] | None:
    """(det start, a, b) of the noun phrase ending just before token i, skipping auxiliaries and adverbs."""
    j = i - 1
    skipped = False
    while j >= 0 and (doc[j].lower_ in AUX_BACK or doc[j].pos_ in ("AUX", "PART") or
                      (doc[j].pos_ == "ADV" and doc[j].lower_ not in ("here", "there")) or
                      (doc[j].text == "," and j > 0 and doc[j - 1].lower_ in PARENTHETICAL) or
                      (doc[j].text == "," and j + 1 < i and doc[j + 1].lower_ in PARENTHETICAL)):
        skipped = skipped or doc[j].text == ","
        j -= 1
    if skipped:
        floor = 0
    b = j + 1
    while j >= floor and (doc[j].pos_ in NOUNISH or doc[j].pos_ in ("ADJ", "NUM") or doc[j].tag_ == "HYPH" or
                          doc[j].dep_ == "compound"):
        j -= 1
    a = j + 1
    while b > a and not _headlike(doc[b - 1]):
        b -= 1
    if b <= a and j >= 1 and doc[j].is_alpha and doc[j].pos_ not in ("AUX", "ADP", "CCONJ", "SCONJ", "PRON", "PART") \
            and doc[j - 1].lower_ in ("a", "an", "the", "no", "any"):
        a, b = j, j + 1  # "the rose is absent": a word after a determiner is a noun, whatever its tag
    if b <= a:
        return None
    start = a
    while start - 1 >= floor and (doc[start - 1].pos_ == "DET" or doc[start - 1].lower_ in SKIP) \
            and doc[start - 1].lower_ not in ("to", "be", "of", "for", "at"):
        start -= 1
    return start, a, b


PARENTHETICAL = frozenset({"however", "though", "meanwhile", "unfortunately", "interestingly", "notably",
                           "curiously", "surprisingly", "oddly", "strangely", "sadly", "conspicuously"})
PLACEHOLDERS = frozenset({"thing", "things", "one", "what", "object", "objects", "item", "items", "absence",
                          "element", "that", "which", "it"})


def _after_copula(doc, i: int) -> list[tuple[str, int, int]]:
    """Inverted and cleft forms: the noun phrase after the next "is"/"are"/":" in the sentence ("noticeably
    missing is a cup", "nowhere to be found is a chair", "one notable absence: a handbag")."""
    n = len(doc)
    for k in range(i + 1, min(n, i + 12)):
        w = doc[k]
        if w.lower_ in ("is", "are", "was", "were", "'s", "remains", ":"):
            ph, _ = _forward(doc, k + 1, n)
            return ph
        if w.text in (",", ";", ".", "!", "?") or w.lower_ in ("but", "and", "while"):
            return []
    return []


def _backward(doc, cue, floor: int) -> tuple[list[tuple[str, int, int]], int, object]:
    """The negated subject of a backward cue: (phrases, clause start, predicate token)."""
    phrases, lo, pred = _backward_subject(doc, cue, floor)
    if not phrases or (len(phrases) == 1 and phrases[0][0] in PLACEHOLDERS):
        after = _after_copula(doc, cue.i)
        if after:
            return after, lo, pred
    return phrases, lo, pred


def _backward_subject(doc, cue, floor: int) -> tuple[list[tuple[str, int, int]], int, object]:
    pred = cue.head if cue.dep_ in ("neg", "advmod", "acomp", "attr", "oprd", "xcomp", "npadvmod") else cue
    subj = None
    p = pred
    for _ in range(3):
        kids = [c for c in p.children if c.dep_ in ("nsubj", "nsubjpass", "csubj")]
        if kids:
            subj = kids[0]
            break
        expl = [c for c in p.children if c.dep_ == "expl"]
        if expl:
            break
        if p.dep_ in ("xcomp", "conj", "ccomp", "acomp", "advcl") and p.head.i != p.i:
            p = p.head
        else:
            break
    lin = _np_before(doc, cue.i, floor)
    if subj is not None and subj.lower_ == "none":
        of = [c for c in subj.children if c.lower_ == "of"]
        if of:
            ph, _ = _forward(doc, of[0].i + 1, len(doc))
            return ph, subj.i, pred
    if subj is not None and subj.i < floor and all(
            doc[x].is_punct or doc[x].lower_ in PARENTHETICAL for x in range(subj.i + 1, floor)) and \
            (lin is None or doc[lin[2] - 1].i == subj.i):
        floor = min(x.i for x in subj.subtree)  # "a cup, however, is nowhere to be seen"
    if subj is not None and lin is not None and lin[1] > subj.i and \
            any(doc[x].lower_ in ("with", "without") for x in range(subj.i + 1, lin[1])):
        return [_phrase_text(doc, lin[1], lin[2])], lin[0], pred  # "a park with the swings gone"
    if subj is not None and subj.i >= floor:
        s_np = _subject_np(doc, subj)
        if lin is not None and doc[lin[2] - 1].i == subj.i and lin[1] < subj.i:
            return [_phrase_text(doc, lin[1], lin[2])], lin[0], pred  # "the game die": adjacent nouns
        if lin is not None and doc[lin[2] - 1].i != subj.i:
            lin_head = doc[lin[2] - 1]
            if lin_head in list(subj.conjuncts) and cue.head.lower_ not in ("are", "were"):
                return [_phrase_text(doc, lin[1], lin[2])], lin[0], pred
            if lin_head.head.i == subj.i and lin_head.dep_ == "compound":
                pass
        if s_np is not None:
            phrases = [s_np]
            for c in subj.conjuncts:
                if c.i > subj.i and c.i < cue.i:
                    np_ = _subject_np(doc, c)
                    if np_ is not None:
                        phrases.append(np_)
            start = min(x.i for x in subj.subtree if x.i <= subj.i)
            return phrases, max(start, floor), pred
        if subj.lower_ in PLACE_NOUNS or subj.pos_ == "PRON":
            return [], cue.i, pred
    if lin is not None:
        return [_phrase_text(doc, lin[1], lin[2])], lin[0], pred
    return [], cue.i, pred


# -------------------------------------------------------------------------------------------- cues
def _quoted(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in QUOTES.finditer(text)]


def _is_sign_text(doc, i: int) -> bool:
    """'a no parking sign', 'No Smoking zone': "no" as a sign's wording, not a negation."""
    t = doc[i]
    prev = doc[i - 1] if i > 0 else None
    if prev is not None and prev.lower_ in ("a", "an", "the", "this", "that", "these", "those") and prev.pos_ == "DET":
        return True
    for k in range(i + 1, min(len(doc), i + 4)):
        w = doc[k]
        if w.lower_ in SIGN_NOUNS:
            return any(doc[x].lower_.endswith("ing") or doc[x].text[:1].isupper() for x in range(i + 1, k)) \
                or (t.text == "No" and i > 0)
        if w.is_punct or w.pos_ in ("ADP", "AUX", "CCONJ"):
            break
    return False


_FLOOR_JOINS = JOINS - {"with"}


def _clause_floors(doc) -> list[int]:
    """Per token, the first token of its clause (after the last punctuation or coordinating join before it).

    One pass over the doc's attribute arrays: a per-token backwards scan made the analyser quadratic in the
    caption length, and Token objects cost a third of its time."""
    from spacy.attrs import IS_PUNCT, LOWER, TAG

    strings = doc.vocab.strings
    hyph = strings["HYPH"]
    joins = {strings[w] for w in _FLOOR_JOINS}
    floors, start = [], 0
    for j, (punct, tag, lower) in enumerate(doc.to_array([IS_PUNCT, TAG, LOWER]).tolist()):
        floors.append(start)
        if (punct and tag != hyph) or lower in joins:
            start = j + 1
    return floors


def _hedged(doc, i: int) -> bool:
    j = i - 1
    while j >= 0 and not (doc[j].is_punct and doc[j].tag_ != "HYPH") and \
            doc[j].lower_ not in ("but", "and", "while", "whereas"):
        if doc[j].lower_ in HEDGES:
            return True
        j -= 1
    return False


def _pred_end(doc, pred, lo: int) -> int:
    """End (exclusive) of the predicate's own dependents to the right: not its coordinated or subordinate
    clauses."""
    hi = pred.i + 1
    for c in pred.rights:
        if c.dep_ in ("conj", "cc", "advcl", "parataxis", "ccomp", "relcl", "punct", "mark", "dep", "appos",
                      "npadvmod", "meta", "intj"):
            break
        hi = max(hi, max(x.i for x in c.subtree) + 1)
    return hi


def _expand(doc, lo: int, hi: int) -> tuple[int, int]:
    """Grow the negated clause back over hedges, auxiliaries, "there is" and one join, forward over place words."""
    while lo > 0 and (doc[lo - 1].lower_ in AUX_BACK or doc[lo - 1].pos_ == "AUX" or doc[lo - 1].dep_ == "expl"):
        lo -= 1
    if lo > 0 and doc[lo - 1].tag_ in ("WDT", "WP", "WRB") and doc[lo - 1].lower_ in RELATIVE_WORDS:
        lo -= 1  # the relative word of a negated relative clause: "a photo that omits the moon" -> "a photo"
    if lo > 0 and (doc[lo - 1].lower_ in JOINS or doc[lo - 1].text in (",", ";", ":", "-", "\u2014")):
        lo -= 1
        if lo > 0 and doc[lo].lower_ in JOINS and doc[lo - 1].text == ",":
            lo -= 1
    n = len(doc)
    while hi < n and doc[hi].lower_ in FORWARD_PLACE:
        # a preposition only when its object is a picture word ("in sight", "in this image", "from the scene")
        if doc[hi].pos_ == "ADP" or doc[hi].lower_ in ("the", "this", "that"):
            k = hi
            while k < n and (doc[k].pos_ in ("ADP", "DET") or doc[k].lower_ in ("the", "this", "that", "its")):
                k += 1
            if k < n and doc[k].lower_ in PLACE_NOUNS | {"all"}:
                hi = k + 1
                continue
            if k == hi + 1 and (k >= n or doc[k].is_punct):  # an adverbial particle at the end: "no cups about"
                hi = k
            break
        hi += 1
    return lo, hi


# Words that can start a negation in the rules below (every other token is skipped at once): exact cue words,
# word starts of the absence verbs, and "-less"/"-free" words.
CUE_WORDS = frozenset({
    "no", "nobody", "noone", "no-one", "not", "n't", "never", "nt", "cannot", "without", "w/o", "sans", "minus",
    "neither", "nor", "zero", "none", "nothing", "nowhere", "instead", "rather", "absent", "gone", "absence",
    "fail", "fails", "failed", "failing", "free", "less", "n\u2019t",
}) | OF_ADJ | UN_BY | UN_PERSON | LESS_WORDS
_CUE_STARTS = ("lack", "omit", "exclud", "miss")


def _may_cue(w: str, triggers: frozenset = frozenset()) -> bool:
    """Whether a lower-case word can start a negation (a cue word of the rules or a family's trigger)."""
    return w in CUE_WORDS or w in triggers or w.startswith(_CUE_STARTS) or w.endswith(("less", "-free"))


_CUE_MEMO: dict[tuple[int, frozenset], bool] = {}


def _candidates(doc, families=()) -> list:
    """The tokens that may start a negation, found from the doc's word-hash array (memoised per word)."""
    from spacy.attrs import LOWER

    if not len(doc):
        return []
    triggers = frozenset().union(*(f.triggers for f in families)) if families else frozenset()
    strings = doc.vocab.strings
    memo = _CUE_MEMO
    if len(memo) > 200_000:
        memo.clear()
    out = []
    for j, h in enumerate(doc.to_array(LOWER).tolist()):
        key = (h, triggers)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = _may_cue(strings[h].replace("\u2019", "'"), triggers)
        if hit:
            out.append(doc[j])
    return out


#: what a family reader returns for a word that looks like a cue and is not one ("room no. 7", "not bad")
NOT_A_CUE = "not a cue"


def find_negations(doc, text: str, families=()) -> list[Found]:
    """Every negation in one parsed text, in text order.

    ``families``: readers of construction families (:data:`sayno.negation.families.FAMILIES`), tried on every
    token before the rules below; a reader returns a :class:`Found`, :data:`NOT_A_CUE`, or None (not its
    construction: the rules below read the token)."""
    n = len(doc)
    found: list[Found] = []
    consumed: set[int] = set()
    cands = _candidates(doc, families)
    if not cands:
        return found
    quoted = _quoted(text)
    floors = _clause_floors(doc)
    for t in cands:
        i = t.i
        if i in consumed:
            continue
        w = t.lower_.replace("\u2019", "'")
        if any(a <= t.idx < b for a, b in quoted):
            continue
        claimed = None
        for fam in families:
            if w in fam.triggers:
                claimed = fam.read(doc, t, floors[i])
                if claimed is not None:
                    break
        if claimed == NOT_A_CUE:  # the words it names are no cue either ("not unoccupied", "no. 7")
            consumed.update(range(i + 1, min(n, i + 3)))
            continue
        if claimed is not None:
            found.append(claimed)
            consumed.update(range(i + 1, max([claimed.hi] + [b for _, _, b in claimed.phrases])))
            continue
        nxt = doc[i + 1].lower_ if i + 1 < n else ""
        floor = floors[i]
        cue, lo, hi = w, i, i + 1
        phrases: list[tuple[str, int, int]] = []
        pred = None
        clause_lo = i
        kind = None
        if w == "no":
            if _is_sign_text(doc, i) or nxt in NO_AFTER or (nxt == "more" and i + 2 < n and doc[i + 2].lower_ == "than"):
                continue
            if nxt in ("one", "-") and (i + 2 >= n or doc[i + 2].pos_ not in NOUNISH | {"ADJ"} or
                                        doc[i + 2].lower_ in NOT_HEADS) or nxt == "-one":
                hi = i + (3 if nxt == "-" else 2)
                phrases = [("person", i, hi)]
                kind = "subject-cue"
            else:
                phrases, _ = _forward(doc, i + 1, n)
                kind = "det"
        elif w in PERSON_WORDS:
            phrases = [("person", i, i + 1)]
            kind = "subject-cue"
        elif w in ("not", "n't", "never", "nt") and t.pos_ != "PROPN":
            if nxt in NOT_AFTER or (nxt == "to" and i + 2 < n and doc[i + 2].lower_ == "mention"):
                continue
            cue = "n't" if w == "n't" else w
            kind = "neg"
        elif w == "cannot":
            cue, kind = "cannot", "neg"
        elif w in ("without", "w/o", "sans", "minus"):
            phrases, _ = _forward(doc, i + 1, n, in_pp=True)
            if w in ("sans", "minus") and not phrases:
                continue  # "minus five degrees" reads no object: no cue
            kind = "prep"
        elif w == "neither":
            phrases, e = _forward(doc, i + 1, n, allow_and=False)
            consumed.update(x for x in range(i + 1, e + 1) if x < n and doc[x].lower_ == "nor")
            kind = "det"
        elif w == "nor":
            k = i + 1
            while k < n and (doc[k].pos_ == "AUX" or doc[k].lower_ in ("there", "do", "does", "did")):
                k += 1  # "nor is there a car"
            phrases, _ = _forward(doc, k, n)
            kind = "det"
        elif w == "zero" and t.dep_ == "nummod" or (w == "zero" and nxt and doc[i + 1].pos_ in NOUNISH):
            phrases, _ = _forward(doc, i + 1, n)
            if not phrases and t.dep_ == "nummod" and t.head.i > i:  # "zero kites" with "kites" tagged a verb
                phrases = [_phrase_text(doc, i + 1, t.head.i + 1)]
            if not phrases:
                continue
            kind = "det"
        elif w == "none":
            if nxt == "other":
                continue
            if nxt == "of":
                phrases, _ = _forward(doc, i + 2, n)
            kind = "subject-cue"
        elif w == "nothing":
            if nxt in ("but", "except", "other", "less", "short"):
                continue
            kind = "subject-cue"
        elif w == "nowhere":
            phrases, clause_lo, pred = _backward(doc, t, floor)
            kind = "back"
        elif w in ("instead", "rather") and nxt in ("of", "than"):
            phrases, _ = _forward(doc, i + 2, n)
            if not phrases:
                continue
            cue, hi, kind = f"{w} {nxt}", i + 2, "prep"
        elif w in OF_ADJ and (nxt == "of" or (nxt == "from" and w in ("free", "empty", "devoid", "void"))) \
                and w != "short":
            phrases, _ = _forward(doc, i + 2, n, in_pp=True)
            cue, hi, kind = f"{w} {nxt}", i + 2, "prep"
        elif _lemma(w) in ("lack", "omit", "exclude", "miss") and not (w == "miss" and t.pos_ == "PROPN"):
            lem = _lemma(w)
            if lem in ("miss", "missing"):
                phrases, _ = _forward(doc, i + 1, n) if nxt not in ("from", "in", "at", "on") else ([], 0)
                if phrases and doc[i + 1].lower_ in ("out",):
                    phrases = []
                if not phrases:
                    phrases, clause_lo, pred = _backward(doc, t, floor)
                    kind = "back"
                else:
                    kind = "verb"
                cue = "missing" if w == "missing" else w
            elif t.tag_ == "VBN" and any(c.dep_ == "auxpass" for c in t.children):
                phrases, clause_lo, pred = _backward(doc, t, floor)  # "a dog is excluded"
                kind = "back"
            else:
                phrases, _ = _forward(doc, i + 1, n)
                kind = "verb"
        elif w == "absent" and nxt and (doc[i + 1].pos_ == "DET" or doc[i + 1].lower_ in ("any", "a", "an")):
            phrases, _ = _forward(doc, i + 1, n)  # "Absent a chair, the image shows ..."
            kind = "prep"
        elif w in ("absent", "gone"):
            back, clause_lo, pred = _backward(doc, t, floor)
            if i == floor or (not back and nxt in ("is", "are", "from", "in", "was", "were")):
                # "Absent is a chair", "Absent from the image is a dog"
                k = i + 1
                while k < n and doc[k].lower_ not in ("is", "are", "was", "were", "be") and not doc[k].is_punct:
                    k += 1
                if k < n and not doc[k].is_punct:
                    phrases, _ = _forward(doc, k + 1, n)
                    kind, clause_lo = "front", i
                if not phrases:
                    phrases, kind = back, "back"
            else:
                phrases, kind = back, "back"
        elif w == "absence" and nxt != "of":
            phrases = _after_copula(doc, i)  # "one notable absence: a handbag"
            if not phrases:
                continue
            kind = "prep"
        elif w in ("absence", "lack") and nxt == "of":
            phrases, _ = _forward(doc, i + 2, n)
            cue, hi, kind = f"{w} of", i + 2, "prep"
        elif w in ("fail", "fails", "failed", "failing") and nxt == "to" and i + 2 < n and \
                _lemma(doc[i + 2].lower_) in PRESENCE:
            phrases, _ = _forward(doc, i + 3, n)
            if not phrases:
                phrases, clause_lo, pred = _backward(doc, t, floor)
            cue, kind = "fail to", "verb"
        elif w in ("free", "less") and i >= 2 and doc[i - 1].tag_ == "HYPH" and not doc[i - 1].whitespace_ \
                and not doc[i - 2].whitespace_ and doc[i - 2].pos_ in NOUNISH | {"ADJ", "VERB"}:
            a = i - 2
            while a >= 2 and doc[a - 1].tag_ == "HYPH" and not doc[a - 1].whitespace_ and not doc[a - 2].whitespace_:
                a -= 2
            phrases = [(doc[a:i - 1].text.lower(), a, i - 1)]
            cue, lo, kind = f"-{w}", i - 1, "word"
        elif w in LESS_WORDS or (w.endswith("less") and len(w) >= 7 and w.isalpha() and w not in NOT_LESS):
            phrases = [(w[:-4], i, i + 1)]
            cue, kind = "-less", "word"
        elif w.endswith("-free") or (w.endswith("-less") and len(w) > 6):
            phrases = [(w.rsplit("-", 1)[0], i, i + 1)]
            cue, kind = "-" + w.rsplit("-", 1)[1], "word"
        elif w in UN_BY and nxt == "by":  # "unaccompanied by a dog": the dog is what is absent
            phrases, _ = _forward(doc, i + 2, n)
            if not phrases:
                continue
            cue, kind = "un-", "prep"
        elif w in UN_PERSON:
            phrases = [("person", i, i + 1)]
            cue, kind = "un-", "word"
        else:
            continue

        if kind == "subject-cue" and t.dep_ in ("nsubj", "nsubjpass") or (
                kind == "subject-cue" and phrases and phrases[0][0] == "person" and doc[hi - 1].dep_ == "nsubj"):
            subj_tok = t if t.dep_ in ("nsubj", "nsubjpass") else doc[hi - 1]
            v = subj_tok.head
            if _lemma(v.lower_) in ("have", "hold", "carry", "wear", "own", "bring", "use", "include", "contain"):
                objs = [c for c in v.children if c.dep_ == "dobj"]
                if objs:  # "no one has a handbag": the handbag is what is absent
                    np_ = _subject_np(doc, objs[0])
                    if np_ is not None:
                        phrases = [np_]
        if kind == "neg":
            # skip the verbs and adverbs after "not" ("does not feature", "won't be seen"), then read forward
            k = i + 1
            verb = None
            while k < n and (doc[k].pos_ in ("AUX", "VERB", "ADV", "PART") and doc[k].lower_ not in ("there", "here")
                             and doc[k].lower_ not in PLACE_NOUNS or doc[k].lower_ in ("even", "really", "up")):
                if doc[k].pos_ == "VERB" or (doc[k].pos_ == "AUX" and verb is None):
                    verb = doc[k]
                k += 1
            presence = verb is None or _lemma(verb.lower_) in PRESENCE or verb.lower_ in PRESENCE
            if k < n and (doc[k].pos_ in NOUNISH | {"DET", "ADJ", "NUM"} or doc[k].lower_ in PERSON_PRONOUNS) \
                    and not (doc[k].lower_ in PLACE_NOUNS and doc[k].pos_ not in ("DET", "NUM")):
                phrases, _ = _forward(doc, k, n, allow_and=False)
            if phrases and phrases[0][1] < n and doc[phrases[0][1]].lower_ in PLACE_NOUNS:
                phrases = []
            if not phrases and verb is not None and not presence:
                objs = [c for c in verb.children if c.dep_ in ("dobj", "attr", "oprd") and c.i > i]
                if objs:
                    np_ = _subject_np(doc, objs[0])
                    phrases = [np_] if np_ else []
                else:
                    for c in verb.children:
                        if c.dep_ == "prep" and c.i > i:
                            pobj = [x for x in c.children if x.dep_ == "pobj"]
                            if pobj and pobj[0].lower_ not in PLACE_NOUNS:
                                np_ = _subject_np(doc, pobj[0])
                                phrases = [np_] if np_ else []
                            break
            if not phrases and presence:
                phrases, clause_lo, pred = _backward(doc, t, floor)
            if pred is None:
                pred = t.head if t.dep_ == "neg" else None
        elif kind == "subject-cue" and (t.dep_ in ("nsubj", "nsubjpass") or doc[hi - 1].dep_ in (
                "nsubj", "nsubjpass")) or (kind == "det" and phrases and doc[phrases[0][2] - 1].dep_ in
                                         ("nsubj", "nsubjpass")):
            head_tok = (t if t.dep_ in ("nsubj", "nsubjpass") else doc[hi - 1]) if kind == "subject-cue" else \
                doc[phrases[0][2] - 1]
            pred = head_tok.head
        elif kind in ("word", "back", "verb") and pred is None:
            pred = None

        # the negated clause
        spans = [lo, hi] + [x for _, a, b in phrases for x in (a, b)]
        c_lo = min(min(spans), clause_lo)
        c_hi = max(spans)
        if kind == "word":  # "a dog-free scene", "an unoccupied bench": only the word leaves the base
            c_lo, c_hi = min(lo, phrases[0][1]), hi
        if pred is not None and pred.i >= c_lo - 1:
            c_hi = max(c_hi, _pred_end(doc, pred, c_lo))
        if kind != "word":
            c_lo, c_hi = _expand(doc, c_lo, c_hi)
        found.append(Found(cue, lo, hi, phrases, c_lo, c_hi, _hedged(doc, min(lo, i))))
        if kind in ("det", "prep") and phrases:
            consumed.update(range(i + 1, phrases[-1][2]))
    return found
