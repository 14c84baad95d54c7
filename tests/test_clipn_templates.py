"""CLIPN's hand-crafted template sets (issue 26): the reference's paired templates are shipped exactly, a caption
is wrapped in one drawn pair (affirmative side for the frozen tower, "no" side for the "no" encoder), the choice
is recorded in the checkpoint and used at inference, and bad values give one-line errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from sayno.base.prompts import class_prompts, ensemble
from sayno.checkpoint import CheckpointError
from sayno.clipn.checkpoint import load_clipn, read_clipn, save_clipn
from sayno.clipn.infer import TEMPLATE_SETS, reference_pairs, template_set
from sayno.clipn.model import NoTextEncoder
from sayno.clipn.testing import tiny_backbone
from sayno.clipn.train import TrainConfig, pair_draw, paired_captions, prepare_data, train_clipn
from sayno.errors import InputError


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone(seed=0)


@pytest.fixture(scope="module")
def captions_csv(tmp_path_factory):
    """A caption CSV of 12 tiny images (6 captions, each twice: repeated captions, as in the world)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("caps")
    words = ["dog", "cat", "car", "tree", "apple", "fish"]
    rows = []
    for i in range(12):
        Image.new("RGB", (32, 32), (20 * i, 255 - 20 * i, 7 * i)).save(d / f"{i}.png")
        rows.append(f"{i}.png,a {words[i % 6]} on grass")
    (d / "c.csv").write_text("filepath,caption\n" + "\n".join(rows) + "\n")
    return d / "c.csv"


# ------------------------------------------------------------------------------------------ the pairs, exactly
def test_reference_pairs_are_the_reference_files_line_by_line():
    data = reference_pairs()
    pairs = data["pairs"]
    assert len(pairs) == 128 and data["version"] == 1
    assert "xmed-lab/CLIPN" in data["source"] and "MIT" in data["source"]
    # line i of hand-crafted/src/prompt.txt beside line i of prompt_no.txt (quotes dropped)
    assert pairs[0] == ("a bad photo of a {}.", "a bad photo of no {}.")
    assert pairs[1] == ("a photo of many {}.", "a photo of no many {}.")
    assert pairs[30] == ("a {} in a video game.", "no a {} in a video game.")
    assert pairs[34] == ("a photo of a {}.", "a photo of no {}.")  # the line with a trailing comma in both files
    assert pairs[35] == ("the {} in a video game.", "the {} not in a video game.")
    assert pairs[64] == ("a bad photo with a {}.", "a bad photo without a {}.")
    assert pairs[94] == ("a {} appearing in a video game.", "a {} not appearing in a video game.")
    assert pairs[127] == ("a tattoo with the {}.", "a tattoo without the {}.")
    # every string of both columns, in order (a changed or reordered template fails here)
    yes_sha = hashlib.sha1("\n".join(a for a, _ in pairs).encode()).hexdigest()
    no_sha = hashlib.sha1("\n".join(b for _, b in pairs).encode()).hexdigest()
    assert (yes_sha, no_sha) == ("e9a5b9edbfbbb4e59c4a41f7214d420cf9a0c6d2", "cacaacfc7b766e643bfdcfc2b2ab3639959d536a")
    assert all("'" not in a + b for a, b in pairs)
    assert all(" no " in f" {b} " or "without" in b or " not " in b for _, b in pairs)  # each twin negates


def test_template_sets_give_inference_its_columns():
    ref = template_set("reference")
    pairs = reference_pairs()["pairs"]
    assert ref["affirmative"] == [a for a, _ in pairs] and ref["no"] == [b for _, b in pairs]
    assert template_set("sayno")["name"] == "sayno-clipn" and set(TEMPLATE_SETS) == {"sayno", "reference"}
    with pytest.raises(InputError, match="unknown CLIPN template set 'ref'") as e:
        template_set("ref")
    assert "\n" not in str(e.value)


def test_a_caption_is_wrapped_in_one_pair_on_both_sides():
    pairs = [("a photo of {}.", "a photo of no {}."), ("art with {}.", "art without {}.")]
    yes, no = paired_captions(["a dog", "two cats"], pairs, np.array([1, 0]))
    assert yes == ["art with a dog.", "a photo of two cats."]
    assert no == ["art without a dog.", "a photo of no two cats."]


def test_pair_draw_is_seeded_uniform_and_new_each_epoch():
    a, b = pair_draw(0, 0, 5000, 128), pair_draw(0, 1, 5000, 128)
    assert np.array_equal(a, pair_draw(0, 0, 5000, 128)) and not np.array_equal(a, b)
    assert not np.array_equal(a, pair_draw(1, 0, 5000, 128))
    assert a.min() == 0 and a.max() == 127
    counts = np.bincount(a, minlength=128)
    assert counts.min() > 10 and counts.max() < 70  # about 39 each


