"""Families of negation constructions read from the dependency parse, one small reader each.

Each :class:`Family` has a name, a one-line description and a reader ``read(doc, token, floor)`` that the syntax
analyser (:func:`sayno.negation.syntax.find_negations`) tries on every token before its object rules. A reader
returns a :class:`~sayno.negation.syntax.Found` (this token is the cue of a negation of the family's shape),
:data:`~sayno.negation.syntax.NOT_A_CUE` (a cue word that negates nothing here: "room no. 7", "not bad"), or
None (not this family: the next family, then the object rules, read the token). ``floor`` is the first token of
the token's clause. :data:`FAMILIES` is the table the analyser walks, in order;
``Analyser(families=[...])`` reads only the named ones, so a family can be tested or switched off alone.

Every reader decides from the parse (dependency labels, heads, fine tags) and from closed classes of English
function words (copulas, verbs of presence, comparison words); none names a caption. Predicate negations
(:func:`predicate_not`, :func:`negative_subject`, the predicate case of :func:`without_gerund`) give one phrase
whose text is the subject with its predicate ("horse galloping", "person swimming in the pool"); the subject stays
in the affirmative text unless a negative quantifier ("nobody", "no cow") makes it part of the negation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sayno.errors import InputError
from sayno.negation.syntax import (
    NOT_A_CUE,
    NOT_AFTER,
    NOUNISH,
    PLACE_NOUNS,
    PRESENCE,
    Found,
    _backward,
    _expand,
    _forward,
    _hedged,
    _lemma,
    _pred_end,
    _subject_np,
)

# Adjectives, adverbs and participles that say a thing is (or is not) there: "not present" negates the subject.
PRESENT_WORDS = frozenset({
    "present", "visible", "there", "here", "around", "nearby", "available", "anywhere", "apparent", "evident",
    "discernible", "noticeable", "detectable", "observable", "perceptible", "recognizable", "recognisable",
    "identifiable", "included", "depicted", "pictured", "featured", "shown", "seen", "found", "spotted",
    "displayed", "captured", "absent", "missing", "gone",
})
# Verbs of thinking and saying: "I don't think there is a dog" negates the dog, not the thinking.
COGNITION = frozenset({"think", "believe", "suppose", "expect", "guess", "imagine", "reckon", "know", "say",
                       "claim", "feel", "seem", "appear", "look", "mean", "want"})
# Cue words a "not" may negate in turn (double negation is not resolved: "not without a dog" is "without").
CUE_HEADS = frozenset({"without", "w/o", "lacking", "missing", "absent", "free", "empty", "devoid", "void"})
ABSENCE_VERBS = frozenset({"lack", "miss", "omit", "exclude"})
# Words of comparison: "not like a cat", "nothing resembling a cat", "not similar to a cat".
COMPARE = frozenset({"like", "resembling", "resemble", "resembles", "resembled", "similar", "alike", "akin",
                     "unlike"})
COMPARE_VERBS = frozenset({"look", "looks", "looked", "looking", "resemble", "resembles", "resembled",
                           "resembling", "seem", "seems", "appear", "appears", "sound", "sounds"})
# Verbs of having and using: "without using a laptop" negates the laptop (an object), not an action.
HAVE_USE = frozenset({"use", "have", "wear", "carry", "hold", "include", "feature", "show", "contain", "bring",
                      "own", "need", "require", "involve", "using", "having", "wearing", "carrying", "holding",
                      "including", "featuring", "showing", "containing", "bringing", "needing", "requiring",
                      "involving"})
# Words for a person, as subjects: "nobody", "not anyone", "not a soul".
PERSON_SUBJECTS = frozenset({"nobody", "noone", "no-one", "anyone", "anybody", "soul", "person",
                             "someone", "somebody", "he", "she", "they", "i", "you", "we", "people"})
# Pronouns that name no visible subject: a predicate of "it" is repelled without a subject.
EMPTY_SUBJECTS = frozenset({"it", "this", "that", "which", "what", "something", "anything", "everything",
                            "nothing", "there", "here"})
# Verbs that, with a negative-quantified subject, say the thing is not there ("no cup is needed", "no handbag
# accompanying her", "no chair is provided"): the object rules' absent thing, not a predicate.
THERE_VERBS = frozenset({"need", "needed", "require", "required", "provide", "provided", "accompany",
                         "accompanying", "accompanied", "accompanies", "occupy", "occupied", "occupies",
                         "occupying", "inhabit", "inhabited", "populate", "populated", "remain", "remains",
                         "remained", "exist", "exists", "existed"})
RELATIVE = frozenset({"that", "which", "who", "whom", "whose"})
BE = frozenset({"be", "is", "are", "was", "were", "been", "being", "am", "'s", "'re", "'m"})
# Litotes: "not bad" and "not unlike X" say something positive; they negate no visible thing.
LITOTES = frozenset({"bad", "terrible", "awful", "horrible", "shabby", "ugly", "poor", "worse", "worst",
                     "unlike", "half"})
# absence words a negation cancels (double negation: "not missing" = there)
ABSENCE_WORDS = frozenset({"absent", "missing", "gone", "lacking"})
DEGREE = frozenset({"too", "so", "that", "at", "all", "half", "entirely", "altogether", "very"})
NEG_WORDS = frozenset({"not", "n't", "never", "nt"})
#: the links :func:`_described` follows from a negated state up to what it describes: how a word that describes a
#: noun may hang on it in a fragment ("a kitten, asleep": the small pipeline's labels), conjuncts and complements
WALK_DEPS = frozenset({"advmod", "amod", "intj", "appos", "acl", "npadvmod", "dep", "conj", "acomp"})


@dataclass(frozen=True)
class Family:
    """One family of negation constructions: ``read(doc, token, floor)`` -> Found | NOT_A_CUE | None."""

    name: str
    description: str
    read: Callable
    #: lower-case words the reader can start from; it is tried on no other token (keeps the analyser fast)
    triggers: frozenset = frozenset()


# ------------------------------------------------------------------------------------------- helpers
def _np_text(doc, tok) -> str:
    """A noun's phrase text ("person" for words for people, "" for pronouns like "it")."""
    if tok.lower_ in PERSON_SUBJECTS:
        return "person"
    np_ = _subject_np(doc, tok)
    return np_[0] if np_ else ""


