"""The file table of an index as a few flat numpy arrays: no Python object per image.

A collection of a million photos must not cost a million ``Path`` objects, tuples and hex strings while it is
built or searched. :class:`FileTable` holds, for N images:

- ``path``: a :class:`PathColumn`, every relative posix path encoded (``os.fsencode``: UTF-8, undecodable bytes
  kept) into one ``uint8`` blob, with (N+1,) ``int64`` offsets (about ``len(path) + 8`` bytes per image);
- ``size``, ``mtime_ns``: (N,) ``int64``;
- ``sha1``: a :class:`Sha1Column`, the raw 20-byte digests as an (N, 20) ``uint8`` array.

The columns behave like the old numpy string columns where the code reads them: ``files.path[i]`` is a
``str``, ``files.sha1[i]`` a hex ``str``, ``.tolist()``, iteration, ``np.asarray`` and ``files.sha1 == other``
work; slicing and integer/boolean indexing give columns again. ``files.npz`` stores exactly these arrays
(format 3, :data:`FILES_KEYS`); the string columns of formats 1 and 2 (``path`` ``<U``, ``sha1`` ``<U40``)
are converted when read (:meth:`FileTable.from_npz`).
"""

from __future__ import annotations

import array
import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np

DIGEST = 20  # bytes of a sha1
CHUNK = 65_536  # rows per step of the vectorised conversions
FILES_KEYS = ("path_utf8", "path_offsets", "size", "mtime_ns", "sha1_bytes")  # files.npz, format 3


def _index_array(key: Any, n: int) -> np.ndarray:
    """A slice, boolean mask or integer sequence -> (M,) int64 row ids in 0..n-1."""
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key]
    idx = np.asarray(key)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"a boolean mask of shape {idx.shape} for {n} rows")
        return np.flatnonzero(idx)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise IndexError("index with an integer, a slice, a boolean mask or a 1-D integer array")
    idx = idx.astype(np.int64, copy=False)
    return np.where(idx < 0, idx + n, idx)


