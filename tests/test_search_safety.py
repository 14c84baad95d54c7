"""sayno.search against a hostile but realistic user (issue 12): nothing of the user's is ever removed, builds
never silently replace each other, readers never fail because of a concurrent build, damaged or odd index
files and bad arguments are one-line errors, a full disk leaves nothing behind."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sayno.search import IndexConfig, IndexMismatch, Searcher, SearchError, build_index, read_index, store
from sayno.search.build import check_out
from sayno.search.store import current_version, recorded_versions


def _images(folder: Path, n: int, start: int = 0) -> list[Path]:
    """``n`` small distinct PNGs in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        path = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def _build(folder: Path, out: Path, backbone, **kw):
    return build_index(folder, out, backbone=backbone, progress=False, **kw)


def _app():
    from sayno.cli import app

    return app


def _out(r) -> str:
    return " ".join(r.output.split())


@pytest.fixture(scope="module")
def small_index(embedded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    _images(folder, 6)
    out = tmp_path_factory.mktemp("idx") / "idx"
    _build(folder, out, embedded)
    return out


# ------------------------------------------------------------------------------------------ item 1: data loss
def test_user_folders_named_like_versions_survive(embedded, tmp_path):
    """`mkdir photos/v-2019; cp a.png photos/v-2019/; sayno index build photos --out photos` (twice and more)
    used to remove photos/v-2019 with its images. Now --out photos is refused, and with --force the index
    lives beside the photos and removes only the versions it wrote."""
    photos = tmp_path / "photos"
    _images(photos, 3)
    (photos / "v-2019").mkdir()
    shutil.copy2(photos / "img000.png", photos / "v-2019" / "a.png")
    runner = CliRunner()
    r = runner.invoke(_app(), ["index", "build", str(photos), "--out", str(photos)])
    assert r.exit_code == 2 and "is the image folder" in _out(r) and "--force" in _out(r), r.output
    assert sorted(p.name for p in photos.iterdir()) == ["img000.png", "img001.png", "img002.png", "v-2019"]

    for i in range(4):  # enough builds for garbage collection to run several times
        _images(photos, 1, start=10 + i)  # a change, so every build writes a version
        r = runner.invoke(_app(), ["index", "build", str(photos), "--out", str(photos), "--force"])
        assert r.exit_code == 0, r.output
    assert (photos / "v-2019" / "a.png").read_bytes() == (photos / "img000.png").read_bytes()
    ours = recorded_versions(photos)
    assert len(ours) == 2 and ours[-1] == current_version(photos)
    versions = sorted(p.name for p in photos.iterdir() if p.name.startswith("v-"))
    assert versions == sorted([*ours, "v-2019"])
    assert len(read_index(photos)) == 3 + 4 + 1  # the image inside v-2019 is indexed like any other


def test_out_inside_the_folder_or_beside_other_files_is_refused(embedded, tmp_path):
    photos = tmp_path / "photos"
    _images(photos, 2)
    with pytest.raises(SearchError, match="inside the image folder"):
        _build(photos, photos / "index", embedded)
    other = tmp_path / "docs"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(SearchError, match="not a sayno index"):
        _build(photos, other, embedded)
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]  # nothing written, not even a lock
    assert not (photos / "index").exists()
    _build(photos, other, embedded, force=True)
    assert (other / "thesis.tex").read_text() == "precious" and len(read_index(other)) == 2
    (tmp_path / "empty").mkdir()
    assert _build(photos, tmp_path / "empty", embedded).total == 2  # an empty folder is fine


def test_legacy_index_without_a_record_removes_only_its_live_version(embedded, tmp_path):
    """An index written before VERSIONS existed: only its live version counts as its own."""
    photos = tmp_path / "photos"
    _images(photos, 2)
    idx = tmp_path / "idx"
    _build(photos, idx, embedded)
    old_live = current_version(idx)
    (idx / store.MANIFEST).unlink()
    (idx / "v-mine").mkdir()
    (idx / "v-mine" / "keep.txt").write_text("not the index's")
    for i in range(3):
        _images(photos, 1, start=20 + i)
        _build(photos, idx, embedded)
    assert (idx / "v-mine" / "keep.txt").is_file()
    assert not (idx / old_live).exists()  # recorded on the first new write, collected later
    assert len(recorded_versions(idx)) == 2