# Dependents whose words are not part of a predicate's own text: clauses hanging off its objects ("no cup
# accompanies the sandwich, which sits on a plate" -> "cup accompanies the sandwich").
_ASIDE = frozenset({"relcl", "appos", "advcl", "parataxis", "punct", "conj", "cc", "ccomp", "dep", "mark"})


def _words(doc, a: int, b: int, keep: int = -1) -> str:
    """The lower-case words of doc[a:b], up to the first clause or aside that hangs inside it (``keep``: the
    predicate's own token, never a cut)."""
    for tok in doc[a + 1:b]:
        if tok.dep_ in _ASIDE and tok.tag_ != "HYPH" and tok.i != keep:
            b = tok.i
            break
    while b > a and (doc[b - 1].is_punct or doc[b - 1].lower_ in ("and", "but", "or")):
        b -= 1
    return doc[a:b].text.lower().replace("\u2019", "'") if b > a else ""


def _subject(doc, head):
    """The subject token of a predicate head: its nsubj (a relative pronoun stands for the noun the clause
    describes), else the noun it modifies (acl, amod, relcl, prep of a noun)."""
    for c in head.children:
        if c.dep_ in ("nsubj", "nsubjpass") and c.i < head.i + 3:
            if c.lower_ in RELATIVE or c.tag_ in ("WDT", "WP"):
                return head.head if head.dep_ in ("relcl", "acl") and head.head.i != head.i else None
            return c
    if head.dep_ in ("acl", "amod", "relcl", "appos", "prep", "advcl", "advmod") and head.head.i != head.i and \
            head.head.pos_ in NOUNISH | {"PRON"}:
        return head.head
    if head.dep_ in ("acl", "relcl", "advcl", "conj", "xcomp") and head.head.i != head.i and \
            head.head.pos_ in ("VERB", "AUX"):
        return _subject(doc, head.head)
    return None


