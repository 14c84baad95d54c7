"""The benchmarks: zero-shot classification, NegBench MCQ, CC-Neg and retrieval, for several methods at once.

A :class:`Method` is a backbone (what encodes) plus a scorer (what scores). Features are computed once per
backbone (and cached on disk by fingerprint), then every method's scorer runs on the same arrays.
Every ``run_*`` returns ``{method name: {metric: value}}`` with metrics in percent; pass one
:class:`FeatureMemo` as ``memo`` to several ``run_*`` calls to encode shared images and captions once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sayno.backbones.base import Backbone
from sayno.base.prompts import fill_template, load_templates
from sayno.base.scoring import PlainClip, Scorer, TextBatch
from sayno.data import BadRow, CcNegDataset, ImageFolderDataset, McqDataset, RetrievalDataset
from sayno.features import FeatureCache, encode_images, encode_texts


@dataclass
class Method:
    """A row of a results table: ``name`` scores with ``scorer`` on features from ``backbone``."""

    name: str
    backbone: Backbone
    scorer: Scorer


def plain(backbone: Backbone, name: str = "CLIP") -> Method:
    """Plain CLIP on a backbone."""
    return Method(name, backbone, PlainClip(backbone.logit_scale, name=name))


class FeatureMemo:
    """Features for one benchmark run, in memory, backed by the on-disk :class:`FeatureCache`.

    Images: (M, D) features and an (M,) ok mask per (backbone, paths); texts: a :class:`TextBatch` per
    (backbone, texts, with layers or not). ``bad``: every unreadable image met so far.
    """

    def __init__(self, cache: FeatureCache | None = None, progress: bool = False, batch_size: int = 128):
        self.cache, self.progress, self.batch_size = cache, progress, batch_size
        self._images: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, np.ndarray]] = {}
        self._texts: dict[tuple[str, tuple[str, ...], bool], TextBatch] = {}
        self.bad: list[BadRow] = []

    def images(self, backbone: Backbone, paths: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(M, D) float32 features (NaN rows where unreadable) and the (M,) bool ok mask."""
        key = (backbone.fingerprint, tuple(str(p) for p in paths))
        if key not in self._images:
            res = encode_images(backbone, list(paths), cache=self.cache, batch_size=self.batch_size,
                                progress=self.progress)
            self.bad.extend(res.bad)
            self._images[key] = (res.features, res.ok_mask)
        return self._images[key]

    def texts(self, backbone: Backbone, texts: Sequence[str], layers: bool = False) -> TextBatch:
        """N captions -> TextBatch (h: (N, D); layers: (N, L, D) when ``layers``, else None)."""
        texts = list(texts)
        key = (backbone.fingerprint, tuple(texts), layers)
        if key not in self._texts:
            h = encode_texts(backbone, texts, cache=self.cache, progress=self.progress)
            per_layer = (encode_texts(backbone, texts, cache=self.cache, layers=True, progress=self.progress)
                         if layers else None)
            self._texts[key] = TextBatch(texts, h, per_layer)
        return self._texts[key]

    def text(self, method: Method, texts: Sequence[str]) -> TextBatch:
        """The captions as ``method``'s scorer needs them (with layers when it needs them)."""
        return self.texts(method.backbone, texts, layers=method.scorer.needs_layers)


def run_zeroshot(methods: Sequence[Method], data: ImageFolderDataset, *, templates: dict | None = None,
                 cache: FeatureCache | None = None, progress: bool = True, memo: FeatureMemo | None = None) -> dict:
    """Top-1/top-5 zero-shot accuracy; scores are averaged over the prompt templates."""
    templates = templates or load_templates("zeroshot")
    feats = memo or FeatureMemo(cache, progress)
    labels = np.asarray(data.labels)
    out = {}
    for m in methods:
        img, ok = feats.images(m.backbone, data.image_paths)
        prompts = [fill_template(t, c) for t in templates["templates"] for c in data.class_names]
        scores = m.scorer.score_matrix(feats.text(m, prompts), img[ok])  # (T*C, M)
        scores = scores.reshape(len(templates["templates"]), len(data.class_names), -1).mean(0).T  # (M, C)
        top5 = np.argsort(-scores, axis=1)[:, :5]
        y = labels[ok]
        out[m.name] = {"top1": 100.0 * float(np.mean(top5[:, 0] == y)),
                       "top5": 100.0 * float(np.mean((top5 == y[:, None]).any(1))),
                       "images": int(ok.sum()), "classes": len(data.class_names)}
    return out


