"""Does a backbone see world 4's predicates at all? Per kind, on predicate scenes beside their hard negatives.

    python scripts/predicate_probe.py --model embedded --style openmoji --pairs 600

Prints, per kind (activity, attribute, relation):
- ``probe``: a logistic regression on the frozen image embeddings, trained on the first 2/3 of the images and
  scored on the rest, telling the two states of the kind apart (upside down / upright; the upper object is the
  caption's subject or not; chance 50%; activities have no two states and print nan);
- ``pairs``: how often an image scores its own caption above its twin's (chance 50%);
- ``cos img pair / img other / text pair``: mean cosine between a scene and its hard negative, between a scene and
  an unrelated scene, and between the two captions. A twin pair at cosine ~1 on both sides is the collapse of
  docs/experiments/world.md ("Why upside down and above / below are not learned").
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

import sayno
from sayno.world.predicates import KINDS, hard_negative, sample_predicate_scene
from sayno.world.scenes import render_scene
from sayno.world.styles import get_style


def probe(model: str, style: str, pairs: int, seed: int) -> dict[str, dict[str, float]]:
    """{kind: {probe, pairs, cos_img_pair, cos_img_other, cos_text_pair}} for ``pairs`` scene pairs per kind."""
    backbone, st = sayno.load(model), get_style(style)
    out = {}
    for kind in KINDS:
        rng = np.random.default_rng([seed, KINDS.index(kind)])
        images, texts, labels = [], [], []
        for _ in range(pairs):
            ps = sample_predicate_scene(rng, kind)
            twin = hard_negative(ps, rng)
            for p in (ps, twin):
                images.append(render_scene(p.scene, st))
                texts.append(f"{p.true.subject} {p.true.predicate}")
                labels.append(int(p.true.predicate.startswith(("upside down", "above"))))
        with torch.no_grad():
            f = torch.cat([backbone.encode_image(images[i:i + 256]) for i in range(0, len(images), 256)]).numpy()
            t = torch.cat([backbone.encode_text(texts[i:i + 256]) for i in range(0, len(texts), 256)]).numpy()
        y = np.array(labels)
        cut = 2 * (2 * pairs // 3)  # whole pairs on each side
        # activities have no two states: their probe is left out (nan)
        acc = (LogisticRegression(max_iter=3000).fit(f[:cut], y[:cut]).score(f[cut:], y[cut:])
               if kind != "activity" else float("nan"))
        own, crossed = (f * t).sum(1), (f * t[np.arange(len(t)) ^ 1]).sum(1)
        out[kind] = {"probe": float(acc), "pairs": float((own > crossed).mean()),
                     "cos_img_pair": float((f[0::2] * f[1::2]).sum(1).mean()),
                     "cos_img_other": float((f[0::2] * np.roll(f[1::2], 1, 0)).sum(1).mean()),
                     "cos_text_pair": float((t[0::2] * t[1::2]).sum(1).mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--style", default="openmoji")
    ap.add_argument("--pairs", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{'kind':10} {'probe':>6} {'pairs':>6} {'cos img pair':>13} {'img other':>10} {'text pair':>10}")
    for kind, r in probe(args.model, args.style, args.pairs, args.seed).items():
        print(f"{kind:10} {100 * r['probe']:6.1f} {100 * r['pairs']:6.1f} {r['cos_img_pair']:13.3f} "
              f"{r['cos_img_other']:10.3f} {r['cos_text_pair']:10.3f}")


if __name__ == "__main__":
    main()