def _predicate(doc, cue, pred, start: int, subj, clause_lo: int, floor: int, cue_text: str | None = None,
               subj_text: str | None = None, keep_subject: bool = True) -> Found | None:
    """A predicate negation: the phrase is subject + doc[start:end of pred's own dependents]."""
    end = _pred_end(doc, pred, start)
    while start < pred.i and doc[start].pos_ == "ADV" and doc[start].head.i == pred.i and pred.pos_ != "ADV":
        # adverbs of time and degree before the predicate ("not yet arrived") are not repelled; an adverb's own
        # modifier is part of it ("not upside down")
        start += 1
    words = _words(doc, start, end, pred.i)
    if not words:
        return None
    if subj_text is None:
        subj_text = _np_text(doc, subj) if subj is not None else ""
    # a preposition left without its object refers back to the noun the clause describes ("a sofa that
    # nobody is sitting on": the person sits on the sofa)
    dangling = [c for c in pred.children if c.dep_ == "prep" and start <= c.i < end and
                not any(x.dep_ in ("pobj", "pcomp") for x in c.children)]
    if dangling and pred.dep_ in ("relcl", "acl") and pred.head.pos_ in NOUNISH:
        words = f"{words} {_np_text(doc, pred.head)}".strip()
    text = f"{subj_text} {words}".strip()
    lo = clause_lo
    hi = end
    lo, hi = _expand(doc, lo, hi)
    if keep_subject and subj is not None and lo <= subj.i < clause_lo:
        lo = clause_lo
    f = Found(cue_text or cue.lower_.replace("\u2019", "'"), cue.i, cue.i + 1, [(text, start, end)], lo, hi,
              _hedged(doc, cue.i), subject=subj_text, predicate=words)
    return f


def _object(doc, cue, cue_text: str, phrases, lo: int, hi: int) -> Found | None:
    if not phrases:
        return None
    c_lo = min([lo] + [a for _, a, _ in phrases])
    c_hi = max([hi] + [b for _, _, b in phrases])
    c_lo, c_hi = _expand(doc, c_lo, c_hi)
    return Found(cue_text, cue.i, cue.i + 1, list(phrases), c_lo, c_hi, _hedged(doc, cue.i))


def _present_like(tok) -> bool:
    """A word that says a thing is (not) there, or one of the absence verbs (read by the object rules)."""
    lem = _lemma(tok.lower_)
    return tok.lower_ in PRESENT_WORDS or lem in PRESENCE or tok.lower_ in PRESENCE or lem in ABSENCE_VERBS


# ------------------------------------------------------------------------------------- not a cue
def number_abbreviation(doc, t, floor):
    """"room no. 7", "platform No 3": "no" as the abbreviation of "number" before a numeral."""
    if t.lower_ not in ("no", "no.", "nos", "nos."):
        return None
    k = t.i + 1
    if k < len(doc) and doc[k].text == "." and not t.whitespace_:
        k += 1
    if k < len(doc) and (doc[k].like_num or doc[k].text[:1].isdigit()) and doc[k].lower_ not in ("one", "zero"):
        nxt = doc[k + 1] if k + 1 < len(doc) else None
        if k > t.i + 1 or nxt is None or nxt.pos_ not in NOUNISH:
            return NOT_A_CUE
    return None


def litotes(doc, t, floor):
    """"not bad", "not too shabby", "not unlike a banner", "not uncommon": a negated negative says something
    positive and names no absent thing. So does a negated absence word ("the key is not missing", "a wallet that
    isn't gone", "not lacking anything"): the double negative says the thing is there."""
    if t.lower_ not in NEG_WORDS:
        return None
    k = t.i + 1
    while k < len(doc) and doc[k].lower_ in DEGREE:
        k += 1
    if k >= len(doc):
        return None
    w = doc[k]
    if w.lower_ in LITOTES or w.lower_ in ABSENCE_WORDS or (w.lower_.startswith("un") and len(w) > 5 and w.tag_ in ("JJ", "IN", "VBN") and
                               w.lower_ not in ("under", "underneath", "until", "unto")):
        return NOT_A_CUE
    return None


