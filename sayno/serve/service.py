"""What ``sayno serve`` does, without the web framework: one :class:`Service` holds the open index (a
:class:`sayno.search.Searcher`), the CLIPN model, the thumbnail and class-text caches and the upload folder,
with one method per HTTP route (:mod:`sayno.serve.routes` only turns requests into calls).

Request errors are :class:`RequestError` (an HTTP status and a one-line message); the app answers them, and every
other :class:`sayno.errors.SaynoError` (400), as ``{"detail": message}``.
"""

from __future__ import annotations

import io
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image

from sayno.base.shipped import shipped_weights
from sayno.clipn import load_clipn
from sayno.data.images import to_rgb
from sayno.errors import SaynoError
from sayno.search.query import Searcher, SearchResult
from sayno.search.store import SearchError

UPLOAD_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
MAX_CLASSES = 1000
MAX_CLASS_CHARS = 200
RULES = ("atd", "ctw")


@dataclass
class ServeConfig:
    """clipn: CLIPN checkpoint for the class check (``"auto"``: the shipped one for ``embedded``; ``"none"``).
    glasses: Glasses checkpoint (default the index's). model: backbone spec (default the index's). max_k: most
    results per request. thumb_max: largest thumbnail side in pixels. rule: CLIPN decision rule, "atd" or
    "ctw". threads: torch and faiss threads while the app runs and per search (None: leave them alone)."""

    clipn: str | None = "auto"
    glasses: str | None = None
    model: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_k: int = 100
    thumb_max: int = 256
    rule: str = "atd"
    threads: int | None = None


class RequestError(SaynoError):
    """A request the service refuses: ``status`` is the HTTP status, the message says why (one line)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


class LruCache:
    """A small thread-safe least-recently-used cache: key -> value, at most ``capacity`` entries."""

    def __init__(self, capacity: int):
        self.data: OrderedDict[Hashable, Any] = OrderedDict()
        self.capacity, self.lock = capacity, threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``make()`` (called outside the lock) stored under it."""
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.capacity:
                self.data.popitem(last=False)
        return value


class Service:
    """The state behind the HTTP API and one method per route.

    searcher: the open index. clipn: a loaded CLIPN model (None: the class check answers 503); clipn_path: its
    checkpoint (shown by ``/api/info``). Uploads go to a private temporary folder, removed by :meth:`close`.
    """

    def __init__(self, searcher: Searcher, config: ServeConfig, clipn=None, clipn_path: Path | None = None):
        if config.rule not in RULES:
            raise SearchError(f"rule={config.rule!r}: use atd or ctw")
        self.searcher, self.config = searcher, config
        self.clipn, self.clipn_path = clipn, clipn_path
        self._uploads = tempfile.TemporaryDirectory(prefix="sayno-uploads-")
        self.upload_dir = Path(self._uploads.name)
        self.thumbs = LruCache(2048)  # (path, size, mtime_ns) -> JPEG bytes
        self.class_texts = LruCache(64)  # class names -> CLIPN text features

    def close(self) -> None:
        """Remove the upload folder."""
        self._uploads.cleanup()

    # ------------------------------------------------------------------------------------------ search
    def info(self) -> dict:
        """What is indexed, with which models, and the limits."""
        self.searcher.refresh()
        clipn = str(self.clipn_path) if self.clipn is not None else None
        return {**self.searcher.info(), "clipn": clipn, "max_upload_bytes": self.config.max_upload_bytes,
                "max_k": self.config.max_k}

    def search(self, q: str, k: int, mode: str, rerank: int) -> dict:
        """One result list, hits with thumbnail and image URLs instead of absolute file names."""
        if k > self.config.max_k:
            raise RequestError(400, f"k={k}: at most {self.config.max_k} results per request")
        return _with_urls(self.searcher.search(q, k, mode=mode, rerank=rerank))

    def compare(self, q: str, k: int, rerank: int) -> dict:
        """Plain CLIP and sayno for the same query."""
        return {"clip": self.search(q, k, "clip", 0), "sayno": self.search(q, k, "auto", rerank)}

    # ------------------------------------------------------------------------------------------ images
    def indexed_file(self, path: str) -> Path:
        """The file for an index-relative path: it must be a row of the live version and resolve (symlinks
        followed) to a file inside the indexed folder; 404 otherwise."""
        self.searcher.refresh()
        data = self.searcher.data
        if path not in data.path_set:
            raise RequestError(404, "no such image in the index")
        root = data.root.resolve()
        full = (root / path).resolve()
        if not full.is_relative_to(root) or not full.is_file():
            raise RequestError(404, "no such image in the index")
        return full

    def thumbnail(self, path: str, size: int) -> bytes:
        """A JPEG thumbnail (side at most ``min(size, thumb_max)``) of an indexed image, cached."""
        size = min(size, self.config.thumb_max)
        full = self.indexed_file(path)
        key = (path, size, full.stat().st_mtime_ns)
        return self.thumbs.get(key, lambda: _thumbnail(full, size))

    # ------------------------------------------------------------------------------------------ CLIPN
    def check_classify_request(self, classes: str, content_type: str | None) -> list[str]:
        """The class names of a class-check request, before its upload is read (503, 422, 415)."""
        if self.clipn is None:
            raise RequestError(503, "no CLIPN checkpoint loaded (start the server with --clipn CKPT)")
        names = parse_classes(classes)
        ctype = (content_type or "").split(";")[0].strip().lower()
        if ctype not in UPLOAD_TYPES:
            raise RequestError(415, f"upload type {ctype or 'unknown'!r}: send a JPEG, PNG or WebP image")
        return names

    def classify(self, names: list[str], upload: bytes, rule: str | None) -> dict:
        """CLIPN's decision for an uploaded image: one of ``names`` (ID) or none of them (OOD)."""
        rule = rule or self.config.rule
        if not upload:
            raise RequestError(415, "empty upload: send a JPEG, PNG or WebP image")
        tmp = self.upload_dir / f"{uuid.uuid4().hex}.img"
        tmp.write_bytes(upload)
        try:
            image = read_upload(tmp)
        finally:
            tmp.unlink(missing_ok=True)
        feats = self.searcher.backbone.encode_image([image]).float().cpu().numpy()
        texts = self.class_texts.get(tuple(names), lambda: self.clipn.class_texts(names))
        p, p_yes = self.clipn.probabilities(feats, texts)
        decision = self.clipn.decide(feats, texts, rule)
        order = sorted(range(len(names)), key=lambda j: -p[0, j])
        return {"decision": "OOD" if decision.is_ood[0] else "ID", "predicted": names[int(decision.pred[0])],
                "score": float(decision.score[0]), "rule": rule,
                "classes": [{"name": names[j], "p": float(p[0, j]), "p_yes": float(p_yes[0, j])} for j in order]}


