"""Train CLIPN's "no" encoder on image-caption pairs, on one CPU or across ``torchrun`` processes.

What trains: the "no" encoder (a copy of the text tower, vocabulary table frozen) and its prompts. What
does not: the image tower, the original text tower and the logit scale, so their outputs are computed
once, through :mod:`sayno.features` (cached on disk by the backbone's fingerprint), and every step runs only
the "no" encoder: for the embedded model a step costs about as much as one text-tower forward and backward.

Determinism and resuming: the epoch's permutation and the step's prompt come from ``default_rng([seed,
epoch])`` and ``default_rng([seed, step])``, the learning rate is a function of the step (linear warm-up,
then cosine), so a run resumed from its state file continues exactly as if uninterrupted, and W processes
take the same global batches as one (rank r takes the r-th slice of each global batch).

Many processes: launched by ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised here
(gloo on CPU, nccl on CUDA), the encoder is wrapped in DDP and the loss is
:func:`~sayno.clipn.losses.gathered_clipn_loss`. Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import TextColumn

from sayno.backbones.base import Backbone, TruncationWarning
from sayno.base.training import OtherRunState, ResumeFile, data_record, run_key
from sayno.clipn.checkpoint import save_clipn
from sayno.clipn.infer import TEMPLATE_SETS, clipn_templates, template_set
from sayno.clipn.losses import caption_ids, gathered_clipn_loss
from sayno.clipn.model import VARIANTS, ClipnError, NoTextEncoder
from sayno.cliutil import output_console, progress_bar
from sayno.config import from_mapping
from sayno.data import BadRow, DataError, read_captions_csv
from sayno.errors import InputError
from sayno.features import FeatureCache, encode_images, encode_texts

PROMPT_DRAWS: tuple[str, ...] = ("batch", "caption")


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (recorded in the checkpoint)."""

    variant: str = "learnable"  # learnable | handcrafted
    n_prompts: int = 16
    epochs: int = 10
    batch_size: int = 256  # global batch, split over processes
    lr: float = 1e-3
    weight_decay: float = 0.2
    warmup: float = 0.05  # share of the steps with a linear warm-up
    seed: int = 0
    mean_prompt_prob: float = 0.0  # share of steps that use the prompts' mean instead of one sampled prompt
    # "caption" (the reference's draw, the default since issue 26): for every caption one of the n_prompts prompts
    # or their mean (n_prompts + 1 choices, uniform); "batch": one prompt per step (mean_prompt_prob of the steps
    # use their mean), the draw of every checkpoint whose config has no prompt_draw
    prompt_draw: str = "caption"
    mask_same_text: bool = True  # pairs with identical captions are not negatives
    train_token_embedding: bool = False
    learn_bias: bool = True  # a learned logit bias b in p_yes = sigmoid(s (f.g - f.gno) + b) (not in the reference)
    bias_lr: float = 1.0  # the bias's own peak learning rate (it lives on the logit scale: tens of units)
    max_pairs: int | None = None  # use the first N pairs only (quick runs)
    # handcrafted variant: "sayno" (a caption's "no" text from clipn_templates.json's no_captions, by row; the frozen
    # tower reads the bare caption) | "reference" (the reference's pairs: every caption wrapped in one pair drawn
    # per caption and epoch, the frozen tower reading its affirmative side, the "no" encoder its "no" side)
    templates: str = "sayno"

    def __post_init__(self) -> None:
        """One-line :class:`~sayno.errors.InputError` for a setting that would train on nothing (or on less
        than asked: ``max_pairs=-5`` used to drop the last five rows)."""
        checks = (("max_pairs", self.max_pairs is None or self.max_pairs >= 2, "None or >= 2"),
                  ("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 2, ">= 2"),
                  ("n_prompts", self.n_prompts >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"), ("warmup", 0 <= self.warmup < 1, "in [0, 1)"),
                  ("mean_prompt_prob", 0 <= self.mean_prompt_prob <= 1, "in [0, 1]"),
                  ("bias_lr", self.bias_lr >= 0, ">= 0"))
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        if self.variant not in VARIANTS:
            raise InputError(f"unknown CLIPN variant {self.variant!r}: use one of {', '.join(VARIANTS)}")
        if self.prompt_draw not in PROMPT_DRAWS:
            raise InputError(f"unknown prompt draw {self.prompt_draw!r}: use one of {', '.join(PROMPT_DRAWS)}")
        if self.templates not in TEMPLATE_SETS:
            raise InputError(f"unknown CLIPN template set {self.templates!r}: use one of {', '.join(TEMPLATE_SETS)}")
        if self.templates != "sayno" and self.variant != "handcrafted":
            raise InputError(f"templates {self.templates!r} is for the handcrafted variant (the learnable variant "
                             "reads bare captions, as the reference's does)")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From a dict (a checkpoint's or a JSON file's); unknown keys raise :class:`sayno.config.ConfigError`."""
        return from_mapping(cls, d, "CLIPN train config")


@dataclass
class TrainData:
    """Cached frozen features of the training pairs. f, g: (N, D) normalised; tokens_no: (N, T).

    ``g_views`` (V, N, D) and ``tokens_views`` (V, N, T), when set, are per-epoch versions of ``g`` and
    ``tokens_no`` (epoch e uses view ``e % V``; ``g``/``tokens_no`` are view 0): the reference templates wrap
    every caption in a pair drawn anew each epoch."""

    f: torch.Tensor
    g: torch.Tensor
    tokens_no: torch.Tensor
    captions: list[str]
    text_ids: torch.Tensor
    signature: str
    bad_rows: list[BadRow] = field(default_factory=list)
    g_views: torch.Tensor | None = None
    tokens_views: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.g_views is None) != (self.tokens_views is None):
            raise InputError("TrainData: give both g_views and tokens_views, or neither")
        if self.g_views is not None and (self.g_views.ndim != 3 or self.tokens_views.ndim != 3
                                         or self.g_views.shape[:2] != self.tokens_views.shape[:2]
                                         or self.g_views.shape[1] != len(self.captions)):
            raise InputError(f"TrainData: g_views (V, N, D) and tokens_views (V, N, T) must share V and N = "
                             f"{len(self.captions)}, got {tuple(self.g_views.shape)} and "
                             f"{tuple(self.tokens_views.shape)}")

    def __len__(self) -> int:
        return len(self.captions)

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, N, D) frozen caption features and (V, N, T) "no" tokens, V = 1 without per-epoch views."""
        if self.g_views is None:
            return self.g[None], self.tokens_no[None]
        return self.g_views, self.tokens_views


# ---------------------------------------------------------------------------------------------- data
def no_captions(captions: list[str], templates: list[str]) -> list[str]:
    """What the hand-crafted "no" encoder reads for each caption (template chosen by the row index)."""
    return [templates[i % len(templates)].replace("{}", c) for i, c in enumerate(captions)]


def pair_draw(seed: int, epoch: int, n: int, n_pairs: int) -> np.ndarray:
    """(n,) pair indices, uniform in ``[0, n_pairs)``, for the n captions in ``epoch``: a function of (seed,
    epoch) only, as the reference draws a pair every time it loads a caption."""
    return np.random.default_rng([seed, 2_000_003, epoch]).integers(n_pairs, size=n)


def paired_captions(captions: list[str], pairs: list[tuple[str, str]],
                    index: np.ndarray) -> tuple[list[str], list[str]]:
    """Caption k wrapped in pair ``index[k]``: (affirmative texts, "no" texts), each of length N."""
    chosen = [pairs[int(i)] for i in index]
    return ([a.replace("{}", c) for (a, _), c in zip(chosen, captions)],
            [b.replace("{}", c) for (_, b), c in zip(chosen, captions)])


def _tokenize(backbone: Backbone, texts: list[str]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return backbone.tokenize(texts).cpu()


def prepare_data(backbone: Backbone, data: str | os.PathLike, config: TrainConfig, *,
                 cache: FeatureCache | None = None, progress: bool = True) -> TrainData:
    """Read the pairs (:func:`sayno.data.read_captions_csv`) and compute (or load from ``cache``) the frozen
    image and caption features."""
    pairs = read_captions_csv(data)
    paths, captions, bad = pairs.image_paths, pairs.captions, list(pairs.bad_rows)
    if config.max_pairs:
        paths, captions = paths[: config.max_pairs], captions[: config.max_pairs]
    img = encode_images(backbone, paths, cache=cache, progress=progress)
    bad = bad + list(img.bad)
    keep = np.flatnonzero(img.ok_mask)
    if keep.size < 2:
        raise DataError(f"{data}: fewer than two readable image-caption pairs")
    captions = [captions[i] for i in keep]
    f = torch.from_numpy(np.ascontiguousarray(img.features[keep]))
    sig = hashlib.sha1("\n".join(f"{paths[i]}\t{captions[j]}" for j, i in enumerate(keep)).encode()).hexdigest()
    if config.templates == "reference":  # one (affirmative, no) pair per caption and epoch
        pairs, n = template_set("reference")["pairs"], len(captions)
        drawn = [paired_captions(captions, pairs, pair_draw(config.seed, e, n, len(pairs)))
                 for e in range(config.epochs)]
        yes = encode_texts(backbone, [t for y, _ in drawn for t in y], cache=cache, progress=progress)
        g_views = torch.from_numpy(np.ascontiguousarray(yes)).view(config.epochs, n, -1)
        tokens_views = _tokenize(backbone, [t for _, no in drawn for t in no]).view(config.epochs, n, -1)
        return TrainData(f, g_views[0], tokens_views[0], captions, caption_ids(captions), sig[:16], bad,
                         g_views, tokens_views)
    g = torch.from_numpy(encode_texts(backbone, captions, cache=cache, progress=progress))
    no_text = captions if config.variant == "learnable" else no_captions(captions, clipn_templates()["no_captions"])
    return TrainData(f, g, _tokenize(backbone, no_text), captions, caption_ids(captions), sig[:16], bad)


# ---------------------------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to 0."""
    warm = max(1, round(config.warmup * total))
    if step < warm:
        return config.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def batch_indices(n: int, batch: int, step: int, steps_per_epoch: int, seed: int) -> np.ndarray:
    """The global batch of ``step``: a slice of the epoch's seeded permutation (last partial batch dropped)."""
    epoch, k = divmod(step, steps_per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch:(k + 1) * batch]


def step_prompt(step: int, config: TrainConfig, n_prompts: int, batch: int = 0) -> str | int | torch.Tensor | None:
    """The "no" prompt(s) of ``step``, a function of (seed, step) only. ``prompt_draw="batch"``: one index (or
    ``"mean"``) for the whole step; ``"caption"``: a (batch,) long tensor, each entry uniform in
    ``[0, n_prompts]`` (``n_prompts`` = the prompts' mean), drawn for the *global* batch so that every process
    takes its slice of the same draw."""
    if n_prompts == 0:
        return None
    rng = np.random.default_rng([config.seed, 1_000_003, step])
    if config.prompt_draw == "caption":
        return torch.from_numpy(rng.integers(n_prompts + 1, size=batch)).long()
    if rng.random() < config.mean_prompt_prob:
        return "mean"
    return int(rng.integers(n_prompts))


def local_prompt(prompt: str | int | torch.Tensor | None, rank: int, local: int,
                 device: torch.device) -> str | int | torch.Tensor | None:
    """This process's part of a step's prompt draw (a per-caption draw is sliced like the batch)."""
    if isinstance(prompt, torch.Tensor):
        return prompt[rank * local:(rank + 1) * local].to(device)
    return prompt


# ---------------------------------------------------------------------------------------------- processes
def dist_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun with WORLD_SIZE > 1."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        d.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return d.get_rank(), d.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


# ---------------------------------------------------------------------------------------------- training
def state_path(out: Path) -> Path:
    """The resume file of the run that writes ``out``."""
    return out.with_name(out.name + ".state.pt")


def make_optimizer(encoder: NoTextEncoder, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (not the prompts) and the bias at its own learning rate; every group
    has an ``lr_scale`` (its share of the scheduled learning rate)."""
    params = encoder.parameters_to_train()
    decay = [p for p in params if p.ndim >= 2 and p is not encoder.prompts]
    no_decay = [p for p in params if not any(p is q for q in decay) and p is not encoder.bias]
    groups = [{"params": decay, "weight_decay": config.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if encoder.bias is not None:
        groups.append({"params": [encoder.bias], "weight_decay": 0.0, "lr_scale": config.bias_lr / config.lr})
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def _load_state(resume: ResumeFile) -> dict | None:
    """The unfinished run's state, None when there is none; another run's state is an error."""
    try:
        return resume.load()
    except OtherRunState as e:
        raise ClipnError(f"{resume.path}: an unfinished run with another config, backbone or data; pass "
                         "overwrite=True to start again") from e


def train_clipn(backbone: Backbone, data: str | os.PathLike | TrainData, out: str | os.PathLike,
                config: TrainConfig | None = None, *, cache: FeatureCache | None = None, progress: bool = True,
                overwrite: bool = False, console: Console | None = None, save_every: int = 100,
                stop_after: int | None = None, on_step: Callable[[dict], None] | None = None) -> dict:
    """Train, save the checkpoint to ``out`` and return a summary dict.

    An interrupted run leaves ``<out>.state.pt`` (every ``save_every`` steps, a
    :class:`sayno.base.training.ResumeFile`: safetensors + JSON, never unpickled; one of another user or
    another format is refused with a one-line :class:`~sayno.checkpoint.CheckpointError`); calling again with
    the same config, backbone and data resumes from it. An existing ``out`` without a state file is refused unless
    ``overwrite``. ``stop_after``: stop (keeping the state file) after that many steps in total, to test
    resuming. Returns ``{"steps", "epochs", "final_loss", "seconds", "history", "resumed_from", ...}``.
    """
    config = config or TrainConfig()
    out = Path(out)
    device = backbone.device
    rank, world = dist_setup(device)
    console = console or output_console(stderr=True)
    show = progress and rank == 0
    if config.batch_size % world:
        raise ClipnError(f"batch size {config.batch_size} is not divisible by {world} processes")
    if rank == 0 and out.exists() and not state_path(out).exists() and not overwrite:
        raise ClipnError(f"{out} exists; pass overwrite=True (--overwrite) to train again")
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)  # the resume file goes there before the checkpoint
    if not overwrite:
        ResumeFile(state_path(out), "").check()  # a planted or foreign state file: refused before any work

    # frozen features: rank 0 fills the cache first, the others read it
    if isinstance(data, TrainData):
        td = data
    else:
        if rank == 0:
            td = prepare_data(backbone, data, config, cache=cache, progress=show)
        _barrier(world)
        if rank != 0:
            td = prepare_data(backbone, data, config, cache=cache, progress=False)
    n = len(td)
    batch = min(config.batch_size, n - n % world) if n < config.batch_size else config.batch_size
    if batch < max(2, world):
        raise ClipnError(f"{n} pairs are too few for {world} process(es)")
    steps_per_epoch = n // batch
    total = steps_per_epoch * config.epochs
    local = batch // world
    s = float(backbone.logit_scale)

    encoder = NoTextEncoder.from_backbone(backbone, variant=config.variant, n_prompts=config.n_prompts,
                                          train_token_embedding=config.train_token_embedding,
                                          learn_bias=config.learn_bias)
    opt = make_optimizer(encoder, config)
    cfg_dict = asdict(config)
    resume = ResumeFile(state_path(out), run_key(cfg_dict, backbone.fingerprint, td.signature))
    start, history, elapsed, resumed_from = 0, [], 0.0, None
    state = None if overwrite else _load_state(resume)
    if state is not None:
        encoder.load_trainable_state(state["encoder"], where=str(resume.path))
        opt.load_state_dict(state["optimizer"])
        start, history, elapsed = int(state["step"]), list(state["history"]), float(state["seconds"])
        resumed_from = start
    model: torch.nn.Module = encoder
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" and device.index is not None else None)

    g_views, tokens_views = (v.to(device) for v in td.views())
    f_all, ids_all = td.f.to(device), td.text_ids.to(device)
    t0 = time.time() - elapsed
    last = None

    def save_state(step: int) -> None:
        if rank != 0:
            return
        resume.save({"step": step, "encoder": {k: v.cpu() for k, v in encoder.trainable_state().items()},
                     "optimizer": opt.state_dict(), "config": cfg_dict, "history": history,
                     "seconds": time.time() - t0})

    bar = None
    if show:
        bar = progress_bar(console, TextColumn("loss {task.fields[loss]}"))  # readable in logs too
        bar.start()
        task = bar.add_task(f"CLIPN epochs {config.epochs}", total=total, completed=start, loss="-")
    model.train()
    end = total if stop_after is None else min(total, stop_after)
    try:
        for step in range(start, end):
            idx = batch_indices(n, batch, step, steps_per_epoch, config.seed)
            view = (step // steps_per_epoch) % len(g_views)  # the epoch's captions (reference pairs: its draw)
            g_all, tokens_all = g_views[view], tokens_views[view]
            mine = torch.as_tensor(idx[rank * local:(rank + 1) * local], device=device)
            lr = lr_at(step, total, config)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            prompt = local_prompt(step_prompt(step, config, encoder.n_prompts, batch), rank, local, device)
            gno = F.normalize(model(tokens_all[mine], prompt), dim=-1)
            losses = gathered_clipn_loss(f_all[mine], g_all[mine], gno, s,
                                         text_ids=ids_all[mine] if config.mask_same_text else None,
                                         bias=encoder.bias if encoder.bias is not None else 0.0)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            last = {k: round(float(v.detach()), 5) for k, v in losses.items()}
            if step % 10 == 0 or step == total - 1:
                rec = {"step": step + 1, "epoch": round((step + 1) / steps_per_epoch, 3), "lr": lr, **last,
                       "seconds": round(time.time() - t0, 1)}
                history.append(rec)
                if on_step is not None:
                    on_step(rec)
            if bar is not None:
                bar.update(task, advance=1, loss=f"{last['loss']:.4f}")
            if save_every and (step + 1) % save_every == 0 and step + 1 < total:
                save_state(step + 1)
    finally:
        if bar is not None:
            bar.stop()
    seconds = time.time() - t0
    summary = {"steps": end, "total_steps": total, "epochs": config.epochs, "pairs": n, "batch_size": batch,
               "processes": world, "final": last, "seconds": round(seconds, 1), "history": history,
               "resumed_from": resumed_from, "bad_rows": len(td.bad_rows), "data_signature": td.signature,
               **({"data": "<features>"} if isinstance(data, TrainData) else data_record([data]))}  # relative
    if end < total:  # stopped early on purpose: keep the state for resuming
        save_state(end)
        return summary
    if rank == 0:
        templates = template_set(config.templates)
        training = {k: v for k, v in summary.items() if k != "history"}
        training.update(config=cfg_dict, date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        loss_curve=[(h["step"], h["loss"]) for h in history][-50:])
        save_clipn(out, encoder, backbone,
                   {"templates": {"name": templates["name"], "version": templates["version"]},
                    "template_set": config.templates,
                    "train_token_embedding": config.train_token_embedding, "learn_bias": config.learn_bias,
                    "logit_scale": s}, training)
        resume.remove()
    _barrier(world)
    summary["checkpoint"] = str(out)
    return summary


def summary_json(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1)
