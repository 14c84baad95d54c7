"""Issue 27, items 3-4: rclip-style subtraction beside CLIPGlasses, and the "nothing here matches" flags.

    .venv/bin/python bench/search_match.py --seed 7 --dir /tmp/search-match [--json out.json]

On the emoji world's test scenes of a fresh seed (2,000 images, never used in training), through the user's
path (`sayno.search.build_index` with the embedded default, `Searcher.search`):

1. Negation, on an index of all 2,000 scenes:
   - negated R@5 over `retrieval_neg_test.csv` (one negated caption per scene, "a cow but no umbrella"; the
     caption's scene must be in the top 5): plain CLIP (`mode="clip"`), sayno (CLIPGlasses, `mode="auto"`) and
     rclip-style subtraction (the caption's affirmative part, as sayno's analyser reads it, `- X` for each object
     the world's caption negates; "a scene" when the affirmative part names nothing);
   - the "no X" top-10 count for the 10 objects most frequent in these scenes: how many of the top 10 show X,
     for plain CLIP on "no X", CLIPGlasses on "no X", and rclip-style "a scene - X".
2. Match flags, on an index of the scenes that show none of 10 *absent* objects (drawn with the seed among the
   objects of the test scenes): for each absent object X, "a X" -> how many of the top 10 are marked matches
   (target <= 10%); for each object present in at least 5 indexed scenes, "a X" -> of the top 5, how many are
   matches, show X, and both (target >= 90%). The present test is also run on the full index, and the absent
   test on the full index for the world's 42 "unseen" concepts (never drawn in a scene, never seen by the
   embedded CLIP).
The world's scene metadata (`retrieval_test.csv`, `positive_objects`) says which objects a scene shows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sayno.base.prompts import with_article
from sayno.glasses.analysis import analyse
from sayno.glasses.training_free import content_free
from sayno.search import IndexConfig, Searcher, build_index
from sayno.world.build import WorldConfig, build_world
from sayno.world.concepts import unseen_concepts


def scene_objects(world: Path) -> dict[str, set[str]]:
    """Relative image path (as the index stores it: ``test/000000a.png``) -> objects the scene shows."""
    out = {}
    with open(world / "retrieval_test.csv", newline="") as f:
        for row in csv.DictReader(f):
            out[row["filepath"].removeprefix("images/")] = set(json.loads(row["positive_objects"]))
    return out


def negated_captions(world: Path) -> list[tuple[str, str, list[str]]]:
    """(image path, negated caption, negated objects) per row of ``retrieval_neg_test.csv``."""
    rows = []
    with open(world / "retrieval_neg_test.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows.append((row["filepath"].removeprefix("images/"), json.loads(row["captions"])[0],
                         json.loads(row["negative_objects"])))
    return rows


def rclip_query(caption: str, negated: list[str]) -> str:
    """What an rclip user types for a negated caption: its affirmative part, then ``- X`` per negated object."""
    rest = analyse(caption).affirmative_text
    rest = rest if rest and not content_free(rest) else "a scene"
    return " ".join([rest.replace(" - ", " "), *[f"- {x}" for x in negated]])


def index(folder: Path, out: Path) -> Path:
    if not (out / "CURRENT").exists():
        t = time.perf_counter()
        build_index(folder, out, IndexConfig(model="embedded"), progress=False, threads=1)
        print(f"indexed {folder} in {time.perf_counter() - t:.0f} s")
    return out


def lacking_folder(world: Path, objects: dict[str, set[str]], absent: set[str], out: Path) -> Path:
    """A folder of symlinks to the scenes that show none of ``absent``."""
    if not out.exists():
        tmp = out.with_name(out.name + ".tmp")
        (tmp / "test").mkdir(parents=True, exist_ok=True)
        for path, objs in objects.items():
            if not objs & absent:
                os.symlink((world / "images" / path).resolve(), tmp / path)
        tmp.rename(out)
    return out


def top_show(searcher: Searcher, query: str, k: int, objects: dict[str, set[str]], x: str, **kw) -> int:
    return sum(x in objects[h.path] for h in searcher.search(query, k, **kw).hits)


def negation(searcher: Searcher, world: Path, objects: dict[str, set[str]], frequent: list[str]) -> dict:
    rows = negated_captions(world)
    recall = {"clip": 0, "glasses": 0, "rclip": 0}
    for path, caption, negated in rows:
        for name, q, mode in (("clip", caption, "clip"), ("glasses", caption, "auto"),
                              ("rclip", rclip_query(caption, negated), "clip")):
            recall[name] += any(h.path == path for h in searcher.search(q, 5, mode=mode).hits)
    shown = {"clip": [], "glasses": [], "rclip": []}
    for x in frequent:
        shown["clip"].append(top_show(searcher, f"no {x}", 10, objects, x, mode="clip"))
        shown["glasses"].append(top_show(searcher, f"no {x}", 10, objects, x, mode="auto"))
        shown["rclip"].append(top_show(searcher, f"a scene - {x}", 10, objects, x, mode="clip"))
    return {"captions": len(rows), "r_at_5": {k: v / len(rows) for k, v in recall.items()},
            "no_x_objects": frequent, "no_x_top10_shows_x": {k: float(np.mean(v)) for k, v in shown.items()},
            "no_x_per_object": shown}


def present(searcher: Searcher, objects: dict[str, set[str]], min_scenes: int = 5) -> dict:
    """Per object shown in >= min_scenes indexed scenes, "a X": the top 5 (flags, truth), and the top 5 of
    ``matches_only`` (how many it returns and how many of those show X)."""
    counts = Counter(o for objs in objects.values() for o in objs)
    names = sorted(o for o, c in counts.items() if c >= min_scenes)
    matched = shows = both = only_n = only_show = 0
    for x in names:
        for h in searcher.search(with_article(x), 5).hits:
            has = x in objects[h.path]
            matched, shows, both = matched + h.match, shows + has, both + (h.match and has)
        only = searcher.search(with_article(x), 5, matches_only=True).hits
        only_n, only_show = only_n + len(only), only_show + sum(x in objects[h.path] for h in only)
    n = 5 * len(names)
    return {"objects": len(names), "top5_match": matched / n, "top5_show": shows / n, "top5_match_and_show": both / n,
            "flag_precision": both / max(matched, 1), "flag_recall": both / max(shows, 1),
            "matches_only_returned": only_n / n, "matches_only_show": only_show / max(only_n, 1)}


def absent(searcher: Searcher, names: list[str]) -> dict:
    marked = [sum(h.match for h in searcher.search(with_article(x), 10).hits) for x in names]
    none = sum(searcher.search(with_article(x), 10).no_match != "" for x in names)
    return {"objects": names, "top10_marked_match": sum(marked) / (10 * len(names)), "per_object": marked,
            "queries_saying_no_match": none}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/search-match"))
    ap.add_argument("--absent", type=int, default=10, help="objects left out of the lacking index")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    world = args.dir / "world"
    if not (world / "world.json").exists():
        build_world(world, WorldConfig(seed=args.seed), progress=False, parts=("test",))
    objects = scene_objects(world)
    counts = Counter(o for objs in objects.values() for o in objs)
    frequent = [o for o, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    rng = np.random.default_rng(args.seed)
    left_out = sorted(rng.choice(sorted(counts), size=args.absent, replace=False).tolist())

    full = Searcher(index(world / "images", args.dir / "full.index"), threads=1)
    lacking_dir = lacking_folder(world, objects, set(left_out), args.dir / f"lacking-{args.seed}")
    lacking = Searcher(index(lacking_dir, args.dir / f"lacking-{args.seed}.index"), threads=1)
    kept = {p: o for p, o in objects.items() if not o & set(left_out)}

    t = time.perf_counter()
    out = {"seed": args.seed, "scenes": len(objects), "lacking_scenes": len(kept),
           "tau_full": full.search("a cat", 1).match_test["tau"],
           "tau_lacking": lacking.search("a cat", 1).match_test["tau"],
           "negation": negation(full, world, objects, frequent),
           "absent": absent(lacking, left_out),
           "unseen": absent(full, sorted(c.name for c in unseen_concepts())),
           "present_lacking": present(lacking, kept),
           "present_full": present(full, objects)}
    out["seconds"] = round(time.perf_counter() - t, 1)
    neg = out["negation"]
    print(f"seed {args.seed}: {len(objects)} scenes; lacking index: {len(kept)} scenes without {left_out}")
    print(f"negated R@5 over {neg['captions']} captions: plain CLIP {neg['r_at_5']['clip']:.3f}, "
          f"CLIPGlasses {neg['r_at_5']['glasses']:.3f}, rclip-style {neg['r_at_5']['rclip']:.3f}")
    s = neg["no_x_top10_shows_x"]
    print(f"'no X' top 10 showing X (mean over {frequent}): plain CLIP {s['clip']:.1f}, CLIPGlasses "
          f"{s['glasses']:.1f}, rclip-style 'a scene - X' {s['rclip']:.1f}")
    a = out["absent"]
    print(f"absent objects: {a['top10_marked_match']:.1%} of the top 10 marked as matches (target <= 10%); "
          f"per object {a['per_object']}; {a['queries_saying_no_match']}/{len(left_out)} say 'no image here "
          f"looks like ...' (tau {out['tau_lacking']})")
    u = out["unseen"]
    print(f"objects no scene shows (the world's {len(u['objects'])} 'unseen' concepts, full index): "
          f"{u['top10_marked_match']:.1%} of the top 10 marked as matches; {u['queries_saying_no_match']}/"
          f"{len(u['objects'])} say 'no image here looks like ...'")
    for name in ("present_lacking", "present_full"):
        p = out[name]
        print(f"{name}: {p['objects']} objects, top 5: {p['top5_match']:.1%} marked matches, {p['top5_show']:.1%} "
              f"show the object, {p['top5_match_and_show']:.1%} both (target >= 90%); of the hits marked matches "
              f"{p['flag_precision']:.1%} show it, of those showing it {p['flag_recall']:.1%} are marked; "
              f"--matches-only top 5: {p['matches_only_returned']:.1%} filled, {p['matches_only_show']:.1%} of them "
              "show it")
    print(f"({out['seconds']} s of searching)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