# ------------------------------------------------------------------------------------------ readers
def comparison(doc, t, floor):
    """Negative comparison: "nothing like X", "nothing resembling X", "nothing that looks like X", "looks nothing
    like X", "not similar to X", "does not look like X": the object X is what is not there."""
    n = len(doc)
    w = t.lower_
    if w == "nothing":
        k = t.i + 1
        if k < n and doc[k].lower_ in RELATIVE:  # "nothing that looks like X"
            k += 1
            while k < n and (doc[k].pos_ == "AUX" or doc[k].pos_ == "ADV"):
                k += 1
            if k < n and doc[k].lower_ in COMPARE_VERBS:
                k += 1
        elif t.i > 0 and doc[t.i - 1].lower_ in COMPARE_VERBS:  # "looks nothing like X"
            pass
        if k < n and doc[k].lower_ in COMPARE:
            j = k + 1
            if j < n and doc[j].lower_ in ("to", "of"):
                j += 1
            phrases, _ = _forward(doc, j, n)
            lo = t.i
            if t.i > 0 and doc[t.i - 1].lower_ in COMPARE_VERBS:
                verb = doc[t.i - 1]
                lo = min(x.i for x in verb.subtree) if verb.dep_ in ("relcl", "acl") else verb.i
            return _object(doc, t, "nothing like", phrases, lo, k + 1)
        return None
    if w in NEG_WORDS:
        k = t.i + 1
        while k < n and (doc[k].pos_ in ("AUX", "ADV") and doc[k].lower_ not in COMPARE or
                         doc[k].lower_ in COMPARE_VERBS - {"resemble", "resembles", "resembled", "resembling"}):
            k += 1
        if k < n and doc[k].lower_ in COMPARE and doc[k].lower_ != "unlike":
            j = k + 1
            if j < n and doc[j].lower_ in ("to", "of"):
                j += 1
            phrases, _ = _forward(doc, j, n)
            return _object(doc, t, "not like", phrases, t.i, k + 1)
    return None


def _neg_subject(doc, t):
    """The subject token when ``t`` starts a negative-quantified subject: "nobody", "no one", "no cow", "none (of
    the sheep)", "not a soul", "not anyone"."""
    n = len(doc)
    w = t.lower_
    if w in ("nobody", "noone", "no-one", "none"):
        return t
    if w == "no" and t.dep_ == "det" and t.head.i > t.i:
        return t.head
    if w in ("not", "never") and t.i + 1 < n:
        k = t.i + 1
        while k < n and doc[k].lower_ in ("a", "an", "one", "single", "even", "any"):
            k += 1
        if k < n and (doc[k].pos_ in NOUNISH or doc[k].lower_ in PERSON_SUBJECTS):
            return doc[k]
    return None


def _neg_subject_text(doc, subj) -> str:
    """What a negative-quantified subject names: "person" for "nobody" and "no one", the noun of "none of the
    sheep"."""
    if subj.lower_ == "one":
        return "person"
    if subj.lower_ == "none":
        pobj = [x for c in subj.children if c.lower_ == "of" for x in c.children if x.dep_ == "pobj"]
        return _np_text(doc, pobj[0]) if pobj else ""
    return _np_text(doc, subj)


