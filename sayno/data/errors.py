"""Errors and bad-row reports shared by every reader.

A reader raises :class:`DataError` when a whole file cannot be used (missing, no header, missing
columns) and returns :class:`BadRow` entries for single rows it had to drop: it never skips silently.
Batch jobs print them with :func:`report_bad_rows` and go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from sayno.cliutil import output_console
from sayno.errors import SaynoError


class DataError(SaynoError, ValueError):
    """A data file or folder that cannot be read at all; the message is one line and names the file."""


@dataclass(frozen=True)
class BadRow:
    """One dropped row (or image).

    ``file``: the file the problem is in (a CSV, a pickle, or an image). ``row``: its line in that file
    (1-based, the header is line 1) or entry index for pickles; ``None`` where the file itself is the
    problem (an unreadable image). ``reason``: one line.
    """

    file: str
    row: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        return f"{where}: {self.reason}"


def report_bad_rows(bad_rows: Sequence[BadRow], console: Console | None = None, limit: int = 20) -> None:
    """Print bad rows (at most ``limit`` of them, then a count per reason) with rich; nothing if empty."""
    if not bad_rows:
        return
    console = console or output_console(stderr=True)  # full width in logs: never cut mid-border
    table = Table(title=f"{len(bad_rows)} bad row(s) skipped", title_justify="left", show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("row", justify="right")
    table.add_column("reason", overflow="fold")
    for b in list(bad_rows)[:limit]:
        table.add_row(b.file, "" if b.row is None else str(b.row), b.reason)
    console.print(table)
    if len(bad_rows) > limit:
        counts = Counter(_reason_kind(b.reason) for b in bad_rows)
        console.print(f"... and {len(bad_rows) - limit} more. By reason: "
                      + ", ".join(f"{k}: {n}" for k, n in counts.most_common()))


def _reason_kind(reason: str) -> str:
    """The part of a reason before any ':' (``"image not found: x.png"`` -> ``"image not found"``)."""
    return reason.split(":", 1)[0]
