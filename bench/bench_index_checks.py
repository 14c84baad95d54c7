"""What the read-time checks of an index version cost (issue 29, sayno/search/store.py), on CPU.

    .venv/bin/python bench/bench_index_checks.py

Builds a training-free index of 6 small images in a temporary folder (its meta.json holds the richest
metadata a build writes: a calibration with a ``mu`` of 128 floats), then times, best of 20, parsing that
meta.json with :func:`sayno.search.store.parse_envelope` (depth scan before parsing, ``json.loads``,
``check_meta``, the envelope) against ``json.loads`` alone, with 0 and 10,000 unreadable files listed in it;
and, best of 5, the file-table path check (:func:`sayno.search.store._check_paths`) over 1,000,000 paths.
A server pays these once per new version, not per query.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from sayno.backbones import load
from sayno.search import IndexConfig, build_index
from sayno.search.store import _check_paths, current_version, parse_envelope
from sayno.search.table import FileTable, PathColumn, Sha1Column


def best_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(photos / f"{i}.png")
        index = Path(tmp) / "idx"
        build_index(photos, index, IndexConfig(glasses="training-free"), backbone=load("embedded"), progress=False)
        meta = json.loads((index / current_version(index) / "meta.json").read_text())
    meta["glasses"]["calibration"]["mu"] = [0.01] * 128  # as a calibration of >= 16 images stores it
    for bad in (0, 10_000):
        meta["bad"] = [{"path": f"dir/file{i}.png", "reason": "cannot identify image file"} for i in range(bad)]
        text = json.dumps(meta, indent=1).encode()
        print(f"meta.json of {len(text) / 1e3:,.0f} kB ({bad:,} unreadable files listed): json.loads "
              f"{best_ms(lambda t=text: json.loads(t), 20):.2f} ms, parse_envelope (checked) "
              f"{best_ms(lambda t=text: parse_envelope(t, 'x'), 20):.2f} ms")
    paths = PathColumn.from_strings(f"album{i // 1000:04d}/IMG_{i:07d}.jpg" for i in range(1_000_000))
    n = len(paths)
    table = FileTable(paths, np.zeros(n), np.zeros(n), Sha1Column(np.zeros((n, 20), np.uint8)))
    print(f"file-table path check, 1,000,000 paths: {best_ms(lambda: _check_paths(table), 5):.1f} ms")


if __name__ == "__main__":
    main()
