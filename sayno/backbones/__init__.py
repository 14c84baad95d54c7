"""Loading CLIPs: one :class:`Backbone` interface over open_clip, Hugging Face and the embedded model.

>>> from sayno.backbones import load
>>> # load("embedded"); load("open_clip:ViT-B-32-quickgelu:/models/ViT-B-32.pt"); load("hf:/models/clip")

The loaders are imported lazily (open_clip takes seconds to import), so ``sayno.backbones.base`` stays light.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sayno.backbones.base import (
    PRECISIONS,
    Backbone,
    BackboneError,
    TextTower,
    TruncationWarning,
    weights_fingerprint,
)

_LAZY: dict[str, str] = {
    "read_checkpoint": "sayno.backbones.checkpoint",
    "save_open_clip_checkpoint": "sayno.backbones.checkpoint",
    "HFBackbone": "sayno.backbones.hf_backbone",
    "HFTextTower": "sayno.backbones.hf_backbone",
    "load_hf_folder": "sayno.backbones.hf_backbone",
    "write_clip_tokenizer_files": "sayno.backbones.hf_backbone",
    "OpenClipBackbone": "sayno.backbones.open_clip_backbone",
    "OpenClipTextTower": "sayno.backbones.open_clip_backbone",
    "build_open_clip_model": "sayno.backbones.open_clip_backbone",
    "load_open_clip_checkpoint": "sayno.backbones.open_clip_backbone",
    "load_open_clip_pretrained": "sayno.backbones.open_clip_backbone",
    "REGISTRY": "sayno.backbones.registry",
    "BackboneRegistry": "sayno.backbones.registry",
    "load": "sayno.backbones.registry",
}

if TYPE_CHECKING:
    from sayno.backbones.checkpoint import read_checkpoint, save_open_clip_checkpoint
    from sayno.backbones.hf_backbone import (
        HFBackbone,
        HFTextTower,
        load_hf_folder,
        write_clip_tokenizer_files,
    )
    from sayno.backbones.open_clip_backbone import (
        OpenClipBackbone,
        OpenClipTextTower,
        build_open_clip_model,
        load_open_clip_checkpoint,
        load_open_clip_pretrained,
    )
    from sayno.backbones.registry import REGISTRY, BackboneRegistry, load


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sayno.backbones' has no attribute {name!r}")


__all__ = [
    "PRECISIONS",
    "REGISTRY",
    "Backbone",
    "BackboneError",
    "BackboneRegistry",
    "HFBackbone",
    "HFTextTower",
    "OpenClipBackbone",
    "OpenClipTextTower",
    "TextTower",
    "TruncationWarning",
    "build_open_clip_model",
    "load",
    "load_hf_folder",
    "load_open_clip_checkpoint",
    "load_open_clip_pretrained",
    "read_checkpoint",
    "save_open_clip_checkpoint",
    "weights_fingerprint",
    "write_clip_tokenizer_files",
]