def run_mcq(methods: Sequence[Method], data: McqDataset, *, cache: FeatureCache | None = None,
            progress: bool = True, memo: FeatureMemo | None = None) -> dict:
    """NegBench MCQ: accuracy of the argmax over 4 captions, in total and per template."""
    feats = memo or FeatureMemo(cache, progress)
    out = {}
    templates = np.asarray(data.templates)
    for m in methods:
        img, ok = feats.images(m.backbone, data.image_paths)
        rows = np.flatnonzero(ok)  # questions whose image decoded (the others are bad rows)
        flat = [c for q in rows for c in data.captions[q]]
        text = feats.text(m, flat)
        scores = m.scorer.score_pairs(text, np.repeat(img[rows], 4, axis=0)).reshape(len(rows), 4)
        correct = np.zeros(len(ok), dtype=bool)
        correct[rows] = scores.argmax(1) == np.asarray(data.answers)[rows]
        res = {"accuracy": 100.0 * float(correct[ok].mean()), "questions": int(ok.sum())}
        for t in ("positive", "negative", "hybrid"):
            sel = ok & (templates == t)
            if sel.any():
                res[t] = 100.0 * float(correct[sel].mean())
        out[m.name] = res
    return out


def run_ccneg(methods: Sequence[Method], data: CcNegDataset, *, cache: FeatureCache | None = None,
              progress: bool = True, memo: FeatureMemo | None = None) -> dict:
    """CC-Neg: share of images whose true caption outscores its negated caption."""
    feats = memo or FeatureMemo(cache, progress)
    out = {}
    for m in methods:
        img, ok = feats.images(m.backbone, data.image_paths)
        rows = np.flatnonzero(ok)  # pairs whose image decoded (the others are bad rows)
        pos = m.scorer.score_pairs(feats.text(m, [data.captions[i] for i in rows]), img[rows])
        neg = m.scorer.score_pairs(feats.text(m, [data.negative_captions[i] for i in rows]), img[rows])
        out[m.name] = {"accuracy": 100.0 * float((pos > neg).mean()), "pairs": len(rows)}
    return out


def recall_at_k(scores: np.ndarray, relevant: list[set[int]] | np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k for queries (rows of ``scores`` (Q, C)); a query hits if any relevant column is in its top k.

    ``relevant``: per query, the set of relevant columns (or an int array with one column per query).
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {}
    for k in ks:
        top = order[:, :k]
        if isinstance(relevant, np.ndarray):
            hit = (top == relevant[:, None]).any(1)
        else:
            hit = np.array([bool(rel.intersection(row.tolist())) for row, rel in zip(top, relevant)])
        out[f"R@{k}"] = 100.0 * float(hit.mean()) if len(hit) else float("nan")
    return out


def run_retrieval(methods: Sequence[Method], data: RetrievalDataset, *, cache: FeatureCache | None = None,
                  progress: bool = True, memo: FeatureMemo | None = None) -> dict:
    """Text->image and image->text Recall@1/5/10 (NegBench retrieval)."""
    feats = memo or FeatureMemo(cache, progress)
    out = {}
    cap2img = np.asarray(data.caption_to_image)
    for m in methods:
        img, ok = feats.images(m.backbone, data.image_paths)
        keep_img = np.flatnonzero(ok)
        remap = -np.ones(len(ok), dtype=np.int64)
        remap[keep_img] = np.arange(len(keep_img))
        keep_cap = np.flatnonzero(ok[cap2img])
        captions = [data.captions[i] for i in keep_cap]
        scores = m.scorer.score_matrix(feats.text(m, captions), img[keep_img])  # (N, M)
        target = remap[cap2img[keep_cap]]
        t2i = recall_at_k(scores, target)
        img_to_caps: list[set[int]] = [set() for _ in keep_img]
        for qi, t in enumerate(target):
            img_to_caps[t].add(qi)
        i2t = recall_at_k(scores.T, img_to_caps)
        out[m.name] = {**{f"t2i_{k}": v for k, v in t2i.items()}, **{f"i2t_{k}": v for k, v in i2t.items()},
                       "queries": len(keep_cap), "images": len(keep_img)}
    return out
