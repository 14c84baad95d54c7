"""Training data for CLIPGlasses: captions, images and labels from the CSV formats, as frozen-CLIP features.

Sources (any mix; ``read_sources`` picks them from a world folder or one file). The public formats are read
by the :mod:`sayno.data` readers, so a file ``sayno eval`` accepts trains too, and rows they drop are kept in
``Sources.bad_rows`` (reported by training, never dropped silently); image keys are paths as those readers
resolve them (relative to the CSV's folder):

- the world's ``negation_<split>.csv``: filepath, caption, positive_objects (the image's objects),
  negated_objects (JSON list), hedged, template, true, group, hard_negative;
- CC-Neg pairs, ``ccneg_<split>.csv``: image_path, caption (true), negative_caption (false), and optionally
  negated_object (what the *negative* caption negates);
- NegBench retrieval CSVs: filepath, captions (list literal), and optionally positive_objects (the image's
  objects) and negative_objects (what the captions negate);
- NegBench MCQ CSVs, ``mcq_<split>.csv``: image_path, correct_answer, caption_0..3: the correct caption is
  true for the image, the other three false.

Labels (docs/GLASSES.md, "Labels"):

- *Negated objects*: the dataset's label where it has one; otherwise derived from the negation analyser
  (:func:`sayno.glasses.analysis.analyse_texts`): the object names found in each negated phrase
  (``ObjectVocabulary``, built from every object name in the data plus the world's plurals), or, when no known
  name is found, the phrase itself ("without any dogs" -> "dogs"). Each slot phrase
  (:func:`~sayno.glasses.analysis.slot_phrases`: a repeated phrase counts once) gets the label object it names
  (matched by name, else by position).
- *Affirmed objects*: the known object names found outside every negated phrase.
- *Truth* of caption c on image i, where both are known: every affirmed object in i and no negated object in
  i. A dataset's own ``true`` value overrides it for the caption's own image. Unknown elsewhere.
- *Observed pairs* (the contrastive positives): a caption with the image it was written for, i.e. ``true=1``
  rows, retrieval captions, CC-Neg true captions, and *hedged* rows even when false. The world attaches a
  hedged caption to the image where it is wrong at a fixed rate (25%): treating such rows as observed is
  what lets the data teach hedges a smaller ``lambda``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sayno.data import BadRow, DataError, read_ccneg, read_csv_rows, read_mcq_csv, read_retrieval_csv
from sayno.features import encode_images, encode_texts
from sayno.glasses.analysis import analyse_texts, slot_phrases
from sayno.glasses.config import phrase_prompt
from sayno.negation import ObjectVocabulary
from sayno.world.concepts import load_concepts

NEGATION_COLUMNS = ("filepath", "caption", "negated_objects")


class GlassesDataError(DataError):
    """A training file or folder that cannot be used at all."""


@dataclass
class CaptionRecord:
    caption: str
    image: str  # the image the row is about (its path as the reader resolved it)
    observed: bool  # written for this image (a contrastive positive)
    true: int | None = None  # truth on ``image`` when the dataset says
    negated: list[str] | None = None  # negated object labels, when the dataset says
    hedged: bool | None = None
    source: str = ""


@dataclass
class Sources:
    """Captions and images read from one or more files, and the rows the readers had to drop."""

    captions: list[CaptionRecord] = field(default_factory=list)
    objects: dict[str, frozenset[str]] = field(default_factory=dict)  # image -> its objects, when known
    groups: dict[str, str] = field(default_factory=dict)  # image -> scene group (kept in one batch)
    root: Path = Path(".")
    files: list[str] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)

    def extend(self, other: Sources) -> None:
        self.captions.extend(other.captions)
        self.objects.update(other.objects)
        for k, v in other.groups.items():
            self.groups.setdefault(k, v)
        self.files.extend(other.files)
        self.bad_rows.extend(other.bad_rows)

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys([c.image for c in self.captions]))


# ---------------------------------------------------------------------------------------------- readers
def _json_list(text: str | None) -> list[str] | None:
    """A JSON list of strings (a bare string is one item); None for an empty cell. Raises ValueError."""
    if text is None or not text.strip():
        return None
    value = json.loads(text)
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON list, got {text[:60]!r}")  # noqa: TRY004 - a bad cell, not a bug
    return [str(v) for v in value]


def _flag(text: str | None, column: str) -> int | None:
    """An optional 0/1 cell; None when empty. Raises ValueError naming ``column``."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise ValueError(f"{column} must be 0 or 1, got {text[:20]!r}")
    return int(value)


