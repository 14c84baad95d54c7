"""Write the emoji world's datasets to disk, in the public benchmark formats.

Layout of ``OUT`` (paths inside the CSVs are relative to ``OUT``)::

    world.json                  what was built: version, seed, style, size, concept splits, counts, hedge error
                                rate, the negation families of each family split
    images/<split>/<id>.png     scenes of the train / val / test splits (scene groups, see below)
    negation_<split>.csv        one row per caption: filepath, caption, positive_objects, negated_objects,
                                hedged, template, true, group, hard_negative, family, family_split (CLIPGlasses
                                training data)
    ccneg_<split>.csv           CC-Neg style: image_path, caption, negative_caption, negated_object, family,
                                family_split
    mcq_<split>.csv             NegBench MCQ: image_path, correct_answer, caption_0..3, correct_answer_template,
                                family_split
    ccneg_test_trainfam.csv     the test rows whose negations come from training families (and
    ccneg_test_heldout.csv      from held-out families); the same for mcq_test
    retrieval_<split>.csv       NegBench retrieval, affirmative captions: filepath, captions, positive_objects,
                                negative_objects, image_id
    retrieval_neg_<split>.csv   the same with negated captions ("a dog but no cat"), plus family, family_split
    captions_train.csv          filepath, caption: affirmative image-caption pairs (CLIPN training)
    pred_affirm_test.csv        world 4's predicates (:func:`build_predicates`): people's activities, objects upside
    pred_mcq_test.csv           down, one object above another; MCQ / CC-Neg formats plus kind and family columns,
    pred_ccneg_test.csv         one file per kind too (``pred_mcq_test_activity.csv``) and per family split;
                                ``pred_mcq_train.csv`` / ``pred_ccneg_train.csv`` (and ``_val``): the
                                ``predicates_train`` part, training data for Glasses
    pred_retrieval_test.csv     NegBench retrieval over the predicate scenes: "a person running, with a tiger";
    pred_retrieval_neg_test.csv the hybrid "a person running but not swimming, with a tiger", whose denied
                                statement is true of the scene's twin (also one file per kind)
    classify/<class>/*.png      one object per image, every pretraining concept (zero-shot classification)
    ood/id_classes.txt          ID class names; ood/id/<class>/ and one folder per OOD set, ood/<set>/<class>/:
                                near, far, unseen_near, unseen_far (the rule: :func:`ood_split`)

A *scene group* is two images: ``a`` shows objects P, ``b`` shows P plus one more object B. "P but no B" is
true for ``a`` and false for ``b``: every negated caption has a hard negative image.
Hedged negations ("P, probably no B") are attached to ``b`` (where they are wrong) at ``hedge_error_rate``.
Negations come from the grammar of :mod:`sayno.world.captions`: the train and val splits use only its training
families; in the test split each row (a scene group's captions, a CC-Neg pair, an MCQ question, a retrieval
query) draws all its negations from the held-out families at ``heldout_fraction``, else from the training ones.
Every split draws from its own random stream ``default_rng([seed, split id])``; the style changes only the
art, so ``--style noto`` with the same seed gives the same scenes drawn differently.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sayno.cliutil import track
from sayno.config import from_mapping
from sayno.errors import InputError
from sayno.world.captions import FAMILY_SPLITS, Caption, affirmative, hybrid, negation_only, neither_nor
from sayno.world.concepts import Concept, load_concepts, pretrain_concepts, unseen_concepts
from sayno.world.predicates import KINDS as PREDICATE_KINDS
from sayno.world.predicates import (
    PREDICATE_FAMILY_SPLITS,
    affirm,
    affirm_options,
    deny,
    load_activities,
    mcq_options,
    retrieval_captions,
    sample_predicate_scene,
    undrawable_people,
)
from sayno.world.predicates import hard_negative as predicate_hard_negative
from sayno.world.scenes import Scene, make_scene, render_scene, sample_counts
from sayno.world.styles import drawable_concepts, get_style, style_coverage

PARTS = ("train", "val", "test", "captions", "classify", "ood", "predicates", "predicates_train")
#: What a world build makes unless told: every part but ``predicates_train`` (asked for, it gives Glasses predicate
#: training rows; without it a world folder trains the object-only Glasses the model cards describe)
DEFAULT_PARTS = PARTS[:-1]
#: Bumped whenever what a seed builds changes (captions, scenes, files): a cached world of another version is
#: stale (``sayno benchmark`` rebuilds it). 2: the negation grammar of 20 families, training / held-out.
#: 3: the OOD part split into near / far / unseen_near / unseen_far by category (issue 11), one random stream
#: per OOD class (a style that lacks a concept draws the others' scenes unchanged), 20 more unseen concepts.
#: 4: the predicates part (issue 25): people's activities, objects upside down, one object above another, with their
#: MCQ / CC-Neg files; the other parts' files are those of version 3 for the same seed (own random stream).
WORLD_VERSION = 4
MIN_SIZE, MAX_SIZE = 32, 4096  # image side in pixels: a scene holds up to four objects of at least 9 pixels
SPLIT_IDS = {"pretrain": 1, "captions": 2, "train": 3, "val": 4, "test": 5, "classify": 6, "ood": 7, "ood_split": 8,
             "predicates": 9, "predicates_train": 10, "predicates_val": 11, "predicates_retrieval": 12}

#: The ID categories of the OOD split, fixed by rule before any measurement (issue 11): the categories of natural
#: kinds, whose members have look-alike siblings (tiger / leopard, peach / pear), with at least 30 pretraining
#: concepts each, so that ID and near-OOD both get about 45 classes: animal (53) and food (39). "object" (63) is a
#: catch-all whose members are not near one another (a guitar, a volcano); plant (10) and vehicle (20) are too
#: small to halve.
OOD_ID_CATEGORIES = ("animal", "food")


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
    ood_id_classes: int = 45  # ID classes, shared among the ID categories in proportion to their size
    ood_seen_classes: int = 50  # at most this many classes in each of the near and far sets (pretraining concepts)
    ood_id_categories: tuple[str, ...] = OOD_ID_CATEGORIES
    ood_id_per_class: int = 30
    ood_per_class: int = 20
    hedge_error_rate: float = 0.25
    heldout_fraction: float = 0.5  # test rows whose negations come from held-out families
    predicate_scenes: int = 100  # per predicate kind: scenes of the predicates part, each with its hard negative
    predicate_train_scenes: int = 300  # per kind, the predicates_train part's training rows (its val rows: a sixth)

    def __post_init__(self) -> None:
        """One-line :class:`InputError` for sizes that cannot be rendered or counted."""
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise InputError(f"size must be {MIN_SIZE}..{MAX_SIZE} pixels (room for four objects), got {self.size}")
        counts = ("train_groups", "val_groups", "test_groups", "caption_images", "classify_per_class",
                  "ood_id_classes", "ood_seen_classes", "ood_id_per_class", "ood_per_class", "predicate_scenes",
                  "predicate_train_scenes")
        for name in counts:
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hedge_error_rate <= 1:
            raise InputError(f"hedge_error_rate must be in [0, 1], got {self.hedge_error_rate}")
        if not 0 <= self.heldout_fraction <= 1:
            raise InputError(f"heldout_fraction must be in [0, 1], got {self.heldout_fraction}")
        self.ood_id_categories = tuple(self.ood_id_categories)  # a JSON list from world.json
        known = sorted({c.category for c in load_concepts()})
        if not self.ood_id_categories or not set(self.ood_id_categories) < set(known) or len(
                set(self.ood_id_categories)) != len(self.ood_id_categories):
            raise InputError(f"ood_id_categories must be distinct categories of {', '.join(known)}, leaving at "
                             f"least one for far-OOD; got {list(self.ood_id_categories)}")

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


def group_captions(g: Group, rng: np.random.Generator, hedge_error_rate: float,
                   split: str = "training") -> list[tuple[str, Caption, bool]]:
    """(which image: 'a' | 'b', caption, is the caption true for that image); negations from the families of
    ``split`` ("training" | "held-out"; "neither ... nor" only with "training")."""
    P, B = g.a.counts, g.extra
    C, D = g.absent[0], g.absent[1]
    rows = [
        ("a", affirmative(P, rng, g.a.background), True),
        ("a", hybrid(P, B, rng, split=split), True),
        ("a", negation_only(B, rng, split=split), True),
        ("b", affirmative(g.b.counts, rng, g.b.background), True),
        ("b", hybrid(P, B, rng, split=split), False),
        ("b", negation_only(B, rng, split=split), False),
        ("b", hybrid(g.b.counts, C, rng, split=split), True),
    ]
    if split == "training":
        rows.append(("a", neither_nor(P if rng.random() < 0.5 else None, B, C, rng), True))
    rows.append(("b", negation_only(D, rng, split=split), True))
    hedged = (hybrid(P, B, rng, hedged=True, split=split) if rng.random() < 0.7
              else negation_only(B, rng, hedged=True, split=split))
    rows.append(("b", hedged, False) if rng.random() < hedge_error_rate else ("a", hedged, True))
    return rows


def mcq_question(scene: Scene, rng: np.random.Generator, concepts: tuple[Concept, ...],
                 template: str, split: str = "training") -> tuple[list[str], int]:
    """Four captions, exactly one true for the scene, NegBench style; returns (captions, correct index).
    Every negation in it comes from the families of ``split``."""
    present = scene.counts
    names = {c.name for c, _ in present}
    a1, a2 = _absent(rng, concepts, names, 2)
    x_i = int(rng.integers(len(present)))
    x = present[x_i][0]
    rest = present[:x_i] + present[x_i + 1:]
    if template == "positive":
        correct = affirmative(present, rng)
        swapped = rest + ((a1, 1),)
        wrong = [affirmative(swapped, rng), negation_only(x, rng, split=split),
                 hybrid(rest or ((a2, 1),), x, rng, split=split)]
    elif template == "negative":
        correct = negation_only(a1, rng, split=split)
        wrong = [negation_only(x, rng, split=split), affirmative(((a1, 1),), rng),
                 hybrid(((a1, 1),), x, rng, split=split)]
    else:
        correct = hybrid(present, a1, rng, split=split)
        wrong = [hybrid(((a1, 1),), x, rng, split=split), affirmative(present + ((a1, 1),), rng),
                 hybrid(rest or ((a2, 1),), x, rng, split=split)]
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


#: Scenes a worker process draws per task; a part with fewer than two tasks' worth is drawn in this process.
PAINT_CHUNK = 256


def default_workers() -> int:
    """Processes a world build draws with by default: the CPU cores this process may use, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _paint_chunk(style: str, jobs: list[tuple[Scene, Path]]) -> int:
    """Worker task: draw ``jobs`` (scene, PNG path) in ``style``; returns how many."""
    drawer = get_style(style)  # cached per process: each glyph is drawn once per worker
    for scene, path in jobs:
        _save(render_scene(scene, drawer), path)
    return len(jobs)


