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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from sayno.errors import SaynoError

T = TypeVar("T")

#: The width of output that is not a terminal (CI logs, ``> file``): wide enough that a table keeps its natural
#: width (rich squeezes, ellipsises or cuts a table at the console's width), and text lines are not wrapped.
LOG_WIDTH = 1000


def output_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width on a terminal, :data:`LOG_WIDTH` otherwise, so
    that tables written to a log or a file are never squeezed or cut mid-border."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, soft_wrap=stderr)
    return Console(stderr=stderr, width=LOG_WIDTH, soft_wrap=stderr)


console = output_console()
err = output_console(stderr=True)  # one-line errors stay one line in logs


class LogProgress(Progress):
    """A rich :class:`~rich.progress.Progress` that stays readable wherever it is written.

    On a terminal: the usual live bars, except that a task that never advanced (work that was skipped) is
    dropped before the last frame instead of being left at 0%. Elsewhere (CI logs, ``> file``): no bars at all;
    when it stops, one plain line per task that did some work: ``encoding images: 150/150 in 3.2 s``.
    """

    def __init__(self, *columns: str | ProgressColumn, console: Console | None = None, **kwargs: Any):
        console = console or output_console(stderr=True)
        self.plain = not console.is_terminal
        super().__init__(*columns, console=console, disable=self.plain, **kwargs)
        self._reported = False

    def stop(self) -> None:
        for task in list(self.tasks):
            if task.completed <= 0:  # skipped work: no bar at 0%, no line
                self.remove_task(task.id)
        super().stop()
        if self.plain and not self._reported:
            self._reported = True
            for line in plain_lines(self):
                self.console.print(line, markup=False, highlight=False)


def plain_lines(progress: Progress) -> list[str]:
    """``description: done/total in S s`` (and the task's fields, ``loss 0.1``) per task of ``progress``."""
    lines = []
    for task in progress.tasks:
        total = f"/{task.total:g}" if task.total is not None else ""
        fields = "".join(f", {k} {v}" for k, v in task.fields.items())
        lines.append(f"{task.description}: {task.completed:g}{total} in {task.elapsed or 0.0:.1f} s{fields}")
    return lines


def progress_bar(console: Console | None = None, *extra: ProgressColumn, transient: bool = False) -> LogProgress:
    """The progress display every sayno command uses: description, bar, done/total, time left (then
    ``extra`` columns), on stderr unless ``console`` says otherwise (see :class:`LogProgress`)."""
    return LogProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                       TimeRemainingColumn(), console=console, transient=transient)


def track(items: Iterable[T], description: str, total: int, console: Console | None = None) -> Iterator[T]:
    """``items``, advancing a :func:`progress_bar` task of ``total`` steps as each is taken."""
    with progress_bar(console) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)

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
