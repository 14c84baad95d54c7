"""Process-wide settings, changed only for a while and always restored.

:func:`torch_threads` is how library code asks for a number of torch (and faiss/OpenMP) threads: it sets them on
entry and puts the previous values back on exit, so calling sayno never changes a user's process for good.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sayno.errors import InputError


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (and faiss's OpenMP threads when faiss is loaded);
    ``None`` or 0 leaves the current setting. Restores the previous values on exit."""
    if n is None or n == 0:
        yield
        return
    if not isinstance(n, int) or n < 0:
        raise InputError(f"threads must be a positive integer, got {n!r}")
    import sys

    import torch

    before = torch.get_num_threads()
    faiss = sys.modules.get("faiss")
    faiss_before = faiss.omp_get_max_threads() if faiss is not None else None
    torch.set_num_threads(n)
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if faiss is not None and faiss_before is not None:
            faiss.omp_set_num_threads(faiss_before)