class _Painter:
    """Draws a build's scenes into PNG files: in this process, or in ``workers`` processes for large parts.

    Drawing is a pure function of the scene (every random choice is in the :class:`Scene`), so the files are the
    same byte for byte whichever way they are drawn.
    """

    def __init__(self, style: str, workers: int, progress: bool):
        self.style, self.workers, self.progress = style, workers, progress
        self._pool: ProcessPoolExecutor | None = None

    def paint(self, jobs: list[tuple[Scene, Path]], desc: str) -> None:
        if self.workers <= 1 or len(jobs) < 2 * PAINT_CHUNK:
            for i in _progress(len(jobs), desc, self.progress):
                _paint_chunk(self.style, jobs[i:i + 1])
            return
        if self._pool is None:  # spawned, not forked: the parent may hold torch's threads
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        futures = [self._pool.submit(_paint_chunk, self.style, jobs[i:i + PAINT_CHUNK])
                   for i in range(0, len(jobs), PAINT_CHUNK)]
        done = as_completed(futures)
        for future in (track(done, description=desc, total=len(futures)) if self.progress else done):
            future.result()  # a worker's error is raised here

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


#: File-name suffixes of a split's rows by family split: ``mcq_test_trainfam.csv``, ``mcq_test_heldout.csv``.
FAMILY_FILES = {"training": "trainfam", "held-out": "heldout"}


