"""Input checks at the public boundary of :class:`~sayno.glasses.model.Glasses`.

Each check raises a one-line :class:`~sayno.errors.InputError` that names the expected type or shape, instead of
a numpy/torch error deep inside (or, worse, a silent wrong answer: ``score("no cat", ...)`` scoring each
character, ``None`` read as ``""``, NaN features giving NaN scores, a negative ``rerank_k`` read as 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sayno.base.scoring import TextBatch
from sayno.errors import InputError


def check_texts(texts: Any, where: str) -> list[str]:
    """``texts`` as a list of N captions; a single ``str`` or a non-string item is refused."""
    if isinstance(texts, (str, bytes)):
        raise InputError(f"{where}: texts must be a list of captions, got a single {type(texts).__name__} "
                         f"(use [{texts!r}])")
    if not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise InputError(f"{where}: texts must be a list of captions (str), got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{where}: texts[{i}] must be a str, got {type(t).__name__} ({t!r:.40})")
    return texts


def check_features(x: Any, dim: int, where: str, name: str = "image features", rows: int | None = None
                   ) -> np.ndarray:
    """``x`` as a finite float32 (M, ``dim``) array (M = ``rows`` when given)."""
    try:
        a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: {name} must be a numeric (M, {dim}) array, got {type(x).__name__}") from e
    want = f"({rows if rows is not None else 'M'}, {dim})"
    if a.ndim != 2:
        hint = f"; one vector is shape (1, {dim})" if a.ndim == 1 else ""
        raise InputError(f"{where}: {name} must have shape {want}, got {a.shape}{hint}")
    if a.shape[1] != dim:
        hint = " (transposed? rows are items, columns the embedding)" if a.shape[0] == dim else ""
        raise InputError(f"{where}: {name} must have shape {want} for this backbone, got {a.shape}{hint}")
    if rows is not None and a.shape[0] != rows:
        raise InputError(f"{where}: {name} must have shape {want} (one row per caption), got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{where}: {name} contain NaN or infinite values")
    return a


def check_batch(text: Any, dim: int, where: str) -> TextBatch:
    """A :class:`TextBatch` whose ``h`` is finite (N, ``dim``) and ``layers`` (when given) finite (N, L, ``dim``)."""
    if not isinstance(text, TextBatch):
        raise InputError(f"{where}: expected a TextBatch(texts, h (N, {dim}), layers (N, L, {dim})), got "
                         f"{type(text).__name__} (Glasses.text_batch(texts) makes one)")
    texts = check_texts(text.texts, where)
    check_features(text.h, dim, where, "TextBatch.h", rows=len(texts))
    if text.layers is not None:
        layers = np.asarray(text.layers)
        if layers.ndim != 3 or layers.shape[0] != len(texts) or layers.shape[2] != dim:
            raise InputError(f"{where}: TextBatch.layers must have shape ({len(texts)}, L, {dim}), got {layers.shape}")
        if not np.isfinite(layers).all():
            raise InputError(f"{where}: TextBatch.layers contain NaN or infinite values")
    return text


def check_rerank_k(k: Any, where: str) -> int | None:
    """``rerank_k``: None or 0 (no re-ranking) or a positive int."""
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InputError(f"{where}: rerank_k must be None or an int >= 0, got {k!r}")
    return int(k)