def _image_key(value: str, base: Path, reasons: list[str]) -> str:
    """The image path of a row (relative ones under ``base``) as the key of :class:`Sources`."""
    p = Path(value.strip()).expanduser()
    p = p if p.is_absolute() else base / p
    if not value.strip():
        reasons.append("empty filepath")
    elif not p.is_file():
        reasons.append(f"image not found: {p}")
    return str(p)


def read_negation_csv(path: str | Path) -> Sources:
    """The emoji world's ``negation_<split>.csv`` (its own labelled format; see module doc).

    A row with an empty caption, a bad ``negated_objects``/``positive_objects`` list, a ``true``/``hedged``
    that is not 0/1 or a missing image is a bad row (in ``Sources.bad_rows``)."""
    path = Path(path)
    out = Sources(root=path.parent, files=[str(path)])
    _, records = read_csv_rows(path, NEGATION_COLUMNS, "negation")
    for line, row in records:
        if isinstance(row, str):
            out.bad_rows.append(BadRow(str(path), line, row))
            continue
        reasons: list[str] = []
        img = _image_key(row["filepath"], path.parent, reasons)
        try:
            negated = _json_list(row["negated_objects"]) or []
            objects = _json_list(row.get("positive_objects"))
            true, hedged = _flag(row.get("true"), "true"), _flag(row.get("hedged"), "hedged")
        except ValueError as e:
            reasons.append(str(e).splitlines()[0])
        if not row["caption"].strip():
            reasons.append("empty caption")
        if reasons:
            out.bad_rows.append(BadRow(str(path), line, "; ".join(reasons)))
            continue
        true = 1 if true is None else true
        hedged_flag = None if hedged is None else bool(hedged)
        out.captions.append(CaptionRecord(row["caption"], img, observed=bool(true) or bool(hedged_flag), true=true,
                                          negated=negated, hedged=hedged_flag, source=path.name))
        if objects is not None:
            out.objects[img] = frozenset(objects)
        if row.get("group", "") != "":
            out.groups[img] = f"{path.name}:{row['group']}"
    return out


def read_ccneg_sources(path: str | Path) -> Sources:
    """CC-Neg pairs (:func:`sayno.data.read_ccneg`): the true caption is observed, the negative caption is
    false for the image (its ``negated_object``, when given, is the label)."""
    path = Path(path)
    data = read_ccneg(path)
    out = Sources(root=path.parent, files=[str(path)], bad_rows=list(data.bad_rows))
    for img, caption, negative, obj in zip(data.image_paths, data.captions, data.negative_captions,
                                           data.negated_objects):
        out.captions.append(CaptionRecord(caption, str(img), observed=True, true=1, source=path.name))
        out.captions.append(CaptionRecord(negative, str(img), observed=False, true=0,
                                          negated=[obj] if obj else None, source=path.name))
    return out


def read_retrieval_sources(path: str | Path) -> Sources:
    """NegBench retrieval (:func:`sayno.data.read_retrieval_csv`): every caption is true for (and written
    for) its image; ``negative_objects`` label what the image's captions negate, ``positive_objects`` are the
    image's objects (unknown when empty)."""
    path = Path(path)
    data = read_retrieval_csv(path)
    out = Sources(root=path.parent, files=[str(path)], bad_rows=list(data.bad_rows))
    for caption, i in zip(data.captions, data.caption_to_image.tolist()):
        img = str(data.image_paths[i])
        out.captions.append(CaptionRecord(caption, img, observed=True, true=1,
                                          negated=list(data.negative_objects[i]) or None, source=path.name))
        if data.positive_objects[i]:
            out.objects[img] = frozenset(data.positive_objects[i])
    return out


