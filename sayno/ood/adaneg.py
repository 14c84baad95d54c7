"""AdaNeg (Zhang & Zhang, "AdaNeg: Adaptive Negative Proxy Guided OOD Detection with Vision-Language Models",
NeurIPS 2024): NegLabel's negative labels, adapted at test time with a bounded memory of test image features.

The memory has one slot per label (the C ID classes and the K mined negative labels), each holding at most ``L``
test image features. A test batch is first *written*: an image whose NegLabel score is at least ``gamma`` goes to
the slot of its most similar ID class, any other to the slot of its most similar negative label; a full slot keeps
its ``L`` most confident entries (lowest entropy of the softmax over the slot's side, ID classes or negatives; a
new image replaces the highest-entropy entry when its own entropy is lower). Then the batch is *scored* against
proxies built from the memory, each slot's label text feature counted as its first entry (an empty slot's proxy is
its text feature):

- task-adaptive proxy (``sample_adaptive=False``): the normalised mean of the slot's entries;
- sample-adaptive proxy (default): the entries weighted per test image by ``exp(-beta (1 - cos(x, entry)))``,
  summed and normalised: the memory features nearest to the image dominate.

``S = S_neglabel(x; proxies) + lambda * S_neglabel(x; text features)``, both NegLabel's grouped score.

Published settings (ViT-B/16, ImageNet-1K; the authors' OpenOOD-VLM script), all used here: ``L = 10``,
``gamma = 0.5``, ``beta = 5.5``, ``lambda = 0.1``, 5 groups, the scores on ``100 * cos`` (``tau = 0.01``), batches of
256 test images, negatives mined as NegLabel's. Sign: higher = more in-distribution; range (0, 1 + lambda).
Temperature: ``tau = 0.01`` on cosine similarities; ``beta`` is the proxies' attention sharpness. Features:
L2-normalised (image, class, label and memory features).

**Dependence on the test set's order.** A score depends on the images seen before it (and the other images of
its batch), so AdaNeg is transductive: ``score_samples(X)`` starts from an empty memory and streams ``X`` in the
given order (``shuffle=True``: in a ``default_rng(random_state)`` permutation, scores returned in ``X``'s order);
the same ``X``, order and seed give the same scores, another order gives other scores. ``score_partial(X)``
continues the stream of earlier calls (OpenOOD feeds a postprocessor batch by batch); ``reset()`` empties the
memory. The OOD table streams each ID set (the ID images; each shifted-ID set) with every OOD set, in one seeded
random order per stream.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sayno.base.prompts import softmax
from sayno.errors import InputError
from sayno.ood.scorers import NegLabel, NotFittedError, neglabel

SLOT_CHUNK = 512  # occupied memory slots per block of the proxy similarities


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of probabilities (N, K) -> (N,)."""
    return -(p * np.log(p + 1e-12)).sum(axis=-1)


class Memory:
    """The bounded memory: ``feats`` (S, L, D), ``count`` (S,) entries used per slot, ``ent`` (S, L) their
    entropies; S slots (ID classes first, then negatives)."""

    def __init__(self, slots: int, length: int, dim: int):
        self.feats = np.zeros((slots, length, dim), dtype=np.float64)
        self.count = np.zeros(slots, dtype=np.int64)
        self.ent = np.full((slots, length), np.inf)

    def write(self, slot: int, feat: np.ndarray, ent: float) -> None:
        """Add ``feat`` to ``slot``; a full slot replaces its highest-entropy entry if ``ent`` is lower."""
        n, length = self.count[slot], self.feats.shape[1]
        if n < length:
            self.feats[slot, n], self.ent[slot, n] = feat, ent
            self.count[slot] = n + 1
            return
        worst = int(np.argmax(self.ent[slot]))
        if ent < self.ent[slot, worst]:
            self.feats[slot, worst], self.ent[slot, worst] = feat, ent


