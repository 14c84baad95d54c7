"""Search commands, added to the ``sayno`` app by :func:`register`:

    sayno index build DIR --out INDEX [--model SPEC] [--glasses CKPT|auto|none] [--workers N] [--rebuild] [--force]
    sayno search INDEX "a beach with no people" [-k 20] [--json] [--mode auto|clip] [--rerank 20]
    sayno search INDEX "a beach" - people + 2:sunset [--add TERM] [--subtract TERM] [--matches-only]

``sayno index build`` under ``torchrun --nproc_per_node N`` encodes with N processes into one index.
``sayno serve`` lives in :mod:`sayno.serve.cli`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from sayno.cliutil import MODEL_HELP, console, err, guard, subgroup
from sayno.runtime import torch_threads
from sayno.search.build import BuildReport, IndexConfig, build_index
from sayno.search.milvus import check_backend
from sayno.search.query import Searcher, SearchResult, validate_query
from sayno.search.store import read_index
from sayno.search.terms import parse_terms

INDEX_HELP = "Image indexes for negation-aware search."


def index_build(
    folder: Path = typer.Argument(..., help="Folder of images (jpg, png, webp, bmp; searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to create or update."),
    model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP),
    glasses: str = typer.Option("auto", help="CLIPGlasses checkpoint; training-free; auto = the shipped one "
                                 "for embedded, training-free for other backbones; none."),
    batch_size: int = typer.Option(64, min=1, help="Images per forward pass."),
    workers: int = typer.Option(0, min=0, help="Decoding processes (0: decode in the main process)."),
    device: str = typer.Option("cpu", help="cpu, cuda, ... (under torchrun: cuda = cuda:LOCAL_RANK)."),
    rebuild: bool = typer.Option(False, help="Start from scratch, even over an index of another model."),
    as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON."),
    threads: int | None = typer.Option(None, min=1, help="torch threads per process (default: torch's; on a "
                                       "busy shared CPU 1 can be much faster, docs/RESULTS.md)."),
    force: bool = typer.Option(False, help="Allow an --out inside the image folder or a non-empty folder that "
                               "is not an index (the index only ever removes what it wrote)."),
    index: str = typer.Option("auto", "--index", help="flat (every vector scanned) | ivf (approximate, for "
                              "millions) | auto (by collection size; docs/SEARCH.md)."),
    backend: str = typer.Option("faiss", help="faiss (in the index folder) | milvus (also uploaded to --uri)."),
    uri: str | None = typer.Option(None, help="Milvus: a Milvus Lite file (./photos.db) or a server "
                                   "(http://host:19530)."),
    match_vocabulary: bool = typer.Option(True, "--match-vocabulary/--no-match-vocabulary", help="Test each "
                                          "match against about 3,000 WordNet nouns too: fewer images marked as "
                                          "matching a thing they do not show, a few more that show it unmarked "
                                          "(docs/SEARCH.md)."),
) -> None:
    """Index a folder (incremental: a re-run encodes only new or changed files and drops deleted ones)."""
    cfg = IndexConfig(model=model, glasses=glasses, device=device, batch_size=batch_size, num_workers=workers,
                      rebuild=rebuild, index=index, backend=backend, uri=uri, vocabulary=match_vocabulary)
    report = guard(build_index, folder, out, cfg, progress=not as_json, threads=threads, force=force)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    _print_bad(report)
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}")
    if as_json:
        sys.stdout.write(json.dumps(_report_dict(report), indent=1) + "\n")
    else:
        console.print(report.summary())


def _print_bad(report: BuildReport, most: int = 20) -> None:
    for b in report.bad[:most]:
        err.print(f"[yellow]skipped[/] {b.file}: {b.reason}")
    if len(report.bad) > most:
        err.print(f"[yellow]skipped[/] ... and {len(report.bad) - most} more unreadable files")


def _report_dict(report: BuildReport) -> dict:
    out = {k: v for k, v in vars(report).items() if k != "bad"}
    out.update(index=str(report.index), folder=str(report.folder),
               bad=[{"path": b.file, "reason": b.reason} for b in report.bad])
    return out


def search(
    index: Path = typer.Argument(..., help="Index folder (from `sayno index build`)."),
    query: list[str] = typer.Argument(..., help='What the images should show, e.g. "a beach with no people"; '
                                      'rclip-style terms may follow: "a beach" - people + 2:sunset.'),
    k: int = typer.Option(20, "-k", "--top", help="Number of results."),
    mode: str = typer.Option("auto", help="auto (Glasses when the query negates) | clip (always plain CLIP)."),
    rerank: int = typer.Option(0, min=0, help="Re-rank the top N with the image-conditioned Glasses lambda."),
    model: str | None = typer.Option(None, "--model", "-m", help="Backbone (default: the index's)."),
    glasses: str | None = typer.Option(None, help="Glasses checkpoint (default: the index's); none."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    threads: int = typer.Option(1, min=1, help="CPU threads for torch and faiss (1: fastest for one query)."),
    backend: str | None = typer.Option(None, help="faiss | milvus (default: where the index was built to be "
                                       "searched)."),
    uri: str | None = typer.Option(None, help="Milvus address, when not the one the index was built with."),
    add: list[str] = typer.Option([], "--add", "-a", help="A term to add (text, or an image path ./cat.jpg; "
                                  "a weight as 2:sunset); repeatable."),
    subtract: list[str] = typer.Option([], "--subtract", "--sub", "-s", help="A term to subtract; repeatable."),
    matches_only: bool = typer.Option(False, "--matches-only", help="Only images that pass the index's match "
                                      "test (docs/SEARCH.md, \"Match threshold\")."),
) -> None:
    """Search an index: the Glasses score when the query negates, plain CLIP otherwise. rclip-style terms:
    \"a beach\" - people + 2:sunset (the query vector e(q) + sum w*e(add) - sum w*e(sub), renormalised)."""
    query = " ".join(query)  # the terms are read from the words (sayno.search.terms), as on the web page
    guard(validate_query, query, k)  # bad input fails before any model is loaded
    guard(parse_terms, query, add, subtract)
    guard(read_index, index)
    guard(check_backend, backend, uri)
    with torch_threads(threads):  # the model loads with the same threads as the search
        searcher = guard(Searcher, index, model=model, glasses=glasses, threads=threads, backend=backend, uri=uri)
        result = guard(searcher.search, query, k, mode=mode, rerank=rerank, add=add, subtract=subtract,
                       matches_only=matches_only)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=1) + "\n")
    else:
        _print_result(result)


