"""Searching an index: plain CLIP for affirmative queries, the CLIPGlasses score for negated ones.

Routing (per query): the Glasses' detector finds the negated phrases. None (or no Glasses) -> plain CLIP,
``s*cos(h, I)``, one faiss inner-product search with ``h``. Some -> the caption-only Glasses score
(docs/GLASSES.md): ``S = s*(q.I + c)`` with ``q, c`` from :meth:`Glasses.query_vectors`, so faiss searches with
``q`` (the index re-scores its candidates with the float32 features: exact values). The clamped reference score
is not linear in ``I``: a shortlist by the base is scored with :meth:`Glasses.score_matrix`. ``rerank=k``
re-orders the top k with the image-conditioned ``lambda`` (:meth:`Glasses.rerank`).

    >>> s = Searcher("runs/index", threads=1)             # doctest: +SKIP
    >>> s.search("a beach with no people", k=20).hits     # doctest: +SKIP

Threads: one query is small work; ``Searcher(threads=1)`` (what ``sayno search`` and ``sayno serve`` use) runs
each search with one torch and one faiss thread (:func:`sayno.runtime.torch_threads`, restored afterwards).
On the shared 2-core machine that answered a negated query over 1M images in about half the time of the
defaults, while faiss on one thread with torch on two was many times slower (docs/RESULTS.md, "Search and
index"). ``threads=None`` (the default) leaves the libraries' settings alone.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sayno.backbones import load
from sayno.backbones.base import TruncationWarning
from sayno.base.scoring import TextBatch
from sayno.cliutil import first_line
from sayno.glasses import Calibration, TrainingFreeGlasses, load_glasses
from sayno.glasses.analysis import analyse
from sayno.glasses.training_free import identity as training_free_identity
from sayno.glasses.training_free import is_training_free
from sayno.runtime import torch_threads
from sayno.search.ann import index_info
from sayno.search.build import check_compatible, file_sha1
from sayno.search.milvus import MilvusCoarse, attach, check_backend
from sayno.search.store import IndexData, IndexMismatch, SearchError, current_version, read_index

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MODES = ("auto", "clip")


@dataclass
class Hit:
    """One result: ``path`` relative to the indexed folder, ``file`` absolute, ``score`` (higher = better;
    logits on CLIP's scale), ``refined``: scored with the image-conditioned ``lambda``, ``sha1``: of the
    file's bytes when it was indexed (the id ``sayno serve`` serves it by)."""

    rank: int
    path: str
    file: str
    score: float
    refined: bool = False
    sha1: str = ""


@dataclass
class SearchResult:
    """Hits of one query and how they were scored. ``method``: "clip" or "glasses"; ``phrases``: the negated
    phrases and their caption-only ``lambda``; ``notes``: anything the user should know (truncation, ...)."""

    query: str
    method: str
    hits: list[Hit]
    negated: bool = False
    phrases: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    index_size: int = 0
    version: str = ""
    ms: float = 0.0
    glasses: str = ""  # the index's Glasses: "CLIPGlasses", "CLIPGlasses (training-free)" or "" (none)

    def to_dict(self) -> dict:
        return asdict(self)


def validate_query(query: str | None, k: int) -> str:
    """The stripped query, or :class:`SearchError` for an empty or too long query or a bad ``k``."""
    if query is not None and not isinstance(query, str):
        raise SearchError(f"the query must be a str, not {type(query).__name__}")
    _check_int("k", k, 1, MAX_K)
    q = " ".join((query or "").split())
    if not q:
        raise SearchError("empty query: type what the images should show, e.g. \"a beach with no people\"")
    if len(q) > MAX_QUERY_CHARS:
        raise SearchError(f"query too long ({len(q)} characters, at most {MAX_QUERY_CHARS})")
    return q


def _check_int(name: str, value: object, low: int, high: int) -> None:
    """:class:`SearchError` unless ``value`` is an integer (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SearchError(f"{name}={value!r}: give an integer from {low} to {high}")
    if not low <= value <= high:
        raise SearchError(f"{name}={value}: ask for {low} to {high}" + (" results" if name == "k" else ""))


class Searcher:
    """An open index with its backbone and Glasses, ready to answer queries (thread-safe).

    index: the index folder. model: a backbone spec (default: the index's); backbone: an already loaded
    backbone (default: load ``model``). glasses: a checkpoint path, default the index's own, ``"none"`` for
    plain CLIP only. A backbone or checkpoint other than the index's raises :class:`IndexMismatch`.
    threads: torch and faiss threads during each search, >= 1 (None: leave them alone; see the module
    docstring). :meth:`refresh` (called by every search) switches to a newer version of the index when one was
    written; when that version cannot be opened (damaged, another backbone) the searcher keeps answering from
    the version it holds, with a note. Bad arguments are a :class:`SearchError` naming what was expected.
    """

    def __init__(self, index: str | Path, *, model: str | None = None, backbone=None,
                 glasses: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                 backend: str | None = None, uri: str | None = None):
        if not isinstance(index, (str, os.PathLike)):
            raise SearchError(f"index must be a folder path, not {type(index).__name__}")
        for name, value in (("model", model), ("glasses", glasses)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise SearchError(f"{name} must be a str or a path, not {type(value).__name__}")
        if not isinstance(device, str):
            raise SearchError(f"device must be a str such as 'cpu', not {type(device).__name__}")
        if threads is not None:
            _check_int("threads", threads, 1, 4096)
        self.index_path = Path(index)
        self.threads = threads
        self.stale: str | None = None  # why the newest version on disk is not the one answering
        self._failed = ""  # the version on disk that could not be opened (not tried again)
        check_backend(backend, uri)
        self._backend, self._uri, self._milvus = backend, uri, {}  # milvus connections by URI
        data = self._open()
        self.backbone = backbone if backbone is not None else load(model or data.model, device=device)
        plain_only = glasses is not None and str(glasses).lower() == "none"
        self.glasses_identity = None if plain_only else self._glasses_identity(glasses, data)
        self._checked = data.glasses if plain_only else self.glasses_identity
        check_compatible(data, self.backbone.fingerprint, self._checked, str(self.index_path))
        self.glasses = None
        if is_training_free(self.glasses_identity):  # calibrated at index build, on the indexed vectors
            self.glasses = TrainingFreeGlasses(self.backbone, calibration=_stored_calibration(data))
        elif self.glasses_identity is not None:
            self.glasses = load_glasses(self.glasses_identity["path"], self.backbone)
        self._data = data
        self._lock = threading.RLock()
        self._text_cache: dict[str, tuple[np.ndarray, list[str]]] = {}

    def _open(self) -> IndexData:
        """The live version, searching through Milvus when it was uploaded there (:mod:`sayno.search.milvus`)."""
        return attach(read_index(self.index_path), self._milvus, self._backend, self._uri)

    def _glasses_identity(self, glasses: str | Path | None, data: IndexData) -> dict | None:
        stored = data.glasses
        if is_training_free(glasses) or (glasses is None and is_training_free(stored)):
            return training_free_identity()
        path = Path(glasses).expanduser().resolve() if glasses is not None else None
        if path is None:
            if stored is None:
                return None
            path = Path(stored["path"])
        if not path.is_file():
            raise SearchError(f"{path}: no such Glasses checkpoint")
        return {"path": str(path), "sha1": file_sha1(path)}

    def warm_up(self) -> None:
        """Run one negated and one plain query, so that the first user query does not pay for lazy setup."""
        for q in ("a picture with no dog", "a dog"):
            self.search(q, 1)
        self._text_cache.clear()

    # ------------------------------------------------------------------------------------------ index
    @property
    def data(self) -> IndexData:
        return self._data

    def refresh(self) -> bool:
        """Load the index's newest version if a build replaced it; True when it did. When it cannot be loaded
        (damaged, removed, built with another backbone or Glasses) the searcher keeps the version it holds
        (its files stay readable) and :attr:`stale` says why."""
        try:
            live = current_version(self.index_path)
        except SearchError as e:  # CURRENT damaged
            self.stale = first_line(e)
            return False
        if live == self._data.version:
            self.stale = None
            return False
        if live == self._failed:  # a version that could not be opened is not read again
            return False
        with self._lock:
            if live in (self._data.version, self._failed):
                return False
            try:
                data = self._open()
                check_compatible(data, self.backbone.fingerprint, self._checked, str(self.index_path))
            except SearchError as e:
                self.stale, self._failed = first_line(e), live
                return False
            if isinstance(self.glasses, TrainingFreeGlasses):
                self.glasses.calibration = _stored_calibration(data)
            self._data = data  # one assignment: a running search keeps the version it started with
            self.stale = None
        return True

    # ------------------------------------------------------------------------------------------ text
    def _slots(self, text):
        """The Glasses' slots; the affirmative remainder of a too-long query is truncated like the query."""
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            return self.glasses.slots(text)

    def _encode(self, query: str) -> tuple[np.ndarray, list[str]]:
        """(1, L, D) layer features of the query and notes (truncation)."""
        hit = self._text_cache.get(query)
        if hit is not None:
            return hit
        notes = []
        # one short text: a single torch thread is fastest, and on a busy CPU more threads only add waiting
        with self._lock, torch_threads(1), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncationWarning)
            layers = self.backbone.encode_text_layers([query]).float().cpu().numpy()
        if any(issubclass(w.category, TruncationWarning) for w in caught):
            notes.append(f"the query is longer than the model's {self.backbone.context_length} tokens: "
                         "only its beginning was read")
        if len(self._text_cache) > 512:
            self._text_cache.clear()
        self._text_cache[query] = (layers, notes)
        return layers, notes

    # ------------------------------------------------------------------------------------------ search
    def search(self, query: str, k: int = 20, *, mode: str = "auto", rerank: int = 0) -> SearchResult:
        """The top ``k`` images for ``query``. mode: "auto" (Glasses when the query negates something) or
        "clip" (always plain CLIP). rerank: re-order the top ``rerank`` with the image-conditioned lambda."""
        t0 = time.perf_counter()
        if not isinstance(mode, str) or mode not in MODES:
            raise SearchError(f"mode={mode!r}: use one of {MODES}")
        q = validate_query(query, k)
        _check_int("rerank", rerank, 0, MAX_K)
        with torch_threads(self.threads):
            result = self._search(q, k, mode, rerank)
        result.ms = (time.perf_counter() - t0) * 1000
        return result

    def _search(self, q: str, k: int, mode: str, rerank: int) -> SearchResult:
        self.refresh()
        data = self._data
        layers, notes = self._encode(q)
        notes = list(notes)
        if self.stale:
            notes.append(f"answered from index version {data.version}: the newer one could not be opened "
                         f"({self.stale})")
        text = TextBatch([q], layers[:, -1], layers)
        scale = float(self.backbone.logit_scale)
        result = SearchResult(q, "clip", [], index_size=len(data), version=data.version, notes=notes,
                              glasses=self.glasses.name if self.glasses is not None else "")
        slots = None
        if self.glasses is not None:
            slots = self._slots(text)
            result.negated = bool(slots.negated[0])
            result.phrases = [{"phrase": p, "lambda": round(float(lam), 4), "hedged": bool(h)}
                              for p, lam, h in zip(slots.phrases, slots.lam, slots.hedged)]
        else:
            result.negated = analyse(q).negated
            if result.negated and mode == "auto":
                notes.append("the query negates something but the index has no Glasses: plain CLIP scores")
        use_glasses = mode == "auto" and slots is not None and len(slots.owner) > 0
        if mode == "auto" and slots is not None and result.negated and not len(slots.owner):
            notes.append("the negation names nothing to leave out: plain CLIP scores")
        kk = min(max(k, rerank), len(data))
        if not use_glasses:
            ids, sims = data.search(text.h[0], kk)
            order, scores, refined = ids, scale * sims, np.zeros(len(ids), bool)
        else:
            result.method = "glasses"
            order, scores, refined = self._glasses_search(text, slots, data, kk, rerank)
        keep = order >= 0
        order, scores, refined = order[keep][:k], scores[keep][:k], refined[keep][:k]
        root = data.root
        result.hits = [Hit(r + 1, str(data.files.path[i]), str(root / str(data.files.path[i])), float(s), bool(f),
                           str(data.files.sha1[i])) for r, (i, s, f) in enumerate(zip(order, scores, refined))]
        return result

    def _glasses_search(self, text, slots, data: IndexData, kk: int, rerank: int):
        """Top ``kk`` by the caption-only Glasses score, optionally re-ranked -> (ids, scores, refined)."""
        g = self.glasses
        if g.clamp:  # score="reference" is not linear in I: shortlist by the base, then the exact scores
            ids, _ = data.search(slots.base.numpy()[0], min(len(data), max(10 * kk, 1000)))
            with torch_threads(1):
                exact = g.score_matrix(text, data.features(ids))[0]
            keep = np.argsort(-exact, kind="stable")[:kk]
            ids, scores = ids[keep], exact[keep]
        else:  # S = s*(q.I + c) (Glasses.query_vectors): faiss searches with q
            q, const = g.query_vectors(text, slots)
            ids, sims = data.search(q[0], kk)
            scores = g.logit_scale * (sims + float(const[0]))
        refined = np.zeros(len(ids), bool)
        if rerank > 0 and len(ids):
            r = min(rerank, len(ids))
            with torch_threads(1):
                new = g.rerank(text, data.features(ids), k=r)[0]
            order = np.argsort(-new, kind="stable")
            refined[order[:r]] = True
            scores = np.where(refined, new, scores)
            ids, scores, refined = ids[order], scores[order], refined[order]
        return ids, scores, refined

    def compare(self, query: str, k: int = 20, rerank: int = 0) -> tuple[SearchResult, SearchResult]:
        """Plain CLIP and sayno (``mode="auto"``) for the same query."""
        return self.search(query, k, mode="clip"), self.search(query, k, mode="auto", rerank=rerank)

    def info(self) -> dict:
        """What is open: index folder, version, size, indexed folder, backbone, Glasses path, unreadable files,
        and ``stale``: why a newer version on disk is not the one answering (None when it is)."""
        d = self._data
        return {"index": str(self.index_path), "version": d.version, "images": len(d), "root": str(d.root),
                "model": d.model, "fingerprint": d.fingerprint,
                "glasses": (self.glasses_identity or {}).get("path"),
                "glasses_name": self.glasses.name if self.glasses is not None else None, "bad_files": len(d.bad),
                "stale": self.stale, "index_kind": index_info(d).get("kind"),
                "backend": "milvus" if isinstance(d.coarse, MilvusCoarse) else "faiss"}


def _stored_calibration(data: IndexData) -> Calibration:
    """The training-free calibration an index stored at build (:class:`SearchError` when it has none)."""
    stored = (data.glasses or {}).get("calibration")
    if not isinstance(stored, dict):
        raise SearchError(f"{data.root}: the index has no training-free calibration: rebuild it (--rebuild)")
    return Calibration.from_dict(stored)


__all__ = ["MAX_K", "MAX_QUERY_CHARS", "Hit", "IndexMismatch", "SearchError", "SearchResult", "Searcher",
           "validate_query"]
