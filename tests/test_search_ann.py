"""sayno.search.ann: flat/ivf/auto choice, IVF with exact re-scoring, incremental updates that keep the cells,
retraining past the growth factor, the index section in the envelope, the build path and the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sayno.checkpoint import Envelope
from sayno.search import IndexConfig, Searcher, SearchError, ann, build_index, read_index, shards
from sayno.search.build import check_config
from sayno.search.store import FORMAT, FORMAT_VERSION, FileTable, current_version, write_version
from sayno.search.testing import tiny_world


def _unit(n: int, d: int, seed: int = 0, centers: int = 50) -> np.ndarray:
    """Clustered unit vectors (IVF's cells mean something on them)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d), dtype=np.float32)
    x = c[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _files(n: int) -> FileTable:
    return FileTable(np.array([f"img/{i:06d}.jpg" for i in range(n)]), np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.full(n, "0" * 40, dtype="<U40"))


def _envelope(root: Path) -> Envelope:
    return Envelope(FORMAT, FORMAT_VERSION, "fp", "embedded", {}, {"root": str(root), "glasses": None})


# ------------------------------------------------------------------------------------------ the choice
def test_auto_is_flat_for_small_and_ivf_for_large_collections_and_says_why():
    small = ann.choose_index("auto", 1_000_000, 128)
    assert small.kind == "flat" and "auto: flat" in small.reason and "244 MB" in small.reason
    large = ann.choose_index("auto", 10_000_000, 128)
    assert large.kind == "ivf" and "auto: ivf" in large.reason and "4096 cells" in large.reason
    assert ann.choose_index("auto", 500_000, 512).kind == "flat"
    assert ann.choose_index("auto", 1_000_000, 512).kind == "ivf"


def test_ivf_on_too_few_vectors_falls_back_to_flat_and_says_so():
    choice = ann.choose_index("ivf", 500, 64)
    assert choice.kind == "flat"
    assert "at least 10,000" in choice.reason and "500" in choice.reason and "flat" in choice.reason
    index, info, reason = ann.build_coarse(_unit(500, 16), "ivf")
    assert info == {"kind": "flat", "factory": "SQfp16"} and "flat index instead" in reason and index.ntotal == 500


def test_bad_kind_is_refused():
    with pytest.raises(SearchError, match="flat, ivf, auto"):
        ann.choose_index("hnsw", 10, 4)
    with pytest.raises(SearchError, match="flat, ivf, auto"):
        check_config(IndexConfig(index="IVF"))


def test_cells_grow_with_the_collection():
    assert [ann.ivf_lists(n) for n in (10_000, 1_000_000, 10_000_000)] == [128, 1024, 4096]
    assert ann.default_nprobe(1024) == 64 and ann.default_nprobe(128) == 16


# ------------------------------------------------------------------------------------------ IVF
@pytest.fixture(scope="module")
def vectors():
    return _unit(12_000, 16)


@pytest.fixture(scope="module")
def ivf(vectors):
    return ann.build_coarse(vectors, "ivf")


def test_ivf_index_remembers_what_it_is(ivf):
    index, info, reason = ivf
    assert info["kind"] == "ivf" and info["factory"] == "IVF128,SQ8" and info["nlist"] == 128
    assert info["nprobe"] == 16 and info["trained_count"] == 12_000 and info["training"] == "new"
    assert index.ntotal == 12_000 and "ivf index (asked for)" in reason


def test_ivf_top20_with_exact_rescoring_matches_exact_search(tmp_path, vectors, ivf):
    root = tmp_path / "idx"
    root.mkdir()
    write_version(root, vectors, _files(len(vectors)), _envelope(tmp_path),
                  coarse=lambda v: (ivf[0], {"index": ivf[1]}))
    data = read_index(root)
    assert ann.index_info(data)["kind"] == "ivf"
    assert type(data.coarse).__name__ == "IndexIVFScalarQuantizer"
    assert data.coarse.nprobe == 16  # stored in the faiss file too
    rng = np.random.default_rng(3)
    overlap = []
    for q in vectors[rng.integers(0, len(vectors), 20)] - 0.5 * vectors[rng.integers(0, len(vectors), 20)]:
        ids, sims = data.search(q, 20)
        exact = np.argsort(-(vectors @ q), kind="stable")[:20]
        overlap.append(len(set(ids.tolist()) & set(exact.tolist())) / 20)
        np.testing.assert_allclose(sims, vectors[ids] @ q, rtol=1e-5, atol=1e-6)  # scores are exact
    assert np.mean(overlap) >= 0.95


def test_update_keeps_the_cells_and_only_assigns_new_vectors(vectors, ivf):
    index, info, _ = ivf
    keep = np.arange(2000, 12_000)
    new = _unit(3000, 16, seed=7)
    grown = np.concatenate([vectors[keep], new])
    source = np.concatenate([keep, np.full(len(new), -1)])
    index2, info2, reason = ann.build_coarse(grown, "ivf", previous=index, previous_info=info,
                                             previous_version="v-old", source=source)
    assert info2["training"] == "kept from v-old" and info2["trained_count"] == 12_000
    assert "cells kept" in reason and index2.ntotal == len(grown)
    before, after = ann.list_of_rows(index), ann.list_of_rows(index2)
    assert (after[:len(keep)] == before[keep]).all()
    _, nearest = ann._faiss().extract_index_ivf(index).quantizer.search(new, 1)
    assert (after[len(keep):] == nearest[:, 0]).all()
    assert index.ntotal == 12_000  # the previous index is not changed


def test_cells_are_trained_again_past_the_growth_factor(vectors, ivf):
    index, info, _ = ivf
    big = _unit(int(12_000 * ann.RETRAIN_GROWTH) + 1000, 16, seed=9)
    _, info2, reason = ann.build_coarse(big, "ivf", previous=index, previous_info=info, previous_version="v-old",
                                        source=np.full(len(big), -1))
    assert info2["training"] == "new" and info2["trained_count"] == len(big) and "kept" not in reason


# ------------------------------------------------------------------------------------------ the build path
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    tiny_world(out, groups=20)
    return out


@pytest.fixture
def small_ivf(monkeypatch):
    """IVF allowed on a few dozen images (4 cells) so the build path can be tested on rendered images."""
    monkeypatch.setattr(ann, "IVF_MIN_VECTORS", 8)
    monkeypatch.setattr(ann, "ivf_lists", lambda n: 4)
    monkeypatch.setattr(ann, "default_nprobe", lambda nlist: 4)


def _copy(world: Path, count: int, dest: Path, start: int = 0) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((world / "images" / "test").glob("*.png"))[start:start + count]:
        shutil.copy2(f, dest / f.name)


def test_build_ivf_then_update_keeps_cells_and_searches_like_flat(world, embedded, tmp_path, small_ivf):
    folder = tmp_path / "photos"
    _copy(world, 30, folder)
    first = build_index(folder, tmp_path / "ivf", IndexConfig(index="ivf"), backbone=embedded, progress=False)
    assert first.index_kind == "ivf" and any("ivf index (asked for)" in n for n in first.notes)
    info = ann.index_info(read_index(tmp_path / "ivf"))
    assert info["kind"] == "ivf" and info["training"] == "new" and info["trained_count"] == 30

    _copy(world, 5, folder, start=30)
    second = build_index(folder, tmp_path / "ivf", IndexConfig(index="ivf"), backbone=embedded, progress=False)
    data = read_index(tmp_path / "ivf")
    assert second.encoded == 5 and ann.index_info(data)["training"] == f"kept from {first.version}"
    assert data.coarse.ntotal == 35

    flat = build_index(folder, tmp_path / "flat", IndexConfig(index="flat"), backbone=embedded, progress=False)
    assert flat.index_kind == "flat"
    a, b = Searcher(tmp_path / "ivf", backbone=embedded), Searcher(tmp_path / "flat", backbone=embedded)
    for q in ("no guitar", "a dog", "a cat but no dog"):
        ha, hb = a.search(q, 10).hits, b.search(q, 10).hits
        assert [h.path for h in ha] == [h.path for h in hb]
        assert [round(h.score, 4) for h in ha] == [round(h.score, 4) for h in hb]
    assert a.info()["index_kind"] == "ivf" and b.info()["index_kind"] == "flat"


def test_ivf_asked_for_on_a_small_folder_builds_flat_and_the_cli_says_so(world, tmp_path):
    from sayno.cli import app

    folder = tmp_path / "photos"
    _copy(world, 6, folder)
    run = CliRunner().invoke(app, ["index", "build", str(folder), "--out", str(tmp_path / "idx"), "--index", "ivf",
                                   "--json", "--threads", "1"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout[run.stdout.index("{"):])
    assert report["index_kind"] == "flat" and "flat index instead" in " ".join(report["notes"])
    assert "note:" in run.stderr and "at least 10,000" in run.stderr
    assert ann.index_info(read_index(tmp_path / "idx"))["kind"] == "flat"
    bad = CliRunner().invoke(app, ["index", "build", str(folder), "--out", str(tmp_path / "x"), "--index", "hnsw"])
    assert bad.exit_code == 2 and "flat, ivf, auto" in bad.output


def test_a_failing_index_build_leaves_the_live_version_and_no_half_version(world, embedded, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    _copy(world, 6, folder)
    build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    live = current_version(tmp_path / "idx")
    _copy(world, 2, folder, start=6)

    def broken(*args, **kwargs):
        raise RuntimeError("interrupted while building the index")

    monkeypatch.setattr("sayno.search.build.build_coarse", broken)
    with pytest.raises(SearchError, match="nothing changed"):
        build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    assert current_version(tmp_path / "idx") == live and len(read_index(tmp_path / "idx")) == 6
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.startswith(".tmp-")]


# ------------------------------------------------------------------------------------------ streamed vectors
def test_npy_rows_reads_like_the_array(tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors)
    rows = shards.NpyRows(tmp_path / "v.npy")
    assert rows.shape == vectors.shape and len(rows) == len(vectors)
    np.testing.assert_array_equal(rows[100:300], vectors[100:300])
    ids = np.array([5, 3, 11_999, 0])
    np.testing.assert_array_equal(rows[ids], vectors[ids])
    np.testing.assert_array_equal(np.asarray(rows), vectors)


def test_merge_to_file_streams_kept_and_new_rows_in_order(tmp_path, vectors, monkeypatch):
    monkeypatch.setattr(shards, "CHUNK", 7)
    np.save(tmp_path / "old.npy", vectors[:50])
    source = np.array([3, -1, 10, 49, -1, 0] * 5, np.int64)
    new = {i: np.full(16, i, np.float32) for i in np.flatnonzero(source < 0).tolist()}
    rows = np.arange(len(source))[np.arange(len(source)) % 4 != 1]  # some scanned rows left out
    path = shards.merge_to_file(tmp_path / "m.npy", rows, source, shards.NpyRows(tmp_path / "old.npy"), new, 16)
    want = np.stack([vectors[source[i]] if source[i] >= 0 else new[i] for i in rows])
    np.testing.assert_array_equal(np.load(path), want)


def test_a_build_interrupted_while_merging_leaves_the_live_version_and_is_cleaned_up(world, embedded, tmp_path,
                                                                                    monkeypatch):
    folder = tmp_path / "photos"
    _copy(world, 6, folder)
    build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    live = current_version(tmp_path / "idx")
    _copy(world, 3, folder, start=6)
    monkeypatch.setattr(shards, "CHUNK", 2)
    real, calls = shards._chunk, []

    def dies_on_the_third_chunk(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-merge
        return real(*args)

    monkeypatch.setattr(shards, "_chunk", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    assert current_version(tmp_path / "idx") == live and len(read_index(tmp_path / "idx")) == 6
    assert not list((tmp_path / "idx").glob(".incoming-*")) and not list((tmp_path / "idx").glob(".tmp-*"))

    (tmp_path / "idx" / ".incoming-deadbeef.npy").write_bytes(b"half a file of a killed build")
    monkeypatch.setattr(shards, "_chunk", real)
    report = build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    assert report.total == 9 and report.encoded == 3 and not list((tmp_path / "idx").glob(".incoming-*"))
    data = read_index(tmp_path / "idx")
    np.testing.assert_allclose(np.linalg.norm(data.features(), axis=1), 1.0, atol=1e-4)


def test_leftovers_of_running_builds_are_kept(tmp_path):
    live = tmp_path / f".incoming-{os.getppid()}-abc.spool"  # the parent process runs
    dead = tmp_path / ".incoming-999999999-abc.npy"  # no such process
    unnamed = tmp_path / ".incoming-deadbeef.npy"
    for p in (live, dead, unnamed):
        p.write_bytes(b"x")
    assert sorted(shards.remove_leftovers(tmp_path)) == sorted([dead, unnamed]) and live.exists()
