"""What every ``sayno`` sub-command shares: consoles, the one-line error and the guard around API calls."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from sayno.errors import SaynoError

T = TypeVar("T")

# Tables are wide: when stdout is not a terminal (CI logs, files) do not squeeze them into 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=200)
err = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line in logs

MODEL_HELP = ("Backbone spec: embedded | open_clip:<model>/<tag> | open_clip:<model>:<checkpoint file> | "
              "hf:<Hugging Face CLIP folder>")
# Only the library's user-facing errors become one-line messages; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (SaynoError,)


def fail(msg: str) -> None:
    """Print ``error: msg`` on stderr and exit with status 2."""
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def guard(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run an API call; the library's errors become one-line CLI errors (exit 2)."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as e:
        fail(first_line(e))
        raise  # unreachable: fail() exits


def cli_errors(command: Callable[..., T]) -> Callable[..., T]:
    """Decorator for a typer command: :func:`guard` around the whole command."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return guard(command, *args, **kwargs)

    return wrapper


def subgroup(app: typer.Typer, name: str, help: str = "") -> typer.Typer:
    """The sub-command group ``name`` of ``app`` (``sayno eval``, ``sayno world`` ...), created on first use.

    Every area's ``cli.py`` has ``register(app)``; several areas may add commands to one group this way."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(no_args_is_help=True, help=help)
    app.add_typer(group, name=name)
    return group
