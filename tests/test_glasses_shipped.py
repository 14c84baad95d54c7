"""The shipped CLIPGlasses for the embedded CLIP, through the plain Python API (Glasses.score)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sayno.glasses import load_glasses
from sayno.world import get_style, load_concepts, make_scene, render_scene

SHIPPED = Path(__file__).resolve().parent.parent / "sayno" / "weights" / "glasses-embedded.safetensors"


@pytest.fixture(scope="module")
def clip(embedded):
    return embedded


@pytest.fixture(scope="module")
def glasses(clip):
    return load_glasses(SHIPPED, clip)


def _scenes(pairs: list[tuple[str, ...]], seed: int) -> list:
    by_name = {c.name: c for c in load_concepts()}
    rng = np.random.default_rng([seed, 777])
    style = get_style("openmoji")
    return [render_scene(make_scene(tuple((by_name[n], 1) for n in names), rng, 64), style) for names in pairs]


def test_score_matches_the_scorer_and_keeps_affirmative_rows(clip, glasses):
    images = clip.encode_image(_scenes([("cat",), ("cat", "dog"), ("apple",)], 0)).numpy()
    texts = ["a cat but no dog", "a cat and a dog", "an apple"]
    s = glasses.score(texts, images)
    assert s.shape == (3, 3)
    np.testing.assert_allclose(s, glasses.score_matrix(glasses.text_batch(texts), images), rtol=1e-6)
    plain = clip.logit_scale * clip.encode_text(texts).numpy() @ images.T
    np.testing.assert_allclose(s[1:], plain[1:], rtol=1e-5, atol=1e-4)  # affirmative: exactly CLIP


def test_negated_queries_prefer_images_without_the_object(clip, glasses):
    """For 12 object pairs (A, B): "A but no B" must score the image of A above the image of A and B.
    Measured (three-style default): plain CLIP right on 1 of 12 pairs, Glasses on 12 of 12."""
    names = ["cat", "dog", "apple", "car", "tree", "fish", "banana", "bicycle", "penguin", "pizza", "rocket", "horse"]
    pairs = [(names[i], names[(i + 5) % len(names)]) for i in range(len(names))]
    images = clip.encode_image(_scenes([p for a, b in pairs for p in ((a,), (a, b))], 1)).numpy()
    texts = [f"a {a} but no {b}" for a, b in pairs]
    s = glasses.score(texts, images)
    plain = clip.encode_text(texts).numpy() @ images.T
    idx = np.arange(len(pairs))
    glasses_right = (s[idx, 2 * idx] > s[idx, 2 * idx + 1]).mean()
    plain_right = (plain[idx, 2 * idx] > plain[idx, 2 * idx + 1]).mean()
    assert glasses_right >= 0.9 and plain_right <= 0.5, (glasses_right, plain_right)


def test_refuses_another_backbone():
    from sayno.backbones.testing import tiny_open_clip

    with pytest.raises(ValueError, match="fingerprint"):
        load_glasses(SHIPPED, tiny_open_clip(0))
