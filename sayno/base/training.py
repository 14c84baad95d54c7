"""What sayno's training loops share: resuming, early stopping, the learning-rate shape and one epoch of steps.

Used by ``sayno glasses train`` (per stage), ``sayno glasses finetune`` and ``sayno clipn train``:

- :func:`run_key`: a short hash of everything that decides the weights (configs, backbone fingerprint, data);
  a resume file only continues the run with the same key.
- :class:`ResumeFile`: the whole training state in one file beside the output, written atomically
  (:func:`sayno.checkpoint.atomic_path`) with the torch and numpy RNG states, so a resumed run continues
  exactly as if it had not stopped. The file is safetensors: the tensors, plus the rest of the state as JSON
  in its header; it is never unpickled, so a planted file cannot run code. :meth:`ResumeFile.load` refuses a
  file of another user, one anyone may write, one that is not such a file (a pickle of an older sayno
  included) with :class:`~sayno.checkpoint.CheckpointError`, and a file of another run with
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
import os
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


def data_record(*groups: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """How a checkpoint records its data files: ``{"data_root": <name of their common folder>, "data": [paths
    relative to it], ...}`` (one list per group: ``data``, then ``val_data``), never a machine's absolute paths.

    >>> data_record(["/home/me/runs/world/a.csv"], ["/home/me/runs/world/b.csv"])
    {'data_root': 'world', 'data': ['a.csv'], 'val_data': ['b.csv']}
    """
    lists = [[Path(os.path.abspath(f)) for f in group] for group in groups]
    every = [f for files in lists for f in files]
    root = Path(os.path.commonpath([f.parent for f in every])) if every else Path()
    record: dict[str, Any] = {"data_root": root.name}
    for name, files in zip(("data", "val_data"), lists):
        record[name] = [f.relative_to(root).as_posix() for f in files]
    return record


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


RESUME_FORMAT = "sayno-resume"
RESUME_VERSION = "1"


def pack_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON-able data, its tensors moved into ``tensors`` (name -> tensor) and replaced by
    ``{"$tensor": name}``. Tuples, dicts with keys that are not strings and numpy arrays are tagged so that
    :func:`unpack_state` gives back the same types; anything else raises ``TypeError`` (a caller's bug)."""
    if isinstance(obj, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"$tensor": name}
    if isinstance(obj, np.ndarray):
        return {"$ndarray": pack_state(torch.from_numpy(np.ascontiguousarray(obj)), tensors)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"$tuple": [pack_state(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [pack_state(v, tensors) for v in obj]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: pack_state(v, tensors) for k, v in obj.items()}
        return {"$items": [[pack_state(k, tensors), pack_state(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"a resume state holds tensors, arrays, numbers, strings, lists, tuples and dicts; "
                    f"got {type(obj).__name__}")


def unpack_state(data: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`pack_state`; ``KeyError``/``TypeError``/``ValueError`` on a malformed tree."""
    if isinstance(data, list):
        return [unpack_state(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        (tag, value), = data.items()
        if tag == "$tensor":
            return tensors[value]
        if tag == "$ndarray":
            return unpack_state(value, tensors).numpy()
        if tag == "$tuple":
            return tuple(unpack_state(v, tensors) for v in value)
        if tag == "$items":
            return {_hashable(unpack_state(k, tensors)): unpack_state(v, tensors) for k, v in value}
    return {k: unpack_state(v, tensors) for k, v in data.items()}


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict, torch.Tensor)):
        raise TypeError(f"a dict key cannot be a {type(key).__name__}")
    return key


def check_owner(path: Path) -> None:
    """:class:`~sayno.checkpoint.CheckpointError` unless ``path`` belongs to this user and only they may
    write it (POSIX; elsewhere nothing is checked): a state file is read only when this user wrote it."""
    st = path.stat()
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is not None and st.st_uid != uid:
        raise CheckpointError(f"{path}: a resume state owned by another user (uid {st.st_uid}); sayno resumes "
                              "only from its own files: delete it to start again")
    if hasattr(os, "geteuid") and st.st_mode & 0o022:
        raise CheckpointError(f"{path}: a resume state that other users may write (mode {st.st_mode & 0o777:o}); "
                              "sayno resumes only from its own files: delete it to start again")


class ResumeFile:
    """The resume state of one training run at ``path``, tied to the run's ``key``.

    The state is a dict of tensors, numpy arrays, numbers, strings, lists, tuples and dicts (module and
    optimiser state dicts, counters, history). :meth:`save` adds the key and the RNG states and writes one
    safetensors file atomically: the tensors, and the rest as JSON in the header (:func:`pack_state`).
    :meth:`load` returns what was saved; it never unpickles anything.
    """

    def __init__(self, path: str | Path, key: str):
        self.path = Path(path)
        self.key = key

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: Mapping[str, Any], rng: np.random.Generator | None = None) -> None:
        """Write ``state`` with this run's key, the torch RNG state and ``rng``'s state (atomic)."""
        from safetensors.torch import save_file

        full = {**state, "key": self.key, "torch_rng": torch.get_rng_state(),
                "numpy_rng": rng.bit_generator.state if rng is not None else None}
        tensors: dict[str, torch.Tensor] = {}
        tree = json.dumps(pack_state(full, tensors))
        meta = {"sayno.format": RESUME_FORMAT, "sayno.version": RESUME_VERSION, "sayno.key": self.key,
                "sayno.state": tree}
        with atomic_path(self.path, mode=0o600) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def check(self) -> None:
        """Refuse now (before any long work) a file at :attr:`path` that :meth:`load` would refuse whatever the
        run: another user's, one others may write, or not a resume state of this sayno. Nothing when absent."""
        from safetensors import SafetensorError, safe_open

        if not self.exists():
            return
        check_owner(self.path)
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{self.path}: not a resume state of this sayno (not a safetensors file: "
                                  f"{type(e).__name__}); an older sayno wrote pickles: delete it to start again"
                                  ) from e
        if meta.get("sayno.format") != RESUME_FORMAT or meta.get("sayno.version") != RESUME_VERSION:
            raise CheckpointError(f"{self.path}: not a resume state of this sayno (format "
                                  f"{meta.get('sayno.format')!r}, version {meta.get('sayno.version')!r}); "
                                  "delete it to start again")

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is no file. Raises :class:`OtherRunState` when the file belongs
        to another run and :class:`~sayno.checkpoint.CheckpointError` when it is not this user's or cannot be
        read. Does not restore the RNGs: call :func:`restore_rng` where the loop is ready to continue."""
        from safetensors import SafetensorError, safe_open

        if not self.exists():
            return None
        self.check()  # whose file, and what kind: before anything in it is used
        unreadable = f"{self.path}: not a resume state of this sayno"
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                if meta.get("sayno.key") != self.key:
                    raise OtherRunState(f"{self.path}: the resume state of a run with other settings")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        except (SafetensorError, OSError) as e:
            reason = " ".join(str(e).split())[:100]
            raise CheckpointError(f"{unreadable} ({type(e).__name__}: {reason}); delete it to start again") from e
        try:
            state = unpack_state(json.loads(meta.get("sayno.state", "")), tensors)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            raise CheckpointError(f"{unreadable} (a damaged state: {type(e).__name__}); delete it to start "
                                  "again") from e
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
