"""CLIPN inference: template-ensembled class prompts per tower, ``p_yes``/``p_no``, and the CTW and ATD rules.

Shapes: N images, C classes, D joint space. Image features ``f`` and class features ``g`` (frozen tower) and
``gno`` ("no" encoder) are L2-normalised; ``s`` is the backbone's logit scale.

- ``p = softmax(s * f.g)`` over the C classes; ``p_yes_j = sigmoid(s * (f.g_j - f.gno_j))``; ``p_no = 1 - p_yes``.
- CTW (competing-to-win): ``c = argmax p``; OOD iff ``p_no_c > 0.5``; score ``p_yes_c``.
- ATD (agreeing-to-differ): ``p_ood = sum_j p_no_j p_j``; OOD iff ``p_ood > max_j p_yes_j p_j``; score
  ``1 - p_ood``.

Both scores are higher = more in-distribution. Degenerate inputs: with one class, ``p = 1`` and ATD reduces to
CTW (OOD iff ``p_no > p_yes``, i.e. ``p_no > 0.5``); ties in ``p`` pick the lowest class index; a decision
exactly on the boundary (``p_no_c == 0.5`` or ``p_ood == max_j p_yes_j p_j``) is ID.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sayno.backbones.base import Backbone, TruncationWarning
from sayno.base.prompts import (
    TemplateError,
    check_distinct_classes,
    class_prompts,
    ensemble,
    load_templates,
    softmax,
)
from sayno.clipn.model import ClipnError, NoTextEncoder
from sayno.errors import InputError

TEMPLATES = "clipn_templates"  # sayno/templates/clipn_templates.json
TEMPLATE_KEYS = ("name", "version", "affirmative", "no", "no_captions")
REFERENCE_PAIRS = "clipn_reference_pairs"  # sayno/templates/clipn_reference_pairs.json (xmed-lab/CLIPN, MIT)
# the hand-crafted variant's template sets: "sayno" (clipn_templates.json: 6 class templates per tower, 4 "no"
# caption templates) | "reference" (the reference's 128 (affirmative, "no") pairs, for captions and classes alike)
TEMPLATE_SETS: tuple[str, ...] = ("sayno", "reference")


# ------------------------------------------------------------------------------------------ pure maths
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x


def clipn_probs(f: np.ndarray, g: np.ndarray, gno: np.ndarray, logit_scale: float,
                bias: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(N, D), (C, D), (C, D) -> ``p`` (N, C) class softmax and ``p_yes`` (N, C); ``bias`` is the learned
    logit bias of ``p_yes`` (0 in the reference)."""
    f, g, gno = (np.asarray(a, dtype=np.float64) for a in (f, g, gno))
    sim = f @ g.T
    return softmax(logit_scale * sim), sigmoid(logit_scale * (sim - f @ gno.T) + bias)


@dataclass
class Decision:
    """Per image: ``pred`` class index (N,), ``is_ood`` (N,) bool, ``score`` (N,) higher = more ID, and
    ``margin`` (N,): positive = ID under the rule (the decision function)."""

    pred: np.ndarray
    is_ood: np.ndarray
    score: np.ndarray
    margin: np.ndarray


def ctw(p: np.ndarray, p_yes: np.ndarray) -> Decision:
    """Competing-to-win: the winning class says yes or no. p, p_yes: (N, C)."""
    c = p.argmax(axis=1)
    yes_c = p_yes[np.arange(len(c)), c]
    margin = yes_c - 0.5  # = 0.5 - p_no_c
    return Decision(c, margin < 0, yes_c, margin)


def atd(p: np.ndarray, p_yes: np.ndarray) -> Decision:
    """Agreeing-to-differ: OOD when the classes' "no" mass beats every class's "yes" mass. p, p_yes: (N, C)."""
    p_ood = ((1.0 - p_yes) * p).sum(axis=1)
    best = (p_yes * p).max(axis=1)
    margin = best - p_ood
    return Decision(p.argmax(axis=1), margin < 0, 1.0 - p_ood, margin)


RULES: dict[str, Callable[[np.ndarray, np.ndarray], Decision]] = {"ctw": ctw, "atd": atd}


# ------------------------------------------------------------------------------------------ templates
def clipn_templates(path: str | Path | None = None) -> dict:
    """CLIPN's versioned template file (default ``sayno/templates/clipn_templates.json``): ``affirmative``
    class templates, ``no`` templates of the hand-crafted variant, ``no_captions`` for its training captions."""
    return load_templates(TEMPLATES if path is None else path, required=TEMPLATE_KEYS)


def reference_pairs(path: str | Path | None = None) -> dict:
    """The reference's paired templates (default ``sayno/templates/clipn_reference_pairs.json``): ``name``,
    ``version``, ``source`` and ``pairs``, a list of P ``(affirmative, no)`` tuples, each string with one ``{}``.
    A malformed pair raises a one-line :class:`~sayno.base.prompts.TemplateError`."""
    data = load_templates(REFERENCE_PAIRS if path is None else path, required=("name", "version", "pairs"))
    pairs = data["pairs"]
    if not isinstance(pairs, list) or not pairs:
        raise TemplateError(f"template file {data['name']}: 'pairs' must be a non-empty list")
    for i, pair in enumerate(pairs):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(t, str) and t.count("{}") == 1 for t in pair)):
            raise TemplateError(f"template file {data['name']}: pair {i} must be two strings with one '{{}}' each, "
                                f"got {pair!r:.80}")
    return {**data, "pairs": [(a, b) for a, b in pairs]}


