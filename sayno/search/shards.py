"""Vectors on disk during a build: merged into the version's file a chunk at a time, read back through the file.

A build's vectors are kept rows of the previous version, reused contents and newly encoded ones. New vectors
are appended to a :class:`VectorSpool` file as they are encoded (one per process). Instead of gathering all
of them in one (N, D) array (and a copy of the kept ones), :func:`merge_to_file` writes them in
path order, ``CHUNK`` rows at a time, straight into a float32 ``.npy`` file that
:func:`sayno.search.store.write_version` then moves into the version. The faiss index is built by reading that
file through :class:`NpyRows` (``os.pread``, not a memory map), so reading every row once does not leave the
whole file in the process's resident memory: the build's peak memory is one chunk, the new vectors waiting to
be merged and the faiss index, not the collection's vectors.

A build interrupted while merging leaves only a hidden ``.incoming-*.npy`` file in the index folder (never a
version: the version appears only by an atomic rename after every file is complete); the next build, which
holds the writer lock, removes such leftovers (:func:`remove_leftovers`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: numpy parses ``.npy`` headers with ``ast.literal_eval``, and CPython 3.11's AST constructor is not safe in two
#: threads at once ("SystemError: AST constructor recursion depth mismatch", seen in CI): the index's
#: headers are read one thread at a time (a few small reads per version opened; searching never takes it)
NPY_HEADERS = threading.Lock()

CHUNK = 65_536
INCOMING_PREFIX = ".incoming-"


class NpyRows:
    """Rows of a C-ordered float32 ``.npy`` file, read with ``os.pread`` on demand.

    Supports ``len``, ``shape``, ``dtype``, ``rows[a:b]`` (step 1) and ``rows[ids]`` (a 1-D integer array),
    each returning a new (n, D) float32 array; ``np.asarray(rows)`` reads everything."""

    def __init__(self, path: str | os.PathLike, *, raw: tuple[int, int] | None = None):
        """raw: ``(rows, dim)`` of a headerless float32 file (a :class:`VectorSpool`) instead of an ``.npy``."""
        self.path = Path(path)
        if raw is not None:
            self.shape, self.offset = (int(raw[0]), int(raw[1])), 0
            self.dtype, self._row = np.dtype(np.float32), 4 * int(raw[1])
            return
        with NPY_HEADERS, open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran or dtype != np.float32 or len(shape) != 2:
            raise ValueError(f"{self.path}: {dtype} {shape}, not a C-ordered float32 matrix")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(np.float32)
        self._row = 4 * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, count: int) -> np.ndarray:
        if count <= 0:
            return np.zeros((0, self.shape[1]), np.float32)
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), count * self._row, self.offset + start * self._row)
        return np.frombuffer(data, np.float32).reshape(count, self.shape[1]).copy()

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("NpyRows supports slices with step 1")
            return self._read(start, max(0, stop - start))
        ids = np.asarray(key)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise IndexError("NpyRows takes a slice or a 1-D integer array")
        out = np.empty((len(ids), self.shape[1]), np.float32)
        if not len(ids):
            return out
        if ids.min() < 0 or ids.max() >= len(self):
            raise IndexError(f"row ids out of 0..{len(self) - 1}")
        order = np.argsort(ids, kind="stable")  # read forwards, one pread per run of consecutive rows
        ordered = ids[order].astype(np.int64)
        cut = np.flatnonzero(np.diff(ordered) != 1) + 1
        with open(self.path, "rb") as f:
            for a, b in zip([0, *cut.tolist()], [*cut.tolist(), len(ids)]):
                data = os.pread(f.fileno(), (b - a) * self._row, self.offset + int(ordered[a]) * self._row)
                out[order[a:b]] = np.frombuffer(data, np.float32).reshape(b - a, self.shape[1])
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[0:len(self)] if dtype is None else self[0:len(self)].astype(dtype)


class SpooledRow:
    """Row ``i`` of a :class:`VectorSpool`, read when numpy asks for it (``np.asarray(row)``)."""

    __slots__ = ("i", "spool")

    def __init__(self, spool: VectorSpool, i: int):
        self.spool, self.i = spool, i

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        v = self.spool.row(self.i)
        return v if dtype is None else v.astype(dtype)


class VectorSpool:
    """Encoded (D,) vectors appended to a raw float32 file as they come (the build's new vectors, not held in
    memory). ``append(v)``, ``len``; iterating yields :class:`SpooledRow` handles (read on demand) in order.
    :meth:`close` removes the file."""

    def __init__(self, path: str | os.PathLike, dim: int):
        self.path, self.dim, self.count = Path(path), int(dim), 0
        self._file = open(self.path, "w+b")  # noqa: SIM115 - closed by close()

    def append(self, v: np.ndarray) -> None:
        v = np.ascontiguousarray(v, np.float32).reshape(-1)
        if v.shape != (self.dim,):
            raise ValueError(f"a vector of shape {v.shape}, the spool holds ({self.dim},)")
        self._file.write(v.tobytes())
        self.count += 1

    def extend(self, block: np.ndarray) -> None:
        """Append the rows of an (M, D) block."""
        block = np.ascontiguousarray(block, np.float32)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"a block of shape {block.shape}, the spool holds (M, {self.dim})")
        self._file.write(block.tobytes())
        self.count += len(block)

    def reader(self) -> NpyRows:
        """The spooled rows so far, read through the file (slices and integer arrays, :class:`NpyRows`)."""
        self._file.flush()
        return NpyRows(self.path, raw=(self.count, self.dim))

    def __len__(self) -> int:
        return self.count

    def row(self, i: int) -> np.ndarray:
        self._file.flush()
        size = 4 * self.dim
        data = os.pread(self._file.fileno(), size, int(i) * size)
        return np.frombuffer(data, np.float32).copy()

    def __iter__(self):
        return (SpooledRow(self, i) for i in range(self.count))

    def close(self, remove: bool = True) -> None:
        """Close the file; ``remove``: delete it too."""
        with contextlib.suppress(OSError):
            self._file.close()
            if remove:
                self.path.unlink(missing_ok=True)


class ConcatRows:
    """Several row readers (:class:`NpyRows`) read as one: ``rows[ids]`` for a 1-D integer array of global ids
    (the rows of the first, then of the second, ...)."""

    def __init__(self, parts: list[NpyRows]):
        self.parts = list(parts)
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)
        self.shape = (int(self.starts[-1]), int(self.parts[0].shape[1]) if self.parts else 0)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"row ids out of 0..{len(self) - 1}")
        out = np.empty((len(ids), self.shape[1]), np.float32)
        which = np.searchsorted(self.starts, ids, "right") - 1
        for p in np.unique(which).tolist():
            mine = which == p
            out[mine] = self.parts[p][ids[mine] - self.starts[p]]
        return out


def incoming_path(index_root: str | os.PathLike, suffix: str = ".npy") -> Path:
    """A new hidden file name in the index folder for a build's merged (``.npy``) or spooled vectors:
    ``.incoming-<pid>-<random><suffix>``."""
    return Path(index_root) / f"{INCOMING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def remove_leftovers(index_root: str | os.PathLike) -> list[Path]:
    """Remove ``.incoming-*`` files of builds that were interrupted: those of processes that no longer run
    (or of this one, or with no process id in their name)."""
    gone = []
    for p in Path(index_root).glob(f"{INCOMING_PREFIX}*"):
        pid = p.name[len(INCOMING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            gone.append(p)
    return gone


def merge_to_file(path: str | os.PathLike, rows: np.ndarray, source: np.ndarray, old: object | None,
                  new: Mapping[int, np.ndarray] | object, dim: int, new_ids: np.ndarray | None = None) -> Path:
    """Write the vectors of ``rows`` (M,) into a float32 ``.npy`` file of shape (M, dim), ``CHUNK`` at a time.

    source: per scanned row, the old row to copy (>= 0) or -1 for a new vector, taken from ``new``: a mapping
    scanned row -> (D,) vector, or, with ``new_ids`` (per scanned row, a row of ``new``), rows read from ``new``
    (:class:`NpyRows`, e.g. :meth:`VectorSpool.reader`, or an array) a chunk at a time. old: the previous
    version's vectors (:class:`NpyRows` or an array), or None. The file is written with plain writes (no memory
    map) and fsynced; on any error it is removed."""
    path = Path(path)
    rows = np.asarray(rows, np.int64)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (len(rows), int(dim))}
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.writelines(_chunk(rows[s:s + CHUNK], source, old, new, dim, new_ids).tobytes()
                         for s in range(0, len(rows), CHUNK))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def _chunk(rows: np.ndarray, source: np.ndarray, old: object | None, new: Mapping[int, np.ndarray] | object,
           dim: int, new_ids: np.ndarray | None = None) -> np.ndarray:
    out = np.empty((len(rows), dim), np.float32)
    src = source[rows]
    kept = src >= 0
    if kept.any():
        if old is None:
            raise ValueError("rows to keep but no previous vectors")
        order = np.argsort(src[kept], kind="stable")  # read the old file forwards
        got = np.asarray(old[src[kept][order]], np.float32)
        block = np.empty_like(got)
        block[order] = got
        out[kept] = block
    if new_ids is not None:
        fresh = new_ids[rows[~kept]]
        if len(fresh) and fresh.min() < 0:
            raise ValueError("a row with neither a previous nor a new vector")
        out[~kept] = np.asarray(new[fresh], np.float32) if len(fresh) else 0.0
        return out
    for j in np.flatnonzero(~kept).tolist():
        out[j] = np.asarray(new[int(rows[j])], np.float32)
    return out


__all__ = ["CHUNK", "ConcatRows", "NpyRows", "SpooledRow", "VectorSpool", "incoming_path", "merge_to_file", "remove_leftovers"]
