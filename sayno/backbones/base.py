"""The one interface every CLIP in sayno is used through.

A :class:`Backbone` is a *frozen* CLIP in eval mode: an image tower and a text tower that map into one
joint space of size ``embed_dim``. Loaders (``open_clip``, ``hf``, ``embedded``) live next to this file and
are reached through :func:`sayno.load`.

Shapes: N = batch, D = ``embed_dim``, L = ``num_text_layers``, T = ``context_length``, W = text width.
"""

from __future__ import annotations

import abc
import hashlib
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from sayno.errors import InputError, SaynoError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class BackboneError(SaynoError, ValueError):
    """A spec, file or checkpoint that cannot be turned into a working backbone."""


class TruncationWarning(UserWarning):
    """A caption was longer than the model's context and was cut."""


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """Stable 16-hex-digit fingerprint of a state dict: names, shapes and fp32 values, order-independent.

    The same weights give the same fingerprint whatever file format or precision they were stored in
    after conversion to fp32, so a fp16 copy of a model has its own fingerprint (its values differ).
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not torch.is_tensor(t):
            continue
        t = t.detach().to("cpu")
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        if t.is_floating_point():
            t = t.float()
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TextTower(nn.Module, abc.ABC):
    """A view on a CLIP's text tower that exposes its input embeddings and every layer.

    It references the backbone's own modules (no copy); ``copy.deepcopy(tower)`` makes a trainable copy
    (CLIPN's "no" encoder does exactly that).
    """

    width: int
    context_length: int
    num_layers: int

    @abc.abstractmethod
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids -> (N, T, W) token + position embeddings (the transformer's input)."""

    @abc.abstractmethod
    def forward(
        self, tokens: torch.Tensor, extra: torch.Tensor | None = None, all_layers: bool = False
    ) -> torch.Tensor:
        """Projected end-of-text features, not normalised.

        tokens: (N, T) ids. extra: optional (T, W) or (N, T, W) added to ``embed(tokens)`` (learnable
        prompts). Returns (N, D), or (N, L, D) with ``all_layers`` (the end-of-text token after every
        transformer layer, each through the final layer norm and the projection; the last equals (N, D)).
        """


class Backbone(abc.ABC):
    """A frozen CLIP. Subclasses set the attributes below in ``__init__``."""

    spec: str  # the spec it was loaded from, e.g. "open_clip:ViT-B-32/openai" or "embedded"
    fingerprint: str  # weights_fingerprint() of the loaded weights
    device: torch.device
    dtype: torch.dtype
    embed_dim: int
    context_length: int
    num_text_layers: int
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    # ---- to implement -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def logit_scale(self) -> float:
        """The model's own (exponentiated) logit scale, e.g. 100.0 for OpenAI CLIP."""

    @abc.abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> (3, H, W) float tensor: resize, centre crop, the model's own mean/std."""

    @abc.abstractmethod
    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        """Token ids (N, T) and, per text, its untruncated length in tokens (incl. start/end)."""

    @abc.abstractmethod
    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed pixels on device -> (N, D) unnormalised image features."""

    @abc.abstractmethod
    def text_tower(self) -> TextTower:
        """The text tower as a :class:`TextTower` (shares weights with this backbone)."""

    # ---- optional: local (patch) features, for ViT image towers ------------------------------------------
    def image_token_count(self) -> int | None:
        """1 + P, the rows of :meth:`encode_image_tokens` (the global feature and P patches), or None when
        the image tower has no patch tokens (a ResNet, a timm tower)."""
        return None

    def _encode_pixels_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels on device -> (N, 1 + P, D) unnormalised: row 0 the image feature (as
        ``_encode_pixels``), rows 1.. every patch token through the same final layer norm and projection."""
        raise BackboneError(f"{self.spec}: local (patch) features need a ViT image tower with patch tokens")

    # ---- shared behaviour ---------------------------------------------------------------------------
    def text_read_chars(self, texts: Sequence[str]) -> list[int]:
        """Per text, how many of its leading characters the text encoder reads: ``len(text)`` when its tokens
        (with start and end) fit the context of T tokens, else the end of the longest whitespace-delimited
        prefix that fits (a word cut by the context counts as unread)."""
        texts = list(texts)
        if not texts:
            return []
        _, lengths = self._tokenize(texts)
        return [len(t) if n <= self.context_length else self._fitting_prefix(t) for t, n in zip(texts, lengths)]

    def _fitting_prefix(self, text: str) -> int:
        """End of the longest prefix of whole words whose tokens fit the context (binary search)."""
        ends = [m.end() for m in re.finditer(r"\S+", text)]
        lo, hi = 0, len(ends)  # the first ``lo`` words fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._tokenize([text[:ends[mid - 1]]])[1][0] <= self.context_length:
                lo = mid
            else:
                hi = mid - 1
        return ends[lo - 1] if lo else 0

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Texts -> (N, T) token ids. Texts longer than the context are truncated with a warning."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"texts[{i}] must be a str, got {type(t).__name__} ({t!r:.40})")
        tokens, lengths = self._tokenize(texts)
        too_long = [t for t, n in zip(texts, lengths) if n > self.context_length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} caption(s) longer than the context of {self.context_length} tokens were "
                f"truncated, e.g. {too_long[0][:80]!r}",
                TruncationWarning,
                stacklevel=2,
            )
        return tokens

    def _pixels(self, images: torch.Tensor | Iterable[Image.Image]) -> torch.Tensor:
        """PIL images or (N, 3, H, W) pixels -> pixels on device; one-line :class:`InputError` for anything else."""
        if torch.is_tensor(images):
            if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
                raise InputError(f"encode_image: pixels must have shape (N, 3, H, W) with N >= 1, got "
                                 f"{tuple(images.shape)}")
            return images.to(self.device, self.dtype)
        if isinstance(images, Image.Image):
            images = [images]
        images = list(images)
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                raise InputError(f"encode_image: images[{i}] must be a PIL image, got {type(im).__name__}")
            if im.width < 1 or im.height < 1:
                raise InputError(f"encode_image: images[{i}] is {im.width}x{im.height} pixels; expected a "
                                 "non-empty image")
        return torch.stack([self.preprocess(im) for im in images]).to(self.device, self.dtype)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor | Sequence[Image.Image], normalize: bool = True) -> torch.Tensor:
        """PIL images (a list, or one) or preprocessed (N, 3, H, W) pixels -> (N, D) float32 features on
        ``device``. No images (``[]``) -> an empty (0, D) tensor."""
        if not torch.is_tensor(images):
            images = [images] if isinstance(images, Image.Image) else list(images)
            if not images:
                return torch.zeros((0, self.embed_dim), device=self.device)
        f = self._encode_pixels(self._pixels(images)).float()
        return nn.functional.normalize(f, dim=-1) if normalize else f

    @torch.no_grad()
    def encode_image_tokens(self, images: torch.Tensor | Sequence[Image.Image], normalize: bool = True
                            ) -> torch.Tensor:
        """Images (as :meth:`encode_image`) -> (N, 1 + P, D) float32 in the joint space, from one forward pass:
        row 0 is :meth:`encode_image`'s feature, rows 1..P the patch tokens projected like it (final layer norm,
        then projection), each L2-normalised when ``normalize``. GL-MCM's local features. Raises
        :class:`BackboneError` for an image tower without patch tokens (:meth:`image_token_count` is None)."""
        count = self.image_token_count()
        if count is None:
            raise BackboneError(f"{self.spec}: local (patch) features need a ViT image tower with patch tokens")
        if not torch.is_tensor(images):
            images = [images] if isinstance(images, Image.Image) else list(images)
            if not images:
                return torch.zeros((0, count, self.embed_dim), device=self.device)
        f = self._encode_pixels_tokens(self._pixels(images)).float()
        return nn.functional.normalize(f, dim=-1) if normalize else f

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Captions -> (N, D) float32 features on ``device``."""
        tokens = self.tokenize(texts).to(self.device)
        f = self.text_tower()(tokens).float()
        return nn.functional.normalize(f, dim=-1) if normalize else f

    @torch.no_grad()
    def encode_text_layers(self, texts: str | Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Captions -> (N, L, D): the end-of-text token of every text layer, in the joint space."""
        tokens = self.tokenize(texts).to(self.device)
        f = self.text_tower()(tokens, all_layers=True).float()
        return nn.functional.normalize(f, dim=-1) if normalize else f

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(spec={self.spec!r}, fingerprint={self.fingerprint!r}, "
            f"embed_dim={self.embed_dim}, device={self.device}, dtype={self.dtype})"
        )


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """Detached float32 numpy copy of a tensor."""
    return x.detach().float().cpu().numpy()
