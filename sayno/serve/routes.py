"""The web layer of ``sayno serve``: FastAPI routes (one function each) over a :class:`Service`, the response
models of the OpenAPI schema, and :func:`build_app`. Needs the serve extra (fastapi, python-multipart).

No CPU work runs on the event loop: the heavy routes (search, compare, thumbnails, the class check) wait for a
slot of their :class:`sayno.serve.guards.Gate` (``busy`` running, ``queue`` waiting, 503 beyond) and then run
in the thread pool; the light ones are plain ``def`` routes (also the thread pool). The app is wrapped in
:class:`sayno.serve.guards.RequestGuard` (Host/Origin checks, body limit, security headers, JSON 500s).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime
import mimetypes
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from importlib import resources
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from sayno.cliutil import first_line
from sayno.errors import SaynoError
from sayno.runtime import torch_threads
from sayno.search.milvus import MilvusUnavailable
from sayno.search.query import MAX_QUERY_CHARS
from sayno.serve.guards import DOCS_PATHS, FORM_OVERHEAD, Gate, RequestGuard, allowed_hosts, page_csp
from sayno.serve.service import RequestError, Service

DESCRIPTION = ("Negation-aware image search (CLIPGlasses) and zero-shot class checks (CLIPN) over one indexed "
               "folder.")
PAGE = resources.files("sayno.serve").joinpath("static/index.html").read_text()
PAGE_CSP = page_csp(PAGE)
K_HELP = "Number of results, 1 to the server's max_k (400 outside)"


# ------------------------------------------------------------------------------------------ response models
class HitOut(BaseModel):
    rank: int
    id: str = Field(description="The image's id (sha1 of its bytes when indexed); its thumb and image URLs use it")
    path: str = Field(description="Path relative to the indexed folder (bytes that are not UTF-8 shown as \\xNN)")
    score: float = Field(description="Higher = better match (CLIP logit scale)")
    refined: bool = Field(description="Scored with the image-conditioned Glasses lambda (re-ranking)")
    match: bool = Field(description="Passes the index's label-free match test (docs/SEARCH.md, 'Match threshold')")
    thumb: str = Field(description="URL of a thumbnail")
    image: str = Field(description="URL of the full image")


class PhraseOut(BaseModel):
    phrase: str
    hedged: bool
    kind: str = Field(default="object", description="object | predicate | caption (fallback: whole caption)")
    lam: float = Field(alias="lambda", description="Caption-only repulsion strength")


class TermOut(BaseModel):
    text: str
    weight: float
    sign: str = Field(description="'+' (added) or '-' (subtracted)")
    kind: str = Field(description="'text' (image terms are not accepted over HTTP)")


class MatchTestOut(BaseModel):
    wanted: list[str] = Field(description="Phrases a matching image shows")
    unwanted: list[str] = Field(description="Phrases a matching image does not show ('no X', '- X')")
    tau: float = Field(description="The index's presence threshold (training-free calibration)")
    vocabulary: int = Field(0, description="Words of the open vocabulary the test weighs (0: the bank alone)")


class SearchOut(BaseModel):
    query: str
    method: str = Field(description="'clip' (plain CLIP) or 'glasses' (CLIPGlasses)")
    glasses: str = Field("", description="The index's Glasses: 'CLIPGlasses', 'CLIPGlasses (training-free)' or ''")
    negated: bool
    phrases: list[PhraseOut]
    notes: list[str]
    index_size: int
    version: str
    ms: float
    hits: list[HitOut]
    terms: list[TermOut] = Field(default_factory=list, description="rclip-style terms as read")
    reading: str = Field("", description="How the query was read, e.g. '\"a beach\" - \"people\"'")
    match_test: MatchTestOut | None = None
    matches: int = Field(0, description="How many hits match")
    no_match: str = Field("", description="'no image here looks like ...' when no hit matches, else ''")


class CompareOut(BaseModel):
    clip: SearchOut
    sayno: SearchOut


class StaleOut(BaseModel):
    version: str | None = Field(description="The version on disk that is not answering (null: CURRENT unreadable)")
    error: str = Field(description="Why it could not be opened (one line)")


class InfoOut(BaseModel):
    index: str
    version: str
    images: int
    root: str
    model: str | None
    fingerprint: str | None
    glasses: str | None
    glasses_name: str | None = Field(None, description="'CLIPGlasses' or 'CLIPGlasses (training-free)'")
    bad_files: int
    stale: StaleOut | None = Field(None, description="Set when a newer index version on disk could not be opened: "
                                                     "the server keeps answering from `version`")
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


# ------------------------------------------------------------------------------------------ routes
def _service(request: Request) -> Service:
    return request.app.state.service


def _gate(kind: str):
    def get(request: Request) -> Gate:
        return request.app.state.gates[kind]

    return Annotated[Gate, Depends(get)]


ServiceDep = Annotated[Service, Depends(_service)]
SearchGate, ThumbGate, ClassifyGate = _gate("search"), _gate("thumb"), _gate("classify")
router = APIRouter()
BUSY = {503: {"description": "Server busy (too many such requests running and waiting); retry"}}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse(PAGE)


@router.get("/api/info", response_model=InfoOut, summary="What is indexed and with which models")
def info(service: ServiceDep) -> dict:
    return service.info()


@router.get("/api/search", response_model=SearchOut, summary="Search the index", responses=BUSY,
            description="CLIPGlasses when the query negates something (mode=auto), plain CLIP otherwise. rclip-style "
                        "terms in q ('a beach - people + 2:sunset') or as add/subtract parameters.")
async def api_search(service: ServiceDep, gate: SearchGate,
                     q: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="The query")],
                     k: Annotated[int, Query(description=K_HELP)] = 20,
                     mode: Annotated[str, Query(pattern="^(auto|clip)$")] = "auto",
                     rerank: Annotated[int, Query(ge=0, description="Re-rank the top N with the image-conditioned "
                                                                    "lambda")] = 0,
                     add: Annotated[list[str], Query(description="Terms to add (repeatable; 2:sunset)")] = (),
                     subtract: Annotated[list[str], Query(description="Terms to subtract (repeatable)")] = (),
                     matches_only: Annotated[bool, Query(description="Only hits that pass the match test")] = False,
                     ) -> dict:
    _check_terms(add, subtract)
    async with gate.slot():
        return await run_in_threadpool(service.search, q, k, mode, rerank, add, subtract, matches_only)


@router.get("/api/compare", response_model=CompareOut, summary="Plain CLIP and sayno for the same query",
            responses=BUSY)
async def api_compare(service: ServiceDep, gate: SearchGate, q: Annotated[str, Query(max_length=MAX_QUERY_CHARS)],
                      k: Annotated[int, Query(description=K_HELP)] = 20, rerank: Annotated[int, Query(ge=0)] = 0,
                      add: Annotated[list[str], Query()] = (), subtract: Annotated[list[str], Query()] = (),
                      matches_only: Annotated[bool, Query()] = False) -> dict:
    _check_terms(add, subtract)
    async with gate.slot():
        return await run_in_threadpool(service.compare, q, k, rerank, add, subtract, matches_only)


def _check_terms(add: list[str], subtract: list[str]) -> None:
    """422 for an add/subtract term longer than a query may be."""
    if any(len(t) > MAX_QUERY_CHARS for t in (*add, *subtract)):
        raise RequestError(422, f"a term is longer than {MAX_QUERY_CHARS} characters")


@router.get("/api/image/{image_id}", summary="An indexed image, by its id (only files of the index)")
def api_image(service: ServiceDep, image_id: str) -> Response:
    file, stat_result, full = service.open_image(image_id)  # open before answering: stays readable if removed
    headers = {"Content-Length": str(stat_result.st_size),
               "Last-Modified": formatdate(stat_result.st_mtime, usegmt=True)}
    media_type = mimetypes.guess_type(full.name)[0] or "application/octet-stream"
    return StreamingResponse(_chunks(file, stat_result.st_size), media_type=media_type, headers=headers)


def _chunks(file: BinaryIO, size: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The first ``size`` bytes of an open file in chunks; closes it."""
    with file:
        while size > 0 and (data := file.read(min(chunk, size))):
            size -= len(data)
            yield data


