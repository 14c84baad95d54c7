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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sayno.base.scoring import TextBatch
from sayno.checkpoint import (
    CheckpointError,
    Envelope,
    check_tensors,
    read_checkpoint,
    read_header,
    write_checkpoint,
)
from sayno.config import from_mapping
from sayno.errors import SaynoError
from sayno.glasses.analysis import analyse_texts
from sayno.glasses.config import GlassesError, checked_float, checked_int
from sayno.glasses.inputs import check_batch, check_features, check_texts
from sayno.runtime import torch_threads

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


# ------------------------------------------------------------------------------------- trained paper Glasses
#: the checkpoint format of :class:`PaperGlasses` (the :mod:`sayno.checkpoint` envelope, like sayno's Glasses)
PAPER_FORMAT = "sayno-glasses-paper"
PAPER_FORMAT_VERSION = "1"
#: retrieval re-ranks each negated caption's top k images of plain CLIP with the image-conditioned score
DEFAULT_RERANK_K = 20
#: with ``reference_quirks`` the Lens's softmax runs over a batch of captions: scoring feeds it batches of this
#: many (the reference evaluates in batches too; a benchmark's thousands of captions at once would flatten it)
QUIRKS_BATCH = 64


@dataclass
class PaperGlassesConfig:
    """What a trained paper Glasses is (stored in its checkpoint).

    hidden: the Frame transformer's feed-forward width; 0 means ``4 * embed_dim`` (the reference's ratio:
    2048 at D = 512). lambda_0: the reference's ``lambda_0``. reference_quirks: the modules' quirks mode (see
    :class:`PaperLens` and :class:`PaperFrame`). prompt: what a negated object is embedded as (the Lens target).
    Negated captions are those the negation analyser flags (sayno's lexical detector: the paper's modules have
    no detector; the reference's MLP detector is not part of this preset).
    """

    embed_dim: int
    num_layers: int
    hidden: int = 0
    lambda_0: float = 1.0
    reference_quirks: bool = False
    prompt: str = "This image shows {}."

    def __post_init__(self) -> None:
        self.embed_dim = checked_int("embed_dim", self.embed_dim, 8, 16384)
        self.num_layers = checked_int("num_layers", self.num_layers, SYNTAX_LAYERS, 1024)
        if self.embed_dim % 8:
            raise GlassesError(f"embed_dim must be a multiple of 8 (the Frame's 8 heads), got {self.embed_dim}")
        self.hidden = checked_int("hidden", self.hidden, 0, 65536) or 4 * self.embed_dim
        self.lambda_0 = checked_float("lambda_0", self.lambda_0, 0.0, 100.0)
        if not isinstance(self.reference_quirks, bool):
            raise GlassesError(f"reference_quirks must be true or false, got {self.reference_quirks!r}")
        if not isinstance(self.prompt, str):
            raise GlassesError(f"prompt must be a string, got {type(self.prompt).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PaperGlassesConfig:
        """From a dict (a checkpoint's config); unknown keys raise :class:`sayno.config.ConfigError`."""
        return from_mapping(cls, data, "paper Glasses config")


class PaperGlasses(nn.Module):
    """The paper's CLIPGlasses (:class:`PaperLens` + :class:`PaperFrame`) around a frozen backbone; a scorer
    (:class:`sayno.base.scoring.Scorer`).

    Score of a negated caption (lexical detector) with image I: ``s*cos(h, I) - max(0, lambda*s*cos(h_neg, I))``,
    ``h_neg = Lens(h, layers)``, ``lambda = Frame(h, I, h_neg)`` of that pair; other captions keep CLIP's score.

    - :meth:`score_pairs` (MCQ, CC-Neg): caption i with image i, the image-conditioned ``lambda`` as published.
    - :meth:`score_matrix` (retrieval): a ``lambda`` per (caption, image) pair costs a transformer pass each
      (docs/GLASSES.md), so each negated caption's top ``rerank_k`` images by plain CLIP are re-scored with
      the paper's score and put first in that order; the rest keep CLIP's order below them (only the order in
      a row is meaningful; ``rerank_k=None`` scores every pair, exact and slow).
    """

    needs_layers = True

    def __init__(self, config: PaperGlassesConfig, backbone=None, *, name: str = "CLIPGlasses (paper)",
                 logit_scale: float | None = None, rerank_k: int | None = DEFAULT_RERANK_K):
        super().__init__()
        if logit_scale is None:
            if backbone is None:
                raise GlassesError("PaperGlasses need a backbone or an explicit logit_scale")
            logit_scale = float(backbone.logit_scale)
        self.config, self.backbone, self.name = config, backbone, name
        self.rerank_k = None if rerank_k is None else max(1, int(rerank_k))
        q = config.reference_quirks
        self.lens = PaperLens(config.embed_dim, reference_quirks=q)
        self.frame = PaperFrame(config.embed_dim, config.hidden, lambda_0=config.lambda_0,
                                logit_scale=math.log(float(logit_scale)), reference_quirks=q)
        self.training_summary: dict = {}
        self.eval()

    @property
    def logit_scale(self) -> float:
        return float(self.frame.logit_scale.exp())

    def scorer(self) -> PaperGlasses:
        """The benchmark scorer (:class:`sayno.base.scoring.Scorer`): the model itself."""
        return self

    def text_batch(self, texts: Sequence[str]) -> TextBatch:
        """N captions -> a :class:`TextBatch` with the backbone's (N, D) and per-layer (N, L, D) features."""
        if self.backbone is None:
            raise GlassesError("text_batch needs the Glasses' backbone (load_glasses(path, backbone))")
        texts = check_texts(texts, "PaperGlasses.text_batch")
        h = self.backbone.encode_text(texts).float().cpu().numpy()
        layers = self.backbone.encode_text_layers(texts).float().cpu().numpy()
        return TextBatch(texts, h, layers)

    def negated_mask(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) which captions the negation analyser flags (the only ones whose score changes)."""
        return np.array([a.negated for a in analyse_texts(list(texts))], dtype=bool)

    def _inputs(self, text: TextBatch, images: np.ndarray, where: str, pairs: bool = False):
        check_batch(text, self.config.embed_dim, where)
        feats = check_features(images, self.config.embed_dim, where, rows=len(text.texts) if pairs else None)
        if text.layers is None or np.asarray(text.layers).shape[1] < SYNTAX_LAYERS:
            raise GlassesError(f"{where}: needs TextBatch.layers with at least {SYNTAX_LAYERS} layers")
        h = torch.as_tensor(np.asarray(text.h, dtype=np.float32))
        layers = torch.as_tensor(np.asarray(text.layers, dtype=np.float32))
        return h, layers, torch.as_tensor(np.asarray(feats, dtype=np.float32))

    def h_neg(self, h: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        """(N, D) Lens output of every caption. With quirks a caption's ``h_neg`` depends on its batch (the
        reference's softmax over the batch): the Lens then reads consecutive batches of :data:`QUIRKS_BATCH`."""
        step = QUIRKS_BATCH if self.config.reference_quirks else max(1, len(h))
        with torch.no_grad(), torch_threads(1):
            return torch.cat([self.lens(h[a:a + step], layers[a:a + step]) for a in range(0, len(h), step)])

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N,) caption i with image i, ``lambda`` of that pair."""
        h, layers, img = self._inputs(text, images, "PaperGlasses.score_pairs", pairs=True)
        neg = torch.as_tensor(self.negated_mask(text.texts))
        hn = self.h_neg(h, layers)
        with torch.no_grad(), torch_threads(1):
            return self.frame.pair_scores(img, h, hn, neg).numpy()

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N, M): CLIP's scores; each negated caption's top ``rerank_k`` re-scored and ranked first."""
        h, layers, img = self._inputs(text, images, "PaperGlasses.score_matrix")
        s = self.logit_scale
        out = s * (F.normalize(h, dim=-1) @ F.normalize(img, dim=-1).T).numpy()
        rows = np.flatnonzero(self.negated_mask(text.texts))
        if not len(rows) or not len(img):
            return out
        k = len(img) if self.rerank_k is None else min(self.rerank_k, len(img))
        top = np.argsort(-out[rows], axis=1, kind="stable")[:, :k]  # (R, k)
        hn = self.h_neg(h, layers)
        r_idx = torch.as_tensor(np.repeat(rows, k))
        c_idx = torch.as_tensor(top.reshape(-1))
        with torch.no_grad(), torch_threads(1):
            step = max(1, self.frame.chunk)
            refined = torch.cat([self.frame.pair_scores(img[c_idx[a:a + step]], h[r_idx[a:a + step]],
                                                        hn[r_idx[a:a + step]])
                                 for a in range(0, len(r_idx), step)]).numpy().reshape(len(rows), k)
        for j, r in enumerate(rows):
            rest = np.ones(out.shape[1], bool)
            rest[top[j]] = False
            if rest.any():
                out[r, rest] -= max(out[r, rest].max() - refined[j].min() + 1.0, 0.0)
            out[r, top[j]] = refined[j]
        return out

    def save(self, path: str | Path, training: dict | None = None) -> Path:
        """Write the checkpoint (fp32, atomic): config, backbone fingerprint, training summary."""
        if self.backbone is None:
            raise GlassesError("save() needs the backbone the Glasses were trained on (for its fingerprint)")
        tensors = {k: v.detach().float().contiguous().clone() for k, v in self.state_dict().items()}
        envelope = Envelope(PAPER_FORMAT, PAPER_FORMAT_VERSION, backbone_fingerprint=self.backbone.fingerprint,
                            backbone_spec=str(getattr(self.backbone, "spec", "")), config=self.config.to_dict(),
                            sections={"logit_scale": repr(self.logit_scale), "training": training or {}})
        return write_checkpoint(path, tensors, envelope)


