"""OOD scorers: the pure maths by hand, one conformance test over the registry, degenerate inputs, the bench."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sayno.base.prompts import DuplicateClassError
from sayno.clipn.infer import Clipn
from sayno.clipn.model import NoTextEncoder
from sayno.clipn.testing import tiny_backbone
from sayno.ood import SCORERS, ClipnATD
from sayno.ood import scorers as S
from sayno.ood.metrics import auroc, fpr_at_tpr, ood_metrics
from sayno.ood.wordlist import candidates, read_word_list, wordnet_words


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------ pure maths
def test_logit_scores_by_hand():
    logits = np.array([[2.0, 0.0], [1.0, 1.0]])
    e = math.exp(2)
    assert S.msp(logits).tolist() == pytest.approx([e / (e + 1), 0.5])
    assert S.max_logit(logits).tolist() == [2.0, 1.0]
    assert S.energy(logits).tolist() == pytest.approx([math.log(e + 1), math.log(2 * math.e)])
    assert S.energy(logits, temperature=2.0).tolist() == pytest.approx([2 * math.log(math.e + 1), 1 + 2 * math.log(2)])
    cos = np.array([[0.5, -0.5]])
    assert S.mcm(cos).tolist() == pytest.approx([math.e ** 0.5 / (math.e ** 0.5 + math.e ** -0.5)])
    assert S.mcm(cos, tau=0.5).tolist() == pytest.approx([math.e / (math.e + math.e ** -1)])


def test_neglabel_by_hand():
    cos_id = np.array([[0.5, 0.0]])
    cos_neg = np.array([[0.2, 0.1, 0.0, 0.3]])
    s = 10.0
    sid = math.exp(5) + 1
    one = sid / (sid + math.exp(2) + math.exp(1) + 1 + math.exp(3))
    assert S.neglabel(cos_id, cos_neg, s).tolist() == pytest.approx([one])
    groups = [np.array([0, 1]), np.array([2, 3])]
    two = 0.5 * (sid / (sid + math.exp(2) + math.exp(1)) + sid / (sid + 1 + math.exp(3)))
    assert S.neglabel(cos_id, cos_neg, s, groups).tolist() == pytest.approx([two])


def test_negative_label_mining_keeps_the_least_similar_words():
    classes = _unit([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    words = _unit([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0], [0.7, 0.7, 0.0], [-1.0, 0.0, 0.1]])
    idx = S.mine_negative_labels(words, classes, ratio=0.5, quantile=0.95)
    assert sorted(idx.tolist()) == [1, 3]
    assert S.mine_negative_labels(words, classes, ratio=0.0).tolist() == [3]  # at least one


# ------------------------------------------------------------------------------------------ conformance
D, C = 8, 3  # the shape of conftest's ood_toy


@pytest.fixture(scope="module")
def toy(ood_toy):
    return ood_toy


def _fitted(name, toy):
    classes, _, _, _, negatives, no = toy
    cls = SCORERS[name]
    if name == "NegLabel":
        return cls(logit_scale=20.0, negative_features=negatives, n_groups=2).fit(classes)
    if name.startswith("CLIPN"):
        return cls(logit_scale=20.0).fit((classes, no))
    return cls(logit_scale=20.0).fit(classes)


@pytest.mark.parametrize("name", list(SCORERS))
def test_every_scorer_conforms(name, toy):
    _, labels, id_x, ood_x, _, _ = toy
    sc = _fitted(name, toy)
    assert sc.higher_is_id is True and sc.name == name
    s_id, s_ood = sc.score_samples(id_x), sc.score_samples(ood_x)
    assert s_id.shape == (60,) and s_ood.shape == (50,)
    # separable toy data: every method ranks ID above OOD, and our AUROC equals scikit-learn's
    y = np.r_[np.ones(60), np.zeros(50)]
    assert auroc(s_id, s_ood) == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]))
    assert auroc(s_id, s_ood) == 1.0 and fpr_at_tpr(s_id, s_ood) == 0.0
    assert (sc.predict_class(id_x) == labels).all()
    assert sc.score_samples(id_x[:1]).shape == (1,)  # one image
    assert sc.score_samples(np.zeros((0, D))).shape == (0,)  # no image
    if sc.has_rule:
        pred = sc.predict(np.r_[id_x, ood_x])
        assert (pred[:60] == labels).mean() > 0.9 and (pred[60:] == -1).mean() > 0.9
    else:
        with pytest.raises(S.NotFittedError):
            sc.predict(id_x)
        sc.calibrate(id_x, tpr=0.95)
        assert np.mean(sc.decision_function(id_x) >= 0) >= 0.95
        assert set(np.unique(sc.predict(ood_x))) == {-1}


def test_scorers_validate_inputs(toy):
    classes = toy[0]
    with pytest.raises(S.NotFittedError):
        S.MSP(logit_scale=1.0).score_samples(classes)
    sc = S.MSP(logit_scale=1.0).fit(classes)
    with pytest.raises(ValueError, match="dimension"):
        sc.score_samples(np.ones((2, D + 1)))
    with pytest.raises(ValueError, match="NaN"):
        sc.score_samples(np.full((1, D), np.nan))
    with pytest.raises(ValueError, match="logit_scale"):
        S.MSP().fit(classes)
    with pytest.raises(DuplicateClassError):
        S.MaxLogit(logit_scale=1.0).fit(np.r_[classes, classes[:1]])


def test_one_class_and_identical_scores():
    x = _unit(np.random.default_rng(1).normal(size=(5, D)))
    one = np.eye(D)[:1]
    assert S.MSP(logit_scale=10.0).fit(one).score_samples(x).tolist() == [1.0] * 5
    assert S.MCM().fit(one).score_samples(x).tolist() == pytest.approx([1.0] * 5)
    m = ood_metrics(np.ones(5), np.ones(3))  # identical scores: no information
    assert m["AUROC"] == 50.0 and m["FPR95"] == 100.0


def test_scorers_fit_on_names_through_a_backbone():
    bb = tiny_backbone(seed=0)
    names = ["dog", "cat", "apple"]
    msp = S.MSP(backbone=bb).fit(names)
    assert msp.classes_ == names and msp.class_features_.shape == (3, bb.embed_dim)
    assert msp.logit_scale_ == pytest.approx(bb.logit_scale)
    neg = S.NegLabel(backbone=bb, words=["dog", "car", "house", "tree", "blue", "music", "idea"], ratio=0.5,
                     n_groups=2).fit(names)
    assert "dog" not in neg.negative_labels_ and len(neg.negative_labels_) == 3  # round(0.5 * 6)
    clipn = Clipn(bb, NoTextEncoder.from_backbone(bb))
    atd = ClipnATD(clipn=clipn).fit(names)
    assert atd.score_samples(msp.class_features_).shape == (3,)
    with pytest.raises(DuplicateClassError):
        S.MCM(backbone=bb).fit(["dog", "Dog"])
    with pytest.raises(ValueError, match="backbone"):
        S.MCM().fit(names)


# ------------------------------------------------------------------------------------------ word lists
def test_word_lists(tmp_path):
    p = tmp_path / "words.txt"
    p.write_text("# negatives\ncar\n\nhouse\ncar\n  blue  sky \n")
    assert read_word_list(p) == ["car", "house", "blue sky"]
    assert candidates(["Dog", "car", "hot dog"], ["dog", "hot_dog"]) == ["car"]
    try:
        words = wordnet_words()
    except ValueError:
        pytest.skip("WordNet not installed")
    assert len(words) > 50_000 and "zebra" in words and all(" " not in w for w in words[:1000])


# ------------------------------------------------------------------------------------------ the bench
def test_evaluate_ood_on_a_tiny_world(tmp_path):
    from sayno.ood.bench import evaluate_ood, print_ood_table
    from sayno.world import WorldConfig, build_world

    w = tmp_path / "w"
    build_world(w, WorldConfig(train_groups=1, val_groups=1, test_groups=1, caption_images=4, classify_per_class=1,
                               ood_id_per_class=1, ood_per_class=1), parts=("ood",), progress=False)
    (tmp_path / "empty").mkdir()
    bb = tiny_backbone(seed=0)
    clipn = Clipn(bb, NoTextEncoder.from_backbone(bb))
    o = w / "ood"
    res = evaluate_ood(bb, o / "id_classes.txt", o / "id", {"seen": o / "near", "none": tmp_path / "empty"},
                       clipn={"a": clipn, "b": clipn}, shifted_id={"same": o / "id"}, words=["car", "idea", "blue"],
                       methods=["MSP", "NegLabel", "CLIPN-ATD"], progress=False, plots=tmp_path / "plots",
                       openood_fpr=True)
    json.dumps(res)  # JSON-ready
    m = res["methods"]
    assert set(m) == {"MSP", "NegLabel", "CLIPN-ATD [a]", "CLIPN-ATD [b]", "CLIPN-ATD (mean of 2)"}
    assert res["ood_sets"]["none"]["n"] == 0 and m["MSP"]["none AUROC"] is None
    assert m["MSP"]["avg AUROC"] == m["MSP"]["seen AUROC"]  # the empty set is not averaged
    assert "seen flagged OOD %" in m["CLIPN-ATD [a]"] and "seen flagged OOD %" not in m["MSP"]
    assert m["CLIPN-ATD (mean of 2)"]["avg AUROC std"] == 0.0
    assert m["MSP"]["same ID acc"] == m["MSP"]["ID acc"] and "seen FPR95 (OpenOOD)" in m["MSP"]
    assert all(p.endswith(".png") for p in res["plots"]) and len(res["plots"]) == 1 + (len(m) - 1)  # ROC of "seen" + a histogram per row but the mean
    from rich.console import Console

    con = Console(record=True, width=250)
    print_ood_table(res, con)
    assert "CLIPN-ATD" in con.export_text()


def test_baseline_scorers_do_not_import_clipn():
    """MSP, Energy, MaxLogit, MCM and NegLabel sit on the base layer, not on CLIPN (issue 9: no import circle)."""
    import grimp  # comes with import-linter (the test extra)
    graph = grimp.build_graph("sayno")
    assert not graph.chain_exists(importer="sayno.ood.scorers", imported="sayno.clipn", as_packages=True)
    assert not graph.chain_exists(importer="sayno.clipn", imported="sayno.ood", as_packages=True)
