"""CLIPN's training losses, as pure functions of features, and their multi-process (gathered) form.

Notation (METHODS.md section 2): ``f`` image features (N, D), ``g`` the frozen text tower's caption
features (N, D), ``gno`` the "no" text encoder's features of the same captions (N, D), all L2-normalised;
``s`` the backbone's logit scale. Row i of every tensor is one image-caption pair.

- ``p_yes_ij = sigmoid(s * (f_i.g_j - f_i.gno_j))``, ``p_no = 1 - p_yes``
- image-text binary-opposite (ITBO): ``yes = -mean_i log p_yes_ii``, ``no = -mean_{i!=j} log p_no_ij``
- text semantic-opposite (TSO): ``mean_i (2 - ||g_i - gno_i||)``
- total: ``0.5 * (yes + no + tso)``

Logs are computed with ``logsigmoid`` (no ``log(0)`` at large logit scales).

Deviation from the reference: a pair (i, j) whose captions are the *same text* is not a negative (an image
of "a dog" is not "not a dog" because another image in the batch also has the caption "a dog"); pass
``neg_mask`` to say which off-diagonal pairs count. With many GPUs, :func:`gathered_clipn_loss` gathers the
features of every rank with gradients, and every rank computes the loss of the *whole global batch*: the
value is the single-process loss, and after DDP's gradient averaging the gradients are the single-process
gradients (the all-gather backward sums each rank's identical contributions, DDP divides by the world size).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "caption_ids",
    "clipn_loss",
    "gather",
    "gathered_clipn_loss",
    "itbo_logits",
    "itbo_loss",
    "p_yes",
    "same_text_mask",
    "tso_loss",
]


def itbo_logits(f: Tensor, g: Tensor, gno: Tensor, logit_scale: float | Tensor,
                bias: float | Tensor = 0.0) -> Tensor:
    """(N_img, D), (N_txt, D), (N_txt, D) -> (N_img, N_txt) logits ``s * (f.g - f.gno) + b`` of p_yes
    (``b = 0`` in the reference; see the module docstring)."""
    return logit_scale * (f @ g.T - f @ gno.T) + bias


def p_yes(f: Tensor, g: Tensor, gno: Tensor, logit_scale: float | Tensor, bias: float | Tensor = 0.0) -> Tensor:
    """(N_img, N_txt) probability that caption j is *affirmed* by image i (``p_no = 1 - p_yes``)."""
    return torch.sigmoid(itbo_logits(f, g, gno, logit_scale, bias))


def caption_ids(texts: list[str]) -> Tensor:
    """(N,) long: one id per distinct caption text (case and spacing ignored); equal ids = same text."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(" ".join(t.lower().split()), len(ids)) for t in texts], dtype=torch.long)


def same_text_mask(text_ids: Tensor) -> Tensor:
    """(N,) caption ids -> (N, N) bool, True where captions i and j are the same text."""
    return text_ids[:, None] == text_ids[None, :]


def itbo_loss(f: Tensor, g: Tensor, gno: Tensor, logit_scale: float | Tensor,
              neg_mask: Tensor | None = None, bias: float | Tensor = 0.0) -> tuple[Tensor, Tensor]:
    """Image-text binary-opposite loss, its two terms ``(yes, no)``.

    f, g, gno: (N, D) normalised, row i a matching pair. neg_mask: optional (N, N) bool, the pairs counted in
    the "no" term (default: every i != j; the diagonal is always excluded). With N = 1, or no negative pair
    left, the "no" term is 0.
    """
    n = f.shape[0]
    if g.shape[0] != n or gno.shape[0] != n:
        raise ValueError(f"need one caption per image: {n} images, {g.shape[0]} and {gno.shape[0]} captions")
    z = itbo_logits(f, g, gno, logit_scale, bias)
    yes = -F.logsigmoid(torch.diagonal(z)).mean()
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    if neg_mask is not None:
        off = off & neg_mask.to(z.device)
    k = off.sum()
    no = -(F.logsigmoid(-z) * off).sum() / k.clamp(min=1)
    return yes, no


def tso_loss(g: Tensor, gno: Tensor) -> Tensor:
    """Text semantic-opposite loss ``mean_i (2 - ||g_i - gno_i||)``: 0 when "no" is the antipode of "yes"."""
    # the norm of a zero vector has an undefined gradient: eps keeps it finite at initialisation (gno == g)
    d = torch.sqrt(((g - gno) ** 2).sum(-1) + 1e-12)
    return (2.0 - d).mean()


def clipn_loss(f: Tensor, g: Tensor, gno: Tensor, logit_scale: float | Tensor,
               neg_mask: Tensor | None = None, bias: float | Tensor = 0.0) -> dict[str, Tensor]:
    """CLIPN's total loss ``0.5 * (yes + no + tso)`` and its terms, as a dict of scalars (key ``loss``)."""
    yes, no = itbo_loss(f, g, gno, logit_scale, neg_mask, bias)
    tso = tso_loss(g, gno)
    return {"loss": 0.5 * (yes + no + tso), "itbo_yes": yes, "itbo_no": no, "tso": tso}


# ------------------------------------------------------------------------------------------ many processes
def _world() -> int:
    d = torch.distributed
    return d.get_world_size() if (d.is_available() and d.is_initialized()) else 1


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` (N_local, ...) over every rank, in rank order, keeping gradients.

    Uses ``torch.distributed.nn.functional.all_gather`` (its backward sums the gradients of every rank
    into the local rows). Without an initialised process group, or with one process, returns ``x``.
    Every rank must pass the same shape.
    """
    if _world() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "deprecated" in torch 2.14, still the public API
        return torch.cat(all_gather(x), dim=0)


def gathered_clipn_loss(f: Tensor, g: Tensor, gno: Tensor, logit_scale: float | Tensor,
                        text_ids: Tensor | None = None, bias: float | Tensor = 0.0) -> dict[str, Tensor]:
    """:func:`clipn_loss` of the global batch, from each rank's local rows.

    f, g, gno: this rank's (N_local, D) normalised features (same N_local on every rank). text_ids: this
    rank's (N_local,) caption ids (:func:`caption_ids` over the *whole* dataset, so equal ids mean equal
    text across ranks); pairs with equal ids are not negatives. Each rank returns the global loss; under DDP
    (which averages gradients over ranks) the parameter gradients equal those of one process on the global
    batch. Works unchanged without a process group.
    """
    f_all, g_all, gno_all = gather(f), gather(g), gather(gno)
    mask = None
    if text_ids is not None:
        mask = ~same_text_mask(gather(text_ids))
    return clipn_loss(f_all, g_all, gno_all, logit_scale, mask, bias)
