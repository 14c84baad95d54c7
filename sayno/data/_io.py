"""Shared helpers for the readers: CSV rows with their line numbers, paths, list literals."""

from __future__ import annotations

import ast
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from sayno.data.errors import DataError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def one_line(text: object, limit: int = 200) -> str:
    """``str(text)`` on one line, cut to ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def read_csv(path: Path, required: Sequence[str],
             what: str) -> tuple[list[str], Iterator[tuple[int, dict | str]]]:
    """Open a CSV and check its header; returns (header, rows).

    ``rows`` yields ``(line, row)`` with ``line`` the 1-based line the record starts on (header = 1) and
    ``row`` a ``{column: value}`` dict, or a one-line reason string when the record has the wrong number of
    fields. Blank lines are skipped. Raises :class:`DataError` for a missing or undecodable file, an empty
    file, or missing ``required`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what} file ({one_line(e)})") from e
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}: empty {what} file (no header row)") from None
    except csv.Error as e:
        raise DataError(f"{path}: cannot parse the header ({one_line(e)})") from e
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: {what} file is missing column(s) {', '.join(missing)} "
                        f"(has: {', '.join(header) or 'none'})")
    return header, _rows(reader, header)


def _rows(reader, header: list[str]) -> Iterator[tuple[int, dict | str]]:
    prev = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield prev + 1, f"cannot parse CSV record: {one_line(e)}"
            prev = reader.line_num
            continue
        line, prev = prev + 1, reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != len(header):
            yield line, f"record has {len(values)} field(s), the header has {len(header)}"
            continue
        yield line, dict(zip(header, values))


def resolve(value: str, root: Path) -> Path:
    """A path from a data file: absolute as is, relative to ``root`` otherwise (``~`` expanded)."""
    p = Path(value.strip()).expanduser()
    return p if p.is_absolute() else root / p


def locate(value: str, root: Path) -> Path:
    """A path from a data file, re-rooted where needed: the one rule of every reader.

    Relative: under ``root``. Absolute and an existing file: as is. Absolute and missing (a path of the data's
    authors' machine, ``/data/.../voc2007/VOCdevkit/VOC2007/JPEGImages/000005.jpg``): its longest tail that
    exists as a file under ``root`` (``root/voc2007/VOCdevkit/...``, then ``root/VOCdevkit/...``, ... then
    ``root/000005.jpg``); the path as given when none does (the caller reports it as not found).
    """
    p = resolve(value, root)
    if p.is_file() or not Path(value.strip()).expanduser().is_absolute():
        return p
    parts = p.parts
    for k in range(1, len(parts)):
        if ".." in parts[k:]:
            continue  # a tail never climbs out of root
        candidate = root.joinpath(*parts[k:])
        if candidate.is_file():
            return candidate
    return p


def parse_str_list(text: str | None, *, plain_ok: bool = True) -> list[str]:
    """A Python (or JSON) list literal of strings -> list; ``""`` -> ``[]``.

    With ``plain_ok`` a value that is not a literal (``a dog on a mat``) or a bare string literal is one
    item. Raises ValueError (one line) for a malformed list or non-string items.
    """
    t = (text or "").strip()
    if not t:
        return []
    try:
        value = ast.literal_eval(t)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            value = json.loads(t)
        except ValueError:
            if plain_ok and not t.startswith(("[", "(")):
                return [t]
            raise ValueError(f"not a list literal: {one_line(t, 80)!r}") from None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    if plain_ok and not isinstance(value, (list, tuple, dict, set)):
        return [t]
    raise ValueError(f"expected a list of strings, got {one_line(t, 80)!r}")
