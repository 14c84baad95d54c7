"""The fine-tuned text tower baseline trains on the same losses as Glasses (hedged rows included)."""

import numpy as np
import pytest
import torch
from PIL import Image

from sayno.glasses import finetune as ft_mod
from sayno.glasses.data import CaptionRecord, Sources
from sayno.glasses.testing import tiny_clip


def test_finetune_leaves_hedged_captions_out_of_the_image_to_text_loss(tmp_path, monkeypatch):
    """Regression: the baseline called ``contrastive_loss`` without ``hedged``, so a hedged caption attached to
    an image where it is wrong ("a cat, probably no dog" on a cat-and-dog image) was an image->text positive:
    the image had to prefer it over its true captions, which teaches the text tower "no dog" = "dog"."""
    seen = []
    real = ft_mod.contrastive_loss

    def spy(S, T, pc, pi, hedged=None):
        seen.append(hedged)
        return real(S, T, pc, pi, hedged)

    monkeypatch.setattr(ft_mod, "contrastive_loss", spy)
    src = Sources(root=tmp_path, files=["synthetic"])
    clip = tiny_clip(seed=0)
    img = {}
    for g in range(4):
        for side, objs in (("a", ["cat"]), ("b", ["cat", "dog"])):
            name = f"{g}{side}.png"
            img[name] = objs
            src.objects[name] = frozenset(objs)
            src.groups[name] = str(g)
            Image.fromarray(np.full((32, 32, 3), 40 * g + (90 if side == "b" else 0), np.uint8)).save(tmp_path / name)
    for name, objs in img.items():
        src.captions.append(CaptionRecord(" and ".join(f"a {o}" for o in objs), name, observed=True, true=1,
                                          source="synthetic"))
        src.captions.append(CaptionRecord("a cat but probably no dog", name, observed=True, true=int("dog" not in objs),
                                          negated=["dog"], hedged=True, source="synthetic"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ft_mod.finetune_text(clip, src, tmp_path / "ft.safetensors", val_data=src,
                             config=ft_mod.FinetuneConfig(epochs=1, batch_groups=2, threads=1), log=lambda s: None)
        assert torch.get_num_threads() == 2  # the caller's thread count is restored
    finally:
        torch.set_num_threads(before)
    assert seen and all(h is not None for h in seen)
    assert any(bool(h.any()) for h in seen)
    assert all(h.dtype == torch.bool for h in seen)


def test_finetuned_checkpoints_old_and_damaged(tmp_path):
    """Files written before the envelope (no version key) still load; damaged ones fail in one line."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sayno.checkpoint import CheckpointError
    from sayno.errors import BackboneMismatch

    clip = tiny_clip(seed=0)
    tower = clip.text_tower()
    path = ft_mod.FinetunedText(clip, tower).save(tmp_path / "ft.safetensors", training={"note": "x"})
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    assert meta["sayno.format"] == "sayno-finetuned-text" and meta["sayno.version"] == "1"
    old = {k: v for k, v in meta.items() if k in ("sayno.format", "sayno.backbone_fingerprint",
                                                  "sayno.backbone_spec", "sayno.training")}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)
    texts = ["a dog but no cat"]
    again = ft_mod.load_finetuned(tmp_path / "old.safetensors", clip)
    np.testing.assert_array_equal(again.encode(texts), ft_mod.FinetunedText(clip, tower).encode(texts))
    with pytest.raises(BackboneMismatch):
        ft_mod.load_finetuned(path, tiny_clip(seed=1))
    name = next(iter(tensors))
    tensors[name] = tensors[name].flatten()[:1].clone()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="has shape"):
        ft_mod.load_finetuned(tmp_path / "bad.safetensors", clip)
