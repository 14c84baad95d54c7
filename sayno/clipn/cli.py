"""CLIPN's commands, registered into the ``sayno`` app by :func:`register`:

    sayno clipn train --model SPEC --data CAPTIONS.csv --out CKPT [--epochs 10] [--seed 0] ...
    sayno clipn info CKPT
    sayno eval ood --model SPEC [--clipn CKPT] --id-classes FILE --id DIR --ood NAME=DIR ... [--json]
    sayno ood --model SPEC --clipn CKPT --classes FILE IMAGES...

``sayno clipn train`` under ``torchrun --nproc_per_node N`` trains with N processes (gloo on CPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from sayno.cliutil import MODEL_HELP, console, err
from sayno.cliutil import fail as _fail
from sayno.cliutil import guard as _guard

clipn_app = typer.Typer(no_args_is_help=True, help="CLIPN: a CLIP that says no, for zero-shot OOD detection.")


def _load_backbone(model: str, device: str):
    from sayno.backbones import load

    return _guard(load, model, device=device)


def _cache(use: bool):
    from sayno.features import FeatureCache

    return FeatureCache.default() if use else None


def _pairs(values: list[str], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        if "=" not in v:
            name, path = Path(v).name, v
        else:
            name, path = v.split("=", 1)
        name = name.strip()
        if not name or name in out:
            _fail(f"{what} {v!r}: give NAME=DIR with a distinct name")
        out[name] = Path(path)
    return out


# ---------------------------------------------------------------------------------------------- train
@clipn_app.command("train")
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
    seed: int = typer.Option(0),
    max_pairs: int | None = typer.Option(None, help="Use only the first N pairs (quick runs)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ... (under torchrun: cuda = cuda:LOCAL_RANK)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint / unfinished run."),
    cache: bool = typer.Option(True, help="Use the on-disk feature cache for the frozen towers."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Train the "no" text encoder (resumes an interrupted run with the same settings)."""
    import os

    from sayno.clipn.train import TrainConfig, summary_json, train_clipn

    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    cfg = TrainConfig(variant=variant, n_prompts=prompts, epochs=epochs, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, seed=seed, max_pairs=max_pairs, learn_bias=bias)
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


@clipn_app.command("info")
def info(checkpoint: Path = typer.Argument(..., help="A CLIPN checkpoint.")) -> None:
    """What a checkpoint holds: backbone fingerprint, variant, training settings and result."""
    from sayno.clipn.checkpoint import read_clipn

    tensors, meta = _guard(read_clipn, checkpoint)
    n = sum(t.numel() for t in tensors.values())
    sys.stdout.write(json.dumps({"file": str(checkpoint), "tensors": len(tensors), "parameters": n,
                                 **{k: v for k, v in meta.items()}}, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- eval ood
def _write_result(result: dict, folder: Path) -> Path:
    """One JSON per (model, dataset, task), named like sayno.eval.runner's results (``sayno report`` reads it)."""
    import hashlib

    key = f"{result['model']}|{result['fingerprint']}|{result['dataset']}|{result['task']}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ood-{Path(result['dataset']).stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def eval_ood(
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    clipn: list[str] | None = typer.Option(None, "--clipn", help="CLIPN checkpoint; repeat (LABEL=CKPT) for "
                                              "several, e.g. seeds: adds mean ± std rows."),
    id_classes: Path = typer.Option(..., "--id-classes", help="ID class names, one per line."),
    id_dir: Path = typer.Option(..., "--id", help="ID images: <dir>/<class>/<image>."),
    ood: list[str] = typer.Option(..., "--ood", help="An OOD set as NAME=DIR (repeatable)."),
    shifted_id: list[str] | None = typer.Option(None, "--shifted-id", help="Covariate-shifted ID set, NAME=DIR "
                                                   "(same class folders, another style; repeatable)."),
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
    from sayno.ood.bench import evaluate_ood, print_ood_table
    from sayno.ood.wordlist import read_word_list

    bb = _load_backbone(model, device)
    ckpts = None
    if clipn:
        ckpts = {"": Path(clipn[0])} if len(clipn) == 1 and "=" not in clipn[0] else _pairs(clipn, "--clipn")
    word_list = _guard(read_word_list, words) if words else None
    result = _guard(evaluate_ood, bb, id_classes, id_dir, _pairs(ood, "--ood"), clipn=ckpts,
                    shifted_id=_pairs(shifted_id or [], "--shifted-id"), words=word_list,
                    methods=[m.strip() for m in methods.split(",")] if methods else None, cache=_cache(cache),
                    progress=not as_json, plots=plots, openood_fpr=openood_fpr, console=err)
    if out is not None:
        err.print(f"result written to {_write_result(result, out)}")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        print_ood_table(result, console)
        if result.get("plots"):
            console.print(f"plots: {Path(result['plots'][0]).parent}/ ({len(result['plots'])} PNG)")


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
    from sayno.clipn.infer import predict_images

    bb = _load_backbone(model, device)
    rows, bad = _guard(predict_images, bb, clipn, classes, images, rule=rule, threshold=threshold,
                       cache=_cache(cache))
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
    else:
        from rich.table import Table

        t = Table(title=f"CLIPN-{rule.upper()} ({len(rows)} images)", title_justify="left")
        for c in ("image", "class", "decision", "score"):
            t.add_column(c, justify="right" if c == "score" else "left", overflow="fold")
        for r in rows:
            t.add_row(r["image"], r["class"], "[green]ID[/]" if r["decision"] == "ID" else "[red]OOD[/]",
                      f"{r['score']:.4f}")
        console.print(t)
    if bad:
        from sayno.data import report_bad_rows

        report_bad_rows(bad, err)
        if not rows:
            raise typer.Exit(1)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``clipn``, ``eval ood`` and ``ood`` to the sayno app (called by sayno/cli.py)."""
    app.add_typer(clipn_app, name="clipn")
    eval_app.command("ood")(eval_ood)
    app.command("ood")(ood)
