"""Batched feature extraction through a :class:`~sayno.backbones.base.Backbone`, with an on-disk cache.

Images are keyed by the sha1 of their file bytes and texts by the sha1 of their utf-8 text, in the
namespace of the backbone's fingerprint (plus its precision when not fp32), so a moved or renamed file
still hits the cache and a retrained model never does. Only the misses are decoded and encoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from sayno.backbones.base import Backbone, to_numpy
from sayno.cliutil import progress_bar
from sayno.data.errors import BadRow, DataError
from sayno.data.images import load_image
from sayno.errors import SaynoError
from sayno.features.cache import FeatureCache, sha1_file, sha1_text

FLUSH_ROWS = 8192  # cache writes are batched into shards of about this many rows


class CacheWriteError(SaynoError):
    """The feature cache could not be written (a full disk, a read-only folder); one line naming the folder."""


@dataclass
class ImageFeatures:
    """features: (N, D) float32, NaN rows where ``ok_mask`` is False; ok_mask: (N,) bool; bad: one entry
    per unreadable file (the caller decides whether to drop the rows or fail). tokens: with
    ``encode_images(..., tokens=True)``, (N, 1 + P, D) float16 normalised image + patch features
    (:meth:`~sayno.backbones.base.Backbone.encode_image_tokens`), else None."""

    features: np.ndarray
    ok_mask: np.ndarray
    bad: list[BadRow] = field(default_factory=list)
    tokens: np.ndarray | None = None


TOKEN_KIND = "image_tokens"  # the cache kind of the (1 + P, D) float16 token arrays


def cache_namespace(backbone: Backbone) -> str:
    """The cache namespace of a backbone: its fingerprint, plus ``-fp16``/``-bf16`` when not fp32."""
    dtype = getattr(backbone, "dtype", torch.float32)
    if dtype == torch.float32:
        return backbone.fingerprint
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
    return f"{backbone.fingerprint}-{names.get(dtype, str(dtype).removeprefix('torch.'))}"


def _progress(enabled: bool) -> Progress | nullcontext:
    if not enabled:
        return nullcontext()
    return progress_bar()  # readable in logs too (sayno.cliutil.LogProgress)


class _Writer:
    """Buffers cache puts and writes them in shards of about FLUSH_ROWS rows."""

    def __init__(self, cache: FeatureCache | None, namespace: str, kind: str):
        self.cache, self.namespace, self.kind = cache, namespace, kind
        self.keys: list[str] = []
        self.values: list[np.ndarray] = []

    def add(self, keys: list[str], values: np.ndarray) -> None:
        if self.cache is None or not keys:
            return
        self.keys.extend(keys)
        self.values.append(values)
        if len(self.keys) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        keys, values = self.keys, self.values
        self.keys, self.values = [], []
        if self.cache is not None and keys:
            try:
                self.cache.put(self.namespace, self.kind, keys, np.concatenate(values))
            except OSError as e:  # ENOSPC, EROFS, EACCES ...: what the write stages say, in one line
                raise CacheWriteError(f"{self.cache.folder(self.namespace, self.kind)}: cannot write the feature "
                                      f"cache ({e.strerror or type(e).__name__}); free some space or use another "
                                      "cache folder (SAYNO_CACHE)") from e


class _Decode(torch.utils.data.Dataset):
    """Files -> (index, (3, H, W) pixels or None, reason or None); never raises on a bad image."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable):
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor | None, str | None]:
        p = self.paths[j]
        try:
            img = load_image(p)
        except DataError as e:
            return j, None, str(e).removeprefix(f"{p}: ")
        try:
            return j, self.preprocess(img), None
        except (ValueError, TypeError, RuntimeError, OSError) as e:
            return j, None, f"preprocessing failed ({type(e).__name__}: {e})"


def _as_list(batch: list) -> list:
    return batch


