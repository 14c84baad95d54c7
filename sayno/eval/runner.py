"""Run benchmarks from specs and paths, write one JSON per (model, dataset, task), and print tables.

This is what the CLI calls; it reads the datasets, loads the backbone and the methods, and returns plain
dicts (JSON-ready) so results can be aggregated later with :func:`read_results`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

import sayno
from sayno.backbones import Backbone, load
from sayno.base.prompts import load_templates
from sayno.base.shipped import shipped_weights
from sayno.data import (
    DataError,
    read_ccneg,
    read_class_names,
    read_image_folder,
    read_mcq_csv,
    read_retrieval_csv,
    report_bad_rows,
)
from sayno.errors import InputError
from sayno.eval import benchmarks as B
from sayno.features import FeatureCache
from sayno.glasses import TrainingFreeGlasses, load_glasses
from sayno.glasses.training_free import CalibrationWarning, is_training_free
from sayno.ood.bench import print_ood_table, world_ood_benchmark
from sayno.world import WorldConfig, build_world
from sayno.world.build import FAMILY_FILES, PARTS, WORLD_VERSION

TASKS = ("zeroshot", "mcq", "ccneg", "retrieval")


def default_world_dir(style: str = "openmoji", seed: int = 0) -> Path:
    base = os.environ.get("SAYNO_WORLD")
    if base:
        return Path(base) if style == "openmoji" else Path(f"{base}-{style}")
    return Path.home() / ".cache" / "sayno" / f"world-{style}-{seed}"


def methods_for(backbone: Backbone, glasses: Path | str | None, training_free_row: bool = False) -> list[B.Method]:
    """Plain CLIP, plus CLIPGlasses when a checkpoint is given (``"training-free"``: the training-free Glasses),
    plus the training-free row when ``training_free_row`` (calibrated per dataset on its images, by ``_run``)."""
    methods = [B.plain(backbone)]
    if is_training_free(glasses):
        training_free_row = True
    elif glasses is not None:
        methods.append(B.Method("CLIPGlasses", backbone, load_glasses(glasses, backbone).scorer()))
    if training_free_row:
        with warnings.catch_warnings():  # calibrated on each dataset's images before it runs
            warnings.simplefilter("ignore", CalibrationWarning)
            tf = TrainingFreeGlasses.from_backbone(backbone)
        methods.append(B.Method(tf.name, backbone, tf))
    return methods


def _calibrate(methods: list[B.Method], dataset, memo: B.FeatureMemo) -> None:
    """Calibrate every training-free scorer on the dataset's own images (features only, never labels)."""
    for m in methods:
        if isinstance(m.scorer, TrainingFreeGlasses):
            feats, ok = memo.images(m.backbone, dataset.image_paths)
            m.scorer.calibrate(feats[ok])


def _read(task: str, data: Path, root: Path | None, classes: Path | None):
    if task == "zeroshot":
        return read_image_folder(data, read_class_names(classes) if classes else None)
    if task == "mcq":
        return read_mcq_csv(data, root)
    if task == "ccneg":
        return read_ccneg(data, root)
    if task == "retrieval":
        return read_retrieval_csv(data, root)
    raise InputError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")


RUNNERS: dict[str, Callable] = {"zeroshot": B.run_zeroshot, "mcq": B.run_mcq, "ccneg": B.run_ccneg,
                                "retrieval": B.run_retrieval}


