"""``sayno glasses ...``: train, fine-tune the baseline, report and explain.

``sayno/cli.py`` adds :data:`app` as the ``glasses`` sub-command; it also runs on its own:
``python -m sayno.glasses.cli train --model embedded --data runs/world --out glasses.safetensors``.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sayno.cliutil import cli_errors, console

app = typer.Typer(help="CLIPGlasses: negation-aware scoring on a frozen CLIP.", no_args_is_help=True,
                  add_completion=False)


class LensInput(str, Enum):
    phrase = "phrase"
    caption = "caption"


class ScoreKind(str, Enum):
    tau = "tau"
    reference = "reference"


class BaseKind(str, Enum):
    affirmative = "affirmative"
    caption = "caption"


class DetectorMode(str, Enum):
    lexical = "lexical"
    learned = "learned"
    both = "and"
    either = "or"


def load_backbone(spec: str, device: str = "cpu"):
    """A backbone from its spec (``sayno.load``)."""
    from sayno.backbones.registry import load

    return load(spec, device=device)


def _epochs(text: str) -> tuple[int, int, int, int]:
    parts = [int(x) for x in text.split(",")]
    if len(parts) == 1:
        parts = parts * 4
    if len(parts) != 4 or any(p < 0 for p in parts):
        raise typer.BadParameter("give 4 comma-separated epoch counts (detector,frame,lens,joint) or one number")
    return tuple(parts)  # type: ignore[return-value]


def _cache(no_cache: bool):
    if no_cache:
        return None
    try:
        from sayno.features import FeatureCache

        return FeatureCache()
    except (ImportError, TypeError):
        return None


@app.command()
@cli_errors
def train(
    data: Annotated[str, typer.Option(help="World folder, or CSV file(s) (negation / CC-Neg / NegBench "
                                           "retrieval), comma-separated.")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write (.safetensors).")],
    model: Annotated[str, typer.Option(help="Backbone spec (see `sayno models`).")] = "embedded",
    val: Annotated[str | None, typer.Option(help="Validation data (default: the world's *_val.csv, else 10% "
                                                 "of the scene groups).")] = None,
    lens: Annotated[LensInput, typer.Option(help="Lens input: each negated phrase (sayno) or the caption (one "
                                                 "h_neg per caption, the reference).")] = LensInput.phrase,
    score: Annotated[ScoreKind, typer.Option(help="tau (sayno) or reference (clamped).")] = ScoreKind.tau,
    base: Annotated[BaseKind, typer.Option(help="Score base: the affirmative remainder (sayno) or the caption "
                                                "(reference).")] = BaseKind.affirmative,
    detector: Annotated[DetectorMode, typer.Option(help="Which captions count as negated.")] = DetectorMode.lexical,
    lambda_max: Annotated[float, typer.Option(help="Upper bound of lambda.")] = 2.0,
    hidden: Annotated[int, typer.Option(help="Hidden width of Lens and Frame.")] = 256,
    epochs: Annotated[str, typer.Option(help="Epochs per stage: detector,frame,lens,joint.")] = "20,10,10,20",
    batch_groups: Annotated[int | None, typer.Option(
        help="Scene groups per batch (default 32; fewer for small data, so that an epoch has at least 16 batches).",
        show_default=False)] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    patience: Annotated[int, typer.Option(help="Early stopping: epochs without a better validation loss "
                                               "(counted after --min-steps).")] = 5,
    min_steps: Annotated[int, typer.Option(help="At least this many steps per stage (small data sets get "
                                                "more epochs).")] = 600,
    fraction: Annotated[float, typer.Option(help="Train on this fraction of the scene groups.")] = 1.0,
    presence_weight: Annotated[float, typer.Option(help="Weight of the Lens presence loss (0: off).")] = 0.0,
    lens_weight: Annotated[float, typer.Option(help="Weight of the reference Lens loss in the joint stage.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads (the modules are small: 1 is fastest).")] = 1,
    resume: Annotated[bool, typer.Option("--resume/--no-resume",
                                         help="Continue an interrupted run (<out>.partial).")] = True,
    report: Annotated[bool, typer.Option("--report/--no-report",
                                         help="Print the report of the world's test split.")] = True,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the on-disk feature cache.")] = False,
) -> None:
    """Train Glasses on cached frozen-CLIP features (detector, Frame, Lens, then Lens+Frame)."""
    from sayno.glasses.model import GlassesConfig
    from sayno.glasses.train import TrainConfig, train_glasses

    backbone = load_backbone(model, device)
    cfg = GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers, hidden=hidden,
                        lens_input=lens.value, score=score.value, base=base.value, detector=detector.value,
                        lambda_max=lambda_max)
    tc = TrainConfig(epochs=_epochs(epochs), batch_groups=batch_groups, lr=lr, patience=patience,
                     min_steps=min_steps, fraction=fraction, seed=seed, threads=threads,
                     presence_weight=presence_weight, lens_weight=lens_weight)
    cache = _cache(no_cache)
    res = train_glasses(backbone, data, out, config=cfg, train=tc, val_data=val, resume=resume, cache=cache,
                        log=console.print)
    if report and Path(data).is_dir() and (Path(data) / "ccneg_test.csv").exists():
        from sayno.glasses.evaluate import report as world_report

        print_report(world_report(backbone, data, res.glasses, cache=cache,
                                  parts=("ccneg", "mcq", "retrieval_neg", "retrieval")))


@app.command()
@cli_errors
def finetune(
    data: Annotated[str, typer.Option(help="Same data as `glasses train`.")],
    out: Annotated[Path, typer.Option(help="Fine-tuned text tower to write (.safetensors).")],
    model: Annotated[str, typer.Option(help="Backbone spec.")] = "embedded",
    val: Annotated[str | None, typer.Option(help="Validation data.")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 2,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 5e-5,
    batch_groups: Annotated[int, typer.Option(help="Scene groups per batch.")] = 16,
    fraction: Annotated[float, typer.Option(help="Train on this fraction of the scene groups.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the on-disk feature cache.")] = False,
) -> None:
    """Baseline: fine-tune a copy of the text tower on the same negation data (ConCLIP / NegBench style)."""
    from sayno.glasses.finetune import FinetuneConfig, finetune_text

    backbone = load_backbone(model, device)
    fc = FinetuneConfig(epochs=epochs, lr=lr, batch_groups=batch_groups, fraction=fraction, seed=seed,
                        threads=threads)
    finetune_text(backbone, data, out, config=fc, val_data=val, cache=_cache(no_cache), log=console.print)


@app.command("report")
@cli_errors
def report_cmd(
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
    from sayno.glasses.evaluate import report
    from sayno.glasses.model import load_glasses

    backbone = load_backbone(model, device)
    g = load_glasses(glasses, backbone) if glasses else None
    extra = {}
    if finetuned:
        from sayno.glasses.finetune import load_finetuned

        extra["CLIP text-finetuned"] = load_finetuned(finetuned, backbone)
    res = report(backbone, world, g, split=split, cache=_cache(no_cache), extra=extra)
    print_report(res)
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))


@app.command()
@cli_errors
def explain(
    captions: Annotated[list[str], typer.Argument(help="Captions to analyse.")],
    glasses: Annotated[Path, typer.Option(help="Glasses checkpoint.")],
    model: Annotated[str, typer.Option(help="Backbone spec.")] = "embedded",
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
) -> None:
    """What the Glasses see in each caption: negated?, negated phrases, hedges, lambda."""
    from sayno.glasses.model import load_glasses

    g = load_glasses(glasses, load_backbone(model, device))
    t = Table("caption", "negated", "phrases", "hedged", "affirmative part", "lambda", "tau")
    for e in g.explain(captions):
        t.add_row(e["text"], str(e["negated"]), ", ".join(e["phrases"]), ", ".join(map(str, e["hedged"])),
                  e["affirmative"], ", ".join(f"{x:.3f}" for x in e["lambda"]),
                  ", ".join(f"{x:.3f}" for x in e["tau"]))
    console.print(t)


def print_report(res: dict) -> None:
    """One table per benchmark part, scorers as rows."""
    for part, rows in res.items():
        if part == "lambda":
            console.print("[bold]lambda[/bold]: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in rows.items()))
            continue
        cols = list(next(iter(rows.values())).keys())
        t = Table(title=part)
        t.add_column("method")
        for c in cols:
            t.add_column(c, justify="right")
        for name, m in rows.items():
            t.add_row(name, *[f"{m[c]:.2f}" for c in cols])
        console.print(t)


if __name__ == "__main__":
    app()
