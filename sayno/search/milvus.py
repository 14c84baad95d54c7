"""The Milvus backend: a version's vectors in a Milvus collection, searched there instead of by faiss.

``sayno index build DIR --out INDEX --backend milvus --uri ./photos.db`` (Milvus Lite: an embedded database in
one file, PyPI ``milvus-lite``) or ``--uri http://host:19530`` (a Milvus server or cluster; the same code).
The index folder stays the source of truth and stays complete (file table, envelope, float32 vectors, the
faiss index of ``--index``). The version's envelope records ``backend: {kind: milvus, uri, collection,
index_type, metric, key, count, sent}``; a :class:`sayno.search.Searcher` on such an index sends its query
vectors (the Glasses' ``q`` for a negated query, ``h`` for a plain one) to that collection:
:class:`MilvusCoarse` is the coarse pass of :meth:`sayno.search.store.IndexData.search`, whose shortlist is
then scored exactly with the stored vectors, so scores and ``--json`` are the same in form (and, with an exact
Milvus index, in value) as with faiss.

**Rows are contents.** A collection's primary key is a 63-bit key of the image's sha1 (``key: sha1``; one row
per distinct content), so a row means the same vector in every version. A first build (or ``--rebuild``, another
URI, a collection that no longer matches) uploads every content to a new collection before the version goes
live. An update *upserts* the contents the new version adds before it goes live and *deletes* the contents it
no longer holds after it went live, so the version being replaced keeps every row it needs until then; the
envelope's ``sent`` counts the rows sent. A collection whose row count is not what the previous version left
(an interrupted build, a hand edit) is uploaded again in full.

**On open** (every :func:`attach`, so in every process and after a Milvus Lite file is reopened) the collection
is loaded when it is not (Milvus Lite opens a file's collections *released*); a search that finds it released
loads it and tries once more.

**Errors** are one line (:class:`MilvusError`, :class:`MilvusUnavailable` for an outage). pymilvus,
milvus-lite and grpc log tracebacks through :mod:`logging`; while sayno calls them their loggers are captured (and
restored afterwards), and what they logged names the cause: a Milvus Lite file held by another process, a
folder that cannot be written (read-only), a full disk.

Collections: ``sayno_<hash of the index folder>_<version of its first upload>``; a build drops this index's
collections that no version on disk names. Index type: ``FLAT`` (exact) on Milvus Lite, ``AUTOINDEX`` on a
server (Milvus picks, HNSW-like); metric inner product (the vectors are L2-normalised: cosine).

Milvus Lite opens its file from one process at a time: build, then search or serve.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sayno.search.store import IndexData, SearchError

ID_FIELD = "row"
VECTOR_FIELD = "vector"
INSERT_BATCH = 5_000
DELETE_BATCH = 1_000
DEFAULT_TIMEOUT_S = 10.0
MAX_TOPK = 16_384  # Milvus's largest limit per search
REMOTE_SCHEMES = ("http://", "https://", "tcp://", "unix:")
KEY_SHA1 = "sha1"  # primary key: 63 bits of the content's sha1 (one row per distinct content)
KEY_ROW = "row"  # primary key: the row of the version (collections written before keys were contents)
LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": 0}
LOGGERS = ("pymilvus", "milvus_lite", "grpc")  # the libraries whose logging sayno captures while calling them


class MilvusError(SearchError):
    """Milvus did not answer, refused a request, or holds something other than this index expects."""


class MilvusUnavailable(MilvusError):
    """Milvus could not be reached (connection refused or lost, timed out): an outage, not bad input (the HTTP
    API answers 503)."""


_OUTAGE_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED")  # grpc status codes
_OUTAGE_TYPES = ("MilvusUnavailableException", "ConnectError", "ConnectionNotExistException")  # pymilvus
_CONNECT_FAILED = 2  # pymilvus Status.CONNECT_FAILED


def is_outage(error: BaseException) -> bool:
    """Whether an error raised by pymilvus (or an error in its cause chain) says Milvus could not be reached:
    a connection or timeout error, pymilvus' unavailable/connect errors, grpc UNAVAILABLE or
    DEADLINE_EXCEEDED (also as the code of a ``MilvusException`` after pymilvus' retries ran out)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        names = {c.__name__ for c in type(e).__mro__}
        if isinstance(e, (ConnectionError, TimeoutError)) or names & set(_OUTAGE_TYPES):
            return True
        code = getattr(e, "code", None)
        if callable(code):  # grpc.RpcError.code()
            try:
                code = code()
            except Exception:  # noqa: BLE001 - not grpc's
                code = None
        if getattr(code, "name", None) in _OUTAGE_STATUS:
            return True
        if "MilvusException" in names and code == _CONNECT_FAILED:
            return True
        e = e.__cause__ or e.__context__
    return False


# ------------------------------------------------------------------------------------------ their logs
class _Captured(logging.Handler):
    """Keeps the records logged in each thread while that thread is inside :func:`quiet_milvus`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        records = getattr(self.local, "records", None)
        if records is not None:
            records.append(record)


_CAPTURE = _Captured()
_capture_lock = threading.Lock()
_capture_depth = 0
_saved: dict[str, tuple[list[logging.Handler], bool, bool]] = {}


def _library_loggers() -> list[logging.Logger]:
    """The loggers of pymilvus and milvus-lite that exist now (their roots always)."""
    names = {n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in LOGGERS} | set(LOGGERS)
    return [logging.getLogger(n) for n in sorted(names)]


@contextlib.contextmanager
def quiet_milvus() -> Iterator[list[logging.LogRecord]]:
    """While the block runs, pymilvus' and milvus-lite's loggers write nothing (their tracebacks would come
    before sayno's one-line error); yields the records this thread logged through them (to find the cause of
    an error). Their handlers and ``propagate`` are restored when the last such block (of any thread) ends."""
    global _capture_depth
    with _capture_lock:
        if _capture_depth == 0:
            for log in _library_loggers():
                _saved[log.name] = (list(log.handlers), log.propagate, log.disabled)
                log.handlers = [_CAPTURE] if log.name in LOGGERS else []
                log.propagate = log.name not in LOGGERS
                log.disabled = False
        _capture_depth += 1
    outer = getattr(_CAPTURE.local, "records", None)
    records: list[logging.LogRecord] = []
    _CAPTURE.local.records = records
    try:
        yield records
    finally:
        if outer is not None:
            outer.extend(records)
        _CAPTURE.local.records = outer
        with _capture_lock:
            _capture_depth -= 1
            if _capture_depth == 0:
                for name, (handlers, propagate, disabled) in _saved.items():
                    log = logging.getLogger(name)
                    log.handlers, log.propagate, log.disabled = handlers, propagate, disabled
                _saved.clear()


def _chain(error: BaseException | None, records: list[logging.LogRecord]) -> list[BaseException]:
    """``error``, its causes, and the exceptions (with their causes) the libraries logged."""
    out: list[BaseException] = []
    starts = [error] + [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1] is not None]
    for e in starts:
        while e is not None and all(e is not o for o in out):
            out.append(e)
            e = e.__cause__ or e.__context__
    return out


_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _cause(uri: str, error: BaseException | None, records: list[logging.LogRecord], opening: bool = False) -> str:
    """What the failure was, when the errors and log records say (else ''): the Milvus Lite file is held by
    another process, its folder cannot be written, the disk is full, or (``opening``) the file cannot be
    created there."""
    chain = _chain(error, records)
    texts = [str(e) for e in chain] + [r.getMessage() for r in records]
    where = Path(uri).parent if is_lite(uri) else None
    if any(type(e).__name__ == "DataDirLockedError" for e in chain) or any(
            "holds the lock" in t for t in texts):
        return (f"the Milvus Lite file {uri} is held by another process (a build, search or serve using it "
                "now; Milvus Lite opens a file from one process at a time): wait for it, or stop it")
    for e in chain:
        if isinstance(e, OSError) and e.errno in _FULL:
            return f"no space left to write {getattr(e, 'filename', None) or uri} ({e.strerror}): free some disk"
        if isinstance(e, OSError) and e.errno in _READ_ONLY and where is not None:
            return (f"cannot write the folder {where} of the Milvus Lite file ({e.strerror}): the folder is "
                    "read-only; give a --uri in a folder you can write")
    if opening and where is not None:
        for e in chain:
            if isinstance(e, OSError) and e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                return f"cannot create the Milvus Lite file in the folder {where} ({e.strerror})"
    low = " ".join(texts).lower()
    if "no space left" in low or "errno 28" in low or "file too large" in low:
        return f"no space left to write {uri}: free some disk"
    if where is not None and ("read-only file system" in low or "permission denied" in low
                              or "operation not permitted" in low):
        return (f"cannot write the folder {where} of the Milvus Lite file: the folder is read-only; give a --uri "
                "in a folder you can write")
    return ""


def _pymilvus():
    """The pymilvus module (an optional dependency: the milvus extra)."""
    try:
        import pymilvus  # not inside quiet_milvus: its import configures its own loggers, which must stay
    except ImportError as e:
        raise MilvusError("pymilvus is not installed: pip install 'sayno[milvus]'") from e
    return pymilvus


def normalise_uri(uri: str) -> str:
    """A server URI as given; a Milvus Lite file as an absolute path ending in ``.db`` (its folder must exist).
    :class:`MilvusError` for anything else."""
    if not isinstance(uri, str) or not uri.strip():
        raise MilvusError(f"uri={uri!r}: give a Milvus Lite file (./photos.db) or a server (http://host:19530)")
    uri = uri.strip()
    if uri.startswith(REMOTE_SCHEMES):
        return uri
    if "://" in uri:
        raise MilvusError(f"{uri}: a Milvus URI starts with http://, https://, tcp:// or unix:, or is a .db file")
    path = Path(uri).expanduser().resolve()
    if path.suffix != ".db":
        raise MilvusError(f"{uri}: a Milvus Lite database is a file ending in .db (e.g. ./photos.db)")
    if not path.parent.is_dir():
        what = "is a file, not a folder," if path.parent.exists() else "no such folder"
        raise MilvusError(f"{path.parent}: {what} for the Milvus Lite file {path.name}")
    return str(path)


def is_lite(uri: str) -> bool:
    return not uri.startswith(REMOTE_SCHEMES)


def collection_name(index_root: str | Path, version: str) -> str:
    """``sayno_<10 hex of the index folder's path>_<version with _ for ->``."""
    return f"{collection_prefix(index_root)}{version.replace('-', '_').replace('.', '_')}"


def collection_prefix(index_root: str | Path) -> str:
    digest = hashlib.sha1(str(Path(index_root).resolve()).encode()).hexdigest()[:10]
    return f"sayno_{digest}_"


def content_keys(sha1: np.ndarray) -> np.ndarray | None:
    """(N,) int64 primary keys of (N, 20) uint8 sha1 digests: the three 8-byte words XOR-ed, top bit cleared
    (non-negative; 63 bits). None when a row has no digest (all zeros): such an index keys rows by number."""
    raw = np.ascontiguousarray(sha1, np.uint8).reshape(-1, 20)
    if len(raw) and not raw.any(axis=1).all():
        return None
    padded = np.zeros((len(raw), 24), np.uint8)
    padded[:, :20] = raw
    words = padded.view("<u8")
    return ((words[:, 0] ^ words[:, 1] ^ words[:, 2]) & np.uint64(0x7FFF_FFFF_FFFF_FFFF)).astype(np.int64)


def _reason(e: BaseException) -> str:
    msg = getattr(e, "message", None) or str(e)
    return " ".join(str(msg).split())[:160]


def _is_released(e: BaseException) -> bool:
    text = _reason(e).lower()
    return "released" in text or "not loaded" in text or "call load()" in text


class MilvusStore:
    """One connection to Milvus (Lite file or server). Every failure is a one-line :class:`MilvusError`;
    ``sent`` counts the rows this connection inserted, upserted and deleted."""

    def __init__(self, uri: str, *, timeout: float = DEFAULT_TIMEOUT_S, token: str = ""):
        pymilvus = _pymilvus()
        self.uri = normalise_uri(uri)
        self.timeout = timeout
        self.sent = {"insert": 0, "upsert": 0, "delete": 0}
        # Milvus Lite serves its file from this process: no keepalive pings (its gRPC server answers a client
        # that pings while idle with GOAWAY "too_many_pings", and the next call on that channel fails)
        extra = {"grpc_options": LITE_GRPC_OPTIONS} if is_lite(self.uri) else {}
        error = None
        with quiet_milvus() as records:
            for attempt in range(2 if extra else 1):
                try:
                    self.client = pymilvus.MilvusClient(self.uri, token=token, timeout=timeout, **extra)
                    error = None
                    break
                except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException subclasses, grpc errors
                    error = e
                    if not is_outage(e):
                        break
        if error is not None:
            cause = _cause(self.uri, error, records, opening=True)
            if cause:
                raise MilvusError(f"milvus at {self.uri} cannot be opened: {cause}") from None
            kind = MilvusUnavailable if is_outage(error) else MilvusError
            raise kind(f"milvus at {self.uri} did not answer ({_reason(error)})") from None
        self._lock = threading.Lock()

    def _call(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` with their logs captured; a failure is one line naming ``what``. On Milvus
        Lite a dropped connection (its gRPC server sends GOAWAY to a channel left idle) is tried once more."""
        tries = 2 if is_lite(self.uri) else 1
        with quiet_milvus() as records:
            for attempt in range(tries):
                try:
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - see __init__
                    error = e
                    if attempt + 1 == tries or not is_outage(e):
                        break
        cause = _cause(self.uri, error, records)
        if cause:
            raise MilvusError(f"milvus at {self.uri}: {what} failed: {cause}") from None
        if is_outage(error):
            raise MilvusUnavailable(f"milvus at {self.uri} did not answer: {what} failed ({_reason(error)})"
                                    ) from None
        raise MilvusError(f"milvus at {self.uri}: {what} failed ({_reason(error)})") from None

    @property
    def index_type(self) -> str:
        return "FLAT" if is_lite(self.uri) else "AUTOINDEX"

    def upload(self, name: str, vectors: np.ndarray, keys: np.ndarray | None = None) -> dict:
        """Create collection ``name`` holding (N, D) ``vectors`` (read in batches), index and load it.

        keys: (N,) int64 primary keys (:func:`content_keys`; rows with the same key hold the same vector and
        are sent once), or None: rows 0..N-1. Returns the ``backend`` section for the envelope."""
        pymilvus = _pymilvus()
        n, dim = int(vectors.shape[0]), int(vectors.shape[1])
        c = self.client
        if self._call("has_collection", c.has_collection, name):
            self._call("drop_collection", c.drop_collection, name)
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, pymilvus.DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, pymilvus.DataType.FLOAT_VECTOR, dim=dim)
        params = c.prepare_index_params()
        params.add_index(field_name=VECTOR_FIELD, index_type=self.index_type, metric_type="IP")
        self._call("create_collection", c.create_collection, name, schema=schema, index_params=params)
        if keys is None:
            ids, rows = np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64)
        else:
            ids, rows = np.unique(np.asarray(keys, np.int64), return_index=True)
        try:
            self._send("insert", name, ids, rows, vectors)
            self._call("flush", c.flush, name)
            self.ensure_loaded(name)
        except BaseException:
            self.drop(name)
            raise
        return {"kind": "milvus", "uri": self.uri, "collection": name, "index_type": self.index_type,
                "metric": "IP", "key": KEY_ROW if keys is None else KEY_SHA1, "count": len(ids), "dim": dim,
                "sent": {"insert": len(ids), "upsert": 0, "delete": 0}}

    def _send(self, how: str, name: str, ids: np.ndarray, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or upsert primary keys ``ids`` with the vectors of ``rows`` (both (M,)), in batches."""
        fn = self.client.insert if how == "insert" else self.client.upsert
        for start in range(0, len(ids), INSERT_BATCH):
            part = np.asarray(rows[start:start + INSERT_BATCH], np.int64)
            block = np.ascontiguousarray(vectors[part], dtype=np.float32)
            batch = [{ID_FIELD: int(i), VECTOR_FIELD: v} for i, v in zip(ids[start:start + INSERT_BATCH], block)]
            self._call(how, fn, name, batch)
            self.sent[how] += len(batch)

    def upsert(self, name: str, keys: np.ndarray, vectors: np.ndarray) -> int:
        """Upsert rows with (M,) int64 ``keys`` and their (M, D) ``vectors``; returns M."""
        keys = np.asarray(keys, np.int64)
        self._send("upsert", name, keys, np.arange(len(keys)), np.asarray(vectors, np.float32))
        if len(keys):
            self._call("flush", self.client.flush, name)
        return len(keys)

    def delete(self, name: str, keys: np.ndarray) -> int:
        """Delete the rows with (M,) int64 primary ``keys``; returns M."""
        keys = np.asarray(keys, np.int64)
        for start in range(0, len(keys), DELETE_BATCH):
            part = [int(k) for k in keys[start:start + DELETE_BATCH]]
            self._call("delete", self.client.delete, name, ids=part)
            self.sent["delete"] += len(part)
        if len(keys):
            self._call("flush", self.client.flush, name)
        return len(keys)

    def count(self, name: str) -> int:
        """The number of rows collection ``name`` holds now (deleted rows not counted)."""
        self.ensure_loaded(name)
        res = self._call("count", self.client.query, name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def has(self, name: str) -> bool:
        return bool(self._call("has_collection", self.client.has_collection, name))

    def ensure_loaded(self, name: str) -> None:
        """Load collection ``name`` unless it is loaded (Milvus Lite opens a file's collections released)."""
        state = self._call("get_load_state", self.client.get_load_state, name)
        state = state.get("state") if isinstance(state, dict) else state
        if getattr(state, "name", str(state)) != "Loaded":
            self._call("load_collection", self.client.load_collection, name)

    def dim(self, name: str) -> int:
        """The vector size of collection ``name`` (:class:`MilvusError` when it does not exist)."""
        if not self.has(name):
            raise MilvusError(f"milvus at {self.uri} has no collection {name}: rebuild the index with "
                              "--backend milvus")
        desc = self._call("describe_collection", self.client.describe_collection, name)
        for f in desc.get("fields", []):
            if f.get("name") == VECTOR_FIELD:
                return int(f.get("params", {}).get("dim", 0))
        raise MilvusError(f"milvus collection {name} has no {VECTOR_FIELD!r} field: not a sayno collection")

    def search(self, name: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys (k',) int64, inner products (k',) float32) of the ``k`` best rows for one (D,) query. A
        collection found released (its Milvus Lite file reopened) is loaded and searched once more."""
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(-1))
        kwargs = {"data": [q], "limit": int(min(k, MAX_TOPK)), "anns_field": VECTOR_FIELD,
                  "output_fields": [ID_FIELD], "search_params": {"metric_type": "IP"}}
        with self._lock:  # one request at a time on a Lite connection
            try:
                res = self._call("search", self.client.search, name, **kwargs)
            except MilvusError as e:
                if isinstance(e, MilvusUnavailable) or not _is_released(e):
                    raise
                self.ensure_loaded(name)
                res = self._call("search", self.client.search, name, **kwargs)
        hits = res[0] if len(res) else []
        ids = np.fromiter((int(h[ID_FIELD]) for h in hits), np.int64, len(hits))
        sims = np.fromiter((float(h["distance"]) for h in hits), np.float32, len(hits))
        return ids, sims

    def drop(self, name: str) -> None:
        """Drop collection ``name`` (best effort)."""
        with quiet_milvus(), contextlib.suppress(Exception):
            if self.client.has_collection(name):
                self.client.drop_collection(name)

    def drop_stale(self, index_root: Path, keep: set[str]) -> list[str]:
        """Drop this index's collections not named in ``keep``; returns their names."""
        prefix = collection_prefix(index_root)
        names = self._call("list_collections", self.client.list_collections)
        dropped = [n for n in names if n.startswith(prefix) and n not in keep]
        for n in dropped:
            self.drop(n)
        return dropped

    def close(self) -> None:
        with quiet_milvus(), contextlib.suppress(Exception):
            self.client.close()


class KeyRows:
    """Primary keys -> rows of one version (rows with the same content share a key): sorted keys and order."""

    def __init__(self, keys: np.ndarray):
        self.order = np.argsort(keys, kind="stable")
        self.sorted = np.asarray(keys, np.int64)[self.order]

    def rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows (M',) int64 holding any of (M,) ``keys``, in the keys' order; counts (M,) rows per key: 0 for
        a key this version does not hold)."""
        keys = np.asarray(keys, np.int64)
        lo = np.searchsorted(self.sorted, keys, "left")
        counts = np.searchsorted(self.sorted, keys, "right") - lo
        starts = np.repeat(lo, counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.order[starts + within].astype(np.int64), counts


@dataclass
class MilvusCoarse:
    """The coarse pass of :meth:`IndexData.search` through Milvus, with faiss's interface:
    ``search((1, D) query, k) -> ((1, k') sims, (1, k') row ids)``, ``ntotal``, ``d``. keys: the version's
    content keys (a collection keyed by sha1: each hit is every row of that content; contents another version
    added are left out), None for a collection keyed by row."""

    store: MilvusStore
    collection: str
    ntotal: int
    d: int
    keys: KeyRows | None = None

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, sims = self.store.search(self.collection, query[0], k)
        if self.keys is not None:
            ids, counts = self.keys.rows(ids)
            sims = np.repeat(sims, counts)
        return sims[None, :], ids[None, :]


def backend_section(data: IndexData) -> dict:
    """The ``backend`` section of a version (``{"kind": "faiss"}`` when it has none)."""
    return dict(data.envelope.sections.get("backend") or {"kind": "faiss"})


BACKENDS = ("faiss", "milvus")


def check_backend(backend: object, uri: object) -> None:
    """:class:`SearchError` for a backend other than faiss/milvus, or a URI without the milvus backend."""
    if backend is not None and backend not in BACKENDS:
        raise SearchError(f"backend={backend!r}: use faiss or milvus")
    if uri is not None and backend != "milvus":
        raise SearchError("--uri is for --backend milvus")
    if backend == "milvus" and uri is not None:
        normalise_uri(uri)  # type: ignore[arg-type]


def attach(data: IndexData, stores: dict[str, MilvusStore], backend: str | None = None,
           uri: str | None = None) -> IndexData:
    """Make ``data`` search through Milvus when its version was uploaded there (else return it as it is).

    stores: open connections by URI (reused across versions). backend: None = as the index records; "faiss" =
    the local faiss index even for a version uploaded to Milvus; "milvus" = Milvus or an error. uri: another
    address of the same database; default the recorded one. Loads the collection when it is not loaded and
    checks its vector size against the index's (:class:`MilvusError` on a mismatch or a missing collection)."""
    check_backend(backend, uri)
    section = backend_section(data)
    if backend == "faiss":
        return data
    if section.get("kind") != "milvus":
        if backend == "milvus":
            raise MilvusError(f"index version {data.version} is searched by faiss, it was never uploaded to "
                              "Milvus: build it with --backend milvus --uri ...")
        return data
    where = normalise_uri(uri or section["uri"])
    store = stores.get(where)
    if store is None:
        store = stores[where] = MilvusStore(where)
    dim = store.dim(section["collection"])
    if dim != data.dim:
        raise MilvusError(f"milvus collection {section['collection']} holds vectors of size {dim}, the index "
                          f"{data.dim}: rebuild the index with --backend milvus")
    store.ensure_loaded(section["collection"])
    keys = None
    if section.get("key") == KEY_SHA1:
        found = content_keys(data.files.sha1.raw)
        if found is None:
            raise MilvusError(f"index version {data.version} has rows without a sha1 but its Milvus collection is "
                              "keyed by content: rebuild the index with --backend milvus")
        keys = KeyRows(found)
    data.coarse = MilvusCoarse(store, section["collection"], len(data), data.dim, keys)
    return data


# ------------------------------------------------------------------------------------------ builds
class MilvusSync:
    """A build's side of Milvus: :meth:`publish` before the new version goes live (a full upload, or an upsert
    of the contents it adds), :meth:`finish` after (delete the contents it dropped, drop stale collections).

    previous: the ``backend`` section and content keys of the version being replaced (None: upload in full)."""

    def __init__(self, store: MilvusStore, index_root: Path, previous: tuple[dict, np.ndarray | None] | None):
        self.store, self.root, self.previous = store, index_root, previous
        self.pending: tuple[str, np.ndarray] | None = None  # (collection, keys) to delete once live
        self.notes: list[str] = []

    def _reusable(self, keys: np.ndarray | None) -> tuple[str, np.ndarray] | None:
        """(collection, previous keys) when the previous version's collection can be updated in place."""
        if self.previous is None or keys is None:
            return None
        section, old_keys = self.previous
        if (section.get("kind") != "milvus" or section.get("key") != KEY_SHA1 or old_keys is None
                or section.get("uri") != self.store.uri):
            return None
        name = section.get("collection", "")
        if not name or not self.store.has(name):
            self.notes.append(f"milvus: collection {name} is gone; uploading every row")
            return None
        return name, old_keys

    def publish(self, version: str, vectors: np.ndarray, keys: np.ndarray | None) -> dict:
        """The ``backend`` section of the new version after its rows are in Milvus. vectors: (N, D) rows;
        keys: (N,) content keys (:func:`content_keys`) or None."""
        reuse = self._reusable(keys)
        if reuse is not None:
            name, old_keys = reuse
            old = np.unique(old_keys)
            new, first = np.unique(keys, return_index=True)
            have = self.store.count(name)
            if have == len(old) or have == len(np.union1d(old, new)):
                add = ~np.isin(new, old)
                before = self.store.sent["upsert"]
                self.store.upsert(name, new[add], vectors[first[add]])
                gone = np.setdiff1d(old, new)
                if self.store.count(name) == len(np.union1d(old, new)):
                    self.pending = (name, gone)
                    upserted = self.store.sent["upsert"] - before
                    self.notes.append(f"milvus: {upserted} rows upserted, {len(gone)} to delete once live")
                    section = dict(self.previous[0])
                    section.update(count=len(new), sent={"insert": 0, "upsert": upserted, "delete": len(gone)})
                    return section
            self.notes.append(f"milvus: collection {name} holds {have} rows, not the {len(old)} of the version "
                              "before; uploading every row")
        section = self.store.upload(collection_name(self.root, version), vectors, keys)
        self.notes.append(f"milvus: {section['count']} rows uploaded")
        return section

    def finish(self, keep: set[str]) -> None:
        """After the new version went live: delete the contents it dropped, then this index's collections
        no version in ``keep`` (collection names) uses (best effort: the version is live already)."""
        with contextlib.suppress(SearchError):
            if self.pending is not None:
                self.store.delete(*self.pending)
            self.store.drop_stale(self.root, keep)


__all__ = ["BACKENDS", "KeyRows", "MilvusCoarse", "MilvusError", "MilvusStore", "MilvusSync", "MilvusUnavailable",
           "attach", "backend_section", "check_backend", "collection_name", "content_keys", "is_lite", "is_outage",
           "normalise_uri", "quiet_milvus"]
