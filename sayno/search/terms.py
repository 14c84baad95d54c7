"""rclip-style query terms: ``"a beach" - people + 2:sunset`` (docs/SEARCH.md, "Queries").

rclip (https://github.com/yurijmikhalevich/rclip) reads ``rclip "a beach" - people + sunset``: the query, then
any number of ``+ TERM`` / ``- TERM`` (also ``--add``/``-a`` and ``--subtract``/``--sub``/``-s``); a term may
carry a multiplier ``2:sunset`` / ``0.5:./cat.jpg``; a term that is a path (``/...``, ``./...``, ``file://...``)
is an image. The query vector is ``sum w*e(added) - sum w*e(subtracted)``. sayno reads the same syntax, in
separate arguments or inside one string (a ``+`` or ``-`` standing alone between spaces is an operator;
``t-shirt`` and ``-5`` are words), so the command line, the Python API and the web page share it:

    >>> parse_terms(["a beach - people", "+", "2:sunset"]).describe()
    '"a beach" - "people" + 2 x "sunset"'

Parsing is pure (no files are read); :class:`~sayno.search.store.SearchError` for what cannot be read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sayno.search.store import SearchError

#: ``N:term`` as rclip spells a multiplier (``2:cat``, ``0.5:cat``, ``.5:cat``, ``2.:cat``). sayno also asks that
#: the term not start with a digit, so that "10:30 a clock" stays text.
WEIGHT = re.compile(r"^(?P<weight>\d+(?:\.\d+)?|\.\d+|\d+\.):(?P<term>[^\d\s].*)$", re.DOTALL)
#: a ``+`` or ``-`` standing alone (between whitespace or the ends of an argument) is an operator
OPERATOR = re.compile(r"(?<!\S)([+-])(?!\S)")
IMAGE_PREFIXES = ("/", "./", "../", "~/", "file://")
URL_PREFIXES = ("http://", "https://")
MAX_TERMS = 16
MAX_WEIGHT = 100.0


@dataclass(frozen=True)
class Term:
    """One term: ``text`` (an image term: the file path), ``weight`` > 0, ``sign`` +1 (add) or -1 (subtract),
    ``image``: the term names an image file."""

    text: str
    weight: float = 1.0
    sign: int = 1
    image: bool = False

    def describe(self) -> str:
        """``2 x "sunset"``, ``image ./cat.jpg``."""
        body = f"image {self.text}" if self.image else f'"{self.text}"'
        return body if self.weight == 1 else f"{self.weight:g} x {body}"

    def to_dict(self) -> dict:
        return {"text": self.text, "weight": self.weight, "sign": "+" if self.sign > 0 else "-",
                "kind": "image" if self.image else "text"}


@dataclass(frozen=True)
class Terms:
    """A parsed query: its terms in the order given (the first is the query itself)."""

    terms: tuple[Term, ...]

    @property
    def simple(self) -> bool:
        """One text term, weight 1: an ordinary query, scored exactly as before terms existed."""
        return len(self.terms) == 1 and not self.terms[0].image and self.terms[0].weight == 1

    @property
    def added(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.sign > 0)

    @property
    def subtracted(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.sign < 0)

    def describe(self) -> str:
        """How the query was read: ``"a beach" - "people" + 2 x "sunset"``."""
        out = ""
        for i, t in enumerate(self.terms):
            if i == 0:
                out = ("- " if t.sign < 0 else "") + t.describe()
            else:
                out += (" + " if t.sign > 0 else " - ") + t.describe()
        return out

    def to_list(self) -> list[dict]:
        return [t.to_dict() for t in self.terms]


def parse_term(text: str, sign: int = 1, *, images: bool = True) -> Term:
    """One term from its text: an optional ``N:`` weight, then text or an image path (``/``, ``./``, ``../``,
    ``~/``, ``file://``). URLs are refused (sayno never downloads), and image paths when ``images`` is False
    (the web page: a request must not name files of the server)."""
    text = " ".join(str(text).split())
    weight = 1.0
    m = WEIGHT.match(text)
    if m:
        weight, text = float(m.group("weight")), m.group("term").strip()
        if not (0 < weight <= MAX_WEIGHT) or not math.isfinite(weight):
            raise SearchError(f"weight {m.group('weight')} of {text!r}: give a number above 0 and at most "
                              f"{MAX_WEIGHT:g} (e.g. 2:{text})")
    if not text:
        raise SearchError("an empty term: write what to add or subtract after + or - (e.g. - people)")
    if text.lower().startswith(URL_PREFIXES):
        raise SearchError(f"{text}: URL terms are not fetched (sayno does not go online): download the image "
                          "and give its path (./cat.jpg)")
    image = text.startswith(IMAGE_PREFIXES)
    if image and not images:
        raise SearchError(f"{text}: image terms are read only by the command line and the Python API, not "
                          "over HTTP")
    if image and text.startswith("file://"):
        text = text[len("file://"):]
    return Term(text, weight, 1 if sign > 0 else -1, image)


def parse_terms(args: Sequence[str] | str, add: Iterable[str] = (), subtract: Iterable[str] = (), *,
                images: bool = True) -> Terms:
    """Read rclip-style terms from ``args`` (one string or the command line's words), then ``add`` and
    ``subtract`` (one term each, as ``--add``/``--subtract``). Words between operators form one term; a term
    is added unless a ``-`` stands before it. :class:`SearchError` for an operator with no term after it,
    no added term at all, or more than :data:`MAX_TERMS` terms."""
    if isinstance(args, str):
        args = [args]
    terms: list[Term] = []
    sign, words, pending = 1, [], False  # pending: an operator waits for its term

    def flush() -> None:
        if words:
            terms.append(parse_term(" ".join(words), sign, images=images))
            words.clear()

    for arg in args:
        for i, piece in enumerate(OPERATOR.split(str(arg))):
            if i % 2:  # an operator
                if pending and not words:
                    raise SearchError(f"'{'+' if sign > 0 else '-'}' has no term after it (e.g. - people)")
                flush()
                sign, pending = (1 if piece == "+" else -1), True
            elif piece.strip():
                words.append(piece.strip())
                pending = False
    if pending and not words:
        raise SearchError(f"'{'+' if sign > 0 else '-'}' at the end has no term after it (e.g. - people)")
    flush()
    for values, s in ((add, 1), (subtract, -1)):
        for value in values or ():
            terms.append(parse_term(value, s, images=images))
    if not terms:
        raise SearchError("empty query: type what the images should show, e.g. \"a beach with no people\"")
    if len(terms) > MAX_TERMS:
        raise SearchError(f"{len(terms)} terms: at most {MAX_TERMS}")
    if not any(t.sign > 0 for t in terms):
        raise SearchError("nothing to look for: every term is subtracted; put what the images should show "
                          "first (\"a scene\" - cat)")
    return Terms(tuple(terms))


__all__ = ["MAX_TERMS", "Term", "Terms", "parse_term", "parse_terms"]
