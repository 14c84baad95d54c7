"""CLIPGlasses on any backbone: the :class:`Glasses` module and :func:`load_glasses`.

    >>> g = load_glasses("sayno/weights/glasses-embedded.safetensors", backbone)  # doctest: +SKIP
    >>> g.score_matrix(TextBatch(texts, h, layers), image_features)               # doctest: +SKIP

A caption is *negated* when the detector says so (``detector`` mode, default ``"lexical"``: the negation
analyser of :mod:`sayno.negation` finds a cue, read through :func:`sayno.glasses.analysis.analyse_texts`). Each
negated phrase becomes a *slot* with its own ``h_neg`` (Lens) and ``lambda`` (Frame); a phrase repeated in the
caption counts once, and one the text encoder never read (past its context) is dropped
(:func:`~sayno.glasses.analysis.slot_phrases`). A caption's lambdas sum to at most ``2 * lambda_max``
(:func:`~sayno.glasses.scoring.bound_lambda`): never binding with one or two phrases, it keeps a caption
with many phrases from being repelled without bound. Every other caption keeps exactly CLIP's score
``s*cos(h, I)`` (bit for bit).

Scoring paths (docs/GLASSES.md; the numpy side is :mod:`sayno.glasses.scoring`):
- :meth:`Glasses.score_matrix`: retrieval-grade; ``lambda`` from the caption alone, so one caption over M
  images is one query vector ``q = h - sum_p lambda_p*h_neg_p`` (plus a constant): a single matrix product.
- :meth:`Glasses.score_pairs`: caption i with image i; ``lambda`` conditioned on that image.
- :meth:`Glasses.rerank`: caption-only scores for all images, image-conditioned ones for each caption's top k.

The pieces: :mod:`~sayno.glasses.config` (what a model is), :mod:`~sayno.glasses.phrases` (the bounded memo of
phrase-prompt embeddings), :mod:`~sayno.glasses.scoring`, :mod:`~sayno.glasses.explain` and
:mod:`~sayno.glasses.checkpoint` (the ``sayno-glasses`` envelope; :func:`load_glasses` refuses another backbone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sayno.base.scoring import TextBatch
from sayno.errors import InputError
from sayno.glasses import scoring
from sayno.glasses.analysis import analyse  # noqa: F401 - re-exported
from sayno.glasses.checkpoint import check_state, read_glasses_checkpoint, write_glasses_checkpoint
from sayno.glasses.config import GlassesConfig, GlassesError, phrase_prompt
from sayno.glasses.explain import explain
from sayno.glasses.inputs import check_batch, check_features, check_rerank_k, check_texts
from sayno.glasses.modules import Detector, Frame, Lens
from sayno.glasses.paper import PaperGlasses, is_paper_checkpoint, load_paper_glasses
from sayno.glasses.phrases import DEFAULT_CAPACITY, PhraseEncoder
from sayno.glasses.reading import CaptionPlan, CaptionPlans, ReadLimits
from sayno.glasses.scoring import Slots
from sayno.negation import Analysis
from sayno.runtime import torch_threads


def _text_encoder(backbone) -> Callable[[list[str]], np.ndarray]:
    """texts -> (n, D) float32 numpy with ``backbone``'s text tower."""
    return lambda texts: backbone.encode_text(texts).float().cpu().numpy()


