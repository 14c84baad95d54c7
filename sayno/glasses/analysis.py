"""What Glasses read from a caption: the negation analyses of :mod:`sayno.negation`, and the phrases that become
slots.

Every Glasses path (the trained :class:`~sayno.glasses.model.Glasses`, the training-free Glasses, training-data
derivation, ``explain``) reads captions through :func:`analyse_texts`, so they all follow the same analyser.
:func:`slot_phrases` picks the negated phrases that become slots (one ``h_neg`` and ``lambda`` each):

- a phrase repeated in one caption counts once ("no cat, no cat, no Cat" has one slot), by its normalised text
  (:func:`phrase_key`);
- a phrase that starts after the last character the text encoder read (``read_chars``, from the backbone's
  tokenizer and context length) is dropped: the caption's features never saw it.

A phrase is an absent object ("dog") or a negated predicate of a subject (``kind="predicate"``: its text is the
subject with the predicate, "horse galloping", which is what the Lens reads and the score repels; the affirmative
remainder keeps the subject, "a horse"). :func:`caption_path` says how Glasses read a caption: ``parse`` (one slot
per phrase), ``fallback`` (negated, by a cue or the learned detector, but no phrase: the trained Lens reads the
whole caption) or ``none`` (plain CLIP).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from sayno.negation import Analysis, NegatedPhrase, parse_many

_SPACE = re.compile(r"\s+")


def analyse_texts(texts: Sequence[str]) -> list[Analysis]:
    """One negation analysis per text (:func:`sayno.negation.parse_many`: batched, cached); result i is text i's."""
    return parse_many(list(texts))


def analyse(text: str) -> Analysis:
    """:func:`analyse_texts` for one text."""
    return analyse_texts([text])[0]


def needs_fallback(analysis: Analysis, read_chars: int | None = None) -> bool:
    """Whether a caption that counts as negated gets the fallback slot (the Lens on the whole caption): the
    analyser found no phrase at all (a cue it cannot attach, or no cue where the learned detector fired) and the
    text encoder read its cue. Phrases that all start past what the encoder read give no slot: the caption's
    features never saw the negation."""
    if analysis.phrases:
        return False
    return read_chars is None or not analysis.negations or any(n.start < read_chars for n in analysis.negations)


def caption_path(analysis: Analysis, negated: bool, read_chars: int | None = None) -> str:
    """How Glasses read one caption: ``"none"`` (plain CLIP), ``"parse"`` (negated phrases become slots) or
    ``"fallback"`` (negated with no phrase: one caption-level slot, the Lens on the whole caption)."""
    if not negated:
        return "none"
    if slot_phrases(analysis, read_chars):
        return "parse"
    return "fallback" if needs_fallback(analysis, read_chars) else "none"


@functools.lru_cache(maxsize=65536)  # pure; called per phrase on every scoring call
def phrase_key(text: str) -> str:
    """The normalised text of a phrase that repeats count once under: lower case, single spaces, no
    surrounding punctuation."""
    return _SPACE.sub(" ", text.lower()).strip(" .,;:!?\"'")


def slot_phrases(analysis: Analysis, read_chars: int | None = None) -> list[NegatedPhrase]:
    """The phrases of ``analysis`` that become slots: first occurrence of each :func:`phrase_key`, and only
    phrases that start before ``read_chars`` (None: no limit)."""
    seen: set[str] = set()
    out = []
    for p in analysis.phrases:
        key = phrase_key(p.text)
        if not key or key in seen or (read_chars is not None and p.start >= read_chars):
            continue
        seen.add(key)
        out.append(p)
    return out
