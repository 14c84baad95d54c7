"""CLIPGlasses as published: the reference code's Lens and Frame (Codecode-X/CLIPGlasses, exp/exp5_glasses).

sayno's own :class:`~sayno.glasses.modules.Lens` and :class:`~sayno.glasses.modules.Frame` are an improved
variant (docs/GLASSES.md, "Deviations from the reference"); the two modules here are the reference
architecture, so that a reference-trained checkpoint loads unchanged and the paper's method can be measured
beside sayno's:

- :class:`PaperLens` has the parameter names and shapes of ``CLIPGlassesLens`` (32 tensors for D = 512);
  ``forward(h, level_h_list)`` as the reference.
- :class:`PaperFrame` has those of ``CLIPGlassesFrame`` (44 tensors, ``logit_scale`` included);
  ``forward(I, h, h_neg, neg_mask)`` as the reference.

Shapes: B captions (and, for the reference's paired forward, B images), M images, D = embedding size, L >= 3
text layers. ``reference_quirks=True`` reproduces the reference's arithmetic exactly (tested against an
independent re-statement of its forward on random weights); the default (False) fixes its defects, each
named in the class docstrings. Every choice here changes only the forward, never a parameter, so one state
dict loads in both modes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The reference's settings: hard-coded in its modules or its config (``lambda_0``).
REF_DIM = 512
REF_HIDDEN = 2048
SYNTAX_LAYERS = 3
ATTENTION_SCALE = (1.0, 0.8, 0.6)


def _proj(dim: int) -> nn.Sequential:
    """The reference's Linear (no bias) - GELU - LayerNorm projection."""
    return nn.Sequential(nn.Linear(dim, dim, bias=False), nn.GELU(), nn.LayerNorm(dim))


class PaperLens(nn.Module):
    """The reference Lens: ``h_neg`` from the caption's ``h`` (B, D) and its per-layer features (B, L, D).

    Syntax stream: ``Q_i = syntax_proj[i](level_h_list[:, i])`` for the first three layers. Semantic stream:
    ``K = semantic_k_proj(h)``, ``V_i = semantic_v_proj[i](h)`` (values from ``h``, not from the layers).
    ``c = sum_i A_i * V_i``; residual gate ``c' = g*c + (1-g)*h``; ``h_neg = ffn(c')`` (B, D), unnormalised.

    With ``reference_quirks=True``, exactly as the reference computes it:
    - ``A_i = softmax over the batch`` of ``(Q_i.K / sqrt(D)) * attention_log_scale[i]``: a caption's
      ``h_neg`` depends on the other captions of its batch, and at batch size 1 every weight is 1;
    - the log-scale parameter multiplies the logits as it is (``log 1 = 0``: layer 1 starts switched off);
    - ``g = sigmoid(res_gate(c))`` where ``res_gate`` already ends in a sigmoid: ``g`` is in (0.5, 0.73).

    The default fixes the three: the softmax runs over the three layers of *one* caption, the logits are
    multiplied by ``exp(attention_log_scale[i])`` (the scales the parameter's name and initial value mean),
    and ``g = res_gate(c)`` (one sigmoid, the whole of (0, 1)).
    """

    def __init__(self, dim: int = REF_DIM, *, reference_quirks: bool = False, dropout: float = 0.1):
        super().__init__()
        self.dim = int(dim)
        self.reference_quirks = bool(reference_quirks)
        self.res_gate = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())
        self.syntax_proj = nn.ModuleList(_proj(dim) for _ in range(SYNTAX_LAYERS))
        self.semantic_k_proj = _proj(dim)
        self.semantic_v_proj = nn.ModuleList(_proj(dim) for _ in range(SYNTAX_LAYERS))
        self.attention_log_scale = nn.Parameter(torch.log(torch.tensor(ATTENTION_SCALE)))
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * dim, dim), nn.LayerNorm(dim))
        nn.init.constant_(self.res_gate[0].bias, -2.0)
        nn.init.normal_(self.res_gate[0].weight, mean=0.0, std=0.02)
        for proj in [*self.syntax_proj, *self.semantic_v_proj]:
            nn.init.kaiming_normal_(proj[0].weight, mode="fan_in", nonlinearity="relu")

    def attention(self, h: torch.Tensor, level_h_list: torch.Tensor) -> torch.Tensor:
        """(B, 3) attention weights of the three syntax layers (see the class docstring for the axis)."""
        k = self.semantic_k_proj(h)  # (B, D)
        q = torch.stack([p(level_h_list[:, i]) for i, p in enumerate(self.syntax_proj)], dim=1)  # (B, 3, D)
        logits = torch.einsum("bsd,bd->bs", q, k) / math.sqrt(self.dim)
        if self.reference_quirks:
            return torch.softmax(logits * self.attention_log_scale, dim=0)
        return torch.softmax(logits * self.attention_log_scale.exp(), dim=1)

    def forward(self, h: torch.Tensor, level_h_list: torch.Tensor) -> torch.Tensor:
        if level_h_list.ndim != 3 or level_h_list.shape[1] < SYNTAX_LAYERS:
            raise ValueError(f"level_h_list must be (B, L >= {SYNTAX_LAYERS}, D), got {tuple(level_h_list.shape)}")
        a = self.attention(h, level_h_list)  # (B, 3)
        v = torch.stack([p(h) for p in self.semantic_v_proj], dim=1)  # (B, 3, D)
        c = torch.einsum("bs,bsd->bd", a, v)
        g = self.res_gate(c)
        if self.reference_quirks:
            g = torch.sigmoid(g)
        return self.ffn(g * c + (1 - g) * h)