class PathColumn:
    """N ``str`` paths as one encoded byte blob (``uint8``) and (N+1,) ``int64`` offsets."""

    __slots__ = ("blob", "offsets")

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob = np.ascontiguousarray(blob, np.uint8).reshape(-1)
        self.offsets = np.ascontiguousarray(offsets, np.int64).reshape(-1)
        if len(self.offsets) == 0 or self.offsets[0] != 0 or self.offsets[-1] != len(self.blob):
            raise ValueError("path offsets must start at 0 and end at the blob's length")

    @classmethod
    def from_strings(cls, paths: Iterable[str]) -> PathColumn:
        """Encode ``paths`` one at a time (any iterable: a generator is never held as a list)."""
        builder = PathBuilder()
        for p in paths:
            builder.append(p)
        return builder.finish()

    @classmethod
    def from_array(cls, paths: np.ndarray) -> PathColumn:
        """From a numpy string array (``<U``), converted ``CHUNK`` rows at a time."""
        paths = np.asarray(paths)
        return cls.from_strings(p for s in range(0, len(paths), CHUNK) for p in paths[s:s + CHUNK].tolist())

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        """The encoded bytes of path ``i``."""
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def __getitem__(self, key: Any) -> str | PathColumn:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"path {int(key)} of {len(self)}")
            return os.fsdecode(self.raw(i))
        return self.take(_index_array(key, len(self)))

    def __iter__(self) -> Iterator[str]:
        blob, off = self.blob, self.offsets
        for s in range(0, len(self), CHUNK):
            ends = off[s:s + CHUNK + 1].tolist()
            data = blob[ends[0]:ends[-1]].tobytes()
            base = ends[0]
            for a, b in itertools.pairwise(ends):
                yield os.fsdecode(data[a - base:b - base])

    def tolist(self) -> list[str]:
        return list(self)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.array(self.tolist(), dtype=str) if len(self) else np.zeros(0, "<U1")
        return out if dtype is None else out.astype(dtype)

    def __eq__(self, other: object) -> np.ndarray:  # type: ignore[override]
        if isinstance(other, PathColumn):
            if len(other) != len(self):
                return np.zeros(len(self), bool)
            return np.fromiter((a == b for a, b in zip(self, other)), bool, len(self))
        return np.asarray(self) == np.asarray(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PathColumn({len(self)} paths, {len(self.blob)} bytes)"

    def take(self, idx: np.ndarray) -> PathColumn:
        """The paths of rows ``idx`` (M,) in that order, gathered ``CHUNK`` rows at a time."""
        idx = np.asarray(idx, np.int64)
        starts, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        blob = np.empty(int(offsets[-1]), np.uint8)
        for s in range(0, len(idx), CHUNK):
            n = lengths[s:s + CHUNK]
            if not n.sum():
                continue
            first = np.repeat(starts[s:s + len(n)] - offsets[s:s + len(n)], n)  # source - destination per byte
            dest = np.arange(offsets[s], offsets[s + len(n)], dtype=np.int64)
            blob[dest] = self.blob[dest + first]
        return PathColumn(blob, offsets)

    def hashes(self) -> np.ndarray:
        """(N,) int64 ``hash`` of each encoded path (this process only: for joining two columns)."""
        off, blob = self.offsets, self.blob
        out = np.empty(len(self), np.int64)
        for s in range(0, len(self), CHUNK):
            ends = off[s:s + CHUNK + 1].tolist()
            data = blob[ends[0]:ends[-1]].tobytes()
            base = ends[0]
            out[s:s + len(ends) - 1] = [hash(data[a - base:b - base]) for a, b in itertools.pairwise(ends)]
        return out


class PathBuilder:
    """Appends paths into a growing blob (``bytearray``) and offsets (``array('q')``): a few bytes each."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._offsets = array.array("q", [0])

    def append(self, path: str) -> None:
        self._blob += os.fsencode(path)
        self._offsets.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def finish(self) -> PathColumn:
        blob = np.frombuffer(self._blob, np.uint8).copy() if self._blob else np.zeros(0, np.uint8)
        offsets = np.frombuffer(self._offsets, np.int64).copy()
        self._blob, self._offsets = bytearray(), array.array("q", [0])
        return PathColumn(blob, offsets)


class Sha1Column:
    """N sha1 digests as an (N, 20) ``uint8`` array; items read as hex ``str``."""

    __slots__ = ("raw",)

    def __init__(self, raw: np.ndarray):
        raw = np.ascontiguousarray(raw, np.uint8)
        self.raw = raw.reshape(-1, DIGEST)

    @classmethod
    def from_hex(cls, values: Iterable[str] | np.ndarray) -> Sha1Column:
        """From hex strings (an empty string reads as 20 zero bytes), ``CHUNK`` at a time."""
        values = np.asarray(values if isinstance(values, np.ndarray) else list(values))
        raw = np.zeros((len(values), DIGEST), np.uint8)
        for s in range(0, len(values), CHUNK):
            chunk = [v or "0" * (2 * DIGEST) for v in values[s:s + CHUNK].tolist()]
            raw[s:s + len(chunk)] = np.frombuffer(bytes.fromhex("".join(chunk)), np.uint8).reshape(-1, DIGEST)
        return cls(raw)

    def __len__(self) -> int:
        return len(self.raw)

    def keys(self) -> np.ndarray:
        """(N,) ``S20`` view of the digests (sortable, searchable; no copy)."""
        return self.raw.view(f"S{DIGEST}").reshape(-1)

    def __getitem__(self, key: Any) -> str | Sha1Column:
        if isinstance(key, (int, np.integer)):
            return self.raw[int(key)].tobytes().hex()
        return Sha1Column(self.raw[_index_array(key, len(self))])

    def __iter__(self) -> Iterator[str]:
        for s in range(0, len(self), CHUNK):
            data = self.raw[s:s + CHUNK].tobytes().hex()
            yield from (data[i:i + 2 * DIGEST] for i in range(0, len(data), 2 * DIGEST))

    def tolist(self) -> list[str]:
        return list(self)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.array(self.tolist(), dtype=f"<U{2 * DIGEST}") if len(self) else np.zeros(0, f"<U{2 * DIGEST}")
        return out if dtype is None else out.astype(dtype)

    def __eq__(self, other: object) -> np.ndarray:  # type: ignore[override]
        if isinstance(other, str):
            other = Sha1Column.from_hex([other]) if len(other) == 2 * DIGEST else None
            return (self.raw == other.raw).all(1) if other is not None else np.zeros(len(self), bool)
        if not isinstance(other, Sha1Column):
            other = Sha1Column.from_hex(np.asarray(other))
        if len(other) != len(self):
            return np.zeros(len(self), bool)
        return (self.raw == other.raw).all(1)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Sha1Column({len(self)} digests)"


class FileTable:
    """Per indexed image (N rows, sorted by path): ``path`` relative to the folder (posix), ``size`` in bytes,
    ``mtime_ns``, ``sha1`` of the bytes. Accepts columns or plain arrays/sequences (``str`` paths, hex sha1)."""

    __slots__ = ("mtime_ns", "path", "sha1", "size")

    def __init__(self, path: PathColumn | np.ndarray | Iterable[str], size: np.ndarray, mtime_ns: np.ndarray,
                 sha1: Sha1Column | np.ndarray | Iterable[str]):
        self.path = path if isinstance(path, PathColumn) else PathColumn.from_array(np.asarray(
            path if isinstance(path, np.ndarray) else list(path), dtype=str))
        self.size = np.asarray(size, np.int64).reshape(-1)
        self.mtime_ns = np.asarray(mtime_ns, np.int64).reshape(-1)
        self.sha1 = sha1 if isinstance(sha1, Sha1Column) else Sha1Column.from_hex(sha1)
        n = len(self.path)
        if (len(self.size), len(self.mtime_ns), len(self.sha1)) != (n, n, n):
            raise ValueError(f"file table columns of {n}, {len(self.size)}, {len(self.mtime_ns)} and "
                             f"{len(self.sha1)} rows")

    @classmethod
    def empty(cls) -> FileTable:
        return cls(PathColumn(np.zeros(0, np.uint8), np.zeros(1, np.int64)), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), Sha1Column(np.zeros((0, DIGEST), np.uint8)))

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, int, int, str]]) -> FileTable:
        """From ``(path, size, mtime_ns, sha1 hex)`` rows."""
        rows = list(rows)
        if not rows:
            return cls.empty()
        p, s, m, h = zip(*rows)
        return cls(PathColumn.from_strings(p), np.asarray(s, np.int64), np.asarray(m, np.int64),
                   Sha1Column.from_hex(h))

    def __len__(self) -> int:
        return len(self.path)

    def take(self, idx: np.ndarray) -> FileTable:
        idx = _index_array(idx, len(self))
        return FileTable(self.path.take(idx), self.size[idx], self.mtime_ns[idx], Sha1Column(self.sha1.raw[idx]))

    def save(self, f: BinaryIO) -> None:
        """Write ``files.npz`` (format 3: :data:`FILES_KEYS`)."""
        np.savez(f, path_utf8=self.path.blob, path_offsets=self.path.offsets, size=self.size,
                 mtime_ns=self.mtime_ns, sha1_bytes=self.sha1.raw)

    @classmethod
    def from_npz(cls, z: Any) -> FileTable:
        """From an open ``files.npz`` (``np.load``): format 3's arrays, or the string columns of formats 1/2."""
        if "path_utf8" in z.files:
            return cls(PathColumn(z["path_utf8"], z["path_offsets"]), z["size"], z["mtime_ns"],
                       Sha1Column(z["sha1_bytes"]))
        return cls(PathColumn.from_array(z["path"]), z["size"], z["mtime_ns"], Sha1Column.from_hex(z["sha1"]))


__all__ = ["DIGEST", "FILES_KEYS", "FileTable", "PathBuilder", "PathColumn", "Sha1Column"]
