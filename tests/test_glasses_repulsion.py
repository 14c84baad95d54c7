"""Negated-query scores stay bounded (issue 12, item 5): a repeated negated phrase counts once, a phrase the text
encoder never read is not a slot, and a caption's total lambda is at most ``2 * lambda_max``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_glasses_model import images, random_glasses, text_batch
from test_glasses_shipped import SHIPPED, _scenes

from sayno.glasses import load_glasses
from sayno.glasses.analysis import phrase_key, slot_phrases
from sayno.glasses.scoring import PHRASES_AT_FULL_STRENGTH, bound_lambda
from sayno.negation import Analysis, NegatedPhrase, Negation

ANIMALS = ["cat", "dog", "cow", "pig", "horse", "sheep", "goat", "duck", "owl", "fish", "crab", "bee", "snail",
           "whale", "shark", "tiger", "camel", "zebra", "mouse", "apple", "pear", "peach", "lemon", "melon", "taco",
           "pizza", "egg", "pie", "bus", "car"]


def _analysis(*phrases: tuple[str, int]) -> Analysis:
    ps = tuple(NegatedPhrase(t, "no", False, s, s + len(t)) for t, s in phrases)
    return Analysis("x", (Negation("no", 0, 2, ps, False),), "")


def test_a_repeated_phrase_is_one_slot():
    a = _analysis(("cat", 3), ("Cat", 11), ("cat ", 19), ("dog", 27))
    assert [p.text for p in slot_phrases(a)] == ["cat", "dog"]
    assert phrase_key(" Big  Cat. ") == "big cat"
    g = random_glasses()
    s = g.slots(text_batch(["no cat, no cat, no Cat, no cat", "no cat"]))
    assert s.owner.tolist() == [0, 1] and s.phrases == ["cat", "cat"]


def test_phrases_past_what_the_encoder_read_are_dropped():
    a = _analysis(("cat", 3), ("dog", 40))
    assert [p.text for p in slot_phrases(a, read_chars=40)] == ["cat"]
    assert [p.text for p in slot_phrases(a, read_chars=None)] == ["cat", "dog"]


def test_total_lambda_is_bounded_and_untouched_below_the_bound():
    lam = torch.tensor([1.5, 1.5, 0.5, 1.9, 1.9, 1.9, 1.9])
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 2])
    out = bound_lambda(lam, owner, 4.0)
    torch.testing.assert_close(out[:3], lam[:3])  # totals 3.0 and 0.5: unchanged
    assert float(out[3:].sum()) == pytest.approx(4.0)
    cols = bound_lambda(torch.full((5, 3), 1.9), torch.zeros(5, dtype=torch.long), 4.0)  # (P, K): per image
    torch.testing.assert_close(cols.sum(0), torch.full((3,), 4.0))


def test_a_caption_with_many_phrases_is_bounded():
    g = random_glasses()
    with torch.no_grad():  # lambda near lambda_max for every slot
        g.frame.text[-1].bias.fill_(8.0)
    texts = [", ".join(f"no {a}" for a in ANIMALS), "a cat but no dog", "no dog and no cat"]
    s = g.slots(text_batch(texts))
    limit = PHRASES_AT_FULL_STRENGTH * g.config.lambda_max
    per = torch.zeros(3).index_add_(0, s.owner, s.lam)
    assert float(per[0]) == pytest.approx(limit, rel=1e-5)
    assert float(per[2]) < limit and float(per[2]) == pytest.approx(float(g.frame.lam(s.text_logit)[-2:].sum()))
    for scores in (g.score_matrix(text_batch(texts), images()), g.rerank(text_batch(texts), images(), 3)):
        assert np.isfinite(scores).all()


@pytest.fixture(scope="module")
def shipped(embedded):
    return load_glasses(SHIPPED, embedded)


def test_issue_examples_on_the_shipped_glasses(embedded, shipped):
    """Measured before the fix on the world's test images: "no cat" 52, six times 127, thirty times 641,
    a 1,000-character query 2,424. Now: the repeats score like one phrase (at most its score), 30 distinct
    phrases stay within a few phrases' worth, and text past the context does not count."""
    names = [("dog",), ("cat",), ("cat", "dog"), ("apple",), ("car", "tree"), ("fish",)]
    imgs = embedded.encode_image(_scenes(names, 3)).numpy()
    one = shipped.score(["no cat"], imgs)[0]
    six = ", ".join(["no cat"] * 6)
    thirty = ", ".join(["no cat"] * 30)
    many = ", ".join(f"no {a}" for a in ANIMALS)
    long = ("a dog on a plain background " * 40)[:900] + " but " + ", ".join(f"no {a}" for a in ANIMALS)
    batch = shipped.text_batch([six, thirty, many, long[:1000]])
    slots = shipped.slots(batch)
    assert (slots.owner == 0).sum() == 1 and (slots.owner == 1).sum() == 1  # one slot each
    assert (slots.owner == 3).sum() == 0  # every phrase starts past what the encoder read
    assert float(slots.lam[slots.owner == 2].sum()) <= PHRASES_AT_FULL_STRENGTH * shipped.config.lambda_max + 1e-5
    s = shipped.score_matrix(batch, imgs)
    assert s[:2].max() <= one.max() + 5
    assert s[2].max() <= 2 * one.max()
    plain = embedded.logit_scale * embedded.encode_text([long[:1000]]).numpy() @ imgs.T
    np.testing.assert_allclose(s[3], plain[0], rtol=1e-5, atol=1e-4)  # no slot: plain CLIP