@router.get("/api/thumb/{image_id}", summary="A JPEG thumbnail of an indexed image, by its id", responses=BUSY)
async def api_thumb(service: ServiceDep, gate: ThumbGate, image_id: str,
                    size: Annotated[int, Query(ge=16)] = 160) -> Response:
    async with gate.slot():
        jpeg = await run_in_threadpool(service.thumbnail, image_id, size)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.post("/api/classify", response_model=ClassifyOut, summary="Is this image one of my classes? (CLIPN)",
             responses={413: {"description": "Upload too large"}, 415: {"description": "Not an image"}, **BUSY})
async def api_classify(service: ServiceDep, gate: ClassifyGate,
                       file: Annotated[UploadFile, File(description="A JPEG, PNG or WebP image")],
                       classes: Annotated[str, Form(description="Class names, one per line or comma-separated")],
                       rule: Annotated[str | None, Form(pattern="^(atd|ctw)$",
                                                        description="atd or ctw (default: the server's)")] = None,
                       ) -> dict:
    names = service.check_classify_request(classes, file.content_type)
    upload = await _read_limited(file, service.config.max_upload_bytes)
    async with gate.slot():
        return await run_in_threadpool(service.classify, names, upload, rule)


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, read in chunks; 413 as soon as it is larger than ``limit``."""
    data = bytearray()
    while chunk := await file.read(1 << 16):
        data += chunk
        if len(data) > limit:
            raise RequestError(413, f"upload larger than {limit} bytes")
    return bytes(data)


async def _error_response(_request: Request, exc: Exception) -> JSONResponse:
    """A :class:`SaynoError` as ``{"detail": first line}``: its status for a :class:`RequestError`, 503 when
    Milvus could not be reached (:class:`MilvusUnavailable`: the service is down, not the request bad), else
    400."""
    status = getattr(exc, "status", 503 if isinstance(exc, MilvusUnavailable) else 400)
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"detail": first_line(exc)}, status_code=status, headers=headers)


# ------------------------------------------------------------------------------------------ the app
@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the app runs: the service's thread setting (restored afterwards); then remove the uploads."""
    service: Service = app.state.service
    cfg = service.config
    app.state.gates = _gates(service)  # asyncio objects: made anew in the loop that serves
    try:
        with torch_threads(cfg.threads):
            yield
    finally:
        service.close()


def _gates(service: Service) -> dict[str, Gate]:
    cfg = service.config
    return {"search": Gate("search", cfg.busy, cfg.queue), "thumb": Gate("thumbnail", cfg.busy, cfg.queue),
            "classify": Gate("class check", 1, cfg.queue)}


def _csp(path: str) -> str | None:
    if path == "/":
        return PAGE_CSP
    return None if path in DOCS_PATHS else "default-src 'none'; frame-ancestors 'none'"


def build_app(service: Service) -> FastAPI:
    """The FastAPI app answering every route with ``service``."""
    app = FastAPI(title="sayno search", version="1", lifespan=_lifespan, description=DESCRIPTION)
    app.state.service, app.state.gates = service, _gates(service)
    app.state.searcher, app.state.clipn, app.state.upload_dir = service.searcher, service.clipn, service.upload_dir
    app.include_router(router)
    app.add_exception_handler(SaynoError, _error_response)
    cfg = service.config
    app.add_middleware(RequestGuard, hosts=lambda: allowed_hosts(cfg.host, cfg.allowed_hosts),
                       body_limit=lambda: cfg.max_upload_bytes + FORM_OVERHEAD, csp=_csp)
    return app
