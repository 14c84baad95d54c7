"""Training data for CLIPGlasses: captions, images and labels from the CSV formats, as frozen-CLIP features.

Sources (any mix; ``read_sources`` picks them from a world folder or one file):

- the world's ``negation_<split>.csv``: filepath, caption, positive_objects (the image's objects),
  negated_objects (JSON list), hedged, template, true, group, hard_negative;
- CC-Neg pairs, ``ccneg_<split>.csv``: image_path, caption (true), negative_caption (false), and optionally
  negated_object (what the *negative* caption negates);
- NegBench retrieval CSVs: filepath, captions (list literal), and optionally positive_objects (the image's
  objects) and negative_objects (what the captions negate);
- NegBench MCQ CSVs, ``mcq_<split>.csv``: image_path, correct_answer, caption_0..3: the correct caption is
  true for the image, the other three false.

Labels (docs/GLASSES.md, "Labels"):

- *Negated objects*: the dataset's label where it has one; otherwise derived from the lexical detector: the
  object names found in each negated phrase (``ObjectVocabulary``, built from every object name in the data
  plus the world's plurals), or, when no known name is found, the phrase itself ("without any dogs" ->
  "dogs"). Each lexical phrase gets the label object it names (matched by name, else by position).
- *Affirmed objects*: the known object names found outside every negated phrase.
- *Truth* of caption c on image i, where both are known: every affirmed object in i and no negated object in
  i. A dataset's own ``true`` value overrides it for the caption's own image. Unknown elsewhere.
- *Observed pairs* (the contrastive positives): a caption with the image it was written for, i.e. ``true=1``
  rows, retrieval captions, CC-Neg true captions, and *hedged* rows even when false. The world attaches a
  hedged caption to the image where it is wrong at a fixed rate (25%): treating such rows as observed is
  what lets the data teach hedges a smaller ``lambda``.
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sayno.errors import SaynoError
from sayno.glasses.lexical import ObjectVocabulary, analyse, article_prompt


class GlassesDataError(SaynoError, ValueError):
    """A training file that cannot be read."""


@dataclass
class CaptionRecord:
    caption: str
    image: str  # the image the row is about (path relative to the data root)
    observed: bool  # written for this image (a contrastive positive)
    true: int | None = None  # truth on ``image`` when the dataset says
    negated: list[str] | None = None  # negated object labels, when the dataset says
    hedged: bool | None = None
    source: str = ""


@dataclass
class Sources:
    """Captions and images read from one or more files."""

    captions: list[CaptionRecord] = field(default_factory=list)
    objects: dict[str, frozenset[str]] = field(default_factory=dict)  # image -> its objects, when known
    groups: dict[str, str] = field(default_factory=dict)  # image -> scene group (kept in one batch)
    root: Path = Path(".")
    files: list[str] = field(default_factory=list)

    def extend(self, other: Sources) -> None:
        self.captions.extend(other.captions)
        self.objects.update(other.objects)
        for k, v in other.groups.items():
            self.groups.setdefault(k, v)
        self.files.extend(other.files)

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys([c.image for c in self.captions]))


def _json_list(text: str | None) -> list[str] | None:
    if text is None or str(text).strip() == "":
        return None
    text = str(text)
    try:
        val = json.loads(text)
    except json.JSONDecodeError:
        try:
            val = ast.literal_eval(text)
        except (ValueError, SyntaxError) as e:
            raise GlassesDataError(f"cannot read list {text[:60]!r}") from e
    if isinstance(val, str):
        return [val]
    return [str(v) for v in val]


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_negation_csv(path: str | Path) -> Sources:
    """The world's negation CSV (see module doc)."""
    path = Path(path)
    header, rows = _rows(path)
    need = {"filepath", "caption", "negated_objects"}
    if not need <= set(header):
        raise GlassesDataError(f"{path}: a negation CSV needs columns {sorted(need)}, has {header}")
    out = Sources(root=path.parent, files=[str(path)])
    for r in rows:
        img = r["filepath"]
        true = int(r["true"]) if r.get("true", "") != "" else 1
        hedged = bool(int(r["hedged"])) if r.get("hedged", "") != "" else None
        out.captions.append(CaptionRecord(r["caption"], img, observed=bool(true) or bool(hedged), true=true,
                                          negated=_json_list(r["negated_objects"]) or [], hedged=hedged,
                                          source=path.name))
        objs = _json_list(r.get("positive_objects"))
        if objs is not None:
            out.objects[img] = frozenset(objs)
        if r.get("group", "") != "":
            out.groups[img] = f"{path.name}:{r['group']}"
    return out


