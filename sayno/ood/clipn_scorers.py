"""CLIPN as OOD scorers: CLIPN-CTW and CLIPN-ATD in the scikit-learn shape of :mod:`sayno.ood.scorers`.

``fit`` takes class names (encoded through a loaded :class:`~sayno.clipn.Clipn`'s two towers), a
:class:`~sayno.clipn.infer.ClassTexts` or a ``(yes, no[, bias])`` tuple of (C, D) class features. Unlike the
baselines they decide ID/OOD on their own (``has_rule``): ``decision_function`` is CLIPN's rule, or
``score - threshold_`` once a threshold is set.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sayno.clipn.infer import ClassTexts, Clipn, Decision, atd, clipn_probs, ctw
from sayno.errors import InputError
from sayno.ood.scorers import OODScorer, as_features, is_class_names


class _ClipnScorer(OODScorer):
    """CLIPN: ``fit`` takes class names (encoded through ``clipn``'s two towers) or a
    :class:`~sayno.clipn.infer.ClassTexts` / ``(yes, no)`` pair of (C, D) arrays."""

    has_rule = True
    rule: ClassVar[str] = "atd"

    def __init__(self, *, clipn: Clipn | None = None, **kwargs):
        super().__init__(**kwargs)
        self.clipn = clipn

    def fit(self, classes, y=None) -> _ClipnScorer:
        if is_class_names(classes):
            if self.clipn is None:
                raise InputError(f"{self.name}: fitting on class names needs clipn= (a loaded CLIPN)")
            texts = self.clipn.class_texts(classes)
        elif isinstance(classes, ClassTexts):
            texts = classes
        else:
            yes, no, *rest = classes
            yes, no = as_features(yes, None, "class features"), as_features(no, None, "'no' class features")
            if yes.shape != no.shape or len(yes) == 0:
                raise InputError(f"yes and no class features must have the same (C, D) shape, got {yes.shape} "
                                 f"and {no.shape}")
            texts = ClassTexts([str(i) for i in range(len(yes))], yes, no, float(rest[0]) if rest else 0.0)
        self.texts_ = texts
        self.class_features_ = np.asarray(texts.yes, dtype=np.float64)
        self.no_features_ = np.asarray(texts.no, dtype=np.float64)
        self.classes_ = list(texts.names) if is_class_names(classes) or isinstance(classes, ClassTexts) else None
        if self.logit_scale is not None:
            self.logit_scale_ = float(self.logit_scale)
        elif self.clipn is not None:
            self.logit_scale_ = self.clipn.logit_scale
        else:
            raise InputError(f"{self.name}: give logit_scale= when fitting on features without clipn=")
        self.threshold_ = self.threshold
        return self

    def _decision(self, X) -> Decision:
        x = self._check(X)
        p, p_yes = clipn_probs(x, self.class_features_, self.no_features_, self.logit_scale_, self.texts_.bias)
        return (atd if self.rule == "atd" else ctw)(p, p_yes)

    def score_samples(self, X) -> np.ndarray:
        x = self._check(X)
        return np.zeros(0) if x.shape[0] == 0 else self._decision(x).score

    def decision_function(self, X) -> np.ndarray:
        """CLIPN's own rule (positive = ID), or ``score - threshold_`` when a threshold was set."""
        if getattr(self, "threshold_", None) is not None:
            return self.score_samples(X) - self.threshold_
        return self._decision(X).margin


class ClipnCTW(_ClipnScorer):
    """CLIPN competing-to-win: OOD iff the best class's ``p_no > 0.5``; score ``p_yes`` of that class."""

    name = "CLIPN-CTW"
    rule = "ctw"


class ClipnATD(_ClipnScorer):
    """CLIPN agreeing-to-differ: OOD iff ``sum_j p_no_j p_j > max_j p_yes_j p_j``; score ``1 - p_ood``."""

    name = "CLIPN-ATD"
    rule = "atd"


