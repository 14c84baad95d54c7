"""CSP (Chen et al., "Conjugated Semantic Pool Improves OOD Detection with Pre-trained Vision-Language Models",
NeurIPS 2024): NegLabel with a larger, "conjugated" pool of negative labels.

The pool: NegLabel's WordNet nouns, plus the *conjugated semantic pool*: every WordNet adjective modifying a
superclass name ("glossy creature", "wooden structure"), the superclass drawn at random (seeded) per adjective
from the paper's 14 (:data:`SUPERCLASSES`). Such labels name property clusters rather than objects, so they sit
where OOD images are likely to fall. The adjectives alone are not in the pool (the conjugated labels replace them).
Mining, per part as the reference code does: each noun's and each conjugated label's 0.95-quantile cosine
similarity to the ID classes (a label with a similarity above 0.95 to any ID class is dropped), and the 15% least
similar of the nouns and 15% of the conjugated labels are the negatives. Score: NegLabel's grouped score
``sum_ID e^(cos/tau) / (sum_ID e^(cos/tau) + sum_neg e^(cos/tau))`` over 100 seeded random groups.

Published settings (ViT-B/16 on ImageNet-1K), all used here: 15% per part, quantile 0.95, the 0.95 cap, 100 groups,
``tau = 0.01`` (the reference's ``100 * cos`` with ``t = 1``). One difference, for cost: the reference ensembles 8
noun templates and 4 adjective templates; here classes and labels share NegLabel's single template
(``"a photo of {a}"``), so CSP reuses NegLabel's cached noun features.

Sign: higher = more in-distribution; range (0, 1). Temperature: ``tau = 0.01`` on cosine similarities.
Features: L2-normalised (image, class and label features).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from sayno.base.prompts import class_prompts
from sayno.errors import InputError
from sayno.ood.scorers import NegLabel, _normalise
from sayno.ood.wordlist import candidates, wordnet_words

#: The superclass names of the conjugated pool (the reference code's ``csp_templates``, in its order).
SUPERCLASSES: tuple[str, ...] = ("environment", "space", "object", "scene", "place", "item", "area", "view", "thing",
                                 "pattern", "structure", "landscape", "vista", "creature")


def conjugated_labels(adjectives: Sequence[str], superclasses: Sequence[str] = SUPERCLASSES,
                      random_state: int = 0) -> list[str]:
    """One ``"<adjective> <superclass>"`` per adjective, the superclass drawn uniformly (``default_rng``)."""
    if not superclasses:
        raise InputError("the conjugated pool needs at least one superclass name")
    pick = np.random.default_rng(random_state).integers(0, len(superclasses), size=len(adjectives))
    return [f"{a} {superclasses[int(k)]}" for a, k in zip(adjectives, pick)]


def mine_part(label_features: np.ndarray, class_features: np.ndarray, ratio: float = 0.15,
              quantile: float = 0.95, cap: float = 0.95) -> np.ndarray:
    """CSP's mining of one part of the pool: indices of the ``ratio`` share (at least one) of labels with the lowest
    ``quantile`` cosine similarity to the C classes, a label more similar than ``cap`` to any class ranking last.

    label_features (M, D), class_features (C, D), normalised. Ties keep the earlier label.
    """
    if len(label_features) == 0:
        return np.zeros(0, dtype=np.int64)
    sim = label_features @ class_features.T
    q = np.quantile(sim, quantile, axis=1)
    q[sim.max(axis=1) > cap] = np.inf
    k = max(1, int(ratio * len(label_features)))
    return np.argsort(q, kind="stable")[:k]


class CSP(NegLabel):
    """CSP: NegLabel over WordNet nouns + the conjugated pool (adjective x superclass); see the module docstring.

    nouns / adjectives: the candidate lists (default: WordNet's, single words); superclasses: the conjugation's
    names; ratio / quantile / cap: mining per part; n_groups, tau, template, random_state as in NegLabel
    (random_state also draws each adjective's superclass). Fitted: ``negative_labels_`` (nouns first),
    ``n_nouns_`` (how many of them are nouns), ``negative_features_``, ``groups_``, ``scale_``.
    """

    name = "CSP"

    def __init__(self, *, nouns: Sequence[str] | None = None, adjectives: Sequence[str] | None = None,
                 superclasses: Sequence[str] = SUPERCLASSES, cap: float = 0.95, **kwargs):
        super().__init__(**kwargs)
        self.nouns = nouns
        self.adjectives = adjectives
        self.superclasses = superclasses
        self.cap = cap

    def _encode_labels(self, labels: list[str]) -> np.ndarray:
        if not labels:
            return np.zeros((0, self.class_features_.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # long labels may be truncated: harmless here
            return _normalise(self._encode(class_prompts(labels, [self.template])).astype(np.float64))

    def _fit_more(self) -> None:
        if self.negative_features is not None:  # already chosen negatives: NegLabel's path
            super()._fit_more()
            self.n_nouns_ = None
            return
        if self.tau is None:
            raise InputError("CSP needs tau (the paper's 0.01)")
        self.scale_ = 1.0 / self.tau
        nouns = list(self.nouns) if self.nouns is not None else wordnet_words(pos=("noun",))
        adjs = list(self.adjectives) if self.adjectives is not None else wordnet_words(pos=("adj",))
        nouns = candidates(nouns, self.classes_ or [])
        conj = conjugated_labels(adjs, self.superclasses, self.random_state)
        picked_labels, picked_feats = [], []
        for labels in (nouns, conj):
            feats = self._encode_labels(labels)
            idx = mine_part(feats, self.class_features_, self.ratio, self.quantile, self.cap)
            picked_labels.append([labels[i] for i in idx])
            picked_feats.append(feats[idx])
        self.n_nouns_ = len(picked_labels[0])
        self.negative_labels_ = picked_labels[0] + picked_labels[1]
        neg = np.concatenate(picked_feats)
        if len(neg) == 0:
            raise InputError("CSP needs at least one noun or adjective to mine negative labels from")
        self.negative_features_ = neg
        perm = np.random.default_rng(self.random_state).permutation(len(neg))
        self.groups_ = [g for g in np.array_split(perm, min(self.n_groups, len(neg))) if len(g)]