def _run(task: str, methods: list[B.Method], dataset, data_path: Path, cache: FeatureCache | None,
         progress: bool, console: Console | None, extra: dict | None = None) -> dict:
    """Run one task; bad rows (the reader's and every image that could not be decoded) are reported on
    ``console`` and counted in ``bad_rows``. Raises :class:`DataError` when no row is usable."""
    memo = B.FeatureMemo(cache, progress)
    usable = _usable_rows(methods, dataset, memo)
    bad = list(getattr(dataset, "bad_rows", [])) + memo.bad
    if bad and console is not None:
        report_bad_rows(bad, console)
    if usable == 0:
        raise DataError(_no_usable_rows(data_path, bad))
    _calibrate(methods, dataset, memo)
    kwargs = {"cache": cache, "progress": progress, "memo": memo}
    templates = None
    if task == "zeroshot":
        templates = load_templates("zeroshot")
        kwargs["templates"] = templates
    metrics = RUNNERS[task](methods, dataset, **kwargs)
    _check_finite(metrics, data_path)
    bb = methods[0].backbone
    result = {
        "task": task, "dataset": str(data_path), "model": bb.spec, "fingerprint": bb.fingerprint,
        "methods": metrics, "bad_rows": len(bad), "sayno_version": sayno.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if templates is not None:
        result["templates"] = templates
    if extra:
        result.update(extra)
    return result


def _usable_rows(methods: list[B.Method], dataset, memo: B.FeatureMemo) -> int:
    """Images of ``dataset`` every method's backbone could decode (encodes them once, into ``memo``)."""
    if len(dataset.image_paths) == 0:
        return 0
    backbones = {m.backbone.fingerprint: m.backbone for m in methods}
    return min(int(memo.images(bb, dataset.image_paths)[1].sum()) for bb in backbones.values())


def _no_usable_rows(data_path: Path, bad: list) -> str:
    """The one-line reason of a run with nothing to evaluate."""
    if not bad:
        return f"{data_path}: no rows to evaluate (the file has a header but no data rows)"
    return f"{data_path}: no usable rows ({len(bad)} bad row(s), e.g. {bad[0]})"


def _check_finite(metrics: dict, data_path: Path) -> None:
    """A metric that is NaN or infinite means nothing was measured: refuse it (``--json`` stays valid JSON)."""
    for method, values in metrics.items():
        for name, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise DataError(f"{data_path}: {method} {name} is {value} (no usable rows for it)")


def evaluate(task: str, *, model: str, data: Path, root: Path | None = None, glasses: Path | None = None,
             classes: Path | None = None, device: str = "cpu", precision: str = "fp32", use_cache: bool = True,
             progress: bool = True, console: Console | None = None) -> dict:
    """One benchmark on one dataset: ``{"task", "dataset", "model", "methods": {name: metrics}, ...}``."""
    if task not in RUNNERS:
        raise InputError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    dataset = _read(task, Path(data), root, classes)
    backbone = load(model, device=device, precision=precision)
    methods = methods_for(backbone, glasses)
    cache = FeatureCache.default() if use_cache else None
    return _run(task, methods, dataset, Path(data), cache, progress, console,
                {"glasses": str(glasses) if glasses else None})


def ensure_world(folder: Path, style: str, parts: tuple[str, ...], console: Console | None) -> Path:
    """Build the world's evaluation parts into ``folder`` unless a complete build of this world version
    (:data:`sayno.world.build.WORLD_VERSION`) is already there; a stale one is rebuilt whole."""
    manifest = folder / "world.json"
    have: list[str] = []
    if manifest.exists():
        built = json.loads(manifest.read_text())
        have = list(built.get("parts", {}))
        if set(parts) <= set(have) and built.get("version") == WORLD_VERSION:
            return folder
    if console is not None:
        console.print(f"building the emoji world ({style}) in {folder} ...")
    # a world lacking parts is rebuilt whole (with the parts it had): never new parts beside stale ones
    every = tuple(p for p in PARTS if p in set(parts) | set(have))
    build_world(folder, WorldConfig(style=style), parts=every, progress=console is not None,
                overwrite=manifest.exists())
    return folder


def benchmark(*, world: Path | None = None, model: str = "embedded", device: str = "cpu", progress: bool = True,
              console: Console | None = None) -> list[dict]:
    """The main job: every world benchmark for plain CLIP and the shipped methods, in both art styles."""
    backbone = load(model, device=device)
    methods = methods_for(backbone, shipped_weights("glasses", model), training_free_row=True)
    cache = FeatureCache.default()
    results = []
    for style in ("openmoji", "noto"):
        folder = Path(world) if (world is not None and style == "openmoji") else (
            Path(f"{world}-{style}") if world is not None else default_world_dir(style))
        ensure_world(folder, style, ("test", "classify", "ood"), console)
        jobs = [("zeroshot", folder / "classify", None), ("mcq", folder / "mcq_test.csv", None),
                ("ccneg", folder / "ccneg_test.csv", None), ("retrieval", folder / "retrieval_test.csv", None),
                ("retrieval", folder / "retrieval_neg_test.csv", None)]
        jobs += [(task, folder / f"{task}_test_{suffix}.csv", None) for task in ("mcq", "ccneg")
                 for suffix in FAMILY_FILES.values()]
        for task, path, classes in jobs:
            dataset = _read(task, path, None, classes)
            r = _run(task, methods, dataset, path, cache, progress, console, {"style": style})
            results.append(r)
    results.append(_ood_result(backbone, model, cache, world, progress))
    return results


def _ood_result(backbone: Backbone, model: str, cache: FeatureCache, world: Path | None, progress: bool) -> dict:
    """The world's OOD benchmark (both styles), with the shipped CLIPN when there is one for ``model``."""
    folder = Path(world) if world is not None else default_world_dir("openmoji")
    noto = Path(f"{world}-noto") if world is not None else default_world_dir("noto")
    return world_ood_benchmark(backbone, folder, noto_folder=noto, clipn=shipped_weights("clipn", model),
                               cache=cache, progress=progress)


# ---------------------------------------------------------------------------------------------- output
def result_name(result: dict) -> str:
    key = f"{result['model']}|{result['fingerprint']}|{result['dataset']}|{result['task']}"
    return f"{result['task']}-{Path(result['dataset']).stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.json"


def write_result(result: dict, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / result_name(result)
    path.write_text(json.dumps(result, indent=1))
    return path


def read_results(folder: Path) -> list[dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such results folder")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"{folder}: no result JSONs in it")
    return [json.loads(f.read_text()) for f in files]


def _columns(results: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in results:
        for metrics in r["methods"].values():
            for k, v in metrics.items():
                if isinstance(v, float) and k not in cols:
                    cols.append(k)
    return cols


def _title(r: dict) -> str:
    style = f" [{r['style']}]" if r.get("style") else ""
    return f"{r['task']}: {Path(r['dataset']).name}{style}"


def print_result(result: dict, console: Console) -> None:
    print_summary([result], console)


def print_summary(results: list[dict], console: Console) -> None:
    for r in results:
        cols = _columns([r])
        t = Table(title=_title(r), title_justify="left")
        t.add_column("method")
        for c in cols:
            t.add_column(c, justify="right")
        for name, metrics in r["methods"].items():
            t.add_row(name, *[f"{metrics[c]:.2f}" if c in metrics else "" for c in cols])
        console.print(t)


def markdown_tables(results: list[dict]) -> str:
    out = []
    for r in results:
        cols = _columns([r])
        out.append(f"### {_title(r)}\n")
        out.append("| method | " + " | ".join(cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for name, metrics in r["methods"].items():
            out.append(f"| {name} | " + " | ".join(f"{metrics[c]:.2f}" if c in metrics else "" for c in cols) + " |")
        out.append("")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- main-job table
SUMMARY_COLUMNS = (  # (header, task, dataset file stem, metric)
    ("zero-shot top-1", "zeroshot", "classify", "top1"),
    ("R@5 affirm.", "retrieval", "retrieval_test", "t2i_R@5"),
    ("R@5 negated", "retrieval", "retrieval_neg_test", "t2i_R@5"),
    ("MCQ", "mcq", "mcq_test", "accuracy"),
    ("MCQ pos.", "mcq", "mcq_test", "positive"),
    ("MCQ neg.", "mcq", "mcq_test", "negative"),
    ("MCQ hybrid", "mcq", "mcq_test", "hybrid"),
    ("CC-Neg", "ccneg", "ccneg_test", "accuracy"),
)
FAMILY_COLUMNS = (  # the same benchmarks on the test rows of training / held-out negation families
    ("MCQ train-fam.", "mcq", "mcq_test_trainfam", "accuracy"),
    ("MCQ held-out", "mcq", "mcq_test_heldout", "accuracy"),
    ("CC-Neg train-fam.", "ccneg", "ccneg_test_trainfam", "accuracy"),
    ("CC-Neg held-out", "ccneg", "ccneg_test_heldout", "accuracy"),
)


def summary_rows(results: list[dict], columns: tuple = SUMMARY_COLUMNS) -> dict[str, dict[str, dict[str, float]]]:
    """{style: {method: {column header: value}}} for the negation benchmarks of the main job."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        if r["task"] == "ood":
            continue
        stem = Path(r["dataset"]).stem if r["task"] != "zeroshot" else Path(r["dataset"]).name
        for header, task, want_stem, metric in columns:
            if r["task"] == task and stem == want_stem:
                for method, metrics in r["methods"].items():
                    if metric in metrics:
                        table.setdefault(r.get("style", "-"), {}).setdefault(method, {})[header] = metrics[metric]
    return table


def print_benchmark(results: list[dict], console: Console) -> None:
    """The main job's tables: negation benchmarks per art style, then the OOD table."""
    titles = ((SUMMARY_COLUMNS, "Negation benchmarks, emoji world test split, style {} (accuracy / recall, %)"),
              (FAMILY_COLUMNS, ("By negation family, style {}: test rows phrased with training vs held-out "
                                "families (accuracy, %)")))
    for style in summary_rows(results):
        for columns, title in titles:
            rows = summary_rows(results, columns).get(style, {})
            if not rows:
                continue
            t = Table(title=title.format(style), title_justify="left")
            t.add_column("method")
            headers = [h for h, *_ in columns]
            for h in headers:
                t.add_column(h, justify="right")
            for method, vals in rows.items():
                t.add_row(method, *[f"{vals[h]:.1f}" if h in vals else "" for h in headers])
            console.print(t)
    for r in results:
        if r["task"] == "ood":
            print_ood_table(r, console)
