"""CLIPN's commands, added to the ``sayno`` app by :func:`register`:

    sayno clipn train --model SPEC --data CAPTIONS.csv --out CKPT [--epochs 10] [--seed 0] ...
    sayno clipn train ... --variant handcrafted --templates reference    # the reference's paired templates
    sayno clipn info CKPT
    sayno ood --model SPEC --clipn CKPT --classes FILE IMAGES...

``sayno clipn train`` under ``torchrun --nproc_per_node N`` trains with N processes (gloo on CPU).
``sayno eval ood`` (the benchmark table) lives in :mod:`sayno.ood.cli`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from sayno.backbones import load
from sayno.backbones.base import Backbone
from sayno.clipn.checkpoint import read_clipn
from sayno.clipn.predict import predict_images
from sayno.clipn.train import TrainConfig, summary_json, train_clipn
from sayno.cliutil import MODEL_HELP, console, err, subgroup
from sayno.cliutil import guard as _guard
from sayno.data import report_bad_rows
from sayno.features import FeatureCache

CLIPN_HELP = "CLIPN: a CLIP that says no, for zero-shot OOD detection."


def _load_backbone(model: str, device: str) -> Backbone:
    return _guard(load, model, device=device)


def _cache(use: bool) -> FeatureCache | None:
    return FeatureCache.default() if use else None


# ---------------------------------------------------------------------------------------------- train
def train(
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    data: Path = typer.Option(..., "--data", "-d", help="CSV of image-caption pairs: filepath,caption."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (.safetensors)."),
    variant: str = typer.Option("learnable", help="learnable (16 'no' prompts) | handcrafted (negated text)."),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(256, min=2, help="Global batch (split over torchrun processes)."),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(0.2),
    prompts: int = typer.Option(16, min=1, help="Number of learnable 'no' prompts."),
    bias: bool = typer.Option(True, help="Learn a logit bias b in p_yes = sigmoid(s (f.g - f.gno) + b) "
                              "(--no-bias: the reference CLIPN; see docs/CLIPN.md)."),
    prompt_draw: str = typer.Option("caption", help="caption: the reference's draw, one of the 'no' prompts or "
                                    "their mean per caption | batch: one prompt per step (sayno before issue 26)."),
    templates: str = typer.Option("sayno", help="handcrafted variant's templates: sayno (sayno's 'no' caption "
                                  "and class templates) | reference (the reference CLIPN's 128 paired templates; "
                                  "docs/CLIPN.md). Recorded in the checkpoint: inference uses the same."),
    seed: int = typer.Option(0),
    max_pairs: int | None = typer.Option(None, help="Use only the first N pairs (quick runs)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ... (under torchrun: cuda = cuda:LOCAL_RANK)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint / unfinished run."),
    cache: bool = typer.Option(True, help="Use the on-disk feature cache for the frozen towers."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Train the "no" text encoder (resumes an interrupted run with the same settings)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    cfg = _guard(TrainConfig, variant=variant, n_prompts=prompts, epochs=epochs, batch_size=batch_size, lr=lr,
                 weight_decay=weight_decay, seed=seed, max_pairs=max_pairs, learn_bias=bias,
                 prompt_draw=prompt_draw, templates=templates)
    bb = _load_backbone(model, device)
    summary = _guard(train_clipn, bb, data, out, cfg, cache=_cache(cache), progress=not as_json,
                     overwrite=overwrite, console=err)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        sys.stdout.write(summary_json(summary) + "\n")
    else:
        fin = summary["final"] or {}
        console.print(f"saved {out}: {summary['steps']} steps, {summary['pairs']} pairs, final loss "
                      f"{fin.get('loss', float('nan')):.4f}, {summary['seconds']:.0f} s"
                      + (f" (resumed at step {summary['resumed_from']})" if summary["resumed_from"] else ""))


def info(checkpoint: Path = typer.Argument(..., help="A CLIPN checkpoint.")) -> None:
    """What a checkpoint holds: backbone fingerprint, variant, training settings and result."""
    tensors, meta = _guard(read_clipn, checkpoint)
    n = sum(t.numel() for t in tensors.values())
    sys.stdout.write(json.dumps({"file": str(checkpoint), "tensors": len(tensors), "parameters": n,
                                 **{k: v for k, v in meta.items()}}, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- sayno ood
def ood(
    images: list[Path] = typer.Argument(..., help="Image files (folders are searched for images)."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    clipn: Path = typer.Option(..., "--clipn", help="CLIPN checkpoint trained for this backbone."),
    classes: Path = typer.Option(..., "--classes", help="ID class names, one per line."),
    rule: str = typer.Option("atd", help="atd (agreeing-to-differ) | ctw (competing-to-win)."),
    threshold: float | None = typer.Option(None, help="Decide ID iff score >= this (instead of the rule), "
                                              "e.g. the score that keeps 95% of your ID images."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image (JSON lines)."),
    device: str = typer.Option("cpu"),
    cache: bool = typer.Option(False, help="Use the on-disk feature cache."),
) -> None:
    """Per image: the predicted ID class, ID or OOD, and the score (higher = more in-distribution)."""
    bb = _load_backbone(model, device)
    rows, bad = _guard(predict_images, bb, clipn, classes, images, rule=rule, threshold=threshold,
                       cache=_cache(cache))
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
    else:
        t = Table(title=f"CLIPN-{rule.upper()} ({len(rows)} images)", title_justify="left")
        for c in ("image", "class", "decision", "score"):
            t.add_column(c, justify="right" if c == "score" else "left", overflow="fold")
        for r in rows:
            t.add_row(r["image"], r["class"], "[green]ID[/]" if r["decision"] == "ID" else "[red]OOD[/]",
                      f"{r['score']:.4f}")
        console.print(t)
    if bad:
        report_bad_rows(bad, err)
        if not rows:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``clipn`` group (train, info) and the ``ood`` command to the sayno app (called by sayno/cli.py)."""
    group = subgroup(app, "clipn", help=CLIPN_HELP)
    group.command("train")(train)
    group.command("info")(info)
    app.command("ood")(ood)