def proxy_cosine(x: np.ndarray, text: np.ndarray, memory: Memory, beta: float | None) -> np.ndarray:
    """(B, S) cosine of each image to each slot's proxy; x (B, D), text (S, D) normalised.

    A slot's entries are its text feature and its ``count`` memory features; the proxy is their sum weighted by
    ``exp(-beta (1 - cos(x, entry)))`` (``beta=None``: weight 1, the task-adaptive mean), normalised. Computed
    without forming the (B, S, D) proxies: ``cos = (w . sims) / sqrt(w^T G w)`` with G the entries' Gram matrix.
    """
    out = x @ text.T  # empty slots: the text feature itself
    occupied = np.flatnonzero(memory.count > 0)
    for s in range(0, len(occupied), SLOT_CHUNK):  # bounded memory: (B, chunk, 1 + L) at a time
        occ = occupied[s:s + SLOT_CHUNK]
        ent = np.concatenate([text[occ][:, None], memory.feats[occ]], axis=1).astype(np.float32)  # (O, 1 + L, D)
        valid = (np.arange(ent.shape[1])[None, :] <= memory.count[occ][:, None]).astype(np.float32)  # (O, 1 + L)
        sims = np.einsum("bd,old->bol", x.astype(np.float32), ent, optimize=True)  # (B, O, 1 + L)
        if beta is None:
            w = np.broadcast_to(valid, sims.shape)
        else:  # exp(-beta (1 - sims)), in place
            w = sims - np.float32(1.0)
            w *= np.float32(beta)
            np.exp(w, out=w)
            w *= valid
        gram = np.einsum("old,omd->olm", ent, ent, optimize=True)  # (O, 1 + L, 1 + L)
        num = (w * sims).sum(-1, dtype=np.float64)
        sq = (np.einsum("bol,olm->bom", w, gram, optimize=True) * w).sum(-1, dtype=np.float64)
        out[:, occ] = num / np.sqrt(np.maximum(sq, 1e-24))
    return out


class AdaNeg(NegLabel):
    """AdaNeg: NegLabel's negatives plus test-time proxies from a bounded memory (see the module docstring).

    memory_length (L), gamma, beta, lam (lambda), batch_size, sample_adaptive, shuffle as described there;
    n_groups (5), tau (0.01) and the mining parameters as in NegLabel. Fitted: NegLabel's attributes plus
    ``memory_`` (the stream's memory; :meth:`reset` empties it).
    """

    name = "AdaNeg"
    transductive: ClassVar[bool] = True  # scores depend on the other test images (the bench streams all sets)

    def __init__(self, *, memory_length: int = 10, gamma: float = 0.5, beta: float = 5.5, lam: float = 0.1,
                 batch_size: int = 256, sample_adaptive: bool = True, shuffle: bool = False, n_groups: int = 5,
                 **kwargs):
        super().__init__(n_groups=n_groups, **kwargs)
        self.memory_length = memory_length
        self.gamma = gamma
        self.beta = beta
        self.lam = lam
        self.batch_size = batch_size
        self.sample_adaptive = sample_adaptive
        self.shuffle = shuffle

    def _fit_more(self) -> None:
        super()._fit_more()
        if self.memory_length < 1 or self.batch_size < 1:
            raise InputError("AdaNeg needs memory_length >= 1 and batch_size >= 1")
        self.labels_ = np.concatenate([self.class_features_, self.negative_features_])  # (S, D) slot texts
        self.reset()

    def reset(self) -> AdaNeg:
        """Empty the memory (a new test stream)."""
        if not hasattr(self, "labels_"):
            raise NotFittedError(f"{self.name} is not fitted: call fit(class names or features) first")
        self.memory_ = Memory(len(self.labels_), self.memory_length, self.labels_.shape[1])
        return self

    # ------------------------------------------------------------------ the stream
    def _write(self, x: np.ndarray, cos_id: np.ndarray, cos_neg: np.ndarray, s_nl: np.ndarray) -> None:
        """Write a batch into the memory, image by image in order (see the module docstring)."""
        c = cos_id.shape[1]
        for i in range(len(x)):
            side = cos_id[i] if s_nl[i] >= self.gamma else cos_neg[i]
            if side.size == 0:
                continue
            p = softmax(self.scale_ * side)
            slot = int(np.argmax(side)) + (0 if s_nl[i] >= self.gamma else c)
            self.memory_.write(slot, x[i], float(entropy(p[None])[0]))

    def _batch(self, x: np.ndarray) -> np.ndarray:
        c = len(self.class_features_)
        cos_id, cos_neg = x @ self.class_features_.T, x @ self.negative_features_.T
        s_nl = neglabel(cos_id, cos_neg, self.scale_, self.groups_)
        self._write(x, cos_id, cos_neg, s_nl)
        cos = proxy_cosine(x, self.labels_, self.memory_, self.beta if self.sample_adaptive else None)
        s_ada = neglabel(cos[:, :c], cos[:, c:], self.scale_, self.groups_)
        return s_ada + self.lam * s_nl

    def _stream(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._batch(x[s:s + self.batch_size]) for s in range(0, len(x), self.batch_size)])

    def _score_features(self, x: np.ndarray) -> np.ndarray:
        self.reset()
        if not self.shuffle:
            return self._stream(x)
        order = np.random.default_rng(self.random_state).permutation(len(x))
        out = np.empty(len(x))
        out[order] = self._stream(x[order])
        return out

    def score_partial(self, X) -> np.ndarray:
        """(N,) scores of the next images of the stream, in order, continuing the memory of earlier calls."""
        x = self._check(X)
        return np.zeros(0) if x.shape[0] == 0 else self._stream(x)
