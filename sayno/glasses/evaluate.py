"""A quick report of Glasses (and any scorers) on an emoji-world split, straight from its CSVs.

The project's benchmarks (``sayno eval``) are the reference; this report exists so that ``sayno glasses
train`` can print what it achieved and so that a training setting can be judged in one call. It measures,
for every scorer on the same features: CC-Neg accuracy, MCQ accuracy (total and per template), text->image
recall of negated and of affirmative retrieval queries, zero-shot accuracy (when the world has
``classify/``), and for Glasses the mean caption-only lambda of hedged and of firm negated phrases.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from sayno.eval.scoring import PlainClip, TextBatch
from sayno.glasses.data import encode_images_np, encode_texts_np


class _Feats:
    def __init__(self, backbone, root: Path, cache=None):
        self.backbone, self.root, self.cache = backbone, root, cache
        self._img: dict[str, np.ndarray] = {}

    def images(self, paths: list[str]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(paths) if p not in self._img]
        if missing:
            f, ok = encode_images_np(self.backbone, [str(self.root / p) for p in missing], cache=self.cache)
            if not ok.all():
                raise FileNotFoundError(f"unreadable images, e.g. {missing[int(np.argmin(ok))]}")
            self._img.update(zip(missing, f))
        return np.stack([self._img[p] for p in paths])

    def text(self, texts: list[str]) -> TextBatch:
        layers = encode_texts_np(self.backbone, texts, layers=True, cache=self.cache)
        return TextBatch(list(texts), np.ascontiguousarray(layers[:, -1]), layers)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def recall(scores: np.ndarray, target: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Text->image Recall@k in percent; ``target`` is each query's image column."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return {f"R@{k}": 100.0 * float((order[:, :k] == target[:, None]).any(1).mean()) for k in ks}


def world_report(backbone, world: str | Path, scorers: dict, split: str = "test", cache=None,
                 parts: tuple[str, ...] = ("ccneg", "mcq", "retrieval_neg", "retrieval", "zeroshot")) -> dict:
    """``{part: {scorer name: metrics}}`` for the world split; scorers: name -> Scorer."""
    world = Path(world)
    F = _Feats(backbone, world, cache)
    out: dict = {}
    if "ccneg" in parts and (world / f"ccneg_{split}.csv").exists():
        rows = _csv(world / f"ccneg_{split}.csv")
        img = F.images([r["image_path"] for r in rows])
        pos, neg = F.text([r["caption"] for r in rows]), F.text([r["negative_caption"] for r in rows])
        out["ccneg"] = {n: {"accuracy": 100.0 * float((s.score_pairs(pos, img) > s.score_pairs(neg, img)).mean())}
                        for n, s in scorers.items()}
    if "mcq" in parts and (world / f"mcq_{split}.csv").exists():
        rows = _csv(world / f"mcq_{split}.csv")
        img = np.repeat(F.images([r["image_path"] for r in rows]), 4, axis=0)
        text = F.text([r[f"caption_{k}"] for r in rows for k in range(4)])
        ans = np.array([int(r["correct_answer"]) for r in rows])
        tpl = np.array([r["correct_answer_template"] for r in rows])
        res = {}
        for n, s in scorers.items():
            ok = s.score_pairs(text, img).reshape(-1, 4).argmax(1) == ans
            res[n] = {"accuracy": 100.0 * float(ok.mean()),
                      **{t: 100.0 * float(ok[tpl == t].mean()) for t in ("positive", "negative", "hybrid")
                         if (tpl == t).any()}}
        out["mcq"] = res
    for part in ("retrieval_neg", "retrieval"):
        if part in parts and (world / f"{part}_{split}.csv").exists():
            rows = _csv(world / f"{part}_{split}.csv")
            paths = [r["filepath"] for r in rows]
            img = F.images(paths)
            caps, target = [], []
            for i, r in enumerate(rows):
                for c in json.loads(r["captions"]):
                    caps.append(c)
                    target.append(i)
            text = F.text(caps)
            out[part] = {n: recall(s.score_matrix(text, img), np.array(target)) for n, s in scorers.items()}
    if "zeroshot" in parts and (world / "classify").is_dir():
        out["zeroshot"] = zeroshot(F, world / "classify", scorers)
    return out


def zeroshot(F: _Feats, folder: Path, scorers: dict) -> dict:
    """Top-1 accuracy on ``folder/<class>/*.png`` with the project's zero-shot templates."""
    from importlib import resources

    templates = json.loads(resources.files("sayno.templates").joinpath("zeroshot.json").read_text())["templates"]
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    paths, labels = [], []
    for ci, c in enumerate(classes):
        for f in sorted((folder / c).glob("*.png")):
            paths.append(str(f.relative_to(F.root)))
            labels.append(ci)
    img = F.images(paths)
    names = [c.replace("_", " ") for c in classes]

    def fill(t: str, n: str) -> str:
        return t.replace("{a}", ("an " if n[0] in "aeiou" else "a ") + n).replace("{}", n)

    text = F.text([fill(t, n) for t in templates for n in names])
    res = {}
    for n, s in scorers.items():
        sc = s.score_matrix(text, img).reshape(len(templates), len(names), -1).mean(0).T
        res[n] = {"top1": 100.0 * float((sc.argmax(1) == np.array(labels)).mean())}
    return res


def lambda_report(glasses, world: str | Path, split: str = "test", cache=None) -> dict:
    """Mean caption-only lambda of hedged and of firm negated phrases in ``negation_<split>.csv``."""
    rows = _csv(Path(world) / f"negation_{split}.csv")
    F = _Feats(glasses.backbone, Path(world), cache)
    text = F.text([r["caption"] for r in rows])
    s = glasses.slots(text)
    lam, hedged = s.lam.numpy(), s.hedged.numpy().astype(bool)
    return {"hedged_mean_lambda": float(lam[hedged].mean()) if hedged.any() else float("nan"),
            "firm_mean_lambda": float(lam[~hedged].mean()) if (~hedged).any() else float("nan"),
            "hedged_phrases": int(hedged.sum()), "firm_phrases": int((~hedged).sum()),
            "tau0": float(glasses.frame.tau0.detach()), "mean_tau": float(s.tau.mean()) if len(s.tau) else 0.0}


def report(backbone, world: str | Path, glasses=None, split: str = "test", cache=None, extra: dict | None = None,
           parts: tuple[str, ...] = ("ccneg", "mcq", "retrieval_neg", "retrieval", "zeroshot")) -> dict:
    """Plain CLIP, Glasses (caption-only and re-ranked) and ``extra`` scorers side by side."""
    scorers = {"CLIP": PlainClip(backbone.logit_scale)}
    if glasses is not None:
        scorers["CLIPGlasses"] = glasses.scorer()
        scorers["CLIPGlasses+rerank20"] = glasses.scorer(rerank_k=20)
    scorers.update(extra or {})
    out = world_report(backbone, world, scorers, split, cache, parts)
    if glasses is not None:
        out["lambda"] = lambda_report(glasses, world, split, cache)
    return out