def negative_subject(doc, t, floor):
    """A negative-quantified subject of an action or state: "nobody is swimming in the pool" -> "person swimming
    in the pool", "no cow is lying down" -> "cow lying down", "none of the sheep are grazing", "not a soul is
    walking", "a sofa that nobody is sitting on", "there isn't anyone jogging" (an existential whose noun carries
    a participle). A copula ("no one is on the bench") or a verb of presence ("no dog can be seen") is the object
    rules' absent thing."""
    subj = _neg_subject(doc, t)
    carried = [c for c in subj.children if c.dep_ in ("acl", "relcl") and c.tag_ in ("VBG", "VBN") and c.i > subj.i] \
        if subj is not None and subj.dep_ not in ("nsubj", "nsubjpass") else []
    one = t.i + 2 < len(doc) and t.lower_ == "no" and doc[t.i + 1].lower_ == "one" and \
        doc[t.i + 2].lower_.endswith("ing") and doc[t.i + 2].tag_ in ("NN", "VBG")
    if subj is not None and subj.dep_ in ("nsubj", "nsubjpass"):
        verb = subj.head
        text = None
        start = verb.i
        lo = t.i
    elif carried:  # "nobody playing golf", "no dog running": the subject carries the participle
        verb, text, start, lo = carried[0], None, carried[0].i, t.i
    elif one:  # "there is no one kneeling": "no one" + a participle the parser read as a noun or a modifier
        gerund = doc[t.i + 2]
        # "no one lifting weights" may be parsed with "lifting" modifying "weights": the phrase ends with its head
        pred = gerund.head if gerund.dep_ in ("amod", "compound") and gerund.head.i > gerund.i else gerund
        return _predicate(doc, t, pred, gerund.i, None, t.i, floor, subj_text="person", keep_subject=False,
                          cue_text="no one")
    else:
        # "there is no X Ying", "there isn't anyone Ying": the noun of an existential carries a participle
        if t.lower_ not in NEG_WORDS | {"no"}:
            return None
        be = t.head if t.lower_ != "no" else t.head.head
        if not any(c.dep_ == "expl" for c in be.children):
            return None
        nouns = [c for c in be.children if c.dep_ in ("attr", "dobj", "nsubj") and c.i > t.i]
        if not nouns:
            return None
        noun = nouns[0]
        parts = [c for c in noun.children if c.dep_ in ("acl", "relcl") and c.tag_ in ("VBG", "VBN")]
        if not parts:
            return None
        verb, subj = parts[0], noun
        text = _np_text(doc, noun)
        lo = t.i
        start = verb.i
    if verb.tag_[:2] != "VB" or verb.lower_ in BE or _present_like(verb) or verb.lower_ in THERE_VERBS:
        return None
    if any(c.dep_ == "expl" for c in verb.children):
        return None
    a, b = sorted((subj.i, verb.i))
    if any(doc[x].is_punct and doc[x].tag_ != "HYPH" or doc[x].lower_ in ("sight", "view") for x in range(a, b)):
        return None  # "not a truck in sight - just a hillside, bathed in light": another clause's verb
    if text is None:
        text = _neg_subject_text(doc, subj)
    passive = [c for c in verb.children if c.dep_ == "auxpass" and c.lower_ == "being" and c.i > subj.i]
    start = min([start] + [c.i for c in passive])
    clause_lo = lo
    if verb.dep_ in ("relcl", "acl") and verb.head.i < lo:
        clause_lo = min(x.i for x in verb.subtree)
    return _predicate(doc, t, verb, start, None, clause_lo, floor, subj_text=text, keep_subject=False,
                      cue_text={"nt": "n't"}.get(t.lower_, t.lower_.replace("\u2019", "'")))


def without_gerund(doc, t, floor):
    """"without" + a gerund: a verb of having or using negates its object ("without using a laptop" ->
    "laptop"); any other verb is a negated predicate of the subject ("a jogger without smiling" -> "jogger
    smiling")."""
    if t.lower_ not in ("without", "w/o"):
        return None
    n = len(doc)
    k = t.i + 1
    while k < n and doc[k].pos_ == "ADV":
        k += 1
    if k >= n or doc[k].tag_ != "VBG" or doc[k].lower_ in PRESENT_WORDS:
        return None
    verb = doc[k]
    objs = [c for c in verb.children if c.dep_ == "dobj"]
    if verb.lower_ in HAVE_USE or _lemma(verb.lower_) in HAVE_USE:
        if not objs:
            return None
        phrases, _ = _forward(doc, k + 1, n, in_pp=True)
        if not phrases:
            return None
        return _object(doc, t, "without", phrases, t.i, _pred_end(doc, verb, k))
    head = t.head
    subj = head if head.pos_ in NOUNISH else _subject(doc, head) if head.pos_ in ("VERB", "AUX", "ADJ") else None
    return _predicate(doc, t, verb, k, subj, t.i, floor)


