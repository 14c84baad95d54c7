"""Glasses scores from :class:`Slots` (what the Glasses made of a batch's negated phrases), in numpy.

Shapes: N captions, M images, D embedding size, P slots (negated phrases). Every torch op here runs on one
thread (:func:`sayno.runtime.torch_threads`): the tensors are small, and a multi-threaded op leaves OpenMP
workers spinning while numpy's BLAS multiplies right after, which made scoring 3-6x slower on a busy CPU.

- :func:`query_vectors`: the linear form of the caption-only score, ``S = s*(q.I + c)``.
- :func:`caption_only_scores`: (N, M), ``lambda`` from the caption alone.
- :func:`pair_scores`: (N,), caption i with image i, ``lambda`` conditioned on the image.
- :func:`rerank_scores`: caption-only scores, each negated caption's top k re-ordered with the image.

Every path bounds a caption's total repulsion (:func:`bound_lambda`): its lambdas sum to at most
``PHRASES_AT_FULL_STRENGTH * lambda_max`` (2 x 2 = 4 for the shipped Glasses), so repeating or piling up
negated phrases cannot push a score without bound, while a caption with one or two phrases (each lambda <
lambda_max) is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sayno.base.scoring import TextBatch
from sayno.glasses.config import GlassesError
from sayno.glasses.modules import Frame, glasses_logits, glasses_pair_logits
from sayno.runtime import torch_threads

#: A caption's lambdas sum to at most this many times ``lambda_max`` (see :func:`bound_lambda`).
PHRASES_AT_FULL_STRENGTH = 2


def total_lambda_max(frame: Frame) -> float:
    """The most a caption's lambdas may sum to: ``PHRASES_AT_FULL_STRENGTH * frame.lambda_max``."""
    return PHRASES_AT_FULL_STRENGTH * float(frame.lambda_max)


def bound_lambda(lam: torch.Tensor, owner: torch.Tensor, limit: float) -> torch.Tensor:
    """``lam`` (P,) or (P, K) per slot (and image), scaled down per caption (``owner`` (P,)) so that each
    caption's total, per image column, is at most ``limit``; totals within the limit are returned unchanged."""
    if not len(owner):
        return lam
    total = torch.zeros((int(owner.max()) + 1, *lam.shape[1:]), dtype=lam.dtype).index_add_(0, owner, lam)
    scale = torch.where(total > limit, limit / total.clamp_min(1e-12), torch.ones_like(total))
    return lam * scale[owner]


@dataclass
class Slots:
    """The negated phrases of a batch of captions, with what the Glasses made of them.

    owner: (P,) caption index per slot; phrases: P phrase strings ("" for caption-input slots); hedged: (P,);
    h_neg: (P, D); lam, tau: (P,) caption-only lambda and presence threshold; negated: (N,) which captions
    the detector flagged; base: (N, D) what each caption's score starts from (``h`` for captions without slots);
    text_logit: (P,) the lambda logit; beta: (P,) the image-conditioned term's saturation width (None when the
    slots were made for caption-only scores, ``Glasses.slots(text, image_terms=False)``).
    """

    base: torch.Tensor
    owner: torch.Tensor
    phrases: list[str]
    hedged: torch.Tensor
    h_neg: torch.Tensor
    lam: torch.Tensor
    tau: torch.Tensor
    negated: np.ndarray
    text_logit: torch.Tensor = field(repr=False, default=None)
    beta: torch.Tensor = field(repr=False, default=None)


def query_vectors(text: TextBatch, slots: Slots, clamp: bool) -> tuple[np.ndarray, np.ndarray]:
    """q (N, D) = ``b - sum_p lambda_p h_neg_p`` (``h`` for captions without slots) and c (N,) =
    ``sum_p lambda_p tau_p``: one query vector per caption (``score="tau"`` only)."""
    if clamp:
        raise GlassesError('score="reference" is not linear in the image: it has no query vectors')
    q = np.array(text.h, copy=True)
    const = np.zeros(len(q), dtype=np.float32)
    rows = np.unique(slots.owner.numpy())
    if len(rows):
        with torch_threads(1):
            weighted = slots.lam.unsqueeze(-1) * slots.h_neg
            delta = torch.zeros((len(q), q.shape[1])).index_add_(0, slots.owner, weighted)
            q[rows] = (slots.base[rows] - delta[rows]).numpy().astype(q.dtype)
            const = torch.zeros(len(q)).index_add_(0, slots.owner, slots.lam * slots.tau).numpy()
    return q, const