def read_ccneg_csv(path: str | Path) -> Sources:
    """CC-Neg pairs: the true caption is observed, the negative caption is false for the image."""
    path = Path(path)
    header, rows = _rows(path)
    img_col = "image_path" if "image_path" in header else "filepath"
    if not {img_col, "caption", "negative_caption"} <= set(header):
        raise GlassesDataError(f"{path}: a CC-Neg CSV needs image_path, caption, negative_caption; has {header}")
    out = Sources(root=path.parent, files=[str(path)])
    for r in rows:
        img = r[img_col]
        out.captions.append(CaptionRecord(r["caption"], img, observed=True, true=1, source=path.name))
        neg = [r["negated_object"]] if r.get("negated_object") else None
        out.captions.append(CaptionRecord(r["negative_caption"], img, observed=False, true=0, negated=neg,
                                          source=path.name))
    return out


def read_retrieval_csv(path: str | Path) -> Sources:
    """NegBench retrieval CSV: every caption is true for (and written for) its image."""
    path = Path(path)
    header, rows = _rows(path)
    if not {"filepath", "captions"} <= set(header):
        raise GlassesDataError(f"{path}: a retrieval CSV needs filepath, captions; has {header}")
    out = Sources(root=path.parent, files=[str(path)])
    for r in rows:
        img = r["filepath"]
        neg = _json_list(r.get("negative_objects"))
        for cap in _json_list(r["captions"]) or []:
            out.captions.append(CaptionRecord(cap, img, observed=True, true=1, negated=neg, source=path.name))
        objs = _json_list(r.get("positive_objects"))
        if objs is not None:
            out.objects[img] = frozenset(objs)
    return out


def read_mcq_csv(path: str | Path) -> Sources:
    """NegBench MCQ CSV: the correct caption is observed (true) for the image, the other three are false."""
    path = Path(path)
    header, rows = _rows(path)
    need = {"image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3"}
    if not need <= set(header):
        raise GlassesDataError(f"{path}: an MCQ CSV needs {sorted(need)}; has {header}")
    out = Sources(root=path.parent, files=[str(path)])
    for r in rows:
        img, ans = r["image_path"], int(r["correct_answer"])
        for k in range(4):
            out.captions.append(CaptionRecord(r[f"caption_{k}"], img, observed=k == ans, true=int(k == ans),
                                              source=path.name))
    return out


def read_file(path: str | Path) -> Sources:
    """One CSV of any supported format, recognised by its header."""
    path = Path(path)
    header, _ = _rows(path)
    if "negated_objects" in header:
        return read_negation_csv(path)
    if "negative_caption" in header:
        return read_ccneg_csv(path)
    if "correct_answer" in header:
        return read_mcq_csv(path)
    if "captions" in header:
        return read_retrieval_csv(path)
    raise GlassesDataError(f"{path}: unknown training format (columns {header})")


def read_sources(data: str | Path, split: str = "train") -> Sources:
    """A world folder (``negation_<split>.csv`` plus ``ccneg_<split>.csv``, ``retrieval_neg_<split>.csv`` and
    ``mcq_<split>.csv`` when present) or one or several CSV files (comma-separated)."""
    data_s = str(data)
    if "," in data_s:
        out = Sources()
        for part in data_s.split(","):
            out.extend(read_sources(part, split))
        out.root = Path(data_s.split(",")[0]).parent
        return out
    path = Path(data_s)
    if path.is_dir():
        names = [f"negation_{split}.csv", f"ccneg_{split}.csv", f"retrieval_neg_{split}.csv", f"mcq_{split}.csv"]
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


