"""The on-disk index: versioned folders behind a pointer file, so readers never see a half-written index.

Layout of an index folder ``INDEX/``::

    CURRENT              one line: the name of the live version folder
    v-<time>-<id>/       one complete version
        vectors.npy      (N, D) float32 L2-normalised image features (memory-mapped by readers)
        search.faiss     faiss fp16 scalar-quantised inner-product index over the same vectors (the coarse pass)
        files.npz        path (N,) relative to the indexed folder, size (N,), mtime_ns (N,), sha1 (N,)
        meta.json        backbone spec/fingerprint, Glasses checkpoint (path, sha1), folder, counts, bad files
    .lock                held (flock) by the one writer at a time

A writer fills a hidden temporary folder, renames it to ``v-...`` (atomic) and then replaces ``CURRENT``
(atomic ``os.replace``). A reader reads ``CURRENT`` and loads that folder; if a writer removed it in between
(only versions older than the previous one are removed), the reader reads ``CURRENT`` again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sayno.errors import SaynoError

FORMAT = "sayno-index"
FORMAT_VERSION = 1
POINTER = "CURRENT"
KEEP_VERSIONS = 2  # the live version and the one before it (a reader may still be opening it)
# faiss threads for one query's scan, set per calling thread; 0 leaves faiss's setting alone. See
# sayno.search.query.set_threads: faiss and torch must agree, mixed settings were measured to be very slow.
SEARCH_THREADS = int(os.environ.get("SAYNO_SEARCH_THREADS", "0"))


class SearchError(SaynoError, ValueError):
    """Bad input for indexing or search (a one-line message for the CLI and the HTTP API)."""


class IndexMismatch(SearchError):
    """The index was built with another backbone or another Glasses checkpoint than the one given."""


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss is in the search extra
        raise SearchError("faiss is not installed: pip install 'sayno[search]'") from e
    return faiss


@dataclass
class FileTable:
    """Per indexed image (N rows, sorted by path): path relative to the folder (posix), size in bytes,
    mtime in ns, sha1 of the bytes."""

    path: np.ndarray
    size: np.ndarray
    mtime_ns: np.ndarray
    sha1: np.ndarray

    @classmethod
    def empty(cls) -> FileTable:
        return cls(np.zeros(0, dtype="<U1"), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, "<U40"))

    @classmethod
    def from_rows(cls, rows: list[tuple[str, int, int, str]]) -> FileTable:
        if not rows:
            return cls.empty()
        p, s, m, h = zip(*rows)
        return cls(np.asarray(p, dtype=str), np.asarray(s, np.int64), np.asarray(m, np.int64),
                   np.asarray(h, dtype="<U40"))

    def __len__(self) -> int:
        return len(self.path)

    def take(self, idx: np.ndarray) -> FileTable:
        return FileTable(self.path[idx], self.size[idx], self.mtime_ns[idx], self.sha1[idx])


@dataclass
class IndexData:
    """One loaded version: ``vectors`` (N, D) float32 features (a read-only memory map), ``coarse`` the faiss
    fp16 index over them, ``files`` its rows, ``meta``."""

    vectors: np.ndarray
    coarse: object
    files: FileTable
    meta: dict
    version: str = ""
    folder: Path = field(default_factory=Path)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def dim(self) -> int:
        return int(self.meta["embed_dim"])

    @property
    def root(self) -> Path:
        """The indexed image folder (absolute)."""
        return Path(self.meta["root"])

    def features(self, ids: np.ndarray | None = None) -> np.ndarray:
        """(len(ids), D) float32 stored features of rows ``ids`` (all rows when None)."""
        if ids is None:
            return np.array(self.vectors, dtype=np.float32)
        return np.asarray(self.vectors[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows with the largest exact inner product with ``query`` (D,) -> (ids, sims), best first.

        A coarse pass over the fp16 index keeps ``max(4k, k + 256)`` candidates; they are scored again with
        the float32 vectors, so the values are exact and the order is exact unless the fp16 rounding (about
        1e-3 in cosine) moves an image across that much wider cut-off.
        """
        n = len(self)
        k = min(int(k), n)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        wide = min(n, max(4 * k, k + 256))
        if wide >= n:
            cand = np.arange(n)
        else:
            if SEARCH_THREADS > 0:
                _faiss().omp_set_num_threads(SEARCH_THREADS)
            _, ids = self.coarse.search(q, wide)
            cand = ids[0][ids[0] >= 0]
        sims = self.features(cand) @ q[0]
        top = np.argsort(-sims, kind="stable")[:k]
        return cand[top], sims[top]


