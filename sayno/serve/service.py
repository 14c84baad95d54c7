"""What ``sayno serve`` does, without the web framework: one :class:`Service` holds the open index (a
:class:`sayno.search.Searcher`), the CLIPN model, the thumbnail and class-text caches and the upload folder,
with one method per HTTP route (:mod:`sayno.serve.routes` only turns requests into calls).

Request errors are :class:`RequestError` (an HTTP status and a one-line message); the app answers them, a Milvus
that cannot be reached (:class:`sayno.search.milvus.MilvusUnavailable`, 503) and every other
:class:`sayno.errors.SaynoError` (400), as ``{"detail": message}``.

Images are served by id, the sha1 of the file's bytes recorded in the index (never by a name from the request):
any file name works, including ones that are not UTF-8 or hold a newline, and the URLs of a result page stay
valid across rebuilds. Thumbnails are decoded once per file at ``thumb_max`` (JPEG draft mode: the decoder
scales down while reading), kept in a small cache, and every other size is made from that; concurrent requests
for one file wait for the one decode.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from sayno.base.shipped import shipped_weights
from sayno.clipn import load_clipn
from sayno.data.images import to_rgb
from sayno.errors import SaynoError
from sayno.search.query import Searcher, SearchResult
from sayno.search.store import SearchError

UPLOAD_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
MAX_CLASSES = 200  # CLIPN encodes each class's prompts: ~14 ms a class on one busy CPU core (first request)
MAX_CLASS_CHARS = 200
RULES = ("atd", "ctw")
IMAGE_ID = re.compile(r"[0-9a-f]{40}")


@dataclass
class ServeConfig:
    """clipn: CLIPN checkpoint for the class check (``"auto"``: the shipped one for ``embedded``; ``"none"``).
    glasses: Glasses checkpoint (default the index's). model: backbone spec (default the index's). max_k: most
    results per request. thumb_max: largest thumbnail side in pixels. rule: CLIPN decision rule, "atd" or
    "ctw". threads: torch and faiss threads while the app runs and per search (None: leave them alone).
    max_classes: most class names per class check; max_upload_pixels: most pixels of an uploaded image (413).
    host, port: the address served (requests must name it, or localhost, in their Host header; any Host when
    host is 0.0.0.0 or ::); allowed_hosts: more names the server may be reached by. busy: heavy requests of
    one kind (search, thumbnail, class check) running at once; queue: more that wait; beyond, 503."""

    clipn: str | None = "auto"
    glasses: str | None = None
    model: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_k: int = 100
    thumb_max: int = 256
    rule: str = "atd"
    threads: int | None = None
    max_classes: int = MAX_CLASSES
    max_upload_pixels: int = 50_000_000
    host: str = "127.0.0.1"
    port: int = 8000
    allowed_hosts: tuple[str, ...] = ()
    busy: int = 2
    queue: int = 32
    backend: str | None = None  # faiss | milvus; None: as the index was built (sayno.search.milvus)
    uri: str | None = None  # another Milvus address than the index's


class RequestError(SaynoError):
    """A request the service refuses: ``status`` is the HTTP status, the message says why (one line)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


