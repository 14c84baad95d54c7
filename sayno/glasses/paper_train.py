"""``sayno glasses train --preset paper``: the paper's CLIPGlasses (:class:`~sayno.glasses.paper.PaperGlasses`)
trained as published, on cached frozen-CLIP features.

Stages (the reference's three):

1. ``frame``: the Frame alone, contrastive loss, ``h_neg`` = the *true* negated object's embedding (the frozen
   CLIP embedding of ``"This image shows a {obj}."``; the mean of them for a caption negating several).
2. ``lens``: the Lens alone, loss ``(1 - cos(h_neg, obj)) + |cos(obj, I) - cos(h_neg, I)|`` (I: the caption's
   image).
3. ``joint``: Lens and Frame together, contrastive loss with the Lens's ``h_neg`` (no Lens loss).

The contrastive loss is the reference's (``Glasses.calc_losses``): on a batch's score matrix S (captions x
images), text->image cross-entropy of every positive caption (written for its image and true there) over all
images of the batch, and image->text ``-log(sum of exp S over the image's positive captions / sum over all
captions of the batch)``. Every other caption of the batch (false captions: CC-Neg negatives, wrong MCQ options,
false world rows) counts in the image->text denominators, as the reference's CC-Neg loss counts the negated
caption. No truth masks (sayno's trainer leaves out candidates that are as true as the positive): an image
that also fits a caption is a negative, as in the reference.

``S[c, j] = s*cos(h_c, I_j) - max(0, lambda_cj * s*cos(h_neg_c, I_j))`` for negated captions (those with a
labelled negated object), plain CLIP otherwise. ``reference_quirks=False``: ``lambda_cj`` of each pair,
one Frame pass per (negated caption, batch image) pair; ``True``: the reference's one ``lambda`` per caption
from its own image, applied to every image (and the Lens's batch softmax, log-scale and double sigmoid).

Batches are whole scene groups (:class:`~sayno.glasses.train.SceneBatches`, ``batch_groups`` per batch: 4
groups = 8 images and about 96 captions in the world, near the reference's 64 captions). AdamW (betas 0.9,
0.98), cosine schedule per stage, gradient norm clipped at 1; each stage keeps its epoch with the best
validation loss. No resume file (a run is minutes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sayno.base.training import EarlyStopping, cosine_schedule, data_record, fit_epoch
from sayno.config import from_mapping
from sayno.errors import InputError
from sayno.glasses.data import FeatureSet, Sources
from sayno.glasses.paper import PaperGlasses, PaperGlassesConfig
from sayno.glasses.train import (
    SceneBatches,
    _pair_metrics,
    _prepare_data,
    _SlotIndex,
    check_output_file,
    evaluate_stage,
    lens_loss,
)
from sayno.runtime import torch_threads

PAPER_STAGES = ("frame", "lens", "joint")


@dataclass
class PaperTrainConfig:
    """Optimisation settings of the paper preset. ``epochs``: per stage, in :data:`PAPER_STAGES` order."""

    epochs: tuple[int, int, int] = (3, 3, 3)
    batch_groups: int = 4
    lr: float = 5e-4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    fraction: float = 1.0
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        self.epochs = tuple(int(e) for e in self.epochs)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~sayno.errors.InputError` (one line) for a setting that cannot train."""
        if len(self.epochs) != len(PAPER_STAGES) or any(e < 0 for e in self.epochs) or not any(self.epochs):
            raise InputError(f"epochs must be {len(PAPER_STAGES)} counts >= 0 ({', '.join(PAPER_STAGES)}), "
                             f"not all 0; got {self.epochs}")
        checks = (("batch_groups", self.batch_groups >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"), ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
                  ("fraction", 0 < self.fraction <= 1, "in (0, 1]"),
                  ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"), ("threads", self.threads >= 1, ">= 1"))
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PaperTrainConfig:
        return from_mapping(cls, data, "paper Glasses training config")


@dataclass
class PaperTrainResult:
    glasses: PaperGlasses
    summary: dict


def reference_contrastive_loss(S: torch.Tensor, pos_cap: torch.Tensor, pos_img: torch.Tensor) -> torch.Tensor:
    """The reference's loss on S (C, I): mean of the text->image CE of the positive pairs (pos_cap[p],
    pos_img[p]) over all I images, and of the image->text multi-positive loss of every image with a positive
    caption over all C captions."""
    if len(pos_cap) == 0:
        return S.sum() * 0
    t2i = F.cross_entropy(S[pos_cap], pos_img)
    positive = torch.zeros_like(S, dtype=torch.bool)
    positive[pos_cap, pos_img] = True
    cols = positive.any(0)
    St = S[:, cols]
    i2t = (torch.logsumexp(St, 0) - torch.logsumexp(St.masked_fill(~positive[:, cols], float("-inf")), 0)).mean()
    return 0.5 * (t2i + i2t)


class _PaperRunner:
    """Losses of one stage on one batch of scene groups."""

    def __init__(self, g: PaperGlasses, fs: FeatureSet):
        self.g, self.fs = g, fs
        self.slots = _SlotIndex(fs, "caption")  # one slot per negated caption: target = its objects' mean
        self.slot_of = torch.full((len(fs.lab.texts),), -1, dtype=torch.long)
        self.slot_of[self.slots.owner] = torch.arange(len(self.slots.owner))
        lab = fs.lab
        self.home = torch.as_tensor(lab.home, dtype=torch.long)
        self.positive = torch.as_tensor(lab.observed) & (torch.as_tensor(lab.home_true) != 0)
        self.layers = fs.layers

    def batch(self, stage: str, caps: torch.Tensor, imgs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        g, fs = self.g, self.fs
        slot = self.slot_of[caps]
        neg = slot >= 0
        h = fs.h[caps]
        if stage == "lens" or stage == "joint":
            hn_all = g.lens(h, self.layers[caps])  # the whole batch: with quirks, the reference's batch softmax
        if stage == "lens":
            target = self.slots.target[slot[neg]]
            hn = F.normalize(hn_all[neg], dim=-1)
            loss = lens_loss(hn, target, fs.images[self.home[caps[neg]]])
            return loss, {"lens_cos": float((hn.detach() * target).sum(-1).mean()) if int(neg.sum()) else 1.0}
        hn = self.slots.target[slot[neg]] if stage == "frame" else hn_all[neg]
        S = self.scores(h, fs.images[imgs], neg, hn, caps, imgs)
        local = {int(i): k for k, i in enumerate(imgs.tolist())}
        pc = torch.nonzero(self.positive[caps]).squeeze(-1)
        pi = torch.tensor([local[int(self.home[caps[k]])] for k in pc.tolist()], dtype=torch.long)
        loss = reference_contrastive_loss(S, pc, pi)
        metrics = {}
        if not torch.is_grad_enabled():
            T = fs.truth(caps, imgs)
            metrics = _pair_metrics(S, S, T, pc, pi)
        return loss, metrics

    def scores(self, h: torch.Tensor, I: torch.Tensor, neg: torch.Tensor, hn: torch.Tensor, caps: torch.Tensor,
               imgs: torch.Tensor) -> torch.Tensor:
        """(C, I) paper scores of the batch: plain CLIP rows, negated rows repelled by ``hn`` (one per negated row)."""
        frame = self.g.frame
        s = frame.logit_scale.exp()
        i_n = F.normalize(I, dim=-1)
        S = s * (F.normalize(h, dim=-1) @ i_n.T)
        if not int(neg.sum()):
            return S
        rows = torch.nonzero(neg).squeeze(-1)
        if frame.reference_quirks:  # one lambda per caption, from its own image
            lam = frame.lam(self.fs.images[self.home[caps[rows]]], h[rows], hn).unsqueeze(-1)
        else:
            lam = frame.lambda_matrix(I, h[rows], hn)
        repel = (lam * s * (frame._h_neg(hn) @ i_n.T)).clamp(min=0.0)
        return S.index_put((rows,), S[rows] - repel)


def _stage_params(g: PaperGlasses, stage: str) -> list[torch.nn.Parameter]:
    if stage == "frame":
        return list(g.frame.parameters())
    if stage == "lens":
        return list(g.lens.parameters())
    return list(g.lens.parameters()) + list(g.frame.parameters())


def train_paper_glasses(backbone, data: str | Path | Sources, out: str | Path, *,
                        config: PaperGlassesConfig | None = None, train: PaperTrainConfig | None = None,
                        val_data: str | Path | Sources | None = None, cache=None,
                        log: Callable[[str], None] = print, progress: bool = False,
                        overwrite: bool = False) -> PaperTrainResult:
    """Train the paper's Glasses for ``backbone`` on ``data`` (as :func:`sayno.glasses.train.train_glasses`
    reads it) and save the checkpoint to ``out`` (an existing one is refused unless ``overwrite``)."""
    settings = train or PaperTrainConfig()
    settings.validate()
    out = check_output_file(out, overwrite)
    with torch_threads(settings.threads):
        return _train(backbone, data, out, config, settings, val_data, cache, log, progress)


def _train(backbone, data, out: Path, config: PaperGlassesConfig | None, settings: PaperTrainConfig, val_data,
           cache, log: Callable[[str], None], progress: bool) -> PaperTrainResult:
    started = time.time()
    config = config or PaperGlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers)
    prepared = _prepare_data(backbone, data, val_data, config, settings, cache, progress, log)  # type: ignore[arg-type]
    torch.manual_seed(settings.seed)  # before the modules are built: their initial weights depend on it
    g = PaperGlasses(config, backbone, logit_scale=float(backbone.logit_scale))
    runner, val_runner = _PaperRunner(g, prepared.features), _PaperRunner(g, prepared.val_features)
    batches, val_batches = SceneBatches(prepared.features), SceneBatches(prepared.val_features)
    rng = np.random.default_rng(settings.seed)
    history: list[dict] = []
    log(f"paper preset: reference_quirks={config.reference_quirks}, Frame hidden {config.hidden}, "
        f"{len(batches)} scene groups, {settings.batch_groups} per batch")
    for index, stage in enumerate(PAPER_STAGES):
        if settings.epochs[index] > 0:
            history += _train_stage(g, stage, settings.epochs[index], runner, val_runner, batches, val_batches,
                                    settings, rng, log)
    g.eval()
    final = evaluate_stage(val_runner, "joint", val_batches, settings.batch_groups, val_runner.g)
    summary = {"preset": "paper", **data_record(prepared.train.files, prepared.val.files),
               "labels": prepared.features.lab.stats, "val_labels": prepared.val_features.lab.stats,
               "train": asdict(settings), "history": history, "final_val": final,
               "seconds": round(time.time() - started, 1), "feature_seconds": round(prepared.seconds, 1),
               "bad_rows": len(set(prepared.train.bad_rows + prepared.val.bad_rows))}
    g.save(out, training=summary)
    g.training_summary = summary
    log(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) in {summary['seconds']:.0f}s")
    return PaperTrainResult(g, summary)


def _train_stage(g: PaperGlasses, stage: str, epochs: int, runner: _PaperRunner, val_runner: _PaperRunner,
                 batches: SceneBatches, val_batches: SceneBatches, settings: PaperTrainConfig,
                 rng: np.random.Generator, log: Callable[[str], None]) -> list[dict]:
    """Train one stage for ``epochs`` epochs; keeps its epoch with the best validation loss."""
    params = _stage_params(g, stage)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.98), weight_decay=settings.weight_decay)
    n_batches = math.ceil(len(batches) / settings.batch_groups)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(epochs * n_batches))
    stop = EarlyStopping(None)
    history = []
    for epoch in range(epochs):
        started = time.time()
        g.train()
        train_loss = fit_epoch(batches(settings.batch_groups, rng),
                               lambda caps, imgs: runner.batch(stage, caps, imgs)[0],
                               optimizer, schedule, params, max_grad_norm=settings.max_grad_norm)
        val = evaluate_stage(val_runner, stage, val_batches, settings.batch_groups, val_runner.g)
        improved = stop.update(val["loss"], g)
        entry = {"stage": stage, "epoch": epoch + 1, "train_loss": round(train_loss, 5),
                 **{f"val_{k}": round(v, 5) for k, v in val.items()}, "seconds": round(time.time() - started, 2),
                 "best": improved}
        history.append(entry)
        log(f"{stage:8s} epoch {epoch + 1:2d}/{epochs}  train {entry['train_loss']:.4f}  "
            + "  ".join(f"{k[4:]} {v:.4f}" for k, v in entry.items() if k.startswith("val_"))
            + f"  {entry['seconds']:.1f}s" + ("  *" if improved else ""))
    stop.restore_best(g)
    return history