def encode_images(backbone: Backbone, paths: Sequence[str | os.PathLike], *,
                  cache: FeatureCache | None = None, batch_size: int = 64, num_workers: int = 0,
                  progress: bool = True, tokens: bool = False) -> ImageFeatures:
    """Image files -> :class:`ImageFeatures` with (N, D) normalised float32 features.

    Files are hashed, looked up in ``cache``, and only the missing contents are decoded (a torch
    DataLoader with ``num_workers`` processes when > 0) and encoded, each distinct content once. Missing
    or corrupt files become ``bad`` entries, NaN rows and ``ok_mask`` False. A rich progress bar is shown
    when ``progress`` and there is more than one batch of work.

    tokens: also the (N, 1 + P, D) image + patch features of a ViT tower (``ImageFeatures.tokens``, float16),
    computed in the same forward pass as the image features and cached beside them (kind ``image_tokens``);
    an image whose features are cached but not its tokens is encoded again. Raises
    :class:`~sayno.backbones.base.BackboneError` for a tower without patch tokens.
    """
    paths = [Path(p) for p in paths]
    n, dim = len(paths), int(backbone.embed_dim)
    feats = np.full((n, dim), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    bad: list[BadRow] = []
    count = None
    if tokens:
        count = backbone.image_token_count()
        if count is None:
            backbone.encode_image_tokens([])  # raises the one-line reason
    toks = np.full((n, count, dim), np.nan, dtype=np.float16) if count is not None else None
    if n == 0:
        return ImageFeatures(feats, ok, bad, toks)
    ns = cache_namespace(backbone)
    show = progress and n > batch_size
    with _progress(show) as bar:
        # 1. hash every file (content keys)
        keys: list[str | None] = [None] * n
        task = bar.add_task("hashing images", total=n) if show else None
        for i, p in enumerate(paths):
            try:
                keys[i] = sha1_file(p)
            except FileNotFoundError:
                bad.append(BadRow(str(p), None, "image not found"))
            except OSError as e:
                bad.append(BadRow(str(p), None, f"cannot read image ({type(e).__name__}: {e.strerror or e})"))
            if show and (i + 1) % 256 == 0:
                bar.update(task, completed=i + 1)
        if show:
            bar.update(task, completed=n)
        readable = [i for i in range(n) if keys[i] is not None]
        # 2. cache hits (with tokens: only where both the features and the tokens are cached)
        done: dict[str, np.ndarray] = {}
        done_tok: dict[str, np.ndarray] = {}
        kept: dict[str, np.ndarray] = {}
        if cache is not None and readable:
            found, values = cache.get(ns, "image", [keys[i] for i in readable])  # type: ignore[misc]
            if toks is not None:
                found_t, values_t = cache.get(ns, TOKEN_KIND, [keys[i] for i in readable])  # type: ignore[misc]
                # features cached without tokens: encoded again for the tokens, the cached features kept
                kept = {keys[readable[j]]: values[j] for j in np.flatnonzero(found & ~found_t)}  # type: ignore[index]
                found = found & found_t
            for j in np.flatnonzero(found):
                done[keys[readable[j]]] = values[j]  # type: ignore[index]
                if toks is not None:
                    done_tok[keys[readable[j]]] = values_t[j]  # type: ignore[index]
        # 3. decode + encode each missing content once
        todo: dict[str, Path] = {}
        for i in readable:
            k = keys[i]
            if k not in done and k not in todo:
                todo[k] = paths[i]  # type: ignore[index]
        failed: dict[str, str] = {}
        if todo:
            _encode_missing(backbone, todo, done, failed, cache, ns, batch_size, num_workers,
                            bar if progress and len(todo) > batch_size else None,
                            done_tok if toks is not None else None)
        if toks is not None:
            done.update({k: v for k, v in kept.items() if k in done})
        for i in readable:
            k = keys[i]
            if k in done:
                feats[i] = done[k]  # type: ignore[index]
                if toks is not None:
                    toks[i] = done_tok[k]  # type: ignore[index]
                ok[i] = True
            else:
                reason = failed.get(k, "not encoded")  # type: ignore[arg-type]
                bad.append(BadRow(str(paths[i]), None, reason))
    return ImageFeatures(feats, ok, bad, toks)


def _encode_missing(backbone: Backbone, todo: dict[str, Path], done: dict[str, np.ndarray],
                    failed: dict[str, str], cache: FeatureCache | None, ns: str, batch_size: int,
                    num_workers: int, bar: Progress | None, done_tok: dict[str, np.ndarray] | None = None) -> None:
    keys, files = list(todo), list(todo.values())
    data = _Decode(files, backbone.preprocess)
    if num_workers > 0:
        batches = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=num_workers,
                                              collate_fn=_as_list, shuffle=False)
    else:
        batches = ([data[j] for j in range(s, min(s + batch_size, len(data)))]
                   for s in range(0, len(data), batch_size))
    writer = _Writer(cache, ns, "image")
    tok_writer = _Writer(cache, ns, TOKEN_KIND)
    task = bar.add_task("encoding images", total=len(files)) if bar is not None else None
    try:
        for batch in batches:
            good = [(j, px) for j, px, _ in batch if px is not None]
            for j, _, reason in batch:
                if reason is not None:
                    failed[keys[j]] = reason
            if good:
                pixels = torch.stack([px for _, px in good])
                batch_keys = [keys[j] for j, _ in good]
                if done_tok is None:
                    out = to_numpy(backbone.encode_image(pixels))
                else:  # one forward pass: row 0 is the image feature
                    tok = to_numpy(backbone.encode_image_tokens(pixels))
                    out = np.ascontiguousarray(tok[:, 0])
                    tok = tok.astype(np.float16)
                    for k, v in zip(batch_keys, tok):
                        done_tok[k] = v
                    tok_writer.add(batch_keys, tok)
                for k, v in zip(batch_keys, out):
                    done[k] = v
                writer.add(batch_keys, out)
            if bar is not None:
                bar.advance(task, len(batch))
    finally:
        writer.flush()  # keep what was encoded, even if a later batch fails
        tok_writer.flush()


