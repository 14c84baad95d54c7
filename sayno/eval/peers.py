"""Choose the training-free peers' one setting (``w``) on a world's validation split.

    python -m sayno.eval.peers --world runs/world --model embedded [--json out.json]

For each peer of :data:`sayno.glasses.peers.PEERS` and each ``w`` of its grid: CC-Neg accuracy, MCQ accuracy
and negated text->image R@5 on ``ccneg_val.csv``, ``mcq_val.csv`` and ``retrieval_neg_val.csv``; the chosen
``w`` maximises their mean (ties: the smaller ``w``). The test split is never read.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from sayno.backbones import load
from sayno.backbones.base import Backbone
from sayno.data import read_ccneg, read_mcq_csv, read_retrieval_csv
from sayno.eval import benchmarks as B
from sayno.features import FeatureCache
from sayno.glasses.peers import PEERS

GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
VAL_FILES = ("ccneg_val.csv", "mcq_val.csv", "retrieval_neg_val.csv")


def validation_metrics(methods: Sequence[B.Method], world: Path, memo: B.FeatureMemo) -> dict[str, dict[str, float]]:
    """{method: {"CC-Neg", "MCQ", "R@5 negated", "mean"}} on the world's validation files (percent)."""
    cc = B.run_ccneg(methods, read_ccneg(world / VAL_FILES[0]), memo=memo)
    mcq = B.run_mcq(methods, read_mcq_csv(world / VAL_FILES[1]), memo=memo)
    ret = B.run_retrieval(methods, read_retrieval_csv(world / VAL_FILES[2]), memo=memo)
    out = {}
    for m in methods:
        row = {"CC-Neg": cc[m.name]["accuracy"], "MCQ": mcq[m.name]["accuracy"],
               "R@5 negated": ret[m.name]["t2i_R@5"]}
        out[m.name] = {**row, "mean": sum(row.values()) / len(row)}
    return out


def choose_weights(backbone: Backbone, world: Path, grid: Sequence[float] = GRID,
                   cache: FeatureCache | None = None) -> dict:
    """{"chosen": {peer: w}, "grid": {peer: {w: metrics}}} for every peer on ``world``'s validation split."""
    memo = B.FeatureMemo(cache, progress=False)
    table: dict[str, dict[str, dict[str, float]]] = {}
    chosen: dict[str, float] = {}
    for kind, cls in PEERS.items():
        methods = [B.Method(f"{kind} w={w:g}", backbone, cls(backbone, weight=w)) for w in grid]
        res = validation_metrics(methods, Path(world), memo)
        table[kind] = {f"{w:g}": res[m.name] for w, m in zip(grid, methods)}
        chosen[kind] = max(grid, key=lambda w: (table[kind][f"{w:g}"]["mean"], -w))
    return {"chosen": chosen, "grid": table, "world": str(world), "model": backbone.spec,
            "files": list(VAL_FILES)}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True, help="a world folder with the val parts")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    res = choose_weights(load(args.model), args.world, cache=FeatureCache.default())
    for kind, rows in res["grid"].items():
        for w, r in rows.items():
            print(f"{kind:20s} w={w:5s} " + "  ".join(f"{k} {v:6.2f}" for k, v in r.items()))
        print(f"{kind}: chosen w = {res['chosen'][kind]:g}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
