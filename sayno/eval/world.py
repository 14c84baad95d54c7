"""A quick report of Glasses (and any scorers) on an emoji-world split, straight from its CSVs.

The project's benchmarks (``sayno eval``) are the reference; this report exists so that ``sayno glasses
train`` can print what it achieved and so that a training setting can be judged in one call. It runs the
benchmarks of :mod:`sayno.eval.benchmarks` on the world's files, read by the :mod:`sayno.data` readers, for
every scorer on the same features: CC-Neg accuracy, MCQ accuracy (total and per template), text->image recall
of negated and of affirmative retrieval queries, zero-shot accuracy (when the world has ``classify/``), and for
Glasses the mean caption-only lambda of hedged and of firm negated phrases.

A report is ``{part: {scorer name: {metric: value}}}`` (percent), plus ``"lambda"`` for Glasses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sayno.backbones.base import Backbone
from sayno.base.scoring import PlainClip, Scorer
from sayno.data import BadRow, DataError, read_ccneg, read_image_folder, read_mcq_csv, read_retrieval_csv
from sayno.eval.benchmarks import FeatureMemo, Method, run_ccneg, run_mcq, run_retrieval, run_zeroshot
from sayno.features import FeatureCache
from sayno.glasses.data import read_negation_csv

PARTS: tuple[str, ...] = ("ccneg", "mcq", "retrieval_neg", "retrieval", "zeroshot")
MCQ_TEMPLATES = ("positive", "negative", "hybrid")
RECALL_KS = (1, 5, 10)


def _strict(dataset: Any) -> Any:
    """The dataset, or a one-line :class:`DataError` if its reader had to drop rows (a world file is whole)."""
    _no_bad(dataset.bad_rows, "bad row(s)")
    return dataset


def _no_bad(bad: Sequence[BadRow], what: str) -> None:
    if bad:
        raise DataError(f"{len(bad)} {what} in the world split, e.g. {bad[0]}")


def _only(results: Mapping[str, dict], rename: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """``{method: metrics}`` keeping the metrics named in ``rename`` (old name -> report name)."""
    return {name: {new: metrics[old] for old, new in rename.items() if old in metrics}
            for name, metrics in results.items()}


def world_report(backbone: Backbone, world: str | Path, scorers: Mapping[str, Scorer], split: str = "test",
                 cache: FeatureCache | None = None, parts: tuple[str, ...] = PARTS) -> dict:
    """``{part: {scorer name: metrics}}`` for the world split; scorers: name -> Scorer.

    Metrics: ccneg ``accuracy``; mcq ``accuracy`` and per template; retrieval_neg / retrieval text->image
    ``R@1/5/10``; zeroshot ``top1``. Parts whose file is missing are left out. Raises :class:`DataError` if a
    file has bad rows or an image cannot be read.
    """
    world = Path(world)
    methods = [Method(name, backbone, scorer) for name, scorer in scorers.items()]
    memo = FeatureMemo(cache)
    out: dict = {}
    if "ccneg" in parts and (world / f"ccneg_{split}.csv").exists():
        data = _strict(read_ccneg(world / f"ccneg_{split}.csv"))
        out["ccneg"] = _only(run_ccneg(methods, data, memo=memo), {"accuracy": "accuracy"})
    if "mcq" in parts and (world / f"mcq_{split}.csv").exists():
        data = _strict(read_mcq_csv(world / f"mcq_{split}.csv"))
        keep = {"accuracy": "accuracy", **{t: t for t in MCQ_TEMPLATES}}
        out["mcq"] = _only(run_mcq(methods, data, memo=memo), keep)
    for part in ("retrieval_neg", "retrieval"):
        if part in parts and (world / f"{part}_{split}.csv").exists():
            data = _strict(read_retrieval_csv(world / f"{part}_{split}.csv"))
            keep = {f"t2i_R@{k}": f"R@{k}" for k in RECALL_KS}
            out[part] = _only(run_retrieval(methods, data, memo=memo), keep)
    if "zeroshot" in parts and (world / "classify").is_dir():
        data = _strict(read_image_folder(world / "classify"))
        out["zeroshot"] = _only(run_zeroshot(methods, data, memo=memo), {"top1": "top1"})
    _no_bad(memo.bad, "unreadable image(s)")
    return out


def lambda_report(glasses: Any, world: str | Path, split: str = "test", cache: FeatureCache | None = None) -> dict:
    """Mean caption-only lambda of hedged and of firm negated phrases in ``negation_<split>.csv``.

    glasses: a loaded :class:`sayno.glasses.Glasses`."""
    captions = [c.caption for c in read_negation_csv(Path(world) / f"negation_{split}.csv").captions]
    text = FeatureMemo(cache).texts(glasses.backbone, captions, layers=True)
    slots = glasses.slots(text)
    lam, hedged = slots.lam.numpy(), slots.hedged.numpy().astype(bool)
    return {"hedged_mean_lambda": float(lam[hedged].mean()) if hedged.any() else float("nan"),
            "firm_mean_lambda": float(lam[~hedged].mean()) if (~hedged).any() else float("nan"),
            "hedged_phrases": int(hedged.sum()), "firm_phrases": int((~hedged).sum()),
            "tau0": float(glasses.frame.tau0.detach()),
            "mean_tau": float(slots.tau.mean()) if len(slots.tau) else 0.0}


def report(backbone: Backbone, world: str | Path, glasses: Any = None, split: str = "test",
           cache: FeatureCache | None = None, extra: Mapping[str, Scorer] | None = None,
           parts: tuple[str, ...] = PARTS) -> dict:
    """Plain CLIP, Glasses (caption-only and re-ranked) and ``extra`` scorers side by side (+ ``"lambda"``)."""
    scorers: dict[str, Scorer] = {"CLIP": PlainClip(backbone.logit_scale)}
    if glasses is not None:
        scorers["CLIPGlasses"] = glasses.scorer()
        scorers["CLIPGlasses+rerank20"] = glasses.scorer(rerank_k=20)
    scorers.update(extra or {})
    out = world_report(backbone, world, scorers, split, cache, parts)
    if glasses is not None:
        out["lambda"] = lambda_report(glasses, world, split, cache)
    return out

