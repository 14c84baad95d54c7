"""What the Glasses see in each caption: negated?, its negated phrases and hedges, the affirmative remainder,
and per slot the caption-only ``lambda`` and ``tau`` (``sayno glasses explain``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sayno.base.scoring import TextBatch
from sayno.glasses.analysis import analyse_texts
from sayno.glasses.config import GlassesError
from sayno.glasses.scoring import Slots


def explain(slots_of: Callable[[TextBatch], Slots], texts: Sequence[str], layers: np.ndarray | None = None,
            h: np.ndarray | None = None, backbone: Any = None) -> list[dict[str, Any]]:
    """One dict per caption: ``text, negated, path, affirmative, phrases, kinds, hedged, slots, lambda, tau``.

    path: "parse" (a slot per negated phrase), "fallback" (negated but no phrase: the Lens read the whole
    caption) or "none" (plain CLIP); kinds: per phrase, "object" or "predicate".

    slots_of: the Glasses' :meth:`~sayno.glasses.model.Glasses.slots`. layers: (N, L, D) and h: (N, D)
    frozen-CLIP features; encoded with ``backbone`` when not given. One slot per phrase, or one per caption
    with ``lens_input="caption"``.
    """
    texts = list(texts)
    if h is None or layers is None:
        if backbone is None:
            raise GlassesError("explain() without features needs a backbone")
        layers = backbone.encode_text_layers(texts).cpu().numpy()
        h = layers[:, -1]
    slots = slots_of(TextBatch(texts, np.asarray(h), np.asarray(layers)))
    out = []
    for i, (text, analysis) in enumerate(zip(texts, analyse_texts(texts))):
        sel = (slots.owner == i).nonzero().squeeze(-1).tolist()
        negated = bool(slots.negated[i])
        path = "none" if not sel else "parse" if any(slots.phrases[j] for j in sel) or (
            analysis.phrases and negated) else "fallback"
        out.append({"text": text, "negated": negated, "path": path,
                    "affirmative": analysis.affirmative_text if sel else text,
                    "phrases": [p.text for p in analysis.phrases], "kinds": [p.kind for p in analysis.phrases],
                    "hedged": [p.hedged for p in analysis.phrases],
                    "slots": len(sel), "lambda": [round(float(slots.lam[j]), 4) for j in sel],
                    "tau": [round(float(slots.tau[j]), 4) for j in sel]})
    return out