# ------------------------------------------------------------------------------------------ item 2: one writer
class _SlowBackbone:
    """The embedded backbone with a slow image encoder, so that two builds overlap."""

    def __init__(self, inner, delay: float):
        self._inner, self._delay = inner, delay

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def encode_image(self, *args, **kwargs):
        time.sleep(self._delay)
        return self._inner.encode_image(*args, **kwargs)


def test_another_builds_lock_and_spool_files_are_not_other_files(tmp_path):
    """A second build checked --out while the first one's spool file was there and refused the folder as "not a
    sayno index" instead of waiting for the lock's clear error (seen as a flaky concurrent-build test)."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    (out / ".lock").write_text("")
    (out / ".incoming-4242-abcdef.npy").write_bytes(b"\x93NUMPY")
    check_out(photos.resolve(), out.resolve())  # accepted: only another build's own files
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SearchError, match="not a sayno index"):
        check_out(photos.resolve(), out.resolve())


def test_two_builds_of_different_folders_into_one_new_index(embedded, tmp_path):
    """The writer lock covers the whole build (compatibility check included): exactly one build wins, the
    other is refused with a clear error; never a silent replace."""
    a, b = tmp_path / "a", tmp_path / "b"
    _images(a, 3)
    _images(b, 4, start=50)
    out = tmp_path / "shared"
    slow = _SlowBackbone(embedded, 0.5)
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(folder: Path) -> None:
        start.wait()
        try:
            results[folder.name] = _build(folder, out, slow)
        except SearchError as e:
            results[folder.name] = e

    threads = [threading.Thread(target=run, args=(f,)) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [k for k, v in results.items() if not isinstance(v, Exception)]
    lost = [v for v in results.values() if isinstance(v, Exception)]
    assert len(won) == 1 and len(lost) == 1, results
    assert "another `sayno index build` is writing" in str(lost[0]) or isinstance(lost[0], IndexMismatch)
    assert read_index(out).root == (tmp_path / won[0]).resolve()
    assert len(recorded_versions(out)) == 1


def test_a_build_while_another_holds_the_lock_is_refused_before_any_work(embedded, small_index, monkeypatch):
    data = read_index(small_index)
    monkeypatch.setattr("sayno.search.build.load", lambda *a, **k: pytest.fail("loaded a model"))
    with store.writer_lock(small_index), pytest.raises(SearchError, match="another `sayno index build` is writing"):
        build_index(data.root, small_index, IndexConfig(glasses=None), progress=False)
    assert current_version(small_index) == data.version


# ------------------------------------------------------------------------------------------ item 4: readers
def test_reader_survives_its_version_removed_after_opening(small_index, monkeypatch, tmp_path):
    """A version removed by a build right after a reader opened it still loads and searches."""
    copy = tmp_path / "idx"
    shutil.copytree(small_index, copy)
    real_open = store._open_version

    def open_then_remove(folder: Path):
        files = real_open(folder)
        shutil.rmtree(folder)
        return files

    monkeypatch.setattr(store, "_open_version", open_then_remove)
    data = read_index(copy)
    assert not data.folder.exists() and len(data) == 6
    ids, sims = data.search(data.features([2])[0], 1)
    assert ids.tolist() == [2] and sims[0] == pytest.approx(1.0, abs=1e-5)


def test_reader_retries_a_version_half_removed_before_opening(small_index, monkeypatch, tmp_path):
    """CURRENT read, then a build removes that version file by file: its search.faiss is gone while the
    other files remain (faiss raised RuntimeError, which the old retry loop did not catch)."""
    copy = tmp_path / "idx"
    shutil.copytree(small_index, copy)
    live = current_version(copy)
    shutil.copytree(copy / live, copy / "v-half-removed")
    (copy / "v-half-removed" / "search.faiss").unlink()
    names = iter(["v-half-removed"])
    real_current = store.current_version
    monkeypatch.setattr(store, "current_version", lambda root: next(names, None) or real_current(root))
    data = read_index(copy)
    assert data.version == live and len(data) == 6


def test_searcher_keeps_serving_the_version_it_holds(embedded, tmp_path):
    photos = tmp_path / "photos"
    _images(photos, 4)
    idx = tmp_path / "idx"
    _build(photos, idx, embedded)
    searcher = Searcher(idx, backbone=embedded, glasses="none")
    held = searcher.data.version
    shutil.rmtree(idx / held)  # its files are mapped: still readable
    (idx / "CURRENT").write_text("v-gone\n")  # and the index now names a version that does not exist
    res = searcher.search("a red square", k=3)
    assert res.version == held and len(res.hits) == 3
    assert any("could not be opened" in n for n in res.notes) and searcher.info()["stale"]
    _images(photos, 1, start=9)
    _build(photos, idx, embedded, config=IndexConfig(rebuild=True))  # a good version again
    res = searcher.search("a red square", k=10)
    assert res.index_size == 5 and not res.notes and searcher.stale is None


# ------------------------------------------------------------------------------------------ item 15: damage
def test_truncated_search_faiss_is_a_one_line_error(small_index, embedded, tmp_path):
    copy = tmp_path / "idx"
    shutil.copytree(small_index, copy)
    faiss_file = copy / current_version(copy) / "search.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    with pytest.raises(SearchError, match="damaged, rebuild it"):
        read_index(copy)
    r = CliRunner().invoke(_app(), ["search", str(copy), "a dog"])
    assert r.exit_code == 2 and "damaged" in _out(r) and "Traceback" not in r.output
    folder = read_index(small_index).root
    # an update never reads the flat faiss file (derived from vectors.npy): it writes a sound new version
    assert _build(folder, copy, embedded).total == 6
    assert len(read_index(copy)) == 6
    faiss_file.write_bytes(b"")  # the old version's file, still damaged, is not the current one any more
    assert _build(folder, copy, embedded, config=IndexConfig(rebuild=True)).total == 6


@pytest.mark.parametrize("pointer", ["../elsewhere", "/tmp", "v-x/../../elsewhere", "", "v-ok\nrm -rf"])
def test_current_must_name_a_version_inside_the_index(small_index, embedded, tmp_path, pointer):
    """A `../` in CURRENT was followed (a copy of a version outside the index was read)."""
    copy = tmp_path / "idx"
    shutil.copytree(small_index, copy)
    shutil.copytree(copy / current_version(copy), tmp_path / "elsewhere")
    (copy / "CURRENT").write_text(pointer + "\n")
    with pytest.raises(SearchError, match="not a version folder|not a sayno index"):
        read_index(copy)
    folder = read_index(small_index).root
    _build(folder, copy, embedded, config=IndexConfig(rebuild=True))
    assert (tmp_path / "elsewhere" / "vectors.npy").is_file()  # never touched
    assert len(read_index(copy)) == 6


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["files", "pointer"])
def test_full_disk_during_a_build_changes_nothing(embedded, tmp_path, monkeypatch, where):
    photos = tmp_path / "photos"
    _images(photos, 3)
    idx = tmp_path / "idx"
    _build(photos, idx, embedded)
    before = sorted(p.name for p in idx.iterdir())
    live = current_version(idx)
    _images(photos, 1, start=30)
    if where == "files":  # the vectors are in the new version's folder, its file table cannot be written
        monkeypatch.setattr(store.np, "savez", _full_disk)
    else:  # the version is complete, replacing CURRENT fails
        real_replace = os.replace

        def replace(src, dst, *a, **k):
            if Path(dst).name == "CURRENT":
                _full_disk()
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SearchError, match="No space left on device.*still " + live):
        _build(photos, idx, embedded)
    monkeypatch.undo()
    after = sorted(p.name for p in idx.iterdir())
    assert after == before, after  # no .tmp-* folder, no *.partial.tmp file, no new version
    assert current_version(idx) == live and len(read_index(idx)) == 3
    assert _build(photos, idx, embedded).total == 4  # and the next build works


# ------------------------------------------------------------------------------------------ item 15: arguments
def test_bad_build_arguments_fail_before_any_work(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    _images(photos, 1)
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr("sayno.search.build.load", lambda *a, **k: pytest.fail("loaded a model"))
    cases = [
        ({"out": tmp_path / "a-file"}, "is a file"),
        ({"out": tmp_path / "missing" / "parent" / "idx"}, "no such folder"),
        ({"out": tmp_path / "idx", "threads": 0}, "threads=0"),
        ({"out": tmp_path / "idx", "threads": -2}, "threads=-2"),
        ({"out": tmp_path / "idx", "config": IndexConfig(batch_size=0)}, "batch_size=0"),
        ({"out": tmp_path / "idx", "config": IndexConfig(glasses=str(tmp_path / "nope.safetensors"))},
         "no such Glasses checkpoint"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SearchError, match=message):
            build_index(photos, progress=False, **kwargs)
    assert not (tmp_path / "missing").exists() and not (tmp_path / "idx").exists()
    runner = CliRunner()
    for args, message in ((["--out", str(tmp_path / "a-file")], "is a file"),
                          (["--out", str(tmp_path / "missing" / "x")], "no such folder"),
                          (["--out", str(tmp_path / "idx"), "--threads", "0"], "--threads")):
        r = runner.invoke(_app(), ["index", "build", str(photos), *args])
        assert r.exit_code == 2 and message in _out(r), (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "missing").exists()


def test_a_failed_first_build_leaves_no_folder(embedded, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(SearchError, match="none of its 1 image files"):
        _build(tmp_path / "bad", tmp_path / "idx", embedded)
    assert not (tmp_path / "idx").exists()


# ------------------------------------------------------------------------------------------ item 16: the API
def test_searcher_checks_its_inputs(small_index, embedded):
    s = Searcher(small_index, backbone=embedded)
    bad_calls = [
        (lambda: s.search(b"no cat", 3), "must be a str"),
        (lambda: s.search(["no cat"], 3), "must be a str"),
        (lambda: s.search(42, 3), "must be a str"),
        (lambda: s.search("a dog", 2.5), "k=2.5"),
        (lambda: s.search("a dog", True), "k=True"),
        (lambda: s.search("a dog", "5"), "k='5'"),
        (lambda: s.search("no dog", 3, rerank=-3), "rerank=-3"),
        (lambda: s.search("no dog", 3, rerank=1.5), "rerank=1.5"),
        (lambda: s.search("a dog", 3, mode=None), "mode=None"),
        (lambda: Searcher(small_index, backbone=embedded, threads=0), "threads=0"),
        (lambda: Searcher(123, backbone=embedded), "index must be a folder path"),
        (lambda: Searcher(small_index, backbone=embedded, glasses=3), "glasses must be"),
    ]
    for call, message in bad_calls:
        with pytest.raises(SearchError, match=message):
            call()
    data = s.data
    dim = data.dim
    for query, message in ((np.zeros(dim + 1), "expected one"), (np.zeros((dim, 1)), "expected one"),
                           (np.full(dim, np.nan), "NaN"), ("a dog", "expected a")):
        with pytest.raises(SearchError, match=message):
            data.search(query, 3)
    with pytest.raises(SearchError, match="k=-1"):
        data.search(np.ones(dim), -1)
    with pytest.raises(SearchError, match="row ids"):
        data.features([len(data)])
    assert len(data.search(np.ones((1, dim)), 2)[0]) == 2  # a (1, D) row is fine
    assert s.search("no dog", np.int64(2)).hits[0].sha1 == data.files.sha1[
        data.files.path.tolist().index(s.search("no dog", 2).hits[0].path)]


def test_a_long_running_searcher_keeps_its_caches_bounded(small_index, embedded):
    """Issue 12 item 14: every new negated phrase is embedded once; the Glasses phrase cache (an LRU) and
    the searcher's query cache stay bounded however many queries come."""
    s = Searcher(small_index, backbone=embedded)
    s.glasses.phrases.capacity = 8
    for i in range(30):
        s.search(f"a photo with no thing{i} and no other{i}", 2)
        assert len(s.glasses.phrases) <= 8
    assert len(s._text_cache) <= 513
