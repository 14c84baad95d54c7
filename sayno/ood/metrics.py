"""OOD-detection metrics as pure numpy functions.

Convention: every score is **higher = more in-distribution**, and ID is the positive class. Scorers
convert to this direction once; these functions never flip a sign on their own (``aupr_out`` and
``fpr95_openood`` state their mirror-image conventions in their names and docstrings).

Each function takes ``id_scores`` (n,) and ``ood_scores`` (m,) and validates them: a non-1-D, empty, NaN
or infinite input raises ``ValueError`` (callers decide how to report an empty OOD set). Ties are handled
exactly: AUROC counts a tied ID/OOD pair as 1/2, so constant scores give AUROC 0.5 and FPR95 1.0 (every
OOD image is accepted at the threshold that accepts the ID images).

All functions return fractions in [0, 1] except :func:`ood_metrics`, which reports percentages.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["accuracy", "aupr_in", "aupr_out", "auroc", "fpr95_openood", "fpr_at_tpr", "ood_metrics"]


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per image), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: need at least one score")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite score(s), e.g. at index "
                         f"{int(np.flatnonzero(bad)[0])}")
    return a


def _pair(id_scores: ArrayLike, ood_scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    return _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve with ID positive: P(id > ood) + 1/2 P(id == ood), from average ranks.

    Equals ``sklearn.metrics.roc_auc_score(labels with ID=1, scores)``.
    """
    i, o = _pair(id_scores, ood_scores)
    n, m = i.size, o.size
    _, inverse, counts = np.unique(np.concatenate([i, o]), return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    rank_sum = float(avg_rank[inverse[:n]].sum())
    return (rank_sum - n * (n + 1) / 2.0) / (n * m)


def _fpr_at(pos: np.ndarray, neg: np.ndarray, tpr: float) -> float:
    """Share of ``neg`` with score >= t, for the largest t that keeps at least ``tpr`` of ``pos``."""
    if not (0.0 < tpr <= 1.0) or math.isnan(tpr):
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    s = np.sort(pos)
    kept = (s.size - np.searchsorted(s, s, side="left")) / s.size  # share of pos >= each candidate
    thr = s[kept >= tpr].max()
    return float(np.mean(neg >= thr))


def fpr_at_tpr(id_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` recall of ID (the MCM / CLIPN / NegLabel "FPR95").

    The threshold accepts (score >= thr) the smallest set holding at least ``tpr`` of the ID images; the
    result is the share of OOD images it also accepts. Equals ``fpr[argmax(tpr_curve >= tpr)]`` of
    ``sklearn.metrics.roc_curve`` with ID=1.
    """
    i, o = _pair(id_scores, ood_scores)
    return _fpr_at(i, o, tpr)


def fpr95_openood(id_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = 0.95) -> float:
    """OpenOOD's mirror-image FPR95: OOD is the positive class (negated scores), the threshold flags at
    least ``tpr`` of the OOD images, and the result is the share of ID images flagged as OOD.

    Not the number MCM/CLIPN/NegLabel report (that is :func:`fpr_at_tpr`); label it "FPR95 (OpenOOD)".
    OpenOOD's code reads it off ``roc_curve`` with its default ``drop_intermediate=True``, which can skip the
    exact crossing point on a diagonal (tied) stretch of the curve; without ties both agree.
    """
    i, o = _pair(id_scores, ood_scores)
    return _fpr_at(-o, -i, tpr)


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Step-wise average precision, positives = ``pos``, higher score = more positive (as sklearn)."""
    scores = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct threshold
    tps = np.cumsum(y)[ends]
    precision = tps / (ends + 1)
    recall = tps / pos.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under precision-recall with ID positive (``sklearn.metrics.average_precision_score``)."""
    i, o = _pair(id_scores, ood_scores)
    return _average_precision(i, o)


def aupr_out(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under precision-recall with OOD positive, ranked by negated scores (average precision)."""
    i, o = _pair(id_scores, ood_scores)
    return _average_precision(-o, -i)


def ood_metrics(id_scores: ArrayLike, ood_scores: ArrayLike) -> dict[str, float]:
    """``{"AUROC", "FPR95", "AUPR_IN", "AUPR_OUT"}`` in percent (0-100); FPR95 as in :func:`fpr_at_tpr`."""
    i, o = _pair(id_scores, ood_scores)
    return {
        "AUROC": 100.0 * auroc(i, o),
        "FPR95": 100.0 * fpr_at_tpr(i, o, 0.95),
        "AUPR_IN": 100.0 * aupr_in(i, o),
        "AUPR_OUT": 100.0 * aupr_out(i, o),
    }


def accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """Share of correct predictions in [0, 1].

    pred: (n,) predicted labels, or (n, C) scores (argmax taken); labels: (n,) integer labels.
    """
    p, y = np.asarray(pred), np.asarray(labels)
    if p.ndim == 2:
        if p.shape[1] == 0:
            raise ValueError("pred has zero classes")
        p = p.argmax(axis=1)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError(f"pred must be (n,) or (n, C) and labels (n,), got {p.shape} and {y.shape}")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"pred has {p.shape[0]} rows but labels has {y.shape[0]}")
    if y.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(p == y))
