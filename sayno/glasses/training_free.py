"""Training-free CLIPGlasses: negation-aware scoring for any CLIP, with no learned weights (docs/GLASSES.md,
"Training-free Glasses").

    >>> g = TrainingFreeGlasses.from_backbone(backbone, reference_images=image_features)  # doctest: +SKIP
    >>> g.score(["a beach with no people"], image_features)                                # doctest: +SKIP

For a caption the negation analyser (the one the trained :class:`~sayno.glasses.model.Glasses` use) finds the
negated phrases, their hedges and the affirmative remainder. With ``s`` the backbone's own logit scale, image
feature ``I``, ``mu`` the mean of a bank of object prompts (:data:`BANK`) and per negated phrase ``p`` its
frozen prompt embedding ``h_p`` (prompt ensemble):

    S(t, I) = s * ( b.I + level - sum_p lambda_p * ((h_p - mu).I - tau) )

``b`` is the remainder's embedding, or ``0`` with ``level`` the calibrated level of a matching caption when the
remainder names nothing ("no dog", "a photo without a dog"; :func:`content_free`). ``(h_p - mu).I`` is the
phrase's similarity *relative to the image's mean similarity to the bank* (the per-image calibration; linear in
``I``). ``lambda`` (hedged: times ``hedge_factor``), ``tau`` and ``level`` come from :func:`calibrate`, which
needs no labels: only the backbone and an unlabelled reference set of image features. The score is one query
vector ``q`` and one constant ``c`` per caption (``S = s*(q.I + c)``), so it fits a vector index; captions without
a negated phrase keep CLIP's score bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from sayno.base.prompts import load_templates
from sayno.base.scoring import TextBatch
from sayno.config import from_mapping
from sayno.errors import InputError
from sayno.glasses import model as trained
from sayno.glasses.analysis import analyse_texts
from sayno.glasses.config import GlassesError, phrase_prompt
from sayno.glasses.phrases import DEFAULT_CAPACITY, PhraseEncoder
from sayno.glasses.reading import CaptionPlans, ReadLimits
from sayno.glasses.scoring import PHRASES_AT_FULL_STRENGTH, Slots, bound_lambda

TRAINING_FREE = "training-free"
NAME = "CLIPGlasses (training-free)"
VERSION = 1
BANK = "object_bank"  # sayno/templates/object_bank.json
MAX_REFERENCE = 20000  # reference images used for calibration (evenly spaced rows beyond that)

# Words that name nothing an image could show or lack: a remainder made only of them ("a photo", "there is",
# "an image of") is treated like an empty one.
_FRAME_TEXT = """
a an the this that these those there here is are was were be been being we i you one can could see seen
shows show showing shown depicts depicting depicted displays displaying contains containing features featuring
has have having of with in on at it its image images picture pictures photo photos photograph photographs
scene scenes view shot snapshot pic frame drawing illustration just only also
"""
FRAME_WORDS = frozenset(_FRAME_TEXT.split())
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)


class CalibrationWarning(UserWarning):
    """Calibration fell back to the documented constants (no or too few reference images)."""


@dataclass(frozen=True)
class TrainingFreeSettings:
    """The fixed settings of training-free Glasses (chosen on the world's validation split; docs/GLASSES.md).

    prompts: templates a negated phrase and each bank object are embedded with (ensembled; ``{}`` = the phrase
    with its article). strength: firm ``lambda`` in units of ``spread_affirmative / spread_relative``.
    hedge_factor: ``lambda`` multiplier for hedged negations. level_offset, tau_offset: where ``level`` and
    ``tau`` sit above the midpoint of present and absent objects, in units of the matching spread.
    bank_weight: 1 subtracts the bank mean per image, 0 does not. lambda_max: bound on ``lambda`` (cosine units).
    min_reference: fewer reference images than this fall back to the constants.
    """

    prompts: tuple[str, ...] = ("This image shows {}.", "a photo of {}", "{}", "a picture of {}")
    strength: float = 0.3
    hedge_factor: float = 0.5
    level_offset: float = 0.25
    tau_offset: float = 0.25
    bank_weight: float = 1.0
    lambda_max: float = 1.0
    min_reference: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if not self.prompts or any("{}" not in p for p in self.prompts):
            raise GlassesError(f"training-free prompts need '{{}}' for the phrase, got {self.prompts!r}")
        if not (0 <= self.hedge_factor <= 1 and self.strength >= 0 and self.lambda_max > 0):
            raise GlassesError("training-free settings: need strength >= 0, 0 <= hedge_factor <= 1, lambda_max > 0")
        if self.min_reference < 1:
            raise GlassesError(f"min_reference={self.min_reference}: need at least 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompts"] = list(self.prompts)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingFreeSettings:
        return from_mapping(cls, {**data, "prompts": tuple(data.get("prompts", cls.prompts))},
                            "training-free settings")


@dataclass(frozen=True)
class Calibration:
    """What calibration measured (cosine units; JSON-ready, stored in an index's metadata).

    lam: firm ``lambda``. tau: presence threshold of the bank-relative similarity ``(h_p - mu).I``. level: the
    base term of a caption whose remainder names nothing. base_mu: weight of ``mu`` in that base (1 only in the
    fallback: "as good as an average object"). present, absent: mean over reference images of the top and the
    median bank similarity. spread_affirmative, spread_relative: mean over bank objects of the std over
    images of ``h.I`` and ``(h - mu).I``. reference: images used; fallback: whether the constants were used.
    mu: the bank mean ``mu`` (D floats, stored so that a searcher need not embed the bank again; None: embed it).
    """

    lam: float
    tau: float
    level: float
    base_mu: float = 0.0
    present: float = float("nan")
    absent: float = float("nan")
    spread_affirmative: float = float("nan")
    spread_relative: float = float("nan")
    reference: int = 0
    fallback: bool = False
    mu: tuple[float, ...] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}
        out["mu"] = None if self.mu is None else [float(x) for x in self.mu]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        clean = {k: (float("nan") if v is None and k != "mu" else v) for k, v in dict(data).items()}
        if clean.get("mu") is not None:
            clean["mu"] = tuple(float(x) for x in clean["mu"])
        return from_mapping(cls, clean, "training-free calibration")


def fallback_calibration(settings: TrainingFreeSettings, reference: int = 0) -> Calibration:
    """The documented constants: ``lambda = strength`` (spread ratio 1), ``tau = 0`` (an object counts as
    present when the image matches it better than the average bank object) and the base of a caption that
    names nothing = ``mu.I`` (as good as an average object)."""
    return Calibration(lam=min(settings.strength, settings.lambda_max), tau=0.0, level=0.0, base_mu=1.0,
                       reference=reference, fallback=True)


def calibrate(bank: np.ndarray, images: np.ndarray, settings: TrainingFreeSettings | None = None) -> Calibration:
    """Calibrate from the bank's (K, D) prompt embeddings and (M, D) unlabelled reference image features.

    Per reference image the top bank similarity stands for a present object and the median for an absent
    one; ``tau`` and ``level`` sit between the two (plus the offsets), ``lambda`` is ``strength`` times the
    ratio of the spreads of plain and bank-relative similarities (bounded). Non-finite rows are ignored; fewer
    than ``min_reference`` images, or images the bank cannot tell apart, give :func:`fallback_calibration`
    with a :class:`CalibrationWarning`.
    """
    settings = settings or TrainingFreeSettings()
    bank = np.asarray(bank, dtype=np.float64)
    imgs = np.asarray(_sample_rows(images), dtype=np.float64).reshape(-1, bank.shape[1]) if np.size(images) \
        else np.zeros((0, bank.shape[1]))
    imgs = imgs[np.isfinite(imgs).all(1)]
    if len(imgs) < settings.min_reference:
        warnings.warn(f"training-free Glasses: {len(imgs)} reference images (< {settings.min_reference}): "
                      "using the fallback constants (docs/GLASSES.md)", CalibrationWarning, stacklevel=2)
        return fallback_calibration(settings, len(imgs))
    mu = settings.bank_weight * bank.mean(0)
    sims = bank @ imgs.T  # (K, M)
    rel = sims - (imgs @ mu)[None]
    sd_aff, sd_rel = float(sims.std(1).mean()), float(rel.std(1).mean())
    if not (sd_rel > 1e-6 and sd_aff > 1e-6):
        warnings.warn("training-free Glasses: the reference images all look alike to the bank: using the "
                      "fallback constants", CalibrationWarning, stacklevel=2)
        return fallback_calibration(settings, len(imgs))
    present, absent = float(sims.max(0).mean()), float(np.median(sims, 0).mean())
    present_rel, absent_rel = float(rel.max(0).mean()), float(np.median(rel, 0).mean())
    ratio = float(np.clip(sd_aff / sd_rel, 0.25, 4.0))
    return Calibration(lam=min(settings.strength * ratio, settings.lambda_max),
                       tau=(present_rel + absent_rel) / 2 + settings.tau_offset * sd_rel,
                       level=(present + absent) / 2 + settings.level_offset * sd_aff, base_mu=0.0,
                       present=present, absent=absent, spread_affirmative=sd_aff, spread_relative=sd_rel,
                       reference=len(imgs), fallback=False, mu=tuple(float(x) for x in mu))


def _sample_rows(images) -> np.ndarray:
    """At most :data:`MAX_REFERENCE` evenly spaced rows of (M, D) features, picked before any copy (an index's
    memory-mapped vectors stay on disk)."""
    if getattr(images, "ndim", 0) == 2 and len(images) > MAX_REFERENCE:
        return images[np.linspace(0, len(images) - 1, MAX_REFERENCE).round().astype(int)]
    return images


def content_free(text: str) -> bool:
    """Whether ``text`` names nothing (empty, or only :data:`FRAME_WORDS`: "a photo", "there is")."""
    return all(w in FRAME_WORDS for w in _WORD.findall((text or "").lower().replace("\u2019", "'")))


def bank_objects() -> list[str]:
    """The object names of the calibration bank (``sayno/templates/object_bank.json``)."""
    return list(load_templates(BANK, required=("name", "version", "objects"))["objects"])


def identity(settings: TrainingFreeSettings | None = None) -> dict[str, Any]:
    """What an index records for training-free Glasses: kind, version, settings and a ``sha1`` of them (the
    calibration, measured per build, is not part of the identity)."""
    settings = settings or TrainingFreeSettings()
    core = {"kind": TRAINING_FREE, "version": VERSION, "bank": BANK, "settings": settings.to_dict()}
    sha = hashlib.sha1(json.dumps(core, sort_keys=True).encode()).hexdigest()
    return {"path": TRAINING_FREE, "name": NAME, "sha1": sha, **core}


def is_training_free(glasses: Any) -> bool:
    """Whether a ``--glasses`` value or an index's Glasses identity means training-free Glasses."""
    if isinstance(glasses, dict):
        return glasses.get("kind") == TRAINING_FREE
    return glasses is not None and str(glasses).strip().lower() == TRAINING_FREE


@dataclass
class TrainingFreeSlots(Slots):
    """:class:`~sayno.glasses.scoring.Slots` plus ``offset`` (N,): the constant part of each caption's base
    (``level`` for captions whose remainder names nothing). ``h_neg`` holds the bank-relative ``h_p - mu``."""

    offset: np.ndarray = field(default=None, repr=False)


class TrainingFreeGlasses:
    """CLIPGlasses with no learned weights; a :class:`sayno.base.scoring.Scorer` with the trained Glasses' API.

    backbone: the frozen CLIP (its text tower embeds phrases, remainders and the bank; ``phrase_encoder`` and
    ``logit_scale`` replace it, e.g. in tests). calibration: from :func:`calibrate` (an index stores one);
    else ``reference_images`` (M, D) are calibrated on; else the fallback constants (with a warning).
    """

    needs_layers = False
    clamp = False

    def __init__(self, backbone=None, *, settings: TrainingFreeSettings | None = None,
                 calibration: Calibration | None = None, reference_images: np.ndarray | None = None,
                 phrase_encoder: Callable[[list[str]], np.ndarray] | None = None, logit_scale: float | None = None,
                 embed_dim: int | None = None, name: str = NAME, phrase_cache: int = DEFAULT_CAPACITY):
        self.backbone = backbone
        self.settings = settings or TrainingFreeSettings()
        self.name = name
        if phrase_encoder is None and backbone is not None:
            phrase_encoder = trained._text_encoder(backbone)
        if phrase_encoder is None:
            raise GlassesError("training-free Glasses need a backbone or a phrase_encoder")
        dim = embed_dim if embed_dim is not None else getattr(backbone, "embed_dim", None)
        if dim is None:
            raise GlassesError("training-free Glasses need a backbone or an explicit embed_dim")
        self.embed_dim = int(dim)
        self.phrases = PhraseEncoder(phrase_encoder, self.embed_dim, phrase_cache)
        self.ensembles = PhraseEncoder(self._ensemble, self.embed_dim, phrase_cache)  # per phrase, memoised
        self.reading = ReadLimits(backbone)
        self.plans = CaptionPlans(self.reading)
        scale = logit_scale if logit_scale is not None else getattr(backbone, "logit_scale", None)
        if scale is None or not np.isfinite(float(scale)) or float(scale) <= 0:
            raise GlassesError(f"training-free Glasses need a positive finite logit scale, got {scale!r}")
        self.logit_scale_value = float(scale)
        self._bank: np.ndarray | None = None
        if calibration is None:
            calibration = (self.calibrate(reference_images) if reference_images is not None
                           else self._fallback_with_warning())
        self.calibration = calibration

    @classmethod
    def from_backbone(cls, backbone, reference_images: np.ndarray | None = None,
                      settings: TrainingFreeSettings | None = None) -> TrainingFreeGlasses:
        """Training-free Glasses for ``backbone``, calibrated on ``reference_images`` (M, D) when given."""
        if backbone is None or not hasattr(backbone, "encode_text"):
            raise InputError(f"training-free Glasses need a Backbone (sayno.load(spec)), got "
                             f"{type(backbone).__name__}")
        return cls(backbone, settings=settings, reference_images=reference_images)

    def _fallback_with_warning(self) -> Calibration:
        warnings.warn("training-free Glasses without reference images: using the fallback constants "
                      "(docs/GLASSES.md)", CalibrationWarning, stacklevel=3)
        return fallback_calibration(self.settings)

    # ------------------------------------------------------------------------------------------- basics
    @property
    def logit_scale(self) -> float:
        return self.logit_scale_value

    def identity(self) -> dict[str, Any]:
        """The index identity with this calibration (:func:`identity` plus ``calibration``)."""
        return {**identity(self.settings), "calibration": self.calibration.to_dict()}

    def calibrate(self, images: np.ndarray | None) -> Calibration:
        """Re-calibrate on unlabelled (M, D) image features (no labels); sets and returns the calibration."""
        feats = np.zeros((0, self.embed_dim)) if images is None else np.asarray(_sample_rows(images), np.float32)
        if feats.size and (feats.ndim != 2 or feats.shape[1] != self.embed_dim):
            raise InputError(f"reference images: expected (M, {self.embed_dim}) features, got {feats.shape}")
        self.calibration = calibrate(self.bank(), feats, self.settings)
        return self.calibration

    def scorer(self, rerank_k: int | None = None, name: str | None = None) -> TrainingFreeGlasses:
        """Itself (it is a :class:`~sayno.base.scoring.Scorer`); ``rerank_k`` has nothing to refine here."""
        if name and name != self.name:
            other = TrainingFreeGlasses(self.backbone, settings=self.settings, calibration=self.calibration,
                                        phrase_encoder=self.phrases._encode, logit_scale=self.logit_scale,
                                        embed_dim=self.embed_dim, name=name)
            other._bank = self._bank
            return other
        return self

    def text_batch(self, texts: Sequence[str]) -> TextBatch:
        """N captions -> :class:`TextBatch` with (N, D) features (no layers: none are needed)."""
        if self.backbone is None:
            raise GlassesError("text_batch needs the backbone (TrainingFreeGlasses.from_backbone(backbone))")
        texts = [t if isinstance(t, str) else "" for t in texts]
        return TextBatch(texts, self.backbone.encode_text(texts).float().cpu().numpy())

    def score(self, texts: Sequence[str], image_features: np.ndarray, rerank_k: int | None = None) -> np.ndarray:
        """(N, M) scores of N captions against (M, D) normalised image features."""
        return self.score_matrix(self.text_batch(texts), np.asarray(image_features, dtype=np.float32))

    # -------------------------------------------------------------------------------------------- texts
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, D) frozen-CLIP embeddings of extra texts (remainders, prompts), memoised."""
        return self.phrases.encode(texts)

    def encode_phrases(self, phrases: Sequence[str]) -> np.ndarray:
        """(n, D) prompt-ensembled embeddings of phrases (mean of the normalised prompts, normalised), memoised
        per phrase (:attr:`ensembles`: building the prompts cost more than the rest of a batch's slots)."""
        return self.ensembles.encode(phrases)

    def ensemble_prompts(self, phrases: Sequence[str]) -> list[str]:
        """The prompt texts :meth:`encode_phrases` embeds for the phrases not yet in :attr:`ensembles`."""
        return [phrase_prompt(t, p) for p in self.ensembles.missing(phrases) for t in self.settings.prompts]

    def extra_texts(self, texts: Sequence[str]) -> list[str]:
        """The extra texts scoring ``texts`` embeds through :attr:`phrases` (affirmative remainders that name
        something, and the prompts of negated phrases not yet ensembled), as :meth:`Glasses.extra_texts`."""
        out: list[str] = []
        for plan in self.plans(texts):
            if plan.negated and plan.phrases:
                if not content_free(plan.affirmative):
                    out.append(plan.affirmative)
                out += self.ensemble_prompts([p for p, _ in plan.phrases])
        return out

    def encode_vocabulary(self, words: Sequence[str], batch: int = 256) -> np.ndarray:
        """(n, D) prompt-ensembled embeddings of a long word list, each as :meth:`encode_phrases` embeds a phrase,
        without the memo (in batches of ``batch`` words)."""
        words = list(words)
        if not words:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.concatenate([self._ensemble(words[i:i + batch]) for i in range(0, len(words), batch)])

    def _ensemble(self, phrases: list[str]) -> np.ndarray:
        """(n, D) :meth:`encode_phrases` without the memo."""
        k = len(self.settings.prompts)
        emb = self.encode_texts([phrase_prompt(t, p) for p in phrases for t in self.settings.prompts])
        emb = emb.reshape(len(phrases), k, -1).astype(np.float64)
        emb /= np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        mean = emb.mean(1)
        return (mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)).astype(np.float32)

    def bank(self) -> np.ndarray:
        """(K, D) prompt-ensembled embeddings of the bank's objects (computed once)."""
        if self._bank is None:
            self._bank = self.encode_phrases(bank_objects())
        return self._bank

    def bank_mean(self) -> np.ndarray:
        """(D,) ``mu``: ``bank_weight`` times the mean bank embedding (the calibration's stored copy if any)."""
        mu = self.calibration.mu if getattr(self, "calibration", None) is not None else None
        if mu is not None and len(mu) == self.embed_dim:
            return np.asarray(mu, dtype=np.float32)
        return (self.settings.bank_weight * self.bank().astype(np.float64).mean(0)).astype(np.float32)

    # -------------------------------------------------------------------------------------------- slots
    def slots(self, text: TextBatch) -> TrainingFreeSlots:
        """The negated phrases of a batch with their ``lambda`` and ``tau`` (caption-only)."""
        texts = list(text.texts)
        h = np.asarray(text.h, dtype=np.float32)
        cal = self.calibration
        owner, phrases, hedged, rows, remainders = [], [], [], [], []
        plans = self.plans(texts)  # what each caption says, read once while it stays in the memo
        negated = np.array([p.negated for p in plans], dtype=bool)
        for i in np.flatnonzero(negated).tolist():
            plan = plans[i]
            if plan.phrases:
                rows.append(i)
                remainders.append(plan.affirmative)
                for phrase, hd in plan.phrases:
                    owner.append(i)
                    phrases.append(phrase)
                    hedged.append(hd)
        base = h.copy()
        offset = np.zeros(len(texts), dtype=np.float64)
        if rows:
            free = [content_free(r) for r in remainders]
            named = [r for r, f in zip(remainders, free) if not f]
            emb = iter(self.encode_texts(named)) if named else iter(())
            mu = self.bank_mean()
            for i, f in zip(rows, free):
                base[i] = cal.base_mu * mu if f else next(emb)
                offset[i] = cal.level if f else 0.0
        h_neg = self.encode_phrases(phrases) - (self.bank_mean() if phrases else 0.0)
        hedged_t = torch.tensor(hedged, dtype=torch.float32)
        owner_t = torch.tensor(owner, dtype=torch.long)
        lam = torch.tensor([cal.lam * (self.settings.hedge_factor if x else 1.0) for x in hedged], dtype=torch.float32)
        lam = bound_lambda(lam, owner_t, PHRASES_AT_FULL_STRENGTH * self.settings.lambda_max)
        tau = torch.full((len(phrases),), float(cal.tau), dtype=torch.float32)
        return TrainingFreeSlots(torch.as_tensor(base), owner_t, phrases, hedged_t,
                                 torch.as_tensor(np.asarray(h_neg, np.float32).reshape(len(phrases), self.embed_dim)), lam, tau,
                                 negated, offset=offset)

    def read_chars(self, texts: Sequence[str]) -> list[int | None]:
        """Per text, how many leading characters the text encoder reads (None for every text without a
        backbone); negated phrases after that are not slots (as in the trained Glasses). Memoised per text."""
        return self.reading(texts)

    # ------------------------------------------------------------------------------------------ scoring
    def query_vectors(self, text: TextBatch, s: TrainingFreeSlots) -> tuple[np.ndarray, np.ndarray]:
        """The linear form ``S = s*(q.I + c)``: q (N, D) = ``b - sum_p lambda_p (h_p - mu)`` (``h`` for
        captions without negated phrases), c (N,) = ``level + sum_p lambda_p tau`` (0 for those)."""
        q = np.array(text.h, dtype=np.float32, copy=True)
        const = np.zeros(len(q), dtype=np.float64)
        rows = np.unique(s.owner.numpy())
        if len(rows):
            lam = s.lam.numpy().astype(np.float64)
            delta = np.zeros((len(q), q.shape[1]), np.float64)
            np.add.at(delta, s.owner.numpy(), lam[:, None] * s.h_neg.numpy())
            q[rows] = (s.base.numpy()[rows].astype(np.float64) - delta[rows]).astype(np.float32)
            np.add.at(const, s.owner.numpy(), lam * s.tau.numpy())
            const[rows] += s.offset[rows]
        return q, const.astype(np.float32)

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N, M) scores; rows of captions without a negated phrase are ``PlainClip``'s, bit for bit."""
        images = np.asarray(images)
        s = self.slots(text)
        rows = np.unique(s.owner.numpy())
        if not len(rows):
            return self.logit_scale * (text.h @ images.T)
        q, const = self.query_vectors(text, s)  # q = h on rows without slots: one product for every row
        out = q @ images.T
        for r in rows:  # row views: no gather/scatter of the (N, M) matrix
            out[r] += const[r]
        out *= self.logit_scale
        return out

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N,) caption i with image i (images: (N, D)); the same caption-only score as :meth:`score_matrix`."""
        images = np.asarray(images)
        out = self.logit_scale * np.einsum("nd,nd->n", text.h, images)
        s = self.slots(text)
        rows = np.unique(s.owner.numpy())
        if len(rows):
            q, const = self.query_vectors(text, s)
            out[rows] = (self.logit_scale * (np.einsum("nd,nd->n", q[rows], images[rows]) + const[rows])
                         ).astype(out.dtype)
        return out

    def rerank(self, text: TextBatch, images: np.ndarray, k: int = 20) -> np.ndarray:
        """No image-conditioned refinement exists without training: the caption-only scores."""
        return self.score_matrix(text, images)

    def explain(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per caption: negated?, phrases, hedges, remainder (``""`` when it names nothing), ``lambda``, ``tau``."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        s = self.slots(TextBatch(texts, np.zeros((len(texts), self.embed_dim), np.float32)))
        out = []
        for i, t in enumerate(texts):
            sel = (s.owner == i).nonzero().squeeze(-1).tolist()
            analysis = analyse_texts([t])[0]
            remainder = analysis.affirmative_text if sel else t
            out.append({"text": t, "negated": bool(s.negated[i]),
                        "affirmative": "" if sel and content_free(remainder) else remainder,
                        "phrases": [p.text for p in analysis.phrases], "hedged": [p.hedged for p in analysis.phrases],
                        "slots": len(sel), "lambda": [round(float(s.lam[j]), 4) for j in sel],
                        "tau": [round(float(s.tau[j]), 4) for j in sel]})
        return out


def training_free(backbone, reference: np.ndarray | None = None,
                  settings: TrainingFreeSettings | None = None) -> TrainingFreeGlasses:
    """Shorthand for :meth:`TrainingFreeGlasses.from_backbone`."""
    return TrainingFreeGlasses.from_backbone(backbone, reference, settings)
