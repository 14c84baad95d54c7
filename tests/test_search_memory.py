"""sayno.search at collection scale, memory: the file table as flat arrays (format 3, format 2 still read), the
streaming folder scan, the streamed flat faiss file, and a build whose Python memory does not grow per image."""

from __future__ import annotations

import io
import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sayno.data.images import walk_images
from sayno.search import IndexConfig, Searcher, build_index, read_index, shards, store
from sayno.search.build import match_paths
from sayno.search.scan import argsort_bytes, image_paths, scan_images
from sayno.search.store import FORMAT_VERSION, StreamedFlatIndex, _faiss, coarse_index, write_faiss
from sayno.search.table import FileTable, PathColumn, Sha1Column


class FakeBackbone:
    """Enough of a backbone for build_index: seeded random unit vectors of D=16, no model."""

    spec = "fake-encoder"
    fingerprint = "fake-encoder-d16"
    logit_scale = 100.0
    context_length = 77
    embed_dim = 16

    def __init__(self) -> None:
        self.rng = torch.Generator().manual_seed(0)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.zeros(3, 2, 2)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        x = torch.randn(len(pixels), self.embed_dim, generator=self.rng)
        return x / x.norm(dim=1, keepdim=True)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _folder(root: Path, n: int, per_folder: int = 500, distinct: bool = False) -> Path:
    data = _png(0)
    for i in range(n):
        p = root / f"{i // per_folder:04d}" / f"{i:06d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_png(i) if distinct else data)
    return root


