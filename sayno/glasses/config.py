"""What a Glasses model is (:class:`GlassesConfig`, stored in its checkpoint) and the Glasses error."""

from __future__ import annotations

import functools
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sayno.base.prompts import fill_template
from sayno.config import from_mapping
from sayno.errors import SaynoError

DETECTOR_MODES = ("lexical", "learned", "and", "or")
LENS_INPUTS = ("phrase", "caption")
SCORES = ("tau", "reference")
BASES = ("affirmative", "caption")


class GlassesError(SaynoError, ValueError):
    """Glasses that cannot be used as asked (a bad option, no backbone where one is needed)."""


#: the integer sizes of a Glasses model and the values they may take (a checkpoint's config is checked
#: against these before any module is built: ``hidden=-5``, ``"abc"``, ``2.5`` or ``10**9`` are one-line errors)
SIZES = {"embed_dim": (1, 16384), "num_layers": (1, 1024), "hidden": (1, 16384), "detector_hidden": (1, 16384)}
#: ``lambda_max`` is a repulsion strength on CLIP's logit scale (2 in the shipped Glasses): finite, > 0, at most
#: this (a larger one only turns scores into noise; NaN or -1e9 used to give NaN or 1e30 scores)
LAMBDA_MAX_RANGE = (0.0, 100.0)


def checked_int(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; :class:`GlassesError` naming ``name`` otherwise (bools, floats and
    strings are refused, not rounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GlassesError(f"{name} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise GlassesError(f"{name} must be in {low}..{high}, got {value!r}")
    return int(value)


def checked_float(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a finite float in (low, high]; :class:`GlassesError` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GlassesError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(float(value)) and low < float(value) <= high):
        raise GlassesError(f"{name} must be a finite number in ({low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass
class GlassesConfig:
    """What a Glasses model is; stored in its checkpoint.

    lens_input: "phrase" (sayno: one ``h_neg`` per negated phrase, the Lens reads the phrase's frozen-CLIP
    prompt embedding and the caption's layers) or "caption" (reference: one ``h_neg`` per caption from its
    own ``h`` and layers). score: "tau" (sayno: ``S = s*cos(b,I) - lambda*s*(cos(h_neg,I) - tau)``, tau
    learned) or "reference" (``S = s*cos(b,I) - max(0, lambda*s*cos(h_neg,I))``). base: what ``b`` is,
    "affirmative" (sayno: the frozen-CLIP embedding of the caption with its negated clauses removed, "a cat
    but no dog" -> "a cat") or "caption" (reference: the caption's own ``h``). detector: which captions count
    as negated, "lexical" (cue words), "learned" (the head), "and", "or". prompt: what a negated phrase is
    embedded as; ``{}`` stands for the phrase with its article (:func:`phrase_prompt`).
    """

    embed_dim: int
    num_layers: int
    syntax_layers: tuple[int, ...] = ()
    hidden: int = 256
    detector_hidden: int = 128
    lens_input: str = "phrase"
    score: str = "tau"
    base: str = "affirmative"
    detector: str = "lexical"
    lambda_max: float = 2.0
    prompt: str = "This image shows {}."

    def __post_init__(self) -> None:
        for name, (low, high) in SIZES.items():
            setattr(self, name, checked_int(name, getattr(self, name), low, high))
        self.lambda_max = checked_float("lambda_max", self.lambda_max, *LAMBDA_MAX_RANGE)
        if not isinstance(self.prompt, str):
            raise GlassesError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if not isinstance(self.syntax_layers, (list, tuple)):
            raise GlassesError(f"syntax_layers must be a list of layer numbers, got {self.syntax_layers!r}")
        if not self.syntax_layers:
            self.syntax_layers = tuple(range(max(1, min(3, self.num_layers - 1))))
        self.syntax_layers = tuple(checked_int("syntax_layers", i, 0, self.num_layers - 1)
                                   for i in self.syntax_layers)
        for name, allowed in (("lens_input", LENS_INPUTS), ("score", SCORES), ("detector", DETECTOR_MODES),
                              ("base", BASES)):
            if getattr(self, name) not in allowed:
                raise GlassesError(f"{name}={getattr(self, name)!r}; choose one of {allowed}")
        if any(not 0 <= i < self.num_layers for i in self.syntax_layers):
            raise GlassesError(f"syntax_layers {self.syntax_layers} outside 0..{self.num_layers - 1}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GlassesConfig:
        """From a dict (a checkpoint's config); unknown keys raise :class:`sayno.config.ConfigError`."""
        return from_mapping(cls, data, "Glasses config")

    @classmethod
    def from_json(cls, text: str) -> GlassesConfig:
        return cls.from_dict(json.loads(text))


@functools.lru_cache(maxsize=65536)  # a pure function of two strings, called per slot on every scoring call
def phrase_prompt(template: str, phrase: str) -> str:
    """The text that stands for a negated phrase or object: ``"This image shows {}."`` + ``"apple"`` ->
    ``"This image shows an apple."`` (the article rule of :func:`sayno.base.prompts.with_article`)."""
    return fill_template(template.replace("{}", "{a}"), phrase)
