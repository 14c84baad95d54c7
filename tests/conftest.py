"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded():
    """The shipped embedded CLIP (loaded once per test session)."""
    from sayno.backbones import load

    return load("embedded")
