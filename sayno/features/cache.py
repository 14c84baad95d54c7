"""A persistent key -> feature-vector store, one namespace per (model fingerprint, kind).

Layout: ``root/<fingerprint>/<kind>/<shard>.npz``; each shard holds ``keys`` (K,) 40-character sha1 hex
strings and ``values`` (K, ...) float32 (float16 when put as float16: the patch tokens of GL-MCM). Shards are append-only and written atomically (temp file in the
same folder, then ``os.replace``), so a crash never leaves a broken shard; several processes may write to
one cache (each writes its own shards). A namespace is read lazily, once per process per
:class:`FeatureCache` instance; later puts go to memory and to a new shard.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def sha1_bytes(data: bytes) -> str:
    """sha1 hex digest of raw bytes (image files are keyed by content, not by path)."""
    return hashlib.sha1(data).hexdigest()


def sha1_text(text: str) -> str:
    """sha1 hex digest of a text's utf-8 encoding."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def sha1_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha1 hex digest of a file's bytes (read in chunks)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_cache_root() -> Path:
    """``$SAYNO_CACHE`` if set, else ``~/.cache/sayno/features``."""
    env = os.environ.get("SAYNO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sayno" / "features"


def _stored(values: np.ndarray) -> np.ndarray:
    """float16 stays float16; anything else becomes float32."""
    return values if values.dtype == np.float16 else values.astype(np.float32, copy=False)


class _Namespace:
    """The in-memory copy of one (fingerprint, kind): key -> (block, row)."""

    def __init__(self) -> None:
        self.index: dict[str, tuple[int, int]] = {}
        self.blocks: list[np.ndarray] = []
        self.shape: tuple[int, ...] | None = None

    def add(self, keys: Sequence[str], values: np.ndarray) -> None:
        b = len(self.blocks)
        self.blocks.append(values)
        if self.shape is None:
            self.shape = tuple(values.shape[1:])
        for r, k in enumerate(keys):
            self.index[str(k)] = (b, r)


class FeatureCache:
    """Feature vectors keyed by sha1 content hashes, per (model fingerprint, kind).

    ``kind`` names what the vectors are, e.g. ``"image"``, ``"text"``, ``"text_layers"``.

    >>> cache = FeatureCache(tmp)                                            # doctest: +SKIP
    >>> cache.put("abc123", "text", [sha1_text("a dog")], np.ones((1, 4)))   # doctest: +SKIP
    >>> cache.get("abc123", "text", [sha1_text("a dog")])[0]                 # doctest: +SKIP
    array([ True])
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self._spaces: dict[tuple[str, str], _Namespace] = {}

    @classmethod
    def default(cls) -> FeatureCache:
        """The cache at :func:`default_cache_root`."""
        return cls(None)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    # ------------------------------------------------------------------------------------------ paths
    def folder(self, fingerprint: str, kind: str) -> Path:
        """``root/<fingerprint>/<kind>``; both must be plain names (letters, digits, ``._+-``)."""
        for what, v in (("fingerprint", fingerprint), ("kind", kind)):
            if not _SAFE.match(v):
                raise ValueError(f"cache {what} must be a plain name (letters, digits, ._+-), got {v!r}")
        return self.root / fingerprint / kind

    def _space(self, fingerprint: str, kind: str) -> _Namespace:
        key = (fingerprint, kind)
        if key not in self._spaces:
            self._spaces[key] = self._load(self.folder(fingerprint, kind))
        return self._spaces[key]

    @staticmethod
    def _load(folder: Path) -> _Namespace:
        ns = _Namespace()
        if not folder.is_dir():
            return ns
        for shard in sorted(folder.glob("*.npz")):
            if shard.name.startswith("."):
                continue
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, values = z["keys"], z["values"]
                if keys.ndim != 1 or values.shape[:1] != keys.shape:
                    raise ValueError(f"keys {keys.shape} and values {values.shape} do not match")
                if ns.shape is not None and tuple(values.shape[1:]) != ns.shape:
                    raise ValueError(f"values of shape {values.shape[1:]}, the others have {ns.shape}")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # never fatal
                warnings.warn(f"feature cache: ignoring unreadable shard {shard} ({e})", RuntimeWarning,
                              stacklevel=3)
                continue
            ns.add(keys.tolist(), _stored(values))
        return ns

    # ---------------------------------------------------------------------------------------- get/put
    def get(self, fingerprint: str, kind: str, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Look keys up -> (found (K,) bool, values (K, ...) float32 (float16 for a float16 namespace) with NaN
        rows where not found).

        ``values`` is None when this namespace holds nothing yet (its vector shape is unknown).
        """
        ns = self._space(fingerprint, kind)
        found = np.zeros(len(keys), dtype=bool)
        if ns.shape is None:
            return found, None
        out = np.full((len(keys), *ns.shape), np.nan, dtype=ns.blocks[0].dtype)
        for j, k in enumerate(keys):
            hit = ns.index.get(k)
            if hit is not None:
                out[j] = ns.blocks[hit[0]][hit[1]]
                found[j] = True
        return found, out

    def put(self, fingerprint: str, kind: str, keys: Sequence[str], values: np.ndarray) -> None:
        """Store (K,) keys with (K, ...) values (kept as float32, or float16 when given float16: half the disk
        and memory for large per-image arrays) in memory and in one new shard.

        Keys already present are skipped; values must match the namespace's vector shape.
        """
        values = _stored(np.asarray(values))
        keys = [str(k) for k in keys]
        if values.ndim < 1 or values.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but values of shape {values.shape}")
        ns = self._space(fingerprint, kind)
        if ns.shape is not None and tuple(values.shape[1:]) != ns.shape:
            raise ValueError(f"cache {fingerprint}/{kind} holds vectors of shape {ns.shape}, "
                             f"got {tuple(values.shape[1:])}")
        new: dict[str, int] = {}
        for r, k in enumerate(keys):
            if k not in ns.index and k not in new:
                new[k] = r
        if not new:
            return
        k_arr = np.asarray(list(new), dtype="<U40" if all(len(k) <= 40 for k in new) else str)
        v_arr = np.ascontiguousarray(values[list(new.values())])
        self._write(self.folder(fingerprint, kind), k_arr, v_arr)
        ns.add(k_arr.tolist(), v_arr)

    @staticmethod
    def _write(folder: Path, keys: np.ndarray, values: np.ndarray) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, values=values)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return folder / name

    # -------------------------------------------------------------------------------------- upkeep
    def __len__(self) -> int:
        """Entries loaded in this process so far (all namespaces touched)."""
        return sum(len(ns.index) for ns in self._spaces.values())

    def count(self, fingerprint: str, kind: str) -> int:
        """Number of vectors stored for (fingerprint, kind)."""
        return len(self._space(fingerprint, kind).index)

    def compact(self, fingerprint: str, kind: str) -> int:
        """Rewrite a namespace's shards as one shard (atomically, then remove the old ones).

        Returns the number of entries. Run it when no other process is writing to this namespace.
        """
        folder = self.folder(fingerprint, kind)
        old = sorted(p for p in folder.glob("*.npz") if not p.name.startswith(".")) if folder.is_dir() else []
        ns = self._load(folder)
        self._spaces[(fingerprint, kind)] = ns
        if len(old) <= 1 or not ns.index:
            return len(ns.index)
        keys = list(ns.index)
        values = np.stack([ns.blocks[b][r] for b, r in ns.index.values()])
        new = self._write(folder, np.asarray(keys), values)
        for p in old:
            if p != new:
                p.unlink(missing_ok=True)
        return len(keys)
