"""The practitioner's tool behind ``sayno ood``: per image, the ID class and whether CLIPN calls it OOD."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sayno.backbones.base import Backbone
from sayno.clipn.checkpoint import load_clipn
from sayno.clipn.infer import RULES, Clipn, Decision
from sayno.clipn.model import ClipnError
from sayno.data import BadRow, DataError, read_class_names, walk_images
from sayno.features import FeatureCache, encode_images


def image_paths(images: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders replaced by the images under them (:func:`sayno.data.walk_images`)."""
    paths: list[Path] = []
    for item in images:
        p = Path(item)
        paths.extend(walk_images(p) if p.is_dir() else [p])
    return paths


def predict_images(backbone: Backbone, checkpoint: str | os.PathLike | Clipn,
                   class_names: Sequence[str] | str | os.PathLike, images: Sequence[str | os.PathLike], *,
                   rule: str = "atd", threshold: float | None = None,
                   cache: FeatureCache | None = None) -> tuple[list[dict], list[BadRow]]:
    """Per image ``{"image", "class", "class_index", "decision": "ID" | "OOD", "score", "margin"}`` and the
    unreadable files (BadRows). ``images``: files or folders (searched for images); ``class_names``: a list
    or a file; ``checkpoint``: a path or a loaded :class:`Clipn`. ``threshold``: decide ID iff
    ``score >= threshold`` instead of the rule (margin = score - threshold)."""
    if rule not in RULES:
        raise ClipnError(f"unknown CLIPN rule {rule!r}: use ctw or atd")
    names = read_class_names(class_names) if isinstance(class_names, (str, Path)) else list(class_names)
    model = checkpoint if isinstance(checkpoint, Clipn) else load_clipn(checkpoint, backbone)
    paths = image_paths(images)
    if not paths:
        raise DataError("no images given")
    res = encode_images(backbone, paths, cache=cache, progress=False)
    texts = model.class_texts(names)
    rows: list[dict] = []
    ok = np.flatnonzero(res.ok_mask)
    if ok.size:
        d = model.decide(res.features[ok], texts, rule)
        if threshold is not None:
            d = Decision(d.pred, d.score < threshold, d.score, d.score - threshold)
        for j, i in enumerate(ok):
            rows.append({"image": str(paths[i]), "class": names[int(d.pred[j])], "class_index": int(d.pred[j]),
                         "decision": "OOD" if d.is_ood[j] else "ID", "score": float(d.score[j]),
                         "margin": float(d.margin[j])})
    return rows, list(res.bad)
