"""Glasses training: labels, losses, that training learns negation, resume, the CLI and the fine-tuning baseline."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sayno.base.scoring import PlainClip, TextBatch
from sayno.errors import BackboneMismatch
from sayno.eval.world import lambda_report, world_report
from sayno.glasses import load_glasses
from sayno.glasses.data import (
    CaptionRecord,
    Sources,
    build_features,
    label,
    read_file,
    read_sources,
    split_sources,
    subsample_groups,
)
from sayno.glasses.model import GlassesConfig
from sayno.glasses.testing import SyntheticClip, tiny_clip, write_synthetic_world
from sayno.glasses.train import TrainConfig, auto_batch_groups, contrastive_loss, presence_loss, train_glasses

NAMES = ["cat", "dog", "cow", "horse", "apple", "pear", "car", "bus", "tree", "hot dog", "ship", "lamp", "sheep",
         "fish", "kite", "drum"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    for split, n in (("train", 150), ("val", 30), ("test", 60)):
        write_synthetic_world(folder, NAMES, n, split=split)
    return folder, SyntheticClip(NAMES)


def small_config(backbone, **kw):
    return GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers, hidden=64,
                         detector_hidden=16, **kw)


# ---------------------------------------------------------------------------------------------- labels
def test_labels_from_every_format(tmp_path):
    src = Sources(root=tmp_path)
    src.captions = [
        CaptionRecord("a cat but no dog", "a.png", observed=True, true=1, negated=["dog"]),
        CaptionRecord("a cat without any cows", "a.png", observed=True, true=1),  # CC-Neg true caption: derived
        CaptionRecord("no cat", "a.png", observed=False, true=0, negated=None),  # CC-Neg negative caption
        CaptionRecord("a cat, but no unicorn", "a.png", observed=True, true=1),  # unknown object: the phrase
        CaptionRecord("a cat and a dog", "b.png", observed=True, true=1),
        CaptionRecord("neither a dog nor a cow", "a.png", observed=True, true=1, negated=["dog", "cow"]),
    ]
    src.objects = {"a.png": frozenset({"cat"}), "b.png": frozenset({"cat", "dog"})}
    lab = label(src)
    assert lab.slot_owner.tolist() == [0, 1, 2, 3, 5, 5]
    assert lab.slot_target == ["dog", "cow", "cat", "unicorn", "dog", "cow"]
    assert lab.slot_derived.tolist() == [False, True, True, True, False, False]
    assert lab.negated[1] == frozenset({"cow"}) and lab.affirmed[1] == frozenset({"cat"})
    assert lab.is_negated.tolist() == [True, True, True, True, False, True]
    assert lab.observed.tolist() == [True, True, False, True, True, True]


def test_mcq_csv_rows(tmp_path):
    p = tmp_path / "mcq_train.csv"
    (tmp_path / "x.png").write_bytes(b"")
    p.write_text("image_path,correct_answer,caption_0,caption_1,caption_2,caption_3,correct_answer_template\n"
                 "x.png,2,a dog,no cat,a cat,a dog but no cat,negative\n")
    src = read_file(p)
    assert [c.caption for c in src.captions] == ["a dog", "no cat", "a cat", "a dog but no cat"]
    assert [c.observed for c in src.captions] == [False, False, True, False]
    assert [c.true for c in src.captions] == [0, 0, 1, 0]


def test_training_reads_what_sayno_eval_reads(tmp_path):
    """An MCQ CSV that ``sayno eval`` accepts ("1.0" answers, template aliases) trains too; rows the reader
    drops are reported as bad rows, not lost silently or crashing."""
    for name in ("x.png", "y.png"):
        (tmp_path / name).write_bytes(b"")
    p = tmp_path / "mcq_train.csv"
    p.write_text("image_path,correct_answer,caption_0,caption_1,caption_2,caption_3,correct_answer_template\n"
                 "x.png,1.0,a dog,no cat,a cat,a dog but no cat,negation\n"
                 "y.png,7,a dog,no cat,a cat,a dog but no cat,affirmation\n"
                 "gone.png,0,a dog,no cat,a cat,a dog but no cat,hybrid\n")
    src = read_file(p)
    assert [c.true for c in src.captions] == [0, 1, 0, 0]
    assert [b.row for b in src.bad_rows] == [3, 4]
    neg = tmp_path / "negation_train.csv"
    neg.write_text("filepath,caption,positive_objects,negated_objects,hedged,template,true,group,hard_negative\n"
                   'x.png,a cat but no dog,"[""cat""]","[""dog""]",0,x,1,0,\n'
                   'x.png,no cow,"[""cat""]",not json,0,x,1,0,\n'
                   'x.png,no pig,"[""cat""]","[""pig""]",0,x,maybe,0,\n')
    src = read_file(neg)
    assert [c.caption for c in src.captions] == ["a cat but no dog"]
    assert [b.row for b in src.bad_rows] == [3, 4]


def test_truth_matrix(tmp_path, synthetic):
    folder, clip = synthetic
    src = Sources(root=folder)
    src.captions = [CaptionRecord("a cat but no dog", "images/train/00000a.png", observed=True, true=1),
                    CaptionRecord("a cat and a dog", "images/train/00000b.png", observed=True, true=1),
                    CaptionRecord("no horse", "images/train/00000b.png", observed=False, true=0)]
    src.objects = {"images/train/00000a.png": frozenset({"cat"}),
                   "images/train/00000b.png": frozenset({"cat", "dog"})}
    fs = build_features(src, clip)
    T = fs.truth(torch.arange(3), torch.arange(2))
    # "no horse" is false on b because the dataset says so, although no horse is known there
    assert T.tolist() == [[1, 0], [0, 1], [1, 0]]


def test_split_and_subsample_keep_groups_whole(synthetic):
    folder, _ = synthetic
    src = read_sources(folder, "train")
    tr, va = split_sources(src, 0.2, seed=0)
    g_tr = {src.groups[i] for i in tr.images}
    g_va = {src.groups[i] for i in va.images}
    assert not g_tr & g_va and len(g_va) == 30
    small = subsample_groups(src, 0.05, seed=0)
    assert len({src.groups[i] for i in small.images}) == 8
    assert all(len([i for i in small.images if src.groups[i] == g]) == 2 for g in {src.groups[i] for i in small.images})


# ------------------------------------------------------------------------------------------------ loss
def test_contrastive_loss_masks():
    S = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 5.0]])
    T = torch.tensor([[1, 0, 1], [0, 1, -1]], dtype=torch.int8)
    pc, pi = torch.tensor([0, 1]), torch.tensor([0, 1])
    # caption 0 -> images {0, 1} (image 2 is also true: not a negative); caption 1 -> {1, 0} (image 2 unknown)
    t2i = 0.5 * ((np.log(np.exp(2) + np.exp(0)) - 2) + (np.log(np.exp(3) + np.exp(0)) - 3))
    # image 0 -> captions {0, 1}; image 1 -> {1, 0}
    i2t = 0.5 * ((np.log(np.exp(2) + np.exp(0)) - 2) + (np.log(np.exp(3) + np.exp(0)) - 3))
    assert float(contrastive_loss(S, T, pc, pi)) == pytest.approx(0.5 * (t2i + i2t), rel=1e-6)
    # a hedged caption 1 takes part in text->image only
    hedged = torch.tensor([False, True])
    t2i_h = t2i
    i2t_h = np.log(np.exp(2) + 0) - 2  # image 0 -> caption 0 only (caption 1 is no negative)
    assert float(contrastive_loss(S, T, pc, pi, hedged)) == pytest.approx(0.5 * (t2i_h + i2t_h), abs=1e-6)


def test_presence_loss_exact():
    h_neg = torch.eye(3)  # slots negate objects 0, 1, 2 (vocabulary indices)
    obj = torch.tensor([0, 1, 2])
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    O = torch.tensor([[1, 0, 0], [0, 0, 1]])  # image 0 shows object 0, image 1 object 2
    known = torch.tensor([True, True])
    # within image 0: present slot 0 (score 1) vs absent {1, 2} (0, 0); image 1: present 2 (0.8) vs {0, 1} (0, 0.6)
    w0 = np.log(1 + (np.exp(0) + np.exp(0)) / np.exp(1.0))
    w1 = np.log(1 + (np.exp(0) + np.exp(0.6)) / np.exp(0.8))
    within = (w0 + w1) / 2
    assert float(presence_loss(h_neg, obj, images, O, known, 1.0, pooled=False)) == pytest.approx(within, rel=1e-5)
    absent_all = np.exp([0, 0, 0, 0.6]).sum()
    pooled = (np.log(1 + absent_all / np.exp(1.0)) + np.log(1 + absent_all / np.exp(0.8))) / 2
    assert float(presence_loss(h_neg, obj, images, O, known, 1.0)) == pytest.approx(0.5 * (within + pooled), rel=1e-5)
    # unknown objects or images do not count
    assert float(presence_loss(h_neg, torch.tensor([-1, -1, 2]), images, O, known, 1.0)) == 0.0


# ------------------------------------------------------------------------------------------- training
def test_training_learns_negation_and_hedges(synthetic, tmp_path):
    folder, clip = synthetic
    res = train_glasses(clip, folder, tmp_path / "g.safetensors", config=small_config(clip),
                        train=TrainConfig(epochs=(2, 10, 5, 5), batch_groups=8, lr=3e-3, min_steps=0), log=lambda s: None)
    scorers = {"plain": PlainClip(clip.logit_scale), "glasses": res.glasses.scorer()}
    rep = world_report(clip, folder, scorers, parts=("ccneg",))["ccneg"]
    assert rep["plain"]["accuracy"] < 40
    assert rep["glasses"]["accuracy"] > 90
    lam = lambda_report(res.glasses, folder)
    assert lam["hedged_mean_lambda"] < lam["firm_mean_lambda"] - 0.1
    hist = res.summary["history"]
    assert [h["stage"] for h in hist][:2] == ["detector", "detector"] and hist[-1]["stage"] == "joint"
    assert not (tmp_path / "g.safetensors.partial").exists()


def test_resume_after_interruption_gives_the_same_checkpoint(synthetic, tmp_path):
    folder, clip = synthetic
    tc = TrainConfig(epochs=(1, 3, 2, 2), batch_groups=16, lr=3e-3, min_steps=0)
    train_glasses(clip, folder, tmp_path / "full.safetensors", config=small_config(clip), train=tc,
                  log=lambda s: None)

    class Stop(Exception):
        pass

    def stop_in_lens(msg: str) -> None:
        if msg.startswith("lens     epoch  1"):
            raise Stop

    out = tmp_path / "cut.safetensors"
    with pytest.raises(Stop):
        train_glasses(clip, folder, out, config=small_config(clip), train=tc, log=stop_in_lens)
    assert (tmp_path / "cut.safetensors.partial").exists() and not out.exists()
    logs: list[str] = []
    train_glasses(clip, folder, out, config=small_config(clip), train=tc, log=logs.append)
    assert any(m.startswith("resuming") and "stage lens, epoch 2" in m for m in logs)
    with safe_open(str(tmp_path / "full.safetensors"), "pt") as a, safe_open(str(out), "pt") as b:
        for k in a.keys():  # noqa: SIM118 - safe_open is no dict
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k


def test_auto_batch_groups():
    assert auto_batch_groups(3000) == 32  # the full world keeps 32 groups per batch
    assert auto_batch_groups(150) == 9  # a 5% subset: at least 16 batches per epoch
    assert auto_batch_groups(10) == 1 and auto_batch_groups(0) == 1


def test_early_stopping_waits_for_min_steps(synthetic, tmp_path):
    folder, clip = synthetic

    def frame_epochs(min_steps: int) -> int:
        tc = TrainConfig(epochs=(0, 8, 0, 0), batch_groups=10**6, patience=0, min_steps=min_steps)  # 1 batch/epoch
        res = train_glasses(clip, folder, tmp_path / f"g{min_steps}.safetensors", config=small_config(clip),
                            train=tc, log=lambda s: None)
        assert res.summary["train"]["batch_groups"] == 10**6
        return sum(h["stage"] == "frame" for h in res.summary["history"])

    # patience 0 stops as soon as early stopping may start: after min_steps steps
    assert frame_epochs(1) == 1
    assert frame_epochs(3) == 3


def test_partial_state_of_other_settings_is_ignored(synthetic, tmp_path):
    folder, clip = synthetic
    out = tmp_path / "g.safetensors"
    from sayno.base.training import ResumeFile

    ResumeFile(str(out) + ".partial", "something else").save({"stage": 0})  # another run's state
    logs: list[str] = []
    train_glasses(clip, folder, out, config=small_config(clip), train=TrainConfig(epochs=(1, 1, 0, 0), min_steps=0),
                  log=logs.append)
    assert any(m.startswith("ignoring") for m in logs) and out.exists()


# ---------------------------------------------------------------------------- the world, an open_clip CLIP
@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from sayno.world import WorldConfig, build_world

    folder = tmp_path_factory.mktemp("world")
    build_world(folder, WorldConfig(train_groups=40, val_groups=10, test_groups=20, caption_images=10,
                                    classify_per_class=1, ood_id_per_class=1, ood_per_class=1),
                parts=("train", "val", "test"), progress=False)
    return folder


def test_cli_train_then_report_on_the_world(tiny_world, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sayno import cli as root_cli
    from sayno.eval import cli as eval_cli
    from sayno.glasses import cli as glasses_cli

    def load_backbone(spec: str, device: str = "cpu"):  # the random test CLIP stands in for "tiny:SEED"
        assert spec.startswith("tiny:"), spec
        return tiny_clip(seed=int(spec.split(":", 1)[1]))

    monkeypatch.setattr(glasses_cli, "load_backbone", load_backbone)
    monkeypatch.setattr(eval_cli, "load_backbone", load_backbone)
    app = root_cli.app

    out = tmp_path / "g.safetensors"
    args = ["glasses", "train", "--model", "tiny:0", "--data", str(tiny_world), "--out", str(out), "--epochs", "1",
            "--min-steps", "0", "--hidden", "32", "--no-cache", "--no-report"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert out.exists() and out.stat().st_size < 5e6
    finished = out.read_bytes()  # a finished checkpoint is not replaced by accident
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr and out.read_bytes() == finished
    g = load_glasses(out, tiny_clip(seed=0))
    summary = g.training_summary
    # CC-Neg true captions and MCQ captions carry no label: derived from the lexical phrase, always a known
    # object here
    assert summary["labels"]["derived_slot_labels"] > 0
    assert any(f.endswith("mcq_train.csv") for f in summary["data"])
    # MCQ distractors may name objects no label of this small world mentions: the phrase is the label then
    assert summary["labels"]["phrase_slot_labels"] <= summary["labels"]["derived_slot_labels"]
    assert summary["labels"]["labelled_objects_without_phrase"] == 0
    with pytest.raises(BackboneMismatch):
        load_glasses(out, tiny_clip(seed=1))
    r = CliRunner().invoke(app, ["glasses", "report", "--model", "tiny:0", "--world", str(tiny_world), "--glasses",
                                 str(out), "--no-cache", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    for part in ("ccneg", "mcq", "retrieval_neg", "retrieval"):
        assert set(rep[part]) >= {"CLIP", "CLIPGlasses"}
    # affirmative retrieval: Glasses equals plain CLIP
    assert rep["retrieval"]["CLIP"] == rep["retrieval"]["CLIPGlasses"]
    r = CliRunner().invoke(app, ["glasses", "explain", "--model", "tiny:0", "--glasses", str(out),
                                 "no dog and no cat"])
    assert r.exit_code == 0 and "dog, cat" in r.output


def test_finetune_baseline(tiny_world, tmp_path):
    from sayno.glasses.finetune import FinetuneConfig, finetune_text, load_finetuned

    clip = tiny_clip(seed=0)
    ft = finetune_text(clip, tiny_world, tmp_path / "ft.safetensors", config=FinetuneConfig(epochs=1, threads=1),
                       log=lambda s: None)
    texts = ["a dog but no cat", "a cat"]
    h = clip.encode_text(texts).numpy()
    img = clip.encode_image(torch.zeros(2, 3, 32, 32)).numpy()
    S = ft.score_matrix(TextBatch(texts, h), img)
    assert S.shape == (2, 2) and not np.allclose(S, PlainClip(clip.logit_scale).score_matrix(TextBatch(texts, h), img))
    again = load_finetuned(tmp_path / "ft.safetensors", clip)
    np.testing.assert_array_equal(again.score_matrix(TextBatch(texts, h), img), S)
    with pytest.raises(BackboneMismatch):
        load_finetuned(tmp_path / "ft.safetensors", tiny_clip(seed=1))
    # the frozen backbone itself is untouched
    assert clip.fingerprint == tiny_clip(seed=0).fingerprint


def test_a_relative_data_path_finds_its_images(synthetic, monkeypatch):
    """``--data runs/world`` (relative): every image is found (keys were joined to the root twice)."""
    folder, clip = synthetic
    monkeypatch.chdir(folder.parent)
    src = read_sources(folder.name, "val")
    fs = build_features(src, clip)
    assert len(fs.image_ok) and bool(fs.image_ok.all())
