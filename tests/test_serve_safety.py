"""sayno serve against a hostile but realistic user (issue 12, items 10-13): CPU work off the event loop and
bounded, files served by id (any file name), thumbnails decoded once, bodies refused early, Host and Origin
checked, security headers, JSON 500s."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sayno.search import Searcher, build_index
from sayno.serve import ServeConfig, create_app
from sayno.serve.guards import Gate, RequestGuard, allowed_hosts
from sayno.serve.service import RequestError

UPLOAD_LIMIT = 64 * 1024
BASE = "http://127.0.0.1:8000"
ODD_NAME = os.fsdecode(b"caf\xe9 \xff.png")  # not UTF-8: held as surrogates by Python
NEWLINE_NAME = "two\nlines.png"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", NEWLINE_NAME):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9 \xff.png"), "wb") as f:  # a bytes path
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(f, "PNG")
    big = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((100, 100, 1), np.uint8))
    Image.fromarray(big).save(folder / "big.jpg", quality=90)  # 4000x3000
    return folder


@pytest.fixture(scope="module")
def app(photos, embedded, tmp_path_factory):
    idx = tmp_path_factory.mktemp("index") / "idx"
    build_index(photos, idx, backbone=embedded, progress=False)
    return create_app(idx, ServeConfig(max_upload_bytes=UPLOAD_LIMIT, max_upload_pixels=200 * 200),
                      searcher=Searcher(idx, backbone=embedded))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        yield c


def _hits(client) -> dict[str, dict]:
    r = client.get("/api/search", params={"q": "a picture", "k": 10})
    assert r.status_code == 200, r.text
    return {h["path"]: h for h in r.json()["hits"]}


def _png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ item 11: names
def test_any_file_name_is_searched_and_served_by_id(client, photos):
    """A name that is not UTF-8 turned every search that found it into a plain-text 500; names with a
    newline were never served. Files are now served by id (the sha1 of their bytes)."""
    hits = _hits(client)
    shown = "caf\\xe9 \\xff.png"  # the bytes that are not UTF-8, shown as \xNN
    assert set(hits) == {"a.png", "b.png", "big.jpg", NEWLINE_NAME, shown}
    for name, file in ((shown, Path(photos, ODD_NAME)), (NEWLINE_NAME, photos / NEWLINE_NAME)):
        hit = hits[name]
        data = file.read_bytes()
        assert hit["id"] == hashlib.sha1(data).hexdigest() and hit["image"] == f"/api/image/{hit['id']}"
        full = client.get(hit["image"])
        assert full.status_code == 200 and full.content == data
        thumb = client.get(hit["thumb"], params={"size": 16})
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (16, 16)
    both = client.get("/api/compare", params={"q": "no dog", "k": 10})
    assert both.status_code == 200 and len(both.json()["sayno"]["hits"]) == 5


# ------------------------------------------------------------------------------------------ item 12: thumbnails
def test_thumbnails_decode_each_file_once(client, monkeypatch):
    from sayno.serve import service as service_module

    decodes = []
    real = service_module._decode_small

    def counting(file, size):
        decodes.append(file)
        time.sleep(0.3)  # the three requests overlap
        return real(file, size)

    monkeypatch.setattr(service_module, "_decode_small", counting)
    client.app.state.service.thumbs.data.clear()
    client.app.state.service.thumb_bases.data.clear()
    hit = _hits(client)["big.jpg"]
    sizes, out = (32, 100, 256), {}

    def get(size: int) -> None:
        out[size] = client.get(hit["thumb"], params={"size": size})

    threads = [threading.Thread(target=get, args=(s,)) for s in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(decodes) == 1  # one decode (at thumb_max) for the three sizes
    for size in sizes:
        assert out[size].status_code == 200
        assert max(Image.open(io.BytesIO(out[size].content)).size) == size
    assert client.get(hit["thumb"], params={"size": 1000}).status_code == 200 and len(decodes) == 1
    assert len(client.app.state.service.thumb_bases) <= client.app.state.service.thumb_bases.capacity


# ------------------------------------------------------------------------------------------ item 10: CPU work
def test_class_check_runs_off_the_event_loop(client, monkeypatch):
    """A slow class check (1,000 class names took 8 s) blocked every other request; now it runs in a thread
    and other requests are answered meanwhile."""
    service = client.app.state.service
    entered, release = threading.Event(), threading.Event()

    def slow_classify(names, upload, rule):
        entered.set()
        release.wait(10)
        return {"decision": "ID", "predicted": names[0], "score": 1.0, "rule": "atd", "classes": []}

    monkeypatch.setattr(service, "classify", slow_classify)
    result = {}
    post = threading.Thread(target=lambda: result.setdefault("r", client.post(
        "/api/classify", files={"file": ("x.png", _png(8), "image/png")}, data={"classes": "dog\ncat"})))
    post.start()
    try:
        assert entered.wait(10)
        t0 = time.perf_counter()
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/search", params={"q": "no dog", "k": 2}).status_code == 200
        waited = time.perf_counter() - t0
    finally:
        release.set()
        post.join(20)
    assert waited < 5 and result["r"].status_code == 200


def test_class_count_and_upload_pixels_are_bounded(client):
    names = "\n".join(f"class {i}" for i in range(201))
    r = client.post("/api/classify", files={"file": ("x.png", _png(8), "image/png")}, data={"classes": names})
    assert r.status_code == 422 and "at most 200" in r.json()["detail"]
    r = client.post("/api/classify", files={"file": ("x.png", _png(300), "image/png")}, data={"classes": "a,b"})
    assert r.status_code == 413 and "pixels" in r.json()["detail"]


def test_gate_runs_some_queues_some_and_refuses_the_rest():
    async def main() -> list:
        gate = Gate("test", running=1, waiting=1)
        order: list = []
        release = asyncio.Event()

        async def job(name: str) -> None:
            try:
                async with gate.slot():
                    order.append(("start", name))
                    await release.wait()
            except RequestError as e:
                order.append((e.status, name))

        tasks = [asyncio.create_task(job(n)) for n in ("first", "second", "third")]
        await asyncio.sleep(0.05)
        order.append("released")
        release.set()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [("start", "first"), (503, "third"), "released", ("start", "second")]


def test_busy_server_answers_503_with_retry_after(client, app, monkeypatch):
    service = app.state.service
    monkeypatch.setitem(app.state.gates, "classify", Gate("class check", 1, 0))  # one running, none waiting
    entered, release = threading.Event(), threading.Event()
    monkeypatch.setattr(service, "classify", lambda *a: (entered.set(), release.wait(10), {})[2])
    upload = {"files": {"file": ("x.png", _png(8), "image/png")}, "data": {"classes": "a,b"}}
    first = threading.Thread(target=lambda: client.post("/api/classify", **upload))
    first.start()
    try:
        assert entered.wait(10)
        r = client.post("/api/classify", **upload)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
        assert client.get("/api/search", params={"q": "a dog", "k": 1}).status_code == 200  # its own gate
    finally:
        release.set()
        first.join(20)


# ------------------------------------------------------------------------------------------ item 13: bodies
def _asgi_post(app, headers: list[tuple[bytes, bytes]], chunks) -> tuple[int, dict, int]:
    """POST /api/classify straight into the ASGI app: (status, JSON body, body chunks the app read)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/classify", "raw_path": b"/api/classify", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1:8000"), *headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000)}
    read, sent = [0], []
    it = iter(chunks)

    async def receive():
        chunk = next(it, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), read[0]


