"""Issue 27, items 3-4: rclip-style subtraction beside CLIPGlasses, and the "nothing here matches" flags.

    .venv/bin/python bench/search_match.py --seed 7 --dir /tmp/search-match [--json out.json] [--variants] [--no-vocabulary]

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
   embedded CLIP). The indexes are built as ``sayno index build`` builds them, with the match test's open
   vocabulary; ``--no-vocabulary`` builds them with the bank alone (``-bank`` index folders), to compare.
3. Ranking (``--variants``): top-5 precision of "a X" (share of the top 5 that show X) under label-free
   rankings computed exactly over the index's vectors: plain CLIP (what search does), the query's prompt
   ensemble, the mean-centred ``(e - mu).I``, the bank log-odds ``s*h.I - logsumexp_b s*e_b.I`` (dual softmax /
   QB-Norm over the bank), and matching images first; the whole-caption R@5 under plain and log-odds; hubness
   of the top-5 lists; and what the backbone sees: per scene showing X, whether X beats every world name the
   scene does not show (an oracle vocabulary, used only to measure), and the top-5 ceiling that follows.
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
from sayno.search.match import presence, relative
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


def index(folder: Path, out: Path, vocabulary: bool = True) -> Path:
    if not (out / "CURRENT").exists():
        t = time.perf_counter()
        build_index(folder, out, IndexConfig(model="embedded", vocabulary=vocabulary), progress=False, threads=1)
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


def logsumexp(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Stable log(sum(exp(x))) along ``axis``."""
    top = x.max(axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis, keepdims=True))).squeeze(axis)


def rankings(h: np.ndarray, e: np.ndarray, view: dict, best: np.ndarray | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(M,) label-free ranking scores of one query by name, and its (M,) bool match flags by rule: h (D,) its
    plain embedding, e (D,) its prompt ensemble; view: the index as the match test reads it (:func:`index_view`);
    best: (M,) what the query must match at least (the search's ``Matcher.competitors``; default the bank's best).
    Higher ranks first.
    The bank log-odds is the logit of CLIP's softmax over the bank plus the query, per image (a dual softmax
    over the bank, as QB-Norm normalises by a query bank), at CLIP's own temperature."""
    sh, se = view["F"] @ h, view["F"] @ e
    best = view["best"] if best is None else best
    flags = presence(se[None], best, relative(e[None], view["mu"], view["F"]), view["tau"], view["level"])[0]
    same = view["bank"] @ e > 1 - 1e-4  # the query's own object in the bank: left out of "the other objects"
    lse = logsumexp(view["scale"] * view["bank_sims"][~same], 0) if same.any() else view["lse"]
    # the stricter flag rule: P(p | I) > 1/2 over the bank plus p (p beats the bank's other objects together)
    likely = (view["scale"] * se - lse > (0.0 if not same.any() else -np.log(2.0))) & flags
    return {"plain CLIP h.I (search)": sh, "prompt ensemble e.I": se, "mean-centred (e - mu).I": se - view["muI"],
            "bank log-odds s*e.I - LSE_b s*e_b.I": view["scale"] * se - lse,
            "matching first, then plain": sh + 10.0 * flags}, {"argmax (search)": flags, "P(p|I) > 1/2": likely}


def index_view(searcher: Searcher) -> dict:
    """An index's float64 vectors F (M, D), paths, the bank (K, D) and its (K, M) similarities, per image its best
    bank similarity, ``mu.I`` and ``logsumexp_b s*e_b.I``; the calibration's ``tau``, ``level``, logit scale ``s``."""
    m = searcher.matcher()
    feats = np.asarray(searcher.data.features(), np.float64)
    bank_sims = m.bank().astype(np.float64) @ feats.T
    scale = float(searcher.backbone.logit_scale)
    mu = np.asarray(m.encoder.bank_mean(), np.float64)
    return {"F": feats, "paths": [str(p) for p in searcher.data.files.path], "best": bank_sims.max(0), "mu": mu,
            "bank": m.bank().astype(np.float64), "bank_sims": bank_sims,
            "muI": feats @ mu, "lse": logsumexp(scale * bank_sims, 0), "scale": scale, "tau": m.tau,
            "level": m.level, "matcher": m}


