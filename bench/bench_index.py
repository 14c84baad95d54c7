"""Index build throughput vs a bare open_clip encoding loop over the same images, on CPU.

    .venv/bin/sayno world build runs/world-search --parts test --seed 0
    .venv/bin/python bench/bench_index.py --images runs/world-search/images --limit 1000 --repeat 5

*bare*: for each batch, PIL open + convert, the model's own open_clip preprocessing transform, ``stack``,
``model.encode_image`` and L2-normalisation, on the same open_clip model object the backbone wraps: nothing
else. *sayno*: ``build_index`` from scratch into a new folder (scan, stat, sha1 of every file, decoding,
encoding, the fp16 faiss index, the file table, the atomic write). Same batch size, same torch threads, decoding
in the main process for both, one torch thread by default. Runs alternate (bare, sayno, bare, ...) so that a
busy machine slows both alike; prints per run the wall-clock throughput and the throughput per CPU second of this
process (less sensitive to other jobs on the machine), the medians and the ratios sayno / bare; then the time of
a re-run that finds nothing to encode.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from sayno.backbones import load
from sayno.runtime import torch_threads
from sayno.search import IndexConfig, build_index, scan_folder


def bare_loop(model, preprocess, paths: list[Path], batch_size: int) -> int:
    n = 0
    with torch.no_grad():
        for s in range(0, len(paths), batch_size):
            pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[s:s + batch_size]])
            f = F.normalize(model.encode_image(pixels).float(), dim=-1)
            n += len(f)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=Path("runs/world-search/images"))
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="use the first N images (0: all)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (1: CPU time then measures work, not waiting on a busy machine)")
    args = ap.parse_args()
    with torch_threads(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    bb = load(args.model)
    rows, _ = scan_folder(args.images)
    rows = rows[: args.limit] if args.limit else rows
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        for r in rows:  # the same files for both, in a folder of their own
            (folder / r[0]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(args.images / r[0], folder / r[0])
        paths = [folder / r[0] for r in rows]
        print(f"{len(paths)} images from {args.images}, model {bb.spec} ({bb.fingerprint}), batch {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}")
        bare_loop(bb.model, bb.preprocess, paths[: args.batch_size], args.batch_size)  # warm up
        cfg = IndexConfig(model=args.model, batch_size=args.batch_size, num_workers=0)
        runs: dict[str, list[tuple[float, float]]] = {"bare": [], "sayno": []}
        for r in range(args.repeat):
            w, c = time.perf_counter(), time.process_time()
            n = bare_loop(bb.model, bb.preprocess, paths, args.batch_size)
            runs["bare"].append((n / (time.perf_counter() - w), n / (time.process_time() - c)))
            w, c = time.perf_counter(), time.process_time()
            rep = build_index(folder, Path(tmp) / f"run{r}", cfg, backbone=bb, progress=False)
            runs["sayno"].append((rep.total / (time.perf_counter() - w), rep.total / (time.process_time() - c)))
            assert rep.encoded == rep.total == n
            print(f"run {r}: bare {runs['bare'][-1][0]:.0f} images/s wall, {runs['bare'][-1][1]:.0f} per CPU s; "
                  f"sayno index build {runs['sayno'][-1][0]:.0f} wall, {runs['sayno'][-1][1]:.0f} per CPU s")
        t = time.perf_counter()
        rep = build_index(folder, Path(tmp) / "run0", cfg, backbone=bb, progress=False)
        again = time.perf_counter() - t
    for i, what in enumerate(("wall-clock images/s", "images per CPU second")):
        mb = statistics.median(x[i] for x in runs["bare"])
        mo = statistics.median(x[i] for x in runs["sayno"])
        print(f"median {what}: bare {mb:.1f}, sayno {mo:.1f}, ratio sayno/bare {mo / mb:.3f}")
    print(f"re-run with nothing changed: {again:.2f} s ({rep.encoded} encoded, {rep.reused} reused)")


if __name__ == "__main__":
    main()
