"""open_clip CLIPs as :class:`~sayno.backbones.base.Backbone`: built from config data, loaded strictly.

Architectures are open_clip model configs: a built-in name (``open_clip.get_model_config``; open_clip's
global registry is never modified) or a JSON file in the same format (``embed_dim``, ``vision_cfg``,
``text_cfg``, optional ``quick_gelu``, ``custom_text``, ``preprocess_cfg``; open_clip's
``open_clip_config.json`` wrapper ``{"model_cfg": ..., "preprocess_cfg": ...}`` is accepted too).

The QuickGELU trap (open_clip #771): OpenAI's weights were trained with QuickGELU, and an architecture
without it (``ViT-B-32`` instead of ``ViT-B-32-quickgelu``) runs them with silently wrong features. Here
the mix-up is an error, detected from the file (OpenAI format, or the metadata sayno writes) or from the
pretrained tag's own record.

Shapes: N = batch, T = context length, W = text width, L = text layers, D = joint embedding size.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
from open_clip.transformer import TextTransformer, VisionTransformer, text_global_pool
from PIL import Image
from torch import nn

from sayno.backbones.base import Backbone, BackboneError, TextTower, weights_fingerprint
from sayno.backbones.checkpoint import CheckpointFile, freeze, load_strict, read_checkpoint, resolve_target

OPENAI_MEAN: tuple[float, float, float] = tuple(open_clip.OPENAI_DATASET_MEAN)  # type: ignore[assignment]
OPENAI_STD: tuple[float, float, float] = tuple(open_clip.OPENAI_DATASET_STD)  # type: ignore[assignment]
PREPROCESS_KEYS: tuple[str, ...] = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")
# config fields that do not change what a set of weights computes at inference
_NON_ARCH_FIELDS = frozenset(
    {"patch_dropout", "timm_model_pretrained", "hf_model_pretrained", "timm_drop", "timm_drop_path",
     "output_tokens", "hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs"}
)


def image_transform(
    size: int | tuple[int, int],
    mean: tuple[float, ...] = OPENAI_MEAN,
    std: tuple[float, ...] = OPENAI_STD,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    fill_color: int = 0,
) -> Callable[[Image.Image], torch.Tensor]:
    """Eval transform, PIL image -> (3, H, W): resize the shorter side to ``size``, centre crop, RGB,
    ToTensor, normalise with ``mean``/``std`` (open_clip's own eval pipeline)."""
    return open_clip.image_transform(
        size, is_train=False, mean=tuple(mean), std=tuple(std), interpolation=interpolation,
        resize_mode=resize_mode, fill_color=fill_color,
    )


# ---- architectures ------------------------------------------------------------------------------------
@dataclass
class Architecture:
    """An open_clip model config and where it came from.

    name: the built-in name or the JSON path. config: the model config (no ``preprocess_cfg``).
    preprocess: the file's ``preprocess_cfg`` ({} if none). builtin: True for a built-in name.
    """

    name: str
    config: dict[str, Any]
    preprocess: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False

    @property
    def quick_gelu(self) -> bool:
        return bool(self.config.get("quick_gelu", False))

    def fix_hint(self, want_quick_gelu: bool) -> str:
        """How to get an architecture with (or without) QuickGELU."""
        if self.builtin:
            base = self.name.removesuffix("-quickgelu")
            other = f"{base}-quickgelu" if want_quick_gelu else base
            if other != self.name and open_clip.get_model_config(other) is not None:
                return f"use the {other!r} architecture"
        return f'set "quick_gelu": {str(want_quick_gelu).lower()} in the model config'


def resolve_architecture(model: str) -> Architecture:
    """A built-in open_clip name (``ViT-B-32``, ``RN50``, ...) or a path to a JSON model config."""
    path = Path(model).expanduser()
    if model.endswith(".json") or path.is_file():
        if not path.is_file():
            raise BackboneError(f"model config file not found: {path}")
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BackboneError(f"cannot read model config {path}: {e}") from None
        if isinstance(raw, dict) and isinstance(raw.get("model_cfg"), dict):  # open_clip_config.json layout
            raw = {**raw["model_cfg"], "preprocess_cfg": raw.get("preprocess_cfg", {})}
        name, builtin = str(path), False
    else:
        raw = open_clip.get_model_config(model)
        if raw is None:
            close = difflib.get_close_matches(model, open_clip.list_models(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (see open_clip.list_models())"
            raise BackboneError(f"unknown open_clip architecture {model!r}{hint}")
        name, builtin = model, True
    if not isinstance(raw, dict) or not all(k in raw for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise BackboneError(f"{model}: not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    config = copy.deepcopy(raw)
    preprocess = config.pop("preprocess_cfg", None) or {}
    return Architecture(name, config, dict(preprocess), builtin)


def _canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model config with defaults filled in and training-only fields dropped, for comparisons."""
    out: dict[str, Any] = {k: v for k, v in config.items() if k not in ("preprocess_cfg", "custom_text")}
    text = dict(config.get("text_cfg", {}))
    out["quick_gelu"] = bool(config.get("quick_gelu", False))
    out["custom_text"] = bool(config.get("custom_text", False) or text.get("hf_model_name"))
    for key, cls in (("vision_cfg", CLIPVisionCfg), ("text_cfg", CLIPTextCfg)):
        sub = dict(config.get(key, {}))
        try:
            sub = asdict(cls(**sub))
        except TypeError:  # a field this open_clip does not know: compare as written
            pass
        out[key] = {k: v for k, v in sub.items() if k not in _NON_ARCH_FIELDS}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            diffs += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            diffs.append(f"{prefix}{k}: file {x!r} vs architecture {y!r}")
    return diffs


def check_activation(arch: Architecture, file_quick_gelu: bool | None, source: str) -> None:
    """Raise if weights trained with (without) QuickGELU meet an architecture without (with) it."""
    if file_quick_gelu is None or file_quick_gelu == arch.quick_gelu:
        return
    if file_quick_gelu:
        raise BackboneError(
            f"{source} was trained with QuickGELU but architecture {arch.name!r} uses GELU: "
            f"{arch.fix_hint(True)}"
        )
    raise BackboneError(
        f"{source} was trained with GELU but architecture {arch.name!r} uses QuickGELU: {arch.fix_hint(False)}"
    )


def check_recorded_config(arch: Architecture, ckpt: CheckpointFile) -> None:
    """Compare the architecture with the config that sayno recorded in the file's metadata, if any."""
    recorded = ckpt.sayno_config
    if recorded is None:
        return
    diffs = _differences(_canonical(recorded), _canonical(arch.config))
    if diffs:
        raise BackboneError(
            f"{ckpt.path} was written for a different architecture than {arch.name!r}: "
            + "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
        )


def build_open_clip_model(config: Mapping[str, Any], source: str = "config") -> nn.Module:
    """Build a randomly initialised open_clip ``CLIP`` (or ``CustomTextCLIP``) from a model config dict.

    Never downloads tower weights (``timm_model_pretrained`` / ``hf_model_pretrained`` are turned off).
    """
    cfg = copy.deepcopy(dict(config))
    cfg.pop("preprocess_cfg", None)
    if "multimodal_cfg" in cfg:
        raise BackboneError(f"{source}: CoCa models (multimodal_cfg) are not supported")
    text_cfg, vision_cfg = dict(cfg.get("text_cfg", {})), dict(cfg.get("vision_cfg", {}))
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    cfg["text_cfg"], cfg["vision_cfg"] = text_cfg, vision_cfg
    custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in text_cfg
    cls = CustomTextCLIP if custom else CLIP
    try:
        return cls(**cfg)
    except Exception as e:  # noqa: BLE001 - bad config values surface as many error types
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(f"cannot build an open_clip model from {source}: {msg}") from None


def _adapt_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Layout-only fixes open_clip itself applies (text tower under ``text.``, scalar vs (1,) logit scale)."""
    if isinstance(model, CustomTextCLIP) and "positional_embedding" in state:
        state = open_clip.model.convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state and target is not None and state[key].ndim != target.ndim and state[key].numel() == 1:
            state[key] = state[key].reshape(target.shape)
    return state


def _tag_preprocess_defaults(name: str) -> dict[str, Any]:
    """Preprocessing that every pretrained tag of a built-in architecture agrees on ({} if they differ)."""
    tags = open_clip.list_pretrained_tags_by_model(name)
    cfgs = [open_clip.get_pretrained_cfg(name, t) for t in tags]
    keys = ("mean", "std", "interpolation", "resize_mode")
    seen = {json.dumps([c.get(k) for k in keys], default=str) for c in cfgs}
    if len(seen) != 1:
        return {}
    return {k: cfgs[0][k] for k in keys if cfgs[0].get(k) is not None}


def _make_tokenizer(arch: Architecture, context_length: int) -> Any:
    text_cfg = arch.config.get("text_cfg", {})
    try:
        if arch.builtin:
            return open_clip.get_tokenizer(arch.name, context_length=context_length)
        if text_cfg.get("hf_tokenizer_name"):
            from open_clip.tokenizer import HFTokenizer

            return HFTokenizer(
                text_cfg["hf_tokenizer_name"], context_length=context_length,
                tokenizer_mode=text_cfg.get("tokenizer_mode"), **text_cfg.get("tokenizer_kwargs", {}),
            )
        return open_clip.SimpleTokenizer(context_length=context_length, **text_cfg.get("tokenizer_kwargs", {}))
    except Exception as e:  # noqa: BLE001 - HF tokenizers may need a download
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(f"cannot build the tokenizer for {arch.name}: {msg}") from None


def _plain_simple_tokenizer(tokenizer: Any) -> bool:
    """open_clip's ``SimpleTokenizer`` that truncates (no reduction strategy): what ``_simple_tokenize`` repeats."""
    return isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) and tokenizer.reduction_fn is None


def _simple_tokenize(tokenizer: Any, texts: list[str], context_length: int) -> tuple[torch.Tensor, list[int]]:
    """``tokenizer(texts)`` (N, T) and each text's untruncated length, encoding every text once (the BPE and the
    text cleaning are most of the cost). Truncation as open_clip's: the first T tokens, the last one end-of-text."""
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    seqs = [[sot, *tokenizer.encode(t), eot] for t in texts]
    ids = torch.zeros(len(seqs), context_length, dtype=torch.long)
    for i, seq in enumerate(seqs):
        kept = seq[:context_length]
        kept[-1] = eot
        ids[i, :len(kept)] = torch.tensor(kept)
    return ids, [len(seq) for seq in seqs]


def _token_count(tokenizer: Any, text: str, fallback: int) -> int:
    """Untruncated length in tokens, start and end tokens included."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # open_clip SimpleTokenizer
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer / SigLipTokenizer wrappers
    if callable(inner):
        return len(inner(text)["input_ids"])
    return fallback


# ---- the text tower -----------------------------------------------------------------------------------
class OpenClipTextTower(TextTower):
    """Per-layer view of an open_clip text transformer (``CLIP``, or ``CustomTextCLIP.text`` when that is an
    open_clip ``TextTransformer``). It references the model's modules, not copies.

    forward(tokens (N, T), extra (T, W) | (N, T, W) | None, all_layers) -> (N, D) or (N, L, D).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        src = model.text if isinstance(model, CustomTextCLIP) else model
        if not isinstance(src, (CLIP, TextTransformer)):
            raise BackboneError(
                f"{type(src).__name__} text towers are not supported for per-layer features "
                "(only open_clip's own text transformer is)"
            )
        if getattr(src, "cls_emb", None) is not None:
            raise BackboneError("text towers with a class token (CoCa) are not supported for per-layer features")
        if isinstance(src, CLIP):
            pool_type, eos_id = src.text_pool_type, getattr(src, "text_eos_id", None)
        else:
            pool_type, eos_id = src.pool_type, getattr(src, "eos_id", None)
        if pool_type not in ("argmax", "eos", "first", "last"):
            raise BackboneError(f"text pooling {pool_type!r} is not supported for per-layer features")
        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection
        self.register_buffer("attn_mask", src.attn_mask, persistent=False)
        self.pool_type, self.eos_id = pool_type, eos_id
        self.use_pad_mask = bool(getattr(src, "use_pad_mask", False))
        self.pad_id = int(getattr(src, "pad_id", 0))
        self.heads = int(getattr(src, "heads", 1))
        self.width = int(self.transformer.width)
        self.context_length = int(src.context_length)
        self.num_layers = len(self.transformer.resblocks)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) ids -> (N, T, W) token + position embeddings, in the transformer's dtype."""
        cast = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(cast)
        return x + self.positional_embedding[: tokens.shape[1]].to(cast)

    def _mask(self, tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        t = tokens.shape[1]
        mask = None if self.attn_mask is None else self.attn_mask[:t, :t]
        if self.use_pad_mask:  # bidirectional towers that mask padding keys (open_clip's _build_additive_mask)
            valid = tokens != self.pad_id
            pad = torch.zeros(valid.shape[0], t, t, dtype=dtype, device=tokens.device)
            pad = pad.masked_fill(~valid[:, None, :], float("-inf")).repeat_interleave(self.heads, 0)
            mask = pad if mask is None else mask.unsqueeze(0) + pad
        return mask

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def trimmed(self, tokens: torch.Tensor, extra: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tokens`` (N, T) and ``extra`` ((T, W) or (N, T, W)) without their trailing columns of padding.

        Exact when the tower pools at the end-of-text token and its attention is causal or masks padding:
        no token at or before the end of text attends to a later one. Short texts then cost their own length,
        not the context's (a caption of 12 tokens in a context of 77: about 6x less work). Other towers get
        their input unchanged."""
        if self.pool_type not in ("argmax", "eos") or (self.attn_mask is None and not self.use_pad_mask):
            return tokens, extra
        used = (tokens != self.pad_id).any(0).nonzero()
        t = int(used[-1]) + 1 if len(used) else tokens.shape[1]
        if t >= tokens.shape[1]:
            return tokens, extra
        return tokens[:, :t], (None if extra is None else extra[..., :t, :])

    def forward(
        self, tokens: torch.Tensor, extra: torch.Tensor | None = None, all_layers: bool = False
    ) -> torch.Tensor:
        tokens, extra = self.trimmed(tokens, extra)
        x = self.embed(tokens)
        if extra is not None:
            x = x + extra.to(x.dtype)
        mask = self._mask(tokens, x.dtype)
        batch_first = getattr(self.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        states = []
        for block in self.transformer.resblocks:
            x = block(x, attn_mask=mask)
            if all_layers:
                states.append(x if batch_first else x.transpose(0, 1))
        if not all_layers:
            states.append(x if batch_first else x.transpose(0, 1))
        # pool each layer's (N, T, W) at the end-of-text token; the final norm is per token, so it commutes
        pooled = torch.stack([text_global_pool(h, tokens, self.pool_type, eos_token_id=self.eos_id) for h in states], 1)
        out = self._project(self.ln_final(pooled))  # (N, L or 1, D)
        return out if all_layers else out[:, 0]


# ---- the backbone -------------------------------------------------------------------------------------
class OpenClipBackbone(Backbone):
    """A frozen open_clip model. Build it with :func:`load_open_clip_checkpoint` or ``sayno.backbones.load``.

    ``model`` is the open_clip module (eval mode, no gradients); ``config`` its model config.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tokenizer: Any,
        spec: str,
        fingerprint: str,
        config: Mapping[str, Any],
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.model, self.tokenizer, self.config = model, tokenizer, dict(config)
        self.spec, self.fingerprint, self.device, self.dtype = spec, fingerprint, device, dtype
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", 224)
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.image_mean = tuple(float(v) for v in pp.get("mean", OPENAI_MEAN))  # type: ignore[assignment]
        self.image_std = tuple(float(v) for v in pp.get("std", OPENAI_STD))  # type: ignore[assignment]
        self._transform = image_transform(
            size if isinstance(size, int) else tuple(size), self.image_mean, self.image_std,
            pp.get("interpolation", "bicubic"), pp.get("resize_mode", "shortest"), pp.get("fill_color", 0),
        )
        self.embed_dim = int(self.config["embed_dim"])
        self.context_length = int(model.context_length)
        self._tower: OpenClipTextTower | None
        self._tower_error = ""
        try:
            self._tower = OpenClipTextTower(model).eval()
            self.num_text_layers = self._tower.num_layers
        except BackboneError as e:  # e.g. a Hugging Face text tower: encode_text still works
            self._tower, self._tower_error = None, str(e)
            self.num_text_layers = 0

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().reshape(-1)[0])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._transform(image)

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        if _plain_simple_tokenizer(self.tokenizer):
            return _simple_tokenize(self.tokenizer, texts, self.context_length)
        ids = self.tokenizer(texts)
        return ids, [_token_count(self.tokenizer, t, self.context_length) for t in texts]

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _vit(self) -> VisionTransformer | None:
        """open_clip's own ViT image tower with a class or average pool (no attention pool), else None."""
        v = getattr(self.model, "visual", None)
        ok = isinstance(v, VisionTransformer) and v.attn_pool is None and v.pool_type in ("tok", "avg")
        return v if ok else None

    def image_token_count(self) -> int | None:
        v = self._vit()
        return None if v is None else int(v.grid_size[0] * v.grid_size[1]) + 1

    def _encode_pixels_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """open_clip ``VisionTransformer.forward`` keeping the patch tokens: the pooled token as open_clip pools
        it, the patches through ``ln_post`` (also when the tower norms after pooling) and ``proj``."""
        v = self._vit()
        if v is None:
            return super()._encode_pixels_tokens(pixels)
        x = v.transformer(v._embeds(pixels))
        pooled, tokens = v._pool(x)
        if v.final_ln_after_pool:  # _pool normed only the pooled token
            tokens = v.ln_post(tokens)
        out = torch.cat([pooled[:, None], tokens], 1)
        return out @ v.proj if v.proj is not None else out

    def text_tower(self) -> TextTower:
        if self._tower is None:
            raise BackboneError(f"{self.spec}: {self._tower_error}")
        return self._tower

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Captions -> (N, D); a text tower without a per-layer view (HF text) uses the model's encode_text."""
        if self._tower is not None:
            return super().encode_text(texts, normalize)
        f = self.model.encode_text(self.tokenize(texts).to(self.device)).float()
        return nn.functional.normalize(f, dim=-1) if normalize else f


# ---- loaders ------------------------------------------------------------------------------------------
def load_open_clip_checkpoint(
    model: str,
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    spec: str | None = None,
    expect_quick_gelu: bool | None = None,
    preprocess: Mapping[str, Any] | None = None,
) -> OpenClipBackbone:
    """Load a checkpoint file into an open_clip architecture, strictly.

    model: a built-in open_clip name or a JSON model config path. path: .safetensors, .pt/.pth/.bin or an
    OpenAI TorchScript archive. expect_quick_gelu: what the weights' source says about the activation
    (a pretrained tag's record); the file's own evidence is always checked. preprocess: overrides of
    mean/std/interpolation/resize_mode. Raises :class:`BackboneError` on any mismatch.
    """
    dev, dtype = resolve_target(device, precision)
    arch = resolve_architecture(model)
    ckpt = read_checkpoint(path)
    source = str(ckpt.path)
    check_activation(arch, ckpt.quick_gelu, source)
    check_activation(arch, expect_quick_gelu, spec or source)
    check_recorded_config(arch, ckpt)
    net = build_open_clip_model(arch.config, arch.name)
    state = _adapt_state(net, ckpt.state)
    load_strict(net, state, source)
    fingerprint = weights_fingerprint(state)
    del state, ckpt
    pp: dict[str, Any] = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    if arch.builtin:
        pp.update(_tag_preprocess_defaults(arch.name))
    pp.update({k: v for k, v in (preprocess or {}).items() if k in PREPROCESS_KEYS})
    pp.update({k: v for k, v in arch.preprocess.items() if k in PREPROCESS_KEYS})
    pp["size"] = getattr(net.visual, "image_size", pp.get("size", 224))  # the tower's input size decides
    open_clip.set_model_preprocess_cfg(net, pp)
    freeze(net, dev, dtype)
    tokenizer = _make_tokenizer(arch, int(net.context_length))
    return OpenClipBackbone(
        net, tokenizer=tokenizer, spec=spec or f"open_clip:{model}:{path}", fingerprint=fingerprint,
        config=arch.config, device=dev, dtype=dtype,
    )


def load_open_clip_pretrained(
    model: str, tag: str, *, device: str | torch.device = "cpu", precision: str = "fp32"
) -> OpenClipBackbone:
    """Fetch a pretrained tag through open_clip's download cache, then load it with
    :func:`load_open_clip_checkpoint` (strict, with the tag's QuickGELU record and preprocessing)."""
    resolve_target(device, precision)
    arch = resolve_architecture(model)
    if not arch.builtin:
        raise BackboneError(f"pretrained tags need a built-in architecture name, not {model!r}")
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise BackboneError(f"unknown pretrained tag {tag!r} for {model} (known: {known})")
    spec = f"open_clip:{model}/{tag}"
    check_activation(arch, bool(cfg.get("quick_gelu", False)), spec)  # before any download
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as e:  # noqa: BLE001 - network, cache and hub errors alike
        path = ""
        reason = type(e).__name__
    else:
        reason = "no file"
    if not path:
        raise BackboneError(
            f"could not fetch the weights for {spec} ({reason}; offline?); "
            f"pass a local file as open_clip:{model}:<path>"
        )
    return load_open_clip_checkpoint(
        model, path, device=device, precision=precision, spec=spec,
        expect_quick_gelu=bool(cfg.get("quick_gelu", False)), preprocess=cfg,
    )


def load_open_clip_spec(rest: str, *, device: str | torch.device = "cpu", precision: str = "fp32") -> OpenClipBackbone:
    """The part of a spec after ``open_clip:``: ``<model>:<checkpoint path>`` (split at the first ':') or
    ``<model>/<pretrained tag>`` (split at the last '/')."""
    model, colon, path = rest.partition(":")
    if colon:
        if not model or not path:
            raise BackboneError(f"bad spec 'open_clip:{rest}': use open_clip:<model>:<checkpoint path>")
        return load_open_clip_checkpoint(
            model, path, device=device, precision=precision, spec=f"open_clip:{rest}"
        )
    if rest.endswith(".json"):
        raise BackboneError(f"bad spec 'open_clip:{rest}': a JSON config needs a checkpoint: open_clip:{rest}:<path>")
    model, slash, tag = rest.rpartition("/")
    if not slash or not model or not tag:
        raise BackboneError(
            f"bad spec 'open_clip:{rest}': use open_clip:<model>/<pretrained tag> or open_clip:<model>:<path>"
        )
    return load_open_clip_pretrained(model, tag, device=device, precision=precision)
