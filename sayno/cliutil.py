"""What every ``sayno`` sub-command shares: consoles, the one-line error and the guard around API calls.

The convention every area follows:

- An area's commands live in ``sayno/<area>/cli.py`` (next to the code they run) and import only their own
  layer and below. The module exposes ``register(app: typer.Typer) -> None``, which adds its commands to the
  root app: ``app.command("name")(function)`` for a top-level command, and ``subgroup(app, "group", help)``
  for a command group that several areas share (``sayno eval``, ``sayno glasses``). A command that needs
  something from a higher layer takes it as a ``register`` argument (``sayno.glasses.cli.register(app,
  report_hook=...)``). ``sayno/cli.py`` creates the root app and calls each area's ``register`` in order.
- Errors: a user mistake raises a :class:`~sayno.errors.SaynoError` subclass in the library. A command either
  wraps its whole body with :func:`cli_errors` or each library call with :func:`guard`; both turn exactly
  those errors into ``error: <first line>`` on stderr and exit status 2. Anything else is a bug and keeps its
  traceback. :func:`fail` is for mistakes the command itself detects.
"""

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
    """The first line of an error's message (its type name when the message is empty)."""
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
    """The sub-command group ``name`` of ``app`` (``sayno eval``, ``sayno world`` ...), created on first use
    (with ``help``); several areas' ``register(app)`` add commands to one group this way."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(no_args_is_help=True, help=help)
    app.add_typer(group, name=name)
    return group
