"""Which faiss index a version gets, and building it: flat (fp16, every vector scanned) or IVF (approximate).

Both are the *coarse* pass of :meth:`sayno.search.store.IndexData.search`: they propose a shortlist of
``max(4k, k + 256)`` rows, which is scored again with the stored float32 vectors, so reported scores are always
exact; only the choice of the shortlist is approximate.

- ``flat``: faiss ``IndexScalarQuantizer`` fp16 over every vector (a full scan, 2*D bytes per image per query).
- ``ivf``: faiss ``IVF<nlist>,SQ8`` with inner product: k-means cells (about sqrt(N), trained on a sample of
  64 per cell), 8-bit scalar quantised codes (D bytes per image), ``nprobe`` = 1/16 of the cells scanned per
  query; a vector's cell is found by an exact scan of the centroids. The cells, not the codes, bound the
  recall once the shortlist is re-scored: PQ fast-scan codes (``PQ32x4fs``) measured the same recall@20,
  faster and 7x smaller, and are the next step for memory (docs/RESULTS.md, "Search at collection scale").
- ``auto``: ``flat`` while a flat scan reads at most :data:`AUTO_FLAT_MAX_BYTES` per query (N*D*2 bytes:
  about 2M images at D=128, 500k at D=512), ``ivf`` beyond. The choice and its reason are reported.

``ivf`` asked for on fewer than :data:`IVF_MIN_VECTORS` vectors falls back to ``flat`` (and says so): too few
points to train the cells, and a scan of that few is fast anyway.

**Incremental updates.** A new version of an IVF index keeps the trained cells of the previous version: kept
rows keep their cell (read from the old index's lists, not computed again), only new vectors are assigned
(:func:`build_coarse` with ``previous`` and ``source``). The cells are trained again when the collection has
grown past :data:`RETRAIN_GROWTH` times the size they were trained on, or shrunk below 1/:data:`RETRAIN_GROWTH`.

**The index remembers what it is**: :func:`build_coarse` returns the ``index`` section of the version's
envelope (``kind``, ``factory``, ``nlist``, ``nprobe``, ``trained_count``, ``trained_sample``, ``training``:
``"new"`` or ``"kept from v-..."``); ``nprobe`` is also stored inside the faiss file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sayno.search.store import SearchError, StreamedFlatIndex, _faiss, coarse_index

KINDS = ("flat", "ivf", "auto")
AUTO_FLAT_MAX_BYTES = 512 * 2**20  # flat while its fp16 scan reads at most this per query
IVF_MIN_VECTORS = 10_000  # fewer: ivf falls back to flat
RETRAIN_GROWTH = 2.0  # retrain the cells past this growth (or shrink) since they were trained
TRAIN_POINTS_PER_LIST = 64  # training sample: this many points per cell (faiss wants at least 39)
ADD_CHUNK = 65536
KMEANS_ITERATIONS = 10


@dataclass(frozen=True)
class IndexChoice:
    """What a version gets: ``kind`` "flat" or "ivf", and ``reason``, one line for the build report."""

    kind: str
    reason: str


def check_kind(kind: object) -> str:
    """``kind`` if it is one of :data:`KINDS`, else :class:`SearchError`."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise SearchError(f"index={kind!r}: use one of {', '.join(KINDS)}")
    return kind


def choose_index(requested: str, n: int, dim: int) -> IndexChoice:
    """The index kind for ``n`` vectors of size ``dim`` when ``requested`` ("flat", "ivf" or "auto")."""
    check_kind(requested)
    scan_mb = n * dim * 2 / 2**20
    if requested == "flat":
        return IndexChoice("flat", "flat index (asked for)")
    if requested == "ivf":
        if n < IVF_MIN_VECTORS:
            return IndexChoice("flat", f"ivf needs at least {IVF_MIN_VECTORS:,} vectors to train its cells, "
                                       f"the collection has {n:,}: using a flat index instead")
        return IndexChoice("ivf", f"ivf index (asked for), {ivf_lists(n)} cells")
    if scan_mb <= AUTO_FLAT_MAX_BYTES / 2**20 or n < IVF_MIN_VECTORS:
        return IndexChoice("flat", f"auto: flat index ({n:,} vectors of D={dim}: a full scan reads "
                                   f"{scan_mb:,.0f} MB per query, at most {AUTO_FLAT_MAX_BYTES >> 20} MB)")
    return IndexChoice("ivf", f"auto: ivf index with {ivf_lists(n)} cells ({n:,} vectors of D={dim}: a full "
                              f"scan would read {scan_mb:,.0f} MB per query, over {AUTO_FLAT_MAX_BYTES >> 20} MB)")


