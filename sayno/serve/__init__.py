"""``sayno serve``: a FastAPI service and a small web page over a search index (docs/SEARCH.md).

    >>> from sayno.serve import create_app, run     # doctest: +SKIP
    >>> run(create_app("photos.index"))             # http://127.0.0.1:8000/, API docs at /docs
"""

from sayno.serve.app import create_app, run
from sayno.serve.service import RequestError, ServeConfig, Service

__all__ = ["RequestError", "ServeConfig", "Service", "create_app", "run"]
