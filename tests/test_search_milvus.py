"""sayno.search.milvus on Milvus Lite: the same top k and the same result form as faiss for negated and
affirmative queries, uploads before a version goes live, a Milvus that does not answer, dimension mismatches,
collections of old versions dropped. Skipped only when pymilvus or milvus-lite is not installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("pymilvus", reason="the milvus extra is not installed (pip install 'sayno[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'sayno[milvus]')")

from sayno.search import (
    IndexConfig,
    Searcher,
    SearchError,
    build_index,
    milvus,
    read_index,
)
from sayno.search.store import current_version
from sayno.search.testing import tiny_world

QUERIES = ("no guitar", "a dog", "a cat but no dog", "a picture without a tree")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    tiny_world(out, groups=20)
    return out


def _copy(world: Path, count: int, dest: Path, start: int = 0) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((world / "images" / "test").glob("*.png"))[start:start + count]:
        shutil.copy2(f, dest / f.name)
    return dest


@pytest.fixture(scope="module")
def built(world, embedded, tmp_path_factory):
    """One folder indexed twice: faiss only, and with a Milvus Lite upload."""
    tmp = tmp_path_factory.mktemp("milvus")
    folder = _copy(world, 40, tmp / "photos")
    build_index(folder, tmp / "faiss", backbone=embedded, progress=False)
    report = build_index(folder, tmp / "milvus", IndexConfig(backend="milvus", uri=str(tmp / "photos.db")),
                         backbone=embedded, progress=False)
    return tmp, report


def test_store_search_equals_exact_inner_product(tmp_path):
    store = milvus.MilvusStore(str(tmp_path / "t.db"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 16), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    section = store.upload("sayno_test_one", x)
    assert section["kind"] == "milvus" and section["index_type"] == "FLAT" and section["count"] == 3000
    assert store.dim("sayno_test_one") == 16
    for q in x[:5] - 0.6 * x[5:10]:
        ids, sims = store.search("sayno_test_one", q, 20)
        np.testing.assert_array_equal(ids, np.argsort(-(x @ q), kind="stable")[:20])
        np.testing.assert_allclose(sims, x[ids] @ q, atol=1e-5)
    store.close()


def test_milvus_and_faiss_answer_alike_in_value_and_form(built, embedded):
    tmp, report = built
    assert report.backend == "milvus"
    data = read_index(tmp / "milvus")
    section = data.envelope.sections["backend"]
    assert section["kind"] == "milvus" and section["uri"] == str(tmp / "photos.db")
    assert section["collection"] == milvus.collection_name(tmp / "milvus", data.version)
    a, b = Searcher(tmp / "milvus", backbone=embedded), Searcher(tmp / "faiss", backbone=embedded)
    assert isinstance(a.data.coarse, milvus.MilvusCoarse) and a.info()["backend"] == "milvus"
    assert b.info()["backend"] == "faiss"
    methods = set()
    for q in QUERIES:
        ra, rb = a.search(q, 20), b.search(q, 20)
        methods.add(ra.method)
        assert [h.path for h in ra.hits] == [h.path for h in rb.hits]
        np.testing.assert_allclose([h.score for h in ra.hits], [h.score for h in rb.hits], atol=1e-4)
        da, db = ra.to_dict(), rb.to_dict()
        assert da.keys() == db.keys() and da["hits"][0].keys() == db["hits"][0].keys()
    assert methods == {"glasses", "clip"}  # negated queries went through the Glasses vector
    local = Searcher(tmp / "milvus", backbone=embedded, backend="faiss")  # the folder is a complete faiss index
    assert not isinstance(local.data.coarse, milvus.MilvusCoarse)


def test_a_milvus_that_does_not_answer_fails_in_one_line_and_leaves_the_index(world, embedded, tmp_path):
    folder = _copy(world, 6, tmp_path / "photos")
    build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    live = current_version(tmp_path / "idx")
    _copy(world, 2, folder, start=6)
    with pytest.raises(SearchError, match=r"milvus at http://127.0.0.1:1 did not answer") as err:
        build_index(folder, tmp_path / "idx", IndexConfig(backend="milvus", uri="http://127.0.0.1:1"),
                    backbone=embedded, progress=False)
    assert "\n" not in str(err.value)
    assert current_version(tmp_path / "idx") == live and len(read_index(tmp_path / "idx")) == 6


def test_an_upload_that_fails_leaves_the_live_version(world, embedded, tmp_path, monkeypatch):
    folder = _copy(world, 6, tmp_path / "photos")
    uri = str(tmp_path / "p.db")
    build_index(folder, tmp_path / "idx", IndexConfig(backend="milvus", uri=uri), backbone=embedded, progress=False)
    live = current_version(tmp_path / "idx")
    _copy(world, 2, folder, start=6)

    def down(self, how, *args):
        raise milvus.MilvusError(f"milvus at {uri}: {how} failed (server went away)")

    monkeypatch.setattr(milvus.MilvusStore, "_send", down)  # the update upserts the 2 new rows
    with pytest.raises(SearchError, match="upsert failed"):
        build_index(folder, tmp_path / "idx", IndexConfig(backend="milvus", uri=uri), backbone=embedded,
                    progress=False)
    assert current_version(tmp_path / "idx") == live and len(read_index(tmp_path / "idx")) == 6
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.startswith(".tmp-")]


def test_updates_reuse_one_collection_and_unused_collections_are_dropped(world, embedded, tmp_path):
    folder = _copy(world, 6, tmp_path / "photos")
    uri = str(tmp_path / "p.db")
    cfg = IndexConfig(backend="milvus", uri=uri)

    def ours() -> set[str]:
        store = milvus.MilvusStore(uri)
        try:
            return {n for n in store.client.list_collections() if n.startswith(milvus.collection_prefix(tmp_path / "idx"))}
        finally:
            store.close()

    versions = []
    for extra in range(3):  # updates: the first version's collection, rows upserted
        _copy(world, 1, folder, start=6 + extra)
        versions.append(build_index(folder, tmp_path / "idx", cfg, backbone=embedded, progress=False).version)
    first = milvus.collection_name(tmp_path / "idx", versions[0])
    assert ours() == {first} == {read_index(tmp_path / "idx").envelope.sections["backend"]["collection"]}
    rebuilt = build_index(folder, tmp_path / "idx", IndexConfig(backend="milvus", uri=uri, rebuild=True),
                          backbone=embedded, progress=False).version
    second = milvus.collection_name(tmp_path / "idx", rebuilt)
    assert ours() == {first, second}  # the version before (still on disk) searches the first one
    _copy(world, 1, folder, start=9)
    build_index(folder, tmp_path / "idx", cfg, backbone=embedded, progress=False)
    assert ours() == {second}  # no version on disk names the first collection any more


def test_dimension_mismatch_and_missing_collection_are_refused(built, embedded):
    tmp, _ = built
    data = read_index(tmp / "milvus")
    section = data.envelope.sections["backend"]
    store = milvus.MilvusStore(section["uri"])
    other = milvus.collection_name(tmp / "milvus", "v-other-dim")
    store.upload(other, np.eye(8, dtype=np.float32))
    data.envelope.sections["backend"] = {**section, "collection": other}
    with pytest.raises(milvus.MilvusError, match="vectors of size 8, the index 128"):
        milvus.attach(data, {section["uri"]: store})
    data.envelope.sections["backend"] = {**section, "collection": "sayno_nothing_here"}
    with pytest.raises(milvus.MilvusError, match="has no collection sayno_nothing_here"):
        milvus.attach(data, {section["uri"]: store})
    store.drop(other)


def test_bad_backend_arguments(tmp_path):
    with pytest.raises(SearchError, match="needs --uri"):
        build_index(tmp_path, tmp_path / "i", IndexConfig(backend="milvus"))
    with pytest.raises(SearchError, match="use faiss or milvus"):
        build_index(tmp_path, tmp_path / "i", IndexConfig(backend="qdrant"))
    with pytest.raises(SearchError, match="ending in .db"):
        milvus.normalise_uri(str(tmp_path / "photos.txt"))
    with pytest.raises(SearchError, match="no such folder"):
        milvus.normalise_uri(str(tmp_path / "missing" / "photos.db"))
    with pytest.raises(SearchError, match="--uri is for --backend milvus"):
        milvus.check_backend("faiss", "./x.db")


def test_cli_search_json_is_the_same_form_on_both_backends(built):
    from sayno.cli import app

    tmp, _ = built
    out = {}
    for name in ("faiss", "milvus"):
        run = CliRunner().invoke(app, ["search", str(tmp / name), "a cat but no dog", "--json", "-k", "5"])
        assert run.exit_code == 0, run.output
        out[name] = json.loads(run.stdout[run.stdout.index("{"):])
    assert out["faiss"].keys() == out["milvus"].keys() and out["milvus"]["method"] == "glasses"
    assert [h["path"] for h in out["faiss"]["hits"]] == [h["path"] for h in out["milvus"]["hits"]]
    bad = CliRunner().invoke(app, ["search", str(tmp / "faiss"), "a dog", "--backend", "milvus"])
    assert bad.exit_code == 2 and "never uploaded to Milvus" in bad.output


# ------------------------------------------------------------------------------------------ outages
class _DownClient:
    """A pymilvus client whose server went away: every call raises ``error`` (the boundary sayno talks to)."""

    def __init__(self, error: Exception):
        self.error = error

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            raise self.error

        return call


def _outages() -> list[Exception]:
    import grpc
    from pymilvus.exceptions import MilvusException

    return [ConnectionRefusedError(111, "Connection refused"),
            MilvusException(grpc.StatusCode.UNAVAILABLE, "[search] Retry timeout: 10s, <failed to connect>"),
            MilvusException(2, "Fail connecting to server on 10.0.0.9:19530, server unavailable")]


def test_outages_are_told_apart_from_refusals():
    from pymilvus.exceptions import MilvusException

    assert all(milvus.is_outage(e) for e in _outages())
    try:
        try:
            raise TimeoutError("timed out")
        except TimeoutError as inner:
            raise MilvusException(message="Unexpected error") from inner
    except MilvusException as wrapped:
        assert milvus.is_outage(wrapped)  # found in the cause chain
    assert not milvus.is_outage(MilvusException(1100, "invalid parameter: limit"))
    assert not milvus.is_outage(ValueError("bad vector"))


@pytest.fixture(scope="module")
def synthetic(embedded, tmp_path_factory):
    """An index of 600 random vectors uploaded to Milvus Lite: large enough that a search asks Milvus for a
    shortlist (a collection smaller than the shortlist is scored without the coarse pass)."""
    from sayno.checkpoint import Envelope
    from sayno.search.store import FORMAT, FORMAT_VERSION, FileTable, write_version, writer_lock

    tmp = tmp_path_factory.mktemp("synthetic")
    n, dim = 600, embedded.embed_dim
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vectors = x / np.linalg.norm(x, axis=1, keepdims=True)
    files = FileTable([f"img/{i:05d}.png" for i in range(n)], np.zeros(n), np.zeros(n), [f"{i:040x}" for i in range(n)])
    envelope = Envelope(FORMAT, FORMAT_VERSION, embedded.fingerprint, embedded.spec, {},
                        {"logit_scale": float(embedded.logit_scale), "root": str(tmp / "images"), "glasses": None})
    store = milvus.MilvusStore(str(tmp / "syn.db"))
    try:
        with writer_lock(tmp / "idx"):
            write_version(tmp / "idx", vectors, files, envelope, publish=lambda name, v: {
                "backend": store.upload(milvus.collection_name(tmp / "idx", name), v)})
    finally:
        store.close()
    return tmp / "idx"


@pytest.mark.parametrize("which", range(3))
def test_a_milvus_outage_during_a_search_request_is_503(synthetic, embedded, which):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from sayno.serve import ServeConfig, create_app

    searcher = Searcher(synthetic, backbone=embedded)
    store = searcher.data.coarse.store
    real = store.client
    app = create_app(synthetic, ServeConfig(), searcher=searcher)
    try:
        with TestClient(app, base_url="http://127.0.0.1:8000") as c:
            assert c.get("/api/search", params={"q": "a dog", "k": 5}).status_code == 200
            store.client = _DownClient(_outages()[which])
            r = c.get("/api/search", params={"q": "a red car", "k": 5})
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            detail = r.json()["detail"]
            assert detail.startswith(f"milvus at {store.uri} did not answer: search failed") and "\n" not in detail

            from pymilvus.exceptions import MilvusException

            store.client = _DownClient(MilvusException(1100, "invalid parameter"))  # not an outage: 400
            r = c.get("/api/search", params={"q": "a blue car", "k": 5})
            assert r.status_code == 400 and "search failed (invalid parameter)" in r.json()["detail"]
    finally:
        store.client = real
        store.close()
