"""sayno.features: the on-disk cache and batched encoding, on a tiny random open_clip model."""

import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from open_clip.model import CLIP
from PIL import Image

from sayno.backbones.base import Backbone, TextTower, weights_fingerprint
from sayno.data import load_image
from sayno.features import (
    FeatureCache,
    cache_namespace,
    default_cache_root,
    encode_images,
    encode_texts,
    sha1_text,
)


class TinyTower(TextTower):
    def __init__(self, model: CLIP, calls: Counter):
        super().__init__()
        self.m, self.calls = model, calls
        self.width, self.context_length, self.num_layers = 32, 16, 2

    def embed(self, tokens):
        return self.m.token_embedding(tokens) + self.m.positional_embedding

    def forward(self, tokens, extra=None, all_layers=False):
        self.calls["text"] += len(tokens)
        if not all_layers and extra is None:
            return self.m.encode_text(tokens)
        x, eot, out = self.embed(tokens) + (0 if extra is None else extra), tokens.argmax(-1), []
        for block in self.m.transformer.resblocks:
            x = block(x, attn_mask=self.m.attn_mask)
            out.append(self.m.ln_final(x)[torch.arange(len(x)), eot] @ self.m.text_projection)
        return torch.stack(out, 1) if all_layers else out[-1]


class TinyBackbone(Backbone):
    spec, device, dtype = "test:tiny", torch.device("cpu"), torch.float32
    embed_dim, context_length, num_text_layers, image_size = 32, 16, 2, 32
    image_mean, image_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self):
        torch.manual_seed(0)
        vision = {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32}
        text = {"context_length": 16, "width": 32, "heads": 2, "layers": 2}
        self.model = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()
        self.fingerprint = weights_fingerprint(self.model.state_dict())
        self.calls: Counter = Counter()
        self.tower = TinyTower(self.model, self.calls)

    @property
    def logit_scale(self):
        return float(self.model.logit_scale.exp())

    def preprocess(self, image):
        x = torch.from_numpy(np.asarray(image.convert("RGB").resize((32, 32)), np.float32) / 255).permute(2, 0, 1)
        return (x - 0.5) / 0.25

    def _tokenize(self, texts):
        ids = [[49406] + [ord(c) % 1000 + 1 for c in t] + [49407] for t in texts]
        tokens = torch.zeros(len(texts), 16, dtype=torch.long)
        for row, seq in zip(tokens, ids):
            seq = seq[:15] + [49407] if len(seq) > 16 else seq
            row[: len(seq)] = torch.tensor(seq)
        return tokens, [len(s) for s in ids]

    def _encode_pixels(self, pixels):
        self.calls["image"] += len(pixels)
        return self.model.encode_image(pixels)

    def text_tower(self):
        return self.tower


@pytest.fixture(scope="module")
def backbone():
    return TinyBackbone()


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(3):
        p = tmp_path / "imgs" / f"{k}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    (tmp_path / "imgs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dup = tmp_path / "imgs" / "copy_of_0.png"
    shutil.copy(paths[0], dup)
    return paths + [tmp_path / "imgs" / "corrupt.png", tmp_path / "imgs" / "missing.png", dup]


