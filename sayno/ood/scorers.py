"""Zero-shot OOD scorers over cached CLIP features: MSP, MaxLogit, Energy, MCM, NegLabel (CLIPN-CTW/ATD, which
need a trained CLIPN, are in :mod:`sayno.ood.clipn_scorers`).

Direction, declared once: every ``score_samples`` is **higher = more in-distribution** (``higher_is_id``),
the convention of :mod:`sayno.ood.metrics`.

Scikit-learn shape: ``__init__`` stores keyword-only parameters; ``fit(classes)`` takes C class names (the
scorer encodes them through its backbone, template-ensembled and cached) or a (C, D) array of class text
features, and sets attributes ending in ``_``; ``score_samples(X)`` (N,) from normalised image features
(N, D); ``decision_function(X)`` positive = ID; ``predict(X)`` the ID class or -1 for OOD;
``predict_class(X)`` the ID class ignoring OOD (ID accuracy). CLIPN has its own decision rule; these
decide only once given a ``threshold`` or :meth:`OODScorer.calibrate`\\ d on ID images (95% accepted).

The maths lives in pure numpy functions (``msp``, ``max_logit``, ``energy``, ``mcm``, ``neglabel``,
``mine_negative_labels``); the classes only fit and validate. Degenerate inputs: zero images give empty
outputs; one class gives MSP = MCM = 1 for every image (no information: AUROC 0.5); identical scores are
ties (see :mod:`sayno.ood.metrics`); class names with identical tokens raise
:class:`~sayno.base.prompts.DuplicateClassError`. Bad arguments raise :class:`~sayno.errors.InputError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from sayno.backbones.base import Backbone
from sayno.base.prompts import (
    DuplicateClassError,
    check_distinct_classes,
    class_prompts,
    ensemble,
    load_templates,
    softmax,
)
from sayno.errors import InputError, SaynoError
from sayno.features import FeatureCache, encode_texts
from sayno.ood.wordlist import candidates, wordnet_words

TEMPLATES = "clipn_templates"  # the class templates every scorer ensembles (sayno/templates/clipn_templates.json)

__all__ = [
    "MCM",
    "MSP",
    "DuplicateClassError",
    "Energy",
    "MaxLogit",
    "NegLabel",
    "NotFittedError",
    "OODScorer",
    "class_templates",
    "energy",
    "logsumexp",
    "max_logit",
    "mcm",
    "mine_negative_labels",
    "msp",
    "neglabel",
    "template_file",
]


class NotFittedError(SaynoError, ValueError):
    """A scorer used before ``fit`` (or ``decision_function`` without a threshold)."""


def template_file() -> dict:
    """The versioned template file of the class prompts (its ``name`` and ``version`` go into results)."""
    return load_templates(TEMPLATES, required=("name", "version", "affirmative"))


def class_templates() -> list[str]:
    """The prompt templates of the class names (``affirmative`` of :func:`template_file`)."""
    return list(template_file()["affirmative"])


# ------------------------------------------------------------------------------------------ pure maths
def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def msp(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax probability of (N, C) logits -> (N,)."""
    return softmax(logits).max(axis=1)


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Largest logit -> (N,)."""
    return logits.max(axis=1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T * logsumexp(logits / T)`` -> (N,) (higher = more ID)."""
    return temperature * logsumexp(logits / temperature, axis=1)


