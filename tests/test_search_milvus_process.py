"""Milvus Lite across processes, updates that send only the changed rows, the server-URI boundary, and the
errors a user meets (a Lite file held by another process, a read-only folder, a full disk: one line each, no
pymilvus traceback). Indexes of random unit vectors are written through the same code ``sayno index build``
runs after encoding (:func:`sayno.search.store.write_version` with :class:`sayno.search.milvus.MilvusSync`);
the update test runs the real build. Skipped only when pymilvus or milvus-lite is not installed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the milvus extra is not installed (pip install 'sayno[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'sayno[milvus]')")

from sayno.search import IndexConfig, Searcher, build_index, milvus, read_index
from sayno.search.testing import tiny_world

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ("a scene with no cat", "a dog", "a red car", "a picture without a tree")

# Process 1: write a milvus index and a faiss index of the same N random unit vectors (sha1s of real bytes).
BUILD = """
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
from sayno.checkpoint import Envelope
from sayno.search import milvus
from sayno.search.store import FORMAT, FORMAT_VERSION, write_version, writer_lock
from sayno.search.table import FileTable

tmp, n, dim, fingerprint = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
sha = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(n)]
files = FileTable([f"img/{i:06d}.png" for i in range(n)], np.zeros(n), np.zeros(n), sha)
env = Envelope(FORMAT, FORMAT_VERSION, fingerprint, "embedded", {},
               {"logit_scale": 100.0, "root": str(tmp / "img"), "glasses": None})
t0 = time.perf_counter()
with writer_lock(tmp / "faiss"):
    write_version(tmp / "faiss", x, files, env)
t1 = time.perf_counter()
store = milvus.MilvusStore(str(tmp / "lite.db"), timeout=120)
sync = milvus.MilvusSync(store, tmp / "milvus", None)
keys = milvus.content_keys(files.sha1.raw)
with writer_lock(tmp / "milvus"):
    sent = {}
    write_version(tmp / "milvus", x, files, env, publish=lambda v, rows: sent.setdefault("backend",
                  sync.publish(v, rows, keys)) and sent)
sync.finish({sent["backend"]["collection"]})
store.close()
print(json.dumps({"faiss_s": t1 - t0, "milvus_s": time.perf_counter() - t1, "sent": store.sent}))
"""

# Process 2: open both indexes and search the same random vectors (and, with a backbone, the same texts).
SEARCH = """
import json, sys, time
from pathlib import Path
import numpy as np
from sayno.search import milvus, read_index

tmp, texts = Path(sys.argv[1]), sys.argv[2:]
t0 = time.perf_counter()
stores = {}
data = milvus.attach(read_index(tmp / "milvus"), stores)
local = read_index(tmp / "faiss")
t_open = time.perf_counter() - t0
assert isinstance(data.coarse, milvus.MilvusCoarse), type(data.coarse)
q = np.random.default_rng(1).standard_normal((5, data.dim)).astype(np.float32)
out = {"open_s": t_open, "milvus": [], "faiss": [], "exact": [], "texts": {}}
t0 = time.perf_counter()
for v in q:
    out["milvus"].append(data.search(v, 10)[0].tolist())
out["search_s"] = (time.perf_counter() - t0) / len(q)
for v in q:
    out["faiss"].append(local.search(v, 10)[0].tolist())
    out["exact"].append(np.argsort(-(np.asarray(local.vectors) @ v), kind="stable")[:10].tolist())
if texts:
    from sayno.backbones import load
    from sayno.search import Searcher
    backbone = load("embedded")
    a, b = Searcher(tmp / "milvus", backbone=backbone), Searcher(tmp / "faiss", backbone=backbone)
    assert a.info()["backend"] == "milvus" and b.info()["backend"] == "faiss"
    for t in texts:
        out["texts"][t] = [[h.path for h in s.search(t, 10).hits] for s in (a, b)]
for s in stores.values():
    s.close()