def read_mcq_sources(path: str | Path) -> Sources:
    """NegBench MCQ (:func:`sayno.data.read_mcq_csv`): the correct caption is observed (true) for the image,
    the other three are false."""
    path = Path(path)
    data = read_mcq_csv(path)
    out = Sources(root=path.parent, files=[str(path)], bad_rows=list(data.bad_rows))
    for img, options, answer in zip(data.image_paths, data.captions, data.answers.tolist()):
        for k, caption in enumerate(options):
            out.captions.append(CaptionRecord(caption, str(img), observed=k == answer, true=int(k == answer),
                                              source=path.name))
    return out


def read_file(path: str | Path) -> Sources:
    """One CSV of any supported format, recognised by its header."""
    path = Path(path)
    header, _ = read_csv_rows(path, (), "training")
    if "negated_objects" in header:
        return read_negation_csv(path)
    if "negative_caption" in header:
        return read_ccneg_sources(path)
    if "correct_answer" in header:
        return read_mcq_sources(path)
    if "captions" in header:
        return read_retrieval_sources(path)
    raise GlassesDataError(f"{path}: unknown training format (columns {', '.join(header)})")


def read_sources(data: str | Path, split: str = "train") -> Sources:
    """A world folder (``negation_<split>.csv`` plus ``ccneg_<split>.csv``, ``retrieval_neg_<split>.csv``,
    ``mcq_<split>.csv`` and the predicates' ``pred_mcq_<split>.csv`` / ``pred_ccneg_<split>.csv`` when present) or one
    or several CSV files (comma-separated)."""
    data_s = str(data)
    if "," in data_s:
        out = Sources()
        for part in data_s.split(","):
            out.extend(read_sources(part, split))
        out.root = Path(data_s.split(",")[0]).parent
        return out
    path = Path(data_s).expanduser().absolute()  # image keys stay valid whatever the working folder
    if path.is_dir():
        names = [f"negation_{split}.csv", f"ccneg_{split}.csv", f"retrieval_neg_{split}.csv", f"mcq_{split}.csv",
                 f"pred_mcq_{split}.csv", f"pred_ccneg_{split}.csv"]  # world 4's predicates, when built
        found = [path / n for n in names if (path / n).exists()]
        if not found:
            raise GlassesDataError(f"{path}: no {names[0]} (or CC-Neg / retrieval CSVs) for split {split!r}")
        out = Sources(root=path)
        for f in found:
            out.extend(read_file(f))
        out.root = path
        return out
    if not path.exists():
        raise GlassesDataError(f"{path}: no such file or folder")
    return read_file(path)


def split_sources(src: Sources, val_fraction: float, seed: int = 0) -> tuple[Sources, Sources]:
    """Hold out a fraction of scene groups (images when no groups) as a validation split."""
    keys = sorted({src.groups.get(im, im) for im in src.images})
    rng = np.random.default_rng(seed)
    n_val = max(1, round(val_fraction * len(keys))) if len(keys) > 1 else 0
    val_keys = set(rng.permutation(keys)[:n_val].tolist())
    return subset(src, lambda im: src.groups.get(im, im) not in val_keys), subset(
        src, lambda im: src.groups.get(im, im) in val_keys)


def subset(src: Sources, keep: Callable[[str], bool]) -> Sources:
    """The captions of the images ``keep`` says yes to (with their objects and groups; every bad row)."""
    out = Sources(root=src.root, files=list(src.files), bad_rows=list(src.bad_rows))
    out.captions = [c for c in src.captions if keep(c.image)]
    imgs = set(out.images)
    out.objects = {k: v for k, v in src.objects.items() if k in imgs}
    out.groups = {k: v for k, v in src.groups.items() if k in imgs}
    return out