def _print_result(result: SearchResult) -> None:
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}")
    how = (result.glasses or "CLIPGlasses") if result.method == "glasses" else "plain CLIP"
    if result.method == "glasses":
        how += " (leaving out: " + ", ".join(f"{p['phrase']} lambda={p['lambda']:.2f}" for p in result.phrases) + ")"
    if len(result.terms) > 1 or result.reading != f'"{result.query}"':
        err.print(f"read as: {result.reading}  (subtracted terms repel; added ones attract)")
    test = result.match_test
    if test:
        words = f", against {test['vocabulary']:,} words too" if test.get("vocabulary") else ""
        err.print(f"match test: {_describe_test(test)} (tau={test.get('tau')}{words})")
    title = f"{result.query!r}: {how}, {result.index_size} images, {result.ms:.0f} ms"
    if result.no_match:
        err.print(f"[bold]{result.no_match}[/]" + (" (the nearest images follow)" if result.hits else ""))
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("match")
    table.add_column("path")
    for h in result.hits:
        table.add_row(str(h.rank), f"{h.score:.2f}" + ("*" if h.refined else ""), "yes" if h.match else "no", h.file)
    if result.hits:
        console.print(table)


def _describe_test(test: dict) -> str:
    """``cat present, dog absent``."""
    parts = [f"{p} present" for p in test.get("wanted", [])] + [f"{p} absent" for p in test.get("unwanted", [])]
    return ", ".join(parts) or "nothing asked (every image matches)"


def register(app: typer.Typer) -> None:
    """Add the ``index`` group (``index build``) and ``search`` to the sayno app (called by sayno/cli.py)."""
    subgroup(app, "index", INDEX_HELP).command("build")(index_build)
    app.command("search")(search)
