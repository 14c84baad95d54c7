"""Held-out sentences for the negation analyser (issue 24).

Written before the family rules were developed and not looked at while developing them; run once at the end and
its score reported in docs/RESULTS.md. Objects and verbs are ones the emoji world does not use. Each row:
(text, negated, kind of the phrase holding ``head``, head word that must be inside a negated phrase, words that
must be gone from the affirmative text, words that must stay in it). ``negated`` False rows are not-a-cue cases
and affirmative captions: no phrase may be found.
"""

from __future__ import annotations

import pytest

HELD_OUT = [
    # predicate after copulas, auxiliaries, relative clauses, commas, participles
    ("a kayak not drifting on the lake", True, "predicate", "drifting", ["drifting"], ["kayak"]),
    ("a blacksmith who is not hammering", True, "predicate", "hammering", ["hammering"], ["blacksmith"]),
    ("a lighthouse that isn't lit", True, "predicate", "lit", ["lit"], ["lighthouse"]),
    ("an accordion which is not being played", True, "predicate", "played", ["played"], ["accordion"]),
    ("the wheelbarrow, not overturned", True, "predicate", "overturned", ["overturned"], ["wheelbarrow"]),
    ("a violinist not wearing a tuxedo", True, "predicate", "tuxedo", ["tuxedo"], ["violinist"]),
    ("a ferry that was not docked at the pier", True, "predicate", "docked", ["docked", "pier"], ["ferry"]),
    ("the trombone player isn't smiling", True, "predicate", "smiling", ["smiling"], ["trombone"]),
    ("a canoe not tied to the dock", True, "predicate", "tied", ["tied", "dock"], ["canoe"]),
    ("an umbrella that is not folded", True, "predicate", "folded", ["folded"], ["umbrella"]),
    ("a llama not chewing", True, "predicate", "chewing", ["chewing"], ["llama"]),
    ("a vase not on the windowsill", True, "predicate", "windowsill", ["windowsill"], ["vase"]),
    ("a barn not full of hay", True, "predicate", "hay", ["full", "hay"], ["barn"]),
    ("a kettle that isn't boiling", True, "predicate", "boiling", ["boiling"], ["kettle"]),
    ("a ladder not leaning against the wall", True, "predicate", "leaning", ["leaning", "wall"], ["ladder"]),
    ("a mailbox that is not red", True, "predicate", "red", ["red"], ["mailbox"]),
    # negative-quantifier subjects with a verb
    ("nobody is rowing the boat", True, "predicate", "rowing", ["rowing"], []),
    ("no one is climbing the ladder", True, "predicate", "climbing", ["climbing", "ladder"], []),
    ("not a soul is strolling along the pier", True, "predicate", "strolling", ["strolling"], []),
    ("no gardener is watering the roses", True, "predicate", "watering", ["watering", "roses"], []),
    ("a bench that nobody is sitting on", True, "predicate", "sitting", ["sitting"], ["bench"]),
    ("none of the sheep are grazing", True, "predicate", "grazing", ["grazing"], []),
    ("there isn't anyone paddling in the canal", True, "predicate", "paddling", ["paddling"], []),
    # quantified object negation
    ("a shelf with not one book on it", True, "object", "book", ["book"], ["shelf"]),
    ("a parking lot with not a single truck", True, "object", "truck", ["truck"], ["parking"]),
    ("zero pedestrians on the bridge", True, "object", "pedestrians", ["pedestrians"], []),
    ("a harbour with none of the yachts", True, "object", "yachts", ["yachts"], ["harbour"]),
    # negative comparison
    ("a cloud that looks nothing like a whale", True, "object", "whale", ["whale"], ["cloud"]),
    ("a sculpture that is nothing like a giraffe", True, "object", "giraffe", ["giraffe"], ["sculpture"]),
    ("a tower resembling nothing like a rocket", True, "object", "rocket", ["rocket"], ["tower"]),
    # verbs and adjectives of absence and exclusion
    ("a bicycle lacking pedals", True, "object", "pedals", ["pedals"], ["bicycle"]),
    ("a piano missing its keys", True, "object", "keys", ["keys"], ["piano"]),
    ("a bouquet that excludes tulips", True, "object", "tulips", ["tulips"], ["bouquet"]),
    ("a landscape with the windmill left out", True, "object", "windmill", ["windmill"], ["landscape"]),
    ("a hallway where the painting is absent", True, "object", "painting", ["painting"], ["hallway"]),
    ("the trophy is missing from the cabinet", True, "object", "trophy", ["trophy"], []),
    ("a cabin with its chimney gone", True, "object", "chimney", ["chimney"], ["cabin"]),
    ("a stage with the drummer out of the picture", True, "object", "drummer", ["drummer"], ["stage"]),
    ("tulips are excluded from the arrangement", True, "object", "tulips", ["tulips"], []),
    ("a scarecrow lacks a hat", True, "object", "hat", ["hat"], ["scarecrow"]),
    # without + gerund / noun
    ("a carpenter without using a saw", True, "object", "saw", ["saw", "using"], ["carpenter"]),
    ("a toddler without crying", True, "predicate", "crying", ["crying"], ["toddler"]),
    ("a waiter walking without carrying a tray", True, "object", "tray", ["tray"], ["waiter"]),
    ("a dancer without shoes", True, "object", "shoes", ["shoes"], ["dancer"]),
    # light nouns followed by of/to, or alone
    ("a meadow with no trace of sheep", True, "object", "sheep", ["sheep"], ["meadow"]),
    ("no hint of fog over the valley", True, "object", "fog", ["fog"], []),
    ("a beach with no signs", True, "object", "signs", ["signs"], ["beach"]),
    ("a road with no indication of traffic", True, "object", "traffic", ["traffic"], ["road"]),
    ("no evidence of rain on the pavement", True, "object", "rain", ["rain"], []),
    # coordination inside the scope
    ("a porch with no lantern, rug or chairs", True, "object", "chairs", ["lantern", "rug", "chairs"], ["porch"]),
    ("a hill with no snow or sledding", True, "object", "snow", ["snow", "sledding"], ["hill"]),
    ("no anchors and no ropes on the deck", True, "object", "ropes", ["anchors", "ropes"], []),
    # existentials with trailing words
    ("there is no ladder nearby", True, "object", "ladder", ["ladder"], []),
    ("there are no seagulls around", True, "object", "seagulls", ["seagulls"], []),
    ("there's no tractor in view", True, "object", "tractor", ["tractor"], []),
    # implicit negation words
    ("a cottage far from any road", True, "object", "road", ["road"], ["cottage"]),
    ("a leafless oak", True, "object", "lea", ["leafless"], ["oak"]),
    ("a beach free of litter", True, "object", "litter", ["litter"], ["beach"]),
    ("a cloudless sky over the desert", True, "object", "cloud", ["cloudless"], ["sky"]),
    ("a hatless farmer", True, "object", "hat", ["hatless"], ["farmer"]),
    # object negations with a verb inside the scope
    ("a pond and nothing that looks like a duck", True, "object", "duck", ["duck"], ["pond"]),
    ("a bridge with no cables", True, "object", "cables", ["cables"], ["bridge"]),
    # not a cue
    ("apartment no. 12 beside the stairwell", False, None, None, [], ["apartment", "stairwell"]),
    ('a sign reading "No Fishing" by the pond', False, None, None, [], ["sign", "pond"]),
    ("not only a goat but also a donkey", False, None, None, [], ["goat", "donkey"]),
    ("no doubt a heron by the river", False, None, None, [], ["heron"]),
    ("the soup is not bad", False, None, None, [], ["soup"]),
    ("a yellow 'No Entry' sign on a pole", False, None, None, [], ["sign"]),
    ("gate no. 4 at the terminal", False, None, None, [], ["gate"]),
    # affirmative captions
    ("a lighthouse on a rocky cape at dusk", False, None, None, [], ["lighthouse"]),
    ("a knotted rope hanging from a beam", False, None, None, [], ["rope"]),
    ("notebooks stacked on a desk", False, None, None, [], ["notebooks"]),
    ("a nomad riding a camel", False, None, None, [], ["camel"]),
]


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'") for w in text.lower().split()}


def check(row, analysis) -> bool:
    """Whether one held-out row is read right."""
    _text, negated, kind, head, gone, kept = row
    aff = _words(analysis.affirmative_text)
    if any(k not in aff for k in kept):
        return False
    if not negated:
        return not analysis.phrases
    holding = [p for p in analysis.phrases if head in p.text.lower()]
    if not holding or all(getattr(p, "kind", "object") != kind for p in holding):
        return False
    return not any(g in aff for g in gone)


def held_out_score(analyser) -> tuple[float, list[str]]:
    """Fraction of held-out rows read right, and the texts read wrong."""
    res = analyser.parse_many([r[0] for r in HELD_OUT])
    wrong = [r[0] for r, a in zip(HELD_OUT, res) if not check(r, a)]
    return 1 - len(wrong) / len(HELD_OUT), wrong


def test_held_out_sentences():
    pytest.importorskip("spacy")
    from sayno.negation import default_analyser

    score, wrong = held_out_score(default_analyser())
    # the bar was set before development: the "found >= 90%" target, lowered to 80% for a set that mixes
    # every family and the not-a-cue cases
    assert score >= 0.8, (score, wrong)