def test_encode_images_and_cache(backbone, images, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    backbone.calls.clear()
    res = encode_images(backbone, images, cache=cache, batch_size=2, progress=False)
    assert res.features.shape == (6, 32) and res.features.dtype == np.float32
    assert res.ok_mask.tolist() == [True, True, True, False, False, True]
    assert np.isnan(res.features[3:5]).all() and np.isfinite(res.features[res.ok_mask]).all()
    assert {b.file.rsplit("/", 1)[-1]: b.reason.split(" (")[0] for b in res.bad} == {
        "corrupt.png": "cannot decode image", "missing.png": "image not found"}
    assert backbone.calls["image"] == 3  # the copy of 0.png has the same content: encoded once
    direct = backbone.encode_image([load_image(p) for p in images[:3]]).numpy()
    np.testing.assert_allclose(res.features[:3], direct, atol=1e-5)
    np.testing.assert_array_equal(res.features[5], res.features[0])
    # second run, and a fresh instance on the same folder (the shards persist): no encoding at all
    for c in (cache, FeatureCache(tmp_path / "cache")):
        backbone.calls.clear()
        again = encode_images(backbone, images, cache=c, batch_size=2, progress=False)
        assert backbone.calls["image"] == 0
        np.testing.assert_array_equal(again.features[again.ok_mask], res.features[res.ok_mask])
        assert again.ok_mask.tolist() == res.ok_mask.tolist() and len(again.bad) == 2
    # same content under another path hits the cache
    moved = tmp_path / "elsewhere.png"
    shutil.copy(images[1], moved)
    backbone.calls.clear()
    np.testing.assert_array_equal(encode_images(backbone, [moved], cache=cache, progress=False).features[0],
                                  res.features[1])
    assert backbone.calls["image"] == 0
    assert not list((tmp_path / "cache").rglob(".tmp-*"))
    assert cache.count(cache_namespace(backbone), "image") == 3


def test_encode_images_with_workers_and_progress(backbone, images):
    res = encode_images(backbone, images, batch_size=2, num_workers=1, progress=True)
    assert res.ok_mask.tolist() == [True, True, True, False, False, True]
    direct = backbone.encode_image([load_image(p) for p in images[:3]]).numpy()
    np.testing.assert_allclose(res.features[:3], direct, atol=1e-5)
    empty = encode_images(backbone, [], progress=False)
    assert empty.features.shape == (0, 32) and empty.ok_mask.shape == (0,)


@pytest.mark.filterwarnings("ignore::sayno.backbones.base.TruncationWarning")
def test_encode_texts(backbone, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    texts = ["a dog", "a photo of no cat", "a dog", "", "a very long caption that will surely be truncated"]
    backbone.calls.clear()
    with pytest.warns(UserWarning, match="truncated"):
        f = encode_texts(backbone, texts, cache=cache, batch_size=2, progress=True)
    assert f.shape == (5, 32) and f.dtype == np.float32 and backbone.calls["text"] == 4
    np.testing.assert_allclose(f, backbone.encode_text(texts).numpy(), atol=1e-5)
    np.testing.assert_array_equal(f[0], f[2])
    layers = encode_texts(backbone, texts, cache=cache, layers=True, progress=False)
    assert layers.shape == (5, 2, 32)
    np.testing.assert_allclose(layers[:, -1], f, atol=1e-5)
    backbone.calls.clear()
    for c in (cache, FeatureCache(tmp_path / "cache")):
        np.testing.assert_array_equal(encode_texts(backbone, texts, cache=c, progress=False), f)
        np.testing.assert_array_equal(encode_texts(backbone, texts, cache=c, layers=True, progress=False), layers)
    assert backbone.calls["text"] == 0
    assert encode_texts(backbone, [], layers=True).shape == (0, 2, 32)
    with pytest.raises(TypeError):
        encode_texts(backbone, ["ok", 3])


def test_feature_cache(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    keys = [sha1_text(t) for t in "abc"]
    found, values = cache.get("fp", "text", keys)
    assert not found.any() and values is None
    v = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    cache.put("fp", "text", keys[:2], v[:2])
    cache.put("fp", "text", keys[1:], v[1:])  # keys[1] is already there: only keys[2] is written
    found, values = cache.get("fp", "text", keys[::-1] + ["nope"])
    assert found.tolist() == [True, True, True, False] and np.isnan(values[3]).all()
    np.testing.assert_array_equal(values[:3], v[::-1].astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        cache.put("fp", "text", ["k"], np.ones((1, 5)))
    with pytest.raises(ValueError, match="plain name"):
        cache.folder("../x", "text")
    # a broken shard (not one of ours: ours are written atomically) is ignored with a warning
    (tmp_path / "fp" / "text" / "zz-broken.npz").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable shard"):
        assert FeatureCache(tmp_path).count("fp", "text") == 3
    (tmp_path / "fp" / "text" / "zz-broken.npz").unlink()
    assert len(list((tmp_path / "fp" / "text").glob("*.npz"))) == 2
    assert cache.compact("fp", "text") == 3 and len(list((tmp_path / "fp" / "text").glob("*.npz"))) == 1
    found, values = FeatureCache(tmp_path).get("fp", "text", keys)
    assert found.all()
    np.testing.assert_array_equal(values, v.astype(np.float32))
    monkeypatch.setenv("SAYNO_CACHE", str(tmp_path / "env"))
    assert default_cache_root() == tmp_path / "env" and FeatureCache.default().root == tmp_path / "env"
    monkeypatch.delenv("SAYNO_CACHE")
    assert default_cache_root().parts[-3:] == (".cache", "sayno", "features")
