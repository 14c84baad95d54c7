"""Write the emoji world's datasets to disk, in the public benchmark formats.

Layout of ``OUT`` (paths inside the CSVs are relative to ``OUT``)::

    world.json                  what was built: seed, style, size, concept splits, counts, hedge error rate
    images/<split>/<id>.png     scenes of the train / val / test splits (scene groups, see below)
    negation_<split>.csv        one row per caption: filepath, caption, positive_objects, negated_objects,
                                hedged, template, true, group, hard_negative (CLIPGlasses training data)
    ccneg_<split>.csv           CC-Neg style: image_path, caption, negative_caption, negated_object
    mcq_<split>.csv             NegBench MCQ: image_path, correct_answer, caption_0..3, correct_answer_template
    retrieval_<split>.csv       NegBench retrieval, affirmative captions: filepath, captions, positive_objects,
                                negative_objects, image_id
    retrieval_neg_<split>.csv   the same with negated captions ("a dog but no cat")
    captions_train.csv          filepath, caption: affirmative image-caption pairs (CLIPN training)
    classify/<class>/*.png      one object per image, every pretraining concept (zero-shot classification)
    ood/id_classes.txt          ID class names; ood/id/<class>/, ood/ood_seen/<class>/, ood/ood_unseen/<class>/

A *scene group* is two images: ``a`` shows objects P, ``b`` shows P plus one more object B. "P but no B" is
true for ``a`` and false for ``b``: every negated caption has a hard negative image.
Hedged negations ("P, probably no B") are attached to ``b`` (where they are wrong) at ``hedge_error_rate``.
Every split draws from its own random stream ``default_rng([seed, split id])``; the style changes only the
art, so ``--style noto`` with the same seed gives the same scenes drawn differently.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

from sayno.config import from_mapping
from sayno.errors import InputError
from sayno.world.captions import Caption, affirmative, hybrid, negation_only, neither_nor
from sayno.world.concepts import Concept, load_concepts, pretrain_concepts, unseen_concepts
from sayno.world.scenes import Scene, make_scene, render_scene, sample_counts
from sayno.world.styles import get_style

PARTS = ("train", "val", "test", "captions", "classify", "ood")
SPLIT_IDS = {"pretrain": 1, "captions": 2, "train": 3, "val": 4, "test": 5, "classify": 6, "ood": 7, "ood_split": 8}


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of one split: splits never share scenes."""
    return np.random.default_rng([seed, SPLIT_IDS[split]])


@dataclass
class WorldConfig:
    seed: int = 0
    style: str = "openmoji"
    size: int = 64
    train_groups: int = 3000
    val_groups: int = 300
    test_groups: int = 1000
    caption_images: int = 10000
    classify_per_class: int = 20
    ood_id_classes: int = 50
    ood_seen_classes: int = 50
    ood_id_per_class: int = 30
    ood_per_class: int = 20
    hedge_error_rate: float = 0.25

    @classmethod
    def from_dict(cls, data: dict) -> WorldConfig:
        """A config from a dict (e.g. ``world.json``'s ``"config"``); unknown keys raise ConfigError."""
        return from_mapping(cls, data, "world config")


def class_dir(name: str) -> str:
    return name.replace(" ", "_")


# ---------------------------------------------------------------------------------------------- sampling
def sample_pretrain(rng: np.random.Generator, concepts: tuple[Concept, ...], size: int = 64,
                    p_single: float = 0.35) -> tuple[Scene, Caption]:
    """One affirmative (scene, caption) pair for contrastive pretraining."""
    n = 1 if rng.random() < p_single else int(rng.integers(1, 4))
    scene = make_scene(sample_counts(concepts, rng, n_objects=n), rng, size)
    return scene, affirmative(scene.counts, rng, scene.background)


def _absent(rng: np.random.Generator, concepts: tuple[Concept, ...], present: set[str], k: int) -> list[Concept]:
    pool = [c for c in concepts if c.name not in present]
    return [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]


@dataclass
class Group:
    """Two scenes: ``a`` (objects P) and ``b`` (P plus ``extra``), and the absent concepts used in captions."""

    gid: int
    a: Scene
    b: Scene
    extra: Concept
    absent: list[Concept]


def sample_group(gid: int, rng: np.random.Generator, concepts: tuple[Concept, ...], size: int) -> Group:
    counts = sample_counts(concepts, rng, max_objects=2)
    while sum(k for _, k in counts) > 3:  # leave room for the extra object
        counts = sample_counts(concepts, rng, max_objects=2)
    present = {c.name for c, _ in counts}
    extra, *absent = _absent(rng, concepts, present, 4)
    a = make_scene(counts, rng, size)
    pos = int(rng.integers(len(counts) + 1))
    b_counts = counts[:pos] + ((extra, 1),) + counts[pos:]
    b = make_scene(b_counts, rng, size)
    return Group(gid, a, b, extra, absent)


