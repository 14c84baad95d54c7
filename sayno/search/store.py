"""The on-disk index: versioned folders behind a pointer file, so readers never see a half-written index.

Layout of an index folder ``INDEX/``::

    CURRENT              one line: the name of the live version folder (``v-...``, a name inside INDEX)
    VERSIONS             the version folders this index wrote, oldest first (one name a line): the only
                         folders a writer ever removes
    v-<time>-<id>/       one complete version
        vectors.npy      (N, D) float32 L2-normalised image features (memory-mapped by readers)
        search.faiss     faiss fp16 scalar-quantised inner-product index over the same vectors (the coarse pass)
        files.npz        path (N,) relative to the indexed folder, size (N,), mtime_ns (N,), sha1 (N,)
        meta.json        the checkpoint envelope (:class:`sayno.checkpoint.Envelope` as JSON): format
                         ``sayno-index``, version, backbone spec/fingerprint, the build config; sections: Glasses
                         checkpoint (path, sha1), folder, counts, unreadable files
    .lock                held (flock) by the one writer at a time, for a whole build

A writer (holding the lock) fills a hidden temporary folder ``.tmp-v-...`` (marked as its own by a
``.sayno-partial`` file), records the new name in ``VERSIONS``, renames the folder to ``v-...`` (atomic) and
then replaces ``CURRENT`` (atomic, :func:`sayno.checkpoint.atomic_path`). Garbage collection removes only
versions listed in ``VERSIONS`` (all but the live one and the one before it) and marked temporary folders:
never a folder the index did not write, even when the index shares a folder with other files.

A reader reads ``CURRENT`` and opens all four files of that version before reading any; once open they stay
readable even if a writer removes the folder (POSIX), and if the folder went away before they were opened the
reader reads ``CURRENT`` again. Format version 1 (sayno 0.1: ``format_version``, ``model``, ``fingerprint``
keys) is read as well. A damaged version (a truncated file, a ``CURRENT`` that names something else) is a
one-line :class:`SearchError` ("rebuild the index").
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sayno.checkpoint import CheckpointError, Envelope, atomic_path
from sayno.errors import BackboneMismatch, SaynoError
from sayno.search.shards import NpyRows

FORMAT = "sayno-index"
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # 1: sayno 0.1 meta.json keys (format_version, model, fingerprint)
POINTER = "CURRENT"
MANIFEST = "VERSIONS"  # the versions this index wrote: the only folders garbage collection may remove
PARTIAL_MARK = ".sayno-partial"  # inside a writer's temporary folder
TMP_PREFIX = ".tmp-"
KEEP_VERSIONS = 2  # the live version and the one before it
VERSION_FILES = ("meta.json", "files.npz", "vectors.npy", "search.faiss")
_VERSION_NAME = re.compile(r"v-[0-9A-Za-z][0-9A-Za-z._-]*")


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

    @functools.cached_property
    def _sha1_order(self) -> np.ndarray:
        return np.argsort(self.files.sha1, kind="stable")

    def rows_with_sha1(self, sha1: str) -> np.ndarray:
        """The rows (ascending) whose file had the content ``sha1`` (hex) when indexed; empty when none."""
        order = self._sha1_order
        sorted_sha = self.files.sha1[order]
        lo, hi = np.searchsorted(sorted_sha, sha1, "left"), np.searchsorted(sorted_sha, sha1, "right")
        return np.sort(order[lo:hi])

    def features(self, ids: np.ndarray | None = None) -> np.ndarray:
        """(len(ids), D) float32 stored features of rows ``ids`` (all rows when None)."""
        if ids is None:
            return np.array(self.vectors, dtype=np.float32)
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= len(self))):
            raise SearchError(f"row ids must be a 1-D array of integers in 0..{len(self) - 1}")
        return np.asarray(self.vectors[ids.astype(np.int64)], dtype=np.float32)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows with the largest exact inner product with ``query`` (D,) -> (ids, sims), best first.

        A coarse pass over the fp16 index keeps ``max(4k, k + 256)`` candidates; they are scored again with
        the float32 vectors, so the values are exact and the order is exact unless the fp16 rounding (about
        1e-3 in cosine) moves an image across that much wider cut-off.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise SearchError(f"k={k!r}: give a number of results >= 0")
        try:
            q = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError):
            raise SearchError(f"query of type {type(query).__name__}: expected a ({self.dim},) feature vector") from None
        if q.shape not in ((self.dim,), (1, self.dim)):
            raise SearchError(f"query of shape {q.shape}: expected one ({self.dim},) feature vector")
        if not np.isfinite(q).all():
            raise SearchError("the query vector has NaN or infinite values")
        n = len(self)
        k = min(int(k), n)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(q.reshape(1, -1))
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
    """Whether ``path`` holds a sayno index (a ``CURRENT`` file naming a version folder)."""
    try:
        return _VERSION_NAME.fullmatch((Path(path) / POINTER).read_text().strip()) is not None
    except (OSError, UnicodeDecodeError):
        return False


def current_version(root: str | os.PathLike) -> str:
    """The live version folder's name ('' when the folder holds no index); :class:`SearchError` when
    ``CURRENT`` names anything but a version folder inside ``root`` (``../x``, ``/etc``, garbage)."""
    try:
        name = (Path(root) / POINTER).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise SearchError(f"{root}: cannot read {POINTER} ({e}): the index is damaged, rebuild it") from e
    if not _VERSION_NAME.fullmatch(name):
        raise SearchError(f"{root}: {POINTER} names {name[:60]!r}, not a version folder of this index: the index "
                          "is damaged, rebuild it (sayno index build --rebuild)")
    return name


def read_index(root: str | os.PathLike, retries: int = 20) -> IndexData:
    """Load the live version of the index at ``root``; raises :class:`SearchError` when there is none or it
    is damaged. Never fails because a concurrent build replaced or removed the version being opened."""
    root = Path(root)
    if not root.is_dir():
        raise SearchError(f"{root}: no such index (build one with `sayno index build`)")
    last: Exception | None = None
    for _ in range(max(1, retries)):
        version = current_version(root)
        if not version:
            raise SearchError(f"{root}: not a sayno index (no {POINTER} file; build one with `sayno index build`)")
        try:
            files = _open_version(root / version)
        except (FileNotFoundError, NotADirectoryError) as e:  # removed by a writer after CURRENT was read
            last = e
            time.sleep(0.01)
            continue
        try:
            return _load_version(root / version, files)
        finally:
            for f in files.values():
                f.close()
    raise SearchError(f"{root}: the index kept changing while it was being read ({last})")


def _open_version(folder: Path) -> dict[str, BinaryIO]:
    """Every file of a version, open (FileNotFoundError when a writer removed it). Open files stay readable
    after the folder is removed, so nothing below depends on the folder staying."""
    opened: dict[str, BinaryIO] = {}
    try:
        for name in VERSION_FILES:
            opened[name] = open(folder / name, "rb")  # noqa: SIM115 - closed by read_index
    except BaseException:
        for f in opened.values():
            f.close()
        raise
    return opened


def _load_version(folder: Path, files: dict[str, BinaryIO]) -> IndexData:
    """An :class:`IndexData` from a version's open files; a damaged file is a :class:`SearchError`."""
    faiss = _faiss()
    damaged = f"{folder}: the index is damaged, rebuild it (sayno index build --rebuild)"
    envelope = parse_envelope(files["meta.json"].read(), str(folder))
    try:
        dim = int(envelope.sections["embed_dim"])
        with np.load(files["files.npz"], allow_pickle=False) as z:
            table = FileTable(z["path"], z["size"], z["mtime_ns"], z["sha1"])
        vectors = _memmap_npy(files["vectors.npy"])
        coarse = faiss.read_index(faiss.PyCallbackIOReader(files["search.faiss"].read))
    except Exception as e:  # noqa: BLE001 - numpy, zipfile and faiss raise many types for a damaged file
        raise SearchError(f"{damaged} ({type(e).__name__}: {' '.join(str(e).split())[:100]})") from None
    if vectors.shape != (len(table), dim) or coarse.ntotal != len(table) or coarse.d != dim:
        raise SearchError(f"{folder}: vectors {vectors.shape} and {coarse.ntotal} coarse entries for "
                          f"{len(table)} files (embed_dim {dim}): the index is damaged, rebuild it")
    return IndexData(vectors, coarse, table, envelope, folder.name, folder)