def left_out(doc, t, floor):
    """Absence said with a phrasal verb or idiom: "the vase left out", "leaving out the vase", "the cat out of
    the picture/frame/shot"."""
    n = len(doc)
    w = t.lower_
    nxt = doc[t.i + 1].lower_ if t.i + 1 < n else ""
    if w in ("left", "leave", "leaves", "leaving") and nxt == "out":
        has_object = any(c.dep_ == "dobj" for c in t.children)
        passive = t.tag_ == "VBN" or any(c.dep_ == "auxpass" for c in t.children) or not has_object
        if passive:  # "the vase (was) left out"; "the windmill left out" read as a verb without object
            subj = [c for c in t.children if c.dep_ in ("nsubjpass", "nsubj")]
            noun = subj[0] if subj else (t.head if t.dep_ in ("acl", "amod", "relcl") and t.head.pos_ in NOUNISH
                                         else None)
            if noun is not None and noun.i < t.i - 1 and doc[t.i - 1].pos_ in NOUNISH and any(
                    doc[x].lower_ in ("with", "without") for x in range(noun.i + 1, t.i)):
                noun = doc[t.i - 1]  # "a landscape with the windmill left out": the noun after "with"
            if noun is None:
                return None
            np_ = _subject_np(doc, noun)
            if np_ is None:
                return None
            start = min(x.i for x in noun.subtree if x.i <= noun.i)
            return _object(doc, t, "left out", [np_], start, t.i + 2)
        phrases, _ = _forward(doc, t.i + 2, n)
        return _object(doc, t, "left out", phrases, t.i, t.i + 2)
    if w == "out" and nxt == "of" and t.i + 2 < n:
        k = t.i + 2
        while k < n and doc[k].pos_ == "DET":
            k += 1
        if k < n and doc[k].lower_ in PLACE_NOUNS - {"it", "this", "that", "here", "there"}:
            phrases, lo, _ = _backward(doc, t, floor)
            if not phrases:
                return None
            return _object(doc, t, "out of the picture", phrases, lo, k + 1)
    return None


def far_from_any(doc, t, floor):
    """"far from any road": the road is not there."""
    n = len(doc)
    if t.lower_ == "far" and t.i + 2 < n and doc[t.i + 1].lower_ == "from" and doc[t.i + 2].lower_ in (
            "any", "anything", "anyone", "anybody"):
        phrases, _ = _forward(doc, t.i + 2, n, in_pp=True)
        return _object(doc, t, "far from any", phrases, t.i, t.i + 2)
    return None


