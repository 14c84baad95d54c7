"""CLIPN: losses (hand-computed), the "no" encoder, checkpoints, inference rules, training and resuming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sayno.base.prompts import DuplicateClassError, check_distinct_classes, fill_template
from sayno.checkpoint import CheckpointError
from sayno.clipn.checkpoint import load_clipn, read_clipn, save_clipn
from sayno.clipn.infer import atd, clipn_probs, clipn_templates, ctw
from sayno.clipn.losses import caption_ids, clipn_loss, gathered_clipn_loss, itbo_loss, p_yes, tso_loss
from sayno.clipn.model import ClipnError, NoTextEncoder, vocabulary_parameters
from sayno.clipn.testing import tiny_backbone
from sayno.clipn.train import TrainConfig, TrainData, batch_indices, lr_at, state_path, train_clipn
from sayno.errors import BackboneMismatch


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone(seed=0)


def _unit(x):
    return torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float64), dim=-1)


# ------------------------------------------------------------------------------------------ losses
def test_losses_hand_computed():
    f = _unit([[1.0, 0.0], [0.0, 1.0]])
    g = _unit([[1.0, 0.0], [0.0, 1.0]])
    gno = _unit([[0.0, 1.0], [1.0, 0.0]])
    # z = s * (f.g - f.gno) = [[1, -1], [-1, 1]] with s = 1
    yes, no = itbo_loss(f, g, gno, 1.0)
    ls1 = -math.log(1 / (1 + math.exp(-1)))
    assert yes.item() == pytest.approx(ls1)
    assert no.item() == pytest.approx(ls1)
    assert tso_loss(g, gno).item() == pytest.approx(2 - math.sqrt(2))
    total = clipn_loss(f, g, gno, 1.0)
    assert total["loss"].item() == pytest.approx(0.5 * (2 * ls1 + 2 - math.sqrt(2)))
    assert p_yes(f, g, gno, 1.0)[0, 0].item() == pytest.approx(1 / (1 + math.exp(-1)))
    # the learned bias shifts every logit: z = [[1, -1], [-1, 1]] - 1
    yes_b, no_b = itbo_loss(f, g, gno, 1.0, bias=-1.0)
    assert yes_b.item() == pytest.approx(math.log(2)) and no_b.item() == pytest.approx(-math.log(1 / (1 + math.exp(-2))))


def test_loss_masks_and_single_pair():
    torch.manual_seed(0)
    f, g, gno = (_unit(torch.randn(3, 4)) for _ in range(3))
    z = 5.0 * (f @ g.T - f @ gno.T)
    _, no = itbo_loss(f, g, gno, 5.0, neg_mask=torch.tensor([[0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool))
    assert no.item() == pytest.approx(-torch.nn.functional.logsigmoid(-z[0, 1]).item())
    yes1, no1 = itbo_loss(f[:1], g[:1], gno[:1], 5.0)  # one pair: no negatives, the "no" term is 0
    assert no1.item() == 0.0 and yes1.item() > 0
    ids = caption_ids(["A dog", "a  dog", "a cat"])
    assert ids.tolist() == [0, 0, 1]
    with pytest.raises(ValueError):
        itbo_loss(f, g[:2], gno[:2], 1.0)


def test_tso_is_zero_at_antipode_and_has_finite_grad_at_init():
    g = _unit(torch.randn(4, 8))
    assert tso_loss(g, -g).item() == pytest.approx(0.0, abs=1e-6)
    gno = g.clone().requires_grad_(True)
    tso_loss(g, gno).backward()
    assert torch.isfinite(gno.grad).all()


def test_loss_gradcheck_and_gathered_equals_plain_without_process_group():
    torch.manual_seed(1)
    f, g = _unit(torch.randn(5, 6)), _unit(torch.randn(5, 6))
    gno = _unit(torch.randn(5, 6)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: clipn_loss(f, g, x, 3.0)["loss"], (gno,))
    ids = torch.tensor([0, 1, 0, 2, 3])
    a = gathered_clipn_loss(f, g, gno, 3.0, text_ids=ids)["loss"]
    mask = ids[:, None] != ids[None, :]
    b = clipn_loss(f, g, gno, 3.0, neg_mask=mask)["loss"]
    assert a.item() == pytest.approx(b.item())


# ------------------------------------------------------------------------------------------ model
def test_no_encoder_starts_as_the_tower_and_shares_frozen_parts(bb):
    enc = NoTextEncoder.from_backbone(bb)
    tokens = bb.tokenize(["a dog", "two cats on grass"])
    with torch.no_grad():
        ref = bb.text_tower()(tokens)
        for prompt in ("mean", 3, torch.tensor([0, 15])):
            assert torch.allclose(enc(tokens, prompt), ref, atol=1e-5)
    assert enc.prompts.shape == (16, bb.context_length, bb.text_tower().width)
    assert enc.tower.token_embedding.weight is bb.model.token_embedding.weight  # shared, frozen
    assert not enc.tower.token_embedding.weight.requires_grad
    assert vocabulary_parameters(bb.text_tower()) == {"token_embedding.weight"}
    assert not any("visual" in n or "token_embedding" in n for n in enc.trainable_names)
    assert enc.tower.transformer.resblocks[0].mlp.c_fc.weight is not bb.model.transformer.resblocks[0].mlp.c_fc.weight
    with pytest.raises(ClipnError):
        enc(tokens, "first")
    with pytest.raises(ClipnError):
        enc(tokens, torch.tensor([0, 1, 2]))


def test_training_step_changes_only_the_copy(bb):
    before = bb.fingerprint
    enc = NoTextEncoder.from_backbone(bb)
    opt = torch.optim.AdamW(enc.parameters_to_train(), lr=1e-2)
    tokens = bb.tokenize(["a dog", "a cat", "a car"])
    f = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim), dim=-1)
    g = bb.encode_text(["a dog", "a cat", "a car"])
    for _ in range(2):
        loss = clipn_loss(f, g, enc.encode(tokens, 1), bb.logit_scale)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    from sayno.backbones.base import weights_fingerprint

    assert weights_fingerprint(bb.model.state_dict()) == before
    assert enc.prompts.abs().sum() > 0


def test_handcrafted_variant_has_no_prompts(bb):
    enc = NoTextEncoder.from_backbone(bb, variant="handcrafted")
    assert enc.prompts is None and enc.n_prompts == 0
    assert "prompts" not in enc.trainable_state()
    with pytest.raises(ClipnError):
        NoTextEncoder.from_backbone(bb, variant="sometimes")


# ------------------------------------------------------------------------------------------ checkpoint
def test_checkpoint_roundtrip_is_small_and_refuses_another_backbone(bb, tmp_path):
    enc = NoTextEncoder.from_backbone(bb, learn_bias=True)
    with torch.no_grad():
        enc.bias.fill_(-3.5)
        enc.prompts.normal_()
        enc.tower.text_projection.add_(0.1)
    path = save_clipn(tmp_path / "c.safetensors", enc, bb, {"logit_scale": bb.logit_scale, "learn_bias": True},
                      {"epochs": 1})
    tensors, meta = read_clipn(path)
    assert meta["backbone_fingerprint"] == bb.fingerprint and meta["config"]["variant"] == "learnable"
    assert "prompts" in tensors and not any("token_embedding" in k for k in tensors)
    vocab = bb.model.token_embedding.weight.numel() * 4
    assert path.stat().st_size < vocab  # the vocabulary table is not stored
    model = load_clipn(path, bb)
    assert model.encoder.yes_bias == -3.5 and model.class_texts(["dog"]).bias == -3.5
    tokens = bb.tokenize(["a photo of a dog"])
    with torch.no_grad():
        assert torch.allclose(model.encoder(tokens, "mean"), enc(tokens, "mean"))
    with pytest.raises(BackboneMismatch):
        load_clipn(path, tiny_backbone(seed=1))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_clipn(bad)
    with pytest.raises(CheckpointError):
        enc.load_trainable_state({k: v for k, v in tensors.items() if k != "prompts"})


# ------------------------------------------------------------------------------------------ inference
def test_ctw_and_atd_hand_computed():
    p = np.array([[0.7, 0.3], [0.5, 0.5]])
    py = np.array([[0.8, 0.1], [0.2, 0.3]])
    c = ctw(p, py)
    assert c.pred.tolist() == [0, 0]  # a tie picks the lowest index
    assert c.score.tolist() == pytest.approx([0.8, 0.2])
    assert c.is_ood.tolist() == [False, True]
    a = atd(p, py)
    # row 0: p_ood = 0.2*0.7 + 0.9*0.3 = 0.41 < max(0.56, 0.03); row 1: 0.8*0.5+0.7*0.5 = 0.75 > 0.15
    assert a.score.tolist() == pytest.approx([0.59, 0.25])
    assert a.is_ood.tolist() == [False, True]
    assert a.margin.tolist() == pytest.approx([0.56 - 0.41, 0.15 - 0.75])


def test_atd_with_one_class_is_ctw_and_boundaries_are_id():
    py = np.array([[0.9], [0.4], [0.5]])
    p = np.ones_like(py)
    a, c = atd(p, py), ctw(p, py)
    assert a.is_ood.tolist() == c.is_ood.tolist() == [False, True, False]
    f = np.array([[1.0, 0.0]])
    p1, py1 = clipn_probs(f, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 10.0)
    assert p1.shape == (1, 1) and p1[0, 0] == 1.0 and py1[0, 0] == pytest.approx(1 / (1 + math.exp(-10)))
    _, py2 = clipn_probs(f, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 10.0, bias=-10.0)
    assert py2[0, 0] == pytest.approx(0.5)


def test_templates_and_duplicate_classes(bb):
    t = clipn_templates()
    assert t["version"] >= 1 and t["affirmative"] and t["no"]
    assert fill_template("a photo of {a}", "apple") == "a photo of an apple"
    assert fill_template("no {}", "dog") == "no dog"
    check_distinct_classes(bb.tokenize, ["dog", "cat"], t["affirmative"])
    with pytest.raises(DuplicateClassError, match="'Dog' = 'dog'"):
        check_distinct_classes(bb.tokenize, ["Dog", "cat", "dog"], t["affirmative"])


def test_class_texts_and_decisions(bb):
    from sayno.clipn.infer import Clipn

    model = Clipn(bb, NoTextEncoder.from_backbone(bb))
    texts = model.class_texts(["dog", "cat", "apple"])
    assert texts.yes.shape == texts.no.shape == (3, bb.embed_dim)
    assert np.allclose(np.linalg.norm(texts.yes, axis=1), 1, atol=1e-5)
    d = model.decide(texts.yes[:1].astype(np.float32), texts, "atd")
    assert d.pred.tolist() == [0] and d.score.shape == (1,)
    hand = Clipn(bb, NoTextEncoder.from_backbone(bb, variant="handcrafted")).class_texts(["dog", "cat"])
    assert not np.allclose(hand.no, hand.yes)  # reads "no dog", not "a dog"


# ------------------------------------------------------------------------------------------ training
def _synthetic(bb, n=24, seed=0):
    rng = np.random.default_rng(seed)
    words = ["dog", "cat", "car", "tree", "apple", "fish"]
    caps = [f"a {words[i % 6]}" for i in range(n)]
    g = bb.encode_text(caps)
    f = torch.nn.functional.normalize(g + 0.3 * torch.from_numpy(rng.normal(size=g.shape)).float(), dim=-1)
    return TrainData(f, g, bb.tokenize(caps), caps, caption_ids(caps), "synthetic")


def test_schedule_and_batches():
    cfg = TrainConfig(lr=1.0, warmup=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1) and lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(99, 100, cfg) < 0.01
    b0 = batch_indices(10, 4, 0, 2, seed=0)
    b1 = batch_indices(10, 4, 1, 2, seed=0)
    assert len(set(b0) | set(b1)) == 8 and not set(b0) & set(b1)


def test_training_lowers_the_loss_and_resumes_exactly(bb, tmp_path):
    data = _synthetic(bb)
    cfg = TrainConfig(epochs=5, batch_size=8, lr=3e-3, warmup=0.1)
    s = train_clipn(bb, data, tmp_path / "a.safetensors", cfg, progress=False)
    hist = [h["loss"] for h in s["history"]]
    assert s["steps"] == 15 and hist[-1] < hist[0]
    # interrupted after 7 steps, then resumed: the same weights as one uninterrupted run
    part = train_clipn(bb, data, tmp_path / "b.safetensors", cfg, progress=False, stop_after=7)
    assert part["steps"] == 7 and state_path(tmp_path / "b.safetensors").exists()
    s2 = train_clipn(bb, data, tmp_path / "b.safetensors", cfg, progress=False)
    assert s2["resumed_from"] == 7 and not state_path(tmp_path / "b.safetensors").exists()
    ta, _ = read_clipn(tmp_path / "a.safetensors")
    tb, _ = read_clipn(tmp_path / "b.safetensors")
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=1e-6), k
    with pytest.raises(ClipnError, match="exists"):
        train_clipn(bb, data, tmp_path / "a.safetensors", cfg, progress=False)
    # a different config cannot resume another run's state
    train_clipn(bb, data, tmp_path / "c.safetensors", cfg, progress=False, stop_after=2)
    with pytest.raises(ClipnError, match="unfinished"):
        train_clipn(bb, data, tmp_path / "c.safetensors", TrainConfig(epochs=2, batch_size=8), progress=False)


# ------------------------------------------------------------------------------------------ issue 9: one envelope, one reader
def test_checkpoint_is_the_one_envelope_and_bad_tensors_are_one_line(bb, tmp_path):
    from safetensors.torch import load_file, save_file

    from sayno.checkpoint import read_header

    enc = NoTextEncoder.from_backbone(bb, learn_bias=True)
    path = save_clipn(tmp_path / "sub" / "c.safetensors", enc, bb, {"learn_bias": True}, {"epochs": 1})
    env = read_header(path)
    assert (env.format, env.version, env.backbone_fingerprint) == ("sayno-clipn", "1", bb.fingerprint)
    assert env.sections["training"] == {"epochs": 1} and oct(path.stat().st_mode & 0o777) == "0o644"
    _, meta = read_clipn(path)
    assert set(meta) == {"format", "format_version", "backbone_fingerprint", "backbone_spec", "config", "training"}
    tensors = load_file(str(path))
    tensors["prompts"] = tensors["prompts"][:3]  # wrong shape
    save_file(tensors, str(tmp_path / "shape.safetensors"), metadata=env.to_metadata())
    with pytest.raises(CheckpointError, match="'prompts' has shape") as e:
        load_clipn(tmp_path / "shape.safetensors", bb)
    assert "\n" not in str(e.value)
    del tensors["prompts"]
    save_file(tensors, str(tmp_path / "missing.safetensors"), metadata=env.to_metadata())
    with pytest.raises(CheckpointError, match="missing tensor"):
        load_clipn(tmp_path / "missing.safetensors", bb)


def test_train_config_rejects_unknown_keys():
    from sayno.config import ConfigError

    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3
    with pytest.raises(ConfigError, match="epoch"):
        TrainConfig.from_dict({"epoch": 3})


def test_captions_are_read_by_the_data_reader(tmp_path):
    from PIL import Image

    from sayno.data import DataError, read_captions_csv

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "c.csv").write_text("filepath,caption\na.png,  a   dog \n,a cat\nmissing.png,a car\na.png\n\n")
    ds = read_captions_csv(tmp_path / "c.csv")
    assert ds.captions == ["a dog"] and ds.image_paths == [tmp_path / "a.png"] and ds.lines == [2]
    assert [(b.row, b.reason.split(":")[0]) for b in ds.bad_rows] == [
        (3, "empty filepath or caption"), (4, "image not found"), (5, "record has 1 field(s), the header has 2")]
    (tmp_path / "d.csv").write_text("path,caption\na.png,a dog\n")
    with pytest.raises(DataError, match="missing column"):
        read_captions_csv(tmp_path / "d.csv")