def _memmap_npy(f: BinaryIO) -> np.ndarray:
    """A read-only memory map of an open ``.npy`` file (the map outlives the file's name and handle)."""
    fmt = np.lib.format
    major, _ = fmt.read_magic(f)
    read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran or dtype != np.float32 or len(shape) != 2:
        raise ValueError(f"vectors.npy holds {dtype} {shape}, not a C-ordered float32 matrix")
    if 0 in shape:
        return np.zeros(shape, np.float32)
    return np.memmap(f, dtype=np.float32, mode="r", offset=f.tell(), shape=shape)


def read_envelope(path: Path) -> Envelope:
    """The envelope in a version's ``meta.json`` (format versions 1 and 2); raises :class:`SearchError` for
    another format or version ("rebuild the index")."""
    return parse_envelope(Path(path).read_bytes(), str(Path(path).parent))


def parse_envelope(text: bytes | str, where: str) -> Envelope:
    """The envelope in the bytes of a ``meta.json`` (format versions 1 and 2); :class:`SearchError` for
    anything else ("rebuild the index")."""
    try:
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise SearchError(f"{where}: meta.json is not valid JSON ({e}): the index is damaged, rebuild it "
                          "(sayno index build --rebuild)") from None
    if not isinstance(meta, dict):
        raise SearchError(f"{where}: meta.json is not a JSON object: the index is damaged, rebuild it")
    if meta.get("format") == FORMAT and "format_version" in meta:
        meta = _from_version_1(meta)
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
    """Hold the index's writer lock (one writer at a time, for a whole build; readers never wait). Creates
    ``root`` (its parent must exist); :class:`SearchError` at once when another writer holds the lock."""
    root = Path(root)
    if not root.parent.is_dir():
        raise SearchError(f"{root.parent}: no such folder (create it first; --out names the index folder)")
    try:
        root.mkdir(exist_ok=True)
        f = open(root / ".lock", "a")  # noqa: SIM115 - closed below
    except FileExistsError:
        raise SearchError(f"{root}: is a file, not an index folder") from None
    except OSError as e:
        raise SearchError(f"{root}: cannot create the index folder ({e.strerror or e})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchError(f"{root}: another `sayno index build` is writing this index; try again when it "
                              "has finished") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recorded_versions(root: str | os.PathLike) -> list[str]:
    """The version folders this index wrote (``VERSIONS``), oldest first. An index written before sayno
    kept that record counts only its live version as its own."""
    root = Path(root)
    try:
        lines = (root / MANIFEST).read_text().split()
    except FileNotFoundError:
        live = _live_or_empty(root)
        return [live] if live else []
    return [n for n in lines if _VERSION_NAME.fullmatch(n)]


