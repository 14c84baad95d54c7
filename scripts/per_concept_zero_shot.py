"""Per-concept zero-shot accuracy of a backbone in each art style.

    python scripts/per_concept_zero_shot.py runs/embedded-v5 [--per-class 6] [--seed 7]

MODEL is a backbone spec (``embedded``, ``open_clip:...``, ``hf:...``) or a folder written by train_embedded.py
(``config.json`` and ``clip.safetensors``), loaded with ``sayno.backbones.load``.

Draws ``--per-class`` single-object scenes of each of the 185 pretraining concepts in openmoji, noto, twemoji and
fluent (a fresh random stream), classifies them against "a photo of <concept>" and prints: the mean accuracy per
style; the concepts where fluent falls furthest below twemoji, with fluent's first three predictions; the
per-concept correlation of fluent and twemoji; how many concepts fluent gets right in every image and in none;
the most frequent wrong fluent classes. ``--gray`` also classifies the same scenes turned grey, per style: how much
of the accuracy survives without colour, i.e. how much the model reads shape. Used for docs/RESULTS.md, "A
three-style embedded CLIP".
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from sayno.backbones import Backbone, load
from sayno.eval.runner import BENCHMARK_STYLES
from sayno.world import get_style, pretrain_concepts, render_scene
from sayno.world.scenes import make_scene


def load_model(spec: str) -> Backbone:
    """A backbone spec, or a folder written by train_embedded.py (``config.json`` and ``clip.safetensors``)."""
    folder = Path(spec)
    return load(f"open_clip:{folder / 'config.json'}:{folder / 'clip.safetensors'}" if folder.is_dir() else spec)


def concept_texts(backbone: Backbone) -> torch.Tensor:
    """(185, D) unit-norm features of "a photo of <concept>" for the pretraining concepts, in their order."""
    return backbone.encode_text([f"a photo of {c.phrase(1)}" for c in pretrain_concepts()])


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="backbone spec, or a folder with config.json and clip.safetensors")
    ap.add_argument("--per-class", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worst", type=int, default=25, help="how many fluent-vs-twemoji failures to list")
    ap.add_argument("--gray", action="store_true", help="also the accuracy on the same scenes in grey")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_model(args.model)
    concepts, text = pretrain_concepts(), concept_texts(backbone)
    acc, preds = {}, {}
    for name in BENCHMARK_STYLES:
        style, rng = get_style(name), np.random.default_rng([args.seed, 99])
        hits, gray_hits, pred = np.zeros(len(concepts)), np.zeros(len(concepts)), []
        for ci, c in enumerate(concepts):
            images = [render_scene(make_scene(((c, 1),), rng), style) for _ in range(args.per_class)]
            p = (backbone.encode_image(images) @ text.T).argmax(1).numpy()
            hits[ci] = (p == ci).mean()
            pred.append([concepts[j].name for j in p])
            if args.gray:
                grey = [im.convert("L").convert("RGB") for im in images]
                gray_hits[ci] = ((backbone.encode_image(grey) @ text.T).argmax(1).numpy() == ci).mean()
        acc[name], preds[name] = hits, pred
        print(f"{name}: {hits.mean() * 100:.1f}%" + (f" (grey: {gray_hits.mean() * 100:.1f}%)" if args.gray else ""))
    fl, tw = acc["fluent"], acc["twemoji"]
    print("fluent failures (fluent accuracy, twemoji accuracy, fluent's first predictions):")
    for i in np.argsort(fl - tw)[: args.worst]:
        print(f"  {concepts[i].name}: {fl[i]:.2f} vs {tw[i]:.2f} {preds['fluent'][i][:3]}")
    print(f"per-concept correlation fluent / twemoji: {np.corrcoef(fl, tw)[0, 1]:.2f}")
    print(f"fluent concepts right in every image: {int((fl == 1).sum())}, in none: {int((fl == 0).sum())}, "
          f"of {len(concepts)}")
    wrong = Counter(p for c, ps in zip(concepts, preds["fluent"]) for p in ps if p != c.name)
    print(f"wrong fluent answers: {sum(wrong.values())}; most frequent classes: {wrong.most_common(8)}")


if __name__ == "__main__":
    main()
