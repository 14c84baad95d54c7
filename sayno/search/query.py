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

import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sayno.backbones import load
from sayno.backbones.base import TruncationWarning
from sayno.base.scoring import TextBatch
from sayno.cliutil import first_line
from sayno.data.images import to_rgb
from sayno.errors import SaynoError
from sayno.glasses import Calibration, TrainingFreeGlasses, load_glasses
from sayno.glasses.analysis import analyse
from sayno.glasses.training_free import content_free, is_training_free
from sayno.glasses.training_free import identity as training_free_identity
from sayno.runtime import torch_threads
from sayno.search.ann import index_info
from sayno.search.build import check_compatible, file_sha1
from sayno.search.match import Matcher, MatchTest, calibrate_index, stored_bank, stored_vocabulary
from sayno.search.match import stored as stored_match
from sayno.search.milvus import MilvusCoarse, attach, check_backend
from sayno.search.store import (
    REBUILD,
    IndexData,
    IndexFileError,
    IndexMismatch,
    SearchError,
    current_version,
    read_index,
)
from sayno.search.terms import Term, Terms, parse_terms

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MODES = ("auto", "clip")
# lone surrogates: bytes of a command-line argument that are not UTF-8 (Python holds them as U+DC80..U+DCFF) or a
# half of a pair; no tokenizer can encode them, so they become U+FFFD like any other undecodable input
_SURROGATE = re.compile("[\ud800-\udfff]")
log = logging.getLogger(__name__)


@dataclass
class Hit:
    """One result: ``path`` relative to the indexed folder, ``file`` absolute, ``score`` (higher = better;
    logits on CLIP's scale), ``refined``: scored with the image-conditioned ``lambda``, ``sha1``: of the
    file's bytes when it was indexed (the id ``sayno serve`` serves it by), ``match``: the image looks like
    the query by the index's calibrated, label-free threshold (docs/SEARCH.md, "Match threshold")."""

    rank: int
    path: str
    file: str
    score: float
    refined: bool = False
    sha1: str = ""
    match: bool = False  # passes the index's label-free match test (sayno.search.match)


