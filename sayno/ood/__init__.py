"""Zero-shot OOD detection on CLIP features: the scorers, their metrics and the benchmark table (docs/CLIPN.md).

    >>> from sayno.ood import SCORERS, MCM                          # doctest: +SKIP
    >>> mcm = MCM(backbone=backbone).fit(["dog", "cat"])            # scores: higher = more in-distribution
    >>> mcm.score_samples(image_features)
"""

from sayno.ood.adaneg import AdaNeg
from sayno.ood.clipn_scorers import ClipnATD, ClipnCTW
from sayno.ood.csp import CSP
from sayno.ood.glmcm import GLMCM
from sayno.ood.scorers import MCM, MSP, Energy, MaxLogit, NegLabel, NotFittedError, OODScorer

#: the scorers of (N, D) image features fitted on class features alone (one conformance test runs over them)
SCORERS: dict[str, type[OODScorer]] = {c.name: c for c in (MSP, MaxLogit, Energy, MCM, NegLabel, ClipnCTW, ClipnATD)}
#: issue 28's detectors: GL-MCM scores (N, 1 + P, D) image tokens, CSP mines WordNet, AdaNeg is transductive
FRONTIER: dict[str, type[OODScorer]] = {c.name: c for c in (GLMCM, CSP, AdaNeg)}
DETECTORS: dict[str, type[OODScorer]] = {**SCORERS, **FRONTIER}

__all__ = ["CSP", "DETECTORS", "FRONTIER", "GLMCM", "MCM", "MSP", "SCORERS", "AdaNeg", "ClipnATD", "ClipnCTW",
           "Energy", "MaxLogit", "NegLabel", "NotFittedError", "OODScorer"]
