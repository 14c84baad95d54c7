"""GL-MCM, CSP and AdaNeg (issue 28): hand-computed cases, their conformance to the scorer interface, AdaNeg's
dependence on the test stream's order, and the one-class question."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sayno.backbones.testing import tiny_open_clip
from sayno.errors import InputError
from sayno.ood import CSP, DETECTORS, FRONTIER, GLMCM, SCORERS, AdaNeg, NotFittedError
from sayno.ood.adaneg import Memory, entropy, proxy_cosine
from sayno.ood.csp import SUPERCLASSES, conjugated_labels, mine_part
from sayno.ood.glmcm import glmcm, local_mcm
from sayno.ood.metrics import auroc
from sayno.ood.scorers import neglabel

E = math.e


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------ GL-MCM
def test_glmcm_by_hand():
    classes = np.eye(3)[:2]
    r = 1 / math.sqrt(2)
    # one image: global feature = class 0; patches: class 1, halfway between the classes, the third axis
    tokens = np.array([[[1, 0, 0], [0, 1, 0], [r, r, 0], [0, 0, 1]]], dtype=np.float32)
    best = E / (E + 1)  # softmax([1, 0]) at tau = 1
    assert GLMCM().fit(classes).score_samples(tokens).tolist() == pytest.approx([best + best])
    assert GLMCM(lam=0.5).fit(classes).score_samples(tokens).tolist() == pytest.approx([best + 0.5 * best])
    assert GLMCM(tau=0.5).fit(classes).score_samples(tokens).tolist() == pytest.approx([2 * E**2 / (E**2 + 1)])
    # the pure functions, and unnormalised tokens are normalised first
    cos_local = np.array([[[0.0, 1.0], [r, r], [0.0, 0.0]]])
    assert local_mcm(cos_local).tolist() == pytest.approx([best])
    assert glmcm(np.array([[1.0, 0.0]]), cos_local).tolist() == pytest.approx([2 * best])
    assert GLMCM().fit(classes).score_samples(3 * tokens).tolist() == pytest.approx([2 * best])


def test_glmcm_needs_local_features_and_classifies_globally():
    classes = np.eye(4)[:3]
    sc = GLMCM().fit(classes)
    with pytest.raises(InputError, match="local features"):
        sc.score_samples(np.eye(4)[:2])
    with pytest.raises(InputError, match="dimension"):
        sc.score_samples(np.zeros((1, 2, 5)))
    tokens = np.zeros((2, 3, 4), dtype=np.float32)
    tokens[0, 0, 2] = tokens[1, 0, 1] = 1.0  # global features: class 2, class 1
    tokens[:, 1:, 0] = 1.0  # every patch looks like class 0
    assert sc.predict_class(tokens).tolist() == [2, 1]
    assert sc.score_samples(np.zeros((0, 3, 4))).shape == (0,)


# ------------------------------------------------------------------------------------------ CSP
def test_conjugated_pool_is_adjective_times_superclass():
    adjs = ["red", "glossy", "wooden", "tiny"]
    labels = conjugated_labels(adjs, random_state=3)
    assert labels == conjugated_labels(adjs, random_state=3)  # seeded
    for adj, lab in zip(adjs, labels):
        first, second = lab.split(" ", 1)
        assert first == adj and second in SUPERCLASSES
    assert conjugated_labels(adjs, ["thing"]) == [f"{a} thing" for a in adjs]
    with pytest.raises(InputError):
        conjugated_labels(adjs, [])


def test_csp_mining_by_hand():
    classes = _unit([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = _unit([[1.0, 0.0, 0.01],  # near-duplicate of class 0: above the 0.95 cap, never chosen
                    [0.0, 0.0, 1.0],  # orthogonal to both
                    [0.7, 0.7, 0.0],
                    [-1.0, 0.0, 0.1]])  # opposite class 0
    assert mine_part(labels, classes, ratio=0.5, quantile=0.95).tolist() == [3, 1]
    assert mine_part(labels, classes, ratio=1.0).tolist()[-1] == 0  # capped: ranks last
    assert mine_part(labels, classes, ratio=0.0).tolist() == [3]  # at least one
    assert mine_part(labels[:0], classes).tolist() == []


@pytest.fixture(scope="module")
def tiny():
    return tiny_open_clip(0)


def test_csp_fits_nouns_and_conjugated_labels(tiny):
    nouns = ["dog", "car", "tree", "house", "river", "phone", "shoe", "cloud", "bread", "lamp"]
    adjs = ["red", "glossy", "wooden", "tiny", "ancient", "wet", "loud", "soft", "bright", "empty"]
    sc = CSP(backbone=tiny, nouns=nouns + ["cat"], adjectives=adjs, ratio=0.3).fit(["cat", "fish"])
    assert sc.n_nouns_ == 3 and len(sc.negative_labels_) == 6  # int(0.3 * 10) of each part ("cat" is ID)
    assert set(sc.negative_labels_[:3]) <= set(nouns)
    assert all(lab.split(" ", 1)[1] in SUPERCLASSES for lab in sc.negative_labels_[3:])
    assert sc.scale_ == pytest.approx(100.0)  # tau = 0.01
    x = _unit(np.random.default_rng(0).normal(size=(5, tiny.embed_dim)))
    want = neglabel(x @ sc.class_features_.T, x @ sc.negative_features_.T, 100.0, sc.groups_)
    np.testing.assert_allclose(sc.score_samples(x), want)


# ------------------------------------------------------------------------------------------ AdaNeg
def test_memory_keeps_the_most_confident_entries():
    m = Memory(slots=2, length=2, dim=1)
    for v, ent in ((1.0, 0.5), (2.0, 0.9), (3.0, 0.7), (4.0, 1.0)):
        m.write(0, np.array([v]), ent)
    assert m.count.tolist() == [2, 0]
    assert sorted(m.feats[0, :, 0].tolist()) == [1.0, 3.0]  # 2.0 (0.9) replaced by 3.0 (0.7); 4.0 (1.0) refused
    assert entropy(np.array([[0.5, 0.5]])).tolist() == pytest.approx([math.log(2)])


def test_proxy_cosine_by_hand():
    text = np.eye(2)
    m = Memory(slots=2, length=3, dim=2)
    m.write(0, np.array([0.0, 1.0]), 0.1)  # slot 0: its text (1, 0) and one image (0, 1)
    x = np.array([[1.0, 0.0]])
    # task-adaptive: mean of (1, 0) and (0, 1) -> (r, r); cos with x = r. Slot 1 empty: its text, cos 0
    r = 1 / math.sqrt(2)
    assert proxy_cosine(x, text, m, None)[0].tolist() == pytest.approx([r, 0.0])
    # sample-adaptive: weights exp(-b (1 - 1)) = 1 and exp(-b (1 - 0)) = e^-b on the two entries
    b = 2.0
    w = math.exp(-b)
    assert proxy_cosine(x, text, m, b)[0].tolist() == pytest.approx([(1 + w * 0) / math.sqrt(1 + w * w), 0.0])


def test_adaneg_score_by_hand():
    """One image, fresh memory: it is written to its class's slot, then scored against the updated proxies."""
    classes = np.eye(3)[:2]
    neg = np.eye(3)[2:]
    sc = AdaNeg(negative_features=neg, tau=1.0, lam=0.5, beta=1.0, n_groups=1).fit(classes)
    x = _unit([[2.0, 1.0, 0.0]])
    cos_id, cos_neg = x @ classes.T, x @ neg.T
    s_nl = neglabel(cos_id, cos_neg, 1.0)
    assert s_nl[0] >= 0.5  # ID side: written to class 0's slot
    ent = np.r_[classes[0][None], x]
    w = np.exp(-(1 - ent @ x[0]))
    proxy = _unit(w @ ent)
    s_ada = neglabel(np.c_[x @ proxy, x @ classes[1]], cos_neg, 1.0)
    assert sc.score_samples(x).tolist() == pytest.approx((s_ada + 0.5 * s_nl).tolist())
    assert sc.memory_.count.tolist() == [1, 0, 0]


