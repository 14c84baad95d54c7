"""Issue 25: predicate queries through the user's search path.

    .venv/bin/python bench/search_predicates.py --dir /tmp/pred-search [--seed 0] [--style openmoji]

Builds the predicates part of a world (``--seed``, ``--style``; 100 activity scenes beside their hard negatives =
200 images of people doing 24 activities) unless ``--dir`` holds it, indexes the activity images with the
embedded default (``build_index``), then for each activity A through ``Searcher.search``: "a person A" -> share
of the top 5 showing A; "a person not A" (plain CLIP and sayno's default) and "nobody is A" (sayno) -> how many
of the top 10 show A. Which image shows which activity comes from ``pred_affirm_test_activity.csv``.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np

from sayno.search import Searcher, build_index
from sayno.world import WorldConfig, build_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--style", default="openmoji")
    args = ap.parse_args()
    world = args.dir / "world"
    if not (world / "pred_affirm_test_activity.csv").exists():
        build_world(world, WorldConfig(seed=args.seed, style=args.style), progress=False, parts=("predicates",))
    with open(world / "pred_affirm_test_activity.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    truth = {Path(r["image_path"]).name: r["true_predicate"] for r in rows}
    build_index(world / "images" / "predicates" / "activity", args.dir / "activity.index")
    searcher = Searcher(args.dir / "activity.index", threads=1)

    def shows(query: str, a: str, k: int, **kw) -> int:
        return sum(truth.get(Path(h.path).name) == a for h in searcher.search(query, k=k, **kw).hits[:k])

    acts = sorted(set(truth.values()))
    found = [shows(f"a person {a}", a, 5) / 5 for a in acts]
    not_clip = [shows(f"a person not {a}", a, 10, mode="clip") for a in acts]
    not_sayno = [shows(f"a person not {a}", a, 10) for a in acts]
    nobody = [shows(f"nobody is {a}", a, 10) for a in acts]
    per = Counter(truth.values())
    print(f"{len(acts)} activities, {len(truth)} images ({min(per.values())}-{max(per.values())} per activity)")
    print(f"'a person A': of the top 5, {100 * np.mean(found):.1f}% show A")
    print(f"'a person not A': of the top 10, showing A: plain CLIP {np.mean(not_clip):.2f}, sayno "
          f"{np.mean(not_sayno):.2f}; 'nobody is A', sayno: {np.mean(nobody):.2f}")


if __name__ == "__main__":
    main()
