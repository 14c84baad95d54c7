""""Nothing here matches": a label-free match test per index (docs/SEARCH.md, "Match threshold").

The training-free calibration (:func:`sayno.glasses.training_free.calibrate`) reads the indexed images with a
bank of object prompts (:data:`sayno.glasses.training_free.BANK`, 259 everyday objects) and learns, without
labels, where a *present* object sits in each image (its best bank object) and where an *absent* one sits (its
median bank object); its ``tau`` is the presence threshold between the two on the bank-relative similarity
``r(p, I) = (e_p - mu).I`` (``e_p``: the prompt-ensembled embedding of phrase ``p``, ``mu``: the bank mean).
Search reuses both halves of that principle, unchanged:

    p is present in I  <=>  e_p.I >= max_b e_b.I   (I looks at least as much like p as like the object the
                                                    calibration takes to be present in I: its best bank object;
                                                    with the open vocabulary, b also over its words but p's own)
                       and  r(p, I) > tau           (p clears the calibrated presence threshold)
                       and  e_p.I > level           (and the calibrated level of a matching caption, the same
                                                    midpoint of present and absent on the absolute scale)
    I matches a query  <=>  every phrase the query asks for is present
                            and no phrase it leaves out ("no X", "- X") is present

The first half is an open-set test against the bank (as NegLabel and CLIPN decide "none of my classes"): an
image of an onion lies near "basketball" on an absolute scale, but looks even more like some bank object. An
index built with the open vocabulary (the default; ``IndexConfig(vocabulary=False)``, ``sayno index build
--no-match-vocabulary`` go without; :mod:`sayno.search.vocabulary`: about 3,000 concrete nouns that WordNet's
sense-tagged corpus attests) also tests
p against those words, less the words that name p, a kind of p or what p is a kind of (an image of a cat must
not fail "a cat" by looking even more like "house cat"); the calibration (``mu``, ``tau``, ``level``) stays the
bank's, and the words' embeddings are stored with the index (key ``vocabulary``).
Every index stores the calibration at build (section ``match`` of its metadata; the training-free Glasses' own
for such indexes) with the bank's embeddings (key ``bank``: float32 rows, base64), so a search embeds only the
query's phrases. An index built before that is calibrated when first searched, on its vectors, and embeds the
bank once per searcher (about 1 s for the embedded CLIP on one core).
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sayno.glasses.training_free import Calibration, CalibrationWarning, TrainingFreeGlasses, is_training_free
from sayno.search.vocabulary import Vocabulary, load_vocabulary

SECTION = "match"
BANK_KEY = "bank"  # the bank's (B, D) embeddings inside the section: {"rows": B, "float32": base64}
VOCAB_KEY = "vocabulary"  # the open vocabulary's (K, D) embeddings: {"version": v, "rows": K, "float32": base64}


def _calibrated(backbone, vectors: np.ndarray) -> TrainingFreeGlasses:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return TrainingFreeGlasses.from_backbone(backbone, reference_images=vectors)


def calibrate_index(backbone, vectors: np.ndarray) -> Calibration:
    """The training-free calibration of ``backbone`` on an index's (N, D) vectors (no labels). Too few images
    give the documented fallback constants (``tau = 0``), without the Glasses' warning."""
    return _calibrated(backbone, vectors).calibration


def encode_bank(bank: np.ndarray) -> dict:
    """(B, D) bank embeddings -> the JSON-ready ``{"rows": B, "float32": base64}`` of :data:`BANK_KEY`."""
    bank = np.ascontiguousarray(bank, dtype="<f4")
    return {"rows": int(bank.shape[0]), "float32": base64.b64encode(bank.tobytes()).decode("ascii")}


