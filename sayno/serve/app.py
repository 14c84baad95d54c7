"""The HTTP service over an index: a FastAPI app (OpenAPI at ``/docs``) and a small web page at ``/``.

    >>> app = create_app("photos.index")        # doctest: +SKIP
    >>> run(app, host="127.0.0.1", port=8000)   # doctest: +SKIP

Endpoints: ``GET /api/info``, ``GET /api/search``, ``GET /api/compare`` (plain CLIP and sayno side by side),
``GET /api/image/{path}`` and ``GET /api/thumb/{path}`` (only files of the index, inside its folder),
``POST /api/classify`` (CLIPN: is an uploaded image one of these classes?).

Uploads: at most ``max_upload_bytes`` (413 beyond), JPEG/PNG/WebP only, checked on the bytes (415 otherwise),
written to a private temporary folder that is removed when the app stops.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime
import io
import tempfile
import threading
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from sayno.search.build import SHIPPED_CLIPN
from sayno.search.query import MAX_QUERY_CHARS, Searcher
from sayno.search.store import SearchError

UPLOAD_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
MAX_CLASSES = 1000
MAX_CLASS_CHARS = 200


@dataclass
class ServeConfig:
    """clipn: CLIPN checkpoint for the class check (``"auto"``: the shipped one for ``embedded``; ``"none"``).
    glasses: Glasses checkpoint (default the index's). max_k: most results per request. thumb_max: largest
    thumbnail side in pixels. rule: CLIPN decision rule, "atd" or "ctw"."""

    clipn: str | None = "auto"
    glasses: str | None = None
    model: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_k: int = 100
    thumb_max: int = 256
    rule: str = "atd"


def _models():
    """Pydantic response models (built lazily: fastapi and pydantic are in the serve extra)."""
    from pydantic import BaseModel, Field

    class HitOut(BaseModel):
        rank: int
        path: str = Field(description="Path relative to the indexed folder")
        score: float = Field(description="Higher = better match (CLIP logit scale)")
        refined: bool = Field(description="Scored with the image-conditioned Glasses lambda (re-ranking)")
        thumb: str = Field(description="URL of a thumbnail")
        image: str = Field(description="URL of the full image")

    class PhraseOut(BaseModel):
        phrase: str
        hedged: bool
        lam: float = Field(alias="lambda", description="Caption-only repulsion strength")

    class SearchOut(BaseModel):
        query: str
        method: str = Field(description="'clip' (plain CLIP) or 'glasses' (CLIPGlasses)")
        negated: bool
        phrases: list[PhraseOut]
        notes: list[str]
        index_size: int
        version: str
        ms: float
        hits: list[HitOut]

    class CompareOut(BaseModel):
        clip: SearchOut
        sayno: SearchOut

    class InfoOut(BaseModel):
        index: str
        version: str
        images: int
        root: str
        model: str | None
        fingerprint: str | None
        glasses: str | None
        bad_files: int
        clipn: str | None
        max_upload_bytes: int
        max_k: int

    class ClassOut(BaseModel):
        name: str
        p: float = Field(description="Softmax over the classes")
        p_yes: float = Field(description="CLIPN's probability that the image is this class")

    class ClassifyOut(BaseModel):
        decision: str = Field(description="'ID' (one of the classes) or 'OOD' (none of them)")
        predicted: str
        score: float = Field(description="Higher = more in-distribution")
        rule: str
        classes: list[ClassOut]

    return HitOut, SearchOut, CompareOut, InfoOut, ClassifyOut


class _Thumbs:
    """A small LRU of encoded thumbnails (path, size) -> JPEG bytes."""

    def __init__(self, capacity: int = 2048):
        self.data: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self.capacity, self.lock = capacity, threading.Lock()

    def get(self, key, make):
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


def create_app(index: str | Path, config: ServeConfig | None = None, *, searcher: Searcher | None = None,
               clipn=None):
    """The FastAPI app for ``index``. ``searcher``/``clipn``: already loaded objects (tests, embedding)."""
    from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    cfg = config or ServeConfig()
    searcher = searcher or Searcher(index, model=cfg.model, glasses=cfg.glasses)
    clipn_path = _clipn_path(cfg.clipn, searcher)
    if clipn is None and clipn_path is not None:
        from sayno.clipn.checkpoint import load_clipn

        clipn = load_clipn(clipn_path, searcher.backbone)
    if cfg.rule not in ("atd", "ctw"):
        raise SearchError(f"rule={cfg.rule!r}: use atd or ctw")
    searcher.warm_up()
    _, SearchOut, CompareOut, InfoOut, ClassifyOut = _models()
    upload_dir = tempfile.TemporaryDirectory(prefix="sayno-uploads-")
    thumbs = _Thumbs()
    class_cache: OrderedDict[tuple[str, ...], object] = OrderedDict()
    class_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        upload_dir.cleanup()

    app = FastAPI(title="sayno search", version="1", lifespan=lifespan,
                  description="Negation-aware image search (CLIPGlasses) and zero-shot class checks (CLIPN) "
                              "over one indexed folder.")
    app.state.searcher, app.state.clipn, app.state.upload_dir = searcher, clipn, Path(upload_dir.name)

    def bad_request(e: Exception) -> HTTPException:
        return HTTPException(400, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

    def out(result) -> dict:
        d = result.to_dict()
        for h in d["hits"]:
            h.pop("file")
            url = quote(h["path"])
            h["thumb"], h["image"] = f"/api/thumb/{url}", f"/api/image/{url}"
        return d

    def run_search(q: str, k: int, mode: str, rerank: int):
        if k > cfg.max_k:
            raise HTTPException(400, f"k={k}: at most {cfg.max_k} results per request")
        try:
            return searcher.search(q, k, mode=mode, rerank=rerank)
        except SearchError as e:
            raise bad_request(e) from None

    def indexed_file(path: str) -> Path:
        """The file for an index-relative path: it must be in the index and inside the indexed folder."""
        searcher.refresh()
        data = searcher.data
        rows = getattr(data, "_path_rows", None)
        if rows is None:
            rows = set(data.files.path.tolist())
            data._path_rows = rows  # type: ignore[attr-defined]
        if path not in rows:
            raise HTTPException(404, "no such image in the index")
        root = data.root.resolve()
        full = (root / path).resolve()
        if not full.is_relative_to(root) or not full.is_file():
            raise HTTPException(404, "no such image in the index")
        return full

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("sayno.serve").joinpath("static/index.html").read_text())

    @app.get("/api/info", response_model=InfoOut, summary="What is indexed and with which models")
    def info() -> dict:
        searcher.refresh()
        return {**searcher.info(), "clipn": str(clipn_path) if clipn is not None else None,
                "max_upload_bytes": cfg.max_upload_bytes, "max_k": cfg.max_k}

    @app.get("/api/search", response_model=SearchOut, summary="Search the index",
             description="CLIPGlasses when the query negates something (mode=auto), plain CLIP otherwise.")
    def api_search(q: str = Query(..., max_length=MAX_QUERY_CHARS, description="The query"),
                   k: int = Query(20, ge=1), mode: str = Query("auto", pattern="^(auto|clip)$"),
                   rerank: int = Query(0, ge=0, description="Re-rank the top N with the image-conditioned "
                                                            "lambda")) -> dict:
        return out(run_search(q, k, mode, rerank))

    @app.get("/api/compare", response_model=CompareOut, summary="Plain CLIP and sayno for the same query")
    def api_compare(q: str = Query(..., max_length=MAX_QUERY_CHARS), k: int = Query(20, ge=1),
                    rerank: int = Query(0, ge=0)) -> dict:
        return {"clip": out(run_search(q, k, "clip", 0)), "sayno": out(run_search(q, k, "auto", rerank))}

    @app.get("/api/image/{path:path}", summary="An indexed image (only files of the index)")
    def api_image(path: str) -> Response:
        from fastapi.responses import FileResponse

        return FileResponse(indexed_file(path))

    @app.get("/api/thumb/{path:path}", summary="A JPEG thumbnail of an indexed image")
    def api_thumb(path: str, size: int = Query(160, ge=16)) -> Response:
        size = min(size, cfg.thumb_max)
        full = indexed_file(path)
        st = full.stat()

        def make() -> bytes:
            try:
                with Image.open(full) as im:
                    im.draft("RGB", (size, size))
                    im = im.convert("RGB")
                    im.thumbnail((size, size))
                    buf = io.BytesIO()
                    im.save(buf, "JPEG", quality=85)
                    return buf.getvalue()
            except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
                raise HTTPException(422, f"cannot decode image ({type(e).__name__})") from None

        data = thumbs.get((path, size, st.st_mtime_ns), make)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/classify", response_model=ClassifyOut, summary="Is this image one of my classes? (CLIPN)",
              responses={413: {"description": "Upload too large"}, 415: {"description": "Not an image"}})
    async def api_classify(file: UploadFile = File(..., description="A JPEG, PNG or WebP image"),  # noqa: B008
                           classes: str = Form(..., description="Class names, one per line or comma-separated"),
                           rule: str = Form(cfg.rule, pattern="^(atd|ctw)$")) -> dict:
        if clipn is None:
            raise HTTPException(503, "no CLIPN checkpoint loaded (start the server with --clipn CKPT)")
        names = _parse_classes(classes)
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if ctype not in UPLOAD_TYPES:
            raise HTTPException(415, f"upload type {ctype or 'unknown'!r}: send a JPEG, PNG or WebP image")
        data = bytearray()
        while chunk := await file.read(1 << 16):
            data += chunk
            if len(data) > cfg.max_upload_bytes:
                raise HTTPException(413, f"upload larger than {cfg.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(415, "empty upload: send a JPEG, PNG or WebP image")
        tmp = Path(upload_dir.name) / f"{uuid.uuid4().hex}.img"
        tmp.write_bytes(bytes(data))
        try:
            image = _read_upload(tmp)
        finally:
            tmp.unlink(missing_ok=True)
        feats = searcher.backbone.encode_image([image]).float().cpu().numpy()
        key = tuple(names)
        with class_lock:
            texts = class_cache.get(key)
        if texts is None:
            try:
                texts = clipn.class_texts(names)
            except ValueError as e:
                raise bad_request(e) from None
            with class_lock:
                class_cache[key] = texts
                while len(class_cache) > 64:
                    class_cache.popitem(last=False)
        p, p_yes = clipn.probabilities(feats, texts)
        d = clipn.decide(feats, texts, rule)
        order = sorted(range(len(names)), key=lambda j: -p[0, j])
        return {"decision": "OOD" if d.is_ood[0] else "ID", "predicted": names[int(d.pred[0])],
                "score": float(d.score[0]), "rule": rule,
                "classes": [{"name": names[j], "p": float(p[0, j]), "p_yes": float(p_yes[0, j])} for j in order]}

    @app.exception_handler(SearchError)
    async def search_error(_request, exc: SearchError):
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=400)

    return app


def _clipn_path(spec: str | None, searcher: Searcher) -> Path | None:
    if spec is None or str(spec).lower() == "none":
        return None
    if spec == "auto":
        return SHIPPED_CLIPN if searcher.data.meta.get("model") == "embedded" and SHIPPED_CLIPN.is_file() else None
    p = Path(spec).expanduser()
    if not p.is_file():
        raise SearchError(f"{p}: no such CLIPN checkpoint")
    return p


def _parse_classes(text: str):
    from fastapi import HTTPException

    sep = "\n" if "\n" in text else ","
    names = [" ".join(n.split()) for n in text.split(sep)]
    names = [n for n in names if n]
    if not names:
        raise HTTPException(422, "no class names: give one per line or comma-separated")
    if len(names) > MAX_CLASSES:
        raise HTTPException(422, f"{len(names)} classes: at most {MAX_CLASSES}")
    long = [n for n in names if len(n) > MAX_CLASS_CHARS]
    if long:
        raise HTTPException(422, f"class name longer than {MAX_CLASS_CHARS} characters: {long[0][:40]!r}...")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise HTTPException(422, f"duplicated class names: {', '.join(dups[:5])}")
    return names


def _read_upload(path: Path) -> Image.Image:
    from fastapi import HTTPException

    from sayno.data.images import to_rgb

    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt not in UPLOAD_TYPES.values():
                raise HTTPException(415, f"the upload is {fmt or 'not an image'}: send a JPEG, PNG or WebP image")
            im.load()
            return to_rgb(im)
    except HTTPException:
        raise
    except Image.DecompressionBombError:
        raise HTTPException(413, "image has too many pixels") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad upload
        raise HTTPException(415, f"cannot decode the upload as an image ({type(e).__name__})") from None


def run(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