def caption_only_scores(text: TextBatch, images: np.ndarray, slots: Slots, logit_scale: float,
                        clamp: bool) -> np.ndarray:
    """(N, M) scores with ``lambda`` from the caption alone; rows without slots equal plain CLIP's bit for bit."""
    rows = np.unique(slots.owner.numpy())
    if not clamp:
        q, const = query_vectors(text, slots, clamp)
        out = q @ images.T
        out *= logit_scale
        add = (logit_scale * const).astype(out.dtype)
        for r in rows:  # row views: no gather/scatter of the (N, M) matrix
            out[r] += add[r]
        return out
    out = text.h @ images.T
    out *= logit_scale
    if len(rows):
        with torch_threads(1):
            base_rows = slots.base[rows].numpy()
        lam, tau = slots.lam.numpy()[:, None], slots.tau.numpy()[:, None]
        penalty = np.maximum(lam * (slots.h_neg.numpy() @ images.T - tau), 0)
        total = np.zeros((len(out), out.shape[1]), dtype=np.float32)
        np.add.at(total, slots.owner.numpy(), penalty)
        out[rows] = logit_scale * (base_rows @ images.T - total[rows])
    return out


def pair_scores(text: TextBatch, images: np.ndarray, slots: Slots, frame: Frame, logit_scale: float,
                clamp: bool) -> np.ndarray:
    """(N,) caption i with image i (images: (N, D)), ``lambda`` conditioned on image i."""
    out = logit_scale * np.einsum("nd,nd->n", np.asarray(text.h), images)
    if not len(slots.owner):
        return out
    img = torch.as_tensor(np.asarray(images, dtype=np.float32))
    owner = slots.owner
    with torch.no_grad(), torch_threads(1):
        logit, tau = frame.image_params_pairs(slots.base[owner], slots.h_neg, img[owner], slots.text_logit,
                                              slots.tau)
        lam = bound_lambda(frame.lam(logit), owner, total_lambda_max(frame))
        mod = glasses_pair_logits(slots.base, img, slots.h_neg, lam, owner, tau, logit_scale, clamp,
                                  slots.beta).numpy()
    rows = np.unique(owner.numpy())
    out[rows] = mod[rows].astype(out.dtype)
    return out


def rerank_scores(text: TextBatch, images: np.ndarray, slots: Slots, frame: Frame, logit_scale: float,
                  clamp: bool, k: int) -> np.ndarray:
    """(N, M): caption-only scores, each negated caption's top k re-ordered by image-conditioned scores.

    The shortlist stays above every other image: values outside it are shifted down so that the row's order
    is "shortlist by refined score, then the rest by caption-only score". Only the order is meaningful.
    """
    out = caption_only_scores(text, images, slots, logit_scale, clamp)
    rows = np.unique(slots.owner.numpy())
    if not len(rows) or k <= 0:
        return out
    k = min(k, images.shape[0])
    img = torch.as_tensor(np.asarray(images, dtype=np.float32))
    for r in rows:
        top = np.argpartition(-out[r], k - 1)[:k]
        refined = _refined_row(slots, frame, int(r), img[top], logit_scale, clamp)
        rest = np.ones(out.shape[1], bool)
        rest[top] = False
        if rest.any():
            shift = out[r, rest].max() - refined.min() + 1.0
            out[r, rest] -= max(shift, 0.0)
        out[r, top] = refined
    return out


def _refined_row(slots: Slots, frame: Frame, row: int, images: torch.Tensor, logit_scale: float,
                 clamp: bool) -> np.ndarray:
    """(k,) image-conditioned scores of caption ``row`` on ``images`` (k, D)."""
    sel = (slots.owner == row).nonzero().squeeze(-1)
    base = slots.base[[row]]
    with torch.no_grad(), torch_threads(1):
        logit, tau = frame.image_params(slots.base[[row] * len(sel)], slots.h_neg[sel], images,
                                        slots.text_logit[sel], slots.tau[sel])  # (p, k) each
        first = torch.zeros(len(sel), dtype=torch.long)
        lam = bound_lambda(frame.lam(logit), first, total_lambda_max(frame))
        return glasses_logits(base, images, slots.h_neg[sel], lam, first, tau, logit_scale, clamp,
                              slots.beta[sel])[0].numpy()

