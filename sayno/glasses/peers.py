"""Training-free peers of CLIPGlasses: what users compare against when they want a CLIP that reads "no".

Both read a caption through the same negation analysis as Glasses (:func:`sayno.glasses.analysis.analyse_texts`:
the negated phrases, ``"a beach with no people"`` -> ``"people"``, and the affirmative remainder ``"a beach"``),
turn it into one query vector ``q`` (normalised) and score ``s * cos(q, I)`` with the backbone's own logit
scale ``s``. A caption with no negated phrase keeps ``q = h``: its scores are :class:`PlainClip`'s, bit for bit.
Shapes: N captions, M images, D embedding size; ``e(t)`` is the frozen CLIP's normalised embedding of text t.

- :class:`Subtraction` (rclip's ``"a beach - people"``): ``q = e(remainder) - w * sum_p e(phrase_p)``.
- :class:`ConceptProjection`: ``q = h - w * P h`` with ``P`` the orthogonal projector onto the span of the
  negated phrases' embeddings ``e(phrase_p)``: the caption's own embedding with the negated concepts' directions
  removed (``w = 1``: removed exactly; ``w > 1``: pushed past zero, away from them).

Each has one setting, ``w``; the defaults (:data:`DEFAULT_WEIGHTS`) were chosen on the world's *validation*
split by :func:`sayno.eval.peers.choose_weights` (docs/GLASSES.md, "Training-free peers") and never on test.
Neither has a per-image refinement: ``score_pairs`` is the diagonal of ``score_matrix``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sayno.base.scoring import TextBatch
from sayno.glasses.analysis import analyse_texts, slot_phrases
from sayno.glasses.config import GlassesError
from sayno.glasses.phrases import DEFAULT_CAPACITY, PhraseEncoder
from sayno.glasses.reading import ReadLimits

SUBTRACTION = "rclip subtraction"
PROJECTION = "concept projection"
# chosen on the world's validation split (sayno.eval.peers.choose_weights; docs/RESULTS.md, issue 26)
DEFAULT_WEIGHTS = {SUBTRACTION: 0.1, PROJECTION: 1.25}


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def subtraction_query(base: np.ndarray, phrases: np.ndarray, w: float) -> np.ndarray:
    """(D,) ``unit(base - w * sum_p phrases[p])``: base (D,), phrases (P, D), all normalised."""
    return _unit(base - w * phrases.sum(0))


def projection_query(h: np.ndarray, phrases: np.ndarray, w: float) -> np.ndarray:
    """(D,) ``unit(h - w * P h)``, P the projector onto the span of phrases (P, D) (orthonormalised by QR;
    directions that repeat an earlier one add nothing)."""
    q, r = np.linalg.qr(phrases.T.astype(np.float64))  # (D, P): an orthonormal basis of the span
    keep = np.abs(np.diag(r)) > 1e-6 * max(1.0, float(np.abs(r).max(initial=0.0)))
    basis = q[:, keep]
    return _unit(h - w * basis @ (basis.T @ h)).astype(np.float32)


class _Peer:
    """A training-free peer: a :class:`~sayno.base.scoring.Scorer` from one query vector per caption."""

    needs_layers = False
    kind = ""

    def __init__(self, backbone=None, *, weight: float | None = None, logit_scale: float | None = None,
                 text_encoder: Callable[[list[str]], np.ndarray] | None = None, embed_dim: int | None = None,
                 name: str | None = None, phrase_cache: int = DEFAULT_CAPACITY, share_with: _Peer | None = None):
        if text_encoder is None and backbone is not None:
            text_encoder = lambda texts: backbone.encode_text(texts).float().cpu().numpy()
        if text_encoder is None:
            raise GlassesError(f"{self.kind} needs a backbone or a text_encoder")
        scale = logit_scale if logit_scale is not None else getattr(backbone, "logit_scale", None)
        dim = embed_dim if embed_dim is not None else getattr(backbone, "embed_dim", None)
        if scale is None or dim is None:
            raise GlassesError(f"{self.kind} needs a backbone or an explicit logit_scale and embed_dim")
        self.weight = float(DEFAULT_WEIGHTS[self.kind] if weight is None else weight)
        if not np.isfinite(self.weight) or self.weight < 0:
            raise GlassesError(f"{self.kind}: the weight must be finite and >= 0, got {weight!r}")
        self.logit_scale = float(scale)
        self.backbone = backbone
        self.embed_dim = int(dim)
        if share_with is not None:  # another peer of the same backbone: the same remainders, phrases and captions
            if share_with.embed_dim != self.embed_dim:
                raise GlassesError(f"{self.kind}: cannot share the memos of a peer with D={share_with.embed_dim}")
            self.texts, self.reading = share_with.texts, share_with.reading
        else:
            self.texts = PhraseEncoder(text_encoder, self.embed_dim, phrase_cache)
            # how much of each negated caption the text encoder reads, memoised per caption as for Glasses
            self.reading = ReadLimits(backbone if hasattr(backbone, "text_read_chars") else None, phrase_cache)
        self.name = name or self.kind

    def _query(self, h: np.ndarray, base: np.ndarray, phrases: np.ndarray) -> np.ndarray:
        """(D,) the query of one negated caption: h (D,), base = e(remainder) (D,), phrases (P, D)."""
        raise NotImplementedError

    def query_vectors(self, text: TextBatch) -> np.ndarray:
        """(N, D) query vectors: ``h`` for captions without a negated phrase, the peer's ``q`` for the others."""
        texts = list(text.texts)
        q = np.array(text.h, dtype=np.float32, copy=True)
        work = []  # (row, remainder, phrase texts)
        analyses = analyse_texts(texts)
        cued = [i for i, a in enumerate(analyses) if a.negated]  # only these need their read limit
        limits = dict(zip(cued, self.reading([texts[i] for i in cued])))
        for i, a in enumerate(analyses):
            found = slot_phrases(a, limits[i]) if a.negated else []
            if found:
                work.append((i, a.affirmative_text, [p.text for p in found]))
        needed = list(dict.fromkeys(t for _, r, ps in work for t in (r, *ps)))
        emb = dict(zip(needed, self.texts.encode(needed))) if needed else {}
        for i, remainder, phrases in work:
            q[i] = self._query(q[i], emb[remainder], np.stack([emb[p] for p in phrases]))
        return q

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N, M) ``s * q @ I.T``."""
        return self.logit_scale * (self.query_vectors(text) @ np.asarray(images).T)

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N,) caption i with image i (images: (N, D)); caption-only, as :meth:`score_matrix`."""
        return self.logit_scale * np.einsum("nd,nd->n", self.query_vectors(text), np.asarray(images))

    def scores(self, texts: Sequence[str], images: np.ndarray) -> np.ndarray:
        """(N, M) for raw texts (encodes them with the backbone)."""
        texts = list(texts)
        return self.score_matrix(TextBatch(texts, self.texts.encode(texts)), images)


