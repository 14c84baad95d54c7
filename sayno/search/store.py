"""The on-disk index: versioned folders behind a pointer file, so readers never see a half-written index.

Layout of an index folder ``INDEX/``::

    CURRENT              one line: the name of the live version folder
    v-<time>-<id>/       one complete version
        vectors.npy      (N, D) float32 L2-normalised image features (memory-mapped by readers)
        search.faiss     faiss fp16 scalar-quantised inner-product index over the same vectors (the coarse pass)
        files.npz        path (N,) relative to the indexed folder, size (N,), mtime_ns (N,), sha1 (N,)
        meta.json        the checkpoint envelope (:class:`sayno.checkpoint.Envelope` as JSON): format
                         ``sayno-index``, version, backbone spec/fingerprint, the build config; sections: Glasses
                         checkpoint (path, sha1), folder, counts, unreadable files
    .lock                held (flock) by the one writer at a time

A writer fills a hidden temporary folder, renames it to ``v-...`` (atomic) and then replaces ``CURRENT``
(atomic, :func:`sayno.checkpoint.atomic_path`). A reader reads ``CURRENT`` and loads that folder; if a writer
removed it in between (only versions older than the previous one are removed), the reader reads ``CURRENT``
again. Format version 1 (sayno 0.1: ``format_version``, ``model``, ``fingerprint`` keys) is read as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sayno.checkpoint import CheckpointError, Envelope, atomic_path
from sayno.errors import BackboneMismatch, SaynoError

FORMAT = "sayno-index"
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # 1: sayno 0.1 meta.json keys (format_version, model, fingerprint)
POINTER = "CURRENT"
KEEP_VERSIONS = 2  # the live version and the one before it (a reader may still be opening it)


class SearchError(SaynoError, ValueError):
    """Bad input for indexing or search (a one-line message for the CLI and the HTTP API)."""


class IndexMismatch(SearchError):
    """The index was built with another backbone, Glasses checkpoint or folder than the one given."""


class IndexBackboneMismatch(IndexMismatch, BackboneMismatch):
    """The index was built with another backbone (also a :class:`sayno.errors.BackboneMismatch`)."""


def _faiss():
    """The faiss module (an optional dependency: the search extra)."""
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
    fp16 index over them, ``files`` its rows, ``envelope`` its metadata (backbone, config, sections)."""

    vectors: np.ndarray
    coarse: object
    files: FileTable
    envelope: Envelope
    version: str = ""
    folder: Path = field(default_factory=Path)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def meta(self) -> dict[str, Any]:
        """The envelope as the JSON dict of ``meta.json`` (``bad``, ``build``, ``glasses``... at the top)."""
        return self.envelope.to_dict()

    @property
    def dim(self) -> int:
        return int(self.envelope.sections["embed_dim"])

    @property
    def root(self) -> Path:
        """The indexed image folder (absolute)."""
        return Path(self.envelope.sections["root"])

    @property
    def model(self) -> str | None:
        """The backbone spec the index was built with."""
        return self.envelope.backbone_spec

    @property
    def fingerprint(self) -> str | None:
        return self.envelope.backbone_fingerprint

    @property
    def glasses(self) -> dict | None:
        """``{"path", "sha1"}`` of the Glasses checkpoint the index was built with, or None."""
        return self.envelope.sections.get("glasses")

    @property
    def bad(self) -> list[dict]:
        """Files the build could not read: ``{"path", "reason"}``."""
        return list(self.envelope.sections.get("bad", []))

    @functools.cached_property
    def path_set(self) -> frozenset[str]:
        """Every row's path (for membership tests)."""
        return frozenset(self.files.path.tolist())

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
    envelope = read_envelope(folder / "meta.json")
    with np.load(folder / "files.npz", allow_pickle=False) as z:
        files = FileTable(z["path"], z["size"], z["mtime_ns"], z["sha1"])
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    coarse = faiss.read_index(str(folder / "search.faiss"))
    dim = int(envelope.sections["embed_dim"])
    if vectors.shape != (len(files), dim) or coarse.ntotal != len(files) or coarse.d != dim:
        raise SearchError(f"{folder}: vectors {vectors.shape} and {coarse.ntotal} coarse entries for "
                          f"{len(files)} files (embed_dim {dim}): the index is damaged, rebuild it")
    return IndexData(vectors, coarse, files, envelope, folder.name, folder)


def read_envelope(path: Path) -> Envelope:
    """The envelope in a version's ``meta.json`` (format versions 1 and 2); raises :class:`SearchError` for
    another format or version ("rebuild the index")."""
    meta = json.loads(path.read_text())
    if meta.get("format") == FORMAT and "format_version" in meta:
        meta = _from_version_1(meta)
    where = str(path.parent)
    try:
        return Envelope.from_dict(meta, where).expect(FORMAT, READABLE_VERSIONS, where)
    except CheckpointError as e:
        raise SearchError(f"{e}: not an index this sayno reads, rebuild the index (sayno index build "
                          "--rebuild)") from e


def _from_version_1(meta: dict[str, Any]) -> dict[str, Any]:
    """sayno 0.1's meta.json keys -> the envelope's (same content)."""
    renames = {"format_version": "version", "model": "backbone_spec", "fingerprint": "backbone_fingerprint"}
    out = {renames.get(k, k): v for k, v in meta.items()}
    out["version"] = str(out["version"])
    return out


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


def write_version(root: str | os.PathLike, vectors: np.ndarray, files: FileTable, envelope: Envelope) -> str:
    """Write a complete new version of (N, D) float32 ``vectors`` and their ``files`` rows and make it live
    (atomically). ``envelope``: format ``sayno-index``; its ``count`` and ``embed_dim`` sections are set here.
    Returns the version's folder name."""
    faiss = _faiss()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(files):
        raise SearchError(f"{vectors.shape} vectors for {len(files)} files")
    meta = replace(envelope, sections={**envelope.sections, "count": len(files), "embed_dim": int(vectors.shape[1])})
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        np.save(tmp / "vectors.npy", vectors)
        faiss.write_index(coarse_index(vectors, vectors.shape[1]), str(tmp / "search.faiss"))
        with open(tmp / "files.npz", "wb") as f:
            np.savez(f, path=files.path, size=files.size, mtime_ns=files.mtime_ns, sha1=files.sha1)
        (tmp / "meta.json").write_text(json.dumps(meta.to_dict(), indent=1))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        name = f"v-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        os.replace(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_path(root / POINTER) as pointer:
        pointer.write_text(name + "\n")
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
