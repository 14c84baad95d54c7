"""The OOD benchmark command, added to the ``sayno eval`` group by :func:`register`:

    sayno eval ood --model SPEC [--clipn CKPT] --id-classes FILE --id DIR --ood NAME=DIR ... [--json]
    sayno eval ood --model SPEC [--clipn LABEL=CKPT ...] --world DIR [--shift-world STYLE=DIR ...]   # emoji world

(``sayno ood``, CLIPN's per-image decision, lives in :mod:`sayno.clipn.cli`.)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import typer

from sayno.backbones import load
from sayno.backbones.base import Backbone
from sayno.cliutil import MODEL_HELP, console, err, fail, guard, subgroup
from sayno.features import FeatureCache
from sayno.ood.bench import evaluate_ood, print_ood_table, world_ood_benchmark
from sayno.ood.wordlist import read_word_list

EVAL_HELP = "Benchmarks: zero-shot, MCQ, CC-Neg, retrieval, OOD."


def _load_backbone(model: str, device: str) -> Backbone:
    return guard(load, model, device=device)


def _pairs(values: list[str], what: str) -> dict[str, Path]:
    """``NAME=DIR`` options -> {name: folder}; a bare ``DIR`` is named after its folder."""
    out: dict[str, Path] = {}
    for v in values:
        if "=" not in v:
            name, path = Path(v).name, v
        else:
            name, path = v.split("=", 1)
        name = name.strip()
        if not name or name in out:
            fail(f"{what} {v!r}: give NAME=DIR with a distinct name")
        out[name] = Path(path)
    return out


def _write_result(result: dict, folder: Path) -> Path:
    """One JSON per (model, dataset, task), named like sayno.eval.runner's results (``sayno report`` reads it)."""
    key = f"{result['model']}|{result['fingerprint']}|{result['dataset']}|{result['task']}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ood-{Path(result['dataset']).stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def eval_ood(
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    clipn: list[str] | None = typer.Option(None, "--clipn", help="CLIPN checkpoint; repeat (LABEL=CKPT) for "
                                              "several, e.g. seeds: adds mean ± std rows."),
    id_classes: Path | None = typer.Option(None, "--id-classes", help="ID class names, one per line."),
    id_dir: Path | None = typer.Option(None, "--id", help="ID images: <dir>/<class>/<image>."),
    ood: list[str] | None = typer.Option(None, "--ood", help="An OOD set as NAME=DIR (repeatable)."),
    shifted_id: list[str] | None = typer.Option(None, "--shifted-id", help="Covariate-shifted ID set, NAME=DIR "
                                                   "(same class folders, another style; repeatable)."),
    world: Path | None = typer.Option(None, "--world", help="An emoji world folder: its ood/ part gives the ID "
                                      "classes and images and the near/far/unseen OOD sets (instead of --id-classes, "
                                      "--id, --ood)."),
    shift_world: list[str] | None = typer.Option(None, "--shift-world", help="With --world: a world of the same "
                                                 "seed in another style, STYLE=DIR, as covariate-shifted ID "
                                                 "(repeatable)."),
    words: Path | None = typer.Option(None, help="Word list for NegLabel (default: WordNet)."),
    methods: str | None = typer.Option(None, help="Comma-separated subset, e.g. MCM,NegLabel,CLIPN-ATD."),
    openood_fpr: bool = typer.Option(False, "--openood-fpr", help="Also report OpenOOD's OOD-positive FPR95."),
    plots: Path | None = typer.Option(Path("ood-plots"), help="Folder for ROC curves and histograms (PNG)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    out: Path | None = typer.Option(None, help="Folder to write the result JSON into."),
    device: str = typer.Option("cpu"),
    cache: bool = typer.Option(True, help="Use the on-disk feature cache."),
) -> None:
    """OOD detection table: MSP, MaxLogit, Energy, MCM, NegLabel (and CLIPN-CTW/ATD with --clipn)."""
    bb = _load_backbone(model, device)
    ckpts = None
    if clipn:
        ckpts = {"": Path(clipn[0])} if len(clipn) == 1 and "=" not in clipn[0] else _pairs(clipn, "--clipn")
    word_list = guard(read_word_list, words) if words else None
    common = {"clipn": ckpts, "words": word_list, "methods": [m.strip() for m in methods.split(",")] if methods
              else None, "cache": FeatureCache.default() if cache else None, "progress": not as_json,
              "plots": plots, "openood_fpr": openood_fpr, "console": err}
    if world is not None:
        if id_classes or id_dir or ood or shifted_id:
            fail("--world gives the ID and OOD sets: drop --id-classes, --id, --ood and --shifted-id "
                 "(use --shift-world STYLE=DIR for shifted ID)")
        result = guard(world_ood_benchmark, bb, world, shift_folders=_pairs(shift_world or [], "--shift-world"),
                       **common)
    else:
        if shift_world:
            fail("--shift-world needs --world; without it give --shifted-id NAME=DIR")
        if id_classes is None or id_dir is None or not ood:
            fail("give --id-classes FILE, --id DIR and at least one --ood NAME=DIR, or --world DIR")
        result = guard(evaluate_ood, bb, id_classes, id_dir, _pairs(ood, "--ood"),
                       shifted_id=_pairs(shifted_id or [], "--shifted-id"), **common)
    if out is not None:
        err.print(f"result written to {_write_result(result, out)}")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        print_ood_table(result, console)
        if result.get("plots"):
            console.print(f"plots: {Path(result['plots'][0]).parent}/ ({len(result['plots'])} PNG)")


def register(app: typer.Typer) -> None:
    """Add ``ood`` to the ``sayno eval`` group (called by sayno/cli.py)."""
    subgroup(app, "eval", help=EVAL_HELP).command("ood")(eval_ood)
