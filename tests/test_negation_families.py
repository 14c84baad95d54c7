"""sayno.negation.families: one test per construction family (issue 24), with hand-written sentences whose objects
and verbs the emoji world does not use; the family table; switching a family off; the analysis path; the
analyser's input cleaning and byte-bounded cache (issue 29)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("spacy")

from sayno.negation import Analyser, Analysis, NegatedPhrase, Negation, parse
from sayno.negation import analyser as analyser_mod
from sayno.negation.families import FAMILIES, select_families


@pytest.fixture(scope="module")
def nlp():
    try:
        return analyser_mod.load_pipeline()[0]
    except analyser_mod.ParserMissing:
        pytest.skip("no spaCy English pipeline installed")


def read(text: str) -> tuple[list[tuple[str, str]], str]:
    a = parse(text)
    return [(p.kind, p.text) for p in a.phrases], a.affirmative_text


# ----------------------------------------------------------------------------------- predicate negation
@pytest.mark.parametrize("text, phrase, subject, affirmative", [
    # "X not Ying", "X that is not Y", "X which isn't Y", "X is not Y"
    ("a horse not galloping", "horse galloping", "horse", "a horse"),
    ("a cow that is not grazing", "cow grazing", "cow", "a cow"),
    ("a boat which isn't moving", "boat moving", "boat", "a boat"),
    ("a pianist who is not performing", "pianist performing", "pianist", "a pianist"),
    ("the clock is not ticking", "clock ticking", "clock", "the clock"),
    ("a kite that never flies", "kite flies", "kite", "a kite"),
    # states and participles
    ("a lamp not switched on", "lamp switched on", "lamp", "a lamp"),
    ("a rope not being pulled", "rope being pulled", "rope", "a rope"),
    # attributes and relations
    ("a street not full of bikes", "street full of bikes", "street", "a street"),
    ("a cup not on the shelf", "cup on the shelf", "cup", "a cup"),
    ("a jar that is not open", "jar open", "jar", "a jar"),
    ("a bucket that is not under the tap", "bucket under the tap", "bucket", "a bucket"),
    # after a comma
    ("the tram, not crowded", "tram crowded", "tram", "the tram"),
    # fragments whose noun the parser reads as a modifier, or with the cue hanging on the noun
    ("a kitten, not asleep", "kitten asleep", "kitten", "a kitten"),
    ("an old barn, not red", "old barn red", "old barn", "an old barn"),
    ("a crate, not empty", "crate empty", "crate", "a crate"),  # "empty" without "of X" is an attribute
    # a relation right after the noun; adverbs before the predicate are not repelled
    ("a bird not in a cage", "bird in a cage", "bird", "a bird"),
    ("a van that has not yet arrived", "van arrived", "van", "a van"),
    ("two men not looking at the camera", "two men looking at the camera", "two men", "two men"),
    # a state coordinated with one that describes the noun: the subject is found through the first state
    ("a lamp, lit but not broken", "lamp broken", "lamp", "a lamp, lit"),
    ("a door which is open but not locked", "door locked", "door", "a door which is open"),
    ("a bus, parked, not moving", "bus moving", "bus", "a bus, parked"),
    ("a glass, full but not spilled", "glass spilled", "glass", "a glass, full"),
    ("a sailboat which is upright and not upside down", "sailboat upside down", "sailboat",
     "a sailboat which is upright"),
    ("a fire engine, upright, not upside down", "fire engine upside down", "fire engine", "a fire engine, upright"),
])
def test_predicate_not(text, phrase, subject, affirmative):
    a = parse(text)
    (p,) = a.phrases
    assert (p.kind, p.text, p.subject) == ("predicate", phrase, subject), a
    assert a.affirmative_text == affirmative
    assert text[p.start:p.end].lower() == p.predicate  # the span covers the predicate's words


@pytest.mark.parametrize("text, phrase", [
    ("nobody is swimming in the pool", "person swimming in the pool"),
    ("no one is sweeping the floor", "person sweeping the floor"),
    ("no cow is lying down", "cow lying down"),
    ("not a soul is walking on the bridge", "person walking on the bridge"),
    ("not anyone is knocking", "person knocking"),
    ("none of the pigeons are flying", "pigeons flying"),
    ("there isn't anyone jogging on the track", "person jogging on the track"),
    ("no goose is being fed", "goose being fed"),
])
def test_negative_quantifier_subjects(text, phrase):
    a = parse(text)
    assert [(p.kind, p.text) for p in a.phrases] == [("predicate", phrase)], a
    assert a.affirmative_text == ""  # the quantified subject is part of the negation


def test_relative_clause_with_a_negative_subject_keeps_the_noun_it_describes():
    a = parse("a sofa that nobody is sitting on")
    (p,) = a.phrases
    assert p.kind == "predicate" and p.subject == "person" and "sitting on" in p.text and "sofa" in p.text
    assert a.affirmative_text == "a sofa"


@pytest.mark.parametrize("text", ["No one is on the bench.", "no dog can be seen", "nobody is visible",
                                  "No people are in the room."])
def test_a_negative_subject_of_a_copula_or_presence_verb_stays_an_absent_object(text):
    a = parse(text)
    assert a.phrases and all(p.kind == "object" for p in a.phrases), a


@pytest.mark.parametrize("text, expected", [
    ("A bicycle is not included in this image.", "bicycle"),
    ("the kettle is not visible", "kettle"),
    ("The photo does not feature a bench.", "bench"),
    ("the mop is not in the picture", "mop"),
])
def test_presence_predicates_stay_object_negations(text, expected):
    assert read(text)[0] == [("object", expected)]


# ------------------------------------------------------------------------------------ object families
@pytest.mark.parametrize("text, objects", [
    # quantified objects
    ("not one cushion on the couch", ["cushion"]),
    ("a desk with not a single pen", ["pen"]),
    ("zero kites in the sky", ["kites"]),
    ("none of the candles", ["candles"]),
    # negative comparison
    ("a fox and nothing that looks like a hen", ["hen"]),
    ("a rock that looks nothing like a skull", ["skull"]),
    ("nothing resembling a cake", ["cake"]),
    ("a wall not similar to a fence", ["fence"]),
    ("a cloud that does not look like a sheep", ["sheep"]),
    # verbs and adjectives of absence, active and passive
    ("a table lacking a cloth", ["cloth"]),
    ("a garden missing its gate", ["gate"]),
    ("a photo that omits the moon", ["moon"]),
    ("the statue was excluded from the exhibit", ["statue"]),
    ("a shelf with the vase left out", ["vase"]),
    ("a valley with the barn left out", ["barn"]),
    ("a collage leaving out the sun", ["sun"]),
    ("the toaster is missing from the counter", ["toaster"]),
    ("a room where the lamp is absent", ["lamp"]),
    ("a park with the swings gone", ["swings"]),
    ("a porch with the cat out of the picture", ["cat"]),
    # without + a verb of having or using
    ("a desk, without using a laptop", ["laptop"]),
    ("a baker without wearing an apron", ["apron"]),
    # light nouns only before of/to
    ("a field with no signs", ["signs"]),
    ("no hint of snow", ["snow"]),
    ("a room with no trace of smoke", ["smoke"]),
    ("no reference to a ship", ["ship"]),
    # coordination inside the scope
    ("no scarf, gloves or boots", ["scarf", "gloves", "boots"]),
    ("no snow or skiing", ["snow", "skiing"]),
    ("a rink with no ice or skating", ["ice", "skating"]),
    # existentials with trailing words
    ("there is no kettle nearby", ["kettle"]),
    ("there are no cups about", ["cups"]),
    ("there's no broom in view", ["broom"]),
    # implicit negation words
    ("a hut far from any river", ["river"]),
    ("a treeless plain", ["tree"]),
    ("a kitchen free of clutter", ["clutter"]),
])
def test_object_families(text, objects):
    phrases, affirmative = read(text)
    assert phrases == [("object", o) for o in objects], (text, phrases)
    for o in objects:
        assert o not in affirmative.lower().split(), (text, affirmative)


@pytest.mark.parametrize("text, kind, phrase", [
    ("I don't think there is a kettle here", "object", "kettle"),
    ("I do not believe the lamp is on", "predicate", "lamp on"),
    ("we don't think the parrot is sleeping", "predicate", "parrot sleeping"),
    ("not without a ladder", "object", "ladder"),  # double negation is not resolved
])
def test_negation_raised_over_thinking_and_double_negation(text, kind, phrase):
    assert read(text)[0] == [(kind, phrase)]


@pytest.mark.parametrize("text, phrase, affirmative", [
    ("a jogger without smiling", "jogger smiling", "a jogger"),
    ("a clerk typing without looking at the keyboard", "clerk looking at the keyboard", "a clerk typing"),
])
def test_without_and_a_gerund_of_an_action_is_a_predicate(text, phrase, affirmative):
    a = parse(text)
    assert [(p.kind, p.text) for p in a.phrases] == [("predicate", phrase)]
    assert a.affirmative_text == affirmative


@pytest.mark.parametrize("text", [
    "room no. 7 on the door",
    "platform no. 3 at the station",
    'a "No Parking" sign by the curb',
    "a 'No Entry' notice",
    "not only a bowl but also a spoon",
    "no doubt a goose on the lawn",
    "the weather is not bad",
    "a shed that is not too shabby",
    "a flag that is not unlike a banner",
    "a crowd that is not uncommon here",
    "a bench that is not unoccupied",
    # a negated absence word is a double negative: the thing is there
    "the key is not missing",
    "a wallet that isn't gone",
    "the bus stop is not absent",
    "a toolbox not lacking a hammer",
])
def test_not_a_cue(text):
    a = parse(text)
    assert not a.negated and a.phrases == () and a.path == "none", a
    assert a.affirmative_text == text


# -------------------------------------------------------------------------------------------- the table
def test_family_table_and_switching_a_family_off(nlp):
    names = [f.name for f in FAMILIES]
    assert len(set(names)) == len(names) and all(f.description and f.triggers for f in FAMILIES)
    text = "a horse not galloping"
    on = Analyser(nlp=nlp).parse(text)
    off = Analyser(nlp=nlp, families=[n for n in names if n != "predicate-not"]).parse(text)
    assert on.phrases[0].kind == "predicate" and off.path == "fallback"
    assert Analyser(nlp=nlp, families=[]).parse("room no. 7").negated  # only the family reads "no." right
    assert select_families(None) == FAMILIES
    with pytest.raises(analyser_mod.SaynoError):
        select_families(["no-such-family"])


@pytest.mark.parametrize("name, text", [
    ("predicate-not", "a kettle that isn't boiling"),
    ("negative-subject", "nobody is rowing"),
    ("without-gerund", "a toddler without crying"),
    ("comparison", "nothing like a whale"),
    ("left-out", "the windmill left out"),
    ("far-from-any", "far from any road"),
    ("number-abbreviation", "gate no. 4"),
    ("litotes", "a bench that is not unoccupied"),
])
def test_each_family_reads_its_own_construction(nlp, name, text):
    with_it = Analyser(nlp=nlp, cache_size=0).parse(text)
    without = Analyser(nlp=nlp, cache_size=0, families=[f.name for f in FAMILIES if f.name != name]).parse(text)
    assert with_it != without or with_it.to_dict() != without.to_dict(), (name, with_it)


# ----------------------------------------------------------------------------------- path, JSON, cache
def test_path_and_json_show_the_kind(nlp):
    an = Analyser(nlp=nlp)
    assert an.parse("a cat but no dog").path == "parse"
    assert an.parse("it is not").path == "fallback"
    assert an.parse("a cat").path == "none"
    d = an.parse("a horse not galloping").to_dict()
    assert d["path"] == "parse"
    assert d["phrases"][0]["kind"] == "predicate" and d["phrases"][0]["subject"] == "horse"
    assert d["phrases"][0]["predicate"] == "galloping" and d["phrases"][0]["repel"] == "horse galloping"
    assert an.parse("no dog").to_dict()["phrases"][0]["kind"] == "object"
    again = Analysis.from_dict(json.loads(json.dumps(d)))
    assert again == an.parse("a horse not galloping")


def test_disk_cache_keeps_the_kind(nlp, tmp_path):
    first = Analyser(nlp=nlp, cache_dir=tmp_path).parse("a cup not on the shelf")
    second = Analyser(nlp=nlp, cache_dir=tmp_path)
    again = second.parse("a cup not on the shelf")
    assert second.stats["disk_hits"] == 1 and again == first and again.phrases[0].kind == "predicate"


@pytest.mark.parametrize("text", ["no \udcff spider", "\ud800", "no dog\x00 here", "\udc80\udc80 no cat"])
def test_invalid_code_points_are_replaced_before_the_parser(nlp, text):
    a = Analyser(nlp=nlp, cache_size=0).parse(text)
    assert len(a.text) == len(text) and not any(0xD800 <= ord(c) <= 0xDFFF for c in a.text)
    json.dumps(a.to_dict(), ensure_ascii=False).encode("utf-8")  # printable as UTF-8
    if "spider" in text:
        assert [p.text for p in a.phrases] == ["spider"]


def test_module_parse_of_a_lone_surrogate():
    assert parse("\ud800").text == "\ufffd"


def test_cli_with_invalid_utf8_argument():
    import typer
    from typer.testing import CliRunner

    from sayno.negation.cli import register

    app = typer.Typer()
    register(app)

    @app.command("other")
    def _other() -> None:
        pass

    res = CliRunner().invoke(app, ["negation", "no \udcff spider", "a horse not galloping", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data[0]["phrases"][0]["text"] == "spider"
    assert data[1]["phrases"][0]["kind"] == "predicate"
    res = CliRunner().invoke(app, ["negation", "a horse not galloping"])
    assert res.exit_code == 0 and "predicate" in res.output


def test_cache_is_bounded_in_bytes():
    """Long texts fill the cache by bytes long before its count cap (issue 29: 1,000-character queries)."""
    import tracemalloc

    an = Analyser(parser="rules", cache_size=65536, cache_bytes=2**20)
    phrase = NegatedPhrase("dog", "no", False, 3, 6)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(2000):
        text = f"{i:05d} no dog " + "x" * 1000
        an._remember(text, Analysis(text, (Negation("no", 6, 8, (phrase,), False, (6, 12)),), text[12:]))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert an._mem_bytes <= 2**20
    assert 100 < len(an._mem) < 2000  # evicted by bytes, not by count
    assert held <= 2 * 2**20, held  # the estimate is close to what the entries really hold
    an._remember("y" * 10, Analysis("y" * 10, (), "y" * 10))
    assert "y" * 10 in an._mem  # the newest entry stays


def test_an_entry_larger_than_the_budget_is_not_kept():
    an = Analyser(parser="rules", cache_bytes=1000)
    a = an.parse("no dog " * 100)
    assert a.negated and len(an._mem) == 0 and an._mem_bytes == 0


def test_vocabulary_reads_predicate_phrases():
    from sayno.negation import ObjectVocabulary

    v = ObjectVocabulary.from_names(["horse", "cow", "shelf", "cup"])
    assert v.affirmed("a horse not galloping") == ["horse"]  # the horse is there, only not galloping
    assert v.negated("a horse not galloping") == [[]]
    assert v.negated("no cow is lying down") == [["cow"]] and v.affirmed("no cow is lying down") == []
    assert v.affirmed("a cup not on the shelf") == ["cup"] and v.negated("a cup not on the shelf") == [[]]
    assert v.affirmed("a cup but no horse") == ["cup"] and v.negated("a cup but no horse") == [["horse"]]