def test_large_bodies_are_refused_before_or_while_reading(app):
    boundary = b"xyz"
    ctype = (b"content-type", b"multipart/form-data; boundary=" + boundary)
    # a 300 MB Content-Length: refused from the header, nothing read
    status, body, read = _asgi_post(app, [ctype, (b"content-length", str(300 << 20).encode())], [b"x" * 65536] * 10)
    assert (status, read) == (413, 0) and "at most" in body["detail"]
    # no Content-Length (chunked): refused as soon as the bytes read pass the limit, not after 300 MB
    head = (b"--xyz\r\nContent-Disposition: form-data; name=\"classes\"\r\n\r\ndog\r\n--xyz\r\n"
            b"Content-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n")
    endless = (head if i == 0 else b"\0" * 65536 for i in range(4800))  # 300 MB if read to the end
    status, body, read = _asgi_post(app, [ctype], endless)
    assert status == 413 and "larger than" in body["detail"]
    assert read <= (UPLOAD_LIMIT + 64 * 1024) // 65536 + 2


# ------------------------------------------------------------------------------------------ item 13: Host, headers
def test_host_and_origin_are_checked(client, app, monkeypatch):
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST:8000", "127.0.0.1", "[::1]",
                 "localhost:9999"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example:8000", "attacker", "",
                 "localhost.evil.example", "[::1].evil:80"):
        r = client.get("/api/info", headers={"host": host})
        assert r.status_code == 400 and "not this server's address" in r.json()["detail"], host
        assert client.get("/", headers={"host": host}).status_code == 400
    upload = {"files": {"file": ("x.png", _png(8), "image/png")}, "data": {"classes": "dog\ncat"}}
    for origin in ("http://evil.example", "http://evil.example:8000", "null"):
        r = client.post("/api/classify", headers={"origin": origin}, **upload)
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"], origin
    assert client.post("/api/classify", headers={"origin": BASE}, **upload).status_code == 200
    monkeypatch.setattr(app.state.service.config, "allowed_hosts", ("photos.lan",))
    assert client.get("/api/info", headers={"host": "photos.lan:8000"}).status_code == 200
    assert allowed_hosts("0.0.0.0") is None  # bound to every interface: any name (with a warning)


def test_security_headers_and_json_errors(client, app, monkeypatch):
    page = client.get("/")
    script = page.text.split("<script>")[1].split("</script>")[0]
    digest = __import__("base64").b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = page.headers["content-security-policy"]
    assert f"'sha256-{digest}'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    for r in (page, client.get("/api/info"), client.get("/api/image/" + "0" * 40), client.get("/nope")):
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert client.get("/api/info").headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/docs").status_code == 200

    def broken() -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.service, "info", broken)
    r = client.get("/api/info")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "internal server error (see the server's log)"}
    assert r.headers["x-content-type-options"] == "nosniff"


def test_guard_passes_websocket_and_lifespan_scopes():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    guard = RequestGuard(inner, hosts=lambda: frozenset(), body_limit=lambda: 0, csp=lambda p: None)
    asyncio.run(guard({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