def _write_by_family_split(out: Path, stem: str, header: list[str], rows: list[list], split_files: bool) -> None:
    """``<stem>.csv`` with every row; with ``split_files`` also one file per family split (last column)."""
    _write_csv(out / f"{stem}.csv", header, rows)
    if split_files:
        for fs, suffix in FAMILY_FILES.items():
            _write_csv(out / f"{stem}_{suffix}.csv", header, [r for r in rows if r[-1] == fs])


def build_split(out: Path, split: str, n_groups: int, cfg: WorldConfig, painter: _Painter) -> dict:
    jobs: list[tuple[Scene, Path]] = []
    concepts = drawable_concepts(cfg.style, pretrain_concepts())
    rng = split_rng(cfg.seed, split)
    neg_rows, cc_rows, mcq_rows, ret_rows, retneg_rows = [], [], [], [], []
    templates = ("positive", "negative", "hybrid")
    heldout = cfg.heldout_fraction if split == "test" else 0.0

    def family_split() -> str:
        """The family split of the next row: held-out families only in the test split."""
        return "held-out" if heldout and rng.random() < heldout else "training"

    for gid in range(n_groups):
        g = sample_group(gid, rng, concepts, cfg.size)
        paths = {k: f"images/{split}/{gid:06d}{k}.png" for k in "ab"}
        scenes = {"a": g.a, "b": g.b}
        jobs += [(scenes[k], out / paths[k]) for k in "ab"]
        for which, cap, true in group_captions(g, rng, cfg.hedge_error_rate, family_split()):
            other = "b" if which == "a" else "a"
            neg_rows.append([paths[which], cap.text, json.dumps(list(scenes[which].names)), json.dumps(list(cap.negated)),
                             int(cap.hedged), cap.template, int(true), gid,
                             paths[other] if (cap.negated and true) else "", cap.family, cap.family_split])
        # CC-Neg: true caption vs a caption negating an object that is present.
        fs = family_split()
        negative = hybrid(g.a.counts, g.extra, rng, split=fs)
        cc_rows.append([paths["b"], affirmative(g.b.counts, rng, g.b.background).text if rng.random() < 0.5
                        else hybrid(g.b.counts, g.absent[0], rng, split=fs).text, negative.text,
                        g.extra.name, negative.family, fs])
        x_i = int(rng.integers(len(g.a.counts)))
        x, rest = g.a.counts[x_i][0], g.a.counts[:x_i] + g.a.counts[x_i + 1:]
        fs = family_split()
        negative = hybrid(rest, x, rng, split=fs) if rest else negation_only(x, rng, split=fs)
        cc_rows.append([paths["a"], affirmative(g.a.counts, rng, g.a.background).text, negative.text, x.name,
                        negative.family, fs])
        for k in "ab":
            t = templates[(2 * gid + (k == "b")) % 3]
            fs = family_split()
            opts, ans = mcq_question(scenes[k], rng, concepts, t, fs)
            mcq_rows.append([paths[k], ans, *opts, t, fs])
            ret_rows.append([paths[k], json.dumps([affirmative(scenes[k].counts, rng, scenes[k].background).text]),
                             json.dumps(list(scenes[k].names)), "[]", f"{split}-{gid}{k}"])
        for k, obj in (("a", g.extra), ("b", g.absent[0])):
            fs = family_split()
            cap = hybrid(scenes[k].counts, obj, rng, split=fs)
            retneg_rows.append([paths[k], json.dumps([cap.text]), json.dumps(list(scenes[k].names)),
                                json.dumps([obj.name]), f"{split}-{gid}{k}", cap.family, fs])
    painter.paint(jobs, f"{split} scenes")
    family_cols = ["family", "family_split"]
    _write_csv(out / f"negation_{split}.csv", ["filepath", "caption", "positive_objects", "negated_objects", "hedged",
                                               "template", "true", "group", "hard_negative", *family_cols], neg_rows)
    cc_header = ["image_path", "caption", "negative_caption", "negated_object", *family_cols]
    mcq_header = ["image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
                  "correct_answer_template", "family_split"]
    _write_by_family_split(out, f"ccneg_{split}", cc_header, cc_rows, heldout > 0)
    _write_by_family_split(out, f"mcq_{split}", mcq_header, mcq_rows, heldout > 0)
    ret_header = ["filepath", "captions", "positive_objects", "negative_objects", "image_id"]
    _write_csv(out / f"retrieval_{split}.csv", ret_header, ret_rows)
    _write_csv(out / f"retrieval_neg_{split}.csv", ret_header + family_cols, retneg_rows)
    return {"groups": n_groups, "images": 2 * n_groups, "negation_captions": len(neg_rows)}


