"""sayno.base.training: the early stopping and resume state shared by the training loops."""

import numpy as np
import pytest
import torch

from sayno.base.training import EarlyStopping, OtherRunState, ResumeFile, restore_rng, run_key


def test_shared_training_helpers(tmp_path):
    """sayno.base.training: early stopping counts after min_steps; resume state is atomic and keeps RNGs."""
    module = torch.nn.Linear(2, 1)
    stop = EarlyStopping(patience=1, min_steps=10, min_delta=1e-5)
    assert stop.update(1.0, module) and not stop.update(1.0 - 1e-6, module)  # not better by min_delta
    assert not stop.should_stop(9) and stop.should_stop(10)
    with torch.no_grad():
        module.weight.zero_()
    assert stop.restore_best(module) and not torch.equal(module.weight, torch.zeros(1, 2))

    resume = ResumeFile(tmp_path / "run.partial", run_key({"lr": 1}, ["a.csv"]))
    assert resume.load() is None
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    resume.save({"epoch": 3, "stop": stop.state_dict()}, rng=rng)
    want_np, want_torch = rng.random(), torch.rand(1)
    state = resume.load()
    assert state["epoch"] == 3 and [p.name for p in tmp_path.iterdir()] == ["run.partial"]
    restore_rng(state, rng)
    assert rng.random() == want_np and torch.equal(torch.rand(1), want_torch)
    with pytest.raises(OtherRunState):
        ResumeFile(resume.path, run_key({"lr": 2}, ["a.csv"])).load()
