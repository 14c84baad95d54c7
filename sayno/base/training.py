"""What sayno's training loops share: resuming, early stopping, the learning-rate shape and one epoch of steps.

Used by ``sayno glasses train`` (per stage), ``sayno glasses finetune`` and ``sayno clipn train``:

- :func:`run_key`: a short hash of everything that decides the weights (configs, backbone fingerprint, data);
  a resume file only continues the run with the same key.
- :class:`ResumeFile`: the whole training state in one file beside the output, written atomically
  (:func:`sayno.checkpoint.atomic_path`) with the torch and numpy RNG states, so a resumed run continues
  exactly as if it had not stopped. :meth:`ResumeFile.load` refuses a file of another run with
  :class:`OtherRunState` (the caller decides: ignore it, or tell the user to start again).
- :class:`EarlyStopping`: keeps the best validation loss and a copy of the best weights; stops after
  ``patience`` evaluations without a new best, counted only once ``min_steps`` optimiser steps have run.
- :func:`cosine_schedule`: a ``LambdaLR`` factor, optional linear warm-up then cosine decay to 0.
- :func:`fit_epoch`: one pass of zero-grad / backward / clip / step / schedule over the batches.

    >>> stop = EarlyStopping(patience=5, min_steps=600)          # doctest: +SKIP
    >>> resume = ResumeFile(out.with_name(out.name + ".partial"), run_key(config, data_files))
    >>> state = resume.load()                                    # None: start fresh
    >>> for epoch in range(n_epochs):
    ...     if stop.should_stop(epoch * steps_per_epoch):
    ...         break
    ...     fit_epoch(batches(), loss_of, opt, sched, params, max_grad_norm=5.0)
    ...     stop.update(validate(), model)
    ...     resume.save({"epoch": epoch, "stop": stop.state_dict(), ...}, rng=rng)
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sayno.checkpoint import CheckpointError, atomic_path
from sayno.errors import SaynoError


class OtherRunState(SaynoError):
    """A resume file that belongs to a run with other settings (another :func:`run_key`)."""


def run_key(*parts: Any) -> str:
    """A 16-hex-digit hash of ``parts`` (JSON-able; anything else by ``str``), stable across processes."""
    blob = json.dumps(list(parts), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``module``'s state dict (the weights as they are now)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------- resuming
def restore_rng(state: Mapping[str, Any], rng: np.random.Generator | None = None) -> None:
    """Put back the torch RNG (and ``rng``'s bit generator) saved by :meth:`ResumeFile.save`."""
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
    if rng is not None and state.get("numpy_rng") is not None:
        rng.bit_generator.state = state["numpy_rng"]


class ResumeFile:
    """The resume state of one training run at ``path``, tied to the run's ``key``.

    The state is a dict of anything ``torch.save`` stores (module and optimiser state dicts, counters, history).
    :meth:`save` adds the key and the RNG states and writes atomically; :meth:`load` returns what was saved.
    """

    def __init__(self, path: str | Path, key: str):
        self.path = Path(path)
        self.key = key

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: Mapping[str, Any], rng: np.random.Generator | None = None) -> None:
        """Write ``state`` with this run's key, the torch RNG state and ``rng``'s state (atomic)."""
        full = {**state, "key": self.key, "torch_rng": torch.get_rng_state(),
                "numpy_rng": rng.bit_generator.state if rng is not None else None}
        with atomic_path(self.path) as tmp:
            torch.save(full, tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is no file. Raises :class:`OtherRunState` when the file belongs
        to another run and :class:`~sayno.checkpoint.CheckpointError` when it cannot be read. Does not restore
        the RNGs: call :func:`restore_rng` where the loop is ready to continue."""
        if not self.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)  # our own file
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise CheckpointError(f"{self.path}: unreadable resume state ({type(e).__name__}); delete it "
                                  "to start again") from e
        if not isinstance(state, dict) or state.get("key") != self.key:
            raise OtherRunState(f"{self.path}: the resume state of a run with other settings")
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- early stopping
class EarlyStopping:
    """Track the best validation loss and its weights; say when to stop.

    patience: evaluations without a new best after which to stop (None: never stop early); min_steps: optimiser
    steps that must have run before patience counts; min_delta: how much lower a loss must be to count as a
    new best; best_loss: the loss to beat at first (e.g. the validation loss before training).
    """

    def __init__(self, patience: int | None = None, min_steps: int = 0, min_delta: float = 0.0,
                 best_loss: float = float("inf")):
        self.patience, self.min_steps, self.min_delta = patience, min_steps, min_delta
        self.best_loss = float(best_loss)
        self.bad = 0  # evaluations since the last new best
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, loss: float, module: torch.nn.Module) -> bool:
        """Record one evaluation; keeps a copy of ``module``'s weights when ``loss`` is a new best (returns
        True)."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.bad = float(loss), 0
            self.best_state = snapshot(module)
            return True
        self.bad += 1
        return False

    def should_stop(self, steps_done: int) -> bool:
        """Whether to stop before the next epoch, ``steps_done`` optimiser steps into the run."""
        return self.patience is not None and self.bad >= self.patience and steps_done >= self.min_steps

    def restore_best(self, module: torch.nn.Module) -> bool:
        """Load the best weights seen into ``module`` (nothing when no evaluation improved); returns whether."""
        if self.best_state is None:
            return False
        module.load_state_dict(self.best_state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best_state, "best_loss": self.best_loss, "bad": self.bad}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_state, self.best_loss, self.bad = state["best"], float(state["best_loss"]), int(state["bad"])


# ---------------------------------------------------------------------------------------------- steps
def cosine_schedule(total: int, warmup: int = 0) -> Callable[[int], float]:
    """A ``LambdaLR`` factor for step s: cosine decay from 1 to 0 over ``total`` steps, times a linear warm-up
    ``min(1, (s + 1) / warmup)`` when ``warmup`` > 0."""

    def factor(step: int) -> float:
        decay = 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
        return decay if warmup <= 0 else min(1.0, (step + 1) / warmup) * decay

    return factor


def fit_epoch(batches: Iterable[tuple[torch.Tensor, ...]], loss_of: Callable[..., torch.Tensor],
              optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None,
              params: list[torch.nn.Parameter], max_grad_norm: float | None = None) -> float:
    """One epoch of optimiser steps; returns the mean training loss weighted by batch size.

    batches: tuples whose first tensor's length is the batch size; ``loss_of(*batch)`` -> scalar loss.
    Each step: zero-grad, backward, clip the gradient norm of ``params`` to ``max_grad_norm``, step, schedule.
    """
    total, count = 0.0, 0
    for batch in batches:
        loss = loss_of(*batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        size = len(batch[0])
        total += float(loss.detach()) * size
        count += size
    return total / max(count, 1)
