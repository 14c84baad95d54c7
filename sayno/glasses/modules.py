"""The trainable parts of CLIPGlasses and the modified score, as pure tensor functions.

Shapes: N captions, M images, P negated phrases ("slots"; every slot belongs to one caption, ``owner``),
D = embedding size, L = text layers. Every input feature is L2-normalised frozen-CLIP output.

- :class:`Detector`: a small MLP on the caption's layer features -> logit "this caption negates".
- :class:`Lens`: (caption layers, source) -> ``h_neg``, the embedding of what is negated. The source is the
  frozen-CLIP embedding of the negated phrase's prompt (``lens_input="phrase"``, sayno's default) or the
  caption's own ``h`` (``"caption"``, the reference). Attention runs over the *layers of one caption*.
- :class:`Frame`: the repulsion strength ``lambda`` of each slot, from the caption alone (retrieval) or
  refined with the image (pairs, re-ranking).
- :func:`glasses_logits` / :func:`glasses_pair_logits`: the modified score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Detector(nn.Module):
    """MLP on the flattened (L, D) layer features of a caption -> (N,) logits of "negates something"."""

    def __init__(self, dim: int, num_layers: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim * num_layers, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        return self.net(layers.flatten(1)).squeeze(-1)


class Lens(nn.Module):
    """Estimates ``h_neg`` (what is negated) for each slot.

    Reference structure, attention moved from the batch to the layers: a *syntax stream* (one
    Linear-GELU-LayerNorm per shallow layer -> one token per layer), a *semantic stream* (the source: the
    phrase embedding or the caption's ``h``) that provides the attention key, attention weights over the
    layers of this caption only, a residual gate ``c' = g*c + (1-g)*source`` and a feed-forward block.
    Initialised so that ``h_neg`` starts at the source (the gate closed, the feed-forward block zero).

    layers: (P, L, D) the owner caption's layers, source: (P, D). Returns (P, D), normalised.
    """

    def __init__(self, dim: int, syntax_layers: tuple[int, ...], hidden: int = 256):
        super().__init__()
        self.syntax_layers = tuple(int(i) for i in syntax_layers)
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim)) for _ in self.syntax_layers
        )
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.skip = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.constant_(self.gate.bias, -2.0)
        nn.init.zeros_(self.ffn[-1].weight)
        nn.init.zeros_(self.ffn[-1].bias)

    def attention(self, layers: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """(P, S) weights over the syntax layers (softmax over the layers of one caption)."""
        return self.attention_from(self._queries(layers), source)

    def attention_from(self, q: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """(P, S) attention weights from the syntax tokens ``q`` (P, S, D) and the source (P, D)."""
        k = self.key(source)
        # a broadcast product, not einsum: einsum runs P tiny matrix products (~8x slower at P = 500, S = 3)
        return torch.softmax((q * k.unsqueeze(1)).sum(-1) / math.sqrt(q.shape[-1]), dim=-1)

    def _queries(self, layers: torch.Tensor) -> torch.Tensor:
        return torch.stack([p(layers[:, i]) for p, i in zip(self.proj, self.syntax_layers)], dim=1)

    def forward(self, layers: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        q = self._queries(layers)  # (P, S, D)
        a = self.attention_from(q, source)
        # sum_s a_s * value(q_s) = value(sum_s a_s * q_s): the weights sum to 1 and value is affine, so the
        # value projection runs once per slot instead of once per syntax layer; and out(value(x)) is one affine
        # map, W_out W_v x + (W_out b_v + b_out), applied once (both equal up to float rounding)
        ctx = (a.unsqueeze(-1) * q).sum(1)
        w_ov = self.out.weight @ self.value.weight
        b_ov = self.out.weight @ self.value.bias + self.out.bias
        c = F.linear(ctx, w_ov, b_ov) + self.skip(source)
        g = torch.sigmoid(self.gate(c))
        c = g * c + (1 - g) * source
        return F.normalize(c + self.ffn(c), dim=-1)


class Frame(nn.Module):
    """The repulsion strength ``lambda`` in (0, lambda_max) and presence threshold ``tau`` of each slot.

    Caption-only (retrieval-grade): an MLP on ``[base, h_neg, base*h_neg, h, hedged]`` (``base``: what the
    score starts from, see :func:`glasses_logits`; ``h``: the whole caption) gives the ``lambda`` logit and
    ``tau = tau0 + dtau`` (``tau0`` a learned scalar; with ``learn_tau=False``, the reference, tau is 0).
    ``hedged`` is the lexical hedge flag of the slot (0/1): the data decides what it does.

    Image-conditioned (pairs and shortlist re-ranking only): a second MLP adds corrections to both, from
    ``cos(h_neg, I)``, ``cos(h, I)``, rank-``rank`` interactions ``(U I)*(V h_neg)``, ``(U I)*(W h)``, and how
    ``h_neg`` compares with a *bank* of object embeddings on this image (the z-score of ``cos(h_neg, I)`` among
    the bank's similarities, their mean, spread and maximum): a per-image calibration of "is it there".
    The bank holds the training vocabulary's prompt embeddings (a buffer saved with the checkpoint). The
    image MLP starts at zero: it only refines the caption-only path.
    """

    def __init__(self, dim: int, hidden: int = 256, lambda_max: float = 1.0, rank: int = 32,
                 image_hidden: int = 64, learn_tau: bool = True):
        super().__init__()
        self.lambda_max = float(lambda_max)
        self.learn_tau = bool(learn_tau)
        self.tau0 = nn.Parameter(torch.zeros(()), requires_grad=self.learn_tau)
        self.text = nn.Sequential(nn.Linear(4 * dim + 1, hidden), nn.GELU(), nn.Linear(hidden, 2))
        self.img_u = nn.Linear(dim, rank, bias=False)
        self.img_v = nn.Linear(dim, rank, bias=False)
        self.img_w = nn.Linear(dim, rank, bias=False)
        self.image = nn.Sequential(nn.Linear(2 * rank + 6, image_hidden), nn.GELU(), nn.Linear(image_hidden, 2))
        nn.init.zeros_(self.image[-1].weight)
        nn.init.zeros_(self.image[-1].bias)
        # saturation width of the image-conditioned term, from the caption alone (starts ~1: nearly linear)
        self.shape = nn.Sequential(nn.Linear(4 * dim + 1, image_hidden), nn.GELU(), nn.Linear(image_hidden, 1))
        nn.init.zeros_(self.shape[-1].weight)
        nn.init.constant_(self.shape[-1].bias, 0.55)
        nn.init.zeros_(self.text[-1].weight[1])
        nn.init.zeros_(self.text[-1].bias[1])
        self.register_buffer("bank", torch.zeros((0, dim)))

    def set_bank(self, embeddings: torch.Tensor) -> None:
        """(K, D) normalised object embeddings for the per-image calibration."""
        self.bank = embeddings.detach().float().clone()

    def text_params(self, base: torch.Tensor, h_neg: torch.Tensor, h: torch.Tensor, hedged: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption-only ``(lambda logit, tau)``, each (P,). base, h_neg, h: (P, D), hedged: (P,)."""
        x = torch.cat([base, h_neg, base * h_neg, h, hedged.to(h.dtype).unsqueeze(-1)], dim=-1)
        out = self.text(x)
        if not self.learn_tau:
            return out[:, 0], torch.zeros_like(out[:, 0])
        return out[:, 0], self.tau0 + out[:, 1]

    def beta(self, base: torch.Tensor, h_neg: torch.Tensor, h: torch.Tensor, hedged: torch.Tensor) -> torch.Tensor:
        """(P,) saturation width of the image-conditioned term (see :func:`glasses_logits`)."""
        x = torch.cat([base, h_neg, base * h_neg, h, hedged.to(h.dtype).unsqueeze(-1)], dim=-1)
        return F.softplus(self.shape(x).squeeze(-1)) + 0.01

    def _bank_stats(self, images: torch.Tensor) -> torch.Tensor:
        """(M, 3): mean, std and max of the bank's cosines with each image (zeros without a bank)."""
        if self.bank.shape[0] < 2:
            return images.new_zeros((images.shape[0], 3))
        c = images @ self.bank.T
        return torch.stack([c.mean(1), c.std(1).clamp_min(1e-3), c.max(1).values], dim=1)

    def image_params(self, h: torch.Tensor, h_neg: torch.Tensor, images: torch.Tensor, logit: torch.Tensor,
                     tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-conditioned ``(lambda logit, tau)`` for every slot and image, each (P, M). images: (M, D)."""
        u = self.img_u(images).unsqueeze(0)  # (1, M, r)
        cn, ch = h_neg @ images.T, h @ images.T  # (P, M)
        st = self._bank_stats(images)  # (M, 3)
        z = (cn - st[:, 0]) / st[:, 1].clamp_min(1e-3) if self.bank.shape[0] >= 2 else torch.zeros_like(cn)
        P, M = cn.shape
        x = torch.cat([u * self.img_v(h_neg).unsqueeze(1), u * self.img_w(h).unsqueeze(1), cn.unsqueeze(-1),
                       ch.unsqueeze(-1), z.unsqueeze(-1), st.unsqueeze(0).expand(P, M, 3)], dim=-1)
        d = self.image(x)
        dtau = d[..., 1] if self.learn_tau else torch.zeros_like(d[..., 1])
        return logit.unsqueeze(-1) + d[..., 0], tau.unsqueeze(-1) + dtau

    def image_params_pairs(self, h: torch.Tensor, h_neg: torch.Tensor, images: torch.Tensor, logit: torch.Tensor,
                           tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`image_params` for slot p with its own image ``images[p]``; each (P,)."""
        u = self.img_u(images)
        cn, ch = (h_neg * images).sum(-1), (h * images).sum(-1)
        st = self._bank_stats(images)
        z = (cn - st[:, 0]) / st[:, 1].clamp_min(1e-3) if self.bank.shape[0] >= 2 else torch.zeros_like(cn)
        x = torch.cat([u * self.img_v(h_neg), u * self.img_w(h), cn.unsqueeze(-1), ch.unsqueeze(-1),
                       z.unsqueeze(-1), st], dim=-1)
        d = self.image(x)
        dtau = d[:, 1] if self.learn_tau else torch.zeros_like(d[:, 1])
        return logit + d[:, 0], tau + dtau

    def lam(self, logit: torch.Tensor) -> torch.Tensor:
        return self.lambda_max * torch.sigmoid(logit)


def _scatter_rows(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Sum (P, ...) slot values into (n, ...) caption rows."""
    out = values.new_zeros((n, *values.shape[1:]))
    return out.index_add_(0, owner, values)


def saturate(x: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
    """``beta * tanh(x / beta)`` (identity when beta is None): linear near 0, bounded by +-beta."""
    return x if beta is None else beta * torch.tanh(x / beta)


def glasses_logits(h: torch.Tensor, images: torch.Tensor, h_neg: torch.Tensor, lam: torch.Tensor,
                   owner: torch.Tensor, tau: torch.Tensor | float, logit_scale: float, clamp: bool,
                   beta: torch.Tensor | None = None) -> torch.Tensor:
    """(N, M) modified scores with one ``lambda`` per slot (caption-only) or per slot and image.

    ``S = s*cos(h, I) - s * sum_p f(lambda_p * (cos(h_neg_p, I) - tau))`` over the caption's slots p, with
    ``f = max(0, .)`` when ``clamp`` (the reference, tau = 0) and the identity otherwise (sayno's variant,
    which rewards a negated object's absence). Captions without slots keep ``s*cos(h, I)`` exactly.

    With ``beta`` ((P,), image-conditioned paths only) the term is ``lambda * beta*tanh((cos - tau)/beta)``:
    bounded, so one very absent (or very present) object cannot outweigh everything else.

    h: (N, D), images: (M, D), h_neg: (P, D), lam and tau: scalar, (P,) or (P, M); owner: (P,) caption index
    of each slot.
    """
    base = h @ images.T
    if h_neg.shape[0] == 0:
        return logit_scale * base
    tau = torch.as_tensor(tau, dtype=h.dtype)
    if not clamp and lam.dim() == 1 and tau.dim() <= 1 and beta is None:
        # linear in I: one query vector and one constant per caption
        q = h - _scatter_rows(lam.unsqueeze(-1) * h_neg, owner, h.shape[0])
        const = _scatter_rows(lam * tau.expand_as(lam), owner, h.shape[0])
        return logit_scale * (q @ images.T + const.unsqueeze(-1))
    lam2 = lam if lam.dim() == 2 else lam.unsqueeze(-1)
    tau2 = tau if tau.dim() == 2 else tau.reshape(-1, 1) if tau.dim() == 1 else tau
    pen = lam2 * saturate(h_neg @ images.T - tau2, None if beta is None else beta.reshape(-1, 1))
    if clamp:
        pen = pen.clamp_min(0)
    return logit_scale * (base - _scatter_rows(pen, owner, h.shape[0]))


def glasses_pair_logits(h: torch.Tensor, images: torch.Tensor, h_neg: torch.Tensor, lam: torch.Tensor,
                        owner: torch.Tensor, tau: torch.Tensor | float, logit_scale: float,
                        clamp: bool, beta: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) modified scores of caption i with image i. images: (N, D); lam, tau: (P,) (or scalar tau) for slot p
    with its owner's image."""
    base = (h * images).sum(-1)
    if h_neg.shape[0] == 0:
        return logit_scale * base
    pen = lam * saturate((h_neg * images[owner]).sum(-1) - tau, beta)
    if clamp:
        pen = pen.clamp_min(0)
    return logit_scale * (base - _scatter_rows(pen, owner, h.shape[0]))