class Glasses(nn.Module):
    """CLIPGlasses around a frozen backbone; a :class:`sayno.base.scoring.Scorer`.

    backbone: what produced the features (its text tower also embeds the negated phrases' prompts, memoised in
    :attr:`phrases`, an LRU of ``phrase_cache`` texts; its tokenizer says how much of each negated caption the
    encoder read, memoised per caption in :attr:`reading`). ``phrase_encoder`` replaces the text tower
    (texts -> (n, D) normalised numpy), e.g. for tests.
    """

    needs_layers = True

    def __init__(self, config: GlassesConfig, backbone=None, *, name: str = "CLIPGlasses",
                 phrase_encoder: Callable[[list[str]], np.ndarray] | None = None, logit_scale: float | None = None,
                 phrase_cache: int = DEFAULT_CAPACITY):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.name = name
        self.detector = Detector(config.embed_dim, config.num_layers, config.detector_hidden)
        self.lens = Lens(config.embed_dim, config.syntax_layers, config.hidden)
        self.frame = Frame(config.embed_dim, config.hidden, config.lambda_max, learn_tau=config.score == "tau")
        if phrase_encoder is None and backbone is not None:
            phrase_encoder = _text_encoder(backbone)
        self.phrases = PhraseEncoder(phrase_encoder, config.embed_dim, phrase_cache)
        self.reading = ReadLimits(backbone)
        self.plans = CaptionPlans(self.reading)
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
        return GlassesScorer(self, rerank_k=check_rerank_k(rerank_k, "Glasses.scorer"), name=name or self.name)

    def text_batch(self, texts: Sequence[str]) -> TextBatch:
        """N captions -> a :class:`TextBatch` with the backbone's (N, D) and per-layer (N, L, D) features."""
        if self.backbone is None:
            raise GlassesError("text_batch needs the Glasses' backbone (load_glasses(path, backbone))")
        texts = check_texts(texts, "Glasses.text_batch")
        h = self.backbone.encode_text(texts).float().cpu().numpy()
        layers = self.backbone.encode_text_layers(texts).float().cpu().numpy()
        return TextBatch(texts, h, layers)

    def score(self, texts: Sequence[str], image_features: np.ndarray, rerank_k: int | None = None) -> np.ndarray:
        """(N, M) Glasses scores (logit scale) of N captions against (M, D) normalised image features.

        ``lambda`` comes from the caption alone; ``rerank_k`` re-orders each negated caption's top k with the
        image-conditioned ``lambda`` (then only the order within a row is meaningful).
        """
        rerank_k = check_rerank_k(rerank_k, "Glasses.score")
        feats = check_features(image_features, self.config.embed_dim, "Glasses.score")
        batch = self.text_batch(check_texts(texts, "Glasses.score"))
        return self.rerank(batch, feats, rerank_k) if rerank_k else self.score_matrix(batch, feats)

    # -------------------------------------------------------------------------------------- extra texts
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, D) frozen-CLIP embeddings of extra texts (phrase prompts, affirmative remainders), memoised."""
        return self.phrases.encode(texts)

    def encode_phrases(self, phrases: Sequence[str]) -> np.ndarray:
        """(n, D) frozen-CLIP embeddings of the negated phrases' prompts ("This image shows a dog.")."""
        return self.encode_texts([phrase_prompt(self.config.prompt, p) for p in phrases])

    # ------------------------------------------------------------------------------------------- slots
    def negated_mask(self, texts: Sequence[str], layers: torch.Tensor | None,
                     analyses: Sequence[Analysis] | None = None) -> np.ndarray:
        """(N,) which captions the configured detector mode treats as negated (``analyses``: the texts'
        :func:`analyse_texts`, when already at hand)."""
        if analyses is None:
            lex = np.array([p.negated for p in self.plans(texts)], dtype=bool)
        else:
            lex = np.array([a.negated for a in analyses], dtype=bool)
        return self._detect(lex, layers)

    def _detect(self, lex: np.ndarray, layers: torch.Tensor | None) -> np.ndarray:
        """(N,) the detector mode's decision from the lexical one ``lex`` (N,) and the captions' layers."""
        mode = self.config.detector
        if mode == "lexical":
            return lex
        if layers is None:
            raise GlassesError(f"detector={mode!r} needs the captions' layer features")
        with torch.no_grad():
            learned = (self.detector(layers) > 0).cpu().numpy() if len(lex) else np.zeros(0, bool)
        return {"learned": learned, "and": lex & learned, "or": lex | learned}[mode]

    def slots(self, text: TextBatch, image_terms: bool = True) -> Slots:
        """Detector + Lens + caption-only Frame for a batch of captions (on one torch thread). ``image_terms=False``
        leaves out what only the image-conditioned paths use (``beta``: None), as :meth:`score_matrix` does."""
        with torch_threads(1):
            return self._slots(text, image_terms)

    def _slot_owners(self, plans: Sequence[CaptionPlan], negated: np.ndarray
                     ) -> tuple[list[int], list[str], list[bool]]:
        """(caption index, phrase, hedged) of every slot: one per negated phrase, or one per negated caption.
        ``plans``: one per caption (:class:`~sayno.glasses.reading.CaptionPlan`)."""
        owner, phrases, hedged = [], [], []
        per_phrase = self.config.lens_input == "phrase"
        for i in np.flatnonzero(negated).tolist():
            plan = plans[i]
            if per_phrase and plan.phrases:
                for text, hd in plan.phrases:  # a predicate phrase's text is its subject + predicate
                    owner.append(i)
                    phrases.append(text)
                    hedged.append(hd)
            elif plan.phrases or plan.fallback:
                # one slot per caption: the caption-level Lens, and the fallback (issue 24) of a negated caption
                # with no phrase found (a cue without a phrase, or the learned detector alone): the Lens reads
                # the whole caption (phrase "") instead of the caption keeping its plain score
                owner.append(i)
                phrases.append("")
                hedged.append(plan.hedged)
        return owner, phrases, hedged

    def _extra(self, phrases: list[str], named: list[int], plans: Sequence[CaptionPlan], rows: list[int]
               ) -> list[str]:
        """The extra texts the slots embed: the named phrases' prompts, then the rows' affirmative remainders."""
        return ([phrase_prompt(self.config.prompt, phrases[k]) for k in named]
                + [plans[r].affirmative for r in rows])

    def extra_texts(self, texts: Sequence[str]) -> list[str]:
        """The extra texts (phrase prompts, affirmative remainders) scoring ``texts`` embeds with the frozen text
        tower (through :attr:`phrases`), for the captions the lexical detector flags: a caller that embeds
        texts anyway can embed these in the same pass and :meth:`PhraseEncoder.put` them."""
        plans = self.plans(texts)
        owner, phrases, _ = self._slot_owners(plans, np.array([p.negated for p in plans], dtype=bool))
        rows = sorted(set(owner)) if self.config.base == "affirmative" else []
        return self._extra(phrases, [k for k, p in enumerate(phrases) if p], plans, rows)

    def read_chars(self, texts: Sequence[str]) -> list[int | None]:
        """Per text, how many leading characters the backbone's text encoder reads (None for every text
        without a backbone): negated phrases after that are not slots. Memoised per text (:attr:`reading`)."""
        return self.reading(texts)

    def _slots(self, text: TextBatch, image_terms: bool = True) -> Slots:
        h = torch.as_tensor(np.asarray(text.h, dtype=np.float32))
        layers = None if text.layers is None else torch.as_tensor(np.asarray(text.layers, dtype=np.float32))
        plans = self.plans(text.texts)  # read once per caption while it stays in the memo
        negated = self._detect(np.array([p.negated for p in plans], dtype=bool), layers)
        owner, phrases, hedged = self._slot_owners(plans, negated)
        owner_t = torch.tensor(owner, dtype=torch.long)
        hedged_t = torch.tensor(hedged, dtype=torch.float32)
        if not owner:
            empty = h.new_zeros((0, h.shape[1]))
            return Slots(h, owner_t, phrases, hedged_t, empty, h.new_zeros(0), h.new_zeros(0), negated,
                         h.new_zeros(0), h.new_zeros(0))
        if layers is None:
            raise GlassesError("Glasses needs TextBatch.layers for negated captions (encode with layers=True)")
        named = [k for k, p in enumerate(phrases) if p]
        rows = sorted(set(owner)) if self.config.base == "affirmative" else []
        # the phrase prompts and the affirmative remainders: one lookup in the memo of extra texts
        extra = self.encode_texts(self._extra(phrases, named, plans, rows))
        h_own = h[owner_t]  # (P, D), a copy: indexing with a tensor gathers
        if len(named) == len(owner):  # every slot names its phrase: the Lens reads the phrase prompts
            source = torch.as_tensor(extra[: len(named)])
        else:  # caption-level slots (phrase "") read the caption's own h
            source = h_own.clone()
            if named:
                source[torch.tensor(named, dtype=torch.long)] = torch.as_tensor(extra[: len(named)])
        base = h
        if rows:  # what each caption's score starts from: its affirmative remainder
            base = h.clone()
            base[torch.tensor(rows, dtype=torch.long)] = torch.as_tensor(extra[len(named):])
        with torch.no_grad():
            h_neg = self.lens(layers[owner_t], source)
            logit, tau = self.frame.text_params(base[owner_t], h_neg, h_own, hedged_t)
            lam = scoring.bound_lambda(self.frame.lam(logit), owner_t, scoring.total_lambda_max(self.frame))
            beta = self.frame.beta(base[owner_t], h_neg, h_own, hedged_t) if image_terms else None
        return Slots(base, owner_t, phrases, hedged_t, h_neg, lam, tau, negated, logit, beta)

    # ------------------------------------------------------------------------------------------ scoring
    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N, M) scores, ``lambda`` from the caption alone. Rows of non-negated captions equal plain CLIP's."""
        images = self._check(text, images, "Glasses.score_matrix")
        slots = self.slots(text, image_terms=False)
        return scoring.caption_only_scores(text, images, slots, self.logit_scale, self.clamp)

    def query_vectors(self, text: TextBatch, s: Slots) -> tuple[np.ndarray, np.ndarray]:
        """The linear form of the caption-only score (``score="tau"``): ``S = s*(q.I + c)``.

        Returns q (N, D) = ``b - sum_p lambda_p h_neg_p`` (``h`` for captions without slots) and c (N,) =
        ``sum_p lambda_p tau_p``: one query vector per caption, so the score fits a vector index.
        """
        check_batch(text, self.config.embed_dim, "Glasses.query_vectors")
        return scoring.query_vectors(text, s, self.clamp)

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        """(N,) caption i with image i, ``lambda`` conditioned on image i."""
        images = self._check(text, images, "Glasses.score_pairs", pairs=True)
        return scoring.pair_scores(text, images, self.slots(text), self.frame, self.logit_scale, self.clamp)

    def rerank(self, text: TextBatch, images: np.ndarray, k: int = 20) -> np.ndarray:
        """(N, M) scores: caption-only for every image, image-conditioned for each negated caption's top k
        (see :func:`sayno.glasses.scoring.rerank_scores`; only the order within a row is meaningful)."""
        images = self._check(text, images, "Glasses.rerank")
        k = check_rerank_k(k, "Glasses.rerank") or 0
        return scoring.rerank_scores(text, images, self.slots(text), self.frame, self.logit_scale, self.clamp, k)

    def _check(self, text: TextBatch, images: np.ndarray, where: str, pairs: bool = False) -> np.ndarray:
        """One-line InputErrors for a bad TextBatch or image features ((M, D); (N, D) for ``pairs``)."""
        check_batch(text, self.config.embed_dim, where)
        return check_features(images, self.config.embed_dim, where, rows=len(text.texts) if pairs else None)

    def explain(self, texts: Sequence[str], layers: np.ndarray | None = None,
                h: np.ndarray | None = None) -> list[dict]:
        """Per caption: negated?, phrases, hedges, affirmative remainder, per-slot ``lambda`` and ``tau``
        (:func:`sayno.glasses.explain.explain`)."""
        return explain(self.slots, texts, layers, h, self.backbone)

    # --------------------------------------------------------------------------------------- checkpoint
    def save(self, path: str | Path, training: dict | None = None) -> Path:
        """Write the checkpoint (fp32, atomic) with config, backbone fingerprint and training summary."""
        if self.backbone is None:
            raise GlassesError("save() needs the backbone the Glasses were trained on (for its fingerprint)")
        return write_glasses_checkpoint(path, self.state_dict(), self.config, self.backbone, self.logit_scale,
                                        training)


