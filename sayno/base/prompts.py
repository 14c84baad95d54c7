"""Prompts and templates: the one article rule, template filling, class prompts, ensembling, duplicate checks.

Template files live in ``sayno/templates/<name>.json`` and are versioned (their name and version go into every
result). In a template ``{a}`` is the name with its indefinite article ("an apple") and ``{}`` the bare name.

Shapes: C classes, K templates, D embedding size.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from sayno.errors import InputError, SaynoError

# Words spelt with a vowel letter but said with a consonant ("a unicorn"), and silent-h words ("an hourglass").
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "eu", "ewe", "one ", "once")
_SILENT_H = ("hour", "honest", "honour", "honor", "heir")


class TemplateError(SaynoError, ValueError):
    """A template file that is missing, not JSON or without a required key."""


class DuplicateClassError(SaynoError, ValueError):
    """Two class names give the model exactly the same input (identical tokens for every template)."""


def indefinite_article(word: str) -> str:
    """``"a"`` or ``"an"`` for ``word`` (by its first letters; "an hourglass", "a unicorn")."""
    w = word.strip().lower()
    if w.startswith(_SILENT_H):
        return "an"
    if w.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if w[:1] in ("a", "e", "i", "o", "u") else "a"


def with_article(phrase: str) -> str:
    """``"apple"`` -> ``"an apple"``."""
    phrase = phrase.strip()
    return f"{indefinite_article(phrase)} {phrase}"


def fill_template(template: str, name: str) -> str:
    """``"a photo of {a}"`` + ``"apple"`` -> ``"a photo of an apple"``; ``{}`` is the bare name."""
    name = name.strip()
    return template.replace("{a}", with_article(name)).replace("{}", name)


def class_prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """C x K prompts, class-major (class 0 with every template, then class 1, ...)."""
    if isinstance(class_names, str) or isinstance(templates, str):
        raise InputError("class_prompts takes lists of class names and templates, not a string")
    if not templates:
        raise TemplateError("no prompt templates")
    return [fill_template(t, c) for c in class_names for t in templates]


def ensemble(features, n_classes: int) -> np.ndarray:
    """(C*K, D) class-major prompt features -> (C, D) float32: mean of the normalised features, normalised."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if x.ndim != 2 or n_classes <= 0 or x.shape[0] % n_classes:
        raise InputError(f"ensemble: expected (C*K, D) features for C={n_classes}, got shape {tuple(x.shape)}")
    x = F.normalize(x, dim=-1).view(n_classes, -1, x.shape[-1]).mean(1)
    return F.normalize(x, dim=-1).numpy()


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def load_templates(name: str | Path = "zeroshot", required: Sequence[str] = ("name", "version")) -> dict:
    """A versioned template file: a name in ``sayno/templates`` (``"zeroshot"``, ``"clipn_templates"``) or a
    path to a JSON file. ``required``: keys that must be present."""
    p = Path(name)
    try:
        if p.suffix == ".json" and (p.is_file() or p.parent != Path(".")):
            text, where = p.read_text(), str(p)
        else:
            text, where = resources.files("sayno.templates").joinpath(f"{name}.json").read_text(), f"{name}.json"
    except OSError as e:
        raise TemplateError(f"template file {name}: {e.strerror or e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TemplateError(f"template file {where}: not JSON ({e.msg}, line {e.lineno})") from e
    for key in required:
        if key not in data:
            raise TemplateError(f"template file {where} has no {key!r}")
    return data


def check_distinct_classes(tokenize: Callable[[list[str]], object], class_names: Sequence[str],
                           templates: Sequence[str]) -> None:
    """Raise :class:`DuplicateClassError` if two classes tokenize to the same text under every template.

    Such classes are indistinguishable for CLIP (e.g. "Apple" and "apple" with a lower-casing tokenizer, or
    names cut at the same place by the context length); their softmax mass would be split at random.
    ``tokenize``: texts -> (n, T) token tensor (truncation warnings are silenced here)."""
    if isinstance(class_names, str):
        raise InputError("class names must be a list of strings, not one string")
    if len(class_names) == 0:
        raise InputError("no class names")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = np.asarray(tokenize(class_prompts(class_names, templates)).cpu())  # type: ignore[attr-defined]
    rows = tok.reshape(len(class_names), -1)
    seen: dict[bytes, int] = {}
    clashes = []
    for i, r in enumerate(rows):
        key = r.tobytes()
        if key in seen:
            clashes.append((class_names[seen[key]], class_names[i]))
        else:
            seen[key] = i
    if clashes:
        pairs = "; ".join(f"{a!r} = {b!r}" for a, b in clashes[:5])
        raise DuplicateClassError(f"class names that tokenize to the same text: {pairs} (rename or merge them)")