def decode_bank(stored: object, dim: int) -> np.ndarray:
    """The (B, D) float32 bank :func:`encode_bank` wrote; ValueError (saying what is wrong) unless it is a
    ``{"rows": B >= 1, "float32": base64}`` of exactly B x ``dim`` finite numbers."""
    if not isinstance(stored, dict) or set(stored) != {"rows", "float32"}:
        raise ValueError("bank is not a {rows, float32} object")
    rows, text = stored["rows"], stored["float32"]
    if not isinstance(rows, int) or isinstance(rows, bool) or not 1 <= rows <= 1_000_000 or not isinstance(text, str):
        raise ValueError("bank rows is not a count from 1 to 1,000,000 or its float32 is not a string")
    if len(text) != 4 * -(-rows * dim * 4 // 3):
        raise ValueError(f"bank float32 does not hold {rows} x {dim} numbers")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError("bank float32 is not base64") from e
    if len(raw) != rows * dim * 4:
        raise ValueError(f"bank float32 does not hold {rows} x {dim} numbers")
    bank = np.frombuffer(raw, dtype="<f4").reshape(rows, dim).astype(np.float32)
    if not np.isfinite(bank).all():
        raise ValueError("bank holds a number that is not finite")
    return bank


#: the open vocabulary's embeddings per (backbone fingerprint, vocabulary version, prompts): embedding 3,000 words
#: costs seconds, and a process that builds many indexes of one backbone (a test run, a server) pays it once
_VOCAB_MEMO: dict[tuple, np.ndarray] = {}


def vocabulary_embeddings(encoder: TrainingFreeGlasses, fingerprint: str | None = None) -> dict:
    """The JSON-ready :data:`VOCAB_KEY` entry: ``{"version", "rows", "float32"}`` of the shipped vocabulary's
    words embedded by ``encoder`` (memoised per ``fingerprint`` of the backbone when one is given)."""
    words = load_vocabulary()
    key = (fingerprint, words.version, tuple(encoder.settings.prompts))
    emb = _VOCAB_MEMO.get(key) if fingerprint else None
    if emb is None:
        emb = encoder.encode_vocabulary(words.words)
        if fingerprint:
            if len(_VOCAB_MEMO) >= 4:
                _VOCAB_MEMO.clear()
            _VOCAB_MEMO[key] = emb
    return {"version": words.version, **encode_bank(emb)}


def section(glasses: dict | None, backbone, vectors: np.ndarray, vocabulary: bool = True,
            previous: dict | None = None) -> dict | None:
    """The ``match`` metadata section of a new version (JSON-ready): the training-free Glasses' calibration when
    the index has them, else one calibrated on ``vectors``; with the bank's embeddings (:data:`BANK_KEY`) and,
    when ``vocabulary``, the open vocabulary's (:data:`VOCAB_KEY`: taken from ``previous``, the sections of the
    version it replaces, when they hold the same vocabulary's, else embedded). None for an image-only encoder (no
    ``encode_text``): such an index is calibrated when first searched."""
    if not hasattr(backbone, "encode_text"):
        return None
    if is_training_free(glasses) and isinstance(glasses.get("calibration"), dict):
        cal = dict(glasses["calibration"])
        encoder = TrainingFreeGlasses(backbone, calibration=Calibration.from_dict(cal))
    else:
        encoder = _calibrated(backbone, vectors)
        cal = encoder.calibration.to_dict()
    out = {**cal, BANK_KEY: encode_bank(encoder.bank())}
    if vocabulary:
        kept = (_found(previous) or {}).get(VOCAB_KEY) if previous else None
        if isinstance(kept, dict) and kept.get("version") == load_vocabulary().version:
            out[VOCAB_KEY] = kept
        else:
            out[VOCAB_KEY] = vocabulary_embeddings(encoder, getattr(backbone, "fingerprint", None))
    return out


def _found(sections: dict) -> dict | None:
    found = sections.get(SECTION)
    if not isinstance(found, dict):
        found = (sections.get("glasses") or {}).get("calibration")
    return found if isinstance(found, dict) else None


def stored(sections: dict) -> Calibration | None:
    """The calibration an index stored (its ``match`` section, or its training-free Glasses'), or None."""
    found = _found(sections)
    return None if found is None else Calibration.from_dict(
        {k: v for k, v in found.items() if k not in (BANK_KEY, VOCAB_KEY)})


def stored_bank(sections: dict, dim: int) -> np.ndarray | None:
    """The (B, ``dim``) bank embeddings an index stored with its match calibration, or None (older indexes)."""
    found = _found(sections)
    return None if found is None or BANK_KEY not in found else decode_bank(found[BANK_KEY], dim)


def stored_vocabulary(sections: dict, dim: int, vocabulary: Vocabulary | None = None) -> np.ndarray | None:
    """The (K, ``dim``) embeddings of ``vocabulary``'s words (default: the shipped one) an index stored with its
    match calibration, or None (older indexes, or embeddings of another version of the vocabulary)."""
    found = _found(sections)
    kept = None if found is None else found.get(VOCAB_KEY)
    vocabulary = vocabulary or load_vocabulary()
    if not isinstance(kept, dict) or kept.get("version") != vocabulary.version:
        return None
    emb = decode_bank({k: v for k, v in kept.items() if k != "version"}, dim)
    return emb if len(emb) == len(vocabulary) else None


def relative(phrases: np.ndarray, mu: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(P, M) bank-relative similarities ``(e_p - mu).I`` of (P, D) phrase embeddings and (M, D) images."""
    phrases = np.asarray(phrases, np.float32).reshape(-1, np.shape(images)[-1])
    return (phrases - np.asarray(mu, np.float32)[None]) @ np.asarray(images, np.float32).T


def presence(sims: np.ndarray, bank_best: np.ndarray, rel: np.ndarray, tau: float, level: float) -> np.ndarray:
    """(P, M) bool: phrase p present in image m. sims (P, M) ``e_p.I``; bank_best (M,) ``max_b e_b.I``, or (P, M)
    per phrase (:meth:`Matcher.competitors`); rel (P, M) ``(e_p - mu).I``; tau, level: the calibrated presence
    thresholds (relative, absolute)."""
    sims = np.asarray(sims, np.float32)
    best = np.asarray(bank_best, np.float32)
    best = best[None] if best.ndim == 1 else best
    return (sims >= best - 1e-6) & (np.asarray(rel) > tau) & (sims > level)


def match_flags(wanted: np.ndarray, unwanted: np.ndarray) -> np.ndarray:
    """(M,) bool: every wanted phrase present and no unwanted one; wanted (P, M), unwanted (Q, M) presence
    (P or Q may be 0)."""
    m = np.shape(wanted)[-1] if np.size(wanted) else np.shape(unwanted)[-1]
    ok = np.ones(m, bool)
    if np.size(wanted):
        ok &= np.asarray(wanted, bool).all(0)
    if np.size(unwanted):
        ok &= ~np.asarray(unwanted, bool).any(0)
    return ok


@dataclass(frozen=True)
class MatchTest:
    """The phrases a query asks for (``wanted``) and leaves out (``unwanted``), as the match test reads them."""

    wanted: tuple[str, ...]
    unwanted: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"wanted": list(self.wanted), "unwanted": list(self.unwanted)}

    def describe(self) -> str:
        """``cat, not dog``; ``not dog``."""
        parts = [", ".join(self.wanted)] if self.wanted else []
        parts += [f"not {p}" for p in self.unwanted]
        return ", ".join(parts)


class Matcher:
    """The match test of one index: its calibration and the phrase encoder (the training-free Glasses' own,
    so phrases are embedded exactly as the calibration's bank was)."""

    def __init__(self, backbone, calibration: Calibration, encoder: TrainingFreeGlasses | None = None,
                 bank: np.ndarray | None = None, vocabulary: Vocabulary | None = None,
                 vocabulary_embeddings: np.ndarray | None = None):
        """bank: the (B, D) bank embeddings the index stored (None: the encoder embeds the bank when needed);
        vocabulary_embeddings: the (K, D) embeddings of ``vocabulary``'s words (default: the shipped open
        vocabulary) the index stored, or None: the test is against the bank alone."""
        self.calibration = calibration
        self.encoder = encoder if encoder is not None else TrainingFreeGlasses(backbone, calibration=calibration)
        self._bank = None if bank is None else np.asarray(bank, np.float32)
        self._vocab = None if vocabulary_embeddings is None else np.asarray(vocabulary_embeddings, np.float32)
        self.words = None if self._vocab is None else (vocabulary if vocabulary is not None else load_vocabulary())
        if self._vocab is not None and self._vocab.shape[0] != len(self.words):
            raise ValueError(f"{self._vocab.shape[0]} vocabulary embeddings for {len(self.words)} words")
        self._mu = self.encoder.bank_mean()

    def bank(self) -> np.ndarray:
        """(B, D) the bank embeddings: the index's stored copy, else the encoder's (embedded once)."""
        return self._bank if self._bank is not None else self.encoder.bank()

    def competitors(self, phrases: Sequence[str], images: np.ndarray) -> np.ndarray:
        """(P, M) per phrase and image, ``max_b e_b.I`` over the bank and (with the open vocabulary) the words
        that are not the phrase's own (:meth:`Vocabulary.related`): what the phrase must match at least.
        images: (M, D)."""
        images = np.asarray(images, np.float32)
        base = (self.bank() @ images.T).max(0)
        if self._vocab is None:
            return np.repeat(base[None], len(phrases), 0)
        sims = self._vocab @ images.T  # (K, M)
        out = np.empty((len(phrases), len(images)), np.float32)
        for i, p in enumerate(phrases):
            keep = ~self.words.related(p)
            out[i] = np.maximum(base, sims[keep].max(0)) if keep.any() and len(images) else base
        return out

    @property
    def tau(self) -> float:
        return float(self.calibration.tau)

    @property
    def level(self) -> float:
        """The absolute floor: the calibration's ``level`` (the fallback's 0 when it has none)."""
        level = float(self.calibration.level)
        return level if np.isfinite(level) and not self.calibration.fallback else 0.0

    def extra_texts(self, test: MatchTest) -> list[str]:
        """The prompt texts :meth:`flags` would embed for ``test`` (its phrases not yet ensembled), for a caller
        that embeds them in its own text-tower pass (into ``encoder.phrases``)."""
        return self.encoder.ensemble_prompts([*test.wanted, *test.unwanted])

    def flags(self, test: MatchTest, images: np.ndarray) -> np.ndarray:
        """(M,) bool for (M, D) image features."""
        images = np.asarray(images, np.float32)
        if not len(images):
            return np.zeros(0, bool)
        return match_flags(self.present(test.wanted, images), self.present(test.unwanted, images))

    def present(self, phrases: Sequence[str], images: np.ndarray) -> np.ndarray:
        """(P, M) bool: each phrase present in each of the (M, D) images (:func:`presence` against
        :meth:`competitors`). The vocabulary's words are weighed only on the images that pass against the bank
        (the same answer: the competitors are the bank's best or more), which spares most of its product."""
        images = np.asarray(images, np.float32)
        if not len(phrases):
            return np.zeros((0, len(images)), bool)
        emb = self.encoder.encode_phrases(list(phrases))
        sims = emb @ images.T
        bank_best = (self.bank() @ images.T).max(0) if len(images) else np.zeros(0, np.float32)
        ok = presence(sims, bank_best, relative(emb, self._mu, images), self.tau, self.level)
        cols = np.flatnonzero(ok.any(0))
        if self._vocab is not None and len(cols):
            ok[:, cols] &= sims[:, cols] >= self.competitors(phrases, images[cols]) - 1e-6
        return ok


__all__ = ["BANK_KEY", "SECTION", "VOCAB_KEY", "MatchTest", "Matcher", "calibrate_index", "decode_bank", "encode_bank", "match_flags",
           "presence", "relative", "section", "stored", "stored_bank", "stored_vocabulary",
           "vocabulary_embeddings"]
