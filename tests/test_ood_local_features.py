"""Local (patch) features for GL-MCM: ``Backbone.encode_image_tokens`` on randomly initialised real architectures
saved to local files (open_clip ViT with class-token and average pooling, Hugging Face CLIP, the embedded model),
and their cache in ``encode_images(..., tokens=True)``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sayno.backbones import BackboneError, build_open_clip_model, load, save_open_clip_checkpoint
from sayno.features import FeatureCache, encode_images

VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _save(cfg: dict, folder: Path, name: str) -> str:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_open_clip_model(cfg).eval()
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    save_open_clip_checkpoint(model, cfg, folder / f"{name}.safetensors", dtype=None)
    return f"open_clip:{folder / name}.json:{folder / name}.safetensors"


def _by_hand_open_clip(bb, pixels: torch.Tensor) -> torch.Tensor:
    """The patch tokens written out from open_clip's modules: transformer, ln_post on every token, proj."""
    v = bb.model.visual
    with torch.no_grad():
        x = v.transformer(v._embeds(pixels))
        return v.ln_post(x[:, 1:]) @ v.proj


@pytest.mark.parametrize("pool", ["tok", "avg"])
def test_open_clip_vit_tokens(tmp_path: Path, pool: str) -> None:
    cfg = json.loads(json.dumps(VIT))
    if pool == "avg":
        cfg["vision_cfg"]["pool_type"] = "avg"
        cfg["vision_cfg"]["final_ln_after_pool"] = True
    bb = load(_save(cfg, tmp_path, pool))
    assert bb.image_token_count() == 1 + 16  # 32 / 8 = 4 x 4 patches
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tok = bb.encode_image_tokens(pixels, normalize=False)
    assert tok.shape == (3, 17, 32)
    # row 0 is exactly the image feature of encode_image (the same forward pass)
    torch.testing.assert_close(tok[:, 0], bb.encode_image(pixels, normalize=False), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tok[:, 1:], _by_hand_open_clip(bb, pixels), rtol=1e-5, atol=1e-6)
    unit = bb.encode_image_tokens(pixels)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3, 17))
    assert bb.encode_image_tokens([]).shape == (0, 17, 32)


def test_open_clip_resnet_has_no_tokens(tmp_path: Path) -> None:
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
           "text_cfg": VIT["text_cfg"]}
    bb = load(_save(cfg, tmp_path, "rn"))
    assert bb.image_token_count() is None
    with pytest.raises(BackboneError, match="ViT"):
        bb.encode_image_tokens(torch.zeros(1, 3, 32, 32))


def test_hf_tokens(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers import CLIPConfig, CLIPModel

    from sayno.backbones import write_clip_tokenizer_files

    cfg = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                     "max_position_embeddings": 16},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLIPModel(cfg).eval()
    model.save_pretrained(tmp_path)
    write_clip_tokenizer_files(tmp_path, context_length=16)
    bb = load(f"hf:{tmp_path}")
    assert bb.image_token_count() == 17
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tok = bb.encode_image_tokens(pixels, normalize=False)
    assert tok.shape == (2, 17, 32)
    torch.testing.assert_close(tok[:, 0], bb.encode_image(pixels, normalize=False), rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # by hand from transformers' modules: last hidden state, post_layernorm, projection
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
        want = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 1:]))
    torch.testing.assert_close(tok[:, 1:], want, rtol=1e-5, atol=1e-6)


def test_embedded_tokens_and_cache(tmp_path: Path) -> None:
    bb = load("embedded")
    assert bb.image_token_count() == 65  # 64 px / 8 px patches: 8 x 8 + the class token
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    paths.append(tmp_path / "missing.png")
    cache = FeatureCache(tmp_path / "cache")
    plain = encode_images(bb, paths[:1], cache=cache, progress=False)  # features cached, tokens not yet
    assert plain.tokens is None
    res = encode_images(bb, paths, cache=cache, progress=False, tokens=True)
    assert res.ok_mask.tolist() == [True, True, True, False]
    assert res.tokens.shape == (4, 65, 128) and res.tokens.dtype == np.float16
    assert np.isnan(res.tokens[3]).all()
    np.testing.assert_allclose(res.tokens[:3, 0], res.features[:3], atol=2e-3)  # float16 copy of row 0
    # a second call reads both from the cache, in a fresh process view of it
    again = encode_images(bb, paths[:3], cache=FeatureCache(tmp_path / "cache"), progress=False, tokens=True)
    np.testing.assert_array_equal(again.tokens, res.tokens[:3])
    np.testing.assert_array_equal(again.features, res.features[:3])
    assert FeatureCache(tmp_path / "cache").count(bb.fingerprint, "image_tokens") == 3
