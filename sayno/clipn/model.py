"""CLIPN's "no" text encoder: a trainable copy of a backbone's text tower, plus learnable "no" prompts.

The copy is made with ``copy.deepcopy(backbone.text_tower())``; what it may train is found, not assumed:
every parameter that the text forward pass reaches, except the vocabulary table (an ``nn.Embedding`` with
more rows than the context length), which stays frozen and *shared* with the backbone. So the checkpoint
holds the transformer, the final norm, the projection and the position embedding (about 3.5 MB for the
embedded model) instead of also the 25 MB token table, and any backbone whose ``TextTower`` follows the
interface works (open_clip, Hugging Face). Unreached parameters (an image tower behind an open_clip view)
are shared too.

Variants:
- ``learnable`` (the paper's): ``n_prompts`` prompts, each (T, W), zero-initialised, *added* to the token +
  position embeddings. Training samples, as the reference does, one per caption among the prompts and their
  mean (``prompt_draw="caption"``, the default) or one prompt per step (``"batch"``); inference uses their mean.
- ``handcrafted``: no prompts; the encoder reads negated text instead (``"a photo of no {}"`` for classes,
  ``"not {}"`` for training captions; see ``sayno/templates/clipn_templates.json``; or, with the ``reference``
  template set, the "no" sides of the reference's pairs, ``sayno/templates/clipn_reference_pairs.json``).

The copy is always in eval mode (no dropout: a step's result does not depend on the process that runs it).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sayno.backbones.base import Backbone, TextTower
from sayno.checkpoint import check_tensors
from sayno.errors import SaynoError

Variant = Literal["learnable", "handcrafted"]
VARIANTS: tuple[str, ...] = ("learnable", "handcrafted")
PROMPTS_KEY = "prompts"
BIAS_KEY = "bias"


class ClipnError(SaynoError, ValueError):
    """A CLIPN checkpoint, configuration or input that cannot be used (one-line message)."""


def reached_parameters(tower: TextTower, tokens: Tensor) -> set[str]:
    """Names of the tower's parameters that its forward pass on ``tokens`` depends on."""
    params = dict(tower.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            out = tower(tokens)
            grads = torch.autograd.grad(out.float().sum(), list(params.values()), allow_unused=True)
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    return {n for n, gr in zip(params, grads) if gr is not None}


def vocabulary_parameters(tower: TextTower) -> set[str]:
    """Names of vocabulary tables: ``nn.Embedding`` weights with more rows than the context length."""
    out = set()
    for name, mod in tower.named_modules():
        if isinstance(mod, nn.Embedding) and mod.num_embeddings > tower.context_length:
            out.add(f"{name}.weight" if name else "weight")
    return out


class NoTextEncoder(nn.Module):
    """The "no" text encoder. Build it with :meth:`from_backbone`.

    forward(tokens (N, T), prompt) -> (N, D) unnormalised features; ``encode`` normalises.
    ``prompt``: ``"mean"`` (inference), an int (one prompt for the whole batch), an (N,) long tensor (one
    prompt per caption; index ``n_prompts`` stands for the prompts' mean, the reference's 17th choice) or
    None (no prompt). The handcrafted variant has no prompts and ignores ``prompt``.
    """

    def __init__(self, tower: TextTower, trainable: set[str], n_prompts: int, variant: Variant,
                 learn_bias: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ClipnError(f"unknown CLIPN variant {variant!r}: use one of {', '.join(VARIANTS)}")
        if variant == "learnable" and n_prompts < 1:
            raise ClipnError("the learnable variant needs at least one prompt")
        self.variant = variant
        self.tower = tower
        self.trainable_names = sorted(trainable)
        for name, p in self.tower.named_parameters():
            p.requires_grad_(name in trainable)
        n = n_prompts if variant == "learnable" else 0
        dev = next(iter(dict(self.tower.named_parameters()).values())).device
        self.prompts = nn.Parameter(torch.zeros(n, tower.context_length, tower.width, device=dev)) if n else None
        self.bias = nn.Parameter(torch.zeros((), device=dev)) if learn_bias else None
        self.tower.eval()

    @classmethod
    def from_backbone(cls, backbone: Backbone, *, variant: Variant = "learnable", n_prompts: int = 16,
                      train_token_embedding: bool = False, learn_bias: bool = False) -> NoTextEncoder:
        """A trainable copy of ``backbone``'s text tower (float32), sharing its frozen parts when fp32."""
        tower = backbone.text_tower()
        tokens = backbone.tokenize(["a photo of a dog", "no"]).to(backbone.device)
        trainable = reached_parameters(tower, tokens)
        if not train_token_embedding:
            trainable -= vocabulary_parameters(tower)
        if not trainable:
            raise ClipnError("the text tower has no parameter that its forward pass reaches")
        memo: dict[int, object] = {}
        if backbone.dtype == torch.float32:  # share what stays frozen (casting would change the backbone)
            memo = {id(p): p for n, p in tower.named_parameters() if n not in trainable}
        copied = copy.deepcopy(tower, memo)
        copied.float()
        return cls(copied, trainable, n_prompts, variant, learn_bias)

    # -------------------------------------------------------------------------------------------- forward
    def _extra(self, prompt: str | int | Tensor | None, n: int) -> Tensor | None:
        if self.prompts is None or prompt is None:
            return None
        if isinstance(prompt, str):
            if prompt != "mean":
                raise ClipnError(f"prompt must be 'mean', an index or an index tensor, not {prompt!r}")
            return self.prompts.mean(0)
        if isinstance(prompt, int):
            return self.prompts[prompt]
        idx = torch.as_tensor(prompt, device=self.prompts.device).long()
        if idx.shape != (n,):
            raise ClipnError(f"per-caption prompt indices must have shape ({n},), got {tuple(idx.shape)}")
        k = self.prompts.shape[0]
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) > k):
            raise ClipnError(f"per-caption prompt indices must be in [0, {k}] ({k} = the prompts' mean)")
        if idx.numel() == 0 or int(idx.max()) < k:
            return self.prompts[idx]
        table = torch.cat([self.prompts, self.prompts.mean(0, keepdim=True)])  # (k + 1, T, W)
        return table[idx]

    def forward(self, tokens: Tensor, prompt: str | int | Tensor | None = "mean") -> Tensor:
        return self.tower(tokens, extra=self._extra(prompt, tokens.shape[0])).float()

    def encode(self, tokens: Tensor, prompt: str | int | Tensor | None = "mean") -> Tensor:
        """Normalised (N, D) features."""
        return F.normalize(self(tokens, prompt), dim=-1)

    def train(self, mode: bool = True) -> NoTextEncoder:  # the tower never enters train mode (no dropout)
        super().train(mode)
        self.tower.eval()
        return self

    @property
    def yes_bias(self) -> float:
        """The learned logit bias ``b`` of ``p_yes`` (0 without one)."""
        return 0.0 if self.bias is None else float(self.bias.detach())

    @property
    def n_prompts(self) -> int:
        return 0 if self.prompts is None else int(self.prompts.shape[0])

    # -------------------------------------------------------------------------------------------- state
    def trainable_state(self) -> dict[str, Tensor]:
        """Only what training changes: the trainable tower parameters (``tower.<name>``) and the prompts."""
        params = dict(self.tower.named_parameters())
        state = {f"tower.{n}": params[n].detach() for n in self.trainable_names}
        if self.prompts is not None:
            state[PROMPTS_KEY] = self.prompts.detach()
        if self.bias is not None:
            state[BIAS_KEY] = self.bias.detach()
        return state

    def load_trainable_state(self, state: dict[str, Tensor], where: str = "CLIPN state") -> None:
        """Strict: exactly the keys of :meth:`trainable_state`, with the same shapes; otherwise a one-line
        :class:`~sayno.checkpoint.CheckpointError` naming ``where`` and the first tensor that does not fit."""
        want = self.trainable_state()
        check_tensors(state, {k: tuple(v.shape) for k, v in want.items()}, where)
        with torch.no_grad():
            for k, dst in want.items():
                dst.copy_(state[k].to(dst.device, dst.dtype))

    def parameters_to_train(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
