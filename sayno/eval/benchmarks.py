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


Decisions = dict[str, tuple[np.ndarray, np.ndarray]]  # {method: ((N,) answered right, (N,) image decoded)}


def mcq_decisions(methods: Sequence[Method], data: McqDataset, memo: FeatureMemo) -> Decisions:
    """Per method and question: whether the argmax over its 4 captions is the answer, and whether its image
    decoded (a question whose image did not is a bad row, never right)."""
    out = {}
    for m in methods:
        img, ok = memo.images(m.backbone, data.image_paths)
        rows = np.flatnonzero(ok)  # questions whose image decoded (the others are bad rows)
        flat = [c for q in rows for c in data.captions[q]]
        scores = m.scorer.score_pairs(memo.text(m, flat), np.repeat(img[rows], 4, axis=0)).reshape(len(rows), 4)
        correct = np.zeros(len(ok), dtype=bool)
        correct[rows] = scores.argmax(1) == np.asarray(data.answers)[rows]
        out[m.name] = (correct, ok)
    return out


def mcq_metrics(data: McqDataset, decisions: Decisions, rows: np.ndarray | None = None) -> dict:
    """Accuracy in total and per template over ``rows`` of ``data`` (default: all) from :func:`mcq_decisions`."""
    rows = np.arange(len(data)) if rows is None else np.asarray(rows, dtype=np.int64)
    templates = np.asarray(data.templates)[rows] if len(rows) else np.zeros(0, dtype=str)
    out = {}
    for name, (correct, ok) in decisions.items():
        right, used = correct[rows], ok[rows]
        res = {"accuracy": _percent(right[used]), "questions": int(used.sum())}
        for t in ("positive", "negative", "hybrid"):
            sel = used & (templates == t)
            if sel.any():
                res[t] = _percent(right[sel])
        out[name] = res
    return out


def run_mcq(methods: Sequence[Method], data: McqDataset, *, cache: FeatureCache | None = None,
            progress: bool = True, memo: FeatureMemo | None = None) -> dict:
    """NegBench MCQ: accuracy of the argmax over 4 captions, in total and per template."""
    return mcq_metrics(data, mcq_decisions(methods, data, memo or FeatureMemo(cache, progress)))


def ccneg_decisions(methods: Sequence[Method], data: CcNegDataset, memo: FeatureMemo) -> Decisions:
    """Per method and pair: whether the true caption outscores the negated one, and whether the image decoded."""
    out = {}
    for m in methods:
        img, ok = memo.images(m.backbone, data.image_paths)
        rows = np.flatnonzero(ok)  # pairs whose image decoded (the others are bad rows)
        pos = m.scorer.score_pairs(memo.text(m, [data.captions[i] for i in rows]), img[rows])
        neg = m.scorer.score_pairs(memo.text(m, [data.negative_captions[i] for i in rows]), img[rows])
        correct = np.zeros(len(ok), dtype=bool)
        correct[rows] = pos > neg
        out[m.name] = (correct, ok)
    return out


def ccneg_metrics(data: CcNegDataset, decisions: Decisions, rows: np.ndarray | None = None) -> dict:
    """Accuracy over ``rows`` of ``data`` (default: all) from :func:`ccneg_decisions`."""
    rows = np.arange(len(data)) if rows is None else np.asarray(rows, dtype=np.int64)
    return {name: {"accuracy": _percent(correct[rows][ok[rows]]), "pairs": int(ok[rows].sum())}
            for name, (correct, ok) in decisions.items()}


def run_ccneg(methods: Sequence[Method], data: CcNegDataset, *, cache: FeatureCache | None = None,
              progress: bool = True, memo: FeatureMemo | None = None) -> dict:
    """CC-Neg: share of images whose true caption outscores its negated caption."""
    return ccneg_metrics(data, ccneg_decisions(methods, data, memo or FeatureMemo(cache, progress)))


def _percent(hits: np.ndarray) -> float:
    """100 * the share of True in ``hits`` (NaN when empty: nothing measured)."""
    return 100.0 * float(hits.mean()) if len(hits) else float("nan")


def row_keys(data: McqDataset | CcNegDataset) -> list[tuple]:
    """What identifies a row of an MCQ or CC-Neg dataset: its image and captions (and answer)."""
    if isinstance(data, McqDataset):
        return [(str(p), tuple(c), int(a), t) for p, c, a, t in
                zip(data.image_paths, data.captions, data.answers, data.templates)]
    return [(str(p), c, n) for p, c, n in zip(data.image_paths, data.captions, data.negative_captions)]


def matching_rows(full: McqDataset | CcNegDataset, part: McqDataset | CcNegDataset) -> np.ndarray | None:
    """(len(part),) the row of ``full`` each row of ``part`` repeats (same image, captions and answer), or
    None when some row of ``part`` is not in ``full``."""
    where = {}
    for i, key in enumerate(row_keys(full)):
        where.setdefault(key, i)
    found = [where.get(key) for key in row_keys(part)]
    if any(i is None for i in found):
        return None
    return np.asarray(found, dtype=np.int64)


def recall_at_k(scores: np.ndarray, relevant: list[set[int]] | np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k for queries (rows of ``scores`` (Q, C)); a query hits if any relevant column is in its top k.

    ``relevant``: per query, the set of relevant columns (or an int array with one column per query).
    The top k is that of a stable descending sort: among equal scores the lower column comes first.
    """
    scores = np.asarray(scores)
    if isinstance(relevant, np.ndarray):
        queries, columns = np.arange(len(relevant)), relevant.astype(np.int64)
    else:
        pairs = [(q, c) for q, rel in enumerate(relevant) for c in sorted(rel)]
        queries = np.array([q for q, _ in pairs], dtype=np.int64)
        columns = np.array([c for _, c in pairs], dtype=np.int64)
    best = np.full(len(scores), np.iinfo(np.int64).max)  # each query's best rank of a relevant column
    np.minimum.at(best, queries, stable_ranks(scores, queries, columns))
    return {f"R@{k}": 100.0 * float((best < k).mean()) if len(best) else float("nan") for k in ks}


def stable_ranks(scores: np.ndarray, queries: np.ndarray, columns: np.ndarray, chunk_cells: int = 1 << 22
                 ) -> np.ndarray:
    """(P,) the place of column ``columns[p]`` in row ``queries[p]`` of ``scores`` (Q, C) sorted descending,
    ties by column (NaN last, as in ``np.argsort(-scores, kind="stable")``); counts instead of sorting."""
    out = np.empty(len(queries), dtype=np.int64)
    n_cols = scores.shape[1] if scores.ndim == 2 else 0
    step = max(1, chunk_cells // max(n_cols, 1))
    index = np.arange(n_cols)
    for start in range(0, len(queries), step):
        q, c = queries[start:start + step], columns[start:start + step]
        rows = scores[q]  # (p, C)
        own = rows[np.arange(len(q)), c][:, None]
        before = (rows > own) | ((rows == own) & (index[None, :] < c[:, None]))
        nan = np.isnan(rows)
        # a NaN sorts after every number and NaNs keep their order; a NaN own score is after all numbers
        before = np.where(np.isnan(own), ~nan | (nan & (index[None, :] < c[:, None])), before & ~nan)
        out[start:start + step] = before.sum(1)
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