class PaperFrame(nn.Module):
    """The reference Frame: ``lambda`` from a 3-layer transformer over the two tokens [h, I] and cross-attention
    from the fused caption token to ``h_neg``, then the score ``s*cos(h, I) - max(0, lambda*s*cos(h_neg, I))``
    for negated captions (``neg_mask``), the plain ``s*cos(h, I)`` for the others.

    ``lambda(h, I, h_neg) = GELU(lambda_0 * sigmoid(gate([h_attn, attn(h_attn, h_neg)])))`` with
    ``h_attn = alpha*h + transformer([h, I])[0]``: one number per (caption, image) pair.

    ``forward(I, h, h_neg, neg_mask)``: I (M, D), h and h_neg (B, D), neg_mask (B,) bool -> (B, M) scores.

    - ``reference_quirks=True``: the reference's forward. It needs M = B and computes *one* lambda per
      caption, from the caption and the image of the same row (in training: its ground-truth image), and
      applies it to every image of the row: a retrieval score that knows the answer. It also adds 1e-8 to
      every entry of the normalised ``h_neg``.
    - default: every (caption, image) pair gets the lambda of *that* pair, so no score depends on which image
      sits in the caption's row. Exact for retrieval without the ground truth, at the cost of B x M
      transformer passes (``chunk`` pairs at a time); :meth:`pair_scores` (caption i with image i) needs only
      B, and is what both modes compute on the diagonal.
    """

    def __init__(self, dim: int = REF_DIM, hidden: int = REF_HIDDEN, *, lambda_0: float = 1.0,
                 logit_scale: float = math.log(100.0), reference_quirks: bool = False, chunk: int = 4096):
        super().__init__()
        self.lambda_0 = float(lambda_0)
        self.reference_quirks = bool(reference_quirks)
        self.chunk = int(chunk)
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))  # log of s, as CLIP stores it
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=8, dim_feedforward=hidden, dropout=0.3,
                                           activation="gelu", batch_first=True, layer_norm_eps=1e-6)
        self.cross_transformer = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
        self.lambda_generator = nn.ModuleDict({
            "cross_attn": nn.MultiheadAttention(embed_dim=dim, num_heads=4, dropout=0.2, batch_first=True),
            "gate_controller": nn.Sequential(nn.Linear(2 * dim, 1), nn.Sigmoid()),
        })
        self.alpha = nn.Parameter(torch.ones(1) * 0.1)
        for p in self.cross_transformer.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def _h_neg(self, h_neg: torch.Tensor) -> torch.Tensor:
        out = F.normalize(h_neg, dim=-1)
        return out + 1e-8 if self.reference_quirks else out

    def lam(self, I: torch.Tensor, h: torch.Tensor, h_neg: torch.Tensor) -> torch.Tensor:
        """(P,) lambda of P (caption, image) pairs: row p of I (P, D), h (P, D), h_neg (P, D)."""
        i_n, h_n, n_n = F.normalize(I, dim=-1), F.normalize(h, dim=-1), self._h_neg(h_neg)
        fused = self.cross_transformer(torch.stack([h_n, i_n], dim=1))[:, 0]
        h_attn = self.alpha * h_n + fused
        gen = self.lambda_generator
        attn, _ = gen["cross_attn"](h_attn.unsqueeze(1), n_n.unsqueeze(1), n_n.unsqueeze(1))
        base = gen["gate_controller"](torch.cat([h_attn, attn.squeeze(1)], dim=-1)).squeeze(-1)
        return F.gelu(self.lambda_0 * base)

    def _combine(self, base: torch.Tensor, adjusted: torch.Tensor, neg_mask: torch.Tensor | None) -> torch.Tensor:
        adjusted = adjusted.clamp(min=0.0)
        if neg_mask is None:
            return base.detach() - adjusted
        shape = (-1,) + (1,) * (base.ndim - 1)
        return torch.where(neg_mask.bool().view(shape), base.detach() - adjusted, base)

    def pair_scores(self, I: torch.Tensor, h: torch.Tensor, h_neg: torch.Tensor,
                    neg_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) score of caption i with image i (the lambda of that pair; the same in both modes)."""
        s = self.logit_scale.exp()
        i_n, h_n, n_n = F.normalize(I, dim=-1), F.normalize(h, dim=-1), self._h_neg(h_neg)
        base = s * (h_n * i_n).sum(-1)
        adjusted = self.lam(I, h, h_neg) * s * (n_n * i_n).sum(-1)
        return self._combine(base, adjusted, neg_mask)

    def forward(self, I: torch.Tensor, h: torch.Tensor, h_neg: torch.Tensor,
                neg_mask: torch.Tensor | None = None) -> torch.Tensor:
        s = self.logit_scale.exp()
        i_n, h_n, n_n = F.normalize(I, dim=-1), F.normalize(h, dim=-1), self._h_neg(h_neg)
        base = s * (h_n @ i_n.T)  # (B, M)
        if self.reference_quirks:
            if I.shape[0] != h.shape[0]:
                raise ValueError("the reference Frame pairs caption i with image i: it needs as many images "
                                 f"as captions, got {I.shape[0]} and {h.shape[0]}")
            lam = self.lam(I, h, h_neg).unsqueeze(-1)  # (B, 1): the row's own image decides
        else:
            lam = self.lambda_matrix(I, h, h_neg)  # (B, M)
        return self._combine(base, lam * s * (n_n @ i_n.T), neg_mask)

    def lambda_matrix(self, I: torch.Tensor, h: torch.Tensor, h_neg: torch.Tensor) -> torch.Tensor:
        """(B, M) lambda of every (caption, image) pair, ``chunk`` pairs per transformer pass."""
        b, m = h.shape[0], I.shape[0]
        rows = torch.arange(b, device=h.device).repeat_interleave(m)
        cols = torch.arange(m, device=h.device).repeat(b)
        out = [self.lam(I[cols[k:k + self.chunk]], h[rows[k:k + self.chunk]], h_neg[rows[k:k + self.chunk]])
               for k in range(0, b * m, max(1, self.chunk))]
        return torch.cat(out).view(b, m) if out else h.new_zeros(b, m)
