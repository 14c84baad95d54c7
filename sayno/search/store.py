"""The on-disk index: versioned folders behind a pointer file, so readers never see a half-written index.

Layout of an index folder ``INDEX/``::

    CURRENT              one line: the name of the live version folder (``v-...``, a name inside INDEX)
    VERSIONS             the version folders this index wrote, oldest first (one name a line): the only
                         folders a writer ever removes
    v-<time>-<id>/       one complete version
        vectors.npy      (N, D) float32 L2-normalised image features (memory-mapped by readers)
        search.faiss     faiss fp16 scalar-quantised inner-product index over the same vectors (the coarse pass)
        files.npz        per image: path relative to the indexed folder (UTF-8 bytes ``path_utf8`` + (N+1,)
                         ``path_offsets``), size (N,), mtime_ns (N,), raw sha1 ``sha1_bytes`` (N, 20)
                         (:class:`sayno.search.table.FileTable`; format 2 held string columns, still read)
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
keys) is read as well. A damaged version (a truncated file, a ``CURRENT`` that names something else, a
``meta.json`` value of the wrong type, a file that is a folder, a FIFO or a symbolic link, a version folder
that is a symbolic link) is a one-line :class:`IndexFileError` naming the file and what is wrong ("rebuild
the index"): every file is checked where it is read (:func:`check_meta` for ``meta.json``), nothing is
followed out of the index or waited on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import json
import os
import re
import shutil
import stat
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sayno.checkpoint import CheckpointError, Envelope, atomic_path
from sayno.config import ConfigError
from sayno.errors import BackboneMismatch, SaynoError
from sayno.glasses.training_free import Calibration, is_training_free
from sayno.search.match import BANK_KEY, VOCAB_KEY, decode_bank
from sayno.search.shards import NPY_HEADERS, NpyRows
from sayno.search.table import FileTable

FORMAT = "sayno-index"
FORMAT_VERSION = "3"
# 1: sayno 0.1 meta.json keys (format_version, model, fingerprint); 1 and 2: files.npz of string columns
# (read and converted, sayno.search.table); 3: files.npz of flat arrays (path bytes + offsets, raw sha1)
READABLE_VERSIONS = ("1", "2", "3")
POINTER = "CURRENT"
MANIFEST = "VERSIONS"  # the versions this index wrote: the only folders garbage collection may remove
PARTIAL_MARK = ".sayno-partial"  # inside a writer's temporary folder
TMP_PREFIX = ".tmp-"
KEEP_VERSIONS = 2  # the live version and the one before it
WRITE_CHUNK = 65_536  # rows encoded at a time into a streamed flat index file
VERSION_FILES = ("meta.json", "files.npz", "vectors.npy", "search.faiss")
_VERSION_NAME = re.compile(r"v-[0-9A-Za-z][0-9A-Za-z._-]{0,200}")  # at most 203 characters (NAME_MAX is 255)
MAX_POINTER_BYTES = 4096  # CURRENT holds one version name: anything longer is not read
MAX_META_DEPTH = 32  # meta.json nests 4 deep; deeper JSON is refused (100,000 deep overflowed the parser)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes included
BACKEND_KINDS = ("faiss", "milvus")  # sayno.search.milvus.BACKENDS
INDEX_KINDS = ("flat", "ivf")  # what a version records (sayno.search.ann)
MATCH_SECTION = "match"  # sayno.search.match.SECTION
REBUILD = "the index is damaged, rebuild it (sayno index build --rebuild)"


class SearchError(SaynoError, ValueError):
    """Bad input for indexing or search (a one-line message for the CLI and the HTTP API)."""


class IndexFileError(SearchError):
    """A file of an index that cannot be used (not a regular file, unreadable, malformed, a value of the wrong
    type): the message names the file and what is wrong, and says to rebuild the index."""


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
        return frozenset(self.files.path)

    @functools.cached_property
    def _sha1_order(self) -> np.ndarray:
        return np.argsort(self.files.sha1.keys(), kind="stable")

    def rows_with_sha1(self, sha1: str) -> np.ndarray:
        """The rows (ascending) whose file had the content ``sha1`` (hex) when indexed; empty when none."""
        try:
            key = np.frombuffer(bytes.fromhex(sha1), np.uint8)
        except (TypeError, ValueError):
            return np.zeros(0, np.int64)
        if len(key) != 20:
            return np.zeros(0, np.int64)
        order = self._sha1_order
        sorted_sha = self.files.sha1.keys()[order]
        want = key.view("S20")[0]
        lo, hi = np.searchsorted(sorted_sha, want, "left"), np.searchsorted(sorted_sha, want, "right")
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


class StreamedFlatIndex:
    """The flat index of :func:`coarse_index` over ``rows`` (N, D), written straight into its file a chunk at a
    time (:meth:`write_file`) instead of being built in memory (2*D bytes per image: 256 MB for 1M images of
    D=128). The file is byte for byte what ``faiss.write_index(coarse_index(rows, dim))`` writes: the codes are
    faiss's own (``sa_encode``) and the layout is checked against faiss once per process and dimension; where it
    differs (another faiss), the index is built in memory as before."""

    def __init__(self, rows: np.ndarray, dim: int):
        self.rows, self.d, self.ntotal = rows, int(dim), len(rows)

    def write_file(self, path: str | os.PathLike) -> None:
        if not _streamable_layout(self.d):
            _faiss().write_index(coarse_index(self.rows, self.d), str(path))
            return
        with open(path, "wb") as f:
            _write_flat(f, self.rows, self.d)


def _write_flat(f: BinaryIO, rows: np.ndarray, dim: int) -> None:
    """An ``IxSQ`` fp16 file: faiss's header of an empty index with ``ntotal`` set, then the codes vector."""
    proto = coarse_index(np.zeros((0, dim), np.float32), dim)
    head = _faiss().serialize_index(proto).tobytes()
    n, code = len(rows), int(proto.sa_code_size())
    f.write(head[:8] + struct.pack("<q", n) + head[16:-8] + struct.pack("<Q", n * code))
    f.writelines(proto.sa_encode(np.ascontiguousarray(rows[start:start + WRITE_CHUNK], dtype=np.float32)).tobytes()
                 for start in range(0, n, WRITE_CHUNK))


