"""The ``sayno`` command line: a thin layer over the Python API.

    sayno world build OUT [--style openmoji] [--seed 0]
    sayno eval zeroshot|mcq|ccneg|retrieval --model SPEC --data PATH [--glasses CKPT] [--json] [--out DIR]
    sayno benchmark                      # the main job: every world benchmark on the embedded default
    sayno report DIR                     # aggregate result JSONs into one table
    sayno info --model SPEC
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from sayno.clipn import cli as clipn_cli
from sayno.cliutil import MODEL_HELP, console, err
from sayno.cliutil import guard as _guard
from sayno.eval import runner
from sayno.glasses import cli as glasses_cli
from sayno.search import cli as search_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="sayno: teach CLIP to say no (CLIPGlasses and CLIPN for any CLIP).")
world_app = typer.Typer(no_args_is_help=True, help="The emoji world: build its datasets.")
eval_app = typer.Typer(no_args_is_help=True, help="Benchmarks: zero-shot, MCQ, CC-Neg, retrieval, OOD.")
app.add_typer(world_app, name="world")
app.add_typer(eval_app, name="eval")

# ---------------------------------------------------------------------------------------------- world
@world_app.command("build")
def world_build(
    out: Path = typer.Argument(..., help="Output folder."),
    style: str = typer.Option("openmoji", help="openmoji | noto | folder:<PNGs named by code point>"),
    seed: int = typer.Option(0, help="Seed of every split's random stream."),
    size: int = typer.Option(64, help="Image size in pixels."),
    parts: str = typer.Option("train,val,test,captions,classify,ood", help="Comma-separated parts to build."),
    scale: float = typer.Option(1.0, help="Multiply every split's size (0.1 for a quick look)."),
) -> None:
    """Render the world's datasets (NegBench MCQ/retrieval CSVs, CC-Neg pairs, captions, class folders)."""
    from sayno.world import WorldConfig, build_world

    base = WorldConfig()
    cfg = WorldConfig(seed=seed, style=style, size=size,
                      **{k: max(1, int(getattr(base, k) * scale)) for k in (
                          "train_groups", "val_groups", "test_groups", "caption_images", "classify_per_class",
                          "ood_id_per_class", "ood_per_class")})
    manifest = _guard(build_world, out, cfg, parts=tuple(p.strip() for p in parts.split(",") if p.strip()))
    console.print(f"wrote {out} ({', '.join(manifest['parts'])})")


# ---------------------------------------------------------------------------------------------- eval
def _common_eval(task: str, model: str, data: Path, root: Path | None, glasses: Path | None,
                 classes: Path | None, as_json: bool, out: Path | None, device: str, precision: str,
                 cache: bool) -> None:
    result = _guard(runner.evaluate, task, model=model, data=data, root=root, glasses=glasses, classes=classes,
                    device=device, precision=precision, use_cache=cache, progress=not as_json, console=err)
    if out is not None:
        path = runner.write_result(result, out)
        err.print(f"result written to {path}")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        runner.print_result(result, console)


def _eval_command(task: str, doc: str):
    def command(
        model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
        data: Path = typer.Option(..., "--data", "-d", help="Dataset file or folder."),
        root: Path | None = typer.Option(None, help="Folder that relative image paths resolve against."),
        glasses: Path | None = typer.Option(None, help="CLIPGlasses checkpoint: adds a Glasses row."),
        classes: Path | None = typer.Option(None, help="Class names file (zeroshot; default: folder names)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        out: Path | None = typer.Option(None, help="Folder to write one result JSON into."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
        precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16"),
        cache: bool = typer.Option(True, help="Use the on-disk feature cache."),
    ) -> None:
        _common_eval(task, model, data, root, glasses, classes, as_json, out, device, precision, cache)

    command.__doc__ = doc
    return command


eval_app.command("zeroshot")(_eval_command("zeroshot", "Zero-shot classification on class folders."))
eval_app.command("mcq")(_eval_command("mcq", "NegBench multiple-choice questions (CSV)."))
eval_app.command("ccneg")(_eval_command("ccneg", "CC-Neg: true vs negated caption (torch pickle or CSV)."))
eval_app.command("retrieval")(_eval_command("retrieval", "Text-image retrieval Recall@1/5/10 (NegBench CSV)."))


@app.command()
def benchmark(
    world: Path | None = typer.Option(None, help="World folder (built on first use). Default: "
                                         "$SAYNO_WORLD or ~/.cache/sayno/world-openmoji-0."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    out: Path | None = typer.Option(None, help="Folder to write the result JSONs into."),
    device: str = typer.Option("cpu", help="cpu, cuda, ..."),
) -> None:
    """The main job: every world benchmark, plain CLIP next to the shipped CLIPGlasses and CLIPN."""
    results = _guard(runner.benchmark, world=world, model=model, device=device, progress=not as_json, console=err)
    if out is not None:
        for r in results:
            runner.write_result(r, out)
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    else:
        runner.print_benchmark(results, console)


@app.command()
def report(folder: Path = typer.Argument(..., help="Folder of result JSONs written with --out."),
           markdown: bool = typer.Option(False, help="Print Markdown tables.")) -> None:
    """Aggregate result JSONs into tables (one per task)."""
    results = _guard(runner.read_results, folder)
    if markdown:
        sys.stdout.write(runner.markdown_tables(results))
    else:
        runner.print_summary(results, console)


@app.command()
def info(model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP)) -> None:
    """Load a backbone and print what it is (fingerprint, sizes, logit scale)."""
    from sayno.backbones import load

    bb = _guard(load, model)
    for k in ("spec", "fingerprint", "embed_dim", "image_size", "context_length", "num_text_layers"):
        console.print(f"{k:16s} {getattr(bb, k)}")
    console.print(f"{'logit_scale':16s} {bb.logit_scale:.2f}")


# Method sub-commands live next to their methods.
app.add_typer(glasses_cli.app, name="glasses")
clipn_cli.register(app, eval_app)
search_cli.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
