"""sayno.search: incremental builds, bad files, refusals, routing, quality on the world, concurrent rebuilds,
the CLI and a two-process torchrun build."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sayno.base.shipped import shipped_weights
from sayno.errors import BackboneMismatch
from sayno.search import (
    IndexBackboneMismatch,
    IndexConfig,
    IndexMismatch,
    Searcher,
    SearchError,
    build_index,
    read_index,
    scan_folder,
)
from sayno.search.store import current_version
from sayno.search.testing import absent_first_auc, common_objects, object_truth, tiny_world

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_GLASSES = shipped_weights("glasses", "embedded")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    tiny_world(out, groups=100)
    return out


def _copy(world: Path, names: list[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted((world / "images" / "test").glob("*.png"))
    out = []
    for i, name in enumerate(names):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        out.append(Path(shutil.copy2(files[i], dest / name)))
    return out


# ------------------------------------------------------------------------------------------ building
def test_incremental_add_change_delete_rename(world, embedded, tmp_path):
    folder = tmp_path / "photos"
    _copy(world, ["a.png", "b.png", "c.png", "sub/d.png", "e.png"], folder)
    first = build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    assert (first.total, first.encoded, first.reused, first.removed) == (5, 5, 0, 0)

    spare = sorted((world / "images" / "test").glob("*.png"))
    (folder / "b.png").write_bytes(spare[20].read_bytes())          # changed content
    (folder / "c.png").unlink()                                      # deleted
    (folder / "sub" / "d.png").rename(folder / "sub" / "d2.png")     # renamed: same content, new path
    shutil.copy2(spare[21], folder / "f.png")                        # new
    (folder / "notes.txt").write_text("not an image")                # ignored
    second = build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    assert (second.total, second.encoded, second.reused, second.removed) == (5, 2, 3, 2)
    data = read_index(tmp_path / "idx")
    assert data.files.path.tolist() == ["a.png", "b.png", "e.png", "f.png", "sub/d2.png"]

    # the same vectors as a fresh build, and as encoding the files directly
    fresh = read_index(build_index(folder, tmp_path / "fresh", backbone=embedded, progress=False).index)
    assert fresh.files.path.tolist() == data.files.path.tolist()
    assert (fresh.files.sha1 == data.files.sha1).all()
    np.testing.assert_allclose(data.features(), fresh.features(), atol=1e-6)
    from sayno.features import encode_images

    direct = encode_images(embedded, [folder / p for p in data.files.path], progress=False).features
    np.testing.assert_allclose(data.features(), direct, atol=1e-5)

    third = build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)  # nothing changed
    assert (third.encoded, third.reused, third.removed) == (0, 5, 0)


def test_unreadable_files_are_reported_and_skipped(world, embedded, tmp_path):
    folder = tmp_path / "photos"
    _copy(world, ["ok1.png", "deep/ok2.png"], folder)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    good = (folder / "ok1.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "text.webp").write_text("hello, I am not a picture")
    (folder / "dangling.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    report = build_index(folder, tmp_path / "idx", backbone=embedded, progress=False)
    assert report.total == 2
    bad = {Path(b.file).name: b.reason for b in report.bad}
    assert set(bad) == {"corrupt.png", "truncated.png", "text.webp", "dangling.jpg"}
    assert all(Path(b.file).is_absolute() for b in report.bad)
    assert "decode" in bad["corrupt.png"] and "decode" in bad["text.webp"]
    data = read_index(tmp_path / "idx")
    assert data.files.path.tolist() == ["deep/ok2.png", "ok1.png"]
    assert {Path(b["path"]).name for b in data.meta["bad"]} == set(bad)

    r = CliRunner().invoke(_app(), ["index", "build", str(folder), "--out", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    assert "skipped" in _out(r) and "corrupt.png" in _out(r)


def test_empty_or_unusable_folder_is_an_error(embedded, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(SearchError, match="no images"):
        build_index(tmp_path / "empty", tmp_path / "idx", backbone=embedded, progress=False)
    assert not (tmp_path / "idx" / "CURRENT").exists()
    with pytest.raises(SearchError, match="no such image folder"):
        build_index(tmp_path / "missing", tmp_path / "idx", backbone=embedded, progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(SearchError, match="none of its 1 image files"):
        build_index(tmp_path / "bad", tmp_path / "idx", backbone=embedded, progress=False)
    r = CliRunner().invoke(_app(), ["index", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "idx")])
    assert r.exit_code == 2 and "no images" in _out(r)


def test_scan_follows_symlinked_folders_once(world, tmp_path):
    """The one folder walker (sayno.data.walk_images): symlinked folders are followed, a link cycle ends."""
    folder = tmp_path / "photos"
    _copy(world, ["a.png", "real/b.png", ".hidden/c.png"], folder)
    outside = tmp_path / "elsewhere"
    _copy(world, ["d.png"], outside)
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    (folder / "real" / "loop").symlink_to(folder, target_is_directory=True)
    rows, bad = scan_folder(folder)
    assert [r[0] for r in rows] == ["a.png", "linked/d.png", "real/b.png"] and bad == []


# ------------------------------------------------------------------------------------------ format
def test_index_metadata_is_the_checkpoint_envelope(index, embedded, tmp_path):
    data = read_index(index)
    meta = json.loads((data.folder / "meta.json").read_text())
    assert (meta["format"], meta["version"]) == ("sayno-index", "3")
    assert (meta["backbone_spec"], meta["backbone_fingerprint"]) == ("embedded", embedded.fingerprint)
    assert meta["config"]["model"] == "embedded" and meta["count"] == len(data) == 200
    assert (data.model, data.fingerprint, data.dim) == ("embedded", embedded.fingerprint, embedded.embed_dim)

    old = tmp_path / "v1"  # an index written by sayno 0.1 (format_version 1, model/fingerprint keys) still reads
    shutil.copytree(index, old)
    version = read_index(old).folder
    v1 = {"format_version" if k == "version" else k: v for k, v in meta.items()}
    v1["format_version"] = 1
    v1["model"], v1["fingerprint"] = v1.pop("backbone_spec"), v1.pop("backbone_fingerprint")
    (version / "meta.json").write_text(json.dumps(v1))
    assert read_index(old).fingerprint == embedded.fingerprint
    assert Searcher(old, backbone=embedded).search("no dog", 3).method == "glasses"

    (version / "meta.json").write_text(json.dumps({**meta, "version": "99"}))
    with pytest.raises(SearchError, match="rebuild the index"):
        read_index(old)
    r = CliRunner().invoke(_app(), ["search", str(old), "a dog"])
    assert r.exit_code == 2 and "rebuild the index" in _out(r)


def test_threads_are_restored(index, embedded):
    import torch

    before = torch.get_num_threads()
    searcher = Searcher(index, backbone=embedded, threads=1)
    assert searcher.search("no dog", 3).method == "glasses"
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------ refusals
def test_other_backbone_or_glasses_is_refused(index, embedded, world, tmp_path):
    from sayno.backbones.testing import tiny_open_clip
    from sayno.glasses import load_glasses

    other_bb = tiny_open_clip(seed=3, embed_dim=128)
    with pytest.raises(IndexMismatch, match="built with backbone 'embedded'") as caught:
        Searcher(index, backbone=other_bb, glasses="none")
    assert isinstance(caught.value, IndexBackboneMismatch) and isinstance(caught.value, BackboneMismatch)
    with pytest.raises(BackboneMismatch, match="made for backbone 'embedded'"):  # Glasses of another backbone
        build_index(world / "images", tmp_path / "other-bb", IndexConfig(glasses=str(SHIPPED_GLASSES)),
                    backbone=other_bb, progress=False)
    with pytest.raises(IndexMismatch, match="built with backbone"):
        build_index(world / "images", index, IndexConfig(glasses=None), backbone=other_bb, progress=False)
    other = tmp_path / "other-glasses.safetensors"
    load_glasses(SHIPPED_GLASSES, embedded).save(other, training={"note": "same weights, another checkpoint"})
    with pytest.raises(IndexMismatch, match="other-glasses"):
        Searcher(index, backbone=embedded, glasses=other)
    with pytest.raises(IndexMismatch):
        build_index(world / "images", index, IndexConfig(glasses=str(other)), backbone=embedded, progress=False)
    r = CliRunner().invoke(_app(), ["search", str(index), "no dog", "--glasses", str(other)])
    assert r.exit_code == 2 and "built with" in _out(r)
    # plain CLIP only is allowed; --rebuild starts over
    assert Searcher(index, backbone=embedded, glasses="none").search("no dog", 3).method == "clip"
    small = tmp_path / "small"
    _copy(world, ["a.png", "b.png"], small)
    build_index(small, tmp_path / "idx", backbone=embedded, progress=False)
    with pytest.raises(IndexMismatch, match="indexes"):  # another folder into the same index
        build_index(small, index, backbone=embedded, progress=False)
    rep = build_index(small, tmp_path / "idx", IndexConfig(glasses=str(other), rebuild=True), backbone=embedded,
                      progress=False)
    assert rep.encoded == rep.total == 2
    assert Searcher(tmp_path / "idx", backbone=embedded, glasses=other).glasses is not None


# ------------------------------------------------------------------------------------------ search
def test_routing_and_exact_scores(searcher, embedded):
    from sayno.base.scoring import TextBatch

    feats = searcher.data.features()
    paths = searcher.data.files.path.tolist()
    plain = searcher.search("a dog and a bee", k=7)
    assert plain.method == "clip" and not plain.negated and len(plain.hits) == 7
    h = embedded.encode_text(["a dog and a bee"]).numpy()
    brute = embedded.logit_scale * (feats @ h[0])
    top = np.argsort(-brute)[:7]
    assert [x.path for x in plain.hits] == [paths[i] for i in top]
    np.testing.assert_allclose([x.score for x in plain.hits], brute[top], rtol=1e-4)

    neg = searcher.search("a picture with no dog", k=7)
    assert neg.method == "glasses" and neg.negated and [p["phrase"] for p in neg.phrases] == ["dog"]
    layers = embedded.encode_text_layers(["a picture with no dog"]).numpy()
    full = searcher.glasses.score_matrix(TextBatch(["a picture with no dog"], layers[:, -1], layers), feats)[0]
    top = np.argsort(-full)[:7]
    assert [x.path for x in neg.hits] == [paths[i] for i in top]
    np.testing.assert_allclose([x.score for x in neg.hits], full[top], rtol=1e-4)
    assert searcher.search("a picture with no dog", k=7, mode="clip").method == "clip"


def test_bad_queries(searcher):
    for q in ("", "   ", None):
        with pytest.raises(SearchError, match="empty query"):
            searcher.search(q, 5)
    with pytest.raises(SearchError, match="too long"):
        searcher.search("a dog " * 300, 5)
    long = searcher.search("a dog and " * 40 + "no cat", 5)  # < 1000 characters, > 32 tokens
    assert len(long.hits) == 5 and any("only its beginning" in n for n in long.notes)
    only_no = searcher.search("no", 5)
    # a cue with no phrase: the trained Glasses' fallback, the Lens on the whole query (issue 24), and it says so
    assert only_no.method == "glasses" and only_no.negated and [p["kind"] for p in only_no.phrases] == ["caption"]
    assert any("fallback" in n for n in only_no.notes)
    for k in (0, -1, 100000):
        with pytest.raises(SearchError, match="k="):
            searcher.search("a dog", k)
    big = searcher.search("a dog", 1000)
    assert len(big.hits) == len(searcher.data)  # fewer images than k: all of them
    with pytest.raises(SearchError, match="mode"):
        searcher.search("a dog", 5, mode="fancy")


def test_negated_query_fixed_on_the_world(searcher, world):
    """'no X' ranks images without X above images with X; plain CLIP ranks them the other way round.

    Per object: no X in sayno's top 10, at least one in plain CLIP's. Over the five most common objects (6-9
    images each of 200, so one object's AUC is noisy): mean absent-first AUC above 0.8 for sayno, below 0.5
    for plain CLIP.
    """
    truth = object_truth(world)
    paths = searcher.data.files.path.tolist()
    n = len(paths)
    aucs: dict[str, list[float]] = {"clip": [], "auto": []}
    for obj in common_objects(truth, 5):
        has = np.array([obj in truth[p] for p in paths])
        for mode in ("clip", "auto"):
            res = searcher.search(f"no {obj}", k=n, mode=mode)
            score = np.empty(n)
            score[[paths.index(h.path) for h in res.hits]] = [h.score for h in res.hits]
            aucs[mode].append(absent_first_auc(score, has))
            top10 = sum(obj in truth[h.path] for h in res.hits[:10])
            if mode == "auto":
                assert res.method == "glasses" and top10 == 0, (obj, top10)
            else:
                assert top10 >= 1, (obj, top10)
    assert np.mean(aucs["clip"]) < 0.5 and np.mean(aucs["auto"]) > 0.8, aucs


def test_rerank_reorders_the_shortlist(searcher):
    base = searcher.search("no dog", k=15)
    rr = searcher.search("no dog", k=15, rerank=15)
    assert all(h.refined for h in rr.hits)
    assert {h.path for h in rr.hits} == {h.path for h in base.hits}
    assert [h.score for h in rr.hits] == sorted((h.score for h in rr.hits), reverse=True)
    part = searcher.search("no dog", k=15, rerank=5)
    assert [h.refined for h in part.hits] == [True] * 5 + [False] * 10


# ------------------------------------------------------------------------------------------ concurrency
def test_readers_see_old_or_new_index_during_rebuilds(world, embedded, tmp_path):
    folder = tmp_path / "photos"
    _copy(world, [f"{i:02d}.png" for i in range(12)], folder)
    extra = sorted((world / "images" / "test").glob("*.png"))[40:44]
    idx = tmp_path / "idx"
    build_index(folder, idx, backbone=embedded, progress=False)
    searcher = Searcher(idx, backbone=embedded)
    seen, errors, stop = set(), [], threading.Event()

    def reader(kind: str) -> None:
        while not stop.is_set():
            try:
                if kind == "open":
                    d = read_index(idx)
                    assert d.coarse.ntotal == len(d.vectors) == len(d.files)
                    seen.add(len(d))
                else:
                    res = searcher.search("no dog" if len(seen) % 2 else "a dog", k=50)
                    seen.add(res.index_size)
                    assert len(res.hits) == res.index_size
                    assert all((folder / h.path).name for h in res.hits)
            except Exception as e:  # noqa: BLE001 - every failure is a test failure
                errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(k,)) for k in ("open", "open", "search")]
    for t in threads:
        t.start()
    try:
        for i in range(8):
            if i % 2 == 0:
                for j, f in enumerate(extra):
                    shutil.copy2(f, folder / f"x{j}.png")
            else:
                for j in range(len(extra)):
                    (folder / f"x{j}.png").unlink()
            build_index(folder, idx, backbone=embedded, progress=False)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert seen == {12, 16}
    assert len([p for p in idx.iterdir() if p.name.startswith("v-")]) <= 2
    assert not [p for p in idx.iterdir() if p.name.startswith(".tmp-")]
    assert current_version(idx) == read_index(idx).version


# ------------------------------------------------------------------------------------------ CLI
def _out(r) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(r.output.split())


def _app():
    from sayno.cli import app

    return app


def test_cli_build_and_search(world, index, tmp_path):
    runner = CliRunner()
    shutil.copytree(index, tmp_path / "idx")  # the CLI updates it: nothing to encode
    r = runner.invoke(_app(), ["index", "build", str(world / "images"), "--out", str(tmp_path / "idx"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["total"], rep["encoded"], rep["reused"], rep["bad"]) == (200, 0, 200, [])
    r = runner.invoke(_app(), ["search", str(tmp_path / "idx"), "no dog", "-k", "4", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["method"] == "glasses" and len(res["hits"]) == 4
    assert all(Path(h["file"]).is_file() for h in res["hits"])
    r = runner.invoke(_app(), ["search", str(tmp_path / "idx"), "a dog", "-k", "3"])
    assert r.exit_code == 0 and "plain CLIP" in r.stdout
    for bad in (["search", str(tmp_path / "idx"), "  "], ["search", str(tmp_path / "nope"), "a dog"],
                ["search", str(tmp_path / "idx"), "a dog", "-k", "0"]):
        r = runner.invoke(_app(), bad)
        assert r.exit_code == 2 and "error" in _out(r), (bad, r.output)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(world, embedded, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    folder = tmp_path / "photos"
    _copy(world, [f"{i:02d}.png" for i in range(9)], folder)
    (folder / "broken.png").write_bytes(b"not a png")
    idx = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
           str(_free_port()), "-m", "sayno.cli", "index", "build", str(folder), "--out", str(idx), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["processes"] == 2 and rep["total"] == 9 and len(rep["bad"]) == 1
    one = read_index(build_index(folder, tmp_path / "one", backbone=embedded, progress=False).index)
    two = read_index(idx)
    assert two.meta["build"]["processes"] == 2
    assert two.files.path.tolist() == one.files.path.tolist()
    assert (two.files.sha1 == one.files.sha1).all()
    np.testing.assert_allclose(two.features(), one.features(), atol=1e-5)
    assert not [p for p in idx.iterdir() if p.name.startswith(".parts-")]