def group_captions(g: Group, rng: np.random.Generator, hedge_error_rate: float) -> list[tuple[str, Caption, bool]]:
    """(which image: 'a' | 'b', caption, is the caption true for that image)."""
    P, B = g.a.counts, g.extra
    C, D = g.absent[0], g.absent[1]
    rows = [
        ("a", affirmative(P, rng, g.a.background), True),
        ("a", hybrid(P, B, rng), True),
        ("a", negation_only(B, rng), True),
        ("b", affirmative(g.b.counts, rng, g.b.background), True),
        ("b", hybrid(P, B, rng), False),
        ("b", negation_only(B, rng), False),
        ("b", hybrid(g.b.counts, C, rng), True),
    ]
    rows.append(("a", neither_nor(P if rng.random() < 0.5 else None, B, C, rng), True))
    rows.append(("b", negation_only(D, rng), True))
    hedged = hybrid(P, B, rng, hedged=True) if rng.random() < 0.7 else negation_only(B, rng, hedged=True)
    rows.append(("b", hedged, False) if rng.random() < hedge_error_rate else ("a", hedged, True))
    return rows


def mcq_question(scene: Scene, rng: np.random.Generator, concepts: tuple[Concept, ...],
                 template: str) -> tuple[list[str], int]:
    """Four captions, exactly one true for the scene, NegBench style; returns (captions, correct index)."""
    present = scene.counts
    names = {c.name for c, _ in present}
    a1, a2 = _absent(rng, concepts, names, 2)
    x_i = int(rng.integers(len(present)))
    x = present[x_i][0]
    rest = present[:x_i] + present[x_i + 1:]
    if template == "positive":
        correct = affirmative(present, rng)
        swapped = rest + ((a1, 1),)
        wrong = [affirmative(swapped, rng), negation_only(x, rng), hybrid(rest or ((a2, 1),), x, rng)]
    elif template == "negative":
        correct = negation_only(a1, rng)
        wrong = [negation_only(x, rng), affirmative(((a1, 1),), rng), hybrid(((a1, 1),), x, rng)]
    else:
        correct = hybrid(present, a1, rng)
        wrong = [hybrid(((a1, 1),), x, rng), affirmative(present + ((a1, 1),), rng),
                 hybrid(rest or ((a2, 1),), x, rng)]
    options = [correct.text] + [w.text for w in wrong]
    order = rng.permutation(4)
    return [options[i] for i in order], int(np.where(order == 0)[0][0])


# ---------------------------------------------------------------------------------------------- writing
def _progress(total: int, desc: str, enabled: bool) -> Iterator[int]:
    if not enabled:
        yield from range(total)
        return
    yield from track(range(total), description=desc, total=total)


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=False, compress_level=1)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def build_split(out: Path, split: str, n_groups: int, cfg: WorldConfig, progress: bool = True) -> dict:
    style = get_style(cfg.style)
    concepts = pretrain_concepts()
    rng = split_rng(cfg.seed, split)
    neg_rows, cc_rows, mcq_rows, ret_rows, retneg_rows = [], [], [], [], []
    templates = ("positive", "negative", "hybrid")
    for gid in _progress(n_groups, f"{split} scenes", progress):
        g = sample_group(gid, rng, concepts, cfg.size)
        paths = {k: f"images/{split}/{gid:06d}{k}.png" for k in "ab"}
        scenes = {"a": g.a, "b": g.b}
        for k in "ab":
            _save(render_scene(scenes[k], style), out / paths[k])
        for which, cap, true in group_captions(g, rng, cfg.hedge_error_rate):
            other = "b" if which == "a" else "a"
            neg_rows.append([paths[which], cap.text, json.dumps(list(scenes[which].names)), json.dumps(list(cap.negated)),
                             int(cap.hedged), cap.template, int(true), gid,
                             paths[other] if (cap.negated and true) else ""])
        # CC-Neg: true caption vs a caption negating an object that is present.
        cc_rows.append([paths["b"], affirmative(g.b.counts, rng, g.b.background).text if rng.random() < 0.5
                        else hybrid(g.b.counts, g.absent[0], rng).text, hybrid(g.a.counts, g.extra, rng).text,
                        g.extra.name])
        x_i = int(rng.integers(len(g.a.counts)))
        x, rest = g.a.counts[x_i][0], g.a.counts[:x_i] + g.a.counts[x_i + 1:]
        neg_cap = hybrid(rest, x, rng).text if rest else negation_only(x, rng).text
        cc_rows.append([paths["a"], affirmative(g.a.counts, rng, g.a.background).text, neg_cap, x.name])
        for k in "ab":
            t = templates[(2 * gid + (k == "b")) % 3]
            opts, ans = mcq_question(scenes[k], rng, concepts, t)
            mcq_rows.append([paths[k], ans, *opts, t])
            ret_rows.append([paths[k], json.dumps([affirmative(scenes[k].counts, rng, scenes[k].background).text]),
                             json.dumps(list(scenes[k].names)), "[]", f"{split}-{gid}{k}"])
        retneg_rows.append([paths["a"], json.dumps([hybrid(g.a.counts, g.extra, rng).text]),
                            json.dumps(list(g.a.names)), json.dumps([g.extra.name]), f"{split}-{gid}a"])
        retneg_rows.append([paths["b"], json.dumps([hybrid(g.b.counts, g.absent[0], rng).text]),
                            json.dumps(list(g.b.names)), json.dumps([g.absent[0].name]), f"{split}-{gid}b"])
    _write_csv(out / f"negation_{split}.csv", ["filepath", "caption", "positive_objects", "negated_objects", "hedged",
                                               "template", "true", "group", "hard_negative"], neg_rows)
    _write_csv(out / f"ccneg_{split}.csv", ["image_path", "caption", "negative_caption", "negated_object"], cc_rows)
    _write_csv(out / f"mcq_{split}.csv", ["image_path", "correct_answer", "caption_0", "caption_1", "caption_2",
                                          "caption_3", "correct_answer_template"], mcq_rows)
    ret_header = ["filepath", "captions", "positive_objects", "negative_objects", "image_id"]
    _write_csv(out / f"retrieval_{split}.csv", ret_header, ret_rows)
    _write_csv(out / f"retrieval_neg_{split}.csv", ret_header, retneg_rows)
    return {"groups": n_groups, "images": 2 * n_groups, "negation_captions": len(neg_rows)}


