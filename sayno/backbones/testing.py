"""Tiny random-initialised open_clip CLIPs as real :class:`OpenClipBackbone` objects, for tests and benches.

They have learned nothing; they exercise the machinery (text tower, per-layer features, tokenizer,
preprocessing) through exactly the code a real open_clip checkpoint goes through. Seeded: equal arguments
give equal weights and fingerprints, different seeds differ.
"""

from __future__ import annotations

import math
from typing import Any

import open_clip
import torch

from sayno.backbones.base import weights_fingerprint
from sayno.backbones.checkpoint import freeze
from sayno.backbones.open_clip_backbone import (
    OPENAI_MEAN,
    OPENAI_STD,
    OpenClipBackbone,
    build_open_clip_model,
)


def tiny_config(embed_dim: int = 32, text_layers: int = 4, context_length: int = 32,
                image_size: int = 32) -> dict[str, Any]:
    """An open_clip model config: ViT of one layer (patch 16, width 32), text width 32 with 2 heads."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": text_layers},
    }


def tiny_open_clip(seed: int = 0, *, embed_dim: int = 32, text_layers: int = 4, context_length: int = 32,
                   logit_scale: float | None = None, spec: str | None = None) -> OpenClipBackbone:
    """A frozen random open_clip CLIP (fp32, CPU) built from :func:`tiny_config`.

    logit_scale: the exp'd scale to store (None keeps open_clip's init, 1/0.07). Images: 32x32.
    """
    config = tiny_config(embed_dim, text_layers, context_length)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_open_clip_model(config, "tiny")
    if logit_scale is not None:
        net.logit_scale.data.fill_(math.log(logit_scale))
    open_clip.set_model_preprocess_cfg(net, {"size": 32, "mean": OPENAI_MEAN, "std": OPENAI_STD,
                                             "interpolation": "bicubic", "resize_mode": "shortest"})
    freeze(net, torch.device("cpu"), torch.float32)
    return OpenClipBackbone(
        net, tokenizer=open_clip.SimpleTokenizer(context_length=context_length), spec=spec or f"tiny:{seed}",
        fingerprint=weights_fingerprint(net.state_dict()), config=config, device=torch.device("cpu"),
        dtype=torch.float32,
    )
