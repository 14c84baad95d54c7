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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
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
from sayno.glasses import TrainingFreeGlasses, load_glasses, load_paper_glasses
from sayno.glasses.peers import peers
from sayno.glasses.training_free import CalibrationWarning, is_training_free
from sayno.negation import cached_default_analyser
from sayno.ood.bench import print_ood_table, world_ood_benchmark
from sayno.world import StyleError, WorldConfig, build_world
from sayno.world.build import FAMILY_FILES, PARTS, WORLD_VERSION
from sayno.world.predicates import KINDS as PREDICATE_KINDS

TASKS = ("zeroshot", "mcq", "ccneg", "retrieval")
PAPER_ROW = "CLIPGlasses (paper)"  # the paper preset's row (`glasses train --preset paper`)
#: texts the peers' shared memo keeps in a benchmark run (the same captions' remainders come back in every style;
#: 65,536 x D=128 float32 = 32 MB at most)
BATCH_PHRASE_CACHE = 1 << 16
TRAIN_STYLE = "openmoji"  # the art style the shipped Glasses and CLIPN were trained on: the in-style rows
BENCHMARK_STYLES = ("openmoji", "noto", "twemoji", "fluent")  # sayno.world.styles' named styles
STYLE_PARTS = ("test", "classify", "ood", "predicates")  # the world parts the main job reads, in every style
# the other styles' worlds serve the OOD benchmark only as covariate shift (their ``ood/id`` images): no OOD sets;
# and their zero-shot rows use 10 images per class (1,850), not 20: a third of the cold job's images are theirs
OTHER_STYLE = {"ood_seen_classes": 0, "ood_per_class": 0, "classify_per_class": 10}
DROP_TASK = "style_drop"
DROP_METRICS = ("CC-Neg", "MCQ", "R@5 negated", "zero-shot top-1")  # headers of SUMMARY_COLUMNS


def default_world_dir(style: str = "openmoji", seed: int = 0) -> Path:
    base = os.environ.get("SAYNO_WORLD")
    if base:
        return Path(base) if style == "openmoji" else Path(f"{base}-{style}")
    return Path.home() / ".cache" / "sayno" / f"world-{style}-{seed}"


def select_styles(styles: Sequence[str] | None = None) -> tuple[str, ...]:
    """The main job's art styles in the order given, duplicates dropped (default: :data:`BENCHMARK_STYLES`);
    :class:`InputError` naming the known styles for any other name."""
    if styles is None:
        return BENCHMARK_STYLES
    chosen = tuple(dict.fromkeys(s.strip() for s in styles if s.strip()))
    unknown = [s for s in chosen if s not in BENCHMARK_STYLES]
    if unknown:
        raise InputError(f"unknown style(s) {', '.join(map(repr, unknown))}: use {', '.join(BENCHMARK_STYLES)}")
    if not chosen:
        raise InputError(f"no style given: use one or more of {', '.join(BENCHMARK_STYLES)}")
    return chosen


def style_world_dir(world: Path | None, style: str) -> Path:
    """``style``'s world: ``world`` itself for the training style and ``<world>-<style>`` beside it for the others;
    without ``world``, :func:`default_world_dir`."""
    if world is None:
        return default_world_dir(style)
    return Path(world) if style == TRAIN_STYLE else Path(f"{world}-{style}")


def style_config(style: str) -> WorldConfig:
    """The world the main job builds in ``style``: the full world in the training style; in the others the same
    test split, class folders with half the images per class, and of the OOD part only its ID images (the
    covariate shift)."""
    return WorldConfig(style=style, **({} if style == TRAIN_STYLE else OTHER_STYLE))


def methods_for(backbone: Backbone, glasses: Path | str | None, training_free_row: bool = False,
                peer_rows: bool = False, paper_glasses: Path | str | None = None) -> list[B.Method]:
    """Plain CLIP, plus CLIPGlasses when a checkpoint is given (``"training-free"``: the training-free Glasses),
    plus "CLIPGlasses (paper)" when a paper preset checkpoint is given (``paper_glasses``),
    plus the training-free row when ``training_free_row`` (calibrated per dataset on its images, by ``_run``),
    plus, right after CLIP, the training-free peers (:mod:`sayno.glasses.peers`) when ``peer_rows``."""
    methods = [B.plain(backbone)]
    if peer_rows:
        methods += [B.Method(p.name, backbone, p) for p in peers(backbone, phrase_cache=BATCH_PHRASE_CACHE)]
    if is_training_free(glasses):
        training_free_row = True
    elif glasses is not None:
        methods.append(B.Method("CLIPGlasses", backbone, load_glasses(glasses, backbone).scorer()))
    if paper_glasses is not None:
        methods.append(B.Method(PAPER_ROW, backbone, load_paper_glasses(paper_glasses, backbone)))
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
    bad = _prepare(methods, dataset, data_path, memo, console)
    kwargs = {"cache": cache, "progress": progress, "memo": memo}
    templates = None
    if task == "zeroshot":
        templates = load_templates("zeroshot")
        kwargs["templates"] = templates
    metrics = RUNNERS[task](methods, dataset, **kwargs)
    return _result(task, methods, data_path, metrics, len(bad),
                   {**({"templates": templates} if templates is not None else {}), **(extra or {})})


