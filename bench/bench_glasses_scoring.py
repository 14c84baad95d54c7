"""How much CLIPGlasses scoring costs over plain CLIP, from cached features, on CPU.

    .venv/bin/python bench/bench_glasses_scoring.py --model embedded \
        --glasses sayno/weights/glasses-embedded.safetensors --world runs/world --n 1000 --m 10000

Scores N captions against M images (``score_matrix``: caption-only lambda, retrieval-grade) with plain CLIP
and with Glasses, from the same cached features (captions' ``h`` and layers, image features; the negated
phrases' prompt embeddings are text features too and are cached by the first, untimed, call). Captions are
the world's negated and affirmative retrieval queries (about half negated), repeated to N; images are the
world's image features, repeated to M. Prints the median time of each over ``--repeat`` alternating runs and
the ratio Glasses / plain, plus the one-off cost of embedding the phrases when the cache is cold.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sayno.backbones.registry import load
from sayno.base.scoring import PlainClip, TextBatch
from sayno.data import read_retrieval_csv
from sayno.glasses.data import encode_texts_np
from sayno.glasses.model import Glasses, GlassesConfig, load_glasses


def captions_of(world: Path, n: int) -> list[str]:
    caps: list[str] = []
    for name in ("retrieval_neg_test.csv", "retrieval_test.csv"):
        p = world / name
        if p.exists():
            caps += read_retrieval_csv(p).captions
    if not caps:
        caps = ["a dog and a cat", "a cat but no dog", "there is no cow here", "a photo of two apples"]
    rng = np.random.default_rng(0)
    return [caps[i] for i in rng.permutation(len(caps))[:n]] if len(caps) >= n else (caps * (n // len(caps) + 1))[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--glasses", default="sayno/weights/glasses-embedded.safetensors")
    ap.add_argument("--world", type=Path, default=Path("runs/world"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--m", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    backbone = load(args.model)
    if Path(args.glasses).exists():
        g = load_glasses(args.glasses, backbone)
    else:
        print(f"no checkpoint at {args.glasses}: timing an untrained Glasses (same cost)")
        g = Glasses(GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers), backbone)
    texts = captions_of(args.world, args.n)
    layers = encode_texts_np(backbone, texts, layers=True)
    text = TextBatch(texts, np.ascontiguousarray(layers[:, -1]), layers)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(args.m, backbone.embed_dim)).astype(np.float32)
    images = x / np.linalg.norm(x, axis=1, keepdims=True)
    plain = PlainClip(backbone.logit_scale)
    negated = int(g.slots(text).negated.sum())

    t = time.perf_counter()
    g.phrases.clear()
    g.score_matrix(text, images)  # cold: embeds the negated phrases' prompts once
    cold = time.perf_counter() - t
    plain.score_matrix(text, images)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn(text, images)
        return time.perf_counter() - t

    tp, tg = [], []
    for _ in range(args.repeat):
        tp.append(timed(plain.score_matrix))
        tg.append(timed(g.score_matrix))
    ref = Glasses(GlassesConfig(**{**g.config.__dict__, "score": "reference"}), backbone)
    ref.frame.set_bank(g.frame.bank)
    ref.load_state_dict(g.state_dict())
    ref.phrases = g.phrases
    tr = [timed(ref.score_matrix) for _ in range(args.repeat)]
    mp, mg, mr = statistics.median(tp), statistics.median(tg), statistics.median(tr)
    print(f"backbone {backbone.spec} (D={backbone.embed_dim}); {args.n} captions ({negated} negated) x "
          f"{args.m} images; torch threads {torch.get_num_threads()}; median of {args.repeat}")
    print(f"plain CLIP score_matrix:             {1000 * mp:8.1f} ms")
    print(f"Glasses score_matrix ({g.config.score}):       {1000 * mg:8.1f} ms   ratio {mg / mp:.2f}x")
    print(f"Glasses, reference (clamped) score:  {1000 * mr:8.1f} ms   ratio {mr / mp:.2f}x")
    print(f"first Glasses call, phrase prompts not yet embedded: {1000 * cold:.1f} ms (one-off, cached after)")
    print(f"RATIO {mg / mp:.3f}")


if __name__ == "__main__":
    main()