def encode_texts(backbone: Backbone, texts: Sequence[str] | str, *, cache: FeatureCache | None = None,
                 layers: bool = False, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Captions -> normalised float32 features (N, D), or (N, L, D) per text layer with ``layers``.

    Each distinct text is encoded once; cached texts (by sha1 of the text) are not encoded again.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must be strings, got {type(t).__name__}: {t!r}")
    dim = int(backbone.embed_dim)
    shape: tuple[int, ...] = (int(backbone.num_text_layers), dim) if layers else (dim,)
    if not texts:
        return np.zeros((0, *shape), dtype=np.float32)
    kind = "text_layers" if layers else "text"
    ns = cache_namespace(backbone)
    unique = list(dict.fromkeys(texts))
    keys = [sha1_text(t) for t in unique]
    done: dict[str, np.ndarray] = {}
    if cache is not None:
        found, values = cache.get(ns, kind, keys)
        for j in np.flatnonzero(found):
            done[unique[j]] = values[j]  # type: ignore[index]
    # texts of similar length batched together: the text tower skips a batch's trailing padding
    todo = sorted((j for j in range(len(unique)) if unique[j] not in done), key=lambda j: len(unique[j]))
    if todo:
        encode = backbone.encode_text_layers if layers else backbone.encode_text
        show = progress and len(todo) > batch_size
        writer = _Writer(cache, ns, kind)
        with _progress(show) as bar:
            task = bar.add_task("encoding texts", total=len(todo)) if show else None
            try:
                for s in range(0, len(todo), batch_size):
                    idx = todo[s:s + batch_size]
                    out = to_numpy(encode([unique[j] for j in idx]))
                    for j, v in zip(idx, out):
                        done[unique[j]] = v
                    writer.add([keys[j] for j in idx], out)
                    if show:
                        bar.advance(task, len(idx))
            finally:
                writer.flush()
    out = np.stack([done[t] for t in texts]).astype(np.float32, copy=False)
    if out.shape[1:] != shape:
        raise ValueError(f"{kind} features have shape {out.shape[1:]}, expected {shape} for {backbone!r}")
    return out
