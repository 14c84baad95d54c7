"""The scoring contract: what every benchmark scores with, from cached features.

A scorer turns captions (with their cached text features) and image features into logits. Benchmarks encode once
and hand the same arrays to every scorer, so plain CLIP and a method on top of it are compared on exactly the
same features.

Shapes: N captions, M images, D embedding size, L text layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from sayno.errors import InputError


@dataclass
class TextBatch:
    """Captions and their frozen-CLIP features.

    texts: N strings. h: (N, D) normalised final text features. layers: (N, L, D) normalised per-layer
    end-of-text features, or None when no scorer needs them.
    """

    texts: list[str]
    h: np.ndarray
    layers: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.h):
            raise InputError(f"{len(self.texts)} texts but {len(self.h)} feature rows")


@runtime_checkable
class Scorer(Protocol):
    """Scores captions against images. Higher = better match."""

    name: str
    needs_layers: bool  # whether TextBatch.layers must be filled

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """All captions against all images, (N, M). Retrieval-grade: may not look at which image is right."""
        ...

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """Caption i against image i, (N,). images: (N, D). May condition on the paired image."""
        ...


class PlainClip:
    """CLIP's own score: ``logit_scale * cos(text, image)``."""

    needs_layers = False

    def __init__(self, logit_scale: float, name: str = "CLIP"):
        self.logit_scale = float(logit_scale)
        self.name = name

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        return self.logit_scale * (text.h @ images.T)

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        return self.logit_scale * np.einsum("nd,nd->n", text.h, images)
