"""Search commands, registered into the ``sayno`` app by :func:`register`:

    sayno index build DIR --out INDEX [--model SPEC] [--glasses CKPT|auto|none] [--workers N] [--rebuild]
    sayno search INDEX "a beach with no people" [-k 20] [--json] [--mode auto|clip] [--rerank 20]
    sayno serve INDEX [--host 127.0.0.1] [--port 8000] [--clipn CKPT|auto|none]

``sayno index build`` under ``torchrun --nproc_per_node N`` encodes with N processes into one index.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from sayno.cliutil import MODEL_HELP, console, err
from sayno.cliutil import guard as _guard

index_app = typer.Typer(no_args_is_help=True, help="Image indexes for negation-aware search.")


@index_app.command("build")
def index_build(
    folder: Path = typer.Argument(..., help="Folder of images (jpg, png, webp; searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to create or update."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    glasses: str = typer.Option("auto", help="CLIPGlasses checkpoint; auto = the shipped one for embedded; none."),
    batch_size: int = typer.Option(64, min=1, help="Images per forward pass."),
    workers: int = typer.Option(0, min=0, help="Decoding processes (0: decode in the main process)."),
    device: str = typer.Option("cpu", help="cpu, cuda, ... (under torchrun: cuda = cuda:LOCAL_RANK)."),
    rebuild: bool = typer.Option(False, help="Start from scratch, even over an index of another model."),
    as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON."),
    threads: int = typer.Option(0, min=0, help="torch threads per process (0: torch's default; on a busy "
                                "shared CPU 1 can be much faster, docs/RESULTS.md)."),
) -> None:
    """Index a folder (incremental: a re-run encodes only new or changed files and drops deleted ones)."""
    import torch

    from sayno.search import IndexConfig, build_index

    if threads:
        torch.set_num_threads(threads)

    cfg = IndexConfig(model=model, glasses=glasses, device=device, batch_size=batch_size, num_workers=workers,
                      rebuild=rebuild)
    report = _guard(build_index, folder, out, cfg, progress=not as_json)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for b in report.bad[:20]:
        err.print(f"[yellow]skipped[/] {b.file}: {b.reason}")
    if len(report.bad) > 20:
        err.print(f"[yellow]skipped[/] ... and {len(report.bad) - 20} more unreadable files")
    if as_json:
        d = {k: v for k, v in vars(report).items() if k != "bad"}
        d.update(index=str(report.index), folder=str(report.folder),
                 bad=[{"path": b.file, "reason": b.reason} for b in report.bad])
        sys.stdout.write(json.dumps(d, indent=1) + "\n")
    else:
        console.print(report.summary())


def search(
    index: Path = typer.Argument(..., help="Index folder (from `sayno index build`)."),
    query: str = typer.Argument(..., help='What the images should show, e.g. "a beach with no people".'),
    k: int = typer.Option(20, "-k", "--top", help="Number of results."),
    mode: str = typer.Option("auto", help="auto (Glasses when the query negates) | clip (always plain CLIP)."),
    rerank: int = typer.Option(0, min=0, help="Re-rank the top N with the image-conditioned Glasses lambda."),
    model: str | None = typer.Option(None, "--model", "-m", help="Backbone (default: the index's)."),
    glasses: str | None = typer.Option(None, help="Glasses checkpoint (default: the index's); none."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    threads: int = typer.Option(1, min=1, help="CPU threads for torch and faiss (1: fastest for one query)."),
) -> None:
    """Search an index: the Glasses score when the query negates, plain CLIP otherwise."""
    from sayno.search import Searcher, read_index, validate_query
    from sayno.search.query import set_threads

    set_threads(threads)

    _guard(validate_query, query, k)  # bad input fails before any model is loaded
    _guard(read_index, index)
    searcher = _guard(Searcher, index, model=model, glasses=glasses)
    result = _guard(searcher.search, query, k, mode=mode, rerank=rerank)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=1) + "\n")
        return
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}")
    how = "CLIPGlasses" if result.method == "glasses" else "plain CLIP"
    if result.method == "glasses":
        how += " (leaving out: " + ", ".join(f"{p['phrase']} lambda={p['lambda']:.2f}" for p in result.phrases) + ")"
    table = Table(title=f"{result.query!r}: {how}, {result.index_size} images, {result.ms:.0f} ms")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path")
    for h in result.hits:
        table.add_row(str(h.rank), f"{h.score:.2f}" + ("*" if h.refined else ""), h.file)
    console.print(table)


def serve(
    index: Path = typer.Argument(..., help="Index folder (from `sayno index build`)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8000, min=1, max=65535),
    clipn: str = typer.Option("auto", help="CLIPN checkpoint for the class check; auto = shipped; none."),
    glasses: str | None = typer.Option(None, help="Glasses checkpoint (default: the index's); none."),
    max_upload_mb: float = typer.Option(10.0, min=0.01, help="Largest accepted upload."),
    threads: int = typer.Option(1, min=1, help="CPU threads for torch and faiss (1: fastest for one query)."),
) -> None:
    """A web page and HTTP API (OpenAPI at /docs): search, plain vs sayno side by side, class check."""
    from sayno.search.query import set_threads
    from sayno.serve import ServeConfig, create_app, run

    set_threads(threads)

    cfg = ServeConfig(clipn=clipn, glasses=glasses, max_upload_bytes=int(max_upload_mb * 1024 * 1024))
    app = _guard(create_app, index, cfg)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] serving on {host}: anyone who can reach it can see the indexed images")
    err.print(f"sayno serve: http://{host}:{port}/ (API docs: /docs)")
    run(app, host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add ``index build``, ``search`` and ``serve`` to the sayno app (called by sayno/cli.py)."""
    app.add_typer(index_app, name="index")
    app.command("search")(search)
    app.command("serve")(serve)
