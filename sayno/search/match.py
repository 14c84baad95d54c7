""""Nothing here matches": a label-free match test per index (docs/SEARCH.md, "Match threshold").

The training-free calibration (:func:`sayno.glasses.training_free.calibrate`) reads the indexed images with a
bank of object prompts (:data:`sayno.glasses.training_free.BANK`, 259 everyday objects) and learns, without
labels, where a *present* object sits in each image (its best bank object) and where an *absent* one sits (its
median bank object); its ``tau`` is the presence threshold between the two on the bank-relative similarity
``r(p, I) = (e_p - mu).I`` (``e_p``: the prompt-ensembled embedding of phrase ``p``, ``mu``: the bank mean).
Search reuses both halves of that principle, unchanged:

    p is present in I  <=>  e_p.I >= max_b e_b.I   (I looks at least as much like p as like the object the
                                                    calibration takes to be present in I: its best bank object)
                       and  r(p, I) > tau           (p clears the calibrated presence threshold)
                       and  e_p.I > level           (and the calibrated level of a matching caption, the same
                                                    midpoint of present and absent on the absolute scale)
    I matches a query  <=>  every phrase the query asks for is present
                            and no phrase it leaves out ("no X", "- X") is present

The first half is an open-set test against the bank (as NegLabel and CLIPN decide "none of my classes"): an
image of an onion lies near "basketball" on an absolute scale, but looks even more like some bank object.
Every index stores the calibration at build (section ``match`` of its metadata; the training-free Glasses' own
for such indexes) with the bank's embeddings (key ``bank``: float32 rows, base64), so a search embeds only the
query's phrases. An index built before that is calibrated when first searched, on its vectors, and embeds the
bank once per searcher (about 1 s for the embedded CLIP on one core).
"""

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass

import numpy as np

from sayno.glasses.training_free import Calibration, CalibrationWarning, TrainingFreeGlasses, is_training_free

SECTION = "match"
BANK_KEY = "bank"  # the bank's (B, D) embeddings inside the section: {"rows": B, "float32": base64}


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


def section(glasses: dict | None, backbone, vectors: np.ndarray) -> dict | None:
    """The ``match`` metadata section of a new version (JSON-ready): the training-free Glasses' calibration when
    the index has them, else one calibrated on ``vectors``; with the bank's embeddings (:data:`BANK_KEY`). None
    for an image-only encoder (no ``encode_text``): such an index is calibrated when first searched."""
    if not hasattr(backbone, "encode_text"):
        return None
    if is_training_free(glasses) and isinstance(glasses.get("calibration"), dict):
        cal = dict(glasses["calibration"])
        encoder = TrainingFreeGlasses(backbone, calibration=Calibration.from_dict(cal))
    else:
        encoder = _calibrated(backbone, vectors)
        cal = encoder.calibration.to_dict()
    return {**cal, BANK_KEY: encode_bank(encoder.bank())}


def _found(sections: dict) -> dict | None:
    found = sections.get(SECTION)
    if not isinstance(found, dict):
        found = (sections.get("glasses") or {}).get("calibration")
    return found if isinstance(found, dict) else None


def stored(sections: dict) -> Calibration | None:
    """The calibration an index stored (its ``match`` section, or its training-free Glasses'), or None."""
    found = _found(sections)
    return None if found is None else Calibration.from_dict({k: v for k, v in found.items() if k != BANK_KEY})


def stored_bank(sections: dict, dim: int) -> np.ndarray | None:
    """The (B, ``dim``) bank embeddings an index stored with its match calibration, or None (older indexes)."""
    found = _found(sections)
    return None if found is None or BANK_KEY not in found else decode_bank(found[BANK_KEY], dim)


def relative(phrases: np.ndarray, mu: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(P, M) bank-relative similarities ``(e_p - mu).I`` of (P, D) phrase embeddings and (M, D) images."""
    phrases = np.asarray(phrases, np.float32).reshape(-1, np.shape(images)[-1])
    return (phrases - np.asarray(mu, np.float32)[None]) @ np.asarray(images, np.float32).T


def presence(sims: np.ndarray, bank_best: np.ndarray, rel: np.ndarray, tau: float, level: float) -> np.ndarray:
    """(P, M) bool: phrase p present in image m. sims (P, M) ``e_p.I``; bank_best (M,) ``max_b e_b.I``; rel
    (P, M) ``(e_p - mu).I``; tau, level: the calibrated presence thresholds (relative, absolute)."""
    sims = np.asarray(sims, np.float32)
    return (sims >= np.asarray(bank_best, np.float32)[None] - 1e-6) & (np.asarray(rel) > tau) & (sims > level)


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
                 bank: np.ndarray | None = None):
        """bank: the (B, D) bank embeddings the index stored (None: the encoder embeds the bank when needed)."""
        self.calibration = calibration
        self.encoder = encoder if encoder is not None else TrainingFreeGlasses(backbone, calibration=calibration)
        self._bank = None if bank is None else np.asarray(bank, np.float32)
        self._mu = self.encoder.bank_mean()

    def bank(self) -> np.ndarray:
        """(B, D) the bank embeddings: the index's stored copy, else the encoder's (embedded once)."""
        return self._bank if self._bank is not None else self.encoder.bank()

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
        best = (self.bank() @ images.T).max(0) if test.wanted or test.unwanted else None
        return match_flags(self._present(test.wanted, images, best), self._present(test.unwanted, images, best))

    def _present(self, phrases: tuple[str, ...], images: np.ndarray, best: np.ndarray | None) -> np.ndarray:
        if not phrases:
            return np.zeros((0, len(images)), bool)
        emb = self.encoder.encode_phrases(list(phrases))
        return presence(emb @ images.T, best, relative(emb, self._mu, images), self.tau, self.level)


__all__ = ["BANK_KEY", "SECTION", "MatchTest", "Matcher", "calibrate_index", "decode_bank", "encode_bank", "match_flags",
           "presence", "relative", "section", "stored", "stored_bank"]
