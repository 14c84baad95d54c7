"""Fixtures shared across test modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def script_module(relative: str) -> Iterator[ModuleType]:
    """A script of the repository (``scripts/x.py``, ``bench/y.py``) imported as a module for its functions;
    registered in ``sys.modules`` while in use (dataclasses need it) and removed after."""
    path = ROOT / relative
    name = f"{path.parent.name}_{path.stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def scripts():
    """:func:`script_module`, for fixtures that import a repository script: ``with scripts("bench/x.py") as m``."""
    return script_module


@pytest.fixture(scope="session")
def embedded():
    """The shipped embedded CLIP (loaded once per test session)."""
    from sayno.backbones import load

    return load("embedded")


@pytest.fixture(scope="module")
def ood_toy():
    """Separable toy OOD features, D = 8, C = 3 classes: (classes (C, D), labels (60,), id_x (60, D), ood_x
    (50, D), negatives (5, D), no (C, D): "no <class>" embeddings that match what is not the class)."""
    import numpy as np

    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    d, c = 8, 3
    rng = np.random.default_rng(0)
    classes = np.eye(d)[:c]
    ood_dirs = np.eye(d)[c:6]
    labels = rng.integers(0, c, 60)
    id_x = unit(classes[labels] + 0.15 * rng.normal(size=(60, d)))
    ood_x = unit(ood_dirs[rng.integers(0, 3, 50)] + 0.15 * rng.normal(size=(50, d)))
    negatives = unit(np.eye(d)[c:] + 0.01)
    no = unit(0.5 * classes + ood_dirs.sum(0))
    return classes, labels, id_x, ood_x, negatives, no


@pytest.fixture(scope="module")
def index(world, embedded, tmp_path_factory):
    """An index of the requesting module's ``world`` fixture (its images), built with the embedded CLIP."""
    from sayno.search import build_index

    out = tmp_path_factory.mktemp("index") / "idx"
    build_index(world / "images", out, backbone=embedded, progress=False)
    return out


@pytest.fixture(scope="module")
def searcher(index, embedded):
    from sayno.search import Searcher

    return Searcher(index, backbone=embedded)