@dataclass
class SearchResult:
    """Hits of one query and how they were scored. ``method``: "clip" or "glasses"; ``phrases``: the negated
    phrases and their caption-only ``lambda``; ``notes``: anything the user should know (truncation, ...).
    ``terms``: the rclip-style terms as read (text, weight, sign "+"/"-", kind), ``reading``: the same in one
    line; ``match_test``: the phrases the match test wants present and absent, its ``tau`` and how many words
    of the open vocabulary it weighs (``vocabulary``, 0 without); ``matches``:
    how many hits match; ``no_match``: "no image here looks like ..." when none does, else ""."""

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
    terms: list[dict] = field(default_factory=list)
    reading: str = ""
    match_test: dict = field(default_factory=dict)
    matches: int = 0
    no_match: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def validate_query(query: str | None, k: int) -> str:
    """The stripped query, or :class:`SearchError` for an empty or too long query or a bad ``k``."""
    if query is not None and not isinstance(query, str):
        raise SearchError(f"the query must be a str, not {type(query).__name__}")
    _check_int("k", k, 1, MAX_K)
    q = " ".join(_SURROGATE.sub("\ufffd", query or "").split())
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
        self.stale_version: str | None = None  # that version ('' or None: CURRENT itself is unreadable)
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
        self._matchers: dict[str, Matcher] = {}  # the match test of the version answering (by version)

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
            self.stale, self.stale_version = first_line(e), None
            return False
        if live == self._data.version:
            self.stale = self.stale_version = None
            return False
        if live == self._failed:  # a version that could not be opened is not read again
            return False
        with self._lock:
            if live in (self._data.version, self._failed):
                return False
            try:
                data = self._open()
                check_compatible(data, self.backbone.fingerprint, self._checked, str(self.index_path))
                calibration = _stored_calibration(data) if isinstance(self.glasses, TrainingFreeGlasses) else None
            except Exception as e:  # whatever is wrong with the new version, keep answering
                if not isinstance(e, SaynoError):  # a file the checks let through: a bug, logged in full
                    log.exception("index version %s could not be opened; answering from %s", live,
                                  self._data.version)
                reason = first_line(e) if isinstance(e, SaynoError) else f"{type(e).__name__}: {first_line(e)}"
                self.stale, self.stale_version, self._failed = reason[:300], live, live
                return False
            if calibration is not None:
                self.glasses.calibration = calibration
            self._data = data  # one assignment: a running search keeps the version it started with
            self.stale = self.stale_version = None
        return True

    # ------------------------------------------------------------------------------------------ text
    def _slots(self, text):
        """The Glasses' slots; the affirmative remainder of a too-long query is truncated like the query."""
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            return self.glasses.slots(text)

    def _prefetch(self, terms: Terms, data: IndexData) -> None:
        """One text-tower pass for everything a new query embeds: its text terms' layer features, the Glasses'
        extra texts (phrase prompts, affirmative remainders) and the match test's phrase prompts, put in their
        memos; each used to be a pass of its own (about 2-3 ms each on the embedded CLIP, one thread). Texts
        already cached are not embedded again; anything missed here is embedded where it is used, as before."""
        new = [t.text for t in terms.terms if not t.image and t.text not in self._text_cache]
        if not new or not hasattr(self.backbone, "text_read_chars"):
            return
        memos: list[tuple[object, list[str]]] = []
        if self.glasses is not None and hasattr(self.glasses, "extra_texts"):
            memos.append((self.glasses.phrases, self.glasses.extra_texts(new)))
        matcher = self._matcher(data)
        test = self._match_test(terms, SearchResult("", "clip", []))
        memos.append((matcher.encoder.phrases, matcher.extra_texts(test)))
        wanted = [(memo, memo.missing(texts)) for memo, texts in memos]
        extras = list(dict.fromkeys(x for _, texts in wanted for x in texts))
        with self._lock, torch_threads(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            layers = self.backbone.encode_text_layers(new + extras).float().cpu().numpy()
            read = self.backbone.text_read_chars(new)
        for i, (text, n) in enumerate(zip(new, read)):
            self._remember(text, layers[i:i + 1], self._truncation_notes(n < len(text)))
        row = {x: len(new) + j for j, x in enumerate(extras)}
        for memo, texts in wanted:
            if texts:
                memo.put(texts, layers[[row[x] for x in texts], -1])

    def _truncation_notes(self, truncated: bool) -> list[str]:
        if not truncated:
            return []
        note = f"the query is longer than the model's {self.backbone.context_length} tokens: only its beginning was read"
        return [note]

    def _remember(self, query: str, layers: np.ndarray, notes: list[str]) -> None:
        if len(self._text_cache) > 512:
            self._text_cache.clear()
        self._text_cache[query] = (layers, notes)

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
        notes += self._truncation_notes(any(issubclass(w.category, TruncationWarning) for w in caught))
        self._remember(query, layers, notes)
        return layers, notes

    # ------------------------------------------------------------------------------------------ search
    def search(self, query: str, k: int = 20, *, mode: str = "auto", rerank: int = 0, add: Sequence[str] = (),
               subtract: Sequence[str] = (), matches_only: bool = False, image_terms: bool = True) -> SearchResult:
        """The top ``k`` images for ``query``. mode: "auto" (Glasses when the query negates something) or
        "clip" (always plain CLIP). rerank: re-order the top ``rerank`` with the image-conditioned lambda.

        rclip-style terms (:mod:`sayno.search.terms`): ``query`` may read ``"a beach - people + 2:sunset"``, and
        ``add``/``subtract`` add more terms; such a query is searched with ``e(q) + sum w*e(add) - sum
        w*e(sub)``, renormalised (each term's vector unit length first; a term that negates, "no X", is its
        Glasses query vector in mode "auto"). image_terms: allow image-file terms (``./cat.jpg``).
        matches_only: only hits that pass the match test (:mod:`sayno.search.match`), up to ``k``."""
        t0 = time.perf_counter()
        if not isinstance(mode, str) or mode not in MODES:
            raise SearchError(f"mode={mode!r}: use one of {MODES}")
        q = validate_query(query, k)
        _check_int("rerank", rerank, 0, MAX_K)
        for name, value in (("add", add), ("subtract", subtract)):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value or ()):
                raise SearchError(f"{name} must be a list of terms (str), not {value!r}")
            if any(len(v) > MAX_QUERY_CHARS for v in value or ()):
                raise SearchError(f"{name}: a term longer than {MAX_QUERY_CHARS} characters")
        terms = parse_terms(q, add, subtract, images=image_terms)
        with torch_threads(self.threads):
            result = self._search(q, terms, k, mode, rerank, bool(matches_only))
        result.ms = (time.perf_counter() - t0) * 1000
        return result

    def _search(self, q: str, terms: Terms, k: int, mode: str, rerank: int, matches_only: bool) -> SearchResult:
        self.refresh()
        data = self._data
        result = SearchResult(q, "clip", [], index_size=len(data), version=data.version,
                              glasses=self.glasses.name if self.glasses is not None else "",
                              terms=terms.to_list(), reading=terms.describe())
        if self.stale:
            result.notes.append(f"answered from index version {data.version}: the newer one could not be opened "
                                f"({self.stale})")
        # matches_only: look further down the ranking for matching images (the cut may keep few of the top k)
        kk = min(max(k, rerank, MAX_K if matches_only else 0), len(data))
        self._prefetch(terms, data)
        if terms.simple:
            order, scores, refined = self._rank_query(terms.terms[0].text, data, kk, mode, rerank, result)
        else:
            if rerank:
                result.notes.append("--rerank applies to one-term queries: not used")
            order, scores, refined = self._rank_terms(terms, data, kk, mode, result)
        keep = order >= 0
        order, scores, refined = order[keep], scores[keep], refined[keep]
        test = self._match_test(terms, result)
        matcher = self._matcher(data)
        with self._lock:  # may embed phrases with the backbone (one text encoder call at a time)
            flags = matcher.flags(test, data.features(order)) if len(order) else np.zeros(0, bool)
        result.match_test = {**test.to_dict(), "tau": round(matcher.tau, 4),
                             "vocabulary": 0 if matcher.words is None else len(matcher.words)}
        if matches_only:
            order, scores, refined, flags = order[flags], scores[flags], refined[flags], flags[flags]
        order, scores, refined, flags = order[:k], scores[:k], refined[:k], flags[:k]
        result.matches = int(flags.sum())
        if not result.matches:
            result.no_match = f"no image here looks like {result.reading}"
        root = data.root
        result.hits = [Hit(r + 1, str(data.files.path[i]), str(root / str(data.files.path[i])), float(s), bool(f),
                           str(data.files.sha1[i]), bool(m))
                       for r, (i, s, f, m) in enumerate(zip(order, scores, refined, flags))]
        return result

    def _rank_query(self, q: str, data: IndexData, kk: int, mode: str, rerank: int, result: SearchResult):
        """One query: plain CLIP, or the Glasses score when it negates -> (ids, scores, refined)."""
        layers, notes = self._encode(q)
        result.notes.extend(notes)
        text = TextBatch([q], layers[:, -1], layers)
        scale = float(self.backbone.logit_scale)
        slots = None
        if self.glasses is not None:
            slots = self._slots(text)
            result.negated = bool(slots.negated[0])
            result.phrases = _phrases(slots, q)
            if any(p["kind"] == "caption" for p in result.phrases):
                result.notes.append("no negated phrase found: the Glasses' Lens read the whole query (fallback)")
        else:
            result.negated = analyse(q).negated
            if result.negated and mode == "auto":
                result.notes.append("the query negates something but the index has no Glasses: plain CLIP scores")
        use_glasses = mode == "auto" and slots is not None and len(slots.owner) > 0
        if mode == "auto" and slots is not None and result.negated and not len(slots.owner):
            result.notes.append("the negation names nothing to leave out: plain CLIP scores")
        if not use_glasses:
            ids, sims = data.search(text.h[0], kk)
            return ids, scale * sims, np.zeros(len(ids), bool)
        result.method = "glasses"
        return self._glasses_search(text, slots, data, kk, rerank)

    def _rank_terms(self, terms: Terms, data: IndexData, kk: int, mode: str, result: SearchResult):
        """rclip-style: one vector ``sum sign*w*unit(e(term))``, renormalised; score ``s*cos(v, I)``."""
        total = np.zeros(data.dim, np.float64)
        for term in terms.terms:
            if term.image:
                vec = self._image_vector(term.text)
            else:
                vec = self._term_vector(term, mode, result)
            norm = float(np.linalg.norm(vec))
            if not np.isfinite(norm) or norm < 1e-8:
                raise SearchError(f"the term {term.describe()} has no direction to search with")
            total += term.sign * term.weight * np.asarray(vec, np.float64) / norm
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise SearchError(f"the terms cancel out ({terms.describe()}): nothing is left to search for")
        ids, sims = data.search((total / norm).astype(np.float32), kk)
        return ids, float(self.backbone.logit_scale) * sims, np.zeros(len(ids), bool)

    def _term_vector(self, term: Term, mode: str, result: SearchResult) -> np.ndarray:
        """(D,) a text term's vector: ``h``; for an added term that negates ("no X"), in mode "auto", its
        Glasses query vector ``q`` (a clamped checkpoint: its remainder's ``b``, with a note)."""
        layers, notes = self._encode(term.text)
        result.notes.extend(n for n in notes if n not in result.notes)
        text = TextBatch([term.text], layers[:, -1], layers)
        if term.sign < 0:  # a subtracted term is subtracted as written
            return text.h[0]
        if self.glasses is None:
            if analyse(term.text).negated:
                result.negated = True
                if mode == "auto":
                    result.notes.append(f"{term.text!r} negates something but the index has no Glasses: "
                                        "plain CLIP vector")
            return text.h[0]
        slots = self._slots(text)
        result.negated = result.negated or bool(slots.negated[0])
        if mode != "auto" or not len(slots.owner):
            return text.h[0]
        result.method = "glasses"
        result.phrases.extend(_phrases(slots, term.text))
        if self.glasses.clamp:
            result.notes.append(f"{self.glasses.name} scores are not linear in the image: {term.text!r} searched "
                                "with its affirmative part")
            return slots.base.numpy()[0]
        return self.glasses.query_vectors(text, slots)[0][0]

    def _image_vector(self, path: str) -> np.ndarray:
        """(D,) the backbone's features of an image file term."""
        file = Path(path).expanduser()
        try:
            with Image.open(file) as im:
                image = to_rgb(im)
        except FileNotFoundError:
            raise SearchError(f"{path}: no such image file (an image term is a path: ./cat.jpg)") from None
        except (OSError, ValueError) as e:
            raise SearchError(f"{path}: not a readable image ({first_line(e)})") from None
        with self._lock, torch_threads(1):
            return self.backbone.encode_image([image]).float().cpu().numpy()[0]

    def _match_test(self, terms: Terms, result: SearchResult) -> MatchTest:
        """What the match test asks of an image: every added text term present (its affirmative part when it
        negates, with its negated phrases absent), every subtracted text term absent."""
        wanted: list[str] = []
        unwanted: list[str] = []
        glasses_phrases = [p["phrase"] for p in result.phrases]
        for term in terms.terms:
            if term.image:
                if "image terms take no part in the match test" not in result.notes:
                    result.notes.append("image terms take no part in the match test")
                continue
            if term.sign < 0:
                unwanted.append(_bare(term.text))
                continue
            analysis = analyse(term.text)
            if not analysis.negated:
                if not content_free(term.text):  # "a scene", "a photo" ask for nothing in particular
                    wanted.append(_bare(term.text))
                continue
            if not content_free(analysis.affirmative_text):
                wanted.append(_bare(analysis.affirmative_text))
            found = [p.text for p in analysis.phrases]
            unwanted.extend(p for p in found if p)
            if not found:
                unwanted.extend(glasses_phrases)
        return MatchTest(tuple(dict.fromkeys(w for w in wanted if w)), tuple(dict.fromkeys(u for u in unwanted if u)))

    def matcher(self) -> Matcher:
        """The match test of the version answering now (its calibration, bank and phrase encoder)."""
        self.refresh()
        return self._matcher(self._data)

    def _matcher(self, data: IndexData) -> Matcher:
        """The match test of the version answering (its stored calibration, else calibrated on its vectors)."""
        cached = self._matchers.get(data.version)
        if cached is not None:
            return cached
        with self._lock:
            cal = stored_match(data.envelope.sections)
            bank = None if cal is None else stored_bank(data.envelope.sections, data.dim)
            vocab = None if cal is None else stored_vocabulary(data.envelope.sections, data.dim)
            if cal is None:
                cal = calibrate_index(self.backbone, data.vectors)
            encoder = self.glasses if isinstance(self.glasses, TrainingFreeGlasses) else None
            if encoder is not None and encoder.calibration != cal:
                encoder = None
            matcher = Matcher(self.backbone, cal, encoder, bank=bank, vocabulary_embeddings=vocab)
            self._matchers = {data.version: matcher}  # one version at a time
        return matcher

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
        and ``stale``: ``{"version", "error"}``, the newer version on disk that is not the one answering and
        why (None when it is; version None when ``CURRENT`` itself cannot be read)."""
        d = self._data
        return {"index": str(self.index_path), "version": d.version, "images": len(d), "root": str(d.root),
                "model": d.model, "fingerprint": d.fingerprint,
                "glasses": (self.glasses_identity or {}).get("path"),
                "glasses_name": self.glasses.name if self.glasses is not None else None, "bad_files": len(d.bad),
                "stale": {"version": self.stale_version, "error": self.stale} if self.stale else None,
                "index_kind": index_info(d).get("kind"),
                "backend": "milvus" if isinstance(d.coarse, MilvusCoarse) else "faiss"}


def _phrases(slots, text: str) -> list[dict]:
    """The negated phrases of one caption's slots with their ``lambda``, hedge and kind (JSON-ready). kind:
    "object" (an absent thing), "predicate" (a subject's action, state or relation: the phrase is subject +
    predicate, "horse galloping") or "caption" (the fallback: no phrase was found, the Lens read the whole
    caption; the phrase is "")."""
    kinds = {p.text: p.kind for p in analyse(text).phrases}
    return [{"phrase": p, "lambda": round(float(lam), 4), "hedged": bool(h),
             "kind": kinds.get(p, "object") if p else "caption"}
            for p, lam, h in zip(slots.phrases, slots.lam, slots.hedged)]


_ARTICLES = ("a ", "an ", "the ", "some ", "any ")


def _bare(phrase: str) -> str:
    """A phrase without its leading article ("a cat" -> "cat"): the match test's prompts add their own."""
    p = " ".join(phrase.split())
    low = p.lower()
    for art in _ARTICLES:
        if low.startswith(art) and len(p) > len(art):
            return p[len(art):]
    return p


def _stored_calibration(data: IndexData) -> Calibration:
    """The training-free calibration an index stored at build (:class:`IndexFileError` when it has none or
    it does not read: :func:`sayno.search.store.check_meta` checked its values when the version was read)."""
    stored = (data.glasses or {}).get("calibration")
    where = f"{data.folder / 'meta.json'}: the training-free Glasses"
    if not isinstance(stored, dict):
        raise IndexFileError(f"{where} have no calibration: {REBUILD}")
    try:
        return Calibration.from_dict(stored)
    except (SaynoError, TypeError, ValueError) as e:
        raise IndexFileError(f"{where}' calibration: {' '.join(str(e).split())[:120]}: {REBUILD}") from None


__all__ = ["MAX_K", "MAX_QUERY_CHARS", "Hit", "IndexMismatch", "SearchError", "SearchResult", "Searcher",
           "validate_query"]
