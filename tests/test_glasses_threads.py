"""Glasses.score_matrix runs its (small) torch ops on one thread, and scoring and training restore the caller's
thread count."""

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from sayno.base.scoring import TextBatch
from sayno.glasses.model import Glasses, GlassesConfig
from sayno.glasses.testing import SyntheticClip, write_synthetic_world
from sayno.glasses.train import TrainConfig, train_glasses


class _Threads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append((getattr(func, "__name__", str(func)), torch.get_num_threads()))
        return func(*args, **(kwargs or {}))


_NO_COMPUTE = {"numpy", "__get__", "__len__", "size", "dim"}  # views and conversions: no parallel region


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("score", ["tau", "reference"])
def test_score_matrix_torch_ops_run_single_threaded(score):
    """Regression: the delta/const index_add_ after the Lens ran with the caller's torch threads; their OpenMP
    workers then spun while numpy's BLAS computed the (N, M) product, which made caption-only scoring 3-6x
    slower than plain CLIP on a busy 2-core machine (bench/bench_glasses_scoring.py) instead of ~1.5x."""
    rng = np.random.default_rng(0)
    d = 16
    texts = ["a cat but no dog", "a cat", "no cow and no pig", "there is no dog here"] * 50
    g = Glasses(GlassesConfig(embed_dim=d, num_layers=4, hidden=32, score=score), logit_scale=10.0,
                phrase_encoder=lambda xs: _unit(rng.normal(size=(len(xs), d))))
    layers = _unit(rng.normal(size=(len(texts), 4, d)))
    text = TextBatch(texts, np.ascontiguousarray(layers[:, -1]), layers)
    images = _unit(rng.normal(size=(300, d)))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = g.score_matrix(text, images)
        mode = _Threads()
        with mode:
            out = g.score_matrix(text, images)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(out, expected)
    assert mode.seen, "no torch op recorded"
    multi = [name for name, n in mode.seen if n != 1 and name not in _NO_COMPUTE]
    assert not multi, f"torch ops on more than one thread: {sorted(set(multi))[:10]}"


def test_training_restores_the_callers_thread_count(tmp_path):
    """Regression: train_glasses called torch.set_num_threads(threads) and never put the old value back."""
    names = ["cat", "dog", "cow", "horse", "apple", "pear"]
    write_synthetic_world(tmp_path, names, 6)
    clip = SyntheticClip(names)
    config = GlassesConfig(embed_dim=clip.embed_dim, num_layers=clip.num_text_layers, hidden=16, detector_hidden=8)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_glasses(clip, tmp_path, tmp_path / "g.safetensors", config=config,
                      train=TrainConfig(epochs=(1, 1, 0, 0), min_steps=0, threads=1), log=lambda s: None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
