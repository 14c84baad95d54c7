"""Reading and writing CLIP checkpoints, strictly.

- :func:`read_checkpoint`: one file (.safetensors, .pt/.pth/.bin, or an OpenAI TorchScript archive) -> a
  plain state dict, its safetensors metadata, and whether it is in OpenAI format (QuickGELU-trained).
- :func:`check_state_dict`: every key present, nothing extra, every shape equal, or a one-line
  :class:`~sayno.backbones.base.BackboneError` before anything is copied (never half-loaded).
- :func:`save_open_clip_checkpoint`: the safetensors files sayno writes, through sayno's one checkpoint
  envelope (:mod:`sayno.checkpoint`, format ``sayno-open-clip``): the architecture config (``sayno.config``)
  and the activation flag (``sayno.quick_gelu``) are recorded so a wrong architecture is caught when the file is
  loaded again. Files written before (``sayno.format`` = ``open_clip``, no version) read the same.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from sayno.backbones.base import PRECISIONS, BackboneError
from sayno.checkpoint import Envelope, write_checkpoint

#: Top-level scalar entries of OpenAI's CLIP state dicts; they are not parameters and are dropped.
OPENAI_SCALARS: tuple[str, ...] = ("input_resolution", "context_length", "vocab_size")
OPEN_CLIP_FORMAT = "sayno-open-clip"
OPEN_CLIP_VERSION = "1"
META_QUICK_GELU = "sayno.quick_gelu"
META_CONFIG = "sayno.config"
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin")


@dataclass
class CheckpointFile:
    """A checkpoint as read from disk, before it meets a model.

    state: parameter name -> tensor (``module.`` stripped, OpenAI scalar entries dropped), as stored.
    metadata: the safetensors header metadata ({} for torch files).
    openai: True for OpenAI-format weights (a TorchScript archive or the scalar entries were present):
    such weights were trained with QuickGELU.
    """

    path: Path
    state: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    openai: bool = False

    @property
    def quick_gelu(self) -> bool | None:
        """What the file says about its activation: True/False, or None when it does not say."""
        if self.openai:
            return True
        flag = self.metadata.get(META_QUICK_GELU)
        return None if flag is None else flag.strip().lower() == "true"

    @property
    def sayno_config(self) -> dict | None:
        """The model config recorded by :func:`save_open_clip_checkpoint`, if any."""
        raw = self.metadata.get(META_CONFIG)
        if raw is None:
            return None
        try:
            cfg = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BackboneError(f"{self.path}: unreadable {META_CONFIG} metadata ({e})") from None
        return cfg if isinstance(cfg, dict) else None


def resolve_target(device: str | torch.device, precision: str) -> tuple[torch.device, torch.dtype]:
    """Validate a device and a precision name (``fp32``, ``fp16``, ``bf16``)."""
    if precision not in PRECISIONS:
        raise BackboneError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise BackboneError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"device {device!r} requested but CUDA is not available")
    return dev, PRECISIONS[precision]


def freeze(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move floating-point weights to ``device``/``dtype``, switch to eval mode, turn off gradients."""
    try:
        model.to(device=device, dtype=dtype)
    except (RuntimeError, AssertionError) as e:  # e.g. a device that this torch build cannot use
        raise BackboneError(f"cannot move the model to {device} / {dtype}: {str(e).splitlines()[0]}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a TorchScript zip archive (e.g. OpenAI's released ``ViT-B-32.pt``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _clean_state(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Unwrap ``{"state_dict": ...}``, strip ``module.``, drop the OpenAI scalars (reported as the flag)."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise BackboneError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    openai = any(k in state for k in OPENAI_SCALARS)
    for k in OPENAI_SCALARS:
        state.pop(k, None)
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad:
        raise BackboneError(f"{path}: {len(bad)} entries are not tensors, e.g. {bad[:3]}")
    return state, openai


def read_checkpoint(path: str | os.PathLike) -> CheckpointFile:
    """Read a checkpoint file onto the CPU.

    Formats: ``.safetensors`` (with its metadata); ``.pt``/``.pth``/``.bin`` read with
    ``torch.load(weights_only=True)`` (``{"state_dict": ...}`` and a ``module.`` prefix are accepted, as
    open_clip_train writes them); OpenAI TorchScript archives (``torch.jit.load``; only load archives you
    trust). Raises :class:`BackboneError` for a missing or unreadable file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise BackboneError(f"checkpoint file not found: {p}")
    if p.suffix == ".safetensors":
        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        except (SafetensorError, OSError) as e:
            raise BackboneError(f"cannot read {p}: {str(e).splitlines()[0]}") from None
        state, openai = _clean_state(raw, p)
        return CheckpointFile(p, state, metadata, openai)
    if p.suffix not in TORCH_SUFFIXES:
        raise BackboneError(
            f"unsupported checkpoint format {p.suffix!r} ({p}): use .safetensors, {', '.join(TORCH_SUFFIXES)}"
        )
    if is_torchscript_archive(p):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load is deprecated in recent torch
                state = torch.jit.load(str(p), map_location="cpu").state_dict()
        except RuntimeError as e:
            raise BackboneError(f"cannot read TorchScript archive {p}: {str(e).splitlines()[0]}") from None
        cleaned, _ = _clean_state(state, p)
        return CheckpointFile(p, cleaned, {}, openai=True)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files; all mean "unreadable"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(f"cannot read {p} with torch.load(weights_only=True): {msg}") from None
    state, openai = _clean_state(obj, p)
    return CheckpointFile(p, state, {}, openai)


def _examples(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Raise :class:`BackboneError` unless ``state`` has exactly the model's keys and shapes.

    The message names ``source``, the number of missing / unexpected / mismatched keys and a few of each.
    """
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {_examples(unexpected)})")
    if mismatched:
        ex = "; ".join(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched[:3]
        )
        parts.append(f"{len(mismatched)} shape mismatch(es) (e.g. {ex})")
    raise BackboneError(f"{source} does not fit the architecture: " + ", ".join(parts))


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | os.PathLike) -> None:
    """:func:`check_state_dict`, then ``load_state_dict(strict=True)`` (values cast to the model's dtype)."""
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=True)


