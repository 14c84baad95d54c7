"""Hugging Face ``transformers`` CLIP folders as :class:`~sayno.backbones.base.Backbone`.

A folder written by ``CLIPModel.save_pretrained`` (config.json + weights), with the CLIP tokenizer files
(vocab.json + merges.txt, or tokenizer.json) and optionally ``preprocessor_config.json`` (image mean/std).
Nothing is downloaded (``local_files_only=True``); missing, unexpected or mismatched weights are errors.
:func:`write_clip_tokenizer_files` writes OpenAI's CLIP tokenizer files offline from open_clip's BPE data.

Shapes: N = batch, T = context length, W = text width, L = text layers, D = joint embedding size.
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from sayno.backbones.base import Backbone, BackboneError, TextTower, weights_fingerprint
from sayno.backbones.checkpoint import freeze, resolve_target
from sayno.backbones.open_clip_backbone import OPENAI_MEAN, OPENAI_STD, image_transform

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
_IGNORED_KEY_SUFFIXES: tuple[str, ...] = ("position_ids",)  # buffers that some versions store and some don't


def write_clip_tokenizer_files(folder: str | Path, context_length: int = 77) -> Path:
    """Write OpenAI's CLIP tokenizer (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) into ``folder``, built offline from open_clip's bundled BPE merges the way
    OpenAI's CLIP builds its vocabulary: 256 byte tokens, their ``</w>`` forms, the merges, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 entries). Returns the folder."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [BOS, EOS]
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, **special}, indent=1)
    )
    return out


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars for the duration (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


class HFTextTower(TextTower):
    """Per-layer view of a ``transformers`` ``CLIPModel`` text tower (references its modules).

    Mirrors ``CLIPTextModel.forward``: token + position embeddings, the encoder layers under a causal
    mask, the final layer norm, pooling at the end-of-text token (``argmax`` of the ids for configs with
    the legacy ``eos_token_id == 2``, else the first ``eos_token_id``), then ``text_projection``.
    forward(tokens (N, T), extra (T, W) | (N, T, W) | None, all_layers) -> (N, D) or (N, L, D).
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        text = clip_model.text_model
        cfg = clip_model.config.text_config
        self.embeddings = text.embeddings
        self.layers = text.encoder.layers
        self.final_layer_norm = text.final_layer_norm
        self.text_projection = clip_model.text_projection
        self.eos_token_id = int(getattr(text, "eos_token_id", cfg.eos_token_id))
        self.width = int(cfg.hidden_size)
        self.context_length = int(cfg.max_position_embeddings)
        self.num_layers = len(self.layers)
        # transformers 4.x layers take (hidden, attention_mask, causal_attention_mask) and return a tuple
        self._legacy = "causal_attention_mask" in inspect.signature(self.layers[0].forward).parameters

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T) ids -> (N, T, W) token + position embeddings."""
        return self.embeddings(input_ids=tokens)

    def _eos_index(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.to(torch.int)
        if self.eos_token_id == 2:  # legacy configs (before transformers PR #24773): highest id is the eos
            return ids.argmax(dim=-1)
        return (ids == self.eos_token_id).int().argmax(dim=-1)

    def forward(
        self, tokens: torch.Tensor, extra: torch.Tensor | None = None, all_layers: bool = False
    ) -> torch.Tensor:
        x = self.embed(tokens)
        if extra is not None:
            x = x + extra.to(x.dtype)
        t = tokens.shape[1]
        causal = torch.full((t, t), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device).triu(1)[None, None]
        states = []
        for layer in self.layers:
            out = layer(x, None, causal) if self._legacy else layer(x, causal)
            x = out[0] if isinstance(out, tuple) else out
            if all_layers:
                states.append(x)
        if not all_layers:
            states.append(x)
        rows = torch.arange(tokens.shape[0], device=x.device)
        idx = self._eos_index(tokens).to(x.device)
        pooled = torch.stack([h[rows, idx] for h in states], 1)  # (N, L or 1, W); the norm is per token
        out = self.text_projection(self.final_layer_norm(pooled))
        return out if all_layers else out[:, 0]


class HFBackbone(Backbone):
    """A frozen ``transformers`` ``CLIPModel``. Build it with :func:`load_hf_folder` or
    ``sayno.backbones.load("hf:<folder>")``. ``model`` is the CLIPModel (eval mode, no gradients)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        tokenizer: Any,
        spec: str,
        fingerprint: str,
        device: torch.device,
        dtype: torch.dtype,
        image_mean: tuple[float, float, float] = OPENAI_MEAN,
        image_std: tuple[float, float, float] = OPENAI_STD,
    ):
        cfg = model.config
        self.model, self.tokenizer = model, tokenizer
        self.spec, self.fingerprint, self.device, self.dtype = spec, fingerprint, device, dtype
        self.embed_dim = int(cfg.projection_dim)
        self.context_length = int(cfg.text_config.max_position_embeddings)
        self.num_text_layers = int(cfg.text_config.num_hidden_layers)
        self.image_size = int(cfg.vision_config.image_size)
        self.image_mean = tuple(float(v) for v in image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(v) for v in image_std)  # type: ignore[assignment]
        self._transform = image_transform(self.image_size, self.image_mean, self.image_std)
        self._tower = HFTextTower(model).eval()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._transform(image)

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        ids = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )["input_ids"]
        full = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return ids, [len(x) for x in full]

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return self.model.visual_projection(pooled)

    def image_token_count(self) -> int | None:
        cfg = self.model.config.vision_config
        return (int(cfg.image_size) // int(cfg.patch_size)) ** 2 + 1

    def _encode_pixels_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Every token of the last vision layer through ``post_layernorm`` and ``visual_projection`` (row 0,
        the class token, is ``pooler_output`` projected: the image feature)."""
        vm = self.model.vision_model
        hidden = vm(pixel_values=pixels).last_hidden_state  # (N, 1 + P, W), before the final norm
        return self.model.visual_projection(vm.post_layernorm(hidden))

    def text_tower(self) -> TextTower:
        return self._tower


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackboneError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise BackboneError(f"{path}: expected a JSON object")
    return data


def _image_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std from ``preprocessor_config.json``; OpenAI's when it is absent."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return OPENAI_MEAN, OPENAI_STD
    cfg = _read_json(path)
    mean, std = cfg.get("image_mean", OPENAI_MEAN), cfg.get("image_std", OPENAI_STD)
    if isinstance(mean, (int, float)):
        mean = (mean,) * 3
    if isinstance(std, (int, float)):
        std = (std,) * 3
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _load_tokenizer(folder: Path) -> Any:
    import transformers

    cls = getattr(transformers, "CLIPTokenizerFast", None) or transformers.CLIPTokenizer
    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) and not (
        folder / "tokenizer.json"
    ).is_file():
        raise BackboneError(
            f"{folder} has no CLIP tokenizer files (vocab.json + merges.txt or tokenizer.json); "
            "write them with sayno.backbones.write_clip_tokenizer_files(folder)"
        )
    try:
        with _quiet_transformers():
            return cls.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(f"cannot load the tokenizer in {folder}: {msg}") from None


def load_hf_folder(
    path: str | Path, *, device: str | torch.device = "cpu", precision: str = "fp32", spec: str | None = None
) -> HFBackbone:
    """Load a local Hugging Face CLIP folder strictly (no download); see the module docstring."""
    dev, dtype = resolve_target(device, precision)
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BackboneError(f"no Hugging Face model folder at {folder}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise BackboneError(f"{folder} has no config.json: not a Hugging Face model folder")
    model_type = _read_json(config_path).get("model_type")
    if model_type != "clip":
        raise BackboneError(f"{folder} holds a {model_type!r} model, not a CLIP ('clip') model")
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise BackboneError(f"{folder} has no weights file ({', '.join(WEIGHT_FILES)})")
    try:
        import transformers
    except ImportError:
        raise BackboneError("hf: specs need transformers (pip install 'sayno[hf]')") from None
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        with _quiet_transformers():
            model, info = transformers.CLIPModel.from_pretrained(
                str(folder), local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True,
                **{dtype_kw: torch.float32},
            )
    except Exception as e:  # noqa: BLE001 - transformers raises many types for bad folders
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackboneError(f"cannot load {folder}: {msg}") from None

    def keep(keys: Any) -> list[str]:
        return sorted(k for k in keys if not k.endswith(_IGNORED_KEY_SUFFIXES))

    missing, unexpected = keep(info.get("missing_keys", ())), keep(info.get("unexpected_keys", ()))
    mismatched = sorted(info.get("mismatched_keys", ()), key=lambda m: m[0])
    errors = list(info.get("error_msgs", ()))
    if missing or unexpected or mismatched or errors:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            ex = "; ".join(f"{m[0]}: file {tuple(m[1])} vs model {tuple(m[2])}" for m in mismatched[:3])
            parts.append(f"{len(mismatched)} shape mismatch(es) (e.g. {ex})")
        if errors:
            parts.append(f"{len(errors)} load error(s) (e.g. {str(errors[0]).splitlines()[0]})")
        raise BackboneError(f"{weights} does not fit its config: " + ", ".join(parts))
    fingerprint = weights_fingerprint(model.state_dict())
    tokenizer = _load_tokenizer(folder)
    mean, std = _image_stats(folder)
    freeze(model, dev, dtype)
    return HFBackbone(
        model, tokenizer=tokenizer, spec=spec or f"hf:{path}", fingerprint=fingerprint, device=dev, dtype=dtype,
        image_mean=mean, image_std=std,  # type: ignore[arg-type]
    )
