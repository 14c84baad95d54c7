"""The lexical negation detector: cues, scopes, hedges, bad input."""

import numpy as np
import pytest

from sayno.glasses.lexical import ObjectVocabulary, analyse, article_prompt, is_negated


def phrases(text: str) -> list[str]:
    return [p.text for p in analyse(text).phrases]


@pytest.mark.parametrize("text, expected", [
    ("a cat but no dog", ["dog"]),
    ("no dog", ["dog"]),
    ("without a dog", ["dog"]),
    ("without any dogs", ["dogs"]),
    ("not a single dog in sight", ["dog"]),
    ("the dog is absent", ["dog"]),
    ("there isn't any dog", ["dog"]),
    ("there is no dog here", ["dog"]),
    ("an image with no dog in it", ["dog"]),
    ("lacking a dog", ["dog"]),
    ("free of dogs", ["dogs"]),
    ("the dog is not there", ["dog"]),
    ("a cat; the dog isn't there", ["dog"]),
    ("no sign of a dog", ["dog"]),
    ("a dog is missing", ["dog"]),
    ("a cat and a hot dog, without a t-shirt", ["t-shirt"]),
    ("A Cat But NO Dog", ["dog"]),
    ("a cat, but the dog isn\u2019t here", ["dog"]),  # curly apostrophe
])
def test_cue_scopes(text, expected):
    assert phrases(text) == expected
    assert is_negated(text)


@pytest.mark.parametrize("text, expected", [
    ("no dog and no cat", ["dog", "cat"]),
    ("neither a dog nor a cat", ["dog", "cat"]),
    ("without a dog or a cat", ["dog", "cat"]),
    ("two apples but neither a dog nor a cat", ["dog", "cat"]),
    ("a cow without a dog, and no cat", ["dog", "cat"]),
])
def test_several_negations_give_one_phrase_each(text, expected):
    assert phrases(text) == expected


@pytest.mark.parametrize("text", ["a notebook", "a snowman", "a knot on a piano", "nothingness", "a cannon",
                                  "a nordic noodle", "a photo of a dog", "Notre-Dame"])
def test_negation_words_inside_other_words_are_not_cues(text):
    a = analyse(text)
    assert not a.negated and a.phrases == ()


@pytest.mark.parametrize("text", ["no", "No.", "nothing here", "not", "it is not", "never"])
def test_cue_without_object_negates_but_has_no_phrase(text):
    a = analyse(text)
    assert a.negated
    assert a.phrases == ()


@pytest.mark.parametrize("text", ["", "   ", "un chien sans chat", "kein Hund", "\u72ac\u304c\u3044\u306a\u3044",
                                  "\U0001f436", "1234", "!!!"])
def test_non_english_and_empty_text_find_no_cue(text):
    a = analyse(text)
    assert not a.negated and a.phrases == () and not a.hedged


def test_non_string_input_is_empty():
    assert not analyse(None).negated  # type: ignore[arg-type]


@pytest.mark.parametrize("text, hedged", [
    ("probably no dog", True),
    ("a cat, maybe without a dog", True),
    ("there might be no dog", True),
    ("a cat and likely no dog", True),
    ("a cat but no dog", False),
    ("probably a cat, but no dog", False),  # the hedge belongs to another clause
])
def test_hedges(text, hedged):
    a = analyse(text)
    assert a.hedged is hedged
    assert all(p.hedged is hedged for p in a.phrases)


@pytest.mark.parametrize("text, expected", [
    ("a cat but no dog", "a cat"),
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
    ("a photo of a cat", "a photo of a cat"),
    ("a notebook", "a notebook"),
])
def test_affirmative_remainder(text, expected):
    assert analyse(text).affirmative_text == expected


def test_cue_spans_point_into_the_original_text():
    text = "A cat, but NO dog"
    (neg,) = analyse(text).negations
    assert text[neg.start:neg.end] == "NO" and neg.cue == "no"


def test_vocabulary_prefers_longest_match_and_plurals():
    v = ObjectVocabulary.from_names(["dog", "hot dog", "mouse", "cherry"], {"mouse": "mice"})
    assert v.find("a hot dog and two dogs") == ["hot dog", "dog"]
    assert v.find("three mice, two cherries") == ["mouse", "cherry"]
    assert v.find("a hotdog") == []
    assert v.affirmed("a hot dog but no dog") == ["hot dog"]
    assert v.negated("no dog and no mice") == [["dog"], ["mouse"]]


def test_article_prompt():
    assert article_prompt("This image shows {}.", "apple") == "This image shows an apple."
    assert article_prompt("This image shows {}.", "dog") == "This image shows a dog."


def test_every_world_caption_pattern_is_understood():
    """The world's own generators: the detector finds exactly the labelled negated objects and hedges."""
    from sayno.world.build import group_captions, sample_group
    from sayno.world.concepts import load_concepts, pretrain_concepts

    concepts = pretrain_concepts()
    vocab = ObjectVocabulary.from_names([c.name for c in load_concepts()],
                                        {c.name: c.plural for c in load_concepts()})
    rng = np.random.default_rng(0)
    n = 0
    for gid in range(150):
        g = sample_group(gid, rng, concepts, 64)
        for _, cap, _ in group_captions(g, rng, 0.25):
            found = [o for objs in vocab.negated(cap.text) for o in objs]
            assert sorted(found) == sorted(cap.negated), cap.text
            assert analyse(cap.text).negated == bool(cap.negated), cap.text
            assert analyse(cap.text).hedged == cap.hedged, cap.text
            n += 1
    assert n == 1500


def test_affirmative_text_is_computed_once_per_analysis():
    """Scoring asks every negated caption for its affirmative part: it is cached on the (cached) analysis,
    and the cache changes neither the value nor the analysis' equality and hash."""
    a = analyse("a cat but probably no dog")
    first = a.affirmative_text
    assert first == "a cat"
    assert a.affirmative_text is first
    assert analyse("a cat but probably no dog") is a
    fresh = analyse.__wrapped__("a cat but probably no dog")
    assert fresh == a and hash(fresh) == hash(a)
    assert fresh.affirmative_text == first