def _uses_quick_gelu(model: nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.modules())


def open_clip_envelope(config: Mapping) -> Envelope:
    """The envelope sayno writes for an open_clip model config: the config, and its QuickGELU flag."""
    return Envelope(format=OPEN_CLIP_FORMAT, version=OPEN_CLIP_VERSION, config=dict(config),
                    sections={"quick_gelu": bool(config.get("quick_gelu", False))})


def save_open_clip_checkpoint(
    model: nn.Module, config: Mapping, path: str | os.PathLike, dtype: torch.dtype | None = torch.float16
) -> Path:
    """Write an open_clip model's weights as safetensors, in sayno's checkpoint envelope.

    model: an open_clip ``CLIP``/``CustomTextCLIP``. config: its open_clip model config (``embed_dim``,
    ``vision_cfg``, ``text_cfg``, optional ``quick_gelu``, ``custom_text``, ``preprocess_cfg``), stored as
    JSON in the metadata. dtype: floating-point tensors are stored in this dtype (None keeps theirs).
    The file is written atomically (:func:`sayno.checkpoint.write_checkpoint`). Returns the path.

    >>> # save_open_clip_checkpoint(model, cfg, "clip.safetensors")  # then load("open_clip:cfg.json:clip.safetensors")
    """
    if _uses_quick_gelu(model) != bool(config.get("quick_gelu", False)):
        raise BackboneError(
            f"config says quick_gelu={bool(config.get('quick_gelu', False))} but the model "
            f"{'uses' if _uses_quick_gelu(model) else 'does not use'} QuickGELU"
        )
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous().clone()  # a copy each: tied weights must not share memory in safetensors
    return write_checkpoint(Path(path).expanduser(), state, open_clip_envelope(config))
