"""CLIPN checkpoints: one safetensors file with only what training changed, tied to one backbone.

The file is sayno's one checkpoint envelope (:mod:`sayno.checkpoint`), format ``sayno-clipn`` version ``1``.
Tensors: ``tower.<name>`` for every trained parameter of the "no" encoder (the vocabulary table is not
trained, so not stored: it is the backbone's own), ``prompts`` (learnable variant) and ``bias`` (learned
``p_yes`` bias). The envelope's config (variant, prompts, ``template_set`` and its file's name and version,
...) says how to rebuild the encoder and which templates inference reads (no ``template_set``: "sayno"); its
``training`` section records data, epochs, seed, loss and wall time. Loading checks the
backbone fingerprint (:class:`sayno.errors.BackboneMismatch` for another backbone) and the tensors' names and
shapes. Files of sayno 0.1 (un-prefixed ``format``/``format_version`` keys) load unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sayno.backbones.base import Backbone
from sayno.checkpoint import CheckpointError, Envelope, read_checkpoint, write_checkpoint
from sayno.clipn.infer import TEMPLATE_SETS, Clipn, template_set
from sayno.clipn.model import VARIANTS, NoTextEncoder

FORMAT = "sayno-clipn"
FORMAT_VERSION = "1"


def save_clipn(path: str | os.PathLike, encoder: NoTextEncoder, backbone: Backbone, config: dict,
               training: dict | None = None) -> Path:
    """Write the checkpoint atomically (:func:`sayno.checkpoint.write_checkpoint`). Returns the path."""
    tensors = {k: v.detach().float() for k, v in encoder.trainable_state().items()}
    cfg = {**config, "variant": encoder.variant, "n_prompts": encoder.n_prompts}
    envelope = Envelope(FORMAT, FORMAT_VERSION, backbone.fingerprint, backbone.spec, cfg,
                        {"training": training or {}})
    return write_checkpoint(path, tensors, envelope)


def read_envelope(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Envelope]:
    """Tensors and envelope of a CLIPN checkpoint (format and version checked), without a backbone."""
    return read_checkpoint(path, FORMAT, (FORMAT_VERSION,))


def read_clipn(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a checkpoint, without a backbone. Metadata: ``format``, ``format_version``,
    ``backbone_fingerprint``, ``backbone_spec``, ``config`` and ``training`` (both dicts)."""
    tensors, env = read_envelope(path)
    meta = {"format": env.format, "format_version": env.version, "backbone_fingerprint": env.backbone_fingerprint,
            "backbone_spec": env.backbone_spec, "config": env.config, "training": env.sections.get("training", {})}
    return tensors, meta


MAX_PROMPTS = 4096  # far above the reference's 16: only a guard against a config that would not fit in memory


def check_config(cfg: dict, where: str) -> None:
    """One-line :class:`~sayno.checkpoint.CheckpointError` naming ``where`` unless the values the encoder is
    rebuilt from have the types and ranges training writes (``n_prompts`` "abc" or -5 used to end in raw
    ``ValueError``/``RuntimeError``)."""
    variant = cfg.get("variant", "learnable")
    if variant not in VARIANTS:
        raise CheckpointError(f"{where}: its config has variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    n = cfg.get("n_prompts", 16)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_PROMPTS:
        raise CheckpointError(f"{where}: its config has n_prompts {n!r}; expected a whole number in 0..{MAX_PROMPTS}")
    templates = cfg.get("template_set", "sayno")  # absent: every checkpoint before issue 26's option
    if templates not in TEMPLATE_SETS:
        raise CheckpointError(f"{where}: its config has template_set {templates!r}; expected one of "
                              f"{', '.join(TEMPLATE_SETS)}")
    if templates != "sayno" and variant != "handcrafted":
        raise CheckpointError(f"{where}: its config has template_set {templates!r} with variant {variant!r}; "
                              "template sets other than sayno are for the handcrafted variant")
    for key in ("train_token_embedding", "learn_bias"):
        if not isinstance(cfg.get(key, False), bool):
            raise CheckpointError(f"{where}: its config has {key} {cfg[key]!r}; expected true or false")


def load_clipn(path: str | os.PathLike, backbone: Backbone) -> Clipn:
    """The trained CLIPN for ``backbone``; raises :class:`sayno.errors.BackboneMismatch` for another backbone and
    :class:`sayno.checkpoint.CheckpointError` for missing or wrong-shaped tensors."""
    tensors, env = read_envelope(path)
    env.check_backbone(backbone.fingerprint, backbone.spec, str(path))
    cfg = env.config
    check_config(cfg, str(path))
    encoder = NoTextEncoder.from_backbone(backbone, variant=cfg.get("variant", "learnable"),
                                          n_prompts=int(cfg.get("n_prompts", 16)) or 16,
                                          train_token_embedding=bool(cfg.get("train_token_embedding", False)),
                                          learn_bias=bool(cfg.get("learn_bias", False)))
    encoder.load_trainable_state(tensors, where=str(path))
    for p in encoder.parameters():
        p.requires_grad_(False)
    # inference templates: the current file of the template set it was trained with (name/version go in results)
    templates = template_set(cfg.get("template_set", "sayno"))
    return Clipn(backbone, encoder.eval(), cfg, templates)