print(json.dumps(out))
"""


def _run(code: str, *args: object, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env, **kw)


def _json(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _build_then_search(tmp: Path, n: int, dim: int, fingerprint: str, texts: tuple[str, ...] = ()
                       ) -> tuple[dict, dict]:
    built = _json(_run(BUILD, tmp, n, dim, fingerprint))
    assert built["sent"] == {"insert": n, "upsert": 0, "delete": 0}
    found = _json(_run(SEARCH, tmp, *texts))
    assert found["milvus"] == found["faiss"] == found["exact"]  # same top 10 as faiss and the exact scan
    return built, found


def test_an_index_built_in_one_process_is_searched_in_another_at_2000(embedded, tmp_path):
    """The bug of issue 27: Milvus Lite reopens its file with every collection released."""
    _, found = _build_then_search(tmp_path, 2_000, embedded.embed_dim, embedded.fingerprint, QUERIES)
    for text, (through_milvus, through_faiss) in found["texts"].items():
        assert len(through_milvus) == 10 and through_milvus == through_faiss, text


@pytest.mark.slow
def test_an_index_built_in_one_process_is_searched_in_another_at_100000(tmp_path):
    """D=32 (no text queries here): a quarter of the bytes to send, so the test stays short."""
    built, found = _build_then_search(tmp_path, 100_000, 32, "0" * 16)
    print(f"100k: milvus upload {built['milvus_s']:.1f} s, open {found['open_s']:.1f} s, "
          f"search {found['search_s'] * 1000:.0f} ms")


def test_a_collection_found_released_is_loaded_and_searched(tmp_path):
    store = milvus.MilvusStore(str(tmp_path / "r.db"))
    x = np.random.default_rng(2).standard_normal((300, 8)).astype(np.float32)
    store.upload("sayno_released", x, np.arange(300) * 7)
    store.client.release_collection("sayno_released")  # as after Milvus Lite reopens its file
    ids, _ = store.search("sayno_released", x[3], 5)
    assert ids[0] == 21
    store.close()


# ------------------------------------------------------------------------------------------ updates
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    tiny_world(out, groups=20)
    return sorted((out / "images" / "test").glob("*.png"))


def _contents(folder: Path) -> set[str]:
    return {hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_an_update_sends_only_the_changed_rows(world, embedded, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in world[:30]:
        shutil.copy2(f, folder / f.name)
    uri = str(tmp_path / "p.db")
    cfg = IndexConfig(backend="milvus", uri=uri)
    first = build_index(folder, tmp_path / "idx", cfg, backbone=embedded, progress=False)
    section = read_index(tmp_path / "idx").envelope.sections["backend"]
    before = _contents(folder)
    assert section["key"] == "sha1" and section["sent"] == {"insert": len(before), "upsert": 0, "delete": 0}

    shutil.copy2(world[30], folder / world[0].name)  # 2 changed contents
    shutil.copy2(world[31], folder / world[1].name)
    (folder / world[2].name).unlink()  # 1 removed
    shutil.copy2(world[32], folder / "new.png")  # 1 added
    shutil.copy2(world[5], folder / "copy-of-5.png")  # a known content under a new name: nothing to send
    os.rename(folder / world[6].name, folder / "renamed-6.png")  # a rename: nothing to send
    second = build_index(folder, tmp_path / "idx", cfg, backbone=embedded, progress=False)
    data = read_index(tmp_path / "idx")
    section = data.envelope.sections["backend"]
    assert section["collection"] == milvus.collection_name(tmp_path / "idx", first.version)  # updated in place
    after = _contents(folder)
    assert len(after - before) == len(before - after) == 3  # the world's images are distinct contents
    assert section["sent"] == {"insert": 0, "upsert": 3, "delete": 3}  # counted by the store as it sent them
    assert any("3 rows upserted, 3 to delete" in note for note in second.notes)
    store = milvus.MilvusStore(uri)
    assert len(data) == 31 and store.count(section["collection"]) == len(after)  # the 3 deleted once live
    store.close()

    build_index(folder, tmp_path / "faiss", backbone=embedded, progress=False)
    a, b = Searcher(tmp_path / "idx", backbone=embedded), Searcher(tmp_path / "faiss", backbone=embedded)
    assert isinstance(a.data.coarse, milvus.MilvusCoarse)
    vectors = read_index(tmp_path / "faiss").features()
    for v in vectors[:3]:  # every row, through Milvus (duplicate contents give every row of the content)
        ids, _ = a.data.search(v, len(data))
        assert sorted(ids.tolist()) == list(range(len(data)))
    for q in QUERIES:
        assert [h.path for h in a.search(q, 10).hits] == [h.path for h in b.search(q, 10).hits]


def test_a_collection_that_drifted_is_uploaded_again(world, embedded, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in world[:8]:
        shutil.copy2(f, folder / f.name)
    uri = str(tmp_path / "p.db")
    cfg = IndexConfig(backend="milvus", uri=uri)
    build_index(folder, tmp_path / "idx", cfg, backbone=embedded, progress=False)
    name = read_index(tmp_path / "idx").envelope.sections["backend"]["collection"]
    store = milvus.MilvusStore(uri)
    store.upsert(name, np.array([12345]), np.ones((1, 128), np.float32))  # a row no version holds
    store.close()
    shutil.copy2(world[8], folder / world[8].name)
    report = build_index(folder, tmp_path / "idx", cfg, backbone=embedded, progress=False)
    section = read_index(tmp_path / "idx").envelope.sections["backend"]
    assert section["collection"] != name and section["sent"]["insert"] == 9
    assert any("uploading every row" in n for n in report.notes)


# ------------------------------------------------------------------------------------------ server boundary
class RecordingClient:
    """A recording stand-in for ``pymilvus.MilvusClient`` used ONLY for the server-URI boundary (no Milvus
    server can run in the tests): it records what sayno sends and answers like a server would."""

    calls: ClassVar[list[tuple[str, tuple, dict]]] = []
    loaded = False

    def __init__(self, uri, **kwargs):
        type(self).calls.append(("__init__", (uri,), kwargs))

    def __getattr__(self, name):
        def call(*args, **kwargs):
            type(self).calls.append((name, args, kwargs))
            if name == "has_collection":
                return True
            if name == "describe_collection":
                return {"fields": [{"name": "row"}, {"name": "vector", "params": {"dim": 4}}]}
            if name == "get_load_state":
                from pymilvus.client.types import LoadState

                return {"state": LoadState.Loaded if type(self).loaded else LoadState.NotLoad}
            if name == "load_collection":
                type(self).loaded = True
            if name == "search":
                return [[{"row": 2, "distance": 0.9}, {"row": 0, "distance": 0.5}]]
            return None

        return call


def test_a_server_uri_connects_loads_on_open_and_searches_with_the_right_params(monkeypatch):
    import pymilvus

    from sayno.checkpoint import Envelope
    from sayno.search.store import FORMAT, FORMAT_VERSION, IndexData
    from sayno.search.table import FileTable

    RecordingClient.calls, RecordingClient.loaded = [], False
    monkeypatch.setattr(pymilvus, "MilvusClient", RecordingClient)
    uri = "http://milvus.example:19530"
    store = milvus.MilvusStore(uri, token="root:Milvus", timeout=3.5)
    assert RecordingClient.calls[0] == ("__init__", (uri,), {"token": "root:Milvus", "timeout": 3.5})
    assert store.index_type == "AUTOINDEX"
    n = 3
    files = FileTable([f"{i}.png" for i in range(n)], np.zeros(n), np.zeros(n), [f"{i + 1:040x}" for i in range(n)])
    env = Envelope(FORMAT, FORMAT_VERSION, "f", "embedded", {}, {"embed_dim": 4, "backend": {
        "kind": "milvus", "uri": uri, "collection": "sayno_c", "key": "row"}})
    data = IndexData(np.eye(n, 4, dtype=np.float32), None, files, env, "v-1")
    milvus.attach(data, {uri: store})
    names = [c[0] for c in RecordingClient.calls]
    assert names[1:] == ["has_collection", "describe_collection", "get_load_state", "load_collection"]
    assert RecordingClient.calls[-1][1] == ("sayno_c",)  # loaded on open
    sims, ids = data.coarse.search(np.ones((1, 4), np.float32), 7)
    assert ids.tolist() == [[2, 0]] and np.allclose(sims, [[0.9, 0.5]])
    name, args, kwargs = RecordingClient.calls[-1]
    assert name == "search" and args == ("sayno_c",)
    assert kwargs["limit"] == 7 and kwargs["anns_field"] == "vector" and kwargs["output_fields"] == ["row"]
    assert kwargs["search_params"] == {"metric_type": "IP"} and np.allclose(kwargs["data"][0], np.ones(4))


# ------------------------------------------------------------------------------------------ errors
HOLD = """
import sys
from pymilvus import MilvusClient
client = MilvusClient(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
client.close()
"""


def test_a_lite_file_held_by_another_process_says_so_in_one_line(tmp_path):
    uri = str(tmp_path / "held.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, uri], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(milvus.MilvusError, match="held by another process") as err:
            milvus.MilvusStore(uri)
        assert "\n" not in str(err.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    milvus.MilvusStore(uri).close()  # free again once the other process let go


READ_ONLY = """
import os, sys
from sayno.search.milvus import MilvusError, MilvusStore, _pymilvus
if os.geteuid() == 0:  # root writes anywhere: drop to an unprivileged user, as a user would be
    _pymilvus()  # import first: the interpreter's own files may not be readable by that user
    import milvus_lite.adapter.grpc.server, milvus_lite.server_manager  # noqa: E401, F401
    os.setgid(65534)
    os.setuid(65534)
try:
    MilvusStore(sys.argv[1])
except MilvusError as e:
    print("ERROR", e)
"""


def test_a_read_only_folder_says_so_in_one_line(tmp_path):
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"sayno-ro-{os.getpid()}"
    (base / "ro").mkdir(parents=True, exist_ok=True)  # a folder every user can reach (tmp_path is private)
    try:
        base.chmod(0o755)
        (base / "ro").chmod(0o555)
        run = _run(READ_ONLY, base / "ro" / "photos.db", timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.startswith("ERROR ") and "read-only" in run.stdout and str(base / "ro") in run.stdout
        assert "Traceback" not in run.stderr, run.stderr[-2000:]
    finally:
        shutil.rmtree(base, ignore_errors=True)


FULL = """
import resource, signal, sys
import numpy as np
from sayno.search.milvus import MilvusError, MilvusStore
store = MilvusStore(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
try:
    store.upload("sayno_full", np.ones((3000, 128), np.float32), np.arange(3000))
except MilvusError as e:
    print("ERROR", e)
"""


def test_a_full_disk_is_one_line_without_a_pymilvus_traceback(tmp_path):
    run = _run(FULL, tmp_path / "full.db", timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ERROR ") and "no space left" in run.stdout, run.stdout
    assert "Traceback" not in run.stderr and "ERROR" not in run.stderr, run.stderr[-2000:]


def test_their_loggers_are_restored_after_each_call(tmp_path):
    logs = [logging.getLogger(n) for n in ("pymilvus", "pymilvus.milvus_client", "milvus_lite", "grpc")]
    before = [(list(log.handlers), log.propagate, log.disabled) for log in logs]
    store = milvus.MilvusStore(str(tmp_path / "l.db"))
    with milvus.quiet_milvus() as outer:
        with milvus.quiet_milvus() as inner:
            logging.getLogger("milvus_lite.server_manager").error("inner")
        logging.getLogger("pymilvus").error("outer")
    assert [r.getMessage() for r in inner] == ["inner"] and [r.getMessage() for r in outer] == ["inner", "outer"]
    with pytest.raises(milvus.MilvusError, match="has no collection"):
        store.dim("sayno_missing")
    store.close()
    assert [(list(log.handlers), log.propagate, log.disabled) for log in logs] == before
