"""Query latency of `sayno search` over a 1,000,000-image index, CLIPGlasses scoring included, on CPU.

    .venv/bin/python bench/bench_search.py --n 1000000 --queries 40
    .venv/bin/python bench/bench_search.py --scale --sizes 1000000,10000000 --dims 128   # bench/search_scale.py

Writes an index of N synthetic image vectors (seeded Gaussian, L2-normalised, the backbone's size) through the
real on-disk format, opens it with :class:`sayno.search.Searcher` (the embedded CLIP and the shipped Glasses,
loaded from the index's metadata like `sayno search` does), and times `Searcher.search` end to end: text
encoding, negation detection, Lens and Frame, the faiss search and the exact re-scoring of the top k. Every
timed query is distinct (no query-feature cache hits): negated ones ("no dog", "a cat but no dog") and
affirmative ones, with world concept names. Prints median / p95 / max in ms per kind and the ratio of the
median to the 100 ms target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import search_scale  # bench/search_scale.py (this folder is on sys.path when the script runs)
import torch

from sayno.backbones import load
from sayno.base.shipped import shipped_weights
from sayno.checkpoint import Envelope
from sayno.runtime import torch_threads
from sayno.search import Searcher
from sayno.search.build import glasses_identity
from sayno.search.store import FORMAT, FORMAT_VERSION, FileTable, write_version, writer_lock
from sayno.world.concepts import pretrain_concepts

TARGET_MS = 100.0


def synthetic_index(out: Path, n: int, dim: int, backbone, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        vectors[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    files = FileTable(np.array([f"img/{i:07d}.jpg" for i in range(n)]), np.zeros(n, np.int64),
                      np.zeros(n, np.int64), np.full(n, "0" * 40, dtype="<U40"))
    glasses = glasses_identity(shipped_weights("glasses", backbone.spec), backbone)
    envelope = Envelope(FORMAT, FORMAT_VERSION, backbone.fingerprint, backbone.spec, {},
                        {"logit_scale": float(backbone.logit_scale), "root": str(out / "images"), "glasses": glasses,
                         "synthetic": {"n": n, "seed": seed}})
    with writer_lock(out):  # creates the folder; write_version expects the lock held
        write_version(out, vectors, files, envelope)


def queries(count: int, seed: int) -> dict[str, list[str]]:
    names = [c.name for c in pretrain_concepts()]
    rng = np.random.default_rng(seed)
    neg, plain = [], []
    for i in range(count):
        a, b = rng.choice(names, 2, replace=False)
        neg.append(f"no {a}" if i % 2 == 0 else f"a {a} but no {b}")
        plain.append(f"a {a}" if i % 2 == 0 else f"a {a} and a {b}")
    return {"negated (CLIPGlasses)": neg, "affirmative (plain CLIP)": plain,
            "negated + rerank 20": [q.replace("no ", "without a ", 1) for q in neg]}


def main() -> None:
    if "--scale" in sys.argv:  # flat vs IVF vs Milvus Lite at millions of vectors: bench/search_scale.py
        search_scale.main()
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=40, help="timed queries per kind")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the index (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=0,
                    help="N torch and faiss threads, as `sayno search/serve --threads N` (default 1) use; "
                         "0: leave the libraries' defaults (the Python API's default)")
    args = ap.parse_args()
    with torch_threads(args.threads or None):  # faiss is imported: its threads are set too
        run(args)


def run(args: argparse.Namespace) -> None:
    backbone = load("embedded")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        out = Path(tmp) / "index"
        t = time.perf_counter()
        synthetic_index(out, args.n, backbone.embed_dim, backbone, args.seed)
        print(f"wrote {args.n:,} synthetic vectors (D={backbone.embed_dim}) in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        searcher = Searcher(out, threads=args.threads or None)  # loads the backbone and Glasses named in the index, as `sayno search` does
        print(f"opened the index in {time.perf_counter() - t:.1f} s; {len(searcher.data):,} images; "
              f"{os.cpu_count()} cpus; --threads {args.threads or 'default'} (torch {torch.get_num_threads()})")
        for q in ("warm up no cat", "warm up a cat"):  # first calls build lazy state (tokenizer, kernels)
            searcher.search(q, args.k)
        print(f"\n| queries | n | median ms | p95 ms | max ms | median / {TARGET_MS:.0f} ms |")
        print("|---|---|---|---|---|---|")
        for kind, qs in queries(args.queries, args.seed).items():
            rerank = 20 if "rerank" in kind else 0
            times = []
            for q in qs:
                t = time.perf_counter()
                res = searcher.search(q, args.k, rerank=rerank)
                times.append((time.perf_counter() - t) * 1000)
                want = "glasses" if "negated" in kind else "clip"
                assert res.method == want and len(res.hits) == args.k, (q, res.method)
            times.sort()
            med = statistics.median(times)
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(f"| {kind} | {len(times)} | {med:.1f} | {p95:.1f} | {times[-1]:.1f} | {med / TARGET_MS:.2f} |")
        # the index alone (fp16 coarse pass + exact re-scoring) and its agreement with exact brute force
        data = searcher.data
        rng = np.random.default_rng(args.seed + 1)
        probes = rng.standard_normal((args.queries, data.dim)).astype(np.float32)
        times, same = [], 0
        for q in probes:
            t = time.perf_counter()
            data.search(q, args.k)
            times.append((time.perf_counter() - t) * 1000)
        for q in probes[:10]:
            exact = np.argsort(-(data.vectors @ q))[:args.k]
            same += len(set(exact.tolist()) & set(data.search(q, args.k)[0].tolist()))
        times.sort()
        print(f"| index search alone (fp16 coarse + exact top {args.k}) | {len(times)} | "
              f"{statistics.median(times):.1f} | {times[round(0.95 * (len(times) - 1))]:.1f} | {times[-1]:.1f} | "
              f"{statistics.median(times) / TARGET_MS:.2f} |")
        # for comparison: faiss's exact float32 flat index over the same vectors (what the fp16 pass replaces)
        flat = faiss.IndexFlatIP(data.dim)
        flat.add(np.ascontiguousarray(data.vectors))
        flat_times = []
        for q in probes:
            t = time.perf_counter()
            flat.search(q[None], args.k)
            flat_times.append((time.perf_counter() - t) * 1000)
        flat_times.sort()
        print(f"| faiss IndexFlatIP float32 search alone (comparison) | {len(flat_times)} | "
              f"{statistics.median(flat_times):.1f} | {flat_times[round(0.95 * (len(flat_times) - 1))]:.1f} | "
              f"{flat_times[-1]:.1f} | {statistics.median(flat_times) / TARGET_MS:.2f} |")
        checked = len(probes[:10])
        print(f"\ntop-{args.k} overlap with exact brute force over {checked} random queries: "
              f"{same / (checked * args.k):.3f}")


if __name__ == "__main__":
    main()