def variants(searcher: Searcher, objects: dict[str, set[str]], absent_names: list[str], world: Path,
             min_scenes: int = 5) -> dict:
    """Top-5 precision of "a X" per ranking (objects in >= min_scenes indexed scenes); share of queries whose
    top 5 all show X; absent objects' top 10 marked as matches per ranking; hubness of the plain top-5 lists;
    whole-caption R@5 plain vs log-odds; what the backbone sees (oracle vocabulary, measuring only)."""
    view = index_view(searcher)
    have = [objects[p] for p in view["paths"]]
    counts = Counter(o for objs in have for o in objs)
    names = sorted(o for o, c in counts.items() if c >= min_scenes)
    queries = names + absent_names
    enc = view["matcher"].encoder
    H = searcher.backbone.encode_text([with_article(x) for x in queries]).float().numpy().astype(np.float64)
    E = enc.encode_phrases(queries).astype(np.float64)
    show, all5, marked, hub, rule = Counter(), Counter(), Counter(), Counter(), Counter()
    for q, x in enumerate(queries):
        truth = np.array([x in objs for objs in have])
        scores, rules = rankings(H[q], E[q], view, view["matcher"].competitors([x], view["F"])[0])
        flags = rules["argmax (search)"]
        plain = np.argsort(-scores["plain CLIP h.I (search)"], kind="stable")
        for r, f in rules.items():  # flag rules under the plain ranking: the two targets
            if x in names:
                rule[r + " both"] += int((f & truth)[plain[:5]].sum())
            else:
                rule[r + " absent"] += int(f[plain[:10]].sum())
        for name, s in scores.items():
            top = np.argsort(-s, kind="stable")
            if x in names:
                show[name] += int(truth[top[:5]].sum())
                all5[name] += int(truth[top[:5]].all())
                if name.startswith("plain"):
                    hub.update(top[:5].tolist())
            else:
                marked[name] += int(flags[top[:10]].sum())
    n = len(names)
    occ = np.array(list(hub.values()))
    out = {"objects": n, "top5_show": {k: v / (5 * n) for k, v in show.items()},
           "all5_show": {k: v / n for k, v in all5.items()},
           "absent_top10_marked": {k: marked[k] / (10 * max(len(absent_names), 1)) for k in show},
           "flag_rules": {r: {"present_top5_match_and_show": rule[r + " both"] / (5 * n),
                              "absent_top10_marked": rule[r + " absent"] / (10 * max(len(absent_names), 1))}
                          for r in rules},
           "hubness": {"distinct_images_in_top5": len(hub), "slots": 5 * n, "max_lists_per_image": int(occ.max()),
                       "slots_held_by_images_in_5_or_more_lists": float(occ[occ >= 5].sum() / occ.sum())}}
    # whole captions (one per scene of the index): plain vs the bank log-odds
    caption = {}
    with open(world / "retrieval_test.csv", newline="") as f:
        for row in csv.DictReader(f):
            caption[row["filepath"].removeprefix("images/")] = json.loads(row["captions"])[0]
    texts = [caption[p] for p in view["paths"]]
    C = np.concatenate([searcher.backbone.encode_text(texts[i:i + 256]).float().numpy()
                        for i in range(0, len(texts), 256)]).astype(np.float64)
    S = C @ view["F"].T
    own = np.arange(len(texts))[:, None]
    out["caption_r_at_5"] = {name: float((np.argsort(-R, 1)[:, :5] == own).any(1).mean())
                             for name, R in (("plain", S), ("bank log-odds", view["scale"] * S - view["lse"][None]))}
    # what the backbone sees: X beats every world name the scene does not show (prompt ensembles)
    vocab = sorted({o for objs in objects.values() for o in objs})
    V = enc.encode_phrases(vocab).astype(np.float64) @ view["F"].T  # (C, M)
    index_of = {o: i for i, o in enumerate(vocab)}
    seen, lone, multi = np.zeros(n), [], []
    for j, x in enumerate(names):
        for i, objs in enumerate(have):
            if x in objs:
                absent_rows = [index_of[o] for o in vocab if o not in objs]
                ok = bool(V[index_of[x], i] > V[absent_rows, i].max())
                seen[j] += ok
                (lone if len(objs) == 1 else multi).append(ok)
    out["backbone_sees_x"] = {"lone_scenes": float(np.mean(lone)), "scenes_with_2_or_3_objects": float(np.mean(multi)),
                              "scenes_per_object": float(np.mean([counts[x] for x in names])),
                              "lone_scenes_per_object": float(np.mean([sum(o == {x} for o in have) for x in names])),
                              "queries_with_5_seen_scenes": float(np.mean(seen >= 5)),
                              "top5_ceiling": float(np.minimum(5, seen).sum() / (5 * n))}
    return out


