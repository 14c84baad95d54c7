"""A tiny random-initialised open_clip CLIP as a :class:`~sayno.backbones.base.Backbone`, for CLIPN's tests.

It has learned nothing; it only exercises the machinery. Seeded: equal seeds give equal fingerprints.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from sayno.backbones.base import Backbone
from sayno.backbones.open_clip_backbone import OpenClipBackbone
from sayno.backbones.testing import tiny_open_clip
from sayno.clipn.losses import caption_ids, gathered_clipn_loss
from sayno.clipn.model import NoTextEncoder
from sayno.clipn.train import TrainConfig, TrainData, train_clipn
from sayno.runtime import torch_threads


def tiny_backbone(seed: int = 0, embed_dim: int = 16, layers: int = 2, logit_scale: float = 10.0) -> OpenClipBackbone:
    """32x32 images, text width 32 with ``layers`` layers, joint space ``embed_dim``, context 16
    (:func:`sayno.backbones.testing.tiny_open_clip`)."""
    return tiny_open_clip(seed, embed_dim=embed_dim, text_layers=layers, context_length=16,
                          logit_scale=logit_scale, spec=f"tiny-clipn:{seed}")


def synthetic_pairs(backbone: Backbone, n: int = 24, seed: int = 0) -> TrainData:
    """A :class:`~sayno.clipn.train.TrainData` of n captions ("a dog", ...) whose image features are their
    text features plus noise: training data without images."""
    rng = np.random.default_rng(seed)
    words = ["dog", "cat", "car", "tree", "apple", "fish", "house"]
    caps = [f"a {words[i % len(words)]}" for i in range(n)]
    g = backbone.encode_text(caps)
    f = torch.nn.functional.normalize(g + 0.3 * torch.from_numpy(rng.normal(size=tuple(g.shape))).float(), dim=-1)
    return TrainData(f, g, backbone.tokenize(caps), caps, caption_ids(caps), f"synthetic-{n}-{seed}")


def one_step_grads(backbone: Backbone, data: TrainData, rows: slice, prompt=3) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of one CLIPN step on ``data`` rows (this process's share of the global batch);
    under an initialised process group the encoder is wrapped in DDP and the loss gathered."""
    enc = NoTextEncoder.from_backbone(backbone, learn_bias=True)
    with torch.no_grad():  # a non-trivial starting point: random prompts and a bias
        gen = torch.Generator().manual_seed(0)
        enc.prompts.copy_(0.1 * torch.randn(enc.prompts.shape, generator=gen))
        enc.bias.fill_(-0.5)
    model = enc
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        model = torch.nn.parallel.DistributedDataParallel(enc)
    gno = torch.nn.functional.normalize(model(data.tokens_no[rows], prompt), dim=-1)
    loss = gathered_clipn_loss(data.f[rows], data.g[rows], gno, backbone.logit_scale, text_ids=data.text_ids[rows],
                               bias=enc.bias)
    loss["loss"].backward()
    grads = {n: p.grad.detach().clone() for n, p in enc.named_parameters() if p.requires_grad}
    return float(loss["loss"].detach()), grads


def ddp_worker(rank: int, world: int, port: int, folder: str) -> None:  # pragma: no cover - runs in a subprocess
    """One rank of the 2-process test: a gathered step's loss and gradients, then a short training run."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with torch_threads(1):
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
        try:
            bb = tiny_backbone(seed=0)
            data = synthetic_pairs(bb, 8)
            local = 8 // world
            loss, grads = one_step_grads(bb, data, slice(rank * local, (rank + 1) * local))
            if rank == 0:
                torch.save({"loss": loss, "grads": grads}, os.path.join(folder, "step.pt"))
            train_clipn(bb, synthetic_pairs(bb, 24), os.path.join(folder, "ddp.safetensors"),
                        TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup=0.1), progress=False)
        finally:
            torch.distributed.destroy_process_group()