def _live_or_empty(root: Path) -> str:
    """The live version's name, '' when there is none or ``CURRENT`` is damaged (a rebuild replaces it)."""
    try:
        return current_version(root)
    except SearchError:
        return ""


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))


def write_version(root: str | os.PathLike, vectors: np.ndarray | Path, files: FileTable, envelope: Envelope, *,
                  coarse: Callable[[np.ndarray], tuple[Any, dict]] | None = None,
                  publish: Callable[[str, np.ndarray], dict] | None = None) -> str:
    """Write a complete new version of (N, D) float32 ``vectors`` and their ``files`` rows and make it live
    (atomically); the caller holds :func:`writer_lock`. ``envelope``: format ``sayno-index``; its ``count`` and
    ``embed_dim`` sections are set here. Returns the version's folder name.

    vectors: an array, or the path of a float32 ``.npy`` file the caller wrote on the index's filesystem (moved
    into the version: a build that streams its vectors to disk never holds them all). coarse: vectors (a
    read-only memory map of the version's file) -> (faiss index, sections for the envelope); default the flat
    fp16 index (:mod:`sayno.search.ann` builds the others); it gets the rows as :class:`NpyRows`. publish: (version name, vectors) -> sections, run
    after every file but ``meta.json`` is written and before the version goes live (the Milvus upload); an
    error there leaves the live version as it was.

    Any failure (a full disk: ENOSPC) is a :class:`SearchError` that leaves the live version as it was and no
    temporary file behind."""
    faiss = _faiss()
    root = Path(root)
    if isinstance(vectors, Path):
        with open(vectors, "rb") as f:
            shape = _memmap_npy(f).shape
    else:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        shape = vectors.shape
    if len(shape) != 2 or shape[0] != len(files):
        raise SearchError(f"{shape} vectors for {len(files)} files")
    meta = replace(envelope, sections={**envelope.sections, "count": len(files), "embed_dim": int(shape[1])})
    before = _live_or_empty(root)
    name = f"v-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tmp = root / f"{TMP_PREFIX}{name}"
    try:
        tmp.mkdir()
        (tmp / PARTIAL_MARK).touch()
        if isinstance(vectors, Path):
            os.replace(vectors, tmp / "vectors.npy")
        else:
            np.save(tmp / "vectors.npy", vectors)
        stored = NpyRows(tmp / "vectors.npy")  # read through the file: the build's memory stays flat
        index, sections = coarse(stored) if coarse is not None else (coarse_index(stored, shape[1]), {})
        faiss.write_index(index, str(tmp / "search.faiss"))
        del index
        with open(tmp / "files.npz", "wb") as f:
            np.savez(f, path=files.path, size=files.size, mtime_ns=files.mtime_ns, sha1=files.sha1)
        if publish is not None:
            sections = {**sections, **publish(name, stored)}
        meta = replace(meta, sections={**meta.sections, **sections})
        (tmp / "meta.json").write_text(json.dumps(meta.to_dict(), indent=1))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        _write_lines(root / MANIFEST, recorded_versions(root) + [name])  # recorded before it exists
        os.replace(tmp, root / name)
        _write_lines(root / POINTER, [name])
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (root / name).is_dir() and _live_or_empty(root) != name:
            shutil.rmtree(root / name, ignore_errors=True)
        if isinstance(e, (OSError, CheckpointError, RuntimeError)):  # faiss reports write errors as RuntimeError
            reason = getattr(e, "strerror", None) or " ".join(str(e).split())[:120]
            raise SearchError(f"{root}: cannot write the index ({reason}); nothing changed, the live version is "
                              f"still {before or 'none'}") from e
        raise
    _collect_garbage(root, name)
    return name


def _collect_garbage(root: Path, live: str) -> None:
    """Remove the versions this index recorded (``VERSIONS``) except the live one and the one before it,
    and temporary folders of crashed writers (marked ``.sayno-partial``). Nothing else is ever removed.
    Best effort: a failure here leaves the new version live."""
    try:
        recorded = recorded_versions(root)
        keep = {live} | set(recorded[-KEEP_VERSIONS:])
        for name in recorded:
            if name not in keep:
                shutil.rmtree(root / name, ignore_errors=True)
        left = [n for n in recorded if (root / n).is_dir()]
        if left != recorded:
            _write_lines(root / MANIFEST, left)
        for p in root.glob(f"{TMP_PREFIX}v-*"):
            if p.is_dir() and (p / PARTIAL_MARK).is_file():
                shutil.rmtree(p, ignore_errors=True)
    except (OSError, CheckpointError, SearchError):
        pass