def subsample_groups(src: Sources, fraction: float, seed: int = 0) -> Sources:
    """Keep a random ``fraction`` of scene groups (the low-resource setting)."""
    if fraction >= 1.0:
        return src
    keys = sorted({src.groups.get(im, im) for im in src.images})
    rng = np.random.default_rng([seed, 7])
    n = max(1, round(fraction * len(keys)))
    keep = set(rng.permutation(keys)[:n].tolist())
    return subset(src, lambda im: src.groups.get(im, im) in keep)


def train_val_sources(data: str | Path | Sources, val_data: str | Path | Sources | None, *,
                      val_fraction: float, fraction: float, seed: int) -> tuple[Sources, Sources]:
    """Training and validation sources. Validation: ``val_data``; else a world folder's ``*_val.csv``;
    else ``val_fraction`` of the scene groups. Then training keeps ``fraction`` of its scene groups."""
    src = data if isinstance(data, Sources) else read_sources(data, "train")
    if val_data is not None:
        val_src = val_data if isinstance(val_data, Sources) else read_sources(val_data, "val")
    elif not isinstance(data, Sources) and Path(str(data)).is_dir() and (Path(data) / "negation_val.csv").exists():
        val_src = read_sources(data, "val")
    else:
        src, val_src = split_sources(src, val_fraction, seed)
    return subsample_groups(src, fraction, seed), val_src


def world_vocabulary(names: Sequence[str]) -> ObjectVocabulary:
    """Vocabulary of the given object names, with the world's plurals for names it knows."""
    wanted = set(names)
    plurals = {c.name: c.plural for c in load_concepts() if c.name in wanted}
    return ObjectVocabulary.from_names(sorted(wanted), plurals, analyse=lambda t: analyse_texts([t])[0])


# ---------------------------------------------------------------------------------------------- labels
@dataclass
class Labelled:
    """Per caption and per slot labels (no features yet)."""

    texts: list[str]
    home: np.ndarray  # (N,) image index
    observed: np.ndarray  # (N,) bool
    home_true: np.ndarray  # (N,) int8, -1 unknown
    is_negated: np.ndarray  # (N,) bool: label for the detector
    hedged: np.ndarray  # (N,) bool
    affirmed: list[frozenset[str] | None]
    negated: list[frozenset[str]]
    images: list[str]
    image_objects: list[frozenset[str] | None]
    image_group: np.ndarray  # (M,) int
    # phrase slots (one per slot phrase of the analysis)
    slot_owner: np.ndarray
    slot_phrase: list[str]
    slot_hedged: np.ndarray
    slot_target: list[str]  # label object name, or the phrase itself (derived)
    slot_derived: np.ndarray  # (P,) bool
    vocabulary: list[str]
    stats: dict = field(default_factory=dict)