def coarse_index(features: np.ndarray, dim: int):
    """A faiss fp16 scalar-quantised inner-product index over (N, D) float32 features."""
    faiss = _faiss()
    index = faiss.IndexScalarQuantizer(int(dim), faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    index.train(np.zeros((1, dim), np.float32))  # fp16 needs no statistics
    for start in range(0, len(features), 65536):
        index.add(np.ascontiguousarray(features[start:start + 65536], dtype=np.float32))
    return index


# ------------------------------------------------------------------------------------------ reading
def is_index(path: str | os.PathLike) -> bool:
    return (Path(path) / POINTER).is_file()


def current_version(root: str | os.PathLike) -> str:
    """The live version folder's name ('' when the folder holds no index)."""
    try:
        return (Path(root) / POINTER).read_text().strip()
    except FileNotFoundError:
        return ""


def read_index(root: str | os.PathLike, retries: int = 20) -> IndexData:
    """Load the live version of the index at ``root``; raises :class:`SearchError` when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise SearchError(f"{root}: no such index (build one with `sayno index build`)")
    last: Exception | None = None
    for _ in range(retries):
        version = current_version(root)
        if not version:
            raise SearchError(f"{root}: not a sayno index (no {POINTER} file; build one with `sayno index build`)")
        try:
            return _read_version(root / version)
        except FileNotFoundError as e:  # removed by a writer between reading CURRENT and opening it
            last = e
            time.sleep(0.01)
    raise SearchError(f"{root}: the index kept changing while it was being read ({last})")


def _read_version(folder: Path) -> IndexData:
    faiss = _faiss()
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise SearchError(f"{folder}: not a sayno index (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise SearchError(f"{folder}: index format version {meta.get('format_version')}, this sayno reads "
                          f"{FORMAT_VERSION}: rebuild it")
    with np.load(folder / "files.npz", allow_pickle=False) as z:
        files = FileTable(z["path"], z["size"], z["mtime_ns"], z["sha1"])
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    coarse = faiss.read_index(str(folder / "search.faiss"))
    dim = int(meta["embed_dim"])
    if vectors.shape != (len(files), dim) or coarse.ntotal != len(files) or coarse.d != dim:
        raise SearchError(f"{folder}: vectors {vectors.shape} and {coarse.ntotal} coarse entries for "
                          f"{len(files)} files (embed_dim {dim}): the index is damaged, rebuild it")
    return IndexData(vectors, coarse, files, meta, folder.name, folder)


# ------------------------------------------------------------------------------------------ writing
@contextlib.contextmanager
def writer_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold the index's writer lock (one build at a time; readers never wait)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchError(f"{root}: another `sayno index build` is writing this index") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_version(root: str | os.PathLike, vectors: np.ndarray, files: FileTable, meta: dict) -> str:
    """Write a complete new version of (N, D) float32 ``vectors`` and their ``files`` rows and make it live
    (atomically). Returns its folder name."""
    faiss = _faiss()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(files):
        raise SearchError(f"{vectors.shape} vectors for {len(files)} files")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "count": len(files),
            "embed_dim": int(vectors.shape[1])}
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        np.save(tmp / "vectors.npy", vectors)
        faiss.write_index(coarse_index(vectors, vectors.shape[1]), str(tmp / "search.faiss"))
        with open(tmp / "files.npz", "wb") as f:
            np.savez(f, path=files.path, size=files.size, mtime_ns=files.mtime_ns, sha1=files.sha1)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        name = f"v-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        os.replace(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer_tmp = root / f".{POINTER}.{uuid.uuid4().hex[:8]}"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, root / POINTER)
    _collect_garbage(root, name)
    return name


def _collect_garbage(root: Path, live: str) -> None:
    """Remove versions older than the previous one, and temporary folders of crashed writers."""
    versions = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("v-")),
                      key=lambda p: p.stat().st_mtime_ns)
    keep = {live} | {p.name for p in versions[-KEEP_VERSIONS:]}
    for p in versions:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():
        if p.name.startswith(".tmp-") and p.is_dir() and time.time() - p.stat().st_mtime > 3600:
            shutil.rmtree(p, ignore_errors=True)