class Subtraction(_Peer):
    """rclip-style vector subtraction: ``q = unit(e(remainder) - w * sum_p e(phrase_p))`` (module docstring)."""

    kind = SUBTRACTION

    def _query(self, h: np.ndarray, base: np.ndarray, phrases: np.ndarray) -> np.ndarray:
        return subtraction_query(base, phrases, self.weight)


class ConceptProjection(_Peer):
    """Concept projection: ``q = unit(h - w * P h)``, P onto the negated phrases' span (module docstring)."""

    kind = PROJECTION

    def _query(self, h: np.ndarray, base: np.ndarray, phrases: np.ndarray) -> np.ndarray:
        return projection_query(h, phrases, self.weight)


PEERS: dict[str, type[_Peer]] = {SUBTRACTION: Subtraction, PROJECTION: ConceptProjection}


def peers(backbone, weights: dict[str, float] | None = None, phrase_cache: int = DEFAULT_CAPACITY) -> list[_Peer]:
    """One scorer per peer (registry order), each with its weight from ``weights`` or :data:`DEFAULT_WEIGHTS`,
    all sharing one memo of at most ``phrase_cache`` embedded texts and one of read limits (a batch job over many
    files may want more than the default, which is sized for a long-running server)."""
    weights = weights or {}
    unknown = set(weights) - set(PEERS)
    if unknown:
        raise GlassesError(f"unknown peer(s) {', '.join(sorted(unknown))}: use {', '.join(PEERS)}")
    out: list[_Peer] = []
    for kind, cls in PEERS.items():
        out.append(cls(backbone, weight=weights.get(kind), phrase_cache=phrase_cache,
                       share_with=out[0] if out else None))
    return out