def test_adaneg_depends_on_order_but_not_on_repetition():
    rng = np.random.default_rng(0)
    classes, neg = np.eye(6)[:2], _unit(np.eye(6)[2:] + 0.05)
    x = _unit(np.r_[np.eye(6)[rng.integers(0, 2, 40)], np.eye(6)[rng.integers(2, 6, 40)]] + 0.3 * rng.normal(size=(80, 6)))
    sc = AdaNeg(negative_features=neg, batch_size=8, memory_length=2).fit(classes)
    first = sc.score_samples(x)
    np.testing.assert_array_equal(sc.score_samples(x), first)  # same order: same scores (memory reset per call)
    rev = sc.score_samples(x[::-1])[::-1]
    assert not np.allclose(rev, first)  # another order: other scores (the stated dependence)
    shuffled = AdaNeg(negative_features=neg, batch_size=8, memory_length=2, shuffle=True, random_state=7).fit(classes)
    np.testing.assert_array_equal(shuffled.score_samples(x), shuffled.score_samples(x))  # same seed: same scores
    other = AdaNeg(negative_features=neg, batch_size=8, memory_length=2, shuffle=True, random_state=8).fit(classes)
    assert not np.allclose(other.score_samples(x), shuffled.score_samples(x))
    # streaming in pieces (OpenOOD feeds batches) equals one call when the pieces follow the batch boundaries
    sc.reset()
    pieces = np.concatenate([sc.score_partial(x[s:s + 16]) for s in range(0, 80, 16)])
    np.testing.assert_allclose(pieces, first)
    with pytest.raises(NotFittedError):
        AdaNeg(negative_features=neg).reset()


# ------------------------------------------------------------------------------------------ conformance
D, C = 8, 3  # the shape of conftest's ood_toy


@pytest.fixture(scope="module")
def toy(ood_toy):
    return ood_toy[:5]


def _as_input(name, x):
    """GL-MCM reads image tokens: the image feature and two patches repeating it."""
    return np.repeat(x[:, None], 3, axis=1) if name == "GL-MCM" else x


