"""The training-free peers (sayno.glasses.peers): rclip-style subtraction and concept projection."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from sayno.base.scoring import PlainClip, TextBatch
from sayno.glasses.config import GlassesError
from sayno.glasses.peers import (
    DEFAULT_WEIGHTS,
    PROJECTION,
    SUBTRACTION,
    ConceptProjection,
    Subtraction,
    peers,
    projection_query,
    subtraction_query,
)

D = 16


def _vec(text: str) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(D).astype(np.float32)
    return v / np.linalg.norm(v)


def encoder(texts):
    return np.stack([_vec(t) for t in texts])


def batch(texts):
    return TextBatch(list(texts), encoder(texts))


def test_projection_removes_the_concepts_directions():
    rng = np.random.default_rng(0)
    h = rng.standard_normal(D)
    c = rng.standard_normal((2, D))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = projection_query(h, c, 1.0)
    np.testing.assert_allclose(c @ q, 0.0, atol=1e-6)
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(projection_query(h, np.vstack([c, c[:1]]), 1.0), q, atol=1e-6)  # a repeat adds nothing
    assert np.all(c @ projection_query(h, c, 2.0) * (c @ h) <= 1e-6)  # w > 1: pushed past zero


def test_subtraction_on_hand_made_vectors():
    base, dog = np.array([1.0, 0.0, 0.0]), np.array([[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(subtraction_query(base, dog, 1.0), np.array([1, -1, 0]) / np.sqrt(2))
    np.testing.assert_allclose(subtraction_query(base, dog, 0.0), base)


def test_peers_keep_plain_scores_for_affirmative_captions_and_follow_their_formula():
    images = encoder([f"img{i}" for i in range(5)])
    texts = ["a cat", "a cat but no dog", "a photo of a notebook"]
    plain = PlainClip(100.0).score_matrix(batch(texts), images)
    sub = Subtraction(text_encoder=encoder, logit_scale=100.0, embed_dim=D, weight=0.5)
    pro = ConceptProjection(text_encoder=encoder, logit_scale=100.0, embed_dim=D, weight=1.0)
    for peer in (sub, pro):
        s = peer.score_matrix(batch(texts), images)
        np.testing.assert_array_equal(s[[0, 2]], plain[[0, 2]])  # bit for bit
        np.testing.assert_allclose(peer.score_pairs(batch(texts), images[:3]), np.diagonal(s[:, :3]), rtol=1e-5, atol=1e-5)
    q_sub = subtraction_query(_vec("a cat"), _vec("dog")[None], 0.5)
    np.testing.assert_allclose(sub.score_matrix(batch(texts), images)[1], 100.0 * images @ q_sub, rtol=1e-5)
    q_pro = projection_query(_vec("a cat but no dog"), _vec("dog")[None], 1.0)
    np.testing.assert_allclose(pro.score_matrix(batch(texts), images)[1], 100.0 * images @ q_pro, rtol=1e-5)
    assert abs(float(q_pro @ _vec("dog"))) < 1e-6


def test_registry_and_bad_settings():
    with pytest.raises(GlassesError, match="needs a backbone"):
        Subtraction()
    with pytest.raises(GlassesError, match="weight"):
        Subtraction(text_encoder=encoder, logit_scale=100.0, embed_dim=D, weight=-1.0)
    with pytest.raises(GlassesError, match="unknown peer"):
        peers(None, {"nope": 1.0})
    assert set(DEFAULT_WEIGHTS) == {SUBTRACTION, PROJECTION}


def test_benchmark_rows_include_the_peers(embedded):
    from sayno.eval import runner

    names = [m.name for m in runner.methods_for(embedded, None, training_free_row=True, peer_rows=True)]
    assert names == ["CLIP", SUBTRACTION, PROJECTION, "CLIPGlasses (training-free)"]
    tb = TextBatch(["a beach with no people"], embedded.encode_text(["a beach with no people"]).numpy())
    img = embedded.encode_text(["a beach", "people on a beach"]).numpy()
    for peer in peers(embedded):
        s = peer.score_matrix(tb, img)
        assert s[0, 0] > s[0, 1]  # the beach without people wins (text stand-ins for the two images)


def test_peers_tokenize_each_negated_caption_once_and_only_negated_ones():
    """The peers ask the backbone how much of a caption its encoder reads only for captions with a cue, once each
    while they stay in the memo (the main job scores the same captions in several files)."""
    asked: list[list[str]] = []

    class Reader:
        logit_scale, embed_dim = 100.0, D

        def encode_text(self, texts):
            import torch
            return torch.as_tensor(encoder(list(texts)))

        def text_read_chars(self, texts):
            asked.append(list(texts))
            return [len(t) for t in texts]

    p = Subtraction(Reader())
    texts = ["a dog but no cat", "a red bus", "no umbrella here"]
    images = encoder(["img a", "img b", "img c"])
    first = p.score_pairs(batch(texts), images)
    again = p.score_pairs(batch(texts), images)
    assert asked == [["a dog but no cat", "no umbrella here"]]
    assert np.array_equal(first, again)


def test_peers_share_one_memo_of_texts_and_read_limits():
    """The peers of one backbone embed the same remainders and phrases and read the same captions: ``peers``
    gives them one memo of each, of the asked capacity, so the second peer embeds and tokenizes nothing new."""
    embedded_texts: list[list[str]] = []

    class Reader:
        logit_scale, embed_dim = 100.0, D

        def encode_text(self, texts):
            import torch
            embedded_texts.append(list(texts))
            return torch.as_tensor(encoder(list(texts)))

        def text_read_chars(self, texts):
            return [len(t) for t in texts]

    sub, proj = peers(Reader(), phrase_cache=7)
    assert sub.texts is proj.texts and sub.reading is proj.reading and sub.texts.capacity == 7
    texts = ["a dog but no cat", "a red bus", "no umbrella here"]
    images = encoder(["img a", "img b", "img c"])
    sub.score_pairs(batch(texts), images)
    n = len(embedded_texts)
    proj.score_pairs(batch(texts), images)
    assert n == 1 and len(embedded_texts) == 1  # the projection found every text in the shared memo
    with pytest.raises(GlassesError, match="cannot share"):
        Subtraction(text_encoder=encoder, logit_scale=100.0, embed_dim=D + 1, share_with=sub)
