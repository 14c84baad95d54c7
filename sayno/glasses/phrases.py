"""Frozen-CLIP embeddings of the extra texts Glasses need (negated phrases' prompts, affirmative remainders),
memoised in a bounded cache.

A long-running process (``sayno serve``, an index search) sees an open-ended stream of phrases, so the memo
is a least-recently-used cache of at most ``capacity`` texts (default :data:`DEFAULT_CAPACITY` = 4096,
about 2 MB at D = 128): the oldest unused entries are dropped first and re-encoded when they come back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from sayno.glasses.config import GlassesError

DEFAULT_CAPACITY = 4096


class PhraseEncoder:
    """texts -> (n, D) float32 normalised embeddings, memoised (LRU, at most ``capacity`` texts).

    encode: the embedding function (texts -> (n, D) array-like), or None when there is none (then encoding a
    text not in the cache raises :class:`GlassesError`). embed_dim: D, for empty inputs.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray] | None, embed_dim: int,
                 capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise GlassesError(f"the phrase cache needs room for at least one text, got capacity {capacity}")
        self._encode = encode
        self.embed_dim = embed_dim
        self.capacity = capacity
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, D) embeddings of ``texts``; texts not in the cache are embedded in one call."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        found = self._lookup(dict.fromkeys(texts))
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            if self._encode is None:
                raise GlassesError("Glasses without a backbone or phrase_encoder cannot embed negated phrases")
            feats = np.asarray(self._encode(missing), dtype=np.float32)
            found.update(zip(missing, feats))
            self._remember(missing, feats)
        return np.stack([found[t] for t in texts])

    def _lookup(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        with self._lock:
            for t in texts:
                vec = self._cache.get(t)
                if vec is not None:
                    self._cache.move_to_end(t)
                    out[t] = vec
        return out

    def _remember(self, texts: Sequence[str], feats: np.ndarray) -> None:
        with self._lock:
            for t, f in zip(texts, feats):
                self._cache[t] = f
                self._cache.move_to_end(t)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
