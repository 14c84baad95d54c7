"""The Milvus backend: a version's vectors in a Milvus collection, searched there instead of by faiss.

``sayno index build DIR --out INDEX --backend milvus --uri ./photos.db`` (Milvus Lite: an embedded database in
one file, PyPI ``milvus-lite``) or ``--uri http://host:19530`` (a Milvus server or cluster; the same code).
The index folder stays the source of truth and stays complete (file table, envelope, float32 vectors, the
faiss index of ``--index``): each version is uploaded to its own collection *before* it goes live, so a
Milvus that does not answer fails the build with one line and leaves the live version as it was. The
version's envelope records ``backend: {kind: milvus, uri, collection, index_type, metric}``; a
:class:`sayno.search.Searcher` on such an index sends its query vectors (the Glasses' ``q`` for a negated
query, ``h`` for a plain one) to that collection: :class:`MilvusCoarse` is the coarse pass of
:meth:`sayno.search.store.IndexData.search`, whose shortlist is then scored exactly with the stored vectors,
so scores and ``--json`` are the same in form (and, with an exact Milvus index, in value) as with faiss.

Collections: ``sayno_<hash of the index folder>_<version>``; a build drops this index's collections of
versions that are no longer on disk. Index type: ``FLAT`` (exact) on Milvus Lite, ``AUTOINDEX`` on a server
(Milvus picks, HNSW-like); metric inner product (the vectors are L2-normalised: cosine).

Milvus Lite opens its file from one process at a time: build, then search or serve.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sayno.search.store import IndexData, SearchError

ID_FIELD = "row"
VECTOR_FIELD = "vector"
INSERT_BATCH = 5_000
DEFAULT_TIMEOUT_S = 10.0
MAX_TOPK = 16_384  # Milvus's largest limit per search
REMOTE_SCHEMES = ("http://", "https://", "tcp://", "unix:")


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


def _pymilvus():
    """The pymilvus module (an optional dependency: the milvus extra)."""
    try:
        import pymilvus
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
        raise MilvusError(f"{path.parent}: no such folder for the Milvus Lite file {path.name}")
    return str(path)


def is_lite(uri: str) -> bool:
    return not uri.startswith(REMOTE_SCHEMES)


def collection_name(index_root: str | Path, version: str) -> str:
    """``sayno_<10 hex of the index folder's path>_<version with _ for ->``."""
    return f"{collection_prefix(index_root)}{version.replace('-', '_').replace('.', '_')}"


def collection_prefix(index_root: str | Path) -> str:
    digest = hashlib.sha1(str(Path(index_root).resolve()).encode()).hexdigest()[:10]
    return f"sayno_{digest}_"


def _reason(e: BaseException) -> str:
    msg = getattr(e, "message", None) or str(e)
    return " ".join(str(msg).split())[:160]


class MilvusStore:
    """One connection to Milvus (Lite file or server). Every failure is a one-line :class:`MilvusError`."""

    def __init__(self, uri: str, *, timeout: float = DEFAULT_TIMEOUT_S, token: str = ""):
        pymilvus = _pymilvus()
        self.uri = normalise_uri(uri)
        self.timeout = timeout
        try:
            self.client = pymilvus.MilvusClient(self.uri, token=token, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException subclasses and grpc errors
            kind = MilvusUnavailable if is_outage(e) else MilvusError
            raise kind(f"milvus at {self.uri} did not answer ({_reason(e)})") from None
        self._lock = threading.Lock()

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - see __init__
            if is_outage(e):
                raise MilvusUnavailable(f"milvus at {self.uri} did not answer: {what} failed ({_reason(e)})"
                                        ) from None
            raise MilvusError(f"milvus at {self.uri}: {what} failed ({_reason(e)})") from None

    @property
    def index_type(self) -> str:
        return "FLAT" if is_lite(self.uri) else "AUTOINDEX"

    def upload(self, name: str, vectors: np.ndarray) -> dict:
        """Create collection ``name`` with rows 0..N-1 of (N, D) ``vectors`` (read in batches), index and load
        it. Returns the ``backend`` section for the envelope."""
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
        try:
            for start in range(0, n, INSERT_BATCH):
                block = np.ascontiguousarray(vectors[start:start + INSERT_BATCH], dtype=np.float32)
                rows = [{ID_FIELD: start + i, VECTOR_FIELD: v} for i, v in enumerate(block)]
                self._call("insert", c.insert, name, rows)
            self._call("flush", c.flush, name)
            self._call("load_collection", c.load_collection, name)
        except BaseException:
            self.drop(name)
            raise
        return {"kind": "milvus", "uri": self.uri, "collection": name, "index_type": self.index_type,
                "metric": "IP", "count": n, "dim": dim}

    def dim(self, name: str) -> int:
        """The vector size of collection ``name`` (:class:`MilvusError` when it does not exist)."""
        if not self._call("has_collection", self.client.has_collection, name):
            raise MilvusError(f"milvus at {self.uri} has no collection {name}: rebuild the index with "
                              "--backend milvus")
        desc = self._call("describe_collection", self.client.describe_collection, name)
        for f in desc.get("fields", []):
            if f.get("name") == VECTOR_FIELD:
                return int(f.get("params", {}).get("dim", 0))
        raise MilvusError(f"milvus collection {name} has no {VECTOR_FIELD!r} field: not a sayno collection")

    def search(self, name: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (k',) int64, inner products (k',) float32) of the ``k`` best rows for one (D,) query."""
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(-1))
        with self._lock:  # one request at a time on a Lite connection
            res = self._call("search", self.client.search, name, data=[q], limit=int(min(k, MAX_TOPK)),
                             anns_field=VECTOR_FIELD, output_fields=[ID_FIELD],
                             search_params={"metric_type": "IP"})
        hits = res[0] if len(res) else []
        ids = np.fromiter((int(h[ID_FIELD]) for h in hits), np.int64, len(hits))
        sims = np.fromiter((float(h["distance"]) for h in hits), np.float32, len(hits))
        return ids, sims

    def drop(self, name: str) -> None:
        """Drop collection ``name`` (best effort)."""
        try:
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        except Exception:  # noqa: BLE001, S110 - best effort cleanup
            pass

    def drop_stale(self, index_root: Path, live_versions: set[str]) -> list[str]:
        """Drop this index's collections whose version is not in ``live_versions``; returns their names."""
        prefix = collection_prefix(index_root)
        keep = {collection_name(index_root, v) for v in live_versions}
        names = self._call("list_collections", self.client.list_collections)
        dropped = [n for n in names if n.startswith(prefix) and n not in keep]
        for n in dropped:
            self.drop(n)
        return dropped

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001, S110 - best effort
            pass


@dataclass
class MilvusCoarse:
    """The coarse pass of :meth:`IndexData.search` through Milvus, with faiss's interface:
    ``search((1, D) query, k) -> ((1, k) sims, (1, k) ids)``, ``ntotal``, ``d``."""

    store: MilvusStore
    collection: str
    ntotal: int
    d: int

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, sims = self.store.search(self.collection, query[0], k)
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
    address of the same database; default the recorded one. Checks the collection's vector size against the
    index's (:class:`MilvusError` on a mismatch or a missing collection)."""
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
    data.coarse = MilvusCoarse(store, section["collection"], len(data), data.dim)
    return data


__all__ = ["BACKENDS", "MilvusCoarse", "MilvusError", "MilvusStore", "MilvusUnavailable", "attach",
           "backend_section", "check_backend", "collection_name", "is_lite", "is_outage", "normalise_uri"]
