"""CLIPN's "no"-prompt draws: per step (sayno's) and per caption among the prompts and their mean (the reference)."""

from __future__ import annotations

import pytest
import torch

from sayno.clipn.checkpoint import read_clipn
from sayno.clipn.model import ClipnError, NoTextEncoder
from sayno.clipn.testing import synthetic_pairs, tiny_backbone
from sayno.clipn.train import TrainConfig, local_prompt, step_prompt, train_clipn
from sayno.errors import InputError


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone(seed=0)


def test_per_caption_draw_covers_the_prompts_and_their_mean_and_is_seeded():
    cfg = TrainConfig(prompt_draw="caption", seed=3)
    draws = [step_prompt(s, cfg, 16, batch=64) for s in range(20)]
    assert all(d.shape == (64,) and d.dtype == torch.long for d in draws)
    seen = torch.cat(draws)
    assert int(seen.min()) == 0 and int(seen.max()) == 16 and len(torch.unique(seen)) == 17  # 16 prompts + mean
    assert torch.equal(step_prompt(7, cfg, 16, batch=64), draws[7])  # a function of (seed, step)
    assert not torch.equal(step_prompt(7, TrainConfig(prompt_draw="caption", seed=4), 16, batch=64), draws[7])
    assert step_prompt(0, cfg, 0, batch=64) is None  # the hand-crafted variant has no prompts
    assert isinstance(step_prompt(0, TrainConfig(prompt_draw="batch"), 16, batch=64), int)  # per step: one index
    assert TrainConfig().prompt_draw == "caption"  # the default since issue 26
    parts = [local_prompt(draws[0], r, 16, torch.device("cpu")) for r in range(4)]
    assert torch.equal(torch.cat(parts), draws[0])  # each process takes its slice of the global draw
    with pytest.raises(InputError, match="prompt draw"):
        TrainConfig(prompt_draw="epoch")


def test_index_n_is_the_prompts_mean_and_rows_follow_their_own_prompt(bb):
    enc = NoTextEncoder.from_backbone(bb, n_prompts=4)
    with torch.no_grad():
        enc.prompts.normal_(0, 0.5)
    tokens = bb.tokenize(["a dog", "a cat", "a car"])
    with torch.no_grad():
        mixed = enc(tokens, torch.tensor([4, 1, 4]))
        torch.testing.assert_close(mixed[[0, 2]], enc(tokens, "mean")[[0, 2]])
        torch.testing.assert_close(mixed[1], enc(tokens, 1)[1])
    with pytest.raises(ClipnError, match=r"in \[0, 4\]"):
        enc(tokens, torch.tensor([0, 5, 1]))


def test_training_with_per_caption_draws_trains_every_prompt(bb, tmp_path):
    data = synthetic_pairs(bb, n=32)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=3e-3, warmup=0.1, n_prompts=4, prompt_draw="caption")
    s = train_clipn(bb, data, tmp_path / "c.safetensors", cfg, progress=False)
    assert s["steps"] == 6
    tensors, meta = read_clipn(tmp_path / "c.safetensors")
    assert all(float(p.abs().sum()) > 0 for p in tensors["prompts"])  # each of the 4 was drawn (or via the mean)
    assert "caption" in str(meta)