def build_captions(out: Path, cfg: WorldConfig, painter: _Painter) -> dict:
    rng = split_rng(cfg.seed, "captions")
    concepts = drawable_concepts(cfg.style, pretrain_concepts())
    rows, jobs = [], []
    for i in range(cfg.caption_images):
        scene, cap = sample_pretrain(rng, concepts, cfg.size)
        path = f"images/captions/{i:06d}.png"
        jobs.append((scene, out / path))
        rows.append([path, cap.text])
    painter.paint(jobs, "caption pairs")
    _write_csv(out / "captions_train.csv", ["filepath", "caption"], rows)
    return {"images": len(rows)}


def build_predicates(out: Path, cfg: WorldConfig, painter: _Painter, split: str = "test") -> dict:
    """``images/predicates/``: ``cfg.predicate_scenes`` scenes per kind (:data:`~sayno.world.predicates.KINDS`),
    each beside its hard negative (``<i>a`` / ``<i>b``), and per image three rows:

    - ``pred_affirm_test``: MCQ, the true statement affirmed among three wrong affirmations of the same kind
      (:func:`~sayno.world.predicates.affirm_options`): what the backbone sees;
    - ``pred_mcq_test``: NegBench MCQ, correct answer affirmative (``positive``) or negated (``negative``),
      alternating (:func:`~sayno.world.predicates.mcq_options`);
    - ``pred_ccneg_test``: CC-Neg, the true statement affirmed against it denied;
    - (test only) ``pred_retrieval_test`` / ``pred_retrieval_neg_test``: NegBench retrieval, one caption per image
      (:func:`~sayno.world.predicates.retrieval_captions`), from their own random stream.

    Negations come from the held-out predicate families at ``cfg.heldout_fraction`` of the rows, else from the
    training ones; the world's scenes are drawn by the style, all from the random stream ``predicates``.

    ``split="train"`` / ``"val"`` (the ``predicates_train`` part, training data for Glasses): the same files named
    ``pred_*_train.csv`` / ``pred_*_val.csv`` (images in ``images/predicates_<split>/``), ``cfg.predicate_train_scenes``
    scenes per kind (a sixth of it for val), every negation from the training families, own random streams.
    """
    test = split == "test"
    rng = split_rng(cfg.seed, "predicates" if test else f"predicates_{split}")
    count = cfg.predicate_scenes if test else (cfg.predicate_train_scenes if split == "train"
                                               else max(1, cfg.predicate_train_scenes // 6))
    folder = "predicates" if test else f"predicates_{split}"
    heldout = cfg.heldout_fraction if test else 0.0
    jobs: list[tuple[Scene, Path]] = []
    affirm_rows, mcq_rows, cc_rows = [], [], []
    # retrieval rows (test only) draw from their own stream, so the other files stay as they were without them
    rrng = split_rng(cfg.seed, "predicates_retrieval")
    ret_rows, retneg_rows = [], []
    n = 0
    # a style that lacks some art draws scenes of what it has (its stream then differs from the others')
    missing = set(style_coverage(cfg.style).missing) | undrawable_people(get_style(cfg.style))
    people = {d.name for a in load_activities() for d in a.drawings}
    kinds = [k for k in PREDICATE_KINDS if k != "activity" or people - missing]

    def drawable(ps) -> bool:
        return not missing or all(p.concept.name not in missing for p in ps.scene.placed)

    for kind in kinds:
        for i in range(count):
            for _ in range(1000):
                ps = sample_predicate_scene(rng, kind, cfg.size)
                pair = {"a": ps, "b": predicate_hard_negative(ps, rng)}
                if drawable(pair["a"]) and drawable(pair["b"]):
                    break
            else:
                raise InputError(f"style {cfg.style} cannot draw {kind} scenes: too much of its art is missing")
            for k, x in pair.items():
                path = f"images/{folder}/{kind}/{i:05d}{k}.png"
                jobs.append((x.scene, out / path))
                n += 1
                opts = [affirm(st, rng).text for st in affirm_options(x, rng)]
                order = rng.permutation(4)
                affirm_rows.append([path, int(np.flatnonzero(order == 0)[0]), *(opts[j] for j in order), "positive",
                                    kind, x.true.predicate, ""])
                fs = "held-out" if rng.random() < heldout else "training"
                template = ("positive", "negative")[(i + (k == "b")) % 2]
                caps = mcq_options(x, rng, template, fs)
                order = rng.permutation(4)
                mcq_rows.append([path, int(np.flatnonzero(order == 0)[0]), *(caps[j].text for j in order), template,
                                 kind, x.true.predicate, fs])
                fs = "held-out" if rng.random() < heldout else "training"
                neg = deny(x.true, rng, fs)
                cc_rows.append([path, affirm(x.true, rng).text, neg.text, f"{x.true.subject} {x.true.predicate}",
                                kind, neg.family, fs])
                if test:
                    plain, hybrid = retrieval_captions(x, rrng)
                    ident = f"pred-{kind}-{i}{k}"
                    ret_rows.append([path, json.dumps([plain.text]), json.dumps(list(plain.positive)), "[]", ident,
                                     kind])
                    retneg_rows.append([path, json.dumps([hybrid.text]), json.dumps(list(hybrid.positive)),
                                        json.dumps(list(hybrid.negated)), ident, kind])
    painter.paint(jobs, "predicate scenes")
    mcq_header = ["image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
                  "correct_answer_template", "kind", "true_predicate", "family_split"]
    cc_header = ["image_path", "caption", "negative_caption", "negated_object", "kind", "family", "family_split"]
    for task, header, rows, by_family in (("affirm", mcq_header, affirm_rows, False),
                                          ("mcq", mcq_header, mcq_rows, test),
                                          ("ccneg", cc_header, cc_rows, test)):
        stem = f"pred_{task}_{split}"
        _write_by_family_split(out, stem, header, rows, by_family)
        for kind in kinds:
            _write_by_family_split(out, f"{stem}_{kind}", header, [r for r in rows if r[header.index("kind")] == kind],
                                   by_family)
    if test:
        ret_header = ["filepath", "captions", "positive_objects", "negative_objects", "image_id", "kind"]
        for stem, rows in (("pred_retrieval_test", ret_rows), ("pred_retrieval_neg_test", retneg_rows)):
            _write_csv(out / f"{stem}.csv", ret_header, rows)
            for kind in kinds:
                _write_csv(out / f"{stem}_{kind}.csv", ret_header, [r for r in rows if r[-1] == kind])
    return {"images": n, "kinds": kinds, "scenes_per_kind": count,
            "families": {split: list(f) for split, f in PREDICATE_FAMILY_SPLITS.items()},
            "activities": [a.predicate for a in load_activities()]}


def _single_object_images(out: Path, folder: str, classes: list[Concept], per_class: int,
                          rng: np.random.Generator, painter: _Painter, size: int, desc: str) -> int:
    jobs = [(make_scene(((c, 1),), rng, size), out / folder / class_dir(c.name) / f"{j:04d}.png")
            for c in classes for j in range(per_class)]
    painter.paint(jobs, desc)
    return len(jobs)


#: The world's OOD sets, in table order (folders ``ood/<set>/``): pretraining concepts of the ID categories that
#: are not ID (near), pretraining concepts of the other categories (far), and the never-seen concepts of the ID
#: categories and of the others.
OOD_SETS = ("near", "far", "unseen_near", "unseen_far")
OOD_RULE = ("ID: pretraining concepts of the ID categories, shared in proportion to category size; near: the other "
            "pretraining concepts of those categories; far: pretraining concepts of the other categories; "
            "unseen_near / unseen_far: never-seen concepts of the ID / other categories")


def _id_quota(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """``total`` ID classes shared among categories in proportion to ``sizes`` (largest remainder, ties to the
    earlier category); :class:`InputError` unless every category keeps at least one concept for near-OOD."""
    room = sum(sizes.values()) - len(sizes)
    if total > room:
        raise InputError(f"ood_id_classes must be at most {room} (every ID category keeps a near-OOD concept), "
                         f"got {total}")
    exact = {k: total * v / sum(sizes.values()) for k, v in sizes.items()}
    quota = {k: int(e) for k, e in exact.items()}
    for k in sorted(sizes, key=lambda k: quota[k] - exact[k])[: total - sum(quota.values())]:
        quota[k] += 1
    return quota


def ood_split(cfg: WorldConfig) -> dict[str, list[Concept]]:
    """The OOD benchmark's classes: ``{"id": [...], **{set: [...] for set in OOD_SETS}}``, each in file order.

    The rule (:data:`OOD_RULE`): per ID category (``cfg.ood_id_categories``) a seeded random share of its
    pretraining concepts is ID, the rest is near-OOD; far-OOD = pretraining concepts of every other category;
    near and far hold at most ``cfg.ood_seen_classes`` classes (a seeded sample). It depends on the seed and the
    config only, not on the style: worlds of the same seed in different styles have the same classes (a style
    that cannot draw a concept leaves its folder out).
    """
    cats = cfg.ood_id_categories
    rng = split_rng(cfg.seed, "ood_split")
    pre = pretrain_concepts()
    members = {cat: [c for c in pre if c.category == cat] for cat in cats}
    quota = _id_quota(cfg.ood_id_classes, {cat: len(m) for cat, m in members.items()})
    chosen = {members[cat][int(i)].name for cat in cats
              for i in rng.permutation(len(members[cat]))[: quota[cat]]}

    def sample(pool: list[Concept]) -> list[Concept]:
        keep = set(rng.permutation(len(pool))[: cfg.ood_seen_classes].tolist())
        return [c for i, c in enumerate(pool) if i in keep]

    unseen = unseen_concepts()
    return {"id": [c for c in pre if c.name in chosen],
            "near": sample([c for c in pre if c.category in cats and c.name not in chosen]),
            "far": sample([c for c in pre if c.category not in cats]),
            "unseen_near": [c for c in unseen if c.category in cats],
            "unseen_far": [c for c in unseen if c.category not in cats]}


def _ood_images(out: Path, folder: str, classes: list[Concept], per_class: int, cfg: WorldConfig,
                painter: _Painter, desc: str) -> int:
    """Single-object scenes of ``classes``, each class from its own random stream (seed, ood, concept index):
    a concept's scenes are the same in every style and whichever other concepts a style lacks."""
    index = {c.name: i for i, c in enumerate(load_concepts())}
    jobs = []
    for c in classes:
        rng = np.random.default_rng([cfg.seed, SPLIT_IDS["ood"], index[c.name]])
        jobs += [(make_scene(((c, 1),), rng, cfg.size), out / folder / class_dir(c.name) / f"{j:04d}.png")
                 for j in range(per_class)]
    painter.paint(jobs, desc)
    return len(jobs)


def build_ood(out: Path, cfg: WorldConfig, painter: _Painter) -> dict:
    """``ood/``: ID class folders, one folder per OOD set (:func:`ood_split`), ``id_classes.txt`` (every ID
    class, drawable or not); returns the manifest entry (rule, categories, classes and image counts per set)."""
    split = ood_split(cfg)
    drawable = {c.name for c in drawable_concepts(cfg.style, load_concepts())}
    (out / "ood").mkdir(parents=True, exist_ok=True)
    (out / "ood" / "id_classes.txt").write_text("\n".join(c.name for c in split["id"]) + "\n")
    counts = {}
    for name, classes in split.items():
        per_class = cfg.ood_id_per_class if name == "id" else cfg.ood_per_class
        counts[name] = _ood_images(out, f"ood/{name}", [c for c in classes if c.name in drawable], per_class, cfg,
                                   painter, f"OOD: {name}")
    return {"rule": OOD_RULE, "id_categories": list(cfg.ood_id_categories), "sets": list(OOD_SETS),
            "classes": {k: [c.name for c in v] for k, v in split.items()}, "images": counts,
            "id_classes": [c.name for c in split["id"]]}


def build_world(out: str | Path, cfg: WorldConfig | None = None, progress: bool = True,
                parts: tuple[str, ...] = DEFAULT_PARTS, overwrite: bool = False, workers: int | None = None
                ) -> dict:
    """Render every dataset of the world into ``out``; returns (and writes) the manifest ``world.json``.

    ``workers``: processes that draw the images (default :func:`default_workers`; 1 = this process only); the
    files do not depend on it.

    ``out`` must be new or an empty folder; an existing world (or any non-empty folder) is refused unless
    ``overwrite``, and then replaced as a whole: the world is built in a temporary folder beside ``out`` and
    swapped in at the end, so ``out`` never mixes old images with new CSVs, and a failed build leaves it as it was.
    """
    cfg = cfg or WorldConfig()
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise InputError(f"unknown world part(s) {', '.join(map(repr, unknown))}: use {', '.join(PARTS)}")
    workers = default_workers() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a whole number >= 1, got {workers!r}")
    out = _check_out(Path(out), overwrite)
    style_coverage(cfg.style)  # fail early on a missing style or too few concepts; warns about missing ones
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        work.chmod(0o755)  # mkdtemp's 0700 would make the world private
        painter = _Painter(cfg.style, workers, progress)
        try:
            manifest = _build_into(work, cfg, parts, painter)
        finally:
            painter.close()
        _swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _check_out(out: Path, overwrite: bool) -> Path:
    """``out`` if a world may be built there (see :func:`build_world`); one-line :class:`InputError` otherwise."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give a folder for the world")
    existing = next((p for p in out.parents if p.exists()), Path("."))
    if not existing.is_dir():
        raise InputError(f"{out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot write there (permission denied)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a world" if (out / "world.json").exists() else "a non-empty folder"
        raise InputError(f"{out}: already holds {what}; pass --overwrite to replace it as a whole")
    return out


def _build_into(out: Path, cfg: WorldConfig, parts: tuple[str, ...], painter: _Painter) -> dict:
    """Render ``parts`` into the (new, empty) folder ``out`` and write its manifest."""
    pretrain = drawable_concepts(cfg.style, pretrain_concepts())
    manifest: dict = {"version": WORLD_VERSION, "config": asdict(cfg), "families": {
        split: list(families) for split, families in FAMILY_SPLITS.items()}, "concepts": {
        "all": len(load_concepts()), "pretrain": [c.name for c in pretrain],
        "unseen": [c.name for c in drawable_concepts(cfg.style, unseen_concepts())],
        "missing_in_style": sorted(style_coverage(cfg.style).missing)}, "parts": {}}
    sizes = {"train": cfg.train_groups, "val": cfg.val_groups, "test": cfg.test_groups}
    for part in parts:
        if part in sizes:
            manifest["parts"][part] = build_split(out, part, sizes[part], cfg, painter)
        elif part == "captions":
            manifest["parts"][part] = build_captions(out, cfg, painter)
        elif part == "classify":
            n = _single_object_images(out, "classify", list(pretrain), cfg.classify_per_class,
                                      split_rng(cfg.seed, "classify"), painter, cfg.size, "classification images")
            manifest["parts"][part] = {"images": n, "classes": len(pretrain)}
        elif part == "predicates":
            manifest["parts"][part] = build_predicates(out, cfg, painter)
        elif part == "predicates_train":
            manifest["parts"][part] = {split: build_predicates(out, cfg, painter, split) for split in ("train", "val")}
        else:
            manifest["parts"][part] = build_ood(out, cfg, painter)
    (out / "world.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _swap_in(work: Path, out: Path) -> None:
    """Put the finished folder ``work`` at ``out``: a rename onto a missing or empty ``out``; otherwise the old
    folder is renamed aside first and removed after the new one is in place."""
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(work, out)  # onto a missing path or an empty folder (POSIX rename replaces an empty folder)
