"""Training-free Glasses (sayno.glasses.training_free): the linear form, CLIP-identical affirmative rows, hedges,
calibration and its fallbacks, unusual logit scales, and end to end on randomly initialised real architectures
(open_clip ViT-B-32, a Hugging Face CLIP folder) through `sayno index build` and `sayno search`."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sayno.backbones import build_open_clip_model, save_open_clip_checkpoint, write_clip_tokenizer_files
from sayno.base.scoring import PlainClip, TextBatch
from sayno.glasses import TrainingFreeGlasses, TrainingFreeSettings, calibrate
from sayno.glasses.training_free import (
    NAME,
    CalibrationWarning,
    content_free,
    fallback_calibration,
    identity,
    is_training_free,
)
from sayno.search import IndexMismatch, Searcher, build_index, read_index

D = 16
CAPTIONS = ["a dog", "a cat but no dog", "no dog", "a photo without a dog", "a cat, probably no dog",
            "no dog and no cat", "no", "a notebook", ""]


def _encoder(texts: list[str]) -> np.ndarray:
    """A deterministic text encoder: normalised vectors seeded by the text."""
    out = []
    for t in texts:
        rng = np.random.default_rng(abs(hash(("tf", t))) % (2**32))
        v = rng.standard_normal(D)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, np.float32)


def _images(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _glasses(scale: float = 100.0, reference: np.ndarray | None = None, **kw) -> TrainingFreeGlasses:
    return TrainingFreeGlasses(phrase_encoder=_encoder, logit_scale=scale, embed_dim=D,
                               reference_images=_images(200, 1) if reference is None else reference, **kw)


def _batch(texts: list[str]) -> TextBatch:
    return TextBatch(texts, _encoder(texts))


# ------------------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("scale", [100.0, 14.2857, 1.0])
def test_affirmative_rows_equal_plain_clip_and_score_is_linear(scale):
    g = _glasses(scale)
    text, img = _batch(CAPTIONS), _images(50, 2)
    got = g.score_matrix(text, img)
    plain = PlainClip(scale).score_matrix(text, img)
    negated = [1, 2, 3, 4, 5]
    for i in set(range(len(CAPTIONS))) - set(negated):
        assert np.array_equal(got[i], plain[i]), CAPTIONS[i]  # bit for bit
    assert all(not np.allclose(got[i], plain[i]) for i in negated)
    q, c = g.query_vectors(text, g.slots(text))
    np.testing.assert_allclose(got, scale * (q @ img.T + c[:, None]), rtol=1e-5, atol=1e-4 * scale)
    pairs = g.score_pairs(text, img[: len(CAPTIONS)])
    np.testing.assert_allclose(pairs, np.diag(got[:, : len(CAPTIONS)]), rtol=1e-5, atol=1e-4 * scale)
    assert np.array_equal(pairs[0], PlainClip(scale).score_pairs(text, img[: len(CAPTIONS)])[0])


def test_score_scales_with_the_logit_scale():
    text, img = _batch(CAPTIONS), _images(20, 3)
    a, b = _glasses(100.0).score_matrix(text, img), _glasses(7.0).score_matrix(text, img)
    np.testing.assert_allclose(a / 100.0, b / 7.0, rtol=1e-5, atol=1e-5)


def test_negated_object_is_repelled_and_hedges_repel_less():
    g = _glasses()
    dog = g.encode_phrases(["dog"])[0]
    images = np.stack([dog, -dog])  # an image that is all dog, one that is not at all
    remainder = 100.0 * (g.encode_texts(["a cat"]) @ images.T)  # both captions' base: "a cat"
    s = g.score_matrix(_batch(["a cat but no dog", "a cat, probably no dog"]), images) - remainder
    assert s[0, 0] < s[0, 1] and s[1, 0] < s[1, 1]  # the negation term is lower where the dog is
    assert (s[0, 1] - s[0, 0]) > (s[1, 1] - s[1, 0]) > 0  # the hedged caption repels less
    lam = g.slots(_batch(["a cat but no dog", "a cat, probably no dog"])).lam
    assert float(lam[1]) == pytest.approx(float(lam[0]) * g.settings.hedge_factor)


def test_only_negating_captions_get_a_base_and_name_nothing():
    assert content_free("") and content_free("a photo") and content_free("There is an image of")
    assert not content_free("a cat") and not content_free("a photo of a cat")
    g = _glasses()
    s = g.slots(_batch(["no dog", "a photo without a dog", "a cat but no dog"]))
    assert s.offset[0] == s.offset[1] == pytest.approx(g.calibration.level) and s.offset[2] == 0.0
    assert np.allclose(s.base[0].numpy(), 0) and np.allclose(s.base[1].numpy(), 0)
    # "no" negates nothing: plain score; "notebook" is no cue
    s = g.slots(_batch(["no", "a notebook"]))
    assert len(s.owner) == 0


def test_negating_everything_and_unknown_words_stay_bounded():
    g = _glasses(settings=TrainingFreeSettings(strength=50.0, lambda_max=0.8))
    assert g.calibration.lam == pytest.approx(0.8)
    text = _batch(["no " + " and no ".join(f"zzqx{i}" for i in range(6))])
    s = g.score_matrix(text, _images(30, 4))
    assert np.isfinite(s).all()
    lam = g.slots(text).lam
    assert len(lam) == 6 and float(lam.sum()) == pytest.approx(2 * 0.8)  # the caption's total is bounded
    assert np.abs(s).max() <= 100.0 * (2 * 0.8 * 3 + abs(g.calibration.level)) + 1e-3


def test_explain_and_identity():
    g = _glasses()
    e = g.explain(["a cat, probably no dog", "a dog"])
    assert e[0]["phrases"] == ["dog"] and e[0]["hedged"] == [True] and e[0]["slots"] == 1
    assert e[1]["slots"] == 0 and e[1]["negated"] is False
    ident = g.identity()
    assert is_training_free(ident) and ident["name"] == NAME and ident["sha1"] == identity()["sha1"]
    assert identity(TrainingFreeSettings(strength=0.5))["sha1"] != ident["sha1"]
    assert json.loads(json.dumps(ident))["calibration"]["reference"] == 200


# ------------------------------------------------------------------------------------------ calibration
def test_calibration_reads_where_objects_fall_without_labels():
    rng = np.random.default_rng(0)
    bank = _images(40, 5)
    # each image shows one bank object strongly
    imgs = bank[rng.integers(0, 40, 300)] + 0.3 * _images(300, 6)
    imgs /= np.linalg.norm(imgs, axis=1, keepdims=True)
    cal = calibrate(bank, imgs)
    assert not cal.fallback and cal.reference == 300
    assert cal.absent < cal.level < cal.present + cal.spread_affirmative
    assert cal.lam > 0 and np.isfinite(cal.tau)


@pytest.mark.parametrize("n", [0, 3])
def test_empty_or_tiny_reference_falls_back_with_a_warning(n):
    with pytest.warns(CalibrationWarning, match="fallback"):
        g = _glasses(reference=_images(n, 7) if n else np.zeros((0, D), np.float32))
    assert g.calibration == fallback_calibration(g.settings, n)
    text, img = _batch(CAPTIONS), _images(10, 8)
    assert np.isfinite(g.score_matrix(text, img)).all()
    with pytest.warns(CalibrationWarning):
        TrainingFreeGlasses(phrase_encoder=_encoder, logit_scale=10.0, embed_dim=D)


def test_identical_or_nonfinite_reference_images_fall_back():
    same = np.repeat(_images(1, 9), 50, axis=0)
    with pytest.warns(CalibrationWarning, match="alike"):
        assert _glasses(reference=same).calibration.fallback
    bad = _images(40, 10)
    bad[::2] = np.nan
    assert _glasses(reference=bad).calibration.reference == 20


def test_bad_logit_scale_and_missing_backbone_are_refused():
    with pytest.raises(ValueError, match="logit scale"):
        TrainingFreeGlasses(phrase_encoder=_encoder, logit_scale=float("nan"), embed_dim=D)
    with pytest.raises(ValueError, match="backbone or a phrase_encoder"):
        TrainingFreeGlasses(logit_scale=10.0, embed_dim=D)
    with pytest.raises(ValueError, match="Backbone"):
        TrainingFreeGlasses.from_backbone("open_clip:ViT-B-32")


# ------------------------------------------------------------------------------------------ end to end
def _photos(folder: Path, n: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def _hf_folder(root: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                     "max_position_embeddings": 16, "eos_token_id": 49407},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                       "num_hidden_layers": 1, "image_size": 32, "patch_size": 16},
        projection_dim=32, logit_scale_init_value=math.log(30.0),
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLIPModel(cfg).eval()
    folder = root / "hf-clip"
    model.save_pretrained(folder)
    write_clip_tokenizer_files(folder, context_length=16)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _app():
    from sayno.cli import app

    return app


def _out(r) -> str:
    return " ".join(r.output.split())


def _index_and_search(spec: str, tmp_path: Path, n_images: int = 20) -> None:
    photos = _photos(tmp_path / "photos", n_images)
    index = tmp_path / "idx"
    runner = CliRunner()
    r = runner.invoke(_app(), ["index", "build", str(photos), "--out", str(index), "--model", spec])
    assert r.exit_code == 0, r.output
    assert "CLIPGlasses (training-free)" in _out(r)
    meta = read_index(index).glasses
    assert is_training_free(meta) and meta["calibration"]["reference"] == n_images
    assert not meta["calibration"]["fallback"] and meta["version"] >= 1 and "settings" in meta
    r = runner.invoke(_app(), ["search", str(index), "a beach with no people", "-k", "3"])
    assert r.exit_code == 0, r.output
    assert "CLIPGlasses (training-free)" in _out(r) and "leaving out: people" in _out(r)
    r = runner.invoke(_app(), ["search", str(index), "a beach with no people", "-k", "3", "--json"])
    res = json.loads(r.stdout)
    assert res["method"] == "glasses" and res["glasses"] == NAME and len(res["hits"]) == 3
    r = runner.invoke(_app(), ["search", str(index), "a beach", "-k", "3", "--json"])
    assert json.loads(r.stdout)["method"] == "clip"


def test_end_to_end_hf_clip_folder(tmp_path):
    _index_and_search(f"hf:{_hf_folder(tmp_path)}", tmp_path)


@pytest.mark.slow
def test_end_to_end_open_clip_vit_b_32(tmp_path):
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-32")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_open_clip_model(cfg).eval()
    path = save_open_clip_checkpoint(model, cfg, tmp_path / "vit-b-32.safetensors")
    del model
    _index_and_search(f"open_clip:ViT-B-32:{path}", tmp_path)


def test_index_refuses_the_other_kind_of_glasses(embedded, tmp_path):
    photos = _photos(tmp_path / "photos", 20)
    tf_index, trained_index = tmp_path / "tf", tmp_path / "trained"
    from sayno.search import IndexConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        build_index(photos, tf_index, IndexConfig(glasses="training-free"), backbone=embedded, progress=False)
    build_index(photos, trained_index, backbone=embedded, progress=False)  # auto: the shipped checkpoint
    assert Searcher(tf_index, backbone=embedded).glasses.name == NAME
    assert Searcher(tf_index, backbone=embedded, glasses="training-free").glasses.name == NAME
    shipped = read_index(trained_index).glasses["path"]
    with pytest.raises(IndexMismatch, match="training-free"):
        Searcher(tf_index, backbone=embedded, glasses=shipped)
    with pytest.raises(IndexMismatch, match="training-free"):
        Searcher(trained_index, backbone=embedded, glasses="training-free")
    with pytest.raises(IndexMismatch):  # and the incremental build refuses to switch kinds
        build_index(photos, tf_index, IndexConfig(glasses=shipped), backbone=embedded, progress=False)
    searcher = Searcher(tf_index, backbone=embedded)
    hits = searcher.search("no dog", k=5)
    assert hits.method == "glasses" and hits.glasses == NAME
    assert searcher.glasses._bank is None  # the stored calibration carries mu: no bank re-embedding per search


def test_eval_training_free_row(embedded, tmp_path, monkeypatch):
    from sayno.eval import runner

    monkeypatch.setattr(runner, "load", lambda *a, **k: embedded)
    photos = _photos(tmp_path / "photos", 20)
    rows = ["image_path,caption,negative_caption"] + [f"{p.name},a photo,a photo with no dog"
                                                      for p in sorted(photos.glob("*.png"))]
    (tmp_path / "cc.csv").write_text("\n".join(rows) + "\n")
    r = runner.evaluate("ccneg", model="embedded", data=tmp_path / "cc.csv", root=photos,
                        glasses=Path("training-free"), use_cache=False, progress=False)
    assert set(r["methods"]) == {"CLIP", NAME}
    methods = runner.methods_for(embedded, runner.shipped_weights("glasses", "embedded"), training_free_row=True)
    assert [m.name for m in methods] == ["CLIP", "CLIPGlasses", NAME]


def test_large_reference_is_sampled_before_copying(tmp_path, monkeypatch):
    from sayno.glasses import training_free as tf

    monkeypatch.setattr(tf, "MAX_REFERENCE", 50)
    path = tmp_path / "vectors.npy"
    np.save(path, _images(400, 11))
    g = _glasses(reference=np.load(path, mmap_mode="r"))
    assert g.calibration.reference == 50 and not g.calibration.fallback
