"""sayno.ood.metrics: exact toy values and agreement with scikit-learn on random and tied inputs."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from sayno.ood.metrics import accuracy, aupr_in, aupr_out, auroc, fpr95_openood, fpr_at_tpr, ood_metrics


def _labels(i, o):
    return np.r_[np.ones(len(i)), np.zeros(len(o))], np.r_[i, o]


def sk_fpr(i, o, tpr=0.95):
    y, s = _labels(i, o)
    fpr, tp, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr[np.argmax(tp >= tpr)]


def sk_fpr_openood(i, o, tpr=0.95):  # OpenOOD: OOD positive, negated scores, share of ID flagged
    y, s = _labels(i, o)
    fpr, tp, _ = roc_curve(1 - y, -s, drop_intermediate=False)
    return fpr[np.argmax(tp >= tpr)]


def test_toy_separated_reversed_and_ties():
    i, o = np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0])
    assert auroc(i, o) == 1.0 and fpr_at_tpr(i, o) == 0.0 and aupr_in(i, o) == 1.0 and aupr_out(i, o) == 1.0
    assert auroc(o, i) == 0.0 and fpr_at_tpr(o, i) == 1.0
    # constant scores: AUROC 1/2, every OOD accepted
    c = np.ones(4)
    assert auroc(c, c[:3]) == 0.5 and fpr_at_tpr(c, c[:3]) == 1.0 and fpr95_openood(c, c[:3]) == 1.0
    # one tie: pairs (1,0)>, (1,1)=, (2,0)>, (2,1)> -> 3.5 / 4
    assert auroc([1.0, 2.0], [0.0, 1.0]) == pytest.approx(0.875)
    # 20 ID scores 1..20: 95% recall keeps 19 of them (threshold 2); OOD at 1.5 and 2 -> half accepted
    ids = np.arange(1.0, 21.0)
    assert fpr_at_tpr(ids, [1.5, 2.0]) == 0.5
    assert fpr_at_tpr(ids, [1.5, 2.0], tpr=1.0) == 1.0
    m = ood_metrics(i, o)
    assert m == {"AUROC": 100.0, "FPR95": 0.0, "AUPR_IN": 100.0, "AUPR_OUT": 100.0}


def test_openood_is_the_mirror_convention():
    ids = np.arange(1.0, 21.0)
    ood = np.r_[np.full(19, -10.0), 15.0]
    # MCM/CLIPN: keep 19 of 20 ID (threshold 2) -> the OOD image at 15 is accepted: 1/20
    assert fpr_at_tpr(ids, ood) == pytest.approx(0.05)
    # OpenOOD: flag 19 of 20 OOD (score <= -10) -> no ID image flagged
    assert fpr95_openood(ids, ood) == 0.0
    assert fpr95_openood(ids, ood) == sk_fpr_openood(ids, ood)
    # a diagonal (tied-step) ROC: exact crossing 13/20; OpenOOD's drop_intermediate=True reads 14/20
    ood2 = np.arange(0.0, 20.0) - 5
    assert fpr95_openood(ids, ood2) == pytest.approx(13 / 20) == sk_fpr_openood(ids, ood2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [False, True])
def test_against_sklearn(seed, tied):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 60, size=2)
    i, o = rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, m)
    if tied:  # few distinct values: many ties within and across the two sets
        i, o = np.round(i * 2) / 2, np.round(o * 2) / 2
    y, s = _labels(i, o)
    assert auroc(i, o) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    for t in (0.95, 0.9, 0.5, 1.0):
        assert fpr_at_tpr(i, o, t) == pytest.approx(sk_fpr(i, o, t), abs=1e-12)
        assert fpr95_openood(i, o, t) == pytest.approx(sk_fpr_openood(i, o, t), abs=1e-12)
    assert aupr_in(i, o) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert aupr_out(i, o) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    res = ood_metrics(i, o)
    assert res["AUROC"] == pytest.approx(100 * roc_auc_score(y, s))
    assert res["FPR95"] == pytest.approx(100 * sk_fpr(i, o))


def test_validation():
    with pytest.raises(ValueError, match="ood_scores is empty"):
        auroc([1.0], [])
    with pytest.raises(ValueError, match="id_scores is empty"):
        ood_metrics([], [1.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fpr_at_tpr([1.0, np.nan], [0.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        aupr_in([1.0], [np.inf])
    with pytest.raises(ValueError, match="1-D"):
        auroc(np.ones((2, 2)), [0.0])
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0], [0.0], tpr=0.0)
    with pytest.raises(ValueError, match="numeric"):
        auroc(["a"], [0.0])


def test_accuracy():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert accuracy(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), [0, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        accuracy([], [])
