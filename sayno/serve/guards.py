"""What stands between the network and the routes of ``sayno serve`` (plain ASGI and asyncio, no framework):

- :class:`RequestGuard`, a middleware that answers before any route runs: a ``Host`` header that does not name
  the server (its address, localhost, 127.0.0.1, [::1] or an allowed name) is refused (400; DNS rebinding: a web
  page on another name cannot reach a server on 127.0.0.1), a cross-site ``Origin`` on a request that is not GET/HEAD/OPTIONS is refused (403), a body larger
  than the limit is refused on its ``Content-Length`` (413, nothing read) or, without one, as soon as the bytes
  read pass the limit (413, the rest is never read); every response gets security headers; an unexpected
  error is a JSON 500 like every other error.
- :class:`Gate`, a bound on concurrent heavy requests of one kind: ``running`` at a time, ``waiting`` more in
  a queue (they wait without holding a thread), and beyond that 503 at once ("server busy", ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from sayno.serve.service import RequestError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and the class names beside the file
DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")  # FastAPI's pages load their own scripts
BASE_HEADERS = (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer"), ("cross-origin-resource-policy", "same-origin"))
API_CSP = "default-src 'none'; frame-ancestors 'none'"
log = logging.getLogger("sayno.serve")


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """Host names (lower case, IPv6 in brackets) the server bound to ``host`` answers: that address, the
    local names and ``extra``; None (any) when it is bound to every interface (0.0.0.0, ::). The port is not
    compared: DNS rebinding makes a browser send the attacker's name, whatever the port."""
    if host in WILDCARD_HOSTS:
        return None
    names = {*LOCAL_NAMES, f"[{host}]" if ":" in host else host, *extra}
    return frozenset(n.lower() for n in names)


def host_name(host: str) -> str:
    """The name in a Host header value, without the port (``[::1]:8000`` -> ``[::1]``); a value that is not
    ``name[:port]`` is returned whole (and matches no allowed name)."""
    host = host.strip().lower()
    match = re.fullmatch(r"(\[[0-9a-f:.]+\]|[^:\[\]]*)(:\d{1,5})?", host)
    return match.group(1) if match else host


def page_csp(html: str) -> str:
    """A Content-Security-Policy for ``html`` that allows exactly its inline ``<script>`` and ``<style>``
    blocks (by hash), same-origin fetches and images, and nothing else; no framing."""
    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
                        for b in blocks) or "'none'"

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; img-src 'self'; "
            "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


class BodyTooLarge(Exception):
    """Raised into the app by the guard's ``receive`` when a body passes the limit."""


class RequestGuard:
    """ASGI middleware: Host and Origin checks, a body limit, security headers, JSON 500s (module docstring).

    hosts: a function giving the allowed Host values now (None: any); body_limit: a function giving the
    largest body in bytes; csp: path -> Content-Security-Policy (None: none but the framing rule).
    """

    def __init__(self, app: ASGIApp, hosts: Callable[[], frozenset[str] | None], body_limit: Callable[[], int],
                 csp: Callable[[str], str | None]):
        self.app, self.hosts, self.body_limit, self.csp = app, hosts, body_limit, csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        extra = self._headers(scope["path"])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _send_json(send, refusal[0], refusal[1], extra)
            return
        limit = self.body_limit()
        state = {"read": 0, "too_large": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["too_large"] = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["too_large"]:
                return  # the app's own answer to the aborted body is replaced by the 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *((k, v) for k, v in extra if k not in have)]}
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["too_large"]:
                if state["started"]:
                    raise
                log.exception("error answering %s %s", scope.get("method"), scope.get("path"))
                await _send_json(send, 500, "internal server error (see the server's log)", extra)
                return
        if state["too_large"] and not state["started"]:
            await _send_json(send, 413, f"request body larger than {limit} bytes", extra)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        allowed = self.hosts()
        host = headers.get("host", "").strip().lower()
        if allowed is not None and host_name(host) not in allowed:
            return 400, (f"Host {host[:80]!r} is not this server's address (it answers "
                         f"{', '.join(sorted(allowed))}; more with --allow-host)")
        origin = headers.get("origin")
        if origin is not None and scope.get("method", "GET") not in SAFE_METHODS:
            netloc = origin.split("://", 1)[-1].rstrip("/").lower()
            if netloc != host and (allowed is None or host_name(netloc) not in allowed):
                return 403, f"cross-origin request from {origin[:80]!r} refused"
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return 400, "bad Content-Length"
            if int(length) > self.body_limit():
                return 413, f"request body of {int(length)} bytes: at most {self.body_limit()}"
        return None

    def _headers(self, path: str) -> list[tuple[bytes, bytes]]:
        csp = self.csp(path) or "frame-ancestors 'none'"
        return [(k.encode(), v.encode()) for k, v in (*BASE_HEADERS, ("content-security-policy", csp))]


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """At most ``running`` requests of one kind at a time and ``waiting`` more queued; beyond that
    :class:`RequestError` 503 at once. Use ``async with gate.slot(): ...`` inside the event loop."""

    def __init__(self, kind: str, running: int, waiting: int):
        if running < 1 or waiting < 0:
            raise ValueError(f"gate {kind}: running >= 1 and waiting >= 0, got {running}, {waiting}")
        self.kind, self.running, self.waiting = kind, running, waiting
        self._inside = 0
        self._semaphore: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._inside >= self.running + self.waiting:
            raise RequestError(503, f"server busy: {self._inside} {self.kind} requests running or waiting; "
                                    "try again shortly")
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.running)
        self._inside += 1
        try:
            async with self._semaphore:
                yield
        finally:
            self._inside -= 1
