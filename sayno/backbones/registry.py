"""Spec strings -> backbones, through one registry object.

A spec is ``<scheme>:<rest>`` (or just ``<scheme>``); the registry maps the scheme to a loader function
``loader(rest, device=..., precision=...) -> Backbone``:

- ``open_clip:<model>/<pretrained tag>``  e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k`` (downloads)
- ``open_clip:<model>:<checkpoint>``      e.g. ``open_clip:ViT-B-32-quickgelu:/models/ViT-B-32.pt``;
  ``<model>`` is a built-in open_clip name or a JSON model config path
- ``hf:<folder>``                         a local Hugging Face ``CLIPModel`` folder
- ``embedded``                            the small CLIP that ships with sayno (``sayno/weights/embedded``)

>>> sorted(REGISTRY.schemes())
['embedded', 'hf', 'open_clip']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import torch

from sayno.backbones.base import Backbone, BackboneError
from sayno.backbones.checkpoint import resolve_target

#: Where the embedded model lives: an open_clip model config and its safetensors weights (package data).
EMBEDDED_DIR: Path = Path(str(resources.files("sayno").joinpath("weights", "embedded")))
EMBEDDED_CONFIG = "config.json"
EMBEDDED_WEIGHTS = "clip.safetensors"


class Loader(Protocol):
    def __call__(self, rest: str, *, device: str | torch.device, precision: str) -> Backbone: ...


@dataclass(frozen=True)
class Scheme:
    """One registered spec scheme: its loader, an example spec and a one-line description."""

    name: str
    loader: Loader
    example: str
    help: str


class BackboneRegistry:
    """Maps spec schemes (``open_clip``, ``hf``, ``embedded``, ...) to loader functions."""

    def __init__(self) -> None:
        self._schemes: dict[str, Scheme] = {}

    def register(self, name: str, loader: Loader, *, example: str, help: str = "") -> Loader:
        """Add a scheme; returns the loader (so it can be used as a plain call or a decorator helper)."""
        if not name or ":" in name:
            raise ValueError(f"bad scheme name {name!r}")
        if name in self._schemes:
            raise ValueError(f"scheme {name!r} is already registered")
        self._schemes[name] = Scheme(name, loader, example, help)
        return loader

    def schemes(self) -> list[str]:
        return list(self._schemes)

    def __iter__(self) -> Iterator[Scheme]:
        return iter(self._schemes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._schemes

    def resolve(self, spec: str) -> tuple[Scheme, str]:
        """Split a spec into its registered scheme and the rest; :class:`BackboneError` if unknown."""
        if not isinstance(spec, str) or not spec.strip():
            raise BackboneError(f"empty backbone spec {spec!r}")
        name, _, rest = spec.strip().partition(":")
        scheme = self._schemes.get(name)
        if scheme is None:
            known = "; ".join(s.example for s in self)
            raise BackboneError(f"unknown backbone spec {spec!r}: expected one of {known}")
        return scheme, rest

    def load(self, spec: str, *, device: str | torch.device = "cpu", precision: str = "fp32") -> Backbone:
        """Load the backbone a spec names (eval mode, no gradients, on ``device`` in ``precision``)."""
        resolve_target(device, precision)  # fail on a bad device/precision before any file is read
        scheme, rest = self.resolve(spec)
        return scheme.loader(rest, device=device, precision=precision)


def _load_open_clip(rest: str, *, device: str | torch.device, precision: str) -> Backbone:
    from sayno.backbones.open_clip_backbone import load_open_clip_spec

    return load_open_clip_spec(rest, device=device, precision=precision)


def _load_hf(rest: str, *, device: str | torch.device, precision: str) -> Backbone:
    from sayno.backbones.hf_backbone import load_hf_folder

    if not rest:
        raise BackboneError("bad spec 'hf:': use hf:<path to a Hugging Face CLIP folder>")
    return load_hf_folder(rest, device=device, precision=precision, spec=f"hf:{rest}")


def _load_embedded(rest: str, *, device: str | torch.device, precision: str) -> Backbone:
    from sayno.backbones.open_clip_backbone import load_open_clip_checkpoint

    if rest:
        raise BackboneError(f"bad spec 'embedded:{rest}': the embedded model takes no arguments")
    folder = EMBEDDED_DIR
    config, weights = folder / EMBEDDED_CONFIG, folder / EMBEDDED_WEIGHTS
    missing = [p.name for p in (config, weights) if not p.is_file()]
    if missing:
        raise BackboneError(
            f"the embedded model's weights are missing ({', '.join(missing)} not in {folder}); "
            "reinstall sayno or pass another spec"
        )
    return load_open_clip_checkpoint(str(config), weights, device=device, precision=precision, spec="embedded")


REGISTRY = BackboneRegistry()
REGISTRY.register(
    "open_clip", _load_open_clip, example="open_clip:<model>/<tag> or open_clip:<model>:<checkpoint>",
    help="an open_clip architecture (built-in name or JSON config) with a pretrained tag or a local file",
)
REGISTRY.register("hf", _load_hf, example="hf:<folder>", help="a local Hugging Face CLIPModel folder")
REGISTRY.register("embedded", _load_embedded, example="embedded", help="the small CLIP shipped with sayno")


def load(spec: str, *, device: str | torch.device = "cpu", precision: str = "fp32") -> Backbone:
    """Load a backbone from a spec string (see the module docstring), e.g. ``load("embedded")``.

    Returns a frozen :class:`~sayno.backbones.base.Backbone` in eval mode on ``device`` in ``precision``
    (``fp32``, ``fp16``, ``bf16``). Raises :class:`~sayno.backbones.base.BackboneError` with a one-line
    message for an unknown spec, a missing file or weights that do not fit the architecture.
    """
    return REGISTRY.load(spec, device=device, precision=precision)