def subset(src: Sources, keep) -> Sources:
    out = Sources(root=src.root, files=list(src.files))
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
    plurals = {}
    try:
        from sayno.world.concepts import load_concepts

        plurals = {c.name: c.plural for c in load_concepts() if c.name in set(names)}
    except Exception:  # noqa: BLE001 - the world is optional here
        plurals = {}
    return ObjectVocabulary.from_names(sorted(set(names)), plurals)


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
    # phrase slots (one per lexical phrase)
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
    for ci, c in enumerate(src.captions):
        a = analyse(c.caption)
        texts.append(c.caption)
        home.append(img_index[c.image])
        observed.append(c.observed)
        home_true.append(-1 if c.true is None else int(c.true))
        hedged.append(a.hedged if c.hedged is None else bool(c.hedged))
        phrase_objs = [vocab.find(p.text) if vocab else [] for p in a.phrases]
        if c.negated is not None:
            labels = list(dict.fromkeys(c.negated))
        else:
            labels = list(dict.fromkeys(o for objs in phrase_objs for o in objs))
        negated.append(frozenset(labels))
        is_neg.append(bool(labels) or bool(a.phrases))
        affirmed.append(frozenset(vocab.affirmed(c.caption)) if vocab else None)
        remaining = list(labels)
        for k, p in enumerate(a.phrases):
            target = next((o for o in phrase_objs[k] if o in remaining), None)
            if target is None and len(a.phrases) == len(labels):
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
        unmatched_labels += len(remaining) if a.phrases else len(labels)
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
def encode_texts_np(backbone, texts: Sequence[str], layers: bool = False, cache=None, batch_size: int = 256,
                    progress: bool = False) -> np.ndarray:
    """Frozen-CLIP text features as float32 numpy ((n, D), or (n, L, D) with ``layers``)."""
    texts = list(texts)
    if not texts:
        shape = (0, backbone.num_text_layers, backbone.embed_dim) if layers else (0, backbone.embed_dim)
        return np.zeros(shape, np.float32)
    try:
        from sayno.features import encode_texts

        return np.asarray(encode_texts(backbone, texts, cache=cache, layers=layers, progress=progress),
                          dtype=np.float32)
    except ImportError:
        pass
    fn = backbone.encode_text_layers if layers else backbone.encode_text
    out = [fn(texts[i:i + batch_size]).float().cpu().numpy() for i in range(0, len(texts), batch_size)]
    return np.concatenate(out).astype(np.float32)


def encode_images_np(backbone, paths: Sequence[str], cache=None, batch_size: int = 256,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(features (M, D) float32, ok (M,) bool) of image files; unreadable images get ok=False."""
    paths = [str(p) for p in paths]
    try:
        from sayno.features import encode_images

        res = encode_images(backbone, paths, cache=cache, batch_size=batch_size, progress=progress)
        return np.asarray(res.features, dtype=np.float32), np.asarray(res.ok_mask, dtype=bool)
    except ImportError:
        pass
    from PIL import Image

    feats = np.zeros((len(paths), backbone.embed_dim), np.float32)
    ok = np.zeros(len(paths), bool)
    for start in range(0, len(paths), batch_size):
        pix, idx = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                with Image.open(paths[i]) as im:
                    pix.append(backbone.preprocess(im.convert("RGB")))
                idx.append(i)
            except (OSError, ValueError):
                continue
        if pix:
            feats[idx] = backbone.encode_image(torch.stack(pix)).float().cpu().numpy()
            ok[idx] = True
    return feats, ok


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
        rem = [analyse(lab.texts[i]).affirmative_text for i in with_slots]
        base[with_slots] = encode_texts_np(backbone, rem, cache=cache)
    prompts = sorted(set(lab.slot_phrase) | set(lab.slot_target) | set(lab.vocabulary))
    pf = encode_texts_np(backbone, [article_prompt(prompt, p) for p in prompts], cache=cache)
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