def test_registries():
    assert set(FRONTIER) == {"GL-MCM", "CSP", "AdaNeg"}
    assert DETECTORS == {**SCORERS, **FRONTIER}


@pytest.mark.parametrize("name", list(FRONTIER))
def test_frontier_detectors_conform(name, toy):
    classes, labels, id_x, ood_x, negatives = toy
    kw = {"negative_features": negatives, "n_groups": 2} if name != "GL-MCM" else {}
    sc = FRONTIER[name](**kw).fit(classes)
    assert sc.higher_is_id is True and sc.name == name and not sc.has_rule
    xi, xo = _as_input(name, id_x), _as_input(name, ood_x)
    s_id, s_ood = sc.score_samples(xi), sc.score_samples(xo)
    assert s_id.shape == (60,) and s_ood.shape == (50,)
    y = np.r_[np.ones(60), np.zeros(50)]
    assert auroc(s_id, s_ood) == pytest.approx(roc_auc_score(y, np.r_[s_id, s_ood]))
    assert auroc(s_id, s_ood) == 1.0
    assert (sc.predict_class(xi) == labels).all()
    assert sc.score_samples(xi[:1]).shape == (1,)
    with pytest.raises(NotFittedError):
        sc.predict(xi)
    sc.calibrate(xi, tpr=0.95)
    assert np.mean(sc.decision_function(xi) >= 0) >= 0.95


@pytest.mark.parametrize("name", list(FRONTIER))
def test_one_class_question_keeps_working(name, toy):
    """One ID class: every detector still fits, scores and decides (with a threshold) without error."""
    classes, _, id_x, ood_x, negatives = toy
    kw = {"negative_features": negatives, "n_groups": 2} if name != "GL-MCM" else {}
    sc = FRONTIER[name](**kw).fit(classes[:1])
    xi, xo = _as_input(name, id_x), _as_input(name, ood_x)
    s = sc.score_samples(np.r_[xi, xo])
    assert s.shape == (110,) and np.isfinite(s).all()
    assert (sc.predict_class(xi) == 0).all()
    if name == "GL-MCM":  # one class: softmax over one class is 1 for the image and for every patch
        assert s.tolist() == pytest.approx([2.0] * 110)
    else:  # the negatives still separate: ID images of class 0 score above the OOD ones
        assert auroc(s[:60][np.argmax(id_x @ classes.T, 1) == 0], s[60:]) == 1.0
    sc.calibrate(xi)
    assert sc.predict(xi).shape == (60,)


def test_the_table_streams_each_id_set_with_the_ood_sets(toy):
    from sayno.ood.bench import stream_scores

    classes, _, id_x, ood_x, negatives = toy
    sc = AdaNeg(negative_features=negatives, n_groups=2, batch_size=16).fit(classes)
    s_id, s_ood = stream_scores(sc, id_x, {"a": ood_x[:20], "b": ood_x[20:]}, seed=3)
    allx = np.r_[id_x, ood_x]
    order = np.random.default_rng(3).permutation(110)
    want = np.empty(110)
    want[order] = sc.score_samples(allx[order])
    np.testing.assert_array_equal(np.r_[s_id, s_ood["a"], s_ood["b"]], want)
    again = stream_scores(sc, id_x, {"a": ood_x[:20], "b": ood_x[20:]}, seed=3)
    np.testing.assert_array_equal(again[0], s_id)  # same sets, order and seed: same scores


def _pngs(folder, n, seed):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_the_table_has_the_new_rows_for_a_one_class_question(tmp_path, tiny):
    """One ID class through evaluate_ood (CLIPN's user case): GL-MCM, CSP and AdaNeg rows all appear, with their
    metrics, beside the baselines; a user word list stands in for WordNet (CSP: nouns only, no adjectives)."""
    from sayno.features import FeatureCache
    from sayno.ood.bench import evaluate_ood

    _pngs(tmp_path / "id" / "dog", 6, 0)
    _pngs(tmp_path / "ood", 5, 1)
    _pngs(tmp_path / "shift" / "dog", 4, 2)
    words = ["car", "tree", "house", "river", "phone", "shoe", "cloud", "bread", "lamp", "chair"]
    res = evaluate_ood(tiny, ["dog"], tmp_path / "id", {"far": tmp_path / "ood"}, words=words,
                       shifted_id={"other": tmp_path / "shift"}, methods=["MCM", "NegLabel", "GL-MCM", "CSP", "AdaNeg"],
                       cache=FeatureCache(tmp_path / "cache"), progress=False)
    assert list(res["methods"]) == ["MCM", "NegLabel", "GL-MCM", "CSP", "AdaNeg"]
    assert res["local_features"] is True and res["csp_labels"]["nouns"] == 1
    for row, m in res["methods"].items():
        assert m["ID acc"] == 100.0 and m["far AUROC"] is not None and m["other AUROC"] is not None, row
    assert res["methods"]["GL-MCM"]["far AUROC"] == 50.0  # one class: every score is 2, ties count one half
