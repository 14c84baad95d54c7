"""Issue 12, item 16: the Python API checks its inputs at the public boundary, with one-line messages that name
the expected type or shape (no raw numpy/torch errors, no silent wrong answers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sayno.base.scoring import TextBatch
from sayno.clipn.infer import Clipn
from sayno.clipn.model import NoTextEncoder
from sayno.clipn.testing import tiny_backbone
from sayno.clipn.train import TrainConfig as ClipnTrainConfig
from sayno.errors import InputError
from sayno.glasses import Glasses, GlassesConfig
from sayno.glasses.testing import tiny_clip


@pytest.fixture(scope="module")
def tiny():
    return tiny_clip(seed=0)


@pytest.fixture(scope="module")
def glasses(tiny):
    torch.manual_seed(0)
    return Glasses(GlassesConfig(embed_dim=tiny.embed_dim, num_layers=tiny.num_text_layers, hidden=16), tiny)


@pytest.fixture(scope="module")
def images(tiny):
    return tiny.encode_image(torch.zeros(3, 3, 32, 32)).numpy()


def _one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------------------------------- Glasses
def test_score_refuses_one_string_instead_of_a_list(glasses, images):
    with pytest.raises(InputError, match=r"list of captions.*\['no cat'\]") as info:
        glasses.score("no cat", images)
    _one_line(info)
    assert glasses.score(["no cat"], images).shape == (1, 3)


@pytest.mark.parametrize("bad", [None, 3, b"no cat"])
def test_score_refuses_captions_that_are_not_str(glasses, images, bad):
    with pytest.raises(InputError, match=r"texts\[1\] must be a str"):
        glasses.score(["a dog", bad], images)
    with pytest.raises(InputError, match=r"texts\[0\] must be a str"):
        glasses.text_batch([bad])


def test_score_refuses_nan_features(glasses, images):
    bad = images.copy()
    bad[1, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        glasses.score(["no cat"], bad)
    batch = glasses.text_batch(["no cat"])
    with pytest.raises(InputError, match="NaN"):
        glasses.score_matrix(batch, bad)
    h = batch.h.copy()
    h[0, 0] = np.nan
    with pytest.raises(InputError, match=r"TextBatch.h .*NaN"):
        glasses.score_matrix(TextBatch(batch.texts, h, batch.layers), images)


@pytest.mark.parametrize("k", [-3, 2.5, True, "5"])
def test_rerank_k_must_be_a_non_negative_int(glasses, images, k):
    with pytest.raises(InputError, match="rerank_k"):
        glasses.score(["no cat"], images, rerank_k=k)
    with pytest.raises(InputError, match="rerank_k"):
        glasses.scorer(rerank_k=k)


def test_feature_shapes_are_named(glasses, images, tiny):
    D = tiny.embed_dim
    with pytest.raises(InputError, match=rf"\(M, {D}\).*got \(3, 7\)"):
        glasses.score(["no cat"], np.zeros((3, 7), np.float32))
    with pytest.raises(InputError, match="transposed"):
        glasses.score(["no cat"], images.T)
    with pytest.raises(InputError, match=rf"\(1, {D}\)"):
        glasses.score(["no cat"], images[0])
    batch = glasses.text_batch(["no cat", "a dog"])
    with pytest.raises(InputError, match=rf"\(2, {D}\).*one row per caption"):
        glasses.score_pairs(batch, images)
    with pytest.raises(InputError, match="TextBatch"):
        glasses.score_matrix(["no cat"], images)
    with pytest.raises(InputError, match="TextBatch.layers"):
        glasses.score_matrix(TextBatch(batch.texts, batch.h, batch.layers[:, :, :5]), images)
    with pytest.raises(InputError, match="TextBatch"):
        glasses.query_vectors(["no cat", "a dog"], glasses.slots(batch))
    assert glasses.score_pairs(batch, images[:2]).shape == (2,)


# ---------------------------------------------------------------------------------------------- backbones
def test_encode_image_inputs(tiny):
    empty = tiny.encode_image([])
    assert tuple(empty.shape) == (0, tiny.embed_dim)
    with pytest.raises(InputError, match="0x0"):
        tiny.encode_image([Image.new("RGB", (0, 0))])
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        tiny.encode_image(torch.zeros(3, 32, 32))
    with pytest.raises(InputError, match="PIL image"):
        tiny.encode_image(["photo.png"])
    one = tiny.encode_image(Image.new("RGB", (8, 8)))
    assert tuple(one.shape) == (1, tiny.embed_dim)


@pytest.mark.parametrize("bad", [None, 3, b"dog"])
def test_encode_text_refuses_non_strings(tiny, bad):
    with pytest.raises(InputError, match=r"texts\[1\] must be a str"):
        tiny.encode_text(["a dog", bad])


# ---------------------------------------------------------------------------------------------- CLIPN
@pytest.fixture(scope="module")
def clipn():
    bb = tiny_backbone()
    return Clipn(bb, NoTextEncoder.from_backbone(bb))


def test_class_texts_refuses_one_string(clipn):
    with pytest.raises(InputError, match=r"list of names.*\['dog'\]"):
        clipn.class_texts("dog")
    for bad in ([], ["dog", None], ["dog", ""]):
        with pytest.raises(InputError, match="class"):
            clipn.class_texts(bad)


def test_decide_checks_the_image_features(clipn):
    texts = clipn.class_texts(["dog", "cat"])
    D = texts.yes.shape[1]
    f = np.ones((2, D), np.float32) / np.sqrt(D)
    assert clipn.decide(f, texts).pred.shape == (2,)
    with pytest.raises(InputError, match=rf"\(N, {D}\).*\(1, {D}\)"):
        clipn.decide(f[0], texts)
    with pytest.raises(InputError, match=rf"\(N, {D}\)"):
        clipn.decide(f.T, texts)
    nan = f.copy()
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        clipn.decide(nan, texts)


@pytest.mark.parametrize("overrides", [{"max_pairs": -5}, {"max_pairs": 0}, {"epochs": 0}, {"variant": "sometimes"}])
def test_clipn_train_config_refuses_nonsense(overrides):
    with pytest.raises(InputError):
        ClipnTrainConfig(**overrides)
