"""The baseline Glasses is compared with: fine-tune the CLIP's *text tower* on the same negation data.

ConCLIP / NegBench style: a trainable copy of the text tower, image tower and logit scale frozen, trained with
the same contrastive losses and truth masks as Glasses (:func:`sayno.glasses.train.contrastive_loss`) on the
plain score ``s*cos(text, image)``. The result is a scorer with the usual API that re-encodes every caption
with the fine-tuned tower (it cannot use the frozen CLIP's cached text features), so the benchmark table shows
what fine-tuning gains on negation and what it costs in zero-shot accuracy and affirmative retrieval.

The checkpoint is a :mod:`sayno.checkpoint` envelope of format ``sayno-finetuned-text``, version ``1`` (files
written before the envelope had no version: they are read as version 1).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sayno.base.scoring import TextBatch
from sayno.base.training import EarlyStopping, cosine_schedule, data_record, fit_epoch
from sayno.checkpoint import Envelope, check_tensors, read_checkpoint, write_checkpoint
from sayno.config import from_mapping
from sayno.glasses.data import FeatureSet, Sources, build_features, train_val_sources
from sayno.glasses.train import SceneBatches, contrastive_loss
from sayno.runtime import torch_threads

FORMAT = "sayno-finetuned-text"
FORMAT_VERSION = "1"


@dataclass
class FinetuneConfig:
    epochs: int = 2
    batch_groups: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.1
    warmup: int = 20
    val_fraction: float = 0.1
    fraction: float = 1.0
    seed: int = 0
    threads: int = 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        """From a dict; unknown keys raise :class:`sayno.config.ConfigError`."""
        return from_mapping(cls, data, "fine-tuning config")


class FinetunedText:
    """A backbone's frozen images with a fine-tuned text tower: a :class:`~sayno.base.scoring.Scorer`."""

    needs_layers = False

    def __init__(self, backbone, tower, name: str = "CLIP text-finetuned", batch_size: int = 256):
        self.backbone, self.tower, self.name, self.batch_size = backbone, tower.eval(), name, batch_size
        self._cache: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) normalised features from the fine-tuned tower (memoised per text)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i:i + self.batch_size]
            f = F.normalize(self.tower(self.backbone.tokenize(chunk).to(self.backbone.device)).float(), dim=-1)
            self._cache.update(zip(chunk, f.cpu().numpy()))
        if not len(texts):
            return np.zeros((0, self.backbone.embed_dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def score_matrix(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        return self.backbone.logit_scale * (self.encode(text.texts) @ images.T)

    def score_pairs(self, text: TextBatch, images: np.ndarray) -> np.ndarray:
        return self.backbone.logit_scale * np.einsum("nd,nd->n", self.encode(text.texts), images)

    def save(self, path: str | Path, training: dict | None = None) -> Path:
        """Write the tower (fp32, atomic) with the backbone's fingerprint and the training summary."""
        state = {k: v.detach().float().contiguous().clone() for k, v in self.tower.state_dict().items()}
        envelope = Envelope(FORMAT, FORMAT_VERSION, backbone_fingerprint=self.backbone.fingerprint,
                            backbone_spec=str(getattr(self.backbone, "spec", "")),
                            sections={"training": training or {}})
        return write_checkpoint(path, state, envelope)


def load_finetuned(path: str | Path, backbone, name: str = "CLIP text-finetuned") -> FinetunedText:
    """Load a fine-tuned text tower for ``backbone``.

    Raises :class:`sayno.errors.BackboneMismatch` for another backbone and a one-line
    :class:`sayno.checkpoint.CheckpointError` for another format or a missing, unexpected, wrong-shaped or
    non-finite tensor."""
    tensors, envelope = read_checkpoint(path)
    envelope = dataclasses.replace(envelope, version=envelope.version or FORMAT_VERSION)  # files before 0.2
    envelope.expect(FORMAT, (FORMAT_VERSION,), str(path))
    envelope.check_backbone(backbone.fingerprint, getattr(backbone, "spec", None), str(path))
    tower = copy.deepcopy(backbone.text_tower())
    check_tensors(tensors, {k: tuple(v.shape) for k, v in tower.state_dict().items()}, str(path))
    tower.load_state_dict(tensors, strict=True)
    for p in tower.parameters():
        p.requires_grad_(False)
    return FinetunedText(backbone, tower, name=name)


def _caption_loss(tower: torch.nn.Module, tokens: torch.Tensor, features: FeatureSet, scale: float,
                  caps: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
    """Contrastive loss of the batch (caption indices ``caps``, image indices ``imgs``) on ``s*cos``."""
    text = F.normalize(tower(tokens[caps]).float(), dim=-1)
    scores = scale * text @ features.images[imgs].T
    truth = features.truth(caps, imgs)
    local = {int(i): k for k, i in enumerate(imgs.tolist())}
    observed = torch.as_tensor(features.lab.observed)[caps]
    home = torch.as_tensor(features.lab.home)[caps]
    pos_caps = torch.nonzero(observed).squeeze(-1)
    pos_imgs = torch.tensor([local[int(home[k])] for k in pos_caps.tolist()], dtype=torch.long)
    # as for Glasses: hedged captions (observed even where false) take part in the text->image loss only
    hedged = torch.as_tensor(features.lab.hedged)[caps]
    return contrastive_loss(scores, truth, pos_caps, pos_imgs, hedged)


def _validation_loss(tower: torch.nn.Module, tokens: torch.Tensor, features: FeatureSet, batches: SceneBatches,
                     batch_groups: int, scale: float) -> float:
    """Mean validation loss, weighted by captions per batch."""
    tower.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for caps, imgs in batches(batch_groups, None):
            total += float(_caption_loss(tower, tokens, features, scale, caps, imgs)) * len(caps)
            count += len(caps)
    return total / max(count, 1)


def finetune_text(backbone, data: str | Path | Sources, out: str | Path, *, config: FinetuneConfig | None = None,
                  val_data: str | Path | Sources | None = None, cache=None,
                  log: Callable[[str], None] = print) -> FinetunedText:
    """Fine-tune a copy of ``backbone``'s text tower on negation data; keeps the best epoch on validation.

    Runs on ``config.threads`` torch threads and restores the caller's setting afterwards."""
    settings = config or FinetuneConfig()
    with torch_threads(settings.threads):
        return _finetune(backbone, data, out, settings, val_data, cache, log)


def _finetune(backbone, data: str | Path | Sources, out: str | Path, settings: FinetuneConfig,
              val_data: str | Path | Sources | None, cache, log: Callable[[str], None]) -> FinetunedText:
    started = time.time()
    torch.manual_seed(settings.seed)
    src, val_src = train_val_sources(data, val_data, val_fraction=settings.val_fraction,
                                     fraction=settings.fraction, seed=settings.seed)
    features = build_features(src, backbone, cache=cache)
    val_features = build_features(val_src, backbone, cache=cache)
    tokens = backbone.tokenize(features.lab.texts)
    val_tokens = backbone.tokenize(val_features.lab.texts)
    tower = copy.deepcopy(backbone.text_tower())
    params = list(tower.parameters())
    for p in params:
        p.requires_grad_(True)
    scale = float(backbone.logit_scale)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    batches, val_batches = SceneBatches(features), SceneBatches(val_features)
    steps = settings.epochs * math.ceil(len(batches) / settings.batch_groups)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(steps, warmup=settings.warmup))
    rng = np.random.default_rng(settings.seed)

    def validate() -> float:
        return _validation_loss(tower, val_tokens, val_features, val_batches, settings.batch_groups, scale)

    stop = EarlyStopping(best_loss=validate())  # keeps the best epoch; no early stop
    history = []
    log(f"fine-tune: {len(features.lab.texts)} captions, {steps} steps; val loss before {stop.best_loss:.4f}")
    for epoch in range(settings.epochs):
        tower.train()
        epoch_start = time.time()
        train_loss = fit_epoch(batches(settings.batch_groups, rng),
                               lambda caps, imgs: _caption_loss(tower, tokens, features, scale, caps, imgs),
                               optimizer, schedule, params, max_grad_norm=1.0)
        val = validate()
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val,
                        "seconds": round(time.time() - epoch_start, 1)})
        log(f"fine-tune epoch {epoch + 1}/{settings.epochs}  train {train_loss:.4f}  val {val:.4f}  "
            f"{time.time() - epoch_start:.0f}s")
        stop.update(val, tower)
    stop.restore_best(tower)
    for p in params:
        p.requires_grad_(False)
    finetuned = FinetunedText(backbone, tower.eval())
    finetuned.save(out, training={"config": asdict(settings), "history": history,
                                  "seconds": round(time.time() - started, 1), **data_record(src.files)})
    log(f"saved {out} in {time.time() - started:.0f}s")
    return finetuned
