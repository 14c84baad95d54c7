"""Training CLIPGlasses on cached frozen-CLIP features.

Stages (the reference's three, plus the detector head first):

0. ``detector``: the learned head, BCE on "negates something" (labels: the data's negated objects).
1. ``frame``: the Frame (both lambda paths) and tau, with ``h_neg`` = the *true* negated-object embedding.
2. ``lens``: the Lens alone, loss ``(1 - cos(h_neg, obj)) + |cos(obj, I) - cos(h_neg, I)|``.
3. ``joint``: Lens and Frame together on the contrastive losses with the Lens's ``h_neg`` (+ the Lens loss).

Contrastive losses (stages 1 and 3), on batches of whole scene groups so that hard negatives share a batch:
for every observed (caption c, image i) pair, a text->image cross-entropy over i and the batch images whose
known truth for c differs from truth(c, i), and an image->text one over c and the batch captions whose truth
for i differs; computed for the caption-only and for the image-conditioned lambda. Affirmative captions keep
their plain CLIP scores and act as fixed anchors.

Each stage keeps its best epoch on the validation loss and stops after ``patience`` epochs without a new
best, counted once the stage has run ``min_steps`` optimiser steps (small data sets: many short epochs).
After every epoch the whole state goes to ``<out>.partial``; a rerun with the same settings resumes there.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sayno.base.training import (
    EarlyStopping,
    OtherRunState,
    ResumeFile,
    cosine_schedule,
    data_record,
    fit_epoch,
    restore_rng,
    run_key,
)
from sayno.config import from_mapping
from sayno.data import report_bad_rows
from sayno.errors import InputError
from sayno.glasses.config import GlassesConfig
from sayno.glasses.data import FeatureSet, Sources, build_features, train_val_sources
from sayno.glasses.model import Glasses
from sayno.glasses.modules import glasses_logits
from sayno.runtime import torch_threads

STAGES = ("detector", "frame", "lens", "joint")
RESUME_FORMAT = "glasses-resume-2"  # part of the run key: resume files of older layouts are ignored


@dataclass
class TrainConfig:
    """Optimisation settings. ``epochs``: per stage, in :data:`STAGES` order."""

    epochs: tuple[int, int, int, int] = (20, 10, 10, 20)
    batch_groups: int | None = None  # None: auto_batch_groups(number of training scene groups)
    lr: float = 1e-3
    detector_lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without a better validation loss; counted only after min_steps
    min_steps: int = 600  # per stage: small data sets get more epochs (low-resource training)
    lens_weight: float = 1.0  # reference Lens loss in the joint stage: keeps h_neg near its object's prompt
    presence_weight: float = 0.0  # presence loss on the Lens (sharper in style, worse across styles)
    val_fraction: float = 0.1
    fraction: float = 1.0
    seed: int = 0
    threads: int = 1  # the modules are small: one thread is fastest, and kind to a shared CPU

    def __post_init__(self) -> None:
        self.epochs = tuple(int(e) for e in self.epochs)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~sayno.errors.InputError` (one line) for a setting that would train on nothing."""
        if len(self.epochs) != len(STAGES) or any(e < 0 for e in self.epochs) or not any(self.epochs):
            raise InputError(f"epochs must be {len(STAGES)} counts >= 0 ({', '.join(STAGES)}), not all 0; "
                             f"got {self.epochs}")
        checks = (("fraction", 0 < self.fraction <= 1, "in (0, 1]"),
                  ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
                  ("lr", self.lr > 0, "> 0"), ("detector_lr", self.detector_lr > 0, "> 0"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"), ("patience", self.patience >= 0, ">= 0"),
                  ("min_steps", self.min_steps >= 0, ">= 0"), ("threads", self.threads >= 1, ">= 1"),
                  ("lens_weight", self.lens_weight >= 0, ">= 0"),
                  ("presence_weight", self.presence_weight >= 0, ">= 0"),
                  ("batch_groups", self.batch_groups is None or self.batch_groups >= 1, ">= 1"))
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """From a dict (a JSON file, a training summary); unknown keys raise :class:`sayno.config.ConfigError`."""
        return from_mapping(cls, data, "Glasses training config")


def auto_batch_groups(n_groups: int, most: int = 32, min_batches: int = 16) -> int:
    """Scene groups per batch: ``most`` (32), fewer when that leaves under ``min_batches`` batches per epoch.

    Full world data (3,000 groups) keeps 32; a 5% subset (150 groups) gets 9. Small batches give small data
    sets enough optimiser steps and enough noise between epochs for early stopping to mean something.
    """
    return int(min(most, max(1, n_groups // min_batches)))


@dataclass
class TrainResult:
    glasses: Glasses
    summary: dict = field(default_factory=dict)


class SceneBatches:
    """Batches of whole scene groups: (caption indices, image indices)."""

    def __init__(self, fs: FeatureSet):
        lab = fs.lab
        ok = fs.image_ok.numpy()
        self.group_images: dict[int, list[int]] = {}
        for i, g in enumerate(lab.image_group):
            if ok[i]:
                self.group_images.setdefault(int(g), []).append(i)
        self.image_caps: dict[int, list[int]] = {}
        for c, im in enumerate(lab.home):
            self.image_caps.setdefault(int(im), []).append(c)
        self.groups = np.array(sorted(self.group_images))

    def __call__(self, batch_groups: int, rng: np.random.Generator | None):
        order = self.groups if rng is None else rng.permutation(self.groups)
        for start in range(0, len(order), batch_groups):
            imgs = [i for g in order[start:start + batch_groups] for i in self.group_images[int(g)]]
            caps = [c for i in imgs for c in self.image_caps.get(i, [])]
            if caps:
                yield torch.tensor(caps), torch.tensor(imgs)

    def __len__(self) -> int:
        return len(self.groups)


class _SlotIndex:
    """The slots of a FeatureSet for the configured Lens input."""

    def __init__(self, fs: FeatureSet, lens_input: str):
        lab = fs.lab
        if lens_input == "phrase":
            self.owner = torch.as_tensor(lab.slot_owner)
            self.hedged = torch.as_tensor(lab.slot_hedged).float()
            self.source = fs.slot_source
            self.target = fs.slot_target
            self.from_h = False
            vidx = {n: i for i, n in enumerate(lab.vocabulary)}
            self.obj = torch.tensor([vidx.get(t, -1) for t in lab.slot_target], dtype=torch.long)
        else:  # one slot per negated caption; target: the mean of its objects' embeddings
            owners = sorted(set(lab.slot_owner.tolist()))
            pos = {o: k for k, o in enumerate(owners)}
            tgt = torch.zeros((len(owners), fs.h.shape[1]))
            tgt.index_add_(0, torch.tensor([pos[o] for o in lab.slot_owner.tolist()], dtype=torch.long),
                           fs.slot_target)
            self.owner = torch.tensor(owners, dtype=torch.long)
            self.hedged = torch.as_tensor(lab.hedged[owners]).float() if owners else torch.zeros(0)
            self.target = F.normalize(tgt, dim=-1)
            self.source = fs.h[self.owner] if owners else torch.zeros((0, fs.h.shape[1]))
            self.from_h = True
            self.obj = torch.full((len(owners),), -1, dtype=torch.long)  # several objects: no presence loss
        # caption -> its slots (CSR)
        n = len(lab.texts)
        counts = torch.bincount(self.owner, minlength=n) if len(self.owner) else torch.zeros(n, dtype=torch.long)
        self.order = torch.argsort(self.owner, stable=True) if len(self.owner) else torch.zeros(0, dtype=torch.long)
        self.ptr = torch.zeros(n + 1, dtype=torch.long)
        self.ptr[1:] = torch.cumsum(counts, 0)

    def of(self, caps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot indices, local owner index within ``caps``)."""
        idx, own = [], []
        for k, c in enumerate(caps.tolist()):
            a, b = int(self.ptr[c]), int(self.ptr[c + 1])
            if b > a:
                idx.append(self.order[a:b])
                own.append(torch.full((b - a,), k, dtype=torch.long))
        if not idx:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return torch.cat(idx), torch.cat(own)


def _masked_ce(logits: torch.Tensor, cand: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log softmax(logits[cand]) at ``target`` (which is always a candidate)."""
    z = logits.masked_fill(~cand, float("-inf"))
    return (torch.logsumexp(z, dim=1) - logits.gather(1, target.unsqueeze(1)).squeeze(1)).mean()


def contrastive_loss(S: torch.Tensor, T: torch.Tensor, pc: torch.Tensor, pi: torch.Tensor,
                     hedged: torch.Tensor | None = None) -> torch.Tensor:
    """Text->image and image->text losses for positive pairs (pc, pi) of the (C, I) score matrix S.

    T: (C, I) truth (1 / 0 / -1 unknown). Candidates differ in known truth from the positive pair's.
    hedged: (C,) bool; hedged captions take part in the text->image loss only ("which image was this
    caption written for?", where their error rate shows) and are left out of the image->text loss, where
    they would be hard negatives of every true caption.
    """
    if len(pc) == 0:
        return S.sum() * 0
    tp = T[pc, pi].unsqueeze(1)
    rows = T[pc]  # (P, I)
    cand_t2i = (rows >= 0) & (rows != tp)
    cand_t2i[torch.arange(len(pc)), pi] = True
    t2i = _masked_ce(S[pc], cand_t2i, pi)
    if hedged is not None and hedged.any():
        keep = ~hedged[pc]
        pc, pi, tp = pc[keep], pi[keep], tp[keep]
        if len(pc) == 0:
            return t2i
    cols = T[:, pi].T  # (P, C)
    cand_i2t = (cols >= 0) & (cols != tp)
    if hedged is not None:
        cand_i2t &= ~hedged.unsqueeze(0)
    cand_i2t[torch.arange(len(pc)), pc] = True
    return 0.5 * (t2i + _masked_ce(S[:, pi].T, cand_i2t, pc))


def lens_loss(h_neg: torch.Tensor, target: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``(1 - cos(h_neg, obj)) + |cos(obj, I) - cos(h_neg, I)|`` (all normalised), mean over slots."""
    if len(h_neg) == 0:
        return h_neg.sum() * 0
    return ((1 - (h_neg * target).sum(-1)) + ((target * image).sum(-1) - (h_neg * image).sum(-1)).abs()).mean()


def presence_loss(h_neg: torch.Tensor, obj: torch.Tensor, images: torch.Tensor, O: torch.Tensor,
                  known: torch.Tensor, scale: float, pooled: bool = True) -> torch.Tensor:
    """Make ``h_neg`` a good detector of its object: on every image, the ``h_neg`` of each present object must
    outscore (softmax) those of all absent objects in the batch.

    h_neg: (P, D); obj: (P,) vocabulary index of each slot's object (-1: unknown); images: (M, D); O: (M, V)
    objects of each image; known: (M,) whether they are known.
    """
    ok = obj >= 0
    if int(ok.sum()) < 2:
        return h_neg.sum() * 0
    C = scale * images @ h_neg[ok].T  # (M, P')
    present = (O[:, obj[ok]] > 0) & known.unsqueeze(1)
    absent = (O[:, obj[ok]] == 0) & known.unsqueeze(1)
    lse = torch.logsumexp(C.masked_fill(~absent, float("-inf")), dim=1, keepdim=True)  # (M, 1)
    valid = present & absent.any(1, keepdim=True)
    if not valid.any():
        return h_neg.sum() * 0
    within = F.softplus(lse - C)[valid].mean()
    if not pooled:
        return within
    # pooled: every present (object, image) pair above the absent pairs of the whole batch (one threshold fits all)
    lse_all = torch.logsumexp(C[absent], dim=0)
    return 0.5 * (within + F.softplus(lse_all - C[present]).mean())


class _Runner:
    """Losses and metrics of one stage on one batch."""

    def __init__(self, g: Glasses, fs: FeatureSet, slots: _SlotIndex, scale: float, lens_weight: float,
                 presence_weight: float = 0.0):
        self.g, self.fs, self.slots, self.scale, self.lens_weight = g, fs, slots, scale, lens_weight
        self.presence_weight = presence_weight

    def _presence(self, hn: torch.Tensor, sl: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
        if self.presence_weight <= 0:
            return hn.sum() * 0
        fs = self.fs
        return self.presence_weight * presence_loss(hn, self.slots.obj[sl], fs.images[imgs], fs.O[imgs],
                                                    fs.img_known[imgs], self.scale)

    def h_neg(self, sl: torch.Tensor, use_lens: bool) -> torch.Tensor:
        if not use_lens:
            return self.slots.target[sl]
        owner = self.slots.owner[sl]
        return self.g.lens(self.fs.layers[owner], self.slots.source[sl])

    def batch(self, stage: str, caps: torch.Tensor, imgs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        fs, g = self.fs, self.g
        if stage == "detector":
            logit = g.detector(fs.layers[caps])
            y = torch.as_tensor(fs.lab.is_negated)[caps].float()
            loss = F.binary_cross_entropy_with_logits(logit, y)
            return loss, {"det_acc": float(((logit > 0).float() == y).float().mean())}
        sl, own = self.slots.of(caps)
        owner = self.slots.owner[sl]
        home = torch.as_tensor(fs.lab.home)[owner]
        if stage == "lens":
            hn = self.h_neg(sl, True)
            loss = lens_loss(hn, self.slots.target[sl], fs.images[home]) + self._presence(hn, sl, imgs)
            return loss, {"lens_cos": float((hn.detach() * self.slots.target[sl]).sum(-1).mean()) if len(sl) else 1.0}
        hn = self.h_neg(sl, stage == "joint")
        h, I = fs.h[caps], fs.images[imgs]
        base = fs.base[caps] if g.config.base == "affirmative" else h  # rows without slots: base == h
        T = fs.truth(caps, imgs)
        local = {int(i): k for k, i in enumerate(imgs.tolist())}
        obs = torch.as_tensor(fs.lab.observed)[caps]
        home_c = torch.as_tensor(fs.lab.home)[caps]
        pc = torch.nonzero(obs).squeeze(-1)  # every caption's home image is in its batch
        pi = torch.tensor([local[int(home_c[k])] for k in pc.tolist()], dtype=torch.long)
        logit, tau = g.frame.text_params(base[own], hn, h[own], self.slots.hedged[sl])
        S_text = glasses_logits(base, I, hn, g.frame.lam(logit), own, tau, self.scale, g.clamp)
        # the image-conditioned path refines the caption-only one: it trains the image part of the Frame only
        logit_i, tau_i = g.frame.image_params(base[own], hn.detach(), I, logit.detach(), tau.detach())
        beta = g.frame.beta(base[own], hn.detach(), h[own], self.slots.hedged[sl])
        S_img = glasses_logits(base, I, hn.detach(), g.frame.lam(logit_i), own, tau_i, self.scale, g.clamp, beta)
        hedged = torch.as_tensor(fs.lab.hedged)[caps]
        loss = 0.5 * (contrastive_loss(S_text, T, pc, pi, hedged) + contrastive_loss(S_img, T, pc, pi, hedged))
        metrics = {}
        if stage == "joint":
            loss = loss + self._presence(hn, sl, imgs)
            if self.lens_weight > 0:
                loss = loss + self.lens_weight * lens_loss(hn, self.slots.target[sl], fs.images[home])
        if not torch.is_grad_enabled():
            metrics = _pair_metrics(S_text, S_img, T, pc, pi)
        return loss, metrics


def _pair_metrics(S_text: torch.Tensor, S_img: torch.Tensor, T: torch.Tensor, pc: torch.Tensor,
                  pi: torch.Tensor) -> dict:
    """Validation accuracies: image->text pairs (true vs false caption on one image, image-conditioned) and
    text->image hard negatives (true image vs every false image in the batch, caption-only)."""
    true_pos = T[pc, pi] == 1
    pc, pi = pc[true_pos], pi[true_pos]
    if len(pc) == 0:
        return {}
    cols_false = T[:, pi].T == 0  # (P, C)
    s_pos = S_img[pc, pi].unsqueeze(1)
    wins = ((S_img[:, pi].T < s_pos) | ~cols_false).all(1)
    rows_false = T[pc] == 0
    t_pos = S_text[pc, pi].unsqueeze(1)
    t_wins = ((S_text[pc] < t_pos) | ~rows_false).all(1)
    return {"i2t_acc": float(wins.float().mean()), "t2i_acc": float(t_wins.float().mean())}


def _stage_params(model: Glasses, stage: str) -> list[torch.nn.Parameter]:
    """The parameters a stage trains."""
    if stage == "detector":
        return list(model.detector.parameters())
    if stage == "lens":
        return list(model.lens.parameters())
    params = [p for p in model.frame.parameters() if p.requires_grad]
    if stage == "joint":
        params += list(model.lens.parameters())
    return params


def evaluate_stage(runner, stage: str, batches: SceneBatches, batch_groups: int, model: torch.nn.Module) -> dict:
    """Mean validation loss (and metrics) of ``stage``, weighted by captions per batch: ``runner.batch(stage,
    captions, images) -> (loss, {metric: value})`` over ``batches(batch_groups, None)``, ``model`` in eval mode
    (sayno's trainer and the paper preset's, :mod:`sayno.glasses.paper_train`)."""
    model.eval()
    losses, weights, metrics = [], [], {}
    with torch.no_grad():
        for caps, imgs in batches(batch_groups, None):
            loss, m = runner.batch(stage, caps, imgs)
            losses.append(float(loss))
            weights.append(len(caps))
            for k, v in m.items():
                metrics.setdefault(k, []).append((v, len(caps)))
    out = {"loss": float(np.average(losses, weights=weights)) if losses else float("nan")}
    for k, vals in metrics.items():
        out[k] = float(np.average([v for v, _ in vals], weights=[w for _, w in vals]))
    return out


@dataclass
class _Data:
    """Training and validation sources and their features."""

    train: Sources
    val: Sources
    features: FeatureSet
    val_features: FeatureSet
    seconds: float


def _prepare_data(backbone, data: str | Path | Sources, val_data: str | Path | Sources | None,
                  config: GlassesConfig, settings: TrainConfig, cache, progress: bool,
                  log: Callable[[str], None]) -> _Data:
    """Read the sources (reporting bad rows) and encode them with the frozen backbone."""
    started = time.time()
    src, val_src = train_val_sources(data, val_data, val_fraction=settings.val_fraction,
                                     fraction=settings.fraction, seed=settings.seed)
    log(f"data: {len(src.captions)} training captions on {len(src.images)} images, "
        f"{len(val_src.captions)} validation captions ({', '.join(Path(f).name for f in src.files)})")
    bad = list(dict.fromkeys(src.bad_rows + val_src.bad_rows))
    if bad:
        log(f"{len(bad)} bad row(s) skipped")
        report_bad_rows(bad)
    features = build_features(src, backbone, prompt=config.prompt, cache=cache, progress=progress)
    val_features = build_features(val_src, backbone, prompt=config.prompt, cache=cache, progress=progress)
    seconds = time.time() - started
    log(f"features: {seconds:.1f}s; labels {json.dumps(features.lab.stats)}")
    return _Data(src, val_src, features, val_features, seconds)


class _Run:
    """One training run: the model, its data, batches, random state, resume file and history."""

    def __init__(self, backbone, config: GlassesConfig, settings: TrainConfig, data: _Data, resume: ResumeFile,
                 log: Callable[[str], None]):
        self.settings, self.resume, self.log = settings, resume, log
        self.model = Glasses(config, backbone)
        self.model.frame.set_bank(data.features.vocab_feats)
        scale = float(backbone.logit_scale)
        self.runner = _Runner(self.model, data.features, _SlotIndex(data.features, config.lens_input), scale,
                              settings.lens_weight, settings.presence_weight)
        self.val_runner = _Runner(self.model, data.val_features, _SlotIndex(data.val_features, config.lens_input),
                                  scale, settings.lens_weight, settings.presence_weight)
        self.batches, self.val_batches = SceneBatches(data.features), SceneBatches(data.val_features)
        self.batch_groups = settings.batch_groups or auto_batch_groups(len(self.batches))
        self.rng = np.random.default_rng(settings.seed)
        self.history: list[dict] = []

    def restore(self, state: dict) -> None:
        """Continue from a saved state: weights, history and random state."""
        self.model.load_state_dict(state["model"])
        self.history = state["history"]
        restore_rng(state, self.rng)

    def save(self, stage_index: int, epoch: int, optimizer: torch.optim.Optimizer | None = None,
             schedule: torch.optim.lr_scheduler.LRScheduler | None = None, stop: EarlyStopping | None = None) -> None:
        """Write the resume state: ``epoch`` -1 and no optimiser mean "stage ``stage_index`` starts afresh"."""
        self.resume.save({"stage": stage_index, "epoch": epoch, "model": self.model.state_dict(),
                          "opt": optimizer.state_dict() if optimizer is not None else None,
                          "sched": schedule.state_dict() if schedule is not None else None,
                          "stop": stop.state_dict() if stop is not None else None, "history": self.history},
                         rng=self.rng)

    def train_stage(self, index: int, saved: dict | None) -> None:
        """Train stage ``STAGES[index]`` (from ``saved``, its interrupted state, when given); keeps its best
        epoch on the validation loss."""
        stage, settings = STAGES[index], self.settings
        params = _stage_params(self.model, stage)
        optimizer = torch.optim.AdamW(params, lr=settings.detector_lr if stage == "detector" else settings.lr,
                                      weight_decay=settings.weight_decay)
        n_batches = math.ceil(len(self.batches) / self.batch_groups)
        n_epochs = max(settings.epochs[index], math.ceil(settings.min_steps / max(n_batches, 1)))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(n_epochs * n_batches))
        stop = EarlyStopping(settings.patience, settings.min_steps, min_delta=1e-5)
        first_epoch = 0
        if saved is not None:
            optimizer.load_state_dict(saved["opt"])
            schedule.load_state_dict(saved["sched"])
            stop.load_state_dict(saved["stop"])
            first_epoch = saved["epoch"] + 1
        for epoch in range(first_epoch, n_epochs):
            if stop.should_stop(epoch * n_batches):
                break
            started = time.time()
            self.model.train()
            train_loss = fit_epoch(self.batches(self.batch_groups, self.rng),
                                   lambda caps, imgs: self.runner.batch(stage, caps, imgs)[0],
                                   optimizer, schedule, params, max_grad_norm=5.0)
            val = evaluate_stage(self.val_runner, stage, self.val_batches, self.batch_groups, self.model)
            improved = stop.update(val["loss"], self.model)
            entry = {"stage": stage, "epoch": epoch + 1, "train_loss": round(train_loss, 5),
                     **{f"val_{k}": round(v, 5) for k, v in val.items()}, "seconds": round(time.time() - started, 2),
                     "best": improved}
            self.history.append(entry)
            self.save(index, epoch, optimizer, schedule, stop)
            self.log(f"{stage:8s} epoch {epoch + 1:2d}/{n_epochs}  train {entry['train_loss']:.4f}  "
                     + "  ".join(f"{k[4:]} {v:.4f}" for k, v in entry.items() if k.startswith("val_"))
                     + f"  {entry['seconds']:.1f}s" + ("  *" if improved else ""))
        stop.restore_best(self.model)
        self.save(index + 1, -1)  # the stage is done: after a restart the next one starts from its epoch 0


def _saved_state(resume: ResumeFile, enabled: bool, log: Callable[[str], None]) -> dict | None:
    """The resume state of this run, if resuming is on and there is one (another run's is ignored)."""
    if not enabled:
        return None
    try:
        state = resume.load()
    except OtherRunState:
        log(f"ignoring {resume.path}: it belongs to a run with other settings")
        return None
    if state is not None:
        stage = (STAGES + ("done",))[state["stage"]]
        log(f"resuming from {resume.path}: stage {stage}, epoch {state['epoch'] + 2}")
    return state


def train_glasses(backbone, data: str | Path | Sources, out: str | Path, *, config: GlassesConfig | None = None,
                  train: TrainConfig | None = None, val_data: str | Path | Sources | None = None,
                  resume: bool = True, cache=None, log: Callable[[str], None] = print,
                  progress: bool = False, overwrite: bool = False) -> TrainResult:
    """Train Glasses for ``backbone`` on ``data`` and save the checkpoint to ``out`` (an existing checkpoint is
    refused unless ``overwrite``: a finished run is never replaced by accident).

    data: a world folder (its ``*_train.csv``; validation from ``*_val.csv`` when present), CSV file(s), or
    :class:`Sources`. val_data: explicit validation data; otherwise ``val_fraction`` of the scene groups.
    Runs on ``train.threads`` torch threads and restores the caller's setting afterwards.
    """
    settings = train or TrainConfig()
    settings.validate()
    out = check_output_file(out, overwrite)
    if config is not None:
        check_model_config(config)
    with torch_threads(settings.threads):
        return _train(backbone, data, out, config, settings, val_data, resume, cache, log, progress)


def check_output_file(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as a checkpoint path that can be written: not a folder, its folder creatable and writable, not an
    existing file unless ``overwrite``.

    Checked before any work (a run must not fail after training). Raises :class:`~sayno.errors.InputError`."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; --out is the checkpoint file to write (e.g. {out / 'glasses.safetensors'})")
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite (overwrite=True) to train again and replace it")
    parent = out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise InputError(f"{out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot write into {existing} (permission denied)")
    return out


def check_model_config(config: GlassesConfig) -> None:
    """Raise :class:`~sayno.errors.InputError` for model sizes that cannot train (``hidden`` 0, ...)."""
    for name in ("hidden", "detector_hidden"):
        if int(getattr(config, name)) < 1:
            raise InputError(f"{name} must be >= 1, got {getattr(config, name)!r}")
    if not config.lambda_max > 0:
        raise InputError(f"lambda_max must be > 0, got {config.lambda_max!r}")


def _train(backbone, data: str | Path | Sources, out: Path, config: GlassesConfig | None, settings: TrainConfig,
           val_data: str | Path | Sources | None, resume: bool, cache, log: Callable[[str], None],
           progress: bool) -> TrainResult:
    started = time.time()
    config = config or GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers)
    out.parent.mkdir(parents=True, exist_ok=True)  # the resume file lives beside the checkpoint
    if resume:  # a planted or foreign .partial is refused before any work (issue 29)
        ResumeFile(Path(str(out) + ".partial"), "").check()
    prepared = _prepare_data(backbone, data, val_data, config, settings, cache, progress, log)
    key = run_key(asdict(config), asdict(settings), backbone.fingerprint, sorted(prepared.train.files),
                  len(prepared.train.captions), RESUME_FORMAT)
    torch.manual_seed(settings.seed)  # before the model is built: its initial weights depend on it
    run = _Run(backbone, config, settings, prepared, ResumeFile(Path(str(out) + ".partial"), key), log)
    state = _saved_state(run.resume, resume, log)
    if state is not None:
        run.restore(state)
    start_stage = state["stage"] if state is not None else 0
    for index in range(start_stage, len(STAGES)):
        if settings.epochs[index] <= 0:
            continue
        interrupted = state is not None and index == state["stage"] and state["opt"] is not None
        run.train_stage(index, state if interrupted else None)
        state = None
    return _finish(run, prepared, out, started)


def _finish(run: _Run, prepared: _Data, out: Path, started: float) -> TrainResult:
    """Final validation, summary, checkpoint; removes the resume file."""
    model = run.model
    model.eval()
    final = {stage: evaluate_stage(run.val_runner, stage, run.val_batches, run.batch_groups, model)
             for stage in ("detector", "joint")}
    summary = {**data_record(prepared.train.files, prepared.val.files),  # relative paths, no machine's
               "labels": prepared.features.lab.stats, "val_labels": prepared.val_features.lab.stats,
               "train": {**asdict(run.settings), "batch_groups": run.batch_groups}, "history": run.history,
               "final_val": final, "seconds": round(time.time() - started, 1),
               "feature_seconds": round(prepared.seconds, 1), "tau0": float(model.frame.tau0.detach()),
               "logit_scale": model.logit_scale,
               "bad_rows": len(set(prepared.train.bad_rows + prepared.val.bad_rows))}
    model.save(out, training=summary)
    run.resume.remove()
    run.log(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) in {summary['seconds']:.0f}s")
    return TrainResult(model, summary)
