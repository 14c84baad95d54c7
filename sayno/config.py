"""Config dataclasses that reject unknown keys.

``from_mapping(Cls, data, what)`` builds a dataclass from a dict (a JSON file, a checkpoint's config) and raises
:class:`ConfigError` naming any key the dataclass does not have, instead of dropping it silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from sayno.errors import SaynoError

T = TypeVar("T")


class ConfigError(SaynoError, ValueError):
    """A config with unknown keys or bad values."""


def from_mapping(cls: type[T], data: Mapping[str, Any], what: str | None = None) -> T:
    """``cls(**data)`` for a dataclass ``cls``; unknown keys raise :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what or cls.__name__}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what or cls.__name__} key(s) {unknown}; known: {sorted(known)}")
    return cls(**data)
