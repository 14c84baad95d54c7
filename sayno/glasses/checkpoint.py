"""The Glasses checkpoint: a :mod:`sayno.checkpoint` envelope of format ``sayno-glasses``, version ``1``.

Tensors: the Glasses' state dict in fp32 (detector, Lens, Frame and its vocabulary bank). Envelope: the backbone's
fingerprint and spec, the :class:`~sayno.glasses.config.GlassesConfig`, and the sections ``training`` (the
training summary) and ``logit_scale``. :func:`read_glasses_checkpoint` refuses another format or version
(:class:`~sayno.checkpoint.CheckpointError`) and another backbone (:class:`~sayno.errors.BackboneMismatch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sayno.checkpoint import (
    CheckpointError,
    Envelope,
    check_tensors,
    read_checkpoint,
    write_checkpoint,
)
from sayno.config import ConfigError
from sayno.errors import SaynoError
from sayno.glasses.config import GlassesConfig

FORMAT = "sayno-glasses"
FORMAT_VERSION = "1"


class CheckpointConfigError(CheckpointError, ConfigError):
    """A checkpoint whose stored config is unusable (unknown key, bad type or range); names the file."""


@dataclass
class GlassesCheckpoint:
    """What a Glasses checkpoint holds: tensors by name, the config and the training summary."""

    tensors: dict[str, torch.Tensor]
    config: GlassesConfig
    training: dict[str, Any] = field(default_factory=dict)


def write_glasses_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], config: GlassesConfig,
                             backbone: Any, logit_scale: float, training: dict | None = None) -> Path:
    """Write ``state`` (fp32) with the envelope for ``backbone``; atomic. Returns the path."""
    tensors = {k: v.detach().float().contiguous().clone() for k, v in state.items()}
    envelope = Envelope(FORMAT, FORMAT_VERSION, backbone_fingerprint=backbone.fingerprint,
                        backbone_spec=str(getattr(backbone, "spec", "")), config=config.to_dict(),
                        sections={"logit_scale": repr(float(logit_scale)), "training": training or {}})
    return write_checkpoint(path, tensors, envelope)


def read_glasses_checkpoint(path: str | Path, backbone: Any) -> GlassesCheckpoint:
    """Tensors, config and training summary of a Glasses checkpoint made for ``backbone``."""
    tensors, envelope = read_checkpoint(path, FORMAT, (FORMAT_VERSION,))
    envelope.check_backbone(backbone.fingerprint, getattr(backbone, "spec", None), str(path))
    try:
        config = GlassesConfig.from_dict(envelope.config)
    except SaynoError as e:  # a bad size, type or range in the stored config: name the file
        raise CheckpointConfigError(f"{path}: its config is not usable ({_first_line(e)})") from e
    if config.embed_dim != backbone.embed_dim or config.num_layers != backbone.num_text_layers:
        raise CheckpointError(f"{path}: dims ({config.embed_dim}, {config.num_layers}) do not match the backbone "
                              f"({backbone.embed_dim}, {backbone.num_text_layers})")
    bank = tensors.get("frame.bank")
    if bank is not None and (bank.ndim != 2 or bank.shape[1] != config.embed_dim):
        raise CheckpointError(f"{path}: tensor 'frame.bank' has shape {tuple(bank.shape)}, expected "
                              f"(K, {config.embed_dim})")
    training = envelope.sections.get("training") or {}
    return GlassesCheckpoint(tensors, config, training if isinstance(training, dict) else {})


def check_state(tensors: Mapping[str, torch.Tensor], module: torch.nn.Module, path: str | Path) -> None:
    """One-line :class:`CheckpointError` unless ``tensors`` has exactly ``module``'s tensors and shapes."""
    check_tensors(tensors, {k: tuple(v.shape) for k, v in module.state_dict().items()}, str(path))



def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
