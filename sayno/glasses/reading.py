"""How many leading characters of each caption the backbone's text encoder reads, memoised per caption.

A negated phrase past that point is not a slot (:func:`sayno.glasses.analysis.slot_phrases`): the caption's
features never saw it. Finding the point means running the backbone's tokenizer (text cleaning and BPE,
about 0.2 ms per caption on the embedded CLIP), which, repeated on every scoring call, cost Glasses more
than the rest of its work over plain CLIP (issue 27; docs/RESULTS.md, "Glasses scoring speed"). The answer
depends only on the text and the backbone, so :class:`ReadLimits` keeps it in a bounded least-recently-used
memo next to the caption's analysis (itself cached by :mod:`sayno.negation`) and the phrase-prompt
embeddings (:mod:`sayno.glasses.phrases`): each caption is tokenized once while it stays in the memo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sayno.glasses.analysis import analyse_texts, needs_fallback, slot_phrases
from sayno.glasses.phrases import BatchMemo, Memoised

#: Captions remembered by default (an int or None each: a few hundred kB).
DEFAULT_CAPACITY = 16384


class ReadLimits(Memoised):
    """texts -> per text, how many leading characters ``backbone``'s text encoder reads (``len(text)`` when
    all of it; :meth:`sayno.backbones.base.Backbone.text_read_chars`), or None for every text when there is
    no backbone or it cannot tell. Memoised (:class:`~sayno.glasses.phrases.BatchMemo`): at most ``capacity``
    texts, least recently used dropped first."""

    def __init__(self, backbone, capacity: int = DEFAULT_CAPACITY):
        read = getattr(backbone, "text_read_chars", None) if backbone is not None else None
        self._memo = BatchMemo(read or (lambda texts: [None] * len(texts)), capacity, "the read-limit memo")
        self._read = read

    def __call__(self, texts: Sequence[str]) -> list[int | None]:
        """One limit per text of ``texts``; texts not in the memo are tokenized in one call."""
        texts = list(texts)
        if self._read is None or not texts:
            return [None] * len(texts)
        return self._memo.get(texts)


@dataclass(frozen=True)
class CaptionPlan:
    """What Glasses read from one caption, from its text alone (the negation analysis and the read limit).

    negated: the analyser finds a negation cue (the lexical detector); phrases: the slot phrases, each
    ``(text, hedged)`` (:func:`~sayno.glasses.analysis.slot_phrases` under the read limit; empty for a caption
    without a cue); fallback: whether the caption, when it counts as negated, gets the caption-level slot
    (:func:`~sayno.glasses.analysis.needs_fallback`); hedged: the caption's hedge flag; affirmative: its
    affirmative remainder.
    """

    negated: bool
    phrases: tuple[tuple[str, bool], ...]
    fallback: bool
    hedged: bool
    affirmative: str


class CaptionPlans(Memoised):
    """texts -> one :class:`CaptionPlan` each, memoised (:class:`~sayno.glasses.phrases.BatchMemo`, at most
    ``capacity`` texts, least recently used dropped first).

    A plan depends only on the text and the backbone's tokenizer, so a scoring call re-reads nothing it has
    seen: the analyses (cached by :mod:`sayno.negation`), the slot phrases and the read limits (``limits``, a
    :class:`ReadLimits`, asked only about captions with a cue) are looked up once per caption instead of
    walked again on every call (issue 27, Glasses scoring speed).
    """

    def __init__(self, limits: ReadLimits, capacity: int = DEFAULT_CAPACITY):
        self._limits = limits
        self._memo = BatchMemo(self._plan, capacity, "the caption-plan memo")

    def _plan(self, texts: list[str]) -> list[CaptionPlan]:
        analyses = analyse_texts(texts)
        cued = [i for i, a in enumerate(analyses) if a.negated]
        limits: dict[int, int | None] = dict(zip(cued, self._limits([texts[i] for i in cued])))
        out = []
        for i, a in enumerate(analyses):
            limit = limits.get(i)
            found = slot_phrases(a, limit) if a.negated else []
            out.append(CaptionPlan(bool(a.negated), tuple((p.text, bool(p.hedged)) for p in found),
                                   needs_fallback(a, limit), bool(a.hedged), a.affirmative_text))
        return out

    def __call__(self, texts: Sequence[str]) -> list[CaptionPlan]:
        """One plan per text of ``texts`` (repeats allowed); texts not in the memo are read in one call."""
        return self._memo.get(list(texts))
