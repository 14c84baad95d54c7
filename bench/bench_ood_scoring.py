"""How long every OOD method takes to score cached features (no encoding): fit + score + metrics.

    python bench/bench_ood_scoring.py                      # synthetic features at the world's sizes
    python bench/bench_ood_scoring.py --n-id 50000 --n-ood 50000 --classes 1000   # ImageNet-scale shapes
    python bench/bench_ood_scoring.py --world runs/world --model embedded --clipn sayno/weights/clipn-embedded.safetensors

Synthetic mode draws random unit features (the numbers are meaningless, the timings are not). World mode
encodes once through the feature cache, then times the same steps on the real features.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sayno.backbones import load
from sayno.features import FeatureCache
from sayno.ood import SCORERS
from sayno.ood.bench import world_ood_benchmark
from sayno.ood.metrics import ood_metrics
from sayno.ood.scorers import mine_negative_labels


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic(args) -> dict:
    rng = np.random.default_rng(0)
    d, c = args.dim, args.classes
    classes = _unit(rng.normal(size=(c, d)))
    no = _unit(rng.normal(size=(c, d)))
    words = _unit(rng.normal(size=(args.words, d)))
    f_id = _unit(classes[rng.integers(0, c, args.n_id)] + rng.normal(size=(args.n_id, d)))
    f_ood = _unit(rng.normal(size=(args.n_ood, d)))
    out = {}
    t0 = time.perf_counter()
    idx = mine_negative_labels(words, classes)
    mine = time.perf_counter() - t0
    for name, cls in SCORERS.items():
        t = time.perf_counter()
        if name == "NegLabel":
            sc = cls(logit_scale=100.0, negative_features=words[idx]).fit(classes)
        elif name.startswith("CLIPN"):
            sc = cls(logit_scale=100.0).fit((classes, no))
        else:
            sc = cls(logit_scale=100.0).fit(classes)
        t1 = time.perf_counter()
        s_id, s_ood = sc.score_samples(f_id), sc.score_samples(f_ood)
        t2 = time.perf_counter()
        ood_metrics(s_id, s_ood)
        t3 = time.perf_counter()
        out[name] = {"fit_s": round(t1 - t, 4), "score_s": round(t2 - t1, 4), "metrics_s": round(t3 - t2, 4)}
    out["NegLabel"]["mining_s"] = round(mine, 4)
    return {"mode": "synthetic", "n_id": args.n_id, "n_ood": args.n_ood, "classes": c, "dim": d,
            "candidate_words": args.words, "negatives": len(idx), "methods": out,
            "total_s": round(sum(v["fit_s"] + v["score_s"] + v["metrics_s"] for v in out.values()) + mine, 3)}


def world(args) -> dict:
    bb = load(args.model)
    cache = FeatureCache.default()
    world_ood_benchmark(bb, args.world, clipn=args.clipn, cache=cache, progress=False)  # warm the cache
    t = time.perf_counter()
    r = world_ood_benchmark(bb, args.world, clipn=args.clipn, cache=cache, progress=False)
    return {"mode": "world", "world": args.world, "n_id": r["id"]["n"], "ood_sets": r["ood_sets"],
            "scoring_seconds": r["scoring_seconds"], "end_to_end_from_cache_s": round(time.perf_counter() - t, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-id", type=int, default=1500)
    ap.add_argument("--n-ood", type=int, default=1440)
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--words", type=int, default=70000)
    ap.add_argument("--world", default=None)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--clipn", default=None)
    args = ap.parse_args()
    print(json.dumps(world(args) if args.world else synthetic(args), indent=1))


if __name__ == "__main__":
    main()