def predicate_not(doc, t, floor):
    """"not"/"n't"/"never" negating a predicate of a subject: an action ("a horse not galloping", "a cow that is
    not grazing", "the clock isn't ticking"), a state ("a lamp not switched on", "a rope not being pulled"), an
    attribute ("a street not full of bikes", "a mailbox that is not red") or a relation ("a cup not on the
    shelf"), after copulas, auxiliaries, relative pronouns and commas. Verbs and adjectives of presence ("not
    present", "does not show", "is not in the picture") and a noun after the cue ("not a dog") stay with the
    object rules."""
    if t.lower_ not in NEG_WORDS or t.dep_ != "neg":
        return None
    n = len(doc)
    k = t.i + 1
    if k < n and doc[k].lower_ in NOT_AFTER:  # "not only", "not quite", "not just": the object rules' business
        return None
    if k < n and (doc[k].pos_ in ("DET", "NUM", "PRON") or doc[k].pos_ in NOUNISH):
        return None
    h = t.head
    if h.dep_ in ("aux", "auxpass") and h.head.i > t.i and h.head.tag_[:2] == "VB":
        h = h.head  # "a person who isn't snowboarding": the parser may hang the cue on the auxiliary
    if any(c.dep_ == "expl" for c in h.children):
        return None
    pred = None
    if h.lower_ in BE or _lemma(h.lower_) == "be":  # a copula: its complement after the cue is the predicate
        comps = [c for c in h.children if c.i > t.i and c.dep_ in ("acomp", "prep", "oprd", "advmod", "attr")]
        if not comps:
            return None
        c = comps[0]
        if c.dep_ == "attr" or c.lower_ in PRESENT_WORDS or c.lower_ in COMPARE:
            return None
        if c.dep_ == "prep":
            pobj = [x for x in c.children if x.dep_ == "pobj"]
            if not pobj or pobj[0].lower_ in PLACE_NOUNS:
                return None
        pred, subj_head = c, h
    elif h.tag_[:2] == "VB" or h.pos_ in ("ADJ", "ADP"):
        if _lemma(h.lower_) in COGNITION or h.lower_ in COGNITION:
            return _raised(doc, t, h, floor)
        attribute = h.lower_ == "empty" and not any(c.dep_ == "prep" for c in h.children)  # "a mug, not empty"
        if _present_like(h) or h.lower_ in COMPARE or (h.lower_ in CUE_HEADS and not attribute):
            return None
        if h.lower_ in COMPARE_VERBS and h.i + 1 < n and doc[h.i + 1].lower_ in COMPARE:
            return None
        if h.pos_ == "ADP":
            pobj = [x for x in h.children if x.dep_ == "pobj"]
            if not pobj or pobj[0].lower_ in PLACE_NOUNS:
                return None
        if h.i < t.i:  # "a dog that does not" ... the head must follow the cue
            return None
        pred, subj_head = h, h
    elif h.pos_ in NOUNISH and h.i < t.i and k < n and doc[k].head.i == h.i and doc[k].pos_ in ("ADJ", "VERB") \
            and doc[k].dep_ in ("amod", "acl", "appos", "conj") and not _present_like(doc[k]):
        pred, subj_head = doc[k], doc[k]  # "an old barn, not red": the cue and the attribute both hang on the noun
    elif h.pos_ == "ADV" and h.i > t.i:
        top = h
        while top.head.pos_ == "ADV" and top.head.i > top.i:
            top = top.head  # "not upside down": the cue on "upside", which modifies "down"
        if top.dep_ == "advmod" and top.head.pos_ in NOUNISH and top.head.i < t.i and not _present_like(top) \
                and top.lower_ not in PRESENT_WORDS:
            pred, subj_head = top, top  # the state hangs on the noun before the cue
        elif _described(doc, top, t) is not None and not _present_like(top) and top.lower_ not in PRESENT_WORDS:
            pred, subj_head = top, top  # "a hippo, upright but not upside down", "a boat which is upright, not ..."
    if pred is None:
        return None
    subj = _subject(doc, subj_head)
    if subj is None:
        subj = _described(doc, pred, t)
    if subj is not None and subj.lower_ in ("nothing", "none", "nobody"):
        return None
    if subj is not None and subj.lower_ in EMPTY_SUBJECTS:
        subj = None
    clause_lo = t.i
    if subj_head.dep_ in ("relcl", "acl") and subj is not None and subj.i < subj_head.i:
        clause_lo = min(x.i for x in subj_head.subtree)
    return _predicate(doc, t, pred, k, subj, clause_lo, floor,
                      cue_text={"nt": "n't"}.get(t.lower_, t.lower_.replace("\u2019", "'")),
                      subj_text=_fragment_subject(doc, t) if subj is None else None)


def _described(doc, pred, t):
    """The subject a state after the cue describes when it hangs on another state rather than on its noun: "a dog,
    asleep but not hungry" ("hungry" a conjunct of "asleep", which modifies "dog"), "a boat which is upright and
    not upside down" ("down" a modifier of the copula), "a fire engine, upright, not upside down". Walks up from
    ``pred`` through conjuncts and modifiers (at most four steps) to a noun before the cue, or to a verb or copula
    before it and that one's subject; None when there is none."""
    x = pred
    for _ in range(4):
        h = x.head
        if h.i == x.i or x.dep_ not in WALK_DEPS:
            return None
        if h.i < t.i and h.pos_ in NOUNISH:
            return h
        if h.i < t.i and h.pos_ in ("VERB", "AUX"):
            return _subject(doc, h)
        x = h
    return None


