"""A real server for tests: :func:`running_server` serves an app with uvicorn in a thread on a free local port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sayno.serve.app import bind


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` (a :func:`sayno.serve.create_app` app) with uvicorn in a daemon thread on a free port of
    ``host`` (loopback only); yields its base URL (``http://host:port``); stops it on exit and binds the app back
    to its default address. RuntimeError when uvicorn has not started within ``timeout`` seconds."""
    import uvicorn

    port = free_port(host)
    bind(app, host, port)
    srv = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    try:
        while not srv.started:
            if time.time() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        bind(app, "127.0.0.1", 8000)