@functools.cache
def _streamable_layout(dim: int) -> bool:
    """Whether :func:`_write_flat` writes what faiss writes for ``dim`` (checked on 3 random vectors)."""
    x = np.random.default_rng(0).standard_normal((3, dim)).astype(np.float32)
    want = _faiss().serialize_index(coarse_index(x, dim)).tobytes()
    buf = io.BytesIO()
    _write_flat(buf, x, dim)
    return buf.getvalue() == want


def write_faiss(index: object, path: str | os.PathLike) -> None:
    """Write a faiss index (or a :class:`StreamedFlatIndex`) to ``path``."""
    if isinstance(index, StreamedFlatIndex):
        index.write_file(path)
    else:
        _faiss().write_index(index, str(path))


# ------------------------------------------------------------------------------------------ reading
def is_index(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a sayno index (a ``CURRENT`` file naming a version folder)."""
    try:
        return _VERSION_NAME.fullmatch(_read_pointer(Path(path))) is not None
    except (OSError, UnicodeDecodeError, SearchError):
        return False


def _read_pointer(root: Path) -> str:
    """The stripped text of ``root/CURRENT`` (OSError as ``open`` raises it; :class:`IndexFileError` for
    something that is not a regular file or longer than :data:`MAX_POINTER_BYTES`)."""
    path = root / POINTER
    with _open_regular(path) as f:
        raw = f.read(MAX_POINTER_BYTES + 1)
    if len(raw) > MAX_POINTER_BYTES:
        raise IndexFileError(f"{path}: longer than {MAX_POINTER_BYTES} bytes, not one version name: {REBUILD}")
    return raw.decode("utf-8").strip()


def current_version(root: str | os.PathLike) -> str:
    """The live version folder's name ('' when the folder holds no index); :class:`SearchError` when
    ``CURRENT`` names anything but a version folder inside ``root`` (``../x``, ``/etc``, garbage)."""
    try:
        name = _read_pointer(Path(root))
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise IndexFileError(f"{root}: cannot read {POINTER} ({reason}): {REBUILD}") from None
    if not _VERSION_NAME.fullmatch(name):
        raise IndexFileError(f"{root}: {POINTER} names {name[:60]!r}, not a version folder of this index: the "
                             "index is damaged, rebuild it (sayno index build --rebuild)")
    return name


def read_index(root: str | os.PathLike, retries: int = 20, *, coarse: bool | None = True) -> IndexData:
    """Load the live version of the index at ``root``; raises :class:`SearchError` when there is none or it
    is damaged (:class:`IndexFileError` naming the file). Never fails because a concurrent build replaced or
    removed the version being opened.

    coarse: load the faiss index (True; searching needs it); None: only an IVF one (a build that updates the
    index keeps its cells; a flat one, 2*D bytes per image in memory, is not needed), else ``IndexData.coarse``
    is None."""
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
        except FileNotFoundError as e:  # removed by a writer after CURRENT was read
            last = e
            time.sleep(0.01)
            continue
        try:
            return _load_version(root / version, files, coarse)
        finally:
            for f in files.values():
                f.close()
    raise SearchError(f"{root}: the index kept changing while it was being read ({last})")


def _open_version(folder: Path) -> dict[str, BinaryIO]:
    """Every file of a version, open (FileNotFoundError when a writer removed it). Open files stay readable
    after the folder is removed, so nothing below depends on the folder staying. The folder and its files
    must be what a build writes, a folder and regular files: a symbolic link (``v-x -> /elsewhere``), a FIFO
    or a folder where a file belongs is an :class:`IndexFileError`, never followed or waited on."""
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ENOTDIR and folder.is_symlink():  # O_NOFOLLOW with O_DIRECTORY: ENOTDIR on Linux
            e = OSError(errno.ELOOP, "a symbolic link")
        raise IndexFileError(f"{folder}: {_open_problem(e, 'version folder')}: {REBUILD}") from None
    opened: dict[str, BinaryIO] = {}
    try:
        for name in VERSION_FILES:
            opened[name] = _open_regular(folder / name, folder_fd)
    except BaseException:
        for f in opened.values():
            f.close()
        raise
    finally:
        os.close(folder_fd)
    return opened


def _open_regular(path: Path, dir_fd: int | None = None) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (a symbolic link is not followed when
    ``dir_fd`` is given: ``path.name`` is opened inside that folder). FileNotFoundError passes; anything else
    that is not a regular file is an :class:`IndexFileError` (a FIFO is not waited on)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if dir_fd is not None else 0)
    try:
        fd = os.open(path.name if dir_fd is not None else path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise IndexFileError(f"{path}: {_open_problem(e, 'file')}: {REBUILD}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise IndexFileError(f"{path}: {what}, not the file an index build writes: {REBUILD}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _open_problem(e: OSError, what: str) -> str:
    if e.errno == errno.ELOOP:
        return f"a symbolic link, not a {what} this index wrote (not followed)"
    if e.errno == errno.ENOTDIR:
        return f"not a {what}"
    if e.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing without waiting
        return f"not a regular file, not the {what} an index build writes"
    return f"cannot open ({e.strerror or type(e).__name__})"




def _load_version(folder: Path, files: dict[str, BinaryIO], load_coarse: bool | None = True) -> IndexData:
    """An :class:`IndexData` from a version's open files; a damaged file is an :class:`IndexFileError`.
    load_coarse: as ``read_index``'s ``coarse``."""
    faiss = _faiss()
    envelope = parse_envelope(_read_meta(files["meta.json"], folder), str(folder))
    dim = int(envelope.sections["embed_dim"])
    name = "files.npz"
    try:
        with NPY_HEADERS, np.load(files[name], allow_pickle=False) as z:
            table = FileTable.from_npz(z)
        _check_paths(table)
        name = "vectors.npy"
        with NPY_HEADERS:
            vectors = _memmap_npy(files[name])
        name = "search.faiss"
        if load_coarse is None:
            load_coarse = (envelope.sections.get("index") or {}).get("kind") == "ivf"
        coarse = faiss.read_index(faiss.PyCallbackIOReader(files[name].read)) if load_coarse else None
    except Exception as e:  # noqa: BLE001 - numpy, zipfile and faiss raise many types for a damaged file
        raise IndexFileError(f"{folder / name}: {REBUILD} ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:100]})") from None
    entries, coarse_dim = (coarse.ntotal, coarse.d) if coarse is not None else (len(table), dim)
    if vectors.shape != (len(table), dim) or entries != len(table) or coarse_dim != dim:
        raise IndexFileError(f"{folder}: vectors {vectors.shape} and {entries} coarse entries for "
                             f"{len(table)} files (embed_dim {dim}): {REBUILD}")
    return IndexData(vectors, coarse, table, envelope, folder.name, folder)


def _check_paths(table: FileTable) -> None:
    """ValueError unless the file table's path offsets ascend and no path is absolute (a build records paths
    relative to the indexed folder: ``root / "/etc/x"`` would name a file outside it)."""
    offsets, blob = table.path.offsets, table.path.blob
    if (np.diff(offsets) < 0).any():
        raise ValueError("path offsets that go backwards")
    starts = offsets[:-1][offsets[1:] > offsets[:-1]]
    if (blob[starts] == ord("/")).any():
        raise ValueError("an absolute path where a path relative to the indexed folder belongs")


def _read_meta(f: BinaryIO, folder: Path) -> bytes:
    try:
        return f.read()
    except OSError as e:
        raise IndexFileError(f"{folder / 'meta.json'}: cannot read ({e.strerror or e}): {REBUILD}") from None


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
    """The envelope in a version's ``meta.json`` (format versions 1 to 3); raises :class:`SearchError` for
    another format or version, :class:`IndexFileError` for a file that is not a sound ``meta.json``."""
    path = Path(path)
    try:
        with _open_regular(path) as f:
            text = _read_meta(f, path.parent)
    except FileNotFoundError:
        raise IndexFileError(f"{path}: no such file: {REBUILD}") from None
    return parse_envelope(text, str(path.parent))


def parse_envelope(text: bytes | str, where: str) -> Envelope:
    """The envelope in the bytes of a version's ``meta.json`` (``where``: the version folder), every value
    sayno reads from it checked (:func:`check_meta`); :class:`IndexFileError` naming the file and what is
    wrong for anything else, :class:`SearchError` for another format or version ("rebuild the index")."""
    file = f"{where}/meta.json"
    if json_too_deep(text):
        raise IndexFileError(f"{file}: JSON nested more than {MAX_META_DEPTH} deep: {REBUILD}")
    try:
        meta = json.loads(text)
    except RecursionError:
        raise IndexFileError(f"{file}: JSON nested too deep: {REBUILD}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexFileError(f"{file}: not valid JSON ({' '.join(str(e).split())[:100]}): {REBUILD}") from None
    if not isinstance(meta, dict):
        raise IndexFileError(f"{file}: not a JSON object: {REBUILD}")
    if meta.get("format") == FORMAT and "format_version" in meta:
        meta = _from_version_1(meta)
    check_meta(meta, file)
    try:
        return Envelope.from_dict(meta, where).expect(FORMAT, READABLE_VERSIONS, where)
    except CheckpointError as e:
        raise SearchError(f"{e}: not an index this sayno reads, rebuild the index (sayno index build "
                          "--rebuild)") from e


# ------------------------------------------------------------------------------------------ meta.json
def check_meta(meta: dict[str, Any], file: str) -> None:
    """:class:`IndexFileError` (``file``: what it names) unless every value sayno reads from a version's
    ``meta.json`` has the type and range a build writes: the indexed folder ``root`` (an absolute path),
    ``embed_dim``, ``count``, the ``config``, the ``glasses`` identity (with a training-free ``calibration`` of
    finite numbers and a ``mu`` of ``embed_dim`` values), the ``backend`` and ``index`` sections and the
    unreadable files ``bad`` (:func:`parse_envelope` has refused JSON nested more than
    :data:`MAX_META_DEPTH` deep before parsing it)."""

    def bad(what: str) -> IndexFileError:
        return IndexFileError(f"{file}: {what}: {REBUILD}")

    for key in ("format", "version"):
        if not isinstance(meta.get(key), (str, int)) or isinstance(meta.get(key), bool):
            raise bad(f"{key} is {_shown(meta.get(key))}, not a string")
    for key in ("backbone_fingerprint", "backbone_spec"):
        if not isinstance(meta.get(key), (str, type(None))):
            raise bad(f"{key} is {_shown(meta.get(key))}, not a string")
    if not isinstance(meta.get("config"), (dict, type(None))):
        raise bad(f"config is {_shown(meta.get('config'))}, not a JSON object")
    if meta.get("format") != FORMAT:
        return  # another file's envelope: refused by the format check, with its own message
    root = meta.get("root")
    if not isinstance(root, str) or not os.path.isabs(root) or "\x00" in root:
        raise bad(f"root (the indexed folder) is {_shown(root)}, not an absolute path")
    dim = meta.get("embed_dim")
    if not _is_int(dim) or not 1 <= dim <= 65536:
        raise bad(f"embed_dim is {_shown(dim)}, not a vector size from 1 to 65536")
    if "count" in meta and (not _is_int(meta["count"]) or meta["count"] < 0):
        raise bad(f"count is {_shown(meta['count'])}, not a number of images")
    rows = meta.get("bad", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("path"), str)
                                             and isinstance(r.get("reason"), str) for r in rows):
        raise bad("bad (the unreadable files) is not a list of {path, reason}")
    _check_glasses(meta.get("glasses"), dim, bad)
    if meta.get(MATCH_SECTION) is not None:  # the label-free match test's calibration (sayno.search.match)
        section = meta[MATCH_SECTION]
        if isinstance(section, dict) and BANK_KEY in section:
            try:
                decode_bank(section[BANK_KEY], dim)
            except ValueError as e:
                raise bad(f"{MATCH_SECTION} {e}") from None
            section = {k: v for k, v in section.items() if k != BANK_KEY}
        if isinstance(section, dict) and VOCAB_KEY in section:
            kept = section[VOCAB_KEY]
            if not isinstance(kept, dict) or not _is_int(kept.get("version")):
                raise bad(f"{MATCH_SECTION} vocabulary is not a {{version, rows, float32}} object")
            try:
                decode_bank({k: v for k, v in kept.items() if k != "version"}, dim)
            except ValueError as e:
                raise bad(f"{MATCH_SECTION} vocabulary: {str(e).removeprefix('bank ')}") from None
            section = {k: v for k, v in section.items() if k != VOCAB_KEY}
        _check_calibration(section, dim, f"{MATCH_SECTION} calibration", bad)
    _check_section(meta, "backend", "kind", BACKEND_KINDS, bad)
    if (meta.get("backend") or {}).get("kind") == "milvus":
        for key in ("uri", "collection"):
            if not isinstance(meta["backend"].get(key), str) or not meta["backend"][key]:
                raise bad(f"backend {key} is {_shown(meta['backend'].get(key))}, not a string")
    _check_section(meta, "index", "kind", INDEX_KINDS, bad)
    for key in ("nlist", "nprobe", "trained_count", "trained_sample"):
        value = (meta.get("index") or {}).get(key, 0)
        if not _is_int(value) or value < 0:
            raise bad(f"index {key} is {_shown(value)}, not a count")


def _check_glasses(glasses: object, dim: int, bad: Callable[[str], IndexFileError]) -> None:
    """The ``glasses`` section: None, or ``{"path", "sha1", ...}`` (training-free: with its calibration)."""
    if glasses is None:
        return
    if not isinstance(glasses, dict):
        raise bad(f"glasses is {_shown(glasses)}, not a JSON object")
    for key in ("path", "sha1"):
        if not isinstance(glasses.get(key), str) or not glasses[key]:
            raise bad(f"glasses {key} is {_shown(glasses.get(key))}, not a string")
    stored = glasses.get("calibration")
    if stored is None and not is_training_free(glasses):
        return
    if stored is None:
        raise bad("the training-free Glasses have no calibration")
    _check_calibration(stored, dim, "glasses calibration", bad)


def _check_calibration(stored: object, dim: int, what: str, bad: Callable[[str], IndexFileError]) -> None:
    """A stored :class:`sayno.glasses.Calibration`: its keys, finite ``lam, tau, level, base_mu``, numbers (or
    null: not measured) for the rest, ``mu`` None or ``dim`` finite numbers."""
    if not isinstance(stored, dict):
        raise bad(f"{what} is {_shown(stored)}, not a JSON object")
    values = dict(stored)
    mu = values.pop("mu", None)
    try:
        cal = Calibration.from_dict(values)
    except (ConfigError, TypeError) as e:
        raise bad(f"{what}: {' '.join(str(e).split())[:120]}") from None
    for name in ("lam", "tau", "level", "base_mu"):  # what scores are made of: a NaN here is a NaN score
        if not _is_number(getattr(cal, name)) or not np.isfinite(getattr(cal, name)):
            raise bad(f"{what} {name} is {_shown(stored.get(name))}, not a finite number")
    for name in ("present", "absent", "spread_affirmative", "spread_relative"):  # measured, may be unknown
        if not _is_number(getattr(cal, name)):
            raise bad(f"{what} {name} is {_shown(stored.get(name))}, not a number or null")
    if not _is_int(cal.reference) or not isinstance(cal.fallback, bool):
        raise bad(f"{what} reference/fallback are not a count and a true/false")
    if mu is not None and (not isinstance(mu, list) or len(mu) != dim
                           or not all(_is_number(x) and np.isfinite(x) for x in mu)):
        raise bad(f"{what} mu is not a list of {dim} finite numbers")


def _check_section(meta: dict, name: str, key: str, allowed: tuple[str, ...],
                   bad: Callable[[str], IndexFileError]) -> None:
    section = meta.get(name)
    if section is None:
        return
    if not isinstance(section, dict):
        raise bad(f"{name} is {_shown(section)}, not a JSON object")
    if section.get(key) not in allowed:
        raise bad(f"{name} {key} is {_shown(section.get(key))}, not one of {', '.join(allowed)}")


def json_too_deep(text: bytes | str, limit: int = MAX_META_DEPTH) -> bool:
    """Whether lists and objects nest more than ``limit`` deep in JSON text, measured before parsing it (no
    recursion): brackets counted with numpy (an upper bound: a 0.8 MB meta.json in about 2 ms), then, only
    when that bound is over ``limit``, again without the brackets inside strings."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    return _bracket_depth(raw) > limit and _bracket_depth(_JSON_STRING.sub(b"", raw)) > limit


def _bracket_depth(raw: bytes) -> int:
    codes = np.frombuffer(raw, np.uint8)
    step = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int32) - ((codes == 0x5D) | (codes == 0x7D))
    return int(np.cumsum(step).max(initial=0))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A value as a short repr for a message (its type for a container)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
    except FileExistsError:
        raise SearchError(f"{root}: is a file, not an index folder") from None
    except OSError as e:
        raise SearchError(f"{root}: cannot create the index folder ({e.strerror or e})") from None
    with _open_lock(root / ".lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchError(f"{root}: another `sayno index build` is writing this index; try again when it "
                              "has finished") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _open_lock(path: Path) -> BinaryIO:
    """The lock file, created if missing: a regular file, never a link followed or a FIFO waited on."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise IndexFileError(f"{path}: {_open_problem(e, 'lock file')}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IndexFileError(f"{path}: not a regular file, not the lock file an index build writes")
    return os.fdopen(fd, "ab")


def recorded_versions(root: str | os.PathLike) -> list[str]:
    """The version folders this index wrote (``VERSIONS``), oldest first. An index written before sayno
    kept that record counts only its live version as its own. A ``VERSIONS`` that is not a regular file (a
    FIFO, a folder) is an :class:`IndexFileError`; only its first MB is read."""
    root = Path(root)
    try:
        with _open_regular(root / MANIFEST) as f:
            lines = f.read(1 << 20).decode("utf-8", "replace").split()
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
    into the version: a build that streams its vectors to disk never holds them all). coarse: the version's rows
    (:class:`NpyRows`, read through the file) -> (faiss index or :class:`StreamedFlatIndex`, sections for the
    envelope); default the flat fp16 index, streamed to its file (:mod:`sayno.search.ann` builds the others).
    publish: (version name, vectors) -> sections, run
    after every file but ``meta.json`` is written and before the version goes live (the Milvus upload); an
    error there leaves the live version as it was.

    Any failure (a full disk: ENOSPC) is a :class:`SearchError` that leaves the live version as it was and no
    temporary file behind."""
    _faiss()  # fail before any work when faiss is missing
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
        index, sections = coarse(stored) if coarse is not None else (StreamedFlatIndex(stored, shape[1]), {})
        write_faiss(index, tmp / "search.faiss")
        del index
        with open(tmp / "files.npz", "wb") as f:
            files.save(f)
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
