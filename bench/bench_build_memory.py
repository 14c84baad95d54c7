"""Peak memory of `sayno index build` against the collection size, through the real build path.

    .venv/bin/python bench/bench_build_memory.py --sizes 100000,300000,1000000 --dir /tmp

For each N, in its own process: a folder of N small PNG files (8x8 pixels, the same bytes in every file, 1,000
per sub-folder) is indexed from scratch by :func:`sayno.search.build_index` (scan, stat, sha1 of every file,
decoding in a DataLoader, the vector spool, the streamed merge, the faiss index of ``--index auto``, the file
table, the atomic write) with a *fake encoder*: a backbone whose ``encode_image`` returns seeded random unit
vectors of D=128 at once, because encoding a million real images on this CPU would take many hours; everything
else is the code a real build runs. Prints the build time and the peak RSS (``ru_maxrss``) per N, and the ratio
of each peak to the smallest N's.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sayno.search import IndexConfig, build_index


class FakeBackbone:
    """Just enough of a backbone for build_index: preprocess, encode_image, identity."""

    spec = "fake-encoder"
    fingerprint = "fake-encoder-d128"
    logit_scale = 100.0
    context_length = 77

    def __init__(self, dim: int = 128):
        self.embed_dim = dim
        self.rng = torch.Generator().manual_seed(0)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.zeros(3, 2, 2)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        x = torch.randn(len(pixels), self.embed_dim, generator=self.rng)
        return x / x.norm(dim=1, keepdim=True)


def make_folder(folder: Path, n: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    for start in range(0, n, 1000):
        sub = folder / f"{start // 1000:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(start, min(n, start + 1000)):
            (sub / f"{i:07d}.png").write_bytes(data)


def one(n: int, workdir: Path | None, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp) / "photos"
        t = time.perf_counter()
        make_folder(folder, n)
        made = time.perf_counter() - t
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        report = build_index(folder, Path(tmp) / "index", IndexConfig(glasses="none", batch_size=batch_size),
                             backbone=FakeBackbone(), progress=False, threads=1)
        took = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        shutil.rmtree(folder, ignore_errors=True)
        return {"n": n, "files_s": round(made, 1), "build_s": round(took, 1), "rss_before_build_mb": round(base),
                "peak_rss_mb": round(peak), "indexed": report.total, "index_kind": report.index_kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--one", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.dir, args.batch_size)))
        return
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(n), "--batch-size", str(args.batch_size)]
        cmd += ["--dir", str(args.dir)] if args.dir else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], flush=True)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| images | build s | peak RSS MB | RSS before the build MB | peak / smallest |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['build_s']} | {r['peak_rss_mb']} | {r['rss_before_build_mb']} | "
              f"{r['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