def template_set(name: str = "sayno") -> dict:
    """The templates of one of :data:`TEMPLATE_SETS`, in the keys inference reads: ``name``, ``version``,
    ``affirmative`` (the frozen tower's class templates), ``no`` (the hand-crafted "no" encoder's), and
    ``no_captions`` ("sayno") or ``pairs`` ("reference": ``affirmative``/``no`` are the pairs' two columns, in
    order, so that class features are ensembled over every pair as the reference does)."""
    if name == "sayno":
        return clipn_templates()
    if name == "reference":
        data = reference_pairs()
        pairs = data["pairs"]
        return {"name": data["name"], "version": data["version"], "affirmative": [a for a, _ in pairs],
                "no": [b for _, b in pairs], "pairs": pairs}
    raise InputError(f"unknown CLIPN template set {name!r}: use one of {', '.join(TEMPLATE_SETS)}")


# ------------------------------------------------------------------------------------------ the model
@dataclass
class ClassTexts:
    """Ensembled class features: ``yes`` (C, D) from the frozen tower, ``no`` (C, D) from the "no" encoder,
    and the model's ``p_yes`` logit bias."""

    names: list[str]
    yes: np.ndarray
    no: np.ndarray
    bias: float = 0.0


class Clipn:
    """A frozen backbone plus a trained "no" encoder: class features, probabilities and decisions.

    >>> clipn = load_clipn("clipn.safetensors", backbone)            # doctest: +SKIP
    >>> texts = clipn.class_texts(["dog", "cat"])                     # doctest: +SKIP
    >>> d = clipn.decide(image_features, texts, rule="atd")           # doctest: +SKIP
    """

    def __init__(self, backbone: Backbone, encoder: NoTextEncoder, config: dict | None = None,
                 templates: dict | None = None):
        self.backbone = backbone
        self.encoder = encoder.eval()
        self.config = dict(config or {})
        self.templates = templates or template_set(self.config.get("template_set", "sayno"))

    @property
    def logit_scale(self) -> float:
        return float(self.backbone.logit_scale)

    @torch.no_grad()
    def _encode(self, texts: list[str], fn: Callable[[torch.Tensor], torch.Tensor], batch: int = 256) -> np.ndarray:
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            for i in range(0, len(texts), batch):
                tokens = self.backbone.tokenize(texts[i:i + batch]).to(self.backbone.device)
                out.append(fn(tokens).float().cpu())
        return torch.cat(out).numpy()

    def class_texts(self, class_names: Sequence[str]) -> ClassTexts:
        """Template-ensembled features of both towers for C class names (a list of str, at least one)."""
        names = _class_names(class_names)
        aff = self.templates["affirmative"]
        check_distinct_classes(self.backbone.tokenize, names, aff)
        tower = self.backbone.text_tower()
        yes = ensemble(self._encode(class_prompts(names, aff), lambda t: tower(t)), len(names))
        if self.encoder.variant == "learnable":
            no_prompts = class_prompts(names, aff)
            no = ensemble(self._encode(no_prompts, lambda t: self.encoder(t, "mean")), len(names))
        else:
            no_prompts = class_prompts(names, self.templates["no"])
            no = ensemble(self._encode(no_prompts, lambda t: self.encoder(t, None)), len(names))
        return ClassTexts(names, yes, no, self.encoder.yes_bias)

    def probabilities(self, image_features: np.ndarray, texts: ClassTexts) -> tuple[np.ndarray, np.ndarray]:
        """``p`` and ``p_yes``, each (N, C), for normalised image features (N, D)."""
        if not isinstance(texts, ClassTexts):
            raise InputError(f"texts must be the ClassTexts of clipn.class_texts(names), got {type(texts).__name__}")
        features = _image_features(image_features, int(texts.yes.shape[1]))
        return clipn_probs(features, texts.yes, texts.no, self.logit_scale, texts.bias)

    def decide(self, image_features: np.ndarray, texts: ClassTexts, rule: str = "atd") -> Decision:
        """Per image (rows of the (N, D) features): class, ID/OOD and score under ``rule`` (ctw | atd)."""
        if rule not in RULES:
            raise ClipnError(f"unknown CLIPN rule {rule!r}: use ctw or atd")
        return RULES[rule](*self.probabilities(image_features, texts))


def _class_names(class_names: Sequence[str]) -> list[str]:
    """``class_names`` as a non-empty list of non-empty str; one str (``"dog"``) is refused, not read as d, o, g."""
    if isinstance(class_names, (str, bytes)):
        raise InputError(f"class_names must be a list of names, got a single {type(class_names).__name__} "
                         f"(use [{class_names!r}])")
    names = list(class_names)
    if not names:
        raise InputError("class_names must hold at least one class name")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip():
            raise InputError(f"class_names[{i}] must be a non-empty str, got {n!r:.40}")
    return names


def _image_features(x: np.ndarray, dim: int) -> np.ndarray:
    """Image features as a finite (N, ``dim``) array; one-line :class:`InputError` naming the shape otherwise."""
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.ndim != 2 or a.shape[1] != dim:
        hint = f"; one image is shape (1, {dim})" if a.ndim == 1 else ""
        raise InputError(f"image features must have shape (N, {dim}), got {a.shape}{hint}")
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise InputError("image features must be finite numbers (got NaN, infinite or non-numeric values)")
    return a