def _fragment_subject(doc, t) -> str | None:
    """The subject of "X, not Y" when the parser found none (a caption fragment; the small pipeline often
    reads its noun as a modifier of Y, as in "a kitten, not asleep"): the short phrase between the clause
    start and the comma before the cue, without determiners (None when there is no such comma or phrase)."""
    if t.i < 2 or doc[t.i - 1].text != ",":
        return None
    j = t.i - 2
    while j > 0 and not doc[j - 1].is_punct:  # back to the start of the clause before the comma
        j -= 1
    left = [x for x in doc[j:t.i - 1] if x.pos_ != "DET"]
    if not 1 <= len(left) <= 4 or any(x.pos_ in ("VERB", "AUX", "ADP", "CCONJ", "SCONJ") for x in left):
        return None
    return " ".join(x.text for x in left)


def _raised(doc, t, h, floor):
    """A negation raised over a verb of thinking: "I don't think there is a dog" is "there is no dog", "I don't
    think the dog is sleeping" is "the dog is not sleeping"; without a clause after the verb: not this family."""
    comp = [c for c in h.children if c.dep_ == "ccomp" and c.i > t.i]
    if not comp:
        return None
    v = comp[0]
    n = len(doc)
    if any(c.dep_ == "expl" for c in v.children):
        nouns = [c for c in v.children if c.dep_ in ("attr", "nsubj", "dobj") and c.i > v.i]
        if not nouns:
            return None
        k = min(x.i for x in nouns[0].subtree)
        phrases, _ = _forward(doc, k, n)
        return _object(doc, t, t.lower_.replace("\u2019", "'"), phrases, min(x.i for x in h.subtree), k)
    subj = [c for c in v.children if c.dep_ in ("nsubj", "nsubjpass")]
    if not subj or v.lower_ in BE and not [c for c in v.children if c.dep_ in ("acomp", "prep") and c.i > v.i]:
        return None
    if _present_like(v) or v.lower_ in BE:
        comps = [c for c in v.children if c.dep_ in ("acomp", "prep") and c.i > v.i]
        if not comps or _present_like(comps[0]):
            np_ = _subject_np(doc, subj[0])
            return _object(doc, t, t.lower_.replace("\u2019", "'"), [np_] if np_ else [],
                           min(x.i for x in h.subtree), v.i + 1)
        v = comps[0]
    start = v.i
    while start > subj[0].i + 1 and doc[start - 1].pos_ == "AUX" and doc[start - 1].lower_ not in BE:
        start -= 1
    return _predicate(doc, t, v, start, subj[0], min(x.i for x in h.subtree), floor,
                      cue_text=t.lower_.replace("\u2019", "'"), keep_subject=False)


#: The families, in the order the analyser tries them on each token.
FAMILIES: tuple[Family, ...] = (
    Family("number-abbreviation", "not a cue: 'no.' before a numeral ('room no. 7')", number_abbreviation,
           frozenset({"no", "no.", "nos", "nos."})),
    Family("litotes", "not a cue: 'not bad', 'not unlike X', 'not uncommon'", litotes, NEG_WORDS),
    Family("comparison", "nothing like / resembling / similar to X, not like X -> object X", comparison,
           NEG_WORDS | {"nothing"}),
    Family("negative-subject", "nobody / no X / none of / not a soul + verb -> predicate", negative_subject,
           NEG_WORDS | {"nobody", "noone", "no-one", "none", "no"}),
    Family("without-gerund", "without + having/using verb -> its object; other gerunds -> predicate",
           without_gerund, frozenset({"without", "w/o"})),
    Family("left-out", "X left out, leaving out X, X out of the picture -> object X", left_out,
           frozenset({"left", "leave", "leaves", "leaving", "out"})),
    Family("far-from-any", "far from any X -> object X", far_from_any, frozenset({"far"})),
    Family("predicate-not", "not / n't / never + action, state, attribute or relation -> predicate",
           predicate_not, NEG_WORDS),
)


def select_families(names: Iterable[str] | None = None) -> tuple[Family, ...]:
    """The families named (all of :data:`FAMILIES` when None), in table order; an unknown name is an
    :class:`~sayno.errors.InputError`."""
    if names is None:
        return FAMILIES
    names = list(names)
    known = {f.name for f in FAMILIES}
    bad = [x for x in names if x not in known]
    if bad:
        raise InputError(f"unknown negation families {bad}; choose from {sorted(known)}")
    return tuple(f for f in FAMILIES if f.name in names)
