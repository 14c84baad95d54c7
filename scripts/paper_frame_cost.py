"""Cost of the paper Frame's per-pair lambda (retrieval without the ground-truth image) against the reference's
one-lambda-per-row forward and the plain CLIP product; random weights, one thread.

    python scripts/paper_frame_cost.py [--dim 128] [--captions 100] [--images 1000]
"""

import argparse
import time

import torch

from sayno.glasses.paper import PaperFrame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--captions", type=int, default=100)
    ap.add_argument("--images", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d, n, m = a.dim, a.captions, a.images
    fixed = PaperFrame(d, 4 * d).eval()
    quirky = PaperFrame(d, 4 * d, reference_quirks=True).eval()
    images, h, h_neg = torch.randn(m, d), torch.randn(n, d), torch.randn(n, d)
    with torch.no_grad():
        t = time.perf_counter()
        fixed(images, h, h_neg)
        t_pair = time.perf_counter() - t
        t = time.perf_counter()
        quirky(images[:n], h, h_neg)
        t_row = time.perf_counter() - t
        t = time.perf_counter()
        _ = 100 * (h @ images.T)
        t_plain = time.perf_counter() - t
    print(f"D={d} N={n} M={m}: per-pair lambda {t_pair:.2f} s ({1e6 * t_pair / (n * m):.1f} us/pair); "
          f"reference row-lambda forward (N images) {t_row * 1e3:.1f} ms; plain product {t_plain * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