def print_variants(name: str, v: dict) -> None:
    print(f"{name} ({v['objects']} present objects): top-5 precision of 'a X' [share of queries with all 5 showing X] "
          "/ absent objects' top 10 marked as matches, per ranking:")
    for k in v["top5_show"]:
        print(f"   {k:40s} {v['top5_show'][k]:.3f} [{v['all5_show'][k]:.3f}] / {v['absent_top10_marked'][k]:.3f}")
    for r, d in v["flag_rules"].items():
        print(f"   flag rule {r:16s} (plain ranking): present top 5 match and show X {d['present_top5_match_and_show']:.3f}, "
              f"absent top 10 marked {d['absent_top10_marked']:.3f}")
    h, b, c = v["hubness"], v["backbone_sees_x"], v["caption_r_at_5"]
    print(f"   hubness: {h['distinct_images_in_top5']} distinct images in {h['slots']} top-5 slots, an image in at most "
          f"{h['max_lists_per_image']} lists, images in >= 5 lists hold {h['slots_held_by_images_in_5_or_more_lists']:.1%}")
    print(f"   whole-caption R@5: plain {c['plain']:.3f}, bank log-odds {c['bank log-odds']:.3f}")
    print(f"   backbone: X beats every world name the scene lacks in {b['lone_scenes']:.1%} of lone scenes, "
          f"{b['scenes_with_2_or_3_objects']:.1%} of 2-3-object scenes ({b['scenes_per_object']:.1f} scenes per object, "
          f"{b['lone_scenes_per_object']:.1f} lone); {b['queries_with_5_seen_scenes']:.1%} of objects have >= 5 such "
          f"scenes; top-5 ceiling {b['top5_ceiling']:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/search-match"))
    ap.add_argument("--absent", type=int, default=10, help="objects left out of the lacking index")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--variants", action="store_true", help="also measure label-free ranking variants")
    ap.add_argument("--only-variants", action="store_true", help="measure only the ranking variants")
    ap.add_argument("--no-vocabulary", dest="vocabulary", action="store_false", help="build the indexes without "
                    "the match test's open vocabulary (IndexConfig(vocabulary=False): the bank alone)")
    args = ap.parse_args()
    world = args.dir / "world"
    if not (world / "world.json").exists():
        build_world(world, WorldConfig(seed=args.seed), progress=False, parts=("test",))
    objects = scene_objects(world)
    counts = Counter(o for objs in objects.values() for o in objs)
    frequent = [o for o, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    rng = np.random.default_rng(args.seed)
    left_out = sorted(rng.choice(sorted(counts), size=args.absent, replace=False).tolist())

    tag = "" if args.vocabulary else "-bank"
    full = Searcher(index(world / "images", args.dir / f"full{tag}.index", args.vocabulary), threads=1)
    lacking_dir = lacking_folder(world, objects, set(left_out), args.dir / f"lacking-{args.seed}")
    lacking = Searcher(index(lacking_dir, args.dir / f"lacking-{args.seed}{tag}.index", args.vocabulary), threads=1)
    kept = {p: o for p, o in objects.items() if not o & set(left_out)}

    unseen = sorted(c.name for c in unseen_concepts())
    if args.variants or args.only_variants:
        ranks = {"lacking": variants(lacking, kept, left_out, world), "full": variants(full, objects, unseen, world)}
        print_variants(f"seed {args.seed}, lacking index (absent: the {len(left_out)} left out)", ranks["lacking"])
        print_variants(f"seed {args.seed}, full index (absent: the {len(unseen)} unseen concepts)", ranks["full"])
        if args.only_variants:
            if args.json:
                args.json.write_text(json.dumps({"seed": args.seed, "variants": ranks}, indent=1))
            return
    t = time.perf_counter()
    out = {"seed": args.seed, "vocabulary": args.vocabulary, "scenes": len(objects), "lacking_scenes": len(kept),
           "tau_full": full.search("a cat", 1).match_test["tau"],
           "tau_lacking": lacking.search("a cat", 1).match_test["tau"],
           "negation": negation(full, world, objects, frequent),
           "absent": absent(lacking, left_out),
           "unseen": absent(full, unseen),
           "present_lacking": present(lacking, kept),
           "present_full": present(full, objects)}
    out["seconds"] = round(time.perf_counter() - t, 1)
    neg = out["negation"]
    print(f"seed {args.seed}{'' if args.vocabulary else ' (indexes without the open vocabulary)'}: {len(objects)} scenes; lacking index: {len(kept)} scenes without {left_out}")
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
    if args.variants:
        out["variants"] = ranks
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
