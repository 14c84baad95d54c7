"""``sayno info``: load a backbone and say what it is."""

from __future__ import annotations

import typer

from sayno.backbones.registry import load
from sayno.cliutil import MODEL_HELP, console, guard

INFO_FIELDS = ("spec", "fingerprint", "embed_dim", "image_size", "context_length", "num_text_layers")


def register(app: typer.Typer) -> None:
    """Add ``info`` to ``app``."""
    app.command("info")(info)


def info(model: str = typer.Option("embedded", "--model", "-m", help=MODEL_HELP)) -> None:
    """Load a backbone and print what it is (fingerprint, sizes, logit scale)."""
    backbone = guard(load, model)
    for name in INFO_FIELDS:
        console.print(f"{name:16s} {getattr(backbone, name)}")
    console.print(f"{'logit_scale':16s} {backbone.logit_scale:.2f}")