def _prepare(methods: list[B.Method], dataset, data_path: Path, memo: B.FeatureMemo,
             console: Console | None) -> list:
    """Encode the dataset's images into ``memo``, report its bad rows on ``console`` and calibrate the
    training-free scorers on its images; returns the bad rows. :class:`DataError` when no row is usable."""
    usable = _usable_rows(methods, dataset, memo)
    bad = list(getattr(dataset, "bad_rows", [])) + memo.bad
    if bad and console is not None:
        report_bad_rows(bad, console)
    if usable == 0:
        raise DataError(_no_usable_rows(data_path, bad))
    _calibrate(methods, dataset, memo)
    return bad


def _result(task: str, methods: list[B.Method], data_path: Path, metrics: dict, bad_rows: int,
            extra: dict | None = None) -> dict:
    """The JSON-ready result of one task on one dataset file (refused when a metric is not finite)."""
    _check_finite(metrics, data_path)
    bb = methods[0].backbone
    result = {
        "task": task, "dataset": str(data_path), "model": bb.spec, "fingerprint": bb.fingerprint,
        "methods": metrics, "bad_rows": bad_rows, "sayno_version": sayno.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result.update(extra or {})
    return result


DECISIONS = {"mcq": (B.mcq_decisions, B.mcq_metrics), "ccneg": (B.ccneg_decisions, B.ccneg_metrics)}


def _with_families(task: str, methods: list[B.Method], path: Path, family_paths: list[Path],
                   cache: FeatureCache | None, progress: bool, console: Console | None, extra: dict) -> list[dict]:
    """``task`` (mcq or ccneg) on ``path`` and on each of ``family_paths``, files of some of its rows: their
    metrics come from the same per-row decisions (scored once, calibrated on all of ``path``'s images); a file
    with a row ``path`` lacks is run on its own, an empty one is left out."""
    decide, metrics = DECISIONS[task]
    full = _read(task, path, None, None)
    memo = B.FeatureMemo(cache, progress)
    bad = _prepare(methods, full, path, memo, console)
    decisions = decide(methods, full, memo)
    out = [_result(task, methods, path, metrics(full, decisions), len(bad), extra)]
    for part_path in family_paths:
        part = _read(task, part_path, None, None)
        if len(part) == 0 and not part.bad_rows:
            continue  # a family or kind with no row here (a small world): nothing to report
        rows = B.matching_rows(full, part)
        if rows is None:
            out.append(_run(task, methods, part, part_path, cache, progress, console, extra))
            continue
        unreadable = int((~np.logical_and.reduce([ok[rows] for _, ok in decisions.values()])).sum())
        out.append(_result(task, methods, part_path, metrics(full, decisions, rows),
                           len(part.bad_rows) + unreadable, extra))
    return out


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


def ensure_world(folder: Path, style: str, parts: tuple[str, ...], console: Console | None,
                 config: WorldConfig | None = None) -> Path:
    """Build the world's evaluation parts into ``folder`` (with ``config``, default: the default world in
    ``style``) unless a complete build of this world version (:data:`sayno.world.build.WORLD_VERSION`) and
    config is already there; a stale one is rebuilt whole. Raises :class:`StyleError` when ``style``'s art is missing."""
    manifest = folder / "world.json"
    config = config or WorldConfig(style=style)
    have: list[str] = []
    if manifest.exists():
        built = json.loads(manifest.read_text())
        have = list(built.get("parts", {}))
        same = built.get("version") == WORLD_VERSION and built.get("config") == json.loads(json.dumps(asdict(config)))
        if set(parts) <= set(have) and same:
            return folder
    if console is not None:
        console.print(f"building the emoji world ({style}) in {folder} ...")
    # a world lacking parts is rebuilt whole (with the parts it had): never new parts beside stale ones
    every = tuple(p for p in PARTS if p in set(parts) | set(have))
    build_world(folder, config, parts=every, progress=console is not None,
                overwrite=manifest.exists())
    return folder


def benchmark(*, world: Path | None = None, model: str = "embedded", device: str = "cpu",
              styles: Sequence[str] | None = None, progress: bool = True, console: Console | None = None,
              paper_glasses: Path | None = None) -> list[dict]:
    """The main job: every world benchmark for plain CLIP and the shipped methods in each art style of ``styles``
    (default: :data:`BENCHMARK_STYLES`), the drop from the training style (:func:`drop_result`) and the OOD
    benchmark. A style whose art is not installed is skipped with a one-line note on ``console``;
    :class:`StyleError` when none is left. ``paper_glasses``: a paper preset checkpoint for the "CLIPGlasses
    (paper)" row (default: the shipped one, when sayno ships one for ``model``)."""
    chosen = select_styles(styles)
    backbone = load(model, device=device)
    paper_glasses = paper_glasses or shipped_weights("glasses-paper", model)
    methods = methods_for(backbone, shipped_weights("glasses", model), training_free_row=True, peer_rows=True,
                          paper_glasses=paper_glasses)
    cache = FeatureCache.default()
    results: list[dict] = []
    folders, skipped = _style_worlds(world, chosen, console)
    # the captions' negation analyses beside the cached features: a run again reads them instead of parsing
    with cached_default_analyser(cache.root / "negation"):
        for style, folder in folders.items():
            results += _style_results(style, folder, methods, cache, progress, console)
    drop = drop_result(results, backbone, folders, skipped)
    if drop is not None:
        results.append(drop)
    if TRAIN_STYLE in folders:
        results.append(_ood_result(backbone, model, cache, folders, progress))
    else:
        _note(console, f"no OOD benchmark: its ID set is the {TRAIN_STYLE} world (add {TRAIN_STYLE} to the styles)")
    return results


def _note(console: Console | None, text: str) -> None:
    if console is not None:
        console.print(text, style="yellow", markup=False, highlight=False)


def _style_worlds(world: Path | None, styles: Sequence[str], console: Console | None
                  ) -> tuple[dict[str, Path], dict[str, str]]:
    """({style: world folder} built or found, {style: why skipped}) for ``styles``."""
    folders: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for style in styles:
        folder = style_world_dir(world, style)
        try:
            folders[style] = ensure_world(folder, style, STYLE_PARTS, console, style_config(style))
        except StyleError as e:
            skipped[style] = str(e).splitlines()[0] if str(e) else type(e).__name__
            _note(console, f"skipping style {style}: {skipped[style]}")
    if not folders:
        raise StyleError(f"none of the styles {', '.join(styles)} can be drawn here: {next(iter(skipped.values()))}")
    return folders, skipped


def _style_results(style: str, folder: Path, methods: list[B.Method], cache: FeatureCache, progress: bool,
                   console: Console | None) -> list[dict]:
    """The negation benchmarks (and zero-shot) of one style's world, one result per dataset file (MCQ and CC-Neg
    by negation family from the same decisions as on the whole test split)."""
    extra = {"style": style}
    results = [_run(task, methods, _read(task, path, None, None), path, cache, progress, console, extra)
               for task, path in (("zeroshot", folder / "classify"), ("retrieval", folder / "retrieval_test.csv"),
                                  ("retrieval", folder / "retrieval_neg_test.csv"))]
    for task in ("mcq", "ccneg"):
        families = [folder / f"{task}_test_{suffix}.csv" for suffix in FAMILY_FILES.values()]
        results += _with_families(task, methods, folder / f"{task}_test.csv", families, cache, progress, console,
                                  extra)
    if (folder / "pred_mcq_test.csv").exists():  # world 4's predicates (issue 25)
        # one scoring pass per file; its kinds and negation families are subsets of the same decisions
        kinds = [k for k in PREDICATE_KINDS if (folder / f"pred_mcq_test_{k}.csv").exists()]
        for task, stem, by_family in (("mcq", "pred_affirm_test", False), ("mcq", "pred_mcq_test", True),
                                      ("ccneg", "pred_ccneg_test", True)):
            parts = [folder / f"{stem}_{k}.csv" for k in kinds]
            if by_family:
                parts += [folder / f"{stem}_{k}_{suffix}.csv" for k in kinds for suffix in FAMILY_FILES.values()]
            results += _with_families(task, methods, folder / f"{stem}.csv", parts, cache, progress, console, extra)
    return results


def _ood_result(backbone: Backbone, model: str, cache: FeatureCache, folders: Mapping[str, Path],
                progress: bool) -> dict:
    """The world's OOD benchmark on the training style's world, every other style's ``ood/id`` images as
    covariate-shifted ID, with the shipped CLIPN when there is one for ``model``."""
    shifts = {style: folder for style, folder in folders.items() if style != TRAIN_STYLE}
    return world_ood_benchmark(backbone, folders[TRAIN_STYLE], shift_folders=shifts,
                               clipn=shipped_weights("clipn", model), cache=cache, progress=progress)


def style_drops(results: list[dict], train_style: str = TRAIN_STYLE) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {style: {metric: in-style minus cross-style}}}`` in points, from the per-style rows
    (:func:`summary_rows`), for every style but ``train_style`` and every :data:`DROP_METRICS` measured in both."""
    rows = summary_rows(results)
    home = rows.get(train_style, {})
    drops: dict[str, dict[str, dict[str, float]]] = {}
    for method, base in home.items():
        for style, per_method in rows.items():
            other = per_method.get(method, {})
            drop = {m: base[m] - other[m] for m in DROP_METRICS if m in base and m in other}
            if style != train_style and drop:
                drops.setdefault(method, {})[style] = drop
    return drops


def drop_result(results: list[dict], backbone: Backbone, folders: Mapping[str, Path],
                skipped: Mapping[str, str] | None = None) -> dict | None:
    """The ``style_drop`` result (JSON-ready; None without the training style and another style): ``methods``
    maps each method to ``{"<style> <metric>": drop}``, ``styles`` and ``metrics`` name the keys' parts,
    ``skipped`` the styles left out and why."""
    drops = style_drops(results)
    if not drops or TRAIN_STYLE not in folders:
        return None
    styles = list(dict.fromkeys(style for per in drops.values() for style in per))
    return {
        "task": DROP_TASK, "dataset": str(folders[TRAIN_STYLE]), "model": backbone.spec,
        "fingerprint": backbone.fingerprint, "train_style": TRAIN_STYLE, "styles": styles,
        "metrics": list(DROP_METRICS),
        "methods": {method: {f"{style} {m}": v for style, vals in per.items() for m, v in vals.items()}
                    for method, per in drops.items()},
        "skipped": dict(skipped or {}), "sayno_version": sayno.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


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
    return sorted((json.loads(f.read_text()) for f in files), key=_report_order)


def _report_order(result: dict) -> tuple:
    """Task, dataset file name, then art style in :data:`BENCHMARK_STYLES` order: a report lists the same rows in
    the same order whichever folder the worlds were built in (file names hash the dataset's full path)."""
    style = result.get("style")
    rank = BENCHMARK_STYLES.index(style) if style in BENCHMARK_STYLES else len(BENCHMARK_STYLES)
    return (result.get("task", ""), Path(str(result.get("dataset", ""))).name, rank, str(style or ""),
            str(result.get("model", "")))


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
        if r["task"] == DROP_TASK:
            print_drops(r, console)
            continue
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
        if r["task"] == DROP_TASK:
            out.append(drops_markdown(r))
            continue
        cols = _columns([r])
        out.append(f"### {_title(r)}\n")
        out.append("| method | " + " | ".join(cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for name, metrics in r["methods"].items():
            out.append(f"| {name} | " + " | ".join(f"{metrics[c]:.2f}" if c in metrics else "" for c in cols) + " |")
        out.append("")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- style drop
def _drop_title(r: dict) -> str:
    return (f"Drop from the training style ({r['train_style']}): in-style minus cross-style, points "
            "(positive: worse in the other style)")


def drop_rows(r: dict) -> list[tuple[str, str, list[float | None]]]:
    """(method, style, [drop per metric, None where not measured]) for each row of a ``style_drop`` result."""
    return [(method, style, [vals.get(f"{style} {m}") for m in r["metrics"]])
            for method, vals in r["methods"].items() for style in r["styles"]
            if any(f"{style} {m}" in vals for m in r["metrics"])]


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}"


def print_drops(r: dict, console: Console) -> None:
    """A ``style_drop`` result as one table: a row per (method, other style), a column per metric."""
    t = Table(title=_drop_title(r), title_justify="left")
    t.add_column("method")
    t.add_column("style")
    for m in r["metrics"]:
        t.add_column(m, justify="right")
    for method, style, values in drop_rows(r):
        t.add_row(escape(method), escape(style), *[_signed(v) for v in values])
    console.print(t)
    for style, why in r.get("skipped", {}).items():
        console.print(f"style {style} skipped: {why}", style="dim", markup=False, highlight=False)


def drops_markdown(r: dict) -> str:
    """A ``style_drop`` result as a Markdown table (and a line per skipped style)."""
    lines = [f"### {_drop_title(r)}\n", "| method | style | " + " | ".join(r["metrics"]) + " |",
             "|---" * (len(r["metrics"]) + 2) + "|"]
    lines += [f"| {method} | {style} | " + " | ".join(_signed(v) for v in values) + " |"
              for method, style, values in drop_rows(r)]
    skipped = r.get("skipped", {})
    if skipped:
        lines += [""] + [f"Style {style} skipped: {why}" for style, why in skipped.items()]
    return "\n".join(lines) + "\n"


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


#: the predicate table (issue 25): one row per method and kind ("objects": the object benchmarks, for comparison);
#: (header, task, dataset file stem with {kind}, metric); the objects' stems have no {kind}
PREDICATE_COLUMNS = (
    ("affirm.", "mcq", "pred_affirm_test_{kind}", "accuracy"),
    ("MCQ", "mcq", "pred_mcq_test_{kind}", "accuracy"),
    ("MCQ neg.", "mcq", "pred_mcq_test_{kind}", "negative"),
    ("CC-Neg", "ccneg", "pred_ccneg_test_{kind}", "accuracy"),
    ("MCQ train-fam.", "mcq", "pred_mcq_test_{kind}_trainfam", "accuracy"),
    ("MCQ held-out", "mcq", "pred_mcq_test_{kind}_heldout", "accuracy"),
    ("CC-Neg train-fam.", "ccneg", "pred_ccneg_test_{kind}_trainfam", "accuracy"),
    ("CC-Neg held-out", "ccneg", "pred_ccneg_test_{kind}_heldout", "accuracy"),
)
OBJECT_STEMS = {"pred_mcq_test_{kind}": "mcq_test", "pred_ccneg_test_{kind}": "ccneg_test",
                "pred_mcq_test_{kind}_trainfam": "mcq_test_trainfam", "pred_mcq_test_{kind}_heldout": "mcq_test_heldout",
                "pred_ccneg_test_{kind}_trainfam": "ccneg_test_trainfam",
                "pred_ccneg_test_{kind}_heldout": "ccneg_test_heldout"}


def predicate_rows(results: list[dict]) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """{style: {(method, kind): {column header: value}}} of :data:`PREDICATE_COLUMNS`, kind "objects" first (the
    object benchmarks' same columns) then each predicate kind; empty for results without predicates."""
    table: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    have = {r.get("style", "-") for r in results if Path(str(r.get("dataset", ""))).stem.startswith("pred_")}
    for kind in ("objects", *PREDICATE_KINDS):
        columns = tuple((h, task, OBJECT_STEMS.get(stem, "") if kind == "objects" else stem.format(kind=kind), metric)
                        for h, task, stem, metric in PREDICATE_COLUMNS)
        for style, rows in summary_rows(results, columns).items():
            if style in have:
                for method, vals in rows.items():
                    table.setdefault(style, {})[(method, kind)] = vals
    return table


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
    """The main job's tables: negation benchmarks per art style, the drop from the training style, then the OOD
    table."""
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
    for style, rows in predicate_rows(results).items():
        t = Table(title=(f"Objects and predicates, style {style}: people's activities, objects upside down, one "
                         "object above another (accuracy, %; affirm.: the right statement among wrong ones, no "
                         "negation)"), title_justify="left")
        t.add_column("method")
        t.add_column("kind")
        headers = [h for h, *_ in PREDICATE_COLUMNS]
        for h in headers:
            t.add_column(h, justify="right")
        for method in dict.fromkeys(m for m, _ in rows):
            for kind in ("objects", *PREDICATE_KINDS):
                vals = rows.get((method, kind))
                if vals:
                    t.add_row(escape(method), kind, *[f"{vals[h]:.1f}" if h in vals else "" for h in headers])
        console.print(t)
    for r in results:
        if r["task"] == DROP_TASK:
            print_drops(r, console)
    for r in results:
        if r["task"] == "ood":
            print_ood_table(r, console)
