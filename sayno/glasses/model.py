"""CLIPGlasses on any backbone: the :class:`Glasses` scorer, its configuration and its checkpoint.

    >>> g = load_glasses("sayno/weights/glasses-embedded.safetensors", backbone)  # doctest: +SKIP
    >>> g.score_matrix(TextBatch(texts, h, layers), image_features)               # doctest: +SKIP

A caption is *negated* when the detector says so (``detector`` mode, default ``"lexical"``: an English cue
with at least one negated phrase). Each negated phrase becomes a *slot* with its own ``h_neg`` (Lens) and
``lambda`` (Frame). Every other caption keeps exactly CLIP's score ``s*cos(h, I)`` (bit for bit).

Scoring paths (docs/GLASSES.md):
- :meth:`Glasses.score_matrix`: retrieval-grade; ``lambda`` from the caption alone, so one caption over M
  images is one query vector ``q = h - sum_p lambda_p*h_neg_p`` (plus a constant): a single matrix product.
- :meth:`Glasses.score_pairs`: caption i with image i; ``lambda`` conditioned on that image.
- :meth:`Glasses.rerank`: caption-only scores for all images, image-conditioned ones for each caption's top k.

The checkpoint is a safetensors file; its metadata records the backbone's fingerprint, and
:func:`load_glasses` refuses any other backbone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sayno.errors import SaynoError
from sayno.eval.scoring import TextBatch
from sayno.glasses.lexical import analyse, article_prompt
from sayno.glasses.modules import Detector, Frame, Lens, glasses_logits, glasses_pair_logits

FORMAT = "sayno-glasses"
FORMAT_VERSION = "1"
DETECTOR_MODES = ("lexical", "learned", "and", "or")
LENS_INPUTS = ("phrase", "caption")
SCORES = ("tau", "reference")
BASES = ("affirmative", "caption")


class GlassesError(SaynoError, ValueError):
    """A Glasses checkpoint that cannot be used (wrong backbone, wrong format, bad option)."""


@dataclass
class GlassesConfig:
    """What a Glasses model is; stored in its checkpoint.

    lens_input: "phrase" (sayno: one ``h_neg`` per negated phrase, the Lens reads the phrase's frozen-CLIP
    prompt embedding and the caption's layers) or "caption" (reference: one ``h_neg`` per caption from its
    own ``h`` and layers). score: "tau" (sayno: ``S = s*cos(b,I) - lambda*s*(cos(h_neg,I) - tau)``, tau
    learned) or "reference" (``S = s*cos(b,I) - max(0, lambda*s*cos(h_neg,I))``). base: what ``b`` is,
    "affirmative" (sayno: the frozen-CLIP embedding of the caption with its negated clauses removed, "a cat
    but no dog" -> "a cat") or "caption" (reference: the caption's own ``h``). detector: which captions count
    as negated, "lexical" (cue words), "learned" (the head), "and", "or".
    """

    embed_dim: int
    num_layers: int
    syntax_layers: tuple[int, ...] = ()
    hidden: int = 256
    detector_hidden: int = 128
    lens_input: str = "phrase"
    score: str = "tau"
    base: str = "affirmative"
    detector: str = "lexical"
    lambda_max: float = 2.0
    prompt: str = "This image shows {}."

    def __post_init__(self) -> None:
        if not self.syntax_layers:
            self.syntax_layers = tuple(range(max(1, min(3, self.num_layers - 1))))
        self.syntax_layers = tuple(int(i) for i in self.syntax_layers)
        for name, allowed in (("lens_input", LENS_INPUTS), ("score", SCORES), ("detector", DETECTOR_MODES),
                              ("base", BASES)):
            if getattr(self, name) not in allowed:
                raise GlassesError(f"{name}={getattr(self, name)!r}; choose one of {allowed}")
        if any(not 0 <= i < self.num_layers for i in self.syntax_layers):
            raise GlassesError(f"syntax_layers {self.syntax_layers} outside 0..{self.num_layers - 1}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GlassesConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise GlassesError(f"unknown Glasses config keys {sorted(unknown)}")
        return cls(**data)


@dataclass
class Slots:
    """The negated phrases of a batch of captions, with what the Glasses made of them.

    owner: (P,) caption index per slot; phrases: P phrase strings ("" for caption-input slots); hedged: (P,);
    h_neg: (P, D); lam, tau: (P,) caption-only lambda and presence threshold; negated: (N,) which captions
    the detector flagged; base: (N, D) what each caption's score starts from (``h`` for captions without slots).
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


@contextmanager
def single_thread():
    """Run the (tiny) modules on one torch thread: on a shared CPU more threads only add waiting."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class Glasses(nn.Module):
    """CLIPGlasses around a frozen backbone; a :class:`sayno.eval.scoring.Scorer`.

    backbone: what produced the features (its text tower also embeds the negated phrases' prompts, cached in
    memory). ``phrase_encoder`` replaces that (texts -> (n, D) normalised numpy), e.g. for tests.
    """

    needs_layers = True

    def __init__(self, config: GlassesConfig, backbone=None, *, name: str = "CLIPGlasses",
                 phrase_encoder: Callable[[list[str]], np.ndarray] | None = None, logit_scale: float | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.name = name
        c = config
        self.detector = Detector(c.embed_dim, c.num_layers, c.detector_hidden)
        self.lens = Lens(c.embed_dim, c.syntax_layers, c.hidden)
        self.frame = Frame(c.embed_dim, c.hidden, c.lambda_max, learn_tau=c.score == "tau")
        self._phrase_encoder = phrase_encoder
        self._phrase_cache: dict[str, np.ndarray] = {}
        if logit_scale is None:
            if backbone is None:
                raise GlassesError("Glasses need a backbone or an explicit logit_scale")
            logit_scale = backbone.logit_scale
        self.logit_scale_value = float(logit_scale)
        self.training_summary: dict = {}
        self.eval()

    # ------------------------------------------------------------------------------------------- basics
    @property
    def logit_scale(self) -> float:
        return self.logit_scale_value

    @property
    def clamp(self) -> bool:
        return self.config.score == "reference"

    def scorer(self, rerank_k: int | None = None, name: str | None = None) -> GlassesScorer:
        """A benchmark scorer; with ``rerank_k`` its score_matrix re-ranks each caption's top k with the image."""
        return GlassesScorer(self, rerank_k=rerank_k, name=name or self.name)

    def text_batch(self, texts: Sequence[str]) -> TextBatch:
        """N captions -> a :class:`TextBatch` with the backbone's (N, D) and per-layer (N, L, D) features."""
        if self.backbone is None:
            raise GlassesError("text_batch needs the Glasses' backbone (load_glasses(path, backbone))")
        texts = [t if isinstance(t, str) else "" for t in texts]
        h = self.backbone.encode_text(texts).float().cpu().numpy()
        layers = self.backbone.encode_text_layers(texts).float().cpu().numpy()
        return TextBatch(texts, h, layers)

    def score(self, texts: Sequence[str], image_features: np.ndarray, rerank_k: int | None = None) -> np.ndarray:
        """(N, M) Glasses scores (logit scale) of N captions against (M, D) normalised image features.

        ``lambda`` comes from the caption alone; ``rerank_k`` re-orders each negated caption's top k with the
        image-conditioned ``lambda`` (then only the order within a row is meaningful).
        """
        batch = self.text_batch(texts)
        feats = np.asarray(image_features, dtype=np.float32)
        return self.rerank(batch, feats, rerank_k) if rerank_k else self.score_matrix(batch, feats)

    # -------------------------------------------------------------------------------------- extra texts
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, D) frozen-CLIP embeddings of extra texts (phrase prompts, affirmative remainders), memoised."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._phrase_cache]
        if missing:
            if self._phrase_encoder is not None:
                feats = np.asarray(self._phrase_encoder(missing), dtype=np.float32)
            elif self.backbone is not None:
                feats = self.backbone.encode_text(missing).float().cpu().numpy()
            else:
                raise GlassesError("Glasses without a backbone or phrase_encoder cannot embed negated phrases")
            for t, f in zip(missing, feats):
                self._phrase_cache[t] = f
        if not texts:
            return np.zeros((0, self.config.embed_dim), np.float32)
        return np.stack([self._phrase_cache[t] for t in texts])

    def encode_phrases(self, phrases: Sequence[str]) -> np.ndarray:
        """(n, D) frozen-CLIP embeddings of the negated phrases' prompts ("This image shows a dog.")."""
        return self.encode_texts([article_prompt(self.config.prompt, p) for p in phrases])

    def negated_mask(self, texts: Sequence[str], layers: torch.Tensor | None) -> np.ndarray:
        """(N,) which captions the configured detector mode treats as negated."""
        mode = self.config.detector
        lex = np.array([analyse(t).negated for t in texts], dtype=bool)
        if mode == "lexical":
            return lex
        if layers is None:
            raise GlassesError(f"detector={mode!r} needs the captions' layer features")
        with torch.no_grad():
            learned = (self.detector(layers) > 0).cpu().numpy() if len(texts) else np.zeros(0, bool)
        return {"learned": learned, "and": lex & learned, "or": lex | learned}[mode]

    def slots(self, text: TextBatch) -> Slots:
        """Detector + Lens + caption-only Frame for a batch of captions."""
        with single_thread():
            return self._slots(text)

    def _slots(self, text: TextBatch) -> Slots:
        h = torch.as_tensor(np.asarray(text.h, dtype=np.float32))
        layers = None if text.layers is None else torch.as_tensor(np.asarray(text.layers, dtype=np.float32))
        negated = self.negated_mask(text.texts, layers)
        owner, phrases, hedged = [], [], []
        for i in np.flatnonzero(negated):
            a = analyse(text.texts[i])
            if self.config.lens_input == "phrase":
                for p in a.phrases:
                    owner.append(int(i))
                    phrases.append(p.text)
                    hedged.append(p.hedged)
            elif a.phrases or self.config.detector in ("learned", "or"):
                # one slot per caption; a lexical cue with nothing negated keeps the plain score
                owner.append(int(i))
                phrases.append("")
                hedged.append(a.hedged)
        owner_t = torch.tensor(owner, dtype=torch.long)
        hedged_t = torch.tensor(hedged, dtype=torch.float32)
        if not owner:
            empty = h.new_zeros((0, h.shape[1]))
            return Slots(h, owner_t, phrases, hedged_t, empty, h.new_zeros(0), h.new_zeros(0), negated,
                         h.new_zeros(0), h.new_zeros(0))
        if layers is None:
            raise GlassesError("Glasses needs TextBatch.layers for negated captions (encode with layers=True)")
        source = (torch.as_tensor(self.encode_phrases(phrases)) if self.config.lens_input == "phrase"
                  else h[owner_t])
        base = h
        if self.config.base == "affirmative":
            rows = sorted(set(owner))
            base = h.clone()
            base[rows] = torch.as_tensor(self.encode_texts([analyse(text.texts[r]).affirmative_text for r in rows]))
        with torch.no_grad():
            h_neg = self.lens(layers[owner_t], source)
            logit, tau = self.frame.text_params(base[owner_t], h_neg, h[owner_t], hedged_t)
            lam = self.frame.lam(logit)
            beta = self.frame.beta(base[owner_t], h_neg, h[owner_t], hedged_t)
        return Slots(base, owner_t, phrases, hedged_t, h_neg, lam, tau, negated, logit, beta)

    # ------------------------------------------------------------------------------------------ scoring
    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N, M) scores, ``lambda`` from the caption alone. Rows of non-negated captions equal plain CLIP's."""
        s = self.slots(text)
        return self._matrix_from_slots(text, images, s)

    def query_vectors(self, text: TextBatch, s: Slots) -> tuple[np.ndarray, np.ndarray]:
        """The linear form of the caption-only score (``score="tau"``): ``S = s*(q.I + c)``.

        Returns q (N, D) = ``b - sum_p lambda_p h_neg_p`` (``h`` for captions without slots) and c (N,) =
        ``sum_p lambda_p tau_p``: one query vector per caption, so the score fits a vector index.
        """
        if self.clamp:
            raise GlassesError('score="reference" is not linear in the image: it has no query vectors')
        q = np.array(text.h, copy=True)
        const = np.zeros(len(q), dtype=np.float32)
        rows = np.unique(s.owner.numpy())
        if len(rows):
            # Torch ops on one thread: a multi-threaded op leaves OpenMP workers spinning while numpy's BLAS
            # multiplies right after, and on a busy CPU that made score_matrix 3-6x slower.
            with single_thread():
                delta = torch.zeros((len(q), q.shape[1])).index_add_(0, s.owner, s.lam.unsqueeze(-1) * s.h_neg)
                q[rows] = (s.base[rows] - delta[rows]).numpy().astype(q.dtype)
                const = torch.zeros(len(q)).index_add_(0, s.owner, s.lam * s.tau).numpy()
        return q, const

    def _matrix_from_slots(self, text: TextBatch, images: np.ndarray, s: Slots) -> np.ndarray:
        scale = self.logit_scale
        rows = np.unique(s.owner.numpy())
        if not self.clamp:
            q, const = self.query_vectors(text, s)
            out = q @ images.T
            out *= scale
            add = (scale * const).astype(out.dtype)
            for r in rows:  # row views: no gather/scatter of the (N, M) matrix
                out[r] += add[r]
            return out
        out = text.h @ images.T
        out *= scale
        if len(rows):
            with single_thread():
                base_rows = s.base[rows].numpy()
            pen = np.maximum(s.lam.numpy()[:, None] * (s.h_neg.numpy() @ images.T - s.tau.numpy()[:, None]), 0)
            total = np.zeros((len(out), out.shape[1]), dtype=np.float32)
            np.add.at(total, s.owner.numpy(), pen)
            out[rows] = scale * (base_rows @ images.T - total[rows])
        return out

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N,) caption i with image i, ``lambda`` conditioned on image i."""
        s = self.slots(text)
        h = np.asarray(text.h)
        out = self.logit_scale * np.einsum("nd,nd->n", h, images)
        if not len(s.owner):
            return out
        img = torch.as_tensor(np.asarray(images, dtype=np.float32))
        with torch.no_grad(), single_thread():
            logit, tau = self.frame.image_params_pairs(s.base[s.owner], s.h_neg, img[s.owner], s.text_logit, s.tau)
            mod = glasses_pair_logits(s.base, img, s.h_neg, self.frame.lam(logit), s.owner, tau, self.logit_scale,
                                      self.clamp, s.beta).numpy()
        rows = np.unique(s.owner.numpy())
        out[rows] = mod[rows].astype(out.dtype)
        return out

    def rerank(self, text: TextBatch, images: np.ndarray, k: int = 20) -> np.ndarray:
        """(N, M) scores: caption-only for every image, image-conditioned for each negated caption's top k.

        Within a row, the top k (by caption-only score) are re-ordered by their image-conditioned scores and
        stay above every other image: values outside the shortlist are shifted down so that the row's order
        is "shortlist by refined score, then the rest by caption-only score". Only the order is meaningful.
        """
        s = self.slots(text)
        out = self._matrix_from_slots(text, images, s)
        rows = np.unique(s.owner.numpy())
        if not len(rows) or k <= 0:
            return out
        k = min(k, images.shape[0])
        img = torch.as_tensor(np.asarray(images, dtype=np.float32))
        ht = s.base
        for r in rows:
            top = np.argpartition(-out[r], k - 1)[:k]
            sel = (s.owner == int(r)).nonzero().squeeze(-1)
            with torch.no_grad(), single_thread():
                logit, tau = self.frame.image_params(ht[[int(r)] * len(sel)], s.h_neg[sel], img[top],
                                                     s.text_logit[sel], s.tau[sel])  # (p, k) each
                refined = glasses_logits(ht[[int(r)]], img[top], s.h_neg[sel], self.frame.lam(logit),
                                         torch.zeros(len(sel), dtype=torch.long), tau, self.logit_scale,
                                         self.clamp, s.beta[sel])[0].numpy()
            rest = np.ones(out.shape[1], bool)
            rest[top] = False
            if rest.any():
                shift = out[r, rest].max() - refined.min() + 1.0
                out[r, rest] -= max(shift, 0.0)
            out[r, top] = refined
        return out

    def explain(self, texts: Sequence[str], layers: np.ndarray | None = None,
                h: np.ndarray | None = None) -> list[dict]:
        """Per caption: negated?, the lexical phrases and hedges, the affirmative remainder, and per slot the
        caption-only ``lambda`` and ``tau`` (one slot per phrase, or one per caption with
        ``lens_input="caption"``). Encodes with the backbone when no features are given."""
        texts = list(texts)
        if h is None or layers is None:
            if self.backbone is None:
                raise GlassesError("explain() without features needs a backbone")
            layers = self.backbone.encode_text_layers(texts).cpu().numpy()
            h = layers[:, -1]
        s = self.slots(TextBatch(texts, np.asarray(h), np.asarray(layers)))
        out = []
        for i, t in enumerate(texts):
            sel = (s.owner == i).nonzero().squeeze(-1).tolist()
            a = analyse(t)
            out.append({"text": t, "negated": bool(s.negated[i]),
                        "affirmative": a.affirmative_text if sel else t,
                        "phrases": [p.text for p in a.phrases], "hedged": [p.hedged for p in a.phrases],
                        "slots": len(sel), "lambda": [round(float(s.lam[j]), 4) for j in sel],
                        "tau": [round(float(s.tau[j]), 4) for j in sel]})
        return out

    # --------------------------------------------------------------------------------------- checkpoint
    def save(self, path: str | Path, training: dict | None = None) -> Path:
        """Write a safetensors checkpoint (fp32) with config, backbone fingerprint and training summary."""
        if self.backbone is None:
            raise GlassesError("save() needs the backbone the Glasses were trained on (for its fingerprint)")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().contiguous().clone() for k, v in self.state_dict().items()}
        meta = {"sayno.format": FORMAT, "sayno.version": FORMAT_VERSION,
                "sayno.backbone_fingerprint": self.backbone.fingerprint,
                "sayno.backbone_spec": str(getattr(self.backbone, "spec", "")),
                "sayno.logit_scale": repr(self.logit_scale),
                "sayno.config": self.config.to_json(), "sayno.training": json.dumps(training or {})}
        tmp = path.with_name(path.name + ".tmp")
        save_file(state, str(tmp), metadata=meta)
        tmp.replace(path)
        return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a Glasses checkpoint (no tensors loaded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise GlassesError(f"{path}: not a safetensors file ({e})") from e
    if meta.get("sayno.format") != FORMAT:
        raise GlassesError(f"{path}: not a Glasses checkpoint (format {meta.get('sayno.format')!r})")
    if meta.get("sayno.version") != FORMAT_VERSION:
        raise GlassesError(f"{path}: Glasses format version {meta.get('sayno.version')!r}, expected {FORMAT_VERSION}")
    return meta


def load_glasses(path: str | Path, backbone, *, detector: str | None = None, name: str = "CLIPGlasses",
                 phrase_encoder: Callable[[list[str]], np.ndarray] | None = None) -> Glasses:
    """Load a checkpoint for ``backbone``; raises :class:`GlassesError` if it was trained on another backbone.

    ``detector`` overrides the stored detector mode ("lexical", "learned", "and", "or").
    """
    meta = read_metadata(path)
    fp = meta.get("sayno.backbone_fingerprint")
    if fp != backbone.fingerprint:
        raise GlassesError(
            f"{path} was trained on backbone {meta.get('sayno.backbone_spec')!r} (fingerprint {fp}), not on "
            f"{getattr(backbone, 'spec', '?')!r} (fingerprint {backbone.fingerprint}); Glasses only run on the "
            "exact frozen CLIP they were trained on")
    config = GlassesConfig.from_json(meta["sayno.config"])
    if detector is not None:
        config.detector = detector
        config.__post_init__()
    if config.embed_dim != backbone.embed_dim or config.num_layers != backbone.num_text_layers:
        raise GlassesError(f"{path}: dims ({config.embed_dim}, {config.num_layers}) do not match the backbone")
    g = Glasses(config, backbone, name=name, phrase_encoder=phrase_encoder)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    if "frame.bank" in state:
        g.frame.set_bank(state["frame.bank"])
    g.load_state_dict(state, strict=True)
    g.training_summary = json.loads(meta.get("sayno.training", "{}"))
    return g.eval()


class GlassesScorer:
    """:class:`Glasses` as a benchmark scorer, optionally re-ranking each caption's top ``rerank_k`` images."""

    needs_layers = True

    def __init__(self, glasses: Glasses, rerank_k: int | None = None, name: str = "CLIPGlasses"):
        self.glasses, self.rerank_k, self.name = glasses, rerank_k, name

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        if self.rerank_k:
            return self.glasses.rerank(text, images, self.rerank_k)
        return self.glasses.score_matrix(text, images)

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        return self.glasses.score_pairs(text, images)

