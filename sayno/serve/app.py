"""The HTTP service over an index: a FastAPI app (OpenAPI at ``/docs``) and a small web page at ``/``.

    >>> app = create_app("photos.index")        # doctest: +SKIP
    >>> run(app, host="127.0.0.1", port=8000)   # doctest: +SKIP

Endpoints: ``GET /api/info``, ``GET /api/search``, ``GET /api/compare`` (plain CLIP and sayno side by side),
``GET /api/image/{id}`` and ``GET /api/thumb/{id}`` (by the id a search hit carries; only files of the index,
inside its folder), ``POST /api/classify`` (CLIPN: is an uploaded image one of these classes?).

Uploads: at most ``max_upload_bytes`` (413 beyond, on the Content-Length or while the body streams in),
JPEG/PNG/WebP only, checked on the bytes (415 otherwise), written to a private temporary folder that is removed
when the app stops. Requests must name the served address in their Host header (:func:`run` sets it).

The work is in :mod:`sayno.serve.service` (a :class:`Service` per app, one method per route); the routes and
response models in :mod:`sayno.serve.routes`, which needs fastapi (the serve extra) and is therefore imported
only when an app is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sayno.search.query import Searcher
from sayno.serve.service import ServeConfig, load_service


def create_app(index: str | Path, config: ServeConfig | None = None, *, searcher: Searcher | None = None,
               clipn=None) -> Any:
    """The FastAPI app for ``index``. ``searcher``/``clipn``: already loaded objects (tests, embedding)."""
    from sayno.serve.routes import build_app  # fastapi: an optional dependency (the serve extra)

    return build_app(load_service(index, config or ServeConfig(), searcher, clipn))


def bind(app: Any, host: str, port: int) -> None:
    """Tell ``app`` the address it is served at (its Host check accepts that address and localhost)."""
    app.state.service.config.host, app.state.service.config.port = host, port


def run(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` with uvicorn at ``host:port`` (blocking)."""
    import uvicorn

    bind(app, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
