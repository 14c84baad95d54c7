"""Scanning an image folder for an index: every image's path, size and mtime in flat arrays, in path order.

The files are those of :func:`sayno.data.walk_images` (same extensions; hidden files and folders skipped;
symlinked folders followed, each real folder once, the first one ``os.walk`` reaches), but they are produced one
at a time and already sorted by their relative posix path (the order of the index's rows), so a scan of a
million images never holds a million ``Path`` objects or a list of tuples: only the arrays of
:class:`Scanned` (about ``len(path) + 32`` bytes per image) and, while it is open, one folder's listing.

Sorting without a global sort: inside a folder, a file ``name`` sorts against everything under a sub-folder
``sub`` exactly as ``name`` sorts against ``sub + "/"`` (a name holds no ``/``), so listing each folder's
entries in that order, depth first, yields all relative paths in sorted order. A folder's entries are sorted as
encoded bytes (:func:`argsort_bytes`: the code-point order of the names, a few bytes per entry).
"""

from __future__ import annotations

import array
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sayno.data.errors import BadRow
from sayno.data.images import is_image_file
from sayno.search.table import PathBuilder, PathColumn

WINDOW = 32  # bytes of each name compared per pass of argsort_bytes
_CHUNK = 65_536


@dataclass
class Scanned:
    """N scanned image files, sorted by ``paths`` (relative posix, a :class:`PathColumn`): ``size`` and
    ``mtime_ns`` (N,) int64."""

    paths: PathColumn
    size: np.ndarray
    mtime_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self) -> list[tuple[str, int, int]]:
        """``(path, size, mtime_ns)`` tuples (small folders, tests)."""
        return list(zip(self.paths, self.size.tolist(), self.mtime_ns.tolist()))


def scan_images(root: str | os.PathLike) -> tuple[Scanned, list[BadRow]]:
    """Stat every image file under ``root`` (an existing folder), in path order -> (:class:`Scanned`, files
    that could not be stat'ed)."""
    root = os.fspath(root)
    paths, bad = PathBuilder(), []
    size, mtime = array.array("q"), array.array("q")
    for rel in image_paths(root):
        full = os.path.join(root, rel)
        try:
            st = os.stat(full)
        except OSError as e:
            bad.append(BadRow(full, None, f"cannot read file ({e.strerror or type(e).__name__})"))
            continue
        paths.append(rel)
        size.append(int(st.st_size))
        mtime.append(int(st.st_mtime_ns))
    return Scanned(paths.finish(), np.array(size, np.int64), np.array(mtime, np.int64)), bad


def image_paths(root: str | os.PathLike) -> Iterator[str]:
    """The relative posix paths of :func:`sayno.data.walk_images`'s files under ``root``, sorted, one at a
    time."""
    root = os.fspath(root)
    walked = _walked_folders(root)
    stack: list[tuple[str, str, Iterator[tuple[str, bool]]]] = [(root, "", _sorted_entries(root, walked))]
    while stack:
        folder, prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
        elif entry[1]:
            sub = os.path.join(folder, entry[0])
            stack.append((sub, prefix + entry[0] + "/", _sorted_entries(sub, walked)))
        else:
            yield prefix + entry[0]


def _listing(folder: str) -> tuple[list[str], Iterator[str]] | None:
    """(sub-folder names, an iterator of the other names) as ``os.walk`` classifies them; None when the
    folder cannot be listed (``os.walk`` skips it)."""
    try:
        it = os.scandir(folder)
    except OSError:
        return None
    dirs: list[str] = []

    def others() -> Iterator[str]:
        with it:
            while True:
                try:
                    entry = next(it)
                except (StopIteration, OSError):  # a listing that fails half way ends there
                    return
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    dirs.append(entry.name)
                else:
                    yield entry.name

    return dirs, others()


def _walked_folders(root: str) -> set[str]:
    """The folders ``walk_images`` visits (``os.walk(root, followlinks=True)`` paths): sub-folders in sorted
    order, depth first, hidden ones skipped, a real folder only the first time it is reached."""
    walked: set[str] = set()
    seen: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        listing = _listing(folder)
        if listing is None:
            continue
        dirs, others = listing
        for _ in others:  # the names are not kept: only the sub-folders matter here
            pass
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        walked.add(folder)
        stack.extend(os.path.join(folder, d) for d in sorted((d for d in dirs if not d.startswith(".")),
                                                                 reverse=True))
    return walked


def _sorted_entries(folder: str, walked: set[str]) -> Iterator[tuple[str, bool]]:
    """A folder's image files and walked sub-folders as ``(name, is_folder)``, in the order of the relative
    paths under it (a sub-folder sorts as ``name/``)."""
    listing = _listing(folder)
    if listing is None:
        return iter(())
    dirs, others = listing
    names = PathBuilder()
    for name in others:
        if not name.startswith(".") and is_image_file(name):
            names.append(name)
    files = len(names)
    for d in dirs:
        if not d.startswith(".") and os.path.join(folder, d) in walked:
            names.append(d + "/")
    column = names.finish()
    return ((name[:-1], True) if i >= files else (name, False)
            for i, name in ((int(i), column[int(i)]) for i in argsort_bytes(column.blob, column.offsets)))


def argsort_bytes(blob: np.ndarray, offsets: np.ndarray, width: int = WINDOW) -> np.ndarray:
    """The order (N,) int64 that sorts the byte strings ``blob[offsets[i]:offsets[i+1]]`` (none holding a NUL
    byte), stably: compares ``width`` bytes at a time (an (N, width) key array), refining only groups that are
    equal so far."""
    n = len(offsets) - 1
    order = np.arange(n, dtype=np.int64)
    pending = [(0, n, 0)] if n > 1 else []
    while pending:
        a, b, depth = pending.pop()
        idx = order[a:b]
        keys = _window(blob, offsets, idx, depth, width)
        sub = np.argsort(keys, kind="stable")
        order[a:b] = idx = idx[sub]
        keys = keys[sub]
        full = (offsets[idx + 1] - offsets[idx]) >= depth + width  # may go on past this window
        tie = (keys[1:] == keys[:-1]) & full[1:] & full[:-1]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], tie.astype(np.int8), [0]])))
        for s, e in zip(edges[0::2].tolist(), edges[1::2].tolist()):  # tie[s:e]: rows s..e are equal so far
            pending.append((a + s, a + e + 1, depth + width))
    return order


def _window(blob: np.ndarray, offsets: np.ndarray, idx: np.ndarray, depth: int, width: int) -> np.ndarray:
    """Bytes ``depth .. depth + width`` of each string ``idx`` (zero padded) as an (M,) ``S<width>`` array."""
    out = np.zeros((len(idx), width), np.uint8)
    if not len(blob):
        return out.view(f"S{width}").reshape(-1)
    span = np.arange(width, dtype=np.int64)
    for s in range(0, len(idx), _CHUNK):
        part = idx[s:s + _CHUNK]
        start, end = offsets[part] + depth, offsets[part + 1]
        pos = start[:, None] + span
        inside = pos < end[:, None]
        out[s:s + len(part)] = np.where(inside, blob[np.minimum(pos, len(blob) - 1)], 0)
    return out.view(f"S{width}").reshape(-1)


__all__ = ["Scanned", "argsort_bytes", "image_paths", "scan_images"]
