"""A tiny random-initialised open_clip CLIP as a :class:`~sayno.backbones.base.Backbone`, for CLIPN's tests.

It has learned nothing; it only exercises the machinery. Seeded: equal seeds give equal fingerprints.
"""

from __future__ import annotations

import numpy as np
import torch
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from sayno.backbones.base import Backbone, TextTower, weights_fingerprint

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class _Tower(TextTower):
    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model
        self.width = model.transformer.width
        self.context_length = model.context_length
        self.num_layers = len(model.transformer.resblocks)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(tokens) + self.model.positional_embedding

    def forward(self, tokens, extra=None, all_layers=False):
        m = self.model
        x = self.embed(tokens)
        if extra is not None:
            x = x + extra
        outs = []
        for block in m.transformer.resblocks:
            x = block(x, attn_mask=m.attn_mask)
            outs.append(x)
        seq = torch.stack(outs, 1) if all_layers else x.unsqueeze(1)
        seq = m.ln_final(seq)
        pooled = seq[torch.arange(seq.shape[0]), :, tokens.argmax(dim=-1)]
        proj = pooled @ m.text_projection
        return proj if all_layers else proj[:, 0]


class TinyBackbone(Backbone):
    """32x32 images, text width 32 with ``layers`` layers, joint space ``embed_dim``, context 16."""

    def __init__(self, seed: int = 0, embed_dim: int = 16, layers: int = 2, logit_scale: float = 10.0):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.model = CLIP(embed_dim=embed_dim,
                              vision_cfg={"image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
                                          "head_width": 16},
                              text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                                        "layers": layers}).eval()
            self.model.logit_scale.data.fill_(float(np.log(logit_scale)))
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._tower = _Tower(self.model)
        self._tok = SimpleTokenizer(context_length=16)
        self.spec = f"tiny-clipn:{seed}"
        self.fingerprint = weights_fingerprint(self.model.state_dict())
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.embed_dim = embed_dim
        self.context_length = 16
        self.num_text_layers = layers
        self.image_size = 32
        self.image_mean, self.image_std = MEAN, STD

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        a = np.asarray(image.convert("RGB").resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255.0
        x = torch.from_numpy(a).permute(2, 0, 1)
        return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)

    def _tokenize(self, texts):
        return self._tok(texts), [len(self._tok.encode(t)) + 2 for t in texts]

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def text_tower(self) -> TextTower:
        return self._tower


def synthetic_pairs(backbone: TinyBackbone, n: int = 24, seed: int = 0):
    """A :class:`~sayno.clipn.train.TrainData` of n captions ("a dog", ...) whose image features are their
    text features plus noise: training data without images."""
    from sayno.clipn.losses import caption_ids
    from sayno.clipn.train import TrainData

    rng = np.random.default_rng(seed)
    words = ["dog", "cat", "car", "tree", "apple", "fish", "house"]
    caps = [f"a {words[i % len(words)]}" for i in range(n)]
    g = backbone.encode_text(caps)
    f = torch.nn.functional.normalize(g + 0.3 * torch.from_numpy(rng.normal(size=tuple(g.shape))).float(), dim=-1)
    return TrainData(f, g, backbone.tokenize(caps), caps, caption_ids(caps), f"synthetic-{n}-{seed}")


def one_step_grads(backbone: TinyBackbone, data, rows: slice, prompt=3) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of one CLIPN step on ``data`` rows (this process's share of the global batch);
    under an initialised process group the encoder is wrapped in DDP and the loss gathered."""
    from sayno.clipn.losses import gathered_clipn_loss
    from sayno.clipn.model import NoTextEncoder

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
    import os

    from sayno.clipn.train import TrainConfig, train_clipn

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        bb = TinyBackbone(seed=0)
        data = synthetic_pairs(bb, 8)
        local = 8 // world
        loss, grads = one_step_grads(bb, data, slice(rank * local, (rank + 1) * local))
        if rank == 0:
            torch.save({"loss": loss, "grads": grads}, os.path.join(folder, "step.pt"))
        train_clipn(bb, synthetic_pairs(bb, 24), os.path.join(folder, "ddp.safetensors"),
                    TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup=0.1), progress=False)
    finally:
        torch.distributed.destroy_process_group()