def label(src: Sources) -> Labelled:
    """Derive every label (see module doc) for the captions of ``src``."""
    images = src.images
    img_index = {im: i for i, im in enumerate(images)}
    names = set()
    for objs in src.objects.values():
        names.update(objs)
    for c in src.captions:
        names.update(c.negated or [])
    vocab = world_vocabulary(sorted(names)) if names else None
    group_keys = {g: i for i, g in enumerate(dict.fromkeys(src.groups.get(im, im) for im in images))}
    image_group = np.array([group_keys[src.groups.get(im, im)] for im in images], dtype=np.int64)
    texts, home, observed, home_true, is_neg, hedged, affirmed, negated = [], [], [], [], [], [], [], []
    s_owner, s_phrase, s_hedged, s_target, s_derived = [], [], [], [], []
    unmatched_labels = 0
    analyses = analyse_texts([c.caption for c in src.captions])
    for ci, (c, a) in enumerate(zip(src.captions, analyses)):
        phrases = slot_phrases(a)
        texts.append(c.caption)
        home.append(img_index[c.image])
        observed.append(c.observed)
        home_true.append(-1 if c.true is None else int(c.true))
        hedged.append(a.hedged if c.hedged is None else bool(c.hedged))
        phrase_objs = [vocab.find(p.text) if vocab else [] for p in phrases]
        if c.negated is not None:
            labels = list(dict.fromkeys(c.negated))
        else:
            labels = list(dict.fromkeys(o for objs in phrase_objs for o in objs))
        negated.append(frozenset(labels))
        is_neg.append(bool(labels) or bool(phrases))
        affirmed.append(frozenset(vocab.affirmed(c.caption)) if vocab else None)
        remaining = list(labels)
        for k, p in enumerate(phrases):
            target = next((o for o in phrase_objs[k] if o in remaining), None)
            if target is None and len(phrases) == len(labels):
                target = labels[k]
            derived = target is None or c.negated is None  # no dataset label to match: derived
            if target is None:
                target = phrase_objs[k][0] if phrase_objs[k] else p.text
            elif target in remaining:
                remaining.remove(target)
            s_owner.append(ci)
            s_phrase.append(p.text)
            s_hedged.append(p.hedged)
            s_target.append(target)
            s_derived.append(derived)
        unmatched_labels += len(remaining) if phrases else len(labels)
    n_neg = int(sum(bool(x) for x in negated))
    stats = {"captions": len(texts), "images": len(images), "negated_captions": n_neg,
             "slots": len(s_owner), "derived_slot_labels": int(sum(s_derived)),
             "phrase_slot_labels": int(sum(t not in names for t in s_target)),
             "labelled_objects_without_phrase": unmatched_labels, "vocabulary": len(names)}
    return Labelled(texts, np.array(home, np.int64), np.array(observed, bool), np.array(home_true, np.int8),
                    np.array(is_neg, bool), np.array(hedged, bool), affirmed, negated, images,
                    [src.objects.get(im) for im in images], image_group, np.array(s_owner, np.int64), s_phrase,
                    np.array(s_hedged, bool), s_target, np.array(s_derived, bool), sorted(names), stats)


# -------------------------------------------------------------------------------------------- features
def encode_texts_np(backbone, texts: Sequence[str], layers: bool = False, cache=None,
                    progress: bool = False) -> np.ndarray:
    """Frozen-CLIP text features (:func:`sayno.features.encode_texts`) as float32 numpy: (n, D), or (n, L, D)
    with ``layers``."""
    texts = list(texts)
    if not texts:
        shape = (0, backbone.num_text_layers, backbone.embed_dim) if layers else (0, backbone.embed_dim)
        return np.zeros(shape, np.float32)
    return np.asarray(encode_texts(backbone, texts, cache=cache, layers=layers, progress=progress),
                      dtype=np.float32)


