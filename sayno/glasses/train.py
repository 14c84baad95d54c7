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

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sayno.glasses.data import (
    FeatureSet,
    Sources,
    build_features,
    train_val_sources,
)
from sayno.glasses.model import Glasses, GlassesConfig
from sayno.glasses.modules import glasses_logits

STAGES = ("detector", "frame", "lens", "joint")


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


class _Batches:
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


def _cosine(total: int):
    """Cosine decay from 1 to 0 over ``total`` steps."""
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _stage_params(g: Glasses, stage: str) -> list[torch.nn.Parameter]:
    if stage == "detector":
        return list(g.detector.parameters())
    if stage == "lens":
        return list(g.lens.parameters())
    params = [p for p in g.frame.parameters() if p.requires_grad]
    if stage == "joint":
        params += list(g.lens.parameters())
    return params


def _run_key(config: GlassesConfig, tc: TrainConfig, backbone_fp: str, files: list[str], n: int) -> str:
    blob = json.dumps([asdict(config), asdict(tc), backbone_fp, sorted(files), n], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _evaluate(runner: _Runner, stage: str, batches: _Batches, batch_groups: int, g: Glasses) -> dict:
    g.eval()
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


def train_glasses(backbone, data: str | Path | Sources, out: str | Path, *, config: GlassesConfig | None = None,
                  train: TrainConfig | None = None, val_data: str | Path | Sources | None = None,
                  resume: bool = True, cache=None, log: Callable[[str], None] = print,
                  progress: bool = False) -> TrainResult:
    """Train Glasses for ``backbone`` on ``data`` and save the checkpoint to ``out``.

    data: a world folder (its ``*_train.csv``; validation from ``*_val.csv`` when present), CSV file(s), or
    :class:`Sources`. val_data: explicit validation data; otherwise ``val_fraction`` of the scene groups.
    """
    t0 = time.time()
    tc = train or TrainConfig()
    torch.set_num_threads(tc.threads)
    config = config or GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers)
    out = Path(out)
    src, val_src = train_val_sources(data, val_data, val_fraction=tc.val_fraction, fraction=tc.fraction,
                                     seed=tc.seed)
    log(f"data: {len(src.captions)} training captions on {len(src.images)} images, "
        f"{len(val_src.captions)} validation captions ({', '.join(Path(f).name for f in src.files)})")
    fs = build_features(src, backbone, prompt=config.prompt, cache=cache, progress=progress)
    vfs = build_features(val_src, backbone, prompt=config.prompt, cache=cache, progress=progress)
    t_feat = time.time() - t0
    log(f"features: {t_feat:.1f}s; labels {json.dumps(fs.lab.stats)}")

    g = Glasses(config, backbone)
    g.frame.set_bank(fs.vocab_feats)
    scale = float(backbone.logit_scale)
    runner = _Runner(g, fs, _SlotIndex(fs, config.lens_input), scale, tc.lens_weight, tc.presence_weight)
    vrunner = _Runner(g, vfs, _SlotIndex(vfs, config.lens_input), scale, tc.lens_weight, tc.presence_weight)
    batches, vbatches = _Batches(fs), _Batches(vfs)
    bg = tc.batch_groups or auto_batch_groups(len(batches))
    key = _run_key(config, tc, backbone.fingerprint, src.files, len(src.captions))
    partial = Path(str(out) + ".partial")
    state = None
    if resume and partial.exists():
        state = torch.load(partial, weights_only=False)
        if state.get("key") != key:
            log(f"ignoring {partial}: it belongs to a run with other settings")
            state = None
        else:
            log(f"resuming from {partial}: stage {(STAGES + ('done',))[state['stage']]}, epoch {state['epoch'] + 2}")
    history = state["history"] if state else []
    start_stage = state["stage"] if state else 0
    rng = np.random.default_rng(tc.seed)
    torch.manual_seed(tc.seed)
    if state:
        g.load_state_dict(state["model"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])

    for si, stage in enumerate(STAGES):
        if si < start_stage or tc.epochs[si] <= 0:
            continue
        params = _stage_params(g, stage)
        opt = torch.optim.AdamW(params, lr=tc.detector_lr if stage == "detector" else tc.lr,
                                weight_decay=tc.weight_decay)
        n_batches = math.ceil(len(batches) / bg)
        n_epochs = max(tc.epochs[si], math.ceil(tc.min_steps / max(n_batches, 1)))
        total = n_epochs * n_batches
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(total))
        first_epoch, best, best_loss, bad = 0, None, float("inf"), 0
        if state and si == state["stage"] and state["opt"] is not None:
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            first_epoch, best, bad, best_loss = state["epoch"] + 1, state["best"], state["bad"], state["best_loss"]
        state = None
        for epoch in range(first_epoch, n_epochs):
            if bad >= tc.patience and epoch * n_batches >= tc.min_steps:
                break
            te = time.time()
            g.train()
            tl, tn = 0.0, 0
            for caps, imgs in batches(bg, rng):
                loss, _ = runner.batch(stage, caps, imgs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                sched.step()
                tl += float(loss.detach()) * len(caps)
                tn += len(caps)
            val = _evaluate(vrunner, stage, vbatches, bg, g)
            improved = val["loss"] < best_loss - 1e-5
            if improved:
                best_loss, bad = val["loss"], 0
                best = {k: v.detach().clone() for k, v in g.state_dict().items()}
            else:
                bad += 1
            entry = {"stage": stage, "epoch": epoch + 1, "train_loss": round(tl / max(tn, 1), 5),
                     **{f"val_{k}": round(v, 5) for k, v in val.items()}, "seconds": round(time.time() - te, 2),
                     "best": improved}
            history.append(entry)
            torch.save({"key": key, "stage": si, "epoch": epoch, "model": g.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "best": best, "best_loss": best_loss, "bad": bad,
                        "history": history, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()},
                       str(partial) + ".tmp")
            Path(str(partial) + ".tmp").replace(partial)
            log(f"{stage:8s} epoch {epoch + 1:2d}/{n_epochs}  train {entry['train_loss']:.4f}  "
                + "  ".join(f"{k[4:]} {v:.4f}" for k, v in entry.items() if k.startswith("val_"))
                + f"  {entry['seconds']:.1f}s" + ("  *" if improved else ""))
        if best is not None:
            g.load_state_dict(best)
        # mark the stage done: the next stage starts from its epoch 0 after a restart
        torch.save({"key": key, "stage": si + 1, "epoch": -1, "model": g.state_dict(), "opt": None, "sched": None,
                    "best": None, "best_loss": float("inf"), "bad": 0, "history": history,
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, str(partial) + ".tmp")
        Path(str(partial) + ".tmp").replace(partial)

    g.eval()
    final = {stage: _evaluate(vrunner, stage, vbatches, bg, g) for stage in ("detector", "joint")}
    summary = {"data": [str(f) for f in src.files], "val_data": [str(f) for f in val_src.files],
               "labels": fs.lab.stats, "val_labels": vfs.lab.stats, "train": {**asdict(tc), "batch_groups": bg},
               "history": history, "final_val": final, "seconds": round(time.time() - t0, 1),
               "feature_seconds": round(t_feat, 1), "tau0": float(g.frame.tau0.detach()), "logit_scale": scale}
    g.save(out, training=summary)
    partial.unlink(missing_ok=True)
    log(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) in {summary['seconds']:.0f}s")
    return TrainResult(g, summary)