def ivf_lists(n: int) -> int:
    """Cells for ``n`` vectors: about ``sqrt(n)`` rounded to a power of two, 64 to 16384 (1M -> 1024,
    10M -> 4096)."""
    return int(min(16384, max(64, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))))


def default_nprobe(nlist: int) -> int:
    """Cells scanned per query: 1/16 of them, at least 16 (measured to give recall@20 >= 0.95 with the exact
    re-scoring on clustered synthetic data, for queries that resemble the images; docs/RESULTS.md)."""
    return int(min(nlist, max(16, nlist // 16)))


# ------------------------------------------------------------------------------------------ building
def build_coarse(vectors: np.ndarray, requested: str, *, previous: object | None = None,
                 previous_info: dict | None = None, previous_version: str = "", source: np.ndarray | None = None,
                 seed: int = 0, stream_flat: bool = False) -> tuple[object, dict, str]:
    """The coarse faiss index over (N, D) float32 ``vectors`` (a memory map is fine: read in chunks).

    previous / previous_info / previous_version: the last version's faiss index, its ``index`` section and
    name; source: (N,) int64, the previous row of each new row (-1 for a new vector). With an IVF previous
    index whose cells still fit (:data:`RETRAIN_GROWTH`), its cells are kept and kept rows keep their cell.
    Returns ``(index, info, reason)``: info is the ``index`` section for the envelope, reason one line.
    stream_flat: a flat index is returned as a :class:`sayno.search.store.StreamedFlatIndex` (written to its
    file chunk by chunk by ``write_version``, never held in memory) instead of a faiss index.
    """
    n, dim = int(vectors.shape[0]), int(vectors.shape[1])
    choice = choose_index(requested, n, dim)
    if choice.kind == "flat":
        index = StreamedFlatIndex(vectors, dim) if stream_flat else coarse_index(vectors, dim)
        return index, {"kind": "flat", "factory": "SQfp16"}, choice.reason
    reuse = _reusable(previous, previous_info, n, dim)
    if reuse is not None:
        index = _empty_like(previous)
        _add_preassigned(index, vectors, _assignments(previous, previous_info, source, vectors))
        info = {**previous_info, "training": f"kept from {previous_version}" if previous_version else "kept"}
        return index, info, choice.reason + f", cells kept from the previous version ({reuse})"
    index, info = _train_ivf(vectors, seed)
    _add_chunks(index.add, vectors)
    return index, info, choice.reason


def _reusable(previous: object | None, info: dict | None, n: int, dim: int) -> str | None:
    """Why the previous IVF index's cells can be kept, or None when they must be trained again."""
    if previous is None or not info or info.get("kind") != "ivf" or getattr(previous, "d", None) != dim:
        return None
    trained = int(info.get("trained_count", 0))
    if trained <= 0 or not trained / RETRAIN_GROWTH <= n <= trained * RETRAIN_GROWTH:
        return None
    return f"trained on a collection of {trained:,}, now {n:,}: within {RETRAIN_GROWTH:g}x"


def _train_ivf(vectors: np.ndarray, seed: int) -> tuple[object, dict]:
    faiss = _faiss()
    n, dim = vectors.shape
    nlist = ivf_lists(n)
    # an exact (flat) quantiser: an HNSW graph over the centroids put vectors in the wrong cell (recall@20 0.76
    # against 1.00 at 2M vectors, 4096 cells) and was not faster to fill (faiss assigns with BLAS)
    factory = f"IVF{nlist},SQ8"
    index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = KMEANS_ITERATIONS
    take = min(n, TRAIN_POINTS_PER_LIST * nlist)
    rows = np.sort(np.random.default_rng(seed).choice(n, take, replace=False))
    index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    nprobe = default_nprobe(nlist)
    faiss.extract_index_ivf(index).nprobe = nprobe
    return index, {"kind": "ivf", "factory": factory, "nlist": nlist, "nprobe": nprobe, "trained_count": n,
                   "trained_sample": int(take), "training": "new"}


def _add_chunks(add: Callable[[np.ndarray], None], vectors: np.ndarray) -> None:
    for start in range(0, len(vectors), ADD_CHUNK):
        add(np.ascontiguousarray(vectors[start:start + ADD_CHUNK], dtype=np.float32))


def _empty_like(index: object) -> object:
    """A trained copy of ``index`` with no vectors (same cells, same quantiser, same nprobe)."""
    faiss = _faiss()
    empty = faiss.clone_index(index)
    empty.reset()
    return empty


def list_of_rows(index: object) -> np.ndarray:
    """(ntotal,) int64: the cell of every row of an IVF ``index`` (row ids are the ids stored in the lists)."""
    faiss = _faiss()
    ivf = faiss.extract_index_ivf(index)
    out = np.full(ivf.ntotal, -1, np.int64)
    lists = ivf.invlists
    for cell in range(ivf.nlist):
        size = lists.list_size(cell)
        if size:
            ids = faiss.rev_swig_ptr(lists.get_ids(cell), size).copy()
            out[ids] = cell
    if (out < 0).any():
        raise SearchError("the IVF index does not hold every row: rebuild the index (sayno index build --rebuild)")
    return out


def _assignments(previous: object, info: dict, source: np.ndarray | None, vectors: np.ndarray) -> np.ndarray:
    """(N,) int64 cell per new row: a kept row's old cell, the nearest cell for a new vector."""
    n = len(vectors)
    cells = np.full(n, -1, np.int64)
    if source is not None:
        source = np.asarray(source, np.int64)
        if source.shape != (n,):
            raise SearchError(f"source rows of shape {source.shape} for {n} vectors")
        old = list_of_rows(previous)
        known = source >= 0
        cells[known] = old[source[known]]
    quantizer = _faiss().extract_index_ivf(previous).quantizer
    todo = np.flatnonzero(cells < 0)
    for start in range(0, len(todo), ADD_CHUNK):
        rows = todo[start:start + ADD_CHUNK]
        _, nearest = quantizer.search(np.ascontiguousarray(vectors[rows], dtype=np.float32), 1)
        cells[rows] = nearest[:, 0]
    return cells


def _add_preassigned(index: object, vectors: np.ndarray, cells: np.ndarray) -> None:
    """Add every row of ``vectors`` (ids 0..N-1) to its given cell, in chunks."""
    faiss = _faiss()
    ivf = faiss.extract_index_ivf(index)
    for start in range(0, len(vectors), ADD_CHUNK):
        x = np.ascontiguousarray(vectors[start:start + ADD_CHUNK], dtype=np.float32)
        ids = np.arange(start, start + len(x), dtype=np.int64)
        assign = np.ascontiguousarray(cells[start:start + len(x)], dtype=np.int64)
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))


def index_info(data: object) -> dict:
    """The ``index`` section of a loaded version (an older version without one: flat fp16)."""
    sections = getattr(getattr(data, "envelope", None), "sections", {}) or {}
    return dict(sections.get("index") or {"kind": "flat", "factory": "SQfp16"})


__all__ = ["AUTO_FLAT_MAX_BYTES", "IVF_MIN_VECTORS", "KINDS", "RETRAIN_GROWTH", "IndexChoice", "build_coarse",
           "check_kind", "choose_index", "default_nprobe", "index_info", "ivf_lists", "list_of_rows"]
