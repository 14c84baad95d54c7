"""CLIPN checkpoints: one safetensors file with only what training changed, tied to one backbone.

Tensors: ``tower.<name>`` for every trained parameter of the "no" encoder (the vocabulary table is not
trained, so not stored: it is the backbone's own) and ``prompts`` (learnable variant). Metadata (strings):
``format`` = ``sayno-clipn``, ``format_version``, ``backbone_fingerprint``, ``backbone_spec``, ``config``
(JSON: variant, prompts, templates name and version, ...), ``training`` (JSON: data, epochs, seed, loss,
wall time). Loading checks the fingerprint and refuses another backbone; tensors are loaded strictly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sayno.backbones.base import Backbone
from sayno.clipn.infer import Clipn, load_templates
from sayno.clipn.model import ClipnError, NoTextEncoder

FORMAT = "sayno-clipn"
FORMAT_VERSION = "1"


class FingerprintMismatch(ClipnError):
    """The checkpoint was trained for another backbone."""


def save_clipn(path: str | os.PathLike, encoder: NoTextEncoder, backbone: Backbone, config: dict,
               training: dict | None = None) -> Path:
    """Write the checkpoint atomically (a temporary file, then a rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in encoder.trainable_state().items()}
    cfg = dict(config)
    cfg.update(variant=encoder.variant, n_prompts=encoder.n_prompts)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "backbone_fingerprint": backbone.fingerprint,
            "backbone_spec": backbone.spec, "config": json.dumps(cfg, sort_keys=True),
            "training": json.dumps(training or {}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read_clipn(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata (``config`` and ``training`` parsed) of a checkpoint, without a backbone."""
    path = Path(path)
    if not path.is_file():
        raise ClipnError(f"{path}: no such CLIPN checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # safetensors raises its own error types for a corrupt header
        raise ClipnError(f"{path}: not a safetensors file ({type(e).__name__})") from e
    if meta.get("format") != FORMAT:
        raise ClipnError(f"{path}: not a CLIPN checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ClipnError(f"{path}: CLIPN checkpoint format {meta.get('format_version')}, this sayno reads "
                         f"{FORMAT_VERSION}")
    meta["config"] = json.loads(meta.get("config", "{}"))
    meta["training"] = json.loads(meta.get("training", "{}"))
    return tensors, meta


def load_clipn(path: str | os.PathLike, backbone: Backbone) -> Clipn:
    """The trained CLIPN for ``backbone``; raises :class:`FingerprintMismatch` for another backbone."""
    tensors, meta = read_clipn(path)
    if meta.get("backbone_fingerprint") != backbone.fingerprint:
        raise FingerprintMismatch(
            f"{path}: trained for backbone {meta.get('backbone_spec')!r} (fingerprint "
            f"{meta.get('backbone_fingerprint')}), not {backbone.spec!r} ({backbone.fingerprint})")
    cfg = meta["config"]
    enc = NoTextEncoder.from_backbone(backbone, variant=cfg.get("variant", "learnable"),
                                      n_prompts=int(cfg.get("n_prompts", 16)) or 16,
                                      train_token_embedding=bool(cfg.get("train_token_embedding", False)),
                                      learn_bias=bool(cfg.get("learn_bias", False)))
    enc.load_trainable_state(tensors)
    for p in enc.parameters():
        p.requires_grad_(False)
    templates = load_templates()  # inference templates: the current file (its name/version go in results)
    return Clipn(backbone, enc.eval(), cfg, templates)
