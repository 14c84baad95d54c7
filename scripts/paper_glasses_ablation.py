"""sayno's Glasses against the paper's (``glasses train --preset paper``) on a world's test split.

    python scripts/paper_glasses_ablation.py --world runs/w26b --paper "paper=runs/s31-paper/paper-fixed.safetensors" \
        --json runs/s31-paper/ablation.json

Rows: plain CLIP, sayno's shipped Glasses (or ``--glasses``), each ``--sayno NAME=PATH`` (other sayno Glasses)
and each ``--paper NAME=PATH``. Columns: CC-Neg and
MCQ accuracy (all rows, training and held-out negation families, from the same decisions as
``sayno benchmark``), negated-query text->image R@1/R@5 (``retrieval_neg_test.csv``; the paper rows re-rank
plain CLIP's top ``--rerank-k``), CLIP's R@k (the re-ranking's ceiling) and the wall time of each row's
retrieval scoring (a shared machine: a cost ratio, not a speed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import sayno
from sayno.base.shipped import shipped_weights
from sayno.eval import benchmarks as B
from sayno.eval import runner as R
from sayno.features import FeatureCache
from sayno.glasses import PaperGlasses, load_glasses, load_paper_glasses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True, help="world folder with the test split")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--glasses", type=Path, default=None, help="sayno Glasses (default: the shipped ones)")
    ap.add_argument("--sayno", action="append", default=[], help="NAME=PATH of another sayno Glasses checkpoint")
    ap.add_argument("--paper", action="append", default=[], help="NAME=PATH of a paper preset checkpoint")
    ap.add_argument("--rerank-k", type=int, default=20)
    ap.add_argument("--exact", action="store_true", help="also score retrieval with every (caption, image) "
                                                           "pair's lambda (no shortlist; slow)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    backbone = sayno.load(args.model)
    glasses = args.glasses or shipped_weights("glasses", args.model)
    methods = [B.plain(backbone), B.Method("CLIPGlasses (sayno)", backbone, load_glasses(glasses, backbone).scorer())]
    for item in args.sayno:
        name, path = item.split("=", 1)
        methods.append(B.Method(name, backbone, load_glasses(path, backbone).scorer()))
    for item in args.paper:
        name, path = item.split("=", 1)
        methods.append(B.Method(name, backbone, load_paper_glasses(path, backbone, rerank_k=args.rerank_k)))
    cache = FeatureCache.default()
    table: dict[str, dict[str, float]] = {m.name: {} for m in methods}
    for task in ("ccneg", "mcq"):
        files = [args.world / f"{task}_test.csv", args.world / f"{task}_test_trainfam.csv",
                 args.world / f"{task}_test_heldout.csv"]
        for label, res in zip(("", " train fam", " held-out fam"),
                              R._with_families(task, methods, files[0], files[1:], cache, False, None, {})):
            for name, metrics in res["methods"].items():
                table[name][f"{task}{label}"] = metrics["accuracy"]
                if task == "mcq" and not label:
                    table[name].update({f"mcq {t}": metrics[t] for t in ("positive", "negative", "hybrid")
                                        if t in metrics})
    path = args.world / "retrieval_neg_test.csv"
    data = R._read("retrieval", path, None, None)
    memo = B.FeatureMemo(cache)
    img, _ = memo.images(backbone, data.image_paths)
    target = np.asarray(data.caption_to_image)
    for m in methods:
        text = memo.text(m, data.captions)
        started = time.time()
        scores = m.scorer.score_matrix(text, img)
        seconds = time.time() - started
        rec = B.recall_at_k(scores, target, ks=(1, 5, args.rerank_k))
        table[m.name].update({"neg t2i R@1": rec["R@1"], "neg t2i R@5": rec["R@5"],
                              "retrieval seconds": round(seconds, 2)})
        if m.name == "CLIP":
            table[m.name][f"neg t2i R@{args.rerank_k}"] = rec[f"R@{args.rerank_k}"]
        if args.exact and isinstance(m.scorer, PaperGlasses):
            exact = PaperGlasses(m.scorer.config, backbone, rerank_k=None)
            exact.load_state_dict(m.scorer.state_dict())
            started = time.time()
            rec = B.recall_at_k(exact.score_matrix(text, img), target, ks=(1, 5))
            table[m.name].update({"exact neg t2i R@1": rec["R@1"], "exact neg t2i R@5": rec["R@5"],
                                  "exact retrieval seconds": round(time.time() - started, 2)})
    cols = ["ccneg", "ccneg train fam", "ccneg held-out fam", "mcq", "mcq positive", "mcq negative", "mcq hybrid",
            "mcq train fam", "mcq held-out fam",
            "neg t2i R@1", "neg t2i R@5", "retrieval seconds"]
    if args.exact:
        cols += ["exact neg t2i R@1", "exact neg t2i R@5", "exact retrieval seconds"]
    print("| method | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row.get(c, float('nan')):.2f}" for c in cols) + " |")
    print(f"CLIP negated R@{args.rerank_k} (the re-ranking's ceiling): {table['CLIP'][f'neg t2i R@{args.rerank_k}']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"world": str(args.world), "rerank_k": args.rerank_k, "table": table}, indent=1))


if __name__ == "__main__":
    main()
