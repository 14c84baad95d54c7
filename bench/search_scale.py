"""Search at collection scale: flat vs IVF (and Milvus Lite) over millions of synthetic vectors, on CPU.

    .venv/bin/python bench/bench_search.py --scale --sizes 1000000,10000000 --dims 128 --kinds flat,ivf
    .venv/bin/python bench/bench_search.py --scale --sizes 4000000 --dims 512 --kinds ivf
    .venv/bin/python bench/bench_search.py --scale --sizes 100000 --dims 128 --kinds flat --milvus

Each (N, D, kind) runs in its own process (so its peak RSS is its own): N synthetic L2-normalised vectors are
streamed to a ``.npy`` file in chunks and made one index version through the real writer
(:func:`sayno.search.store.write_version` with :func:`sayno.search.ann.build_coarse`, the code
``sayno index build --index KIND`` runs), then opened with :func:`sayno.search.store.read_index` and queried
with :meth:`IndexData.search` (the coarse pass + exact re-scoring that every ``Searcher`` query ends in) on one
thread; at D=128 also ``Searcher.search`` end to end with the embedded CLIP and the shipped Glasses on real
text queries ("search" columns). Printed per row: build seconds (coarse index + writing), peak RSS of the process (``ru_maxrss``: the
memory-mapped vectors it touched count), index size on disk (``search.faiss``; ``vectors.npy`` is 4*N*D
bytes more), query p50/p95 in ms for negated and affirmative query vectors, and recall@20 against exact brute
force over the float32 vectors.

Synthetic data: a mixture of ``N/100`` (at most 100,000) Gaussian clusters around random unit centres, each
vector ``normalise(c + 0.5 g / sqrt(D))`` (cosine to its centre about 0.9, like near-duplicate photos of one
scene). Affirmative query vectors: a centre plus the same noise; negated ones: ``q = b - lambda*h`` with ``b``
an affirmative vector, ``h`` another centre and ``lambda`` in [0.5, 1] (the form of the Glasses query vector,
``Glasses.query_vectors``). Queries unlike every image (random directions) are the worst case for IVF and are
reported as a third kind. With ``--milvus`` the vectors are also inserted into a Milvus Lite file (FLAT index)
and searched there; the row reports its insert time and the top-20 overlap with faiss's answer.
``--flat-ratio`` (flat rows) times the previous flat path (``store.coarse_index``) against the new one
(``ann.build_coarse``) on the same vectors, alternating queries, and prints old/new.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sayno.backbones import load
from sayno.base.shipped import shipped_weights
from sayno.checkpoint import Envelope
from sayno.runtime import torch_threads
from sayno.search import Searcher, ann
from sayno.search.build import glasses_identity
from sayno.search.store import (
    FORMAT,
    FORMAT_VERSION,
    FileTable,
    coarse_index,
    current_version,
    read_index,
    write_version,
)
from sayno.world.concepts import pretrain_concepts

CHUNK = 200_000
K = 20
E2E_DIM = 128  # the embedded CLIP's size: rows of this D also time Searcher.search end to end


def centres(n: int, dim: int, seed: int) -> np.ndarray:
    count = int(min(100_000, max(100, n // 100)))
    c = np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def write_vectors(path: Path, n: int, dim: int, seed: int, spread: float = 0.5) -> None:
    """N clustered unit vectors into a float32 .npy file, CHUNK rows at a time."""
    c = centres(n, dim, seed)
    rng = np.random.default_rng(seed + 1)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        x = c[rng.integers(0, len(c), m)] + spread * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out


def query_vectors(n: int, dim: int, seed: int, count: int, spread: float = 0.5) -> dict[str, np.ndarray]:
    c = centres(n, dim, seed)
    rng = np.random.default_rng(seed + 2)
    affirm = c[rng.integers(0, len(c), count)] + spread * rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
    lam = rng.uniform(0.5, 1.0, (count, 1)).astype(np.float32)
    negated = affirm - lam * c[rng.integers(0, len(c), count)]
    return {"negated": negated, "affirmative": affirm, "random": rng.standard_normal((count, dim), dtype=np.float32)}


def exact_top(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q, K) exact top-K row ids by inner product, scanning the vectors in chunks."""
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.zeros((len(queries), K), np.int64)
    for start in range(0, len(vectors), CHUNK):
        s = np.asarray(vectors[start:start + CHUNK]) @ queries.T  # (m, Q)
        s_all = np.concatenate([best_s, s.T], axis=1)
        i_all = np.concatenate([best_i, np.arange(start, start + len(s))[None, :].repeat(len(queries), 0)], axis=1)
        top = np.argpartition(-s_all, K - 1, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
    return best_i


def pct(times: list[float], p: float) -> float:
    times = sorted(times)
    return times[min(len(times) - 1, round(p * (len(times) - 1)))]


def time_queries(search, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        ids = search(q)
        times.append((time.perf_counter() - t) * 1000)
        found.append(ids)
    return times, found


def one(n: int, dim: int, kind: str, seed: int, count: int, use_milvus: bool, flat_ratio: bool,
        workdir: Path | None) -> dict:
    """Build and query one (N, D, kind) index; returns the row."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp) / "index"
        root.mkdir()
        vec_path = root / "incoming.npy"
        t = time.perf_counter()
        write_vectors(vec_path, n, dim, seed)
        gen_s = time.perf_counter() - t
        files = FileTable(np.char.add("img/", np.arange(n).astype("<U9")), np.zeros(n, np.int64),
                          np.zeros(n, np.int64), np.full(n, "0" * 40, dtype="<U40"))
        envelope = Envelope(FORMAT, FORMAT_VERSION, "synthetic", "synthetic", {}, {"root": str(Path(tmp) / "images")})
        why = []

        def coarse(v):
            index, info, reason = ann.build_coarse(v, kind, seed=seed)
            why.append(reason)
            return index, {"index": info}

        t = time.perf_counter()
        with torch_threads(os.cpu_count() or 1):
            version = write_version(root, vec_path, files, envelope, coarse=coarse)
        build_s = time.perf_counter() - t
        rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data = read_index(root)
        info = ann.index_info(data)
        qs = query_vectors(n, dim, seed, count)
        truth = {name: exact_top(data.vectors, q) for name, q in qs.items()}
        row = {"n": n, "dim": dim, "kind": info["kind"], "factory": info.get("factory"), "nprobe": info.get("nprobe"),
               "reason": why[0] if why else "", "generate_s": round(gen_s, 1), "build_s": round(build_s, 1),
               "peak_rss_build_mb": round(rss_build), "index_mb": round((root / version / "search.faiss").stat().st_size / 2**20),
               "vectors_mb": round((root / version / "vectors.npy").stat().st_size / 2**20)}
        with torch_threads(1):
            data.search(qs["affirmative"][0], K)  # warm up
            answers = {}
            for name, q in qs.items():
                times, found = time_queries(lambda v: data.search(v, K)[0], q)
                answers[name] = found
                row[f"{name}_p50_ms"] = round(statistics.median(times), 2)
                row[f"{name}_p95_ms"] = round(pct(times, 0.95), 2)
                row[f"{name}_recall20"] = round(float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K
                                                               for f, t in zip(found, truth[name])])), 3)
            if flat_ratio and info["kind"] == "flat":
                row.update(flat_old_vs_new(data, qs["negated"]))
            if use_milvus:
                row.update(milvus_row(data, qs, truth, answers, Path(tmp)))
        row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if dim == E2E_DIM and not use_milvus:
            del data
            row.update(end_to_end(root, count=40, seed=seed))
        return row


def end_to_end(root: Path, count: int, seed: int) -> dict:
    """``Searcher.search`` on the index with the embedded CLIP and the shipped Glasses (what ``sayno search``
    runs: text encoding, negation detection, the Glasses query vector, the index, the exact re-scoring), one
    thread, distinct queries built from world concept names; p50/p95 ms per kind. The index's envelope is
    rewritten to name the embedded backbone and the shipped Glasses (the vectors stay synthetic)."""
    backbone = load("embedded")
    version = current_version(root)
    meta = json.loads((root / version / "meta.json").read_text())
    meta.update(backbone_spec=backbone.spec, backbone_fingerprint=backbone.fingerprint)
    meta["glasses"] = glasses_identity(shipped_weights("glasses", backbone.spec), backbone)
    meta["logit_scale"] = float(backbone.logit_scale)
    (root / version / "meta.json").write_text(json.dumps(meta))
    searcher = Searcher(root, backbone=backbone, threads=1)
    names = [c.name for c in pretrain_concepts()]
    rng = np.random.default_rng(seed)
    out = {}
    for q in ("warm up no cat", "warm up a cat"):
        searcher.search(q, K)
    for kind in ("negated", "affirmative"):
        times = []
        for i in range(count):
            a, b = rng.choice(names, 2, replace=False)
            if kind == "negated":
                q = f"no {a} {i}" if i % 2 == 0 else f"a {a} but no {b} {i}"
            else:
                q = f"a {a} {i}" if i % 2 == 0 else f"a {a} and a {b} {i}"
            t = time.perf_counter()
            res = searcher.search(q, K)
            times.append((time.perf_counter() - t) * 1000)
            assert res.method == ("glasses" if kind == "negated" else "clip"), (q, res.method)
        out[f"e2e_{kind}_p50_ms"] = round(statistics.median(times), 2)
        out[f"e2e_{kind}_p95_ms"] = round(pct(times, 0.95), 2)
    return out


def flat_old_vs_new(data, queries: np.ndarray) -> dict:
    """The previous flat path (store.coarse_index) against ann's flat on the same vectors, alternating."""
    old = coarse_index(data.vectors, data.dim)
    new = data.coarse
    t_old, t_new = [], []
    for q in queries:
        for coarse, times in ((old, t_old), (new, t_new)):
            data.coarse = coarse
            t = time.perf_counter()
            data.search(q, K)
            times.append((time.perf_counter() - t) * 1000)
    data.coarse = new
    return {"flat_old_p50_ms": round(statistics.median(t_old), 2), "flat_new_p50_ms": round(statistics.median(t_new), 2),
            "flat_old_over_new": round(statistics.median(t_old) / statistics.median(t_new), 3)}


def milvus_row(data, qs: dict, truth: dict, faiss_answers: dict, tmp: Path) -> dict:
    from sayno.search import milvus

    store = milvus.MilvusStore(str(tmp / "bench.db"), timeout=60)
    t = time.perf_counter()
    store.upload("sayno_bench", data.vectors)
    row = {"milvus_insert_s": round(time.perf_counter() - t, 1)}
    data.coarse = milvus.MilvusCoarse(store, "sayno_bench", len(data), data.dim)
    data.search(qs["affirmative"][0], K)
    for name in ("negated", "affirmative"):
        times, found = time_queries(lambda v: data.search(v, K)[0], qs[name])
        row[f"milvus_{name}_p50_ms"] = round(statistics.median(times), 2)
        row[f"milvus_{name}_p95_ms"] = round(pct(times, 0.95), 2)
        row[f"milvus_{name}_recall20"] = round(float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K
                                                              for f, t in zip(found, truth[name])])), 3)
        row[f"milvus_vs_faiss_{name}_overlap20"] = round(float(np.mean(
            [len(set(f.tolist()) & set(g.tolist())) / K for f, g in zip(found, faiss_answers[name])])), 3)
    row["peak_rss_milvus_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    store.close()
    return row


COLUMNS = [("n", "N"), ("dim", "D"), ("kind", "index"), ("factory", "faiss"), ("nprobe", "nprobe"),
           ("build_s", "build s"), ("peak_rss_mb", "peak RSS MB"), ("index_mb", "index MB"),
           ("negated_p50_ms", "neg p50"), ("negated_p95_ms", "neg p95"), ("negated_recall20", "neg R@20"),
           ("affirmative_p50_ms", "aff p50"), ("affirmative_p95_ms", "aff p95"), ("affirmative_recall20", "aff R@20"),
           ("random_recall20", "random-direction R@20"),
           ("e2e_negated_p50_ms", "search neg p50"), ("e2e_negated_p95_ms", "search neg p95"),
           ("e2e_affirmative_p50_ms", "search aff p50")]


def run(args: argparse.Namespace) -> None:
    """Each configuration in its own process; a markdown table at the end (and one JSON line per row)."""
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for dim in [int(s) for s in args.dims.split(",")]:
            for kind in args.kinds.split(","):
                cmd = [sys.executable, __file__, "--one", str(n), str(dim), kind, "--seed", str(args.seed),
                       "--queries", str(args.queries)] + (["--milvus"] if args.milvus else []) + \
                      (["--flat-ratio"] if args.flat_ratio else []) + (["--dir", str(args.dir)] if args.dir else [])
                print("$", " ".join(cmd[1:]), flush=True)
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    print(out.stdout[-2000:], out.stderr[-4000:], flush=True)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n| " + " | ".join(h for _, h in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k, _ in COLUMNS) + " |")
    extra = [r for r in rows if "milvus_insert_s" in r or "flat_old_over_new" in r]
    for r in extra:
        print(f"\nN={r['n']:,} D={r['dim']} {r['kind']}: " + ", ".join(
            f"{k}={v}" for k, v in r.items() if k.startswith(("milvus", "flat_old", "flat_new", "peak_rss_milvus"))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, metavar=("N", "D", "KIND"))
    ap.add_argument("--sizes", default="1000000")
    ap.add_argument("--dims", default="128")
    ap.add_argument("--kinds", default="flat,ivf")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--milvus", action="store_true")
    ap.add_argument("--flat-ratio", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args, _ = ap.parse_known_args()
    if args.one:
        n, dim, kind = args.one
        print(json.dumps(one(int(n), int(dim), kind, args.seed, args.queries, args.milvus, args.flat_ratio, args.dir)))
    else:
        run(args)


if __name__ == "__main__":
    main()