def load_glasses(path: str | Path, backbone, *, detector: str | None = None, name: str = "CLIPGlasses",
                 phrase_encoder: Callable[[list[str]], np.ndarray] | None = None) -> Glasses | PaperGlasses:
    """Load a checkpoint for ``backbone`` (a paper preset checkpoint gives a
    :class:`~sayno.glasses.paper.PaperGlasses`, :func:`~sayno.glasses.paper.load_paper_glasses`).

    Raises :class:`sayno.errors.BackboneMismatch` if it was trained on another backbone and
    :class:`sayno.checkpoint.CheckpointError` for another format, or a missing, unexpected, wrong-shaped or
    non-finite tensor. ``detector`` overrides the stored detector mode ("lexical", "learned", "and", "or").
    """
    if backbone is None or not hasattr(backbone, "fingerprint"):
        raise InputError(f"load_glasses: backbone must be the Backbone the checkpoint was trained on "
                         f"(load_glasses(path, sayno.load(spec))), got {type(backbone).__name__}")
    if is_paper_checkpoint(path):  # `sayno glasses train --preset paper`: the paper's modules
        if detector not in (None, "lexical"):
            raise GlassesError(f"{path}: the paper Glasses use the lexical detector only, not {detector!r}")
        return load_paper_glasses(path, backbone)
    saved = read_glasses_checkpoint(path, backbone)
    config = saved.config
    if detector is not None:
        config.detector = detector
        config.__post_init__()
    glasses = Glasses(config, backbone, name=name, phrase_encoder=phrase_encoder)
    if "frame.bank" in saved.tensors:
        glasses.frame.set_bank(saved.tensors["frame.bank"])
    check_state(saved.tensors, glasses, path)
    glasses.load_state_dict(saved.tensors, strict=True)
    glasses.training_summary = saved.training
    return glasses.eval()


class GlassesScorer:
    """:class:`Glasses` as a benchmark scorer (:class:`sayno.base.scoring.Scorer`),
    optionally re-ranking each caption's top ``rerank_k`` images."""

    needs_layers = True

    def __init__(self, glasses: Glasses, rerank_k: int | None = None, name: str = "CLIPGlasses"):
        self.glasses, self.rerank_k, self.name = glasses, rerank_k, name

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        if self.rerank_k:
            return self.glasses.rerank(text, images, self.rerank_k)
        return self.glasses.score_matrix(text, images)

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        return self.glasses.score_pairs(text, images)