def encode_images_np(backbone, paths: Sequence[str], cache=None, batch_size: int = 256,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(features (M, D) float32, NaN rows where not ok; ok (M,) bool) of image files
    (:func:`sayno.features.encode_images`)."""
    res = encode_images(backbone, [str(p) for p in paths], cache=cache, batch_size=batch_size, progress=progress)
    return np.asarray(res.features, dtype=np.float32), np.asarray(res.ok_mask, dtype=bool)


@dataclass
class FeatureSet:
    """Everything training needs, as tensors (see :class:`Labelled` for the meaning of each field)."""

    lab: Labelled
    h: torch.Tensor  # (N, D)
    base: torch.Tensor  # (N, D) embedding of the affirmative remainder (h for captions without phrases)
    layers: torch.Tensor  # (N, L, D)
    images: torch.Tensor  # (M, D)
    image_ok: torch.Tensor  # (M,) bool
    slot_source: torch.Tensor  # (P, D) embedding of the phrase's prompt
    slot_target: torch.Tensor  # (P, D) embedding of the label object's prompt
    A: torch.Tensor  # (N, V) affirmed objects
    NG: torch.Tensor  # (N, V) negated objects
    cap_known: torch.Tensor  # (N,) bool: affirmed objects known
    O: torch.Tensor  # (M, V) image objects
    img_known: torch.Tensor  # (M,) bool
    vocab_feats: torch.Tensor  # (V, D) embedding of each vocabulary object's prompt

    def truth(self, caps: torch.Tensor, imgs: torch.Tensor) -> torch.Tensor:
        """(len(caps), len(imgs)) int8: 1 true, 0 false, -1 unknown."""
        A, NG, O = self.A[caps], self.NG[caps], self.O[imgs]
        ok = ((A @ (1 - O).T) == 0) & ((NG @ O.T) == 0)
        known = self.cap_known[caps].unsqueeze(1) & self.img_known[imgs].unsqueeze(0)
        out = torch.where(known, ok.to(torch.int8), torch.full_like(ok, -1, dtype=torch.int8))
        home = torch.as_tensor(self.lab.home)[caps]
        ht = torch.as_tensor(self.lab.home_true)[caps]
        match = home.unsqueeze(1) == imgs.unsqueeze(0)
        given = (ht >= 0).unsqueeze(1) & match
        return torch.where(given, ht.unsqueeze(1).expand_as(out), out)


def build_features(src: Sources, backbone, *, prompt: str = "This image shows {}.", cache=None,
                   progress: bool = False) -> FeatureSet:
    """Label ``src`` and encode everything with the frozen ``backbone``."""
    lab = label(src)
    layers = encode_texts_np(backbone, lab.texts, layers=True, cache=cache, progress=progress)
    h = layers[:, -1]
    # the final layer of encode_text_layers equals encode_text (normalised) by the Backbone contract
    paths = [str(src.root / p) for p in lab.images]
    img, ok = encode_images_np(backbone, paths, cache=cache, progress=progress)
    with_slots = sorted(set(lab.slot_owner.tolist()))
    base = h.copy()
    if with_slots:
        rem = [a.affirmative_text for a in analyse_texts([lab.texts[i] for i in with_slots])]
        base[with_slots] = encode_texts_np(backbone, rem, cache=cache)
    prompts = sorted(set(lab.slot_phrase) | set(lab.slot_target) | set(lab.vocabulary))
    pf = encode_texts_np(backbone, [phrase_prompt(prompt, p) for p in prompts], cache=cache)
    pidx = {p: i for i, p in enumerate(prompts)}
    src_f = pf[[pidx[p] for p in lab.slot_phrase]] if lab.slot_phrase else np.zeros((0, h.shape[1]), np.float32)
    tgt_f = pf[[pidx[p] for p in lab.slot_target]] if lab.slot_target else np.zeros((0, h.shape[1]), np.float32)
    V = max(1, len(lab.vocabulary))
    vidx = {n: i for i, n in enumerate(lab.vocabulary)}

    def onehot(sets) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.zeros((len(sets), V))
        known = torch.zeros(len(sets), dtype=torch.bool)
        for i, s in enumerate(sets):
            if s is None:
                continue
            known[i] = True
            for o in s:
                if o in vidx:
                    m[i, vidx[o]] = 1
        return m, known

    A, cap_known = onehot(lab.affirmed)
    NG, _ = onehot(lab.negated)
    O, img_known = onehot(lab.image_objects)
    return FeatureSet(lab, torch.as_tensor(h.copy()), torch.as_tensor(base), torch.as_tensor(layers),
                      torch.as_tensor(img),
                      torch.as_tensor(ok), torch.as_tensor(src_f), torch.as_tensor(tgt_f), A, NG, cap_known, O,
                      img_known, torch.as_tensor(pf[[pidx[v] for v in lab.vocabulary]]) if lab.vocabulary
                      else torch.zeros((0, h.shape[1])))
