"""The baseline Glasses is compared with: fine-tune the CLIP's *text tower* on the same negation data.

ConCLIP / NegBench style: a trainable copy of the text tower, image tower and logit scale frozen, trained with
the same contrastive losses and truth masks as Glasses (:func:`sayno.glasses.train.contrastive_loss`) on the
plain score ``s*cos(text, image)``. The result is a scorer with the usual API that re-encodes every caption
with the fine-tuned tower (it cannot use the frozen CLIP's cached text features), so the benchmark table shows
what fine-tuning gains on negation and what it costs in zero-shot accuracy and affirmative retrieval.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from sayno.eval.scoring import TextBatch
from sayno.glasses.data import Sources, build_features, train_val_sources
from sayno.glasses.model import GlassesError
from sayno.glasses.train import _Batches, contrastive_loss

FORMAT = "sayno-finetuned-text"


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


class FinetunedText:
    """A backbone's frozen images with a fine-tuned text tower: a :class:`~sayno.eval.scoring.Scorer`."""

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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().contiguous().clone() for k, v in self.tower.state_dict().items()}
        meta = {"sayno.format": FORMAT, "sayno.backbone_fingerprint": self.backbone.fingerprint,
                "sayno.backbone_spec": str(getattr(self.backbone, "spec", "")),
                "sayno.training": json.dumps(training or {})}
        save_file(state, str(path), metadata=meta)
        return path


def load_finetuned(path: str | Path, backbone, name: str = "CLIP text-finetuned") -> FinetunedText:
    """Load a fine-tuned text tower for ``backbone`` (refuses another backbone)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    if meta.get("sayno.format") != FORMAT:
        raise GlassesError(f"{path}: not a fine-tuned text tower ({meta.get('sayno.format')!r})")
    if meta.get("sayno.backbone_fingerprint") != backbone.fingerprint:
        raise GlassesError(f"{path} was fine-tuned from another backbone "
                           f"({meta.get('sayno.backbone_fingerprint')} != {backbone.fingerprint})")
    tower = copy.deepcopy(backbone.text_tower())
    tower.load_state_dict(state, strict=True)
    for p in tower.parameters():
        p.requires_grad_(False)
    return FinetunedText(backbone, tower, name=name)


def finetune_text(backbone, data: str | Path | Sources, out: str | Path, *, config: FinetuneConfig | None = None,
                  val_data: str | Path | Sources | None = None, cache=None,
                  log: Callable[[str], None] = print) -> FinetunedText:
    """Fine-tune a copy of ``backbone``'s text tower on negation data; keeps the best epoch on validation."""
    t0 = time.time()
    fc = config or FinetuneConfig()
    torch.set_num_threads(fc.threads)
    torch.manual_seed(fc.seed)
    src, val_src = train_val_sources(data, val_data, val_fraction=fc.val_fraction, fraction=fc.fraction,
                                     seed=fc.seed)
    fs = build_features(src, backbone, cache=cache)
    vfs = build_features(val_src, backbone, cache=cache)
    tokens = backbone.tokenize(fs.lab.texts)
    vtokens = backbone.tokenize(vfs.lab.texts)
    tower = copy.deepcopy(backbone.text_tower())
    params = [p for p in tower.parameters()]
    for p in params:
        p.requires_grad_(True)
    scale = float(backbone.logit_scale)
    opt = torch.optim.AdamW(params, lr=fc.lr, weight_decay=fc.weight_decay)
    batches, vbatches = _Batches(fs), _Batches(vfs)
    steps = fc.epochs * math.ceil(len(batches) / fc.batch_groups)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / fc.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = np.random.default_rng(fc.seed)

    def loss_of(tok: torch.Tensor, caps: torch.Tensor, imgs: torch.Tensor, feats) -> torch.Tensor:
        t = F.normalize(tower(tok[caps]).float(), dim=-1)
        S = scale * t @ feats.images[imgs].T
        T = feats.truth(caps, imgs)
        local = {int(i): k for k, i in enumerate(imgs.tolist())}
        obs = torch.as_tensor(feats.lab.observed)[caps]
        home = torch.as_tensor(feats.lab.home)[caps]
        pc = torch.nonzero(obs).squeeze(-1)
        pi = torch.tensor([local[int(home[k])] for k in pc.tolist()], dtype=torch.long)
        # as for Glasses: hedged captions (observed even where false) take part in the text->image loss only
        hedged = torch.as_tensor(feats.lab.hedged)[caps]
        return contrastive_loss(S, T, pc, pi, hedged)

    def validate() -> float:
        tower.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for caps, imgs in vbatches(fc.batch_groups, None):
                tot += float(loss_of(vtokens, caps, imgs, vfs)) * len(caps)
                n += len(caps)
        return tot / max(n, 1)

    best, best_loss, history = None, validate(), []
    log(f"fine-tune: {len(fs.lab.texts)} captions, {steps} steps; val loss before {best_loss:.4f}")
    for epoch in range(fc.epochs):
        tower.train()
        te, tl, tn = time.time(), 0.0, 0
        for caps, imgs in batches(fc.batch_groups, rng):
            loss = loss_of(tokens, caps, imgs, fs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            tl += float(loss.detach()) * len(caps)
            tn += len(caps)
        val = validate()
        history.append({"epoch": epoch + 1, "train_loss": tl / max(tn, 1), "val_loss": val,
                        "seconds": round(time.time() - te, 1)})
        log(f"fine-tune epoch {epoch + 1}/{fc.epochs}  train {tl / max(tn, 1):.4f}  val {val:.4f}  "
            f"{time.time() - te:.0f}s")
        if val < best_loss:
            best_loss, best = val, {k: v.detach().clone() for k, v in tower.state_dict().items()}
    if best is not None:
        tower.load_state_dict(best)
    for p in params:
        p.requires_grad_(False)
    ft = FinetunedText(backbone, tower.eval())
    ft.save(out, training={"config": asdict(fc), "history": history, "seconds": round(time.time() - t0, 1),
                           "data": [str(f) for f in src.files]})
    log(f"saved {out} in {time.time() - t0:.0f}s")
    return ft