# ------------------------------------------------------------------------------------------ the table
def test_file_table_columns_read_like_string_columns_and_round_trip(tmp_path):
    paths = ["b/x.png", "a.png", "ünï/çødé.jpg", "a-b/c.png"]
    sha = [f"{i:040x}" for i in (1, 2, 3, 0)]  # one digest of zero bytes: trailing NULs must survive
    table = FileTable(np.array(paths), [1, 2, 3, 4], [5, 6, 7, 8], np.array(sha))
    assert table.path[2] == "ünï/çødé.jpg" and isinstance(table.path[0], str) and table.path[-1] == "a-b/c.png"
    assert table.path.tolist() == paths and list(table.path) == paths
    assert table.sha1[3] == "0" * 40 and table.sha1.tolist() == sha
    assert (np.asarray(table.path) == np.array(paths)).all() and np.asarray(table.sha1).dtype == np.dtype("<U40")
    assert (table.sha1 == FileTable(paths, [0] * 4, [0] * 4, sha).sha1).all()
    assert (table.sha1 == sha[1]).tolist() == [False, True, False, False]
    part = table.take(np.array([3, 0]))
    assert part.path.tolist() == ["a-b/c.png", "b/x.png"] and part.sha1.tolist() == [sha[3], sha[0]]
    assert part.size.tolist() == [4, 1] and table.path[1:3].tolist() == paths[1:3]
    assert table.path[np.array([True, False, False, True])].tolist() == ["b/x.png", "a-b/c.png"]

    with open(tmp_path / "files.npz", "wb") as f:
        table.save(f)
    with np.load(tmp_path / "files.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(["path_utf8", "path_offsets", "size", "mtime_ns", "sha1_bytes"])
        assert z["path_utf8"].dtype == np.uint8 and z["sha1_bytes"].shape == (4, 20)
        back = FileTable.from_npz(z)
    assert back.path.tolist() == paths and back.sha1.tolist() == sha and back.mtime_ns.tolist() == [5, 6, 7, 8]

    np.savez(tmp_path / "old.npz", path=np.array(paths), size=np.arange(4), mtime_ns=np.arange(4),
             sha1=np.array(sha, dtype="<U40"))  # format 2: string columns
    with np.load(tmp_path / "old.npz", allow_pickle=False) as z:
        old = FileTable.from_npz(z)
    assert old.path.tolist() == paths and old.sha1.tolist() == sha


def test_a_path_column_is_a_blob_and_offsets_not_objects():
    column = PathColumn.from_strings(f"dir/{i:06d}.png" for i in range(100_000))
    assert column.blob.nbytes == 100_000 * 14 and column.offsets.nbytes == 100_001 * 8
    assert column[99_999] == "dir/099999.png"
    assert Sha1Column(np.zeros((5, 20), np.uint8)).raw.nbytes == 100


def test_argsort_bytes_sorts_like_python_with_long_shared_prefixes():
    rng = np.random.default_rng(0)
    words = [rng.choice(list(b"ab/-."), rng.integers(1, 12)).astype(np.uint8).tobytes() for _ in range(3000)]
    words = [b"a-long-shared-prefix/" + w if i % 2 else w for i, w in enumerate(words)]
    column = PathColumn.from_strings(os.fsdecode(w) for w in words)
    for width in (1, 4, 32):
        order = argsort_bytes(column.blob, column.offsets, width=width)
        assert [words[i] for i in order] == sorted(words)
        ties = [i for i in order if words[i] == words[order[0]]]
        assert ties == sorted(ties)  # stable


def test_match_paths_finds_the_old_row_of_each_path():
    old = PathColumn.from_strings(["a.png", "b/c.png", "d.png", "e.png"])
    new = PathColumn.from_strings(["b/c.png", "x.png", "e.png", "a.png"])
    assert match_paths(new, old).tolist() == [1, -1, 3, 0]
    assert match_paths(new, PathColumn.from_strings([])).tolist() == [-1] * 4


# ------------------------------------------------------------------------------------------ the scan
def test_the_streaming_scan_finds_walk_images_files_in_sorted_order(tmp_path):
    root = tmp_path / "photos"
    names = ["a.png", "a-b/x.png", "a/y.png", "a/z/w.jpg", "a.b/q.png", "b.PNG", "ünï/ç.png", ".hidden/h.png",
             ".h.png", "notes.txt", "deep/er/est/e.webp", "deep/er.png"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    outside = tmp_path / "elsewhere"
    (outside / "in").mkdir(parents=True)
    (outside / "in" / "o.png").write_bytes(b"x")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "linked-again").symlink_to(outside, target_is_directory=True)  # the same real folder: once
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # a cycle ends
    (root / "broken.png").symlink_to(tmp_path / "nothing.png")

    want = sorted(p.relative_to(root).as_posix() for p in walk_images(root))
    got = list(image_paths(root))
    assert got == want
    # os.walk reaches "linked" before "linked-again" (names sorted), though "linked-again/..." sorts first
    assert "linked/in/o.png" in got and "linked-again/in/o.png" not in got
    scanned, bad = scan_images(root)
    assert scanned.paths.tolist() == [p for p in want if p != "broken.png"]
    assert [Path(b.file).name for b in bad] == ["broken.png"] and "cannot read file" in bad[0].reason
    assert scanned.size.dtype == np.int64 and scanned.size.tolist() == [1] * len(scanned)


def test_a_flat_folder_of_many_files_is_listed_in_order(tmp_path):
    rng = np.random.default_rng(1)
    names = {f"{'IMG_' * int(rng.integers(0, 12))}{int(rng.integers(0, 10**6))}.jpg" for _ in range(2000)}
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert list(image_paths(tmp_path)) == sorted(names)


# ------------------------------------------------------------------------------------------ the faiss file
@pytest.mark.parametrize("n", [0, 1, 70_000])
def test_the_streamed_flat_index_file_is_what_faiss_writes(tmp_path, n):
    x = np.random.default_rng(n).standard_normal((n, 24)).astype(np.float32)
    write_faiss(StreamedFlatIndex(x, 24), tmp_path / "streamed.faiss")
    _faiss().write_index(coarse_index(x, 24), str(tmp_path / "faiss.faiss"))
    assert (tmp_path / "streamed.faiss").read_bytes() == (tmp_path / "faiss.faiss").read_bytes()
    if n:
        index = _faiss().read_index(str(tmp_path / "streamed.faiss"))
        assert index.ntotal == n and index.search(x[:1], 1)[1][0, 0] == 0


# ------------------------------------------------------------------------------------------ builds
def _old_format(index: Path) -> None:
    """Rewrite the live version of ``index`` as format 2 wrote it (string columns in files.npz)."""
    data = read_index(index)
    files = data.files
    np.savez(data.folder / "files.npz", path=np.asarray(files.path), size=files.size, mtime_ns=files.mtime_ns,
             sha1=np.asarray(files.sha1))
    meta = json.loads((data.folder / "meta.json").read_text())
    (data.folder / "meta.json").write_text(json.dumps({**meta, "version": "2"}))


def test_a_format_2_index_is_read_searched_and_updated(tmp_path):
    folder = _folder(tmp_path / "photos", 30, per_folder=10, distinct=True)
    cfg = IndexConfig(glasses="none", batch_size=8)
    build_index(folder, tmp_path / "idx", cfg, backbone=FakeBackbone(), progress=False)
    new = read_index(tmp_path / "idx")
    assert new.envelope.version == FORMAT_VERSION == "3"
    assert read_index(tmp_path / "idx", coarse=None).coarse is None  # an update does not load a flat index
    _old_format(tmp_path / "idx")
    old = read_index(tmp_path / "idx")
    assert old.envelope.version == "2" and old.files.path.tolist() == new.files.path.tolist()
    assert old.files.sha1.tolist() == new.files.sha1.tolist() and len(old.rows_with_sha1(new.files.sha1[4])) == 1
    q = np.asarray(new.vectors[7])
    assert old.search(q, 1)[0].tolist() == [7]

    shutil.copy(folder / "0000" / "000003.png", folder / "0001" / "copy.png")  # a known content, a new path
    (folder / "0002" / "000025.png").unlink()
    report = build_index(folder, tmp_path / "idx", cfg, backbone=FakeBackbone(), progress=False)
    assert (report.total, report.encoded, report.reused, report.removed) == (30, 0, 30, 1)
    after = read_index(tmp_path / "idx")
    assert after.envelope.version == "3"
    row = after.files.path.tolist().index("0001/copy.png")
    np.testing.assert_array_equal(after.vectors[row], new.vectors[3])
    assert Searcher(tmp_path / "idx", backbone=FakeBackbone()).data.files.sha1[row] == new.files.sha1[3]


def _python_peak(folder: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        build_index(folder, out, IndexConfig(glasses="none", batch_size=256), backbone=FakeBackbone(),
                    progress=False, threads=1)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_build_keeps_no_python_object_per_image(tmp_path, monkeypatch):
    """The Python-allocated peak (numpy arrays included) grows by about 90 bytes per image, not the ~1 KB that
    Path objects, row tuples, lists and hex strings cost (measured: 1,034 bytes per image before): the
    per-image bookkeeping is flat arrays. Chunks are made small so that they are the same at both sizes."""
    monkeypatch.setattr(shards, "CHUNK", 256)
    monkeypatch.setattr(store, "WRITE_CHUNK", 256)
    _python_peak(_folder(tmp_path / "warm", 20), tmp_path / "i0")  # one-time allocations (caches, imports)
    small = _python_peak(_folder(tmp_path / "small", 1000), tmp_path / "i1")
    large = _python_peak(_folder(tmp_path / "large", 5000), tmp_path / "i2")
    per_image = (large - small) / 4000
    assert per_image < 250, f"{per_image:.0f} bytes of Python memory per image"