class LruCache:
    """A small thread-safe least-recently-used cache: key -> value, at most ``capacity`` entries. Concurrent
    :meth:`get` calls for one missing key make it once (the others wait for it)."""

    def __init__(self, capacity: int):
        self.data: OrderedDict[Hashable, Any] = OrderedDict()
        self.capacity, self.lock = capacity, threading.Lock()
        self._making: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``make()`` (called outside the cache's lock) stored under it."""
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
            making = self._making.setdefault(key, threading.Lock())
        with making:
            with self.lock:
                if key in self.data:
                    self.data.move_to_end(key)
                    return self.data[key]
            try:
                value = make()
            finally:
                with self.lock:
                    self._making.pop(key, None)
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
        self.thumbs = LruCache(1024)  # (file, mtime_ns, size) -> JPEG bytes
        self.thumb_bases = LruCache(32)  # (file, mtime_ns) -> RGB image at most thumb_max on a side
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

    def search(self, q: str, k: int, mode: str, rerank: int, add: Sequence[str] = (), subtract: Sequence[str] = (),
               matches_only: bool = False) -> dict:
        """One result list, hits with thumbnail and image URLs instead of absolute file names. rclip-style
        terms in ``q`` or ``add``/``subtract`` (text only: a request never names files of the server)."""
        if not 1 <= k <= self.config.max_k:
            raise RequestError(400, f"k={k}: ask for 1 result or more, at most {self.config.max_k} per request")
        return _with_urls(self.searcher.search(q, k, mode=mode, rerank=rerank, add=list(add),
                                               subtract=list(subtract), matches_only=matches_only,
                                               image_terms=False))

    def compare(self, q: str, k: int, rerank: int, add: Sequence[str] = (), subtract: Sequence[str] = (),
                matches_only: bool = False) -> dict:
        """Plain CLIP and sayno for the same query."""
        return {"clip": self.search(q, k, "clip", 0, add, subtract, matches_only),
                "sayno": self.search(q, k, "auto", rerank, add, subtract, matches_only)}

    # ------------------------------------------------------------------------------------------ images
    def open_image(self, image_id: str) -> tuple[BinaryIO, os.stat_result, Path]:
        """The file of an image id (the sha1 of its bytes in the live version's file table), open for reading,
        with its stat and path: a row with that id whose path resolves (symlinks followed) to a regular file
        inside the indexed folder; 404 otherwise, also for a file removed while it was looked up. Once open it
        stays readable (a rebuild that removes it meanwhile cannot turn the answer into a 500). The caller
        closes the file."""
        if not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id):
            raise RequestError(404, "no such image in the index")
        self.searcher.refresh()
        data = self.searcher.data
        root = data.root.resolve()
        for row in data.rows_with_sha1(image_id):
            full = (root / str(data.files.path[row])).resolve()
            opened = _open_regular(full) if full.is_relative_to(root) else None
            if opened is not None:
                return opened[0], opened[1], full
        raise RequestError(404, "no such image in the index")

    def thumbnail(self, image_id: str, size: int) -> bytes:
        """A JPEG thumbnail (side at most ``min(size, thumb_max)``) of an indexed image, cached. The file is
        decoded once (at ``thumb_max``) for all sizes."""
        size = min(size, self.config.thumb_max)
        file, stat_result, full = self.open_image(image_id)
        mtime = stat_result.st_mtime_ns
        with file:

            def make() -> bytes:
                base = self.thumb_bases.get((full, mtime), lambda: _decode_small(file, self.config.thumb_max))
                return _jpeg(base, size)

            return self.thumbs.get((full, mtime, size), make)

    # ------------------------------------------------------------------------------------------ CLIPN
    def check_classify_request(self, classes: str, content_type: str | None) -> list[str]:
        """The class names of a class-check request, before its upload is read (503, 422, 415)."""
        if self.clipn is None:
            raise RequestError(503, "no CLIPN checkpoint loaded (start the server with --clipn CKPT)")
        names = parse_classes(classes, self.config.max_classes)
        ctype = (content_type or "").split(";")[0].strip().lower()
        if ctype not in UPLOAD_TYPES:
            raise RequestError(415, f"upload type {ctype or 'unknown'!r}: send a JPEG, PNG or WebP image")
        return names

    def classify(self, names: list[str], upload: bytes, rule: str | None) -> dict:
        """CLIPN's decision for an uploaded image: one of ``names`` (ID) or none of them (OOD)."""
        rule = rule or self.config.rule
        if not upload:
            raise RequestError(415, "empty upload: send a JPEG, PNG or WebP image")
        self.upload_dir.mkdir(mode=0o700, exist_ok=True)  # gone if an earlier run of the app closed it
        tmp = self.upload_dir / f"{uuid.uuid4().hex}.img"
        tmp.write_bytes(upload)
        try:
            image = read_upload(tmp, self.config.max_upload_pixels)
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
    """A result as JSON: paths made printable (a name that is not UTF-8 shows its bytes as \\xNN), files
    replaced by URLs that name the image by id."""
    out = result.to_dict()
    for hit in out["hits"]:
        hit.pop("file")
        image_id = hit.pop("sha1")
        hit["id"] = image_id
        hit["path"] = display_path(hit["path"])
        hit["thumb"], hit["image"] = f"/api/thumb/{image_id}", f"/api/image/{image_id}"
    return out


def display_path(path: str) -> str:
    """``path`` as valid UTF-8 text: bytes of a name that is not UTF-8 (held as surrogates) become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result] | None:
    """``path`` open for reading and its stat when it is a regular file, else None (gone, a folder, a FIFO:
    never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    stat_result = os.fstat(fd)
    if not stat.S_ISREG(stat_result.st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), stat_result


def _decode_small(file: Path | BinaryIO, size: int) -> Image.Image:
    """The image in ``file`` (a path or an open file) as RGB, at most ``size`` on a side (JPEG: decoded at a
    reduced scale)."""
    try:
        with Image.open(file) as im:
            im.draft("RGB", (size, size))
            im.thumbnail((size, size), reducing_gap=2.0)
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file; answered as 422
        raise RequestError(422, f"cannot decode image ({type(e).__name__})") from None


def _jpeg(image: Image.Image, size: int) -> bytes:
    small = image.copy()
    small.thumbnail((size, size))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=85)
    return buf.getvalue()


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
    searcher = searcher or Searcher(index, model=config.model, glasses=config.glasses, threads=config.threads,
                                    backend=config.backend, uri=config.uri)
    path = clipn_path(config.clipn, searcher.data.model)
    if clipn is None and path is not None:
        clipn = load_clipn(path, searcher.backbone)
    service = Service(searcher, config, clipn, path)
    searcher.warm_up()
    return service


def parse_classes(text: str, limit: int = MAX_CLASSES) -> list[str]:
    """Class names, one per line or comma-separated (422 for none, more than ``limit``, too long or
    duplicated)."""
    sep = "\n" if "\n" in text else ","
    names = [" ".join(n.split()) for n in text.split(sep)]
    names = [n for n in names if n]
    if not names:
        raise RequestError(422, "no class names: give one per line or comma-separated")
    if len(names) > limit:
        raise RequestError(422, f"{len(names)} classes: at most {limit} per request")
    long = [n for n in names if len(n) > MAX_CLASS_CHARS]
    if long:
        raise RequestError(422, f"class name longer than {MAX_CLASS_CHARS} characters: {long[0][:40]!r}...")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise RequestError(422, f"duplicated class names: {', '.join(dups[:5])}")
    return names


def read_upload(path: Path, max_pixels: int = 50_000_000) -> Image.Image:
    """An uploaded file as an RGB image: JPEG, PNG or WebP by its bytes (415 otherwise; 413 for more than
    ``max_pixels`` or a decompression bomb, refused from the header before decoding)."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in UPLOAD_TYPES.values():
                raise RequestError(415, f"the upload is {fmt or 'not an image'}: send a JPEG, PNG or WebP image")
            if im.width * im.height > max_pixels:
                raise RequestError(413, f"image of {im.width}x{im.height} pixels: at most {max_pixels} pixels")
            im.load()
            return to_rgb(im)
    except RequestError:
        raise
    except Image.DecompressionBombError:
        raise RequestError(413, "image has too many pixels") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad upload; answered as 415
        raise RequestError(415, f"cannot decode the upload as an image ({type(e).__name__})") from None
