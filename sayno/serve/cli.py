"""The ``sayno serve`` command, added to the ``sayno`` app by :func:`register`:

    sayno serve INDEX [--host 127.0.0.1] [--port 8000] [--clipn CKPT|auto|none] [--max-upload-mb 10]
                      [--allow-host NAME ...]
"""

from __future__ import annotations

from pathlib import Path

import typer

from sayno.cliutil import err, guard
from sayno.runtime import torch_threads
from sayno.serve.app import create_app, run
from sayno.serve.service import ServeConfig

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(
    index: Path = typer.Argument(..., help="Index folder (from `sayno index build`)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8000, min=1, max=65535),
    clipn: str = typer.Option("auto", help="CLIPN checkpoint for the class check; auto = shipped; none."),
    glasses: str | None = typer.Option(None, help="Glasses checkpoint (default: the index's); none."),
    max_upload_mb: float = typer.Option(10.0, min=0.01, help="Largest accepted upload."),
    threads: int = typer.Option(1, min=1, help="CPU threads for torch and faiss (1: fastest for one query)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another name the server is reached by (its "
                                         "Host header; repeatable). localhost and --host always work."),
    backend: str | None = typer.Option(None, help="faiss | milvus (default: as the index was built)."),
    uri: str | None = typer.Option(None, help="Milvus address, when not the one the index was built with."),
) -> None:
    """A web page and HTTP API (OpenAPI at /docs): search, plain vs sayno side by side, class check."""
    cfg = ServeConfig(clipn=clipn, glasses=glasses, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                      threads=threads, host=host, port=port, allowed_hosts=tuple(allow_host), backend=backend,
                      uri=uri)
    with torch_threads(threads):  # the models load with the threads the server uses
        app = guard(create_app, index, cfg)
        if host not in LOCAL_HOSTS:
            err.print(f"[yellow]warning:[/] serving on {host}: anyone who can reach it can see the indexed images")
        err.print(f"sayno serve: http://{host}:{port}/ (API docs: /docs)")
        run(app, host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the sayno app (called by sayno/cli.py)."""
    app.command("serve")(serve)