def build_captions(out: Path, cfg: WorldConfig, progress: bool = True) -> dict:
    style, concepts, rng = get_style(cfg.style), pretrain_concepts(), split_rng(cfg.seed, "captions")
    rows = []
    for i in _progress(cfg.caption_images, "caption pairs", progress):
        scene, cap = sample_pretrain(rng, concepts, cfg.size)
        path = f"images/captions/{i:06d}.png"
        _save(render_scene(scene, style), out / path)
        rows.append([path, cap.text])
    _write_csv(out / "captions_train.csv", ["filepath", "caption"], rows)
    return {"images": len(rows)}


def _single_object_images(out: Path, folder: str, classes: list[Concept], per_class: int,
                          rng: np.random.Generator, cfg: WorldConfig, progress: bool, desc: str) -> int:
    style = get_style(cfg.style)
    n = 0
    for ci in _progress(len(classes), desc, progress):
        c = classes[ci]
        for j in range(per_class):
            scene = make_scene(((c, 1),), rng, cfg.size)
            _save(render_scene(scene, style), out / folder / class_dir(c.name) / f"{j:04d}.png")
            n += 1
    return n


def build_ood(out: Path, cfg: WorldConfig, progress: bool = True) -> dict:
    pre = list(pretrain_concepts())
    order = split_rng(cfg.seed, "ood_split").permutation(len(pre))
    id_classes = [pre[i] for i in order[: cfg.ood_id_classes]]
    seen = [pre[i] for i in order[cfg.ood_id_classes: cfg.ood_id_classes + cfg.ood_seen_classes]]
    unseen = list(unseen_concepts())
    rng = split_rng(cfg.seed, "ood")
    (out / "ood").mkdir(parents=True, exist_ok=True)
    (out / "ood" / "id_classes.txt").write_text("\n".join(c.name for c in id_classes) + "\n")
    counts = {
        "id": _single_object_images(out, "ood/id", id_classes, cfg.ood_id_per_class, rng, cfg, progress, "OOD: ID"),
        "ood_seen": _single_object_images(out, "ood/ood_seen", seen, cfg.ood_per_class, rng, cfg, progress,
                                          "OOD: seen concepts"),
        "ood_unseen": _single_object_images(out, "ood/ood_unseen", unseen, cfg.ood_per_class, rng, cfg, progress,
                                            "OOD: unseen concepts"),
    }
    return {"images": counts, "id_classes": [c.name for c in id_classes], "ood_seen_classes": [c.name for c in seen],
            "ood_unseen_classes": [c.name for c in unseen]}


def build_world(out: str | Path, cfg: WorldConfig | None = None, progress: bool = True,
                parts: tuple[str, ...] = PARTS) -> dict:
    """Render every dataset of the world into ``out``; returns (and writes) the manifest ``world.json``."""
    cfg = cfg or WorldConfig()
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise InputError(f"unknown world part(s) {', '.join(map(repr, unknown))}: use {', '.join(PARTS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    get_style(cfg.style)  # fail early on a missing style
    manifest: dict = {"config": asdict(cfg), "concepts": {
        "all": len(load_concepts()), "pretrain": [c.name for c in pretrain_concepts()],
        "unseen": [c.name for c in unseen_concepts()]}, "parts": {}}
    sizes = {"train": cfg.train_groups, "val": cfg.val_groups, "test": cfg.test_groups}
    for part in parts:
        if part in sizes:
            manifest["parts"][part] = build_split(out, part, sizes[part], cfg, progress)
        elif part == "captions":
            manifest["parts"][part] = build_captions(out, cfg, progress)
        elif part == "classify":
            n = _single_object_images(out, "classify", list(pretrain_concepts()), cfg.classify_per_class,
                                      split_rng(cfg.seed, "classify"), cfg, progress, "classification images")
            manifest["parts"][part] = {"images": n, "classes": len(pretrain_concepts())}
        else:
            manifest["parts"][part] = build_ood(out, cfg, progress)
    (out / "world.json").write_text(json.dumps(manifest, indent=1))
    return manifest
