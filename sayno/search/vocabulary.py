"""The open vocabulary of the match test: about 3,000 concrete nouns from WordNet, with their hypernym graph.

The match test (:mod:`sayno.search.match`) marks an image a match for "a X" only when the image looks at least as
much like X as like anything else it can name. Its 259-object bank (the training-free calibration's) is small:
an image of an onion looks more like "basketball" than like any of the 259, so an index without basketballs still
marked onions as matches. The vocabulary adds every concrete noun WordNet's sense-tagged corpus attests
(``sayno/templates/match_vocabulary.json``, written by ``scripts/make_match_vocabulary.py``; the rule is there),
without the words that name X itself, a kind of X or what X is a kind of (:meth:`Vocabulary.related`): an image
of a cat must not fail "a cat" because it looks even more like "house cat" or "feline".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from sayno.base.prompts import load_templates

NAME = "match_vocabulary"
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


@dataclass(frozen=True)
class Vocabulary:
    """words: K nouns; senses: per word, its synset ids; parents: per synset, its hypernyms' ids; version: the
    file's version (stored with an index's embeddings of the words)."""

    words: tuple[str, ...]
    senses: tuple[tuple[int, ...], ...]
    parents: tuple[tuple[int, ...], ...]
    version: int = 1

    def __post_init__(self) -> None:
        if len(self.words) != len(self.senses):
            raise ValueError(f"{len(self.words)} words but {len(self.senses)} sense lists")
        bad = [s for ss in (*self.senses, *self.parents) for s in ss if not 0 <= s < len(self.parents)]
        if bad:
            raise ValueError(f"synset id {bad[0]} outside 0..{len(self.parents) - 1}")

    def __len__(self) -> int:
        return len(self.words)

    @functools.cached_property
    def _ancestors(self) -> tuple[frozenset[int], ...]:
        """Per synset, itself and every synset above it."""
        memo: dict[int, frozenset[int]] = {}

        def up(s: int, path: frozenset[int] = frozenset()) -> frozenset[int]:
            if s not in memo:
                memo[s] = frozenset({s}).union(*(up(p, path | {s}) for p in self.parents[s] if p not in path))
            return memo[s]

        return tuple(up(s) for s in range(len(self.parents)))

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    @functools.cached_property
    def _longest(self) -> int:
        return max((len(_WORD.findall(w)) for w in self.words), default=1)

    def named(self, phrase: str) -> list[int]:
        """Every word of the vocabulary the phrase names, longest first, left to right ("a dog on a sofa" -> dog,
        sofa; "two fire engines" -> fire, engine): runs of words as long as the vocabulary's longest entry, each
        tried as written and with its last word made singular."""
        words = _WORD.findall(phrase.lower())
        out, i = [], 0
        while i < len(words):
            for n in range(self._longest, 0, -1):
                run = words[i:i + n]
                if len(run) < n:
                    continue
                head = " ".join(run[:-1])
                hit = next((self._index[c] for c in (" ".join(run), *(f"{head} {s}".strip() for s in
                            singulars(run[-1]))) if c in self._index), None)
                if hit is not None:
                    out.append(hit)
                    i += n
                    break
            else:
                i += 1
        return out

    @functools.cached_property
    def _related(self) -> dict[str, np.ndarray]:
        return {}

    def related(self, phrase: str) -> np.ndarray:
        """(K,) bool, read-only: the words that are not the phrase's competitors: every word it names
        (:meth:`named`; "a dog on a sofa" is not beaten by "dog" or "sofa"), their synonyms, the words for what they
        are kinds of (hypernyms, all the way up) and for the kinds of them (hyponyms, all the way down). A phrase
        that names no word of the vocabulary leaves none out. Memoised per phrase (at most 4,096 kept)."""
        memo = self._related
        if phrase not in memo:
            if len(memo) >= 4096:
                memo.clear()
            memo[phrase] = self._compute_related(phrase)
            memo[phrase].flags.writeable = False
        return memo[phrase]

    def _compute_related(self, phrase: str) -> np.ndarray:
        out = np.zeros(len(self.words), bool)
        hits = set(self.named(phrase))
        if not hits:
            return out
        own = {s for i in hits for s in self.senses[i]}
        above = frozenset().union(*(self._ancestors[s] for s in own))
        for j, ss in enumerate(self.senses):
            if any(s in above or own & self._ancestors[s] for s in ss):
                out[j] = True
        out[sorted(hits)] = True
        return out


def singulars(word: str) -> list[str]:
    """Candidate singulars of an English plural noun ("boxes" -> box, "berries" -> berry, "cats" -> cat)."""
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
    return out


@functools.cache
def load_vocabulary(name: str = NAME) -> Vocabulary:
    """The vocabulary of a template file (default: the shipped ``match_vocabulary.json``), read once."""
    data = load_templates(name, required=("name", "version", "words", "senses", "parents"))
    return Vocabulary(tuple(data["words"]), tuple(tuple(s) for s in data["senses"]),
                      tuple(tuple(p) for p in data["parents"]), int(data["version"]))
