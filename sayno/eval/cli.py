"""``sayno eval zeroshot|mcq|ccneg|retrieval``, ``sayno benchmark``, ``sayno report`` and ``sayno glasses report``.

:func:`register` adds them to the root app; :func:`glasses_world_report` is the report ``sayno glasses train``
prints after training (handed to :func:`sayno.glasses.cli.register` as its ``report_hook``, since the glasses
layer cannot import eval).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sayno.backbones import Backbone, load
from sayno.cliutil import MODEL_HELP, cli_errors, console, err, guard, subgroup
from sayno.eval import runner
from sayno.eval.world import report as world_report
from sayno.features import FeatureCache
from sayno.glasses import Glasses, load_glasses
from sayno.glasses.finetune import load_finetuned

EVAL_HELP = "Benchmarks: zero-shot, MCQ, CC-Neg, retrieval, OOD."
GLASSES_HELP = "CLIPGlasses: negation-aware scoring on a frozen CLIP."
# what `sayno glasses train` reports on the world's test split (zero-shot is left out: it needs classify/)
TRAIN_REPORT_PARTS = ("ccneg", "mcq", "retrieval_neg", "retrieval")
EVAL_TASKS = {
    "zeroshot": "Zero-shot classification on class folders.",
    "mcq": "NegBench multiple-choice questions (CSV).",
    "ccneg": "CC-Neg: true vs negated caption (torch pickle or CSV).",
    "retrieval": "Text-image retrieval Recall@1/5/10 (NegBench CSV).",
}


def load_backbone(spec: str, device: str = "cpu") -> Backbone:
    """A backbone from its spec (tests replace this to stand in a tiny CLIP)."""
    return load(spec, device=device)


def register(app: typer.Typer) -> None:
    """Add ``eval zeroshot|mcq|ccneg|retrieval``, ``benchmark``, ``report`` and ``glasses report`` to ``app``."""
    eval_app = subgroup(app, "eval", EVAL_HELP)
    for task, doc in EVAL_TASKS.items():
        eval_app.command(task)(_eval_command(task, doc))
    app.command("benchmark")(benchmark)
    app.command("report")(report)
    subgroup(app, "glasses", GLASSES_HELP).command("report")(glasses_report)


# ---------------------------------------------------------------------------------------------- eval
def _eval_command(task: str, doc: str) -> Callable[..., None]:
    def command(
        model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
        data: Path = typer.Option(..., "--data", "-d", help="Dataset file or folder."),
        root: Path | None = typer.Option(None, help="Folder that relative image paths resolve against."),
        glasses: Path | None = typer.Option(None, help="CLIPGlasses checkpoint, or training-free (no weights, any backbone): adds a Glasses row."),
        classes: Path | None = typer.Option(None, help="Class names file (zeroshot; default: folder names)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        out: Path | None = typer.Option(None, help="Folder to write one result JSON into."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
        precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16"),
        cache: bool = typer.Option(True, help="Use the on-disk feature cache."),
    ) -> None:
        result = guard(runner.evaluate, task, model=model, data=data, root=root, glasses=glasses,
                       classes=classes, device=device, precision=precision, use_cache=cache,
                       progress=not as_json, console=err)
        if out is not None:
            err.print(f"result written to {guard(runner.write_result, result, out)}")
        if as_json:
            sys.stdout.write(json.dumps(result, indent=1) + "\n")
        else:
            runner.print_result(result, console)

    command.__doc__ = doc
    command.__name__ = task
    return command


def benchmark(
    world: Path | None = typer.Option(None, help="World folder (built on first use). Default: "
                                         "$SAYNO_WORLD or ~/.cache/sayno/world-openmoji-0."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    styles: str | None = typer.Option(None, help="Art styles, comma-separated (default: every one installed of "
                                      f"{','.join(runner.BENCHMARK_STYLES)}); other styles' worlds go beside "
                                      "--world as WORLD-<style>."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    out: Path | None = typer.Option(None, help="Folder to write the result JSONs into."),
    device: str = typer.Option("cpu", help="cpu, cuda, ..."),
    paper_glasses: Path | None = typer.Option(None, help="A `glasses train --preset paper` checkpoint: adds the "
                                              "\"CLIPGlasses (paper)\" row (default: the shipped one, if any)."),
) -> None:
    """The main job: every world benchmark in each art style, plain CLIP next to the shipped CLIPGlasses and CLIPN,
    and the drop from the training style (openmoji) to the others."""
    chosen = styles.split(",") if styles is not None else None
    results = guard(runner.benchmark, world=world, model=model, device=device, styles=chosen,
                    progress=not as_json, console=err, paper_glasses=paper_glasses)
    if out is not None:
        for result in results:
            guard(runner.write_result, result, out)
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    else:
        runner.print_benchmark(results, console)


def report(folder: Path = typer.Argument(..., help="Folder of result JSONs written with --out."),
           markdown: bool = typer.Option(False, help="Print Markdown tables.")) -> None:
    """Aggregate result JSONs into tables (one per task)."""
    results = guard(runner.read_results, folder)
    if markdown:
        sys.stdout.write(runner.markdown_tables(results))
    else:
        runner.print_summary(results, console)


# ---------------------------------------------------------------------------------------------- glasses
def _cache(no_cache: bool) -> FeatureCache | None:
    return None if no_cache else FeatureCache()


@cli_errors
def glasses_report(
    world: Annotated[Path, typer.Option(help="World folder.")],
    model: Annotated[str, typer.Option(help="Backbone spec.")] = "embedded",
    glasses: Annotated[Path | None, typer.Option(help="Glasses checkpoint.")] = None,
    finetuned: Annotated[Path | None, typer.Option(help="Fine-tuned text tower (the baseline).")] = None,
    split: Annotated[str, typer.Option(help="World split.")] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")] = None,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the on-disk feature cache.")] = False,
) -> None:
    """Plain CLIP, Glasses and the fine-tuned baseline on a world split (quick; `sayno eval` is the reference)."""
    backbone = load_backbone(model, device)
    loaded = load_glasses(glasses, backbone) if glasses else None
    extra = {"CLIP text-finetuned": load_finetuned(finetuned, backbone)} if finetuned else {}
    result = world_report(backbone, world, loaded, split=split, cache=_cache(no_cache), extra=extra)
    print_report(result)
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))


def glasses_world_report(backbone: Backbone, data_folder: str | Path, glasses: Glasses,
                         cache: FeatureCache | None) -> None:
    """Print the report of freshly trained Glasses on the world's test split (``sayno glasses train --report``)."""
    print_report(world_report(backbone, data_folder, glasses, cache=cache, parts=TRAIN_REPORT_PARTS))


def print_report(result: dict) -> None:
    """One table per report part, scorers as rows; the Glasses lambda summary on one line."""
    for part, rows in result.items():
        if part == "lambda":
            console.print("[bold]lambda[/bold]: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows.items()))
            continue
        columns = list(next(iter(rows.values())).keys())
        table = Table(title=part)
        table.add_column("method")
        for column in columns:
            table.add_column(column, justify="right")
        for name, metrics in rows.items():
            table.add_row(name, *[f"{metrics[c]:.2f}" for c in columns])
        console.print(table)
