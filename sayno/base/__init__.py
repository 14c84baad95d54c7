"""The base layer under every method: prompts and templates, the scoring contract, the shipped weights.

Nothing here knows about Glasses, CLIPN, OOD or search; they all build on it.
"""

from sayno.base.prompts import (
    DuplicateClassError,
    TemplateError,
    check_distinct_classes,
    class_prompts,
    ensemble,
    fill_template,
    indefinite_article,
    load_templates,
    softmax,
    with_article,
)
from sayno.base.scoring import PlainClip, Scorer, TextBatch
from sayno.base.shipped import SHIPPED, shipped_weights

__all__ = [
    "SHIPPED",
    "DuplicateClassError",
    "PlainClip",
    "Scorer",
    "TemplateError",
    "TextBatch",
    "check_distinct_classes",
    "class_prompts",
    "ensemble",
    "fill_template",
    "indefinite_article",
    "load_templates",
    "shipped_weights",
    "softmax",
    "with_article",
]
