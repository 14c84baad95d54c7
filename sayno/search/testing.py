"""Helpers for the search tests and benches: a small rendered world, its ground truth, a ranking metric."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from sayno.data import read_csv_rows
from sayno.world import WorldConfig, build_world


def tiny_world(out: str | Path, groups: int = 100, seed: int = 0) -> Path:
    """Render ``groups`` test scene groups (2 images each) of the emoji world into ``out``; returns the folder
    of images (``out/images``). Seconds on one CPU core."""
    out = Path(out)
    if not (out / "negation_test.csv").is_file():
        build_world(out, WorldConfig(seed=seed, test_groups=groups), progress=False, parts=("test",))
    return out / "images"


def object_truth(world: str | Path) -> dict[str, set[str]]:
    """Image path relative to ``world/images`` -> the objects it shows (from ``negation_test.csv``)."""
    world = Path(world)
    truth: dict[str, set[str]] = {}
    _, records = read_csv_rows(world / "negation_test.csv", ("filepath", "positive_objects"), "negation")
    for _, row in records:
        if isinstance(row, dict):
            rel = Path(row["filepath"]).relative_to("images").as_posix()
            truth[rel] = set(json.loads(row["positive_objects"]))
    return truth


def common_objects(truth: dict[str, set[str]], n: int = 3) -> list[str]:
    """The ``n`` objects shown in the most images (ties by name)."""
    counts = Counter(o for objs in truth.values() for o in objs)
    return [o for o, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def absent_first_auc(scores: np.ndarray, has: np.ndarray) -> float:
    """Share of (image without X, image with X) pairs where the image without X scores higher (ties 1/2):
    1.0 = every image without X ranked above every image with X; 0.5 = chance."""
    a, b = np.asarray(scores)[~has], np.asarray(scores)[has]
    if not len(a) or not len(b):
        raise ValueError("need images with and without the object")
    return float(((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()) / (len(a) * len(b)))