def _with_urls(result: SearchResult) -> dict:
    out = result.to_dict()
    for hit in out["hits"]:
        hit.pop("file")
        url = quote(hit["path"])
        hit["thumb"], hit["image"] = f"/api/thumb/{url}", f"/api/image/{url}"
    return out


def _thumbnail(file: Path, size: int) -> bytes:
    try:
        with Image.open(file) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            return buf.getvalue()
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file; answered as 422
        raise RequestError(422, f"cannot decode image ({type(e).__name__})") from None


def clipn_path(spec: str | None, model: str | None) -> Path | None:
    """The CLIPN checkpoint for ``spec``: ``"auto"`` the shipped one for ``model`` (None if there is none),
    ``"none"``/None: None, else a path that must exist."""
    if spec is None or str(spec).lower() == "none":
        return None
    if spec == "auto":
        return shipped_weights("clipn", model or "")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SearchError(f"{path}: no such CLIPN checkpoint")
    return path


def load_service(index: str | Path, config: ServeConfig, searcher: Searcher | None = None,
                 clipn=None) -> Service:
    """Open the index (unless ``searcher`` is given), load CLIPN (unless given) and warm the searcher up."""
    searcher = searcher or Searcher(index, model=config.model, glasses=config.glasses, threads=config.threads)
    path = clipn_path(config.clipn, searcher.data.model)
    if clipn is None and path is not None:
        clipn = load_clipn(path, searcher.backbone)
    service = Service(searcher, config, clipn, path)
    searcher.warm_up()
    return service


def parse_classes(text: str) -> list[str]:
    """Class names, one per line or comma-separated (422 for none, too many, too long or duplicated)."""
    sep = "\n" if "\n" in text else ","
    names = [" ".join(n.split()) for n in text.split(sep)]
    names = [n for n in names if n]
    if not names:
        raise RequestError(422, "no class names: give one per line or comma-separated")
    if len(names) > MAX_CLASSES:
        raise RequestError(422, f"{len(names)} classes: at most {MAX_CLASSES}")
    long = [n for n in names if len(n) > MAX_CLASS_CHARS]
    if long:
        raise RequestError(422, f"class name longer than {MAX_CLASS_CHARS} characters: {long[0][:40]!r}...")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise RequestError(422, f"duplicated class names: {', '.join(dups[:5])}")
    return names


def read_upload(path: Path) -> Image.Image:
    """An uploaded file as an RGB image: JPEG, PNG or WebP by its bytes (415 otherwise; 413 for a
    decompression bomb)."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in UPLOAD_TYPES.values():
                raise RequestError(415, f"the upload is {fmt or 'not an image'}: send a JPEG, PNG or WebP image")
            im.load()
            return to_rgb(im)
    except RequestError:
        raise
    except Image.DecompressionBombError:
        raise RequestError(413, "image has too many pixels") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad upload; answered as 415
        raise RequestError(415, f"cannot decode the upload as an image ({type(e).__name__})") from None
