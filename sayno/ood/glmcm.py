"""GL-MCM (Miyai et al., "Zero-Shot In-Distribution Detection in Multi-Object Settings Using Vision-Language
Foundation Models", IJCV 2025 / arXiv 2304.04521): MCM on the global image feature plus MCM on the best local
(patch) feature.

``S = max_c softmax(cos(x, t) / tau)_c + lambda * max_p max_c softmax(cos(x_p, t) / tau)_c``

with ``x`` the image feature, ``x_p`` the P patch features of a ViT image tower projected into the joint space like
the class token (the final layer norm, then the projection:
:meth:`~sayno.backbones.base.Backbone.encode_image_tokens`), ``t`` the C template-ensembled class prompts.

Sign: higher = more in-distribution. Temperature: ``tau = 1`` on cosine similarities (MCM's and GL-MCM's
setting), ``lambda = 1`` (the paper's default). Features: L2-normalised here (image, patch and class features),
whatever the caller passes. Range [2/C, 2] for lambda = 1. Input: (N, 1 + P, D) "image tokens", row 0 the image
feature and rows 1.. the patches (what ``encode_images(..., tokens=True)`` returns); a (N, D) array has no local
features and is refused. Where sayno differs from the reference code: the reference takes its local features from
the last attention layer's value projection (MaskCLIP-style); here every patch token is the last layer's output
through the same final norm and projection as the class token, for open_clip and Hugging Face towers alike.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sayno.base.prompts import softmax
from sayno.errors import InputError
from sayno.ood.scorers import NotFittedError, OODScorer, mcm

CHUNK = 512  # images per block of the local scores: (chunk, P, C) similarities at a time


def local_mcm(cos_local: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """(N, P, C) patch-to-class cosine similarities -> (N,) the best patch's MCM: ``max_p max_c softmax(cos/tau)``.
    P = 0 (no patches) gives zeros."""
    if cos_local.shape[1] == 0:
        return np.zeros(cos_local.shape[0])
    return softmax(cos_local / tau, axis=-1).max(axis=(1, 2))


def glmcm(cos_global: np.ndarray, cos_local: np.ndarray, tau: float = 1.0, lam: float = 1.0) -> np.ndarray:
    """GL-MCM score (N,): ``mcm(cos_global, tau) + lam * local_mcm(cos_local, tau)``; cos_global (N, C),
    cos_local (N, P, C)."""
    return mcm(cos_global, tau) + lam * local_mcm(cos_local, tau)


def as_tokens(X, dim: int | None) -> np.ndarray:
    """``X`` as L2-normalised float32 (N, 1 + P, D) image tokens; :class:`InputError` for anything else."""
    a = np.asarray(X)
    if a.ndim == 2:
        raise InputError("GL-MCM needs local features: pass (N, 1 + P, D) image tokens (row 0 the image feature), "
                         "e.g. encode_images(..., tokens=True).tokens, not (N, D) image features")
    if a.ndim != 3 or a.shape[1] < 1:
        raise InputError(f"image tokens must be (N, 1 + P, D), got shape {a.shape}")
    if dim is not None and a.shape[2] != dim:
        raise InputError(f"image tokens have dimension {a.shape[2]}, the classes {dim}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InputError("image tokens contain NaN or infinite values (drop unreadable images first)")
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(n == 0, 1.0, n)


class GLMCM(OODScorer):
    """GL-MCM: global MCM + ``lam`` x the best patch's MCM (tau = 1, lam = 1; see the module docstring).

    ``fit`` as every scorer (class names through ``backbone``, or (C, D) class features); ``score_samples``,
    ``predict_class`` ... take (N, 1 + P, D) image tokens. ID classification uses the global feature only.
    """

    name = "GL-MCM"
    uses_logit_scale = False
    needs_tokens: ClassVar[bool] = True  # the bench passes image tokens, not image features

    def __init__(self, *, tau: float = 1.0, lam: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.tau = tau
        self.lam = lam

    def _check(self, X) -> np.ndarray:
        if not hasattr(self, "class_features_"):
            raise NotFittedError(f"{self.name} is not fitted: call fit(class names or features) first")
        return as_tokens(X, self.class_features_.shape[1])

    def cosine(self, X) -> np.ndarray:
        """(N, C) cosine similarities of the image features (row 0 of the tokens) to the ID classes."""
        return self._check(X)[:, 0].astype(np.float64) @ self.class_features_.T

    def _score_features(self, x: np.ndarray) -> np.ndarray:
        t = self.class_features_.astype(np.float32)
        out = np.empty(x.shape[0])
        for s in range(0, x.shape[0], CHUNK):
            blk = x[s:s + CHUNK]
            out[s:s + CHUNK] = glmcm(blk[:, 0].astype(np.float64) @ self.class_features_.T,
                                     (blk[:, 1:] @ t.T).astype(np.float64), self.tau, self.lam)
        return out
