"""A fast proxy for the embedded CLIP's unseen-style problem: which image tower and which training-time change
lets a model trained on three emoji art styles recognise a fourth?

    python scripts/style_proxy.py --tower rn --steps 1200 --threads 1 [--vary 1 | --palette 0.5 | --mixstyle]

Trains the image tower of the embedded CLIP's architecture (``--tower vit``, the shipped one: ViT, 64x64, patch 8,
width 128, 4 layers) or open_clip's ``ModifiedResNet`` (``--tower rn``: layers 1,1,1,1, width 32, 5.3 M
parameters; the tower of open_clip's RN50 family, scaled down) with a linear head on its unit-norm 128-d output to
classify single-object scenes of the 185 pretraining concepts (cross-entropy, logit scale 20, AdamW lr 1e-3, wd
0.05, 50 warm-up steps, cosine, batch 128), each scene drawn in openmoji, noto or twemoji at random (``--styles``
to change them). Every 200 steps it prints the accuracy on 740 held-out scenes in openmoji, twemoji and fluent
(never trained on). Classification converges in a fraction of the CLIP run's steps, so towers and augmentations
can be compared to the point where the training styles are learned.

Training-time options: ``--vary S`` draws every glyph through ``train_embedded.vary_glyph`` (colour, outline, blur,
posterise, mirror, rotation, squash); ``--palette P`` recolours a share P of the glyphs with six random colours
(shape and the layout of the colour regions kept, the colours gone); ``--mixstyle`` adds MixStyle (Zhou et al.,
ICLR 2021: per-instance channel statistics mixed across the batch, p 0.5, Beta(0.1, 0.1)) after the ResNet's
first three stages, at training only. Used for docs/RESULTS.md, "A three-style embedded CLIP".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_embedded import CONFIG, render_recoloured, render_varied, to_pixels

from sayno.world import get_style, make_scene, pretrain_concepts, render_scene
from sayno.world.styles import drawable_concepts

TOWERS = {
    "vit": CONFIG["vision_cfg"],
    "rn": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 32, "head_width": 64},
}


def mixstyle_hook(gen: torch.Generator):
    """A forward hook that applies MixStyle to a (B, C, H, W) output in training mode with probability 0.5."""
    def hook(module, inputs, out):
        if not module.training or torch.rand(1, generator=gen).item() > 0.5:
            return out
        b = out.shape[0]
        mu = out.mean((2, 3), keepdim=True).detach()
        sig = (out.var((2, 3), keepdim=True) + 1e-6).sqrt().detach()
        lam = torch.distributions.Beta(0.1, 0.1).sample((b, 1, 1, 1))
        perm = torch.randperm(b, generator=gen)
        return (out - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]
    return hook


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tower", choices=sorted(TOWERS), default="rn")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--styles", default="openmoji,noto,twemoji",
                    help="training styles; a style lacking a concept draws it in the first style")
    ap.add_argument("--vary", type=float, default=0.0)
    ap.add_argument("--palette", type=float, default=0.0)
    ap.add_argument("--mixstyle", action="store_true")
    args = ap.parse_args()
    if args.vary > 0 and args.palette > 0:
        ap.error("--vary and --palette each choose how glyphs are drawn: give at most one")
    if args.mixstyle and args.tower != "rn":
        ap.error("--mixstyle needs --tower rn (it mixes convolutional feature maps)")

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = {k: v for k, v in CONFIG.items() if k != "preprocess_cfg"}
    cfg["vision_cfg"] = TOWERS[args.tower]
    vis = CLIP(**cfg).visual
    if args.mixstyle:
        hook = mixstyle_hook(torch.Generator().manual_seed(5))
        for layer in (vis.layer1, vis.layer2, vis.layer3):
            layer.register_forward_hook(hook)
    print(args.tower, sum(p.numel() for p in vis.parameters()) / 1e6, "M params", flush=True)
    head = torch.nn.Linear(CONFIG["embed_dim"], 185)
    opt = torch.optim.AdamW(list(vis.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=0.05)
    concepts = pretrain_concepts()
    style_names = [s.strip() for s in args.styles.split(",") if s.strip()]
    all_names = {c.name for c in concepts}
    lacks = {name: all_names - {c.name for c in drawable_concepts(name, concepts)} for name in style_names}
    mean = torch.tensor(CONFIG["preprocess_cfg"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(CONFIG["preprocess_cfg"]["std"]).view(1, 3, 1, 1)

    def draw(concept, names: list[str], rng: np.random.Generator, train: bool) -> Image.Image:
        """One single-object scene of ``concept`` in one of ``names`` (the first style where the drawn one lacks
        the concept), through the training-time change when ``train``."""
        scene = make_scene(((concept, 1),), rng)
        name = names[rng.integers(len(names))]
        style = get_style(style_names[0] if concept.name in lacks.get(name, ()) else name)
        if train and args.palette > 0:
            return render_recoloured(scene, style, rng, args.palette)
        if train and args.vary > 0:
            return render_varied(scene, style, rng, args.vary)
        return render_scene(scene, style)

    def batch(n: int, names: list[str], rng: np.random.Generator, train: bool):
        ys = rng.integers(0, len(concepts), n)
        return to_pixels([draw(concepts[y], names, rng, train) for y in ys], mean, std), torch.from_numpy(ys)

    rng = np.random.default_rng(0)
    test_rng = np.random.default_rng(123)
    tests = {name: batch(740, [name], test_rng, False) for name in ("openmoji", "twemoji", "fluent")}

    def evaluate() -> dict[str, float]:
        vis.eval()
        with torch.no_grad():
            out = {k: round((head(F.normalize(vis(x), dim=-1)).argmax(1) == y).float().mean().item(), 3)
                   for k, (x, y) in tests.items()}
        vis.train()
        return out

    t0 = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        x, y = batch(128, style_names, rng, True)
        loss = F.cross_entropy(head(F.normalize(vis(x), dim=-1)) * 20, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            entry = {"step": step, "loss": round(loss.item(), 3), "min": round((time.time() - t0) / 60, 1)}
            if step % 200 == 0 or step == args.steps - 1:
                entry.update(evaluate())
            print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