def mcm(cos: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Maximum concept matching: max softmax of cosine similarities (N, C) divided by ``tau`` -> (N,)."""
    return softmax(cos / tau).max(axis=1)


def mine_negative_labels(word_features: np.ndarray, class_features: np.ndarray, ratio: float = 0.15,
                         quantile: float = 0.95) -> np.ndarray:
    """NegLabel's mining: indices of the ``ratio`` share of words least similar to the ID classes.

    word_features (M, D), class_features (C, D), normalised. A word's similarity is the ``quantile`` of its
    cosine similarities to the C classes (robust to one near-duplicate class); the lowest are kept, at least
    one. Ties keep the earlier word.
    """
    if len(word_features) == 0:
        raise InputError("no candidate words to mine negative labels from")
    sim = np.quantile(word_features @ class_features.T, quantile, axis=1)
    k = max(1, round(ratio * len(word_features)))
    return np.argsort(sim, kind="stable")[:k]


def neglabel(cos_id: np.ndarray, cos_neg: np.ndarray, logit_scale: float,
             groups: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """NegLabel score (N,): ``sum_ID e^(s cos) / (sum_ID e^(s cos) + sum_neg e^(s cos))`` averaged over groups.

    cos_id (N, C), cos_neg (N, K); groups: index arrays into the K negatives (default: one group of all).
    """
    lse_id = logsumexp(logit_scale * cos_id, axis=1)
    groups = [np.arange(cos_neg.shape[1])] if groups is None else groups
    out = np.zeros(cos_id.shape[0])
    for grp in groups:
        lse_neg = logsumexp(logit_scale * cos_neg[:, grp], axis=1)
        out += 0.5 * (1.0 + np.tanh(0.5 * (lse_id - lse_neg)))  # sigmoid(lse_id - lse_neg)
    return out / len(groups)


# ------------------------------------------------------------------------------------------ base class
def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


def as_features(X, dim: int | None, what: str = "image features") -> np.ndarray:
    """``X`` as normalised float64 (N, D) features; ``dim``: the D it must have (None: any)."""
    a = np.asarray(X, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"{what} must be (N, D), got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise InputError(f"{what} have dimension {a.shape[1]}, the classes {dim}")
    if not np.isfinite(a).all():
        raise InputError(f"{what} contain NaN or infinite values (drop unreadable images first)")
    return _normalise(a)


def is_class_names(classes) -> bool:
    """Whether ``classes`` is a list or tuple of class names (not features)."""
    return isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)


class OODScorer:
    """Base class: fit on ID classes, score images (higher = more ID)."""

    name: ClassVar[str] = "base"
    higher_is_id: ClassVar[bool] = True  # the one declaration of the score direction
    has_rule: ClassVar[bool] = False  # whether the method decides ID/OOD without a threshold
    uses_logit_scale: ClassVar[bool] = True

    def __init__(self, *, backbone: Backbone | None = None, templates: Sequence[str] | None = None,
                 logit_scale: float | None = None, threshold: float | None = None, cache: FeatureCache | None = None):
        self.backbone = backbone
        self.templates = templates
        self.logit_scale = logit_scale
        self.threshold = threshold
        self.cache = cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ fitting
    def _templates(self) -> list[str]:
        return list(self.templates) if self.templates is not None else class_templates()

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.backbone is None:
            raise InputError(f"{self.name}: fitting on class names needs a backbone (or pass class features)")
        return encode_texts(self.backbone, texts, cache=self.cache, progress=False)

    def _class_features(self, classes) -> tuple[np.ndarray, list[str] | None]:
        if is_class_names(classes):
            names = list(classes)
            templates = self._templates()
            if self.backbone is None:
                raise InputError(f"{self.name}: fitting on class names needs a backbone (or pass class features)")
            check_distinct_classes(self.backbone.tokenize, names, templates)
            return ensemble(self._encode(class_prompts(names, templates)), len(names)), names
        feats = as_features(classes, None, "class features")
        if len(feats) == 0:
            raise InputError("no classes")
        _, first = np.unique(feats, axis=0, return_index=True)
        if len(first) < len(feats):
            dup = sorted(set(range(len(feats))) - set(first.tolist()))
            raise DuplicateClassError(f"class features {dup[:5]} repeat an earlier class exactly")
        return feats, None

    def fit(self, classes, y=None) -> OODScorer:
        """classes: C class names (needs ``backbone``) or (C, D) class text features. Returns self."""
        self.class_features_, self.classes_ = self._class_features(classes)
        if self.logit_scale is not None:
            self.logit_scale_ = float(self.logit_scale)
        elif self.backbone is not None:
            self.logit_scale_ = float(self.backbone.logit_scale)
        elif self.uses_logit_scale:
            raise InputError(f"{self.name}: give logit_scale= when fitting on features without a backbone")
        else:
            self.logit_scale_ = None
        self.threshold_ = self.threshold
        self._fit_more()
        return self

    def _fit_more(self) -> None:
        pass

    def _check(self, X) -> np.ndarray:
        if not hasattr(self, "class_features_"):
            raise NotFittedError(f"{self.name} is not fitted: call fit(class names or features) first")
        return as_features(X, self.class_features_.shape[1])

    def cosine(self, X) -> np.ndarray:
        """(N, C) cosine similarities of images to the ID classes."""
        return self._check(X) @ self.class_features_.T

    # ------------------------------------------------------------------ scoring
    def _score(self, cos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _score_features(self, x: np.ndarray) -> np.ndarray:
        return self._score(x @ self.class_features_.T)

    def score_samples(self, X) -> np.ndarray:
        """(N,) scores, higher = more in-distribution."""
        x = self._check(X)
        return np.zeros(0) if x.shape[0] == 0 else self._score_features(x)

    def decision_function(self, X) -> np.ndarray:
        """(N,) positive = ID: ``score - threshold_``."""
        if getattr(self, "threshold_", None) is None:
            raise NotFittedError(f"{self.name} has no decision rule: pass threshold= or call calibrate()")
        return self.score_samples(X) - self.threshold_

    def predict_class(self, X) -> np.ndarray:
        """(N,) the most similar ID class (ID classification, OOD ignored)."""
        cos = self.cosine(X)
        return cos.argmax(axis=1) if cos.shape[0] else np.zeros(0, dtype=np.int64)

    def predict(self, X) -> np.ndarray:
        """(N,) the ID class, or -1 where the image is judged OOD (needs a rule or a threshold)."""
        pred = self.predict_class(X)
        return np.where(self.decision_function(X) >= 0, pred, -1)

    def calibrate(self, id_features, tpr: float = 0.95) -> OODScorer:
        """Set ``threshold_`` so that ``tpr`` of these ID images are accepted (score >= threshold)."""
        s = np.sort(self.score_samples(id_features))
        if s.size == 0:
            raise InputError("calibrate needs at least one ID image")
        k = int(np.floor((1.0 - tpr) * s.size + 1e-9))
        self.threshold_ = float(s[min(k, s.size - 1)])
        return self


class MSP(OODScorer):
    """Maximum softmax probability of ``s * cos`` (s = the backbone's logit scale)."""

    name = "MSP"

    def _score(self, cos):
        return msp(self.logit_scale_ * cos)


class MaxLogit(OODScorer):
    """Largest ``s * cos``."""

    name = "MaxLogit"

    def _score(self, cos):
        return max_logit(self.logit_scale_ * cos)


class Energy(OODScorer):
    """Negative energy: ``logsumexp(s * cos)``."""

    name = "Energy"

    def _score(self, cos):
        return energy(self.logit_scale_ * cos)


class MCM(OODScorer):
    """Maximum concept matching: max softmax of ``cos / tau`` (tau = 1, MCM's default)."""

    name = "MCM"
    uses_logit_scale = False

    def __init__(self, *, tau: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.tau = tau

    def _score(self, cos):
        return mcm(cos, self.tau)


class NegLabel(OODScorer):
    """NegLabel: ID classes against mined negative labels, grouped.

    words: candidate labels (default: WordNet nouns and adjectives); ``negative_features`` (K, D) skips the
    mining (features of already chosen negatives). ratio/quantile: mining (keep the 15% of words whose 0.95
    quantile of similarity to the classes is lowest); n_groups: random groups the score is averaged over;
    template: the prompt of both the classes and the words (one template: the word list is long).
    tau: NegLabel's temperature on cosine similarities (the paper's 0.01); ``None`` uses the backbone's
    logit scale instead. Fitted: ``negative_labels_`` (the chosen words, when mined), ``negative_features_``,
    ``groups_``, ``scale_`` (1 / tau).
    """

    name = "NegLabel"
    uses_logit_scale = False

    def __init__(self, *, words: Sequence[str] | None = None, negative_features=None, ratio: float = 0.15,
                 quantile: float = 0.95, n_groups: int = 100, template: str = "a photo of {a}",
                 tau: float | None = 0.01, random_state: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.words = words
        self.negative_features = negative_features
        self.ratio, self.quantile, self.n_groups = ratio, quantile, n_groups
        self.template = template
        self.tau = tau
        self.random_state = random_state

    def _templates(self) -> list[str]:
        return [self.template] if self.templates is None else list(self.templates)

    def _fit_more(self) -> None:
        self.negative_labels_ = None
        if self.tau is not None:
            self.scale_ = 1.0 / self.tau
        elif self.logit_scale_ is not None:
            self.scale_ = self.logit_scale_
        else:
            raise InputError("NegLabel with tau=None needs logit_scale= or a backbone")
        if self.negative_features is not None:
            neg = as_features(self.negative_features, self.class_features_.shape[1], "negative features")
        else:
            words = list(self.words) if self.words is not None else wordnet_words()
            words = candidates(words, self.classes_ or [])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # long words may be truncated: harmless here
                wf = _normalise(self._encode(class_prompts(words, [self.template])).astype(np.float64))
            idx = mine_negative_labels(wf, self.class_features_, self.ratio, self.quantile)
            self.negative_labels_ = [words[i] for i in idx]
            neg = wf[idx]
        if len(neg) == 0:
            raise InputError("NegLabel needs at least one negative label")
        self.negative_features_ = neg
        perm = np.random.default_rng(self.random_state).permutation(len(neg))
        self.groups_ = [g for g in np.array_split(perm, min(self.n_groups, len(neg))) if len(g)]

    def _score_features(self, x):
        return neglabel(x @ self.class_features_.T, x @ self.negative_features_.T, self.scale_, self.groups_)