# ------------------------------------------------------------------------------------------ training data
def test_reference_data_pairs_frozen_and_no_texts_per_epoch(bb, captions_csv):
    cfg = TrainConfig(variant="handcrafted", templates="reference", epochs=3, batch_size=4)
    td = prepare_data(bb, captions_csv, cfg, progress=False)
    g_views, tok_views = td.views()
    assert g_views.shape == (3, 12, bb.embed_dim) and tok_views.shape[:2] == (3, 12)
    pairs = reference_pairs()["pairs"]
    for e in range(3):
        idx = pair_draw(0, e, 12, len(pairs))
        yes, no = paired_captions(td.captions, pairs, idx)
        assert no[0] == pairs[idx[0]][1].replace("{}", "a dog on grass")
        assert torch.equal(tok_views[e], bb.tokenize(no))
        assert torch.allclose(g_views[e], bb.encode_text(yes), atol=1e-5)
    assert not torch.equal(tok_views[0], tok_views[1])  # a new draw each epoch
    assert td.text_ids[0] == td.text_ids[6]  # identical captions stay one caption id (not negatives)
    sayno = prepare_data(bb, captions_csv, TrainConfig(variant="handcrafted", epochs=3), progress=False)
    assert sayno.views()[0].shape[0] == 1 and torch.allclose(sayno.g, bb.encode_text(sayno.captions), atol=1e-5)
    assert torch.equal(sayno.tokens_no[:2], bb.tokenize(["not a dog on grass", "no a cat on grass"]))


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("templates", ["reference", "sayno"])
def test_a_checkpoint_round_trips_its_template_set(bb, captions_csv, tmp_path, templates):
    out = tmp_path / "h.safetensors"
    cfg = TrainConfig(variant="handcrafted", templates=templates, epochs=2, batch_size=4, lr=3e-3)
    s = train_clipn(bb, captions_csv, out, cfg, progress=False)
    assert s["steps"] == 6
    _, meta = read_clipn(out)
    assert meta["config"]["template_set"] == templates and meta["training"]["config"]["templates"] == templates
    model = load_clipn(out, bb)
    want = template_set(templates)
    assert meta["config"]["templates"] == {"name": want["name"], "version": want["version"]}
    assert model.templates["affirmative"] == want["affirmative"] and model.templates["no"] == want["no"]
    names = ["dog", "cat"]
    texts = model.class_texts(names)
    yes = ensemble(bb.encode_text(class_prompts(names, want["affirmative"])).numpy(), 2)
    with torch.no_grad():
        no = ensemble(model.encoder(bb.tokenize(class_prompts(names, want["no"])), None).numpy(), 2)
    assert np.allclose(texts.yes, yes, atol=1e-5) and np.allclose(texts.no, no, atol=1e-5)


def test_a_checkpoint_without_a_template_set_reads_sayno_and_a_bad_one_is_refused(bb, tmp_path):
    enc = NoTextEncoder.from_backbone(bb, variant="handcrafted", learn_bias=True)
    old = save_clipn(tmp_path / "old.safetensors", enc, bb, {"learn_bias": True})
    assert load_clipn(old, bb).templates["no"] == template_set("sayno")["no"]
    bad = save_clipn(tmp_path / "bad.safetensors", enc, bb, {"learn_bias": True, "template_set": "mine"})
    with pytest.raises(CheckpointError, match="template_set 'mine'; expected one of sayno, reference") as e:
        load_clipn(bad, bb)
    assert "\n" not in str(e.value)
    learn = NoTextEncoder.from_backbone(bb, learn_bias=True)
    mixed = save_clipn(tmp_path / "mixed.safetensors", learn, bb, {"learn_bias": True, "template_set": "reference"})
    with pytest.raises(CheckpointError, match="for the handcrafted variant"):
        load_clipn(mixed, bb)


def test_bad_template_settings_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="unknown CLIPN template set 'ref'") as e:
        TrainConfig(variant="handcrafted", templates="ref")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="is for the handcrafted variant"):
        TrainConfig(templates="reference")  # the learnable variant
    assert TrainConfig().templates == "sayno"
    assert TrainConfig.from_dict({"variant": "handcrafted", "templates": "reference"}).templates == "reference"
    bad = tmp_path / "pairs.json"
    bad.write_text(json.dumps({"name": "x", "version": 1, "pairs": [["a {}", "no thing"]]}))
    from sayno.base.prompts import TemplateError

    with pytest.raises(TemplateError, match="pair 0 must be two strings with one '{}' each"):
        reference_pairs(bad)


def test_the_cli_takes_templates_and_refuses_bad_values_in_one_line(monkeypatch, captions_csv, tmp_path):
    import typer
    from typer.testing import CliRunner

    from sayno.clipn import cli as clipn_cli

    monkeypatch.setattr(clipn_cli, "_load_backbone", lambda model, device: tiny_backbone(seed=0))
    app = typer.Typer()
    clipn_cli.register(app)
    out = tmp_path / "r.safetensors"
    base = ["clipn", "train", "--data", str(captions_csv), "--out", str(out), "--epochs", "1", "--batch-size", "4",
            "--no-cache", "--json"]
    r = CliRunner().invoke(app, [*base, "--variant", "handcrafted", "--templates", "reference"])
    assert r.exit_code == 0, r.output
    assert read_clipn(out)[1]["config"]["template_set"] == "reference"
    for extra, msg in ((["--variant", "handcrafted", "--templates", "refrence"], "unknown CLIPN template set"),
                       (["--templates", "reference"], "is for the handcrafted variant")):
        r = CliRunner().invoke(app, [*base, "--overwrite", *extra])
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), r.output
        assert len([x for x in r.output.strip().splitlines() if x.strip()]) == 1, r.output