def is_paper_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a paper Glasses checkpoint (reads the header only)."""
    try:
        return read_header(path).format == PAPER_FORMAT
    except (CheckpointError, OSError):
        return False


def load_paper_glasses(path: str | Path, backbone, *, name: str = "CLIPGlasses (paper)",
                       rerank_k: int | None = DEFAULT_RERANK_K) -> PaperGlasses:
    """Load a paper Glasses checkpoint for ``backbone`` (:func:`sayno.glasses.load_glasses` calls this for one).

    Raises :class:`sayno.errors.BackboneMismatch` for another backbone and :class:`CheckpointError` for another
    format, a bad config, or a missing, unexpected or wrong-shaped tensor."""
    tensors, envelope = read_checkpoint(path, PAPER_FORMAT, (PAPER_FORMAT_VERSION,))
    envelope.check_backbone(backbone.fingerprint, getattr(backbone, "spec", None), str(path))
    try:
        config = PaperGlassesConfig.from_dict(envelope.config)
    except SaynoError as e:
        raise CheckpointError(f"{path}: its config is not usable ({str(e).splitlines()[0] if str(e) else e})") from e
    if config.embed_dim != backbone.embed_dim or config.num_layers != backbone.num_text_layers:
        raise CheckpointError(f"{path}: dims ({config.embed_dim}, {config.num_layers}) do not match the backbone "
                              f"({backbone.embed_dim}, {backbone.num_text_layers})")
    g = PaperGlasses(config, backbone, name=name, rerank_k=rerank_k)
    check_tensors(tensors, {k: tuple(v.shape) for k, v in g.state_dict().items()}, str(path))
    g.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    training = envelope.sections.get("training") or {}
    g.training_summary = training if isinstance(training, dict) else {}
    return g.eval()
