"""Zero-shot OOD detection on CLIP features: the scorers, their metrics and the benchmark table (docs/CLIPN.md).

    >>> from sayno.ood import SCORERS, MCM                          # doctest: +SKIP
    >>> mcm = MCM(backbone=backbone).fit(["dog", "cat"])            # scores: higher = more in-distribution
    >>> mcm.score_samples(image_features)
"""

from sayno.ood.clipn_scorers import ClipnATD, ClipnCTW
from sayno.ood.scorers import MCM, MSP, Energy, MaxLogit, NegLabel, NotFittedError, OODScorer

SCORERS: dict[str, type[OODScorer]] = {c.name: c for c in (MSP, MaxLogit, Energy, MCM, NegLabel, ClipnCTW, ClipnATD)}

__all__ = ["MCM", "MSP", "SCORERS", "ClipnATD", "ClipnCTW", "Energy", "MaxLogit", "NegLabel", "NotFittedError",
           "OODScorer"]
