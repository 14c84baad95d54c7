"""Backbone loaders: open_clip (config file or built-in name + checkpoint), Hugging Face folders, embedded.

Tiny random models only (32x32 images, text width 32, 2 layers), so the whole file runs in seconds; the
one ViT-B-32 round trip is marked slow.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sayno.backbones import (
    REGISTRY,
    Backbone,
    BackboneError,
    TruncationWarning,
    build_open_clip_model,
    load,
    read_checkpoint,
    save_open_clip_checkpoint,
    weights_fingerprint,
    write_clip_tokenizer_files,
)
from sayno.backbones import registry as registry_module

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TEXTS = ["a dog", "a photo of not a cat on a red mat", "no"]
LONG = "a photo of " + " and ".join(["a very small red dog"] * 10)


def tiny_model(cfg: dict = TINY, seed: int = 0, logit_scale: float = 20.0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_open_clip_model(cfg).eval()
    model.logit_scale.data.fill_(math.log(logit_scale))
    return model


def ref_text(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(tokens)


def ref_image(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_image(pixels)


def pooled(out: object) -> torch.Tensor:
    """transformers 5.x get_*_features return a BaseModelOutputWithPooling; 4.x a tensor."""
    return out if torch.is_tensor(out) else out.pooler_output  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def oc(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny open_clip model, its JSON config (non-default mean/std) and the checkpoint formats."""
    d = tmp_path_factory.mktemp("open_clip")
    cfg = {**TINY, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    model = tiny_model()
    config = d / "tiny.json"
    config.write_text(json.dumps(cfg))
    st = save_open_clip_checkpoint(model, cfg, d / "tiny.safetensors", dtype=None)
    pt = d / "tiny.pt"  # as open_clip_train writes it: wrapped, DDP prefix
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, pt)
    qcfg = {**cfg, "quick_gelu": True}
    qconfig = d / "tiny-quickgelu.json"
    qconfig.write_text(json.dumps(qcfg))
    return SimpleNamespace(dir=d, cfg=cfg, model=model, config=config, st=st, pt=pt, qcfg=qcfg, qconfig=qconfig)


@pytest.fixture(scope="module")
def oc_backbone(oc: SimpleNamespace) -> Backbone:
    return load(f"open_clip:{oc.config}:{oc.st}")


def _hf_folder(root: Path, eos_token_id: int, seed: int = 0) -> tuple[Path, nn.Module]:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                     "max_position_embeddings": 16, "eos_token_id": eos_token_id},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPModel(cfg).eval()
    folder = root / f"hf-eos{eos_token_id}"
    model.save_pretrained(folder)
    write_clip_tokenizer_files(folder, context_length=16)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
        image_std=[0.2, 0.25, 0.3],
    ).save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    folder, model = _hf_folder(root, 49407)
    legacy, legacy_model = _hf_folder(root, 2)  # configs from before transformers PR #24773
    return SimpleNamespace(root=root, folder=folder, model=model, legacy=legacy, legacy_model=legacy_model)


def _assert_frozen(bb: Backbone) -> None:
    model = bb.model  # type: ignore[attr-defined]
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert not bb.text_tower().training


# ---- registry -----------------------------------------------------------------------------------------
def test_every_registered_scheme_resolves() -> None:
    assert set(REGISTRY.schemes()) >= {"open_clip", "hf", "embedded"}
    for scheme in REGISTRY:
        found, _ = REGISTRY.resolve(scheme.example)
        assert found is scheme and callable(found.loader)
        assert REGISTRY.resolve(f"{scheme.name}:x")[0] is scheme


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ValueError):
        REGISTRY.register("hf", lambda rest, **kw: None, example="hf:x")  # type: ignore[arg-type, return-value]


# ---- open_clip: config file + checkpoint --------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["st", "pt"])
def test_open_clip_round_trip(oc: SimpleNamespace, fmt: str) -> None:
    path = getattr(oc, fmt)
    bb = load(f"open_clip:{oc.config}:{path}")
    assert bb.spec == f"open_clip:{oc.config}:{path}"
    tokens = bb.tokenize(TEXTS)
    assert tokens.shape == (3, 16)
    torch.testing.assert_close(bb.encode_text(TEXTS, normalize=False), ref_text(oc.model, tokens), atol=1e-5, rtol=0)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bb.encode_image(pixels, normalize=False), ref_image(oc.model, pixels), atol=1e-5, rtol=0)
    f = bb.encode_text(TEXTS)
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(3))
    assert bb.fingerprint == weights_fingerprint(oc.model.state_dict())
    assert bb.logit_scale == pytest.approx(20.0, rel=1e-5)
    assert (bb.embed_dim, bb.context_length, bb.num_text_layers, bb.image_size) == (32, 16, 2, 32)
    assert bb.image_mean == (0.5, 0.5, 0.5) and bb.image_std == (0.25, 0.25, 0.25)
    _assert_frozen(bb)


def test_preprocess_uses_model_stats(oc_backbone: Backbone) -> None:
    from PIL import Image

    x = oc_backbone.preprocess(Image.new("RGB", (64, 48), (128, 128, 128)))
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25))
    assert oc_backbone.encode_image([Image.new("RGB", (40, 70))]).shape == (1, 32)


def test_text_layers_and_tower(oc: SimpleNamespace, oc_backbone: Backbone) -> None:
    bb = oc_backbone
    layers = bb.encode_text_layers(TEXTS, normalize=False)
    assert layers.shape == (3, 2, 32)
    torch.testing.assert_close(layers[:, -1], bb.encode_text(TEXTS, normalize=False), atol=1e-5, rtol=0)
    tower = bb.text_tower()
    tokens = bb.tokenize(TEXTS)
    assert tower.embed(tokens).shape == (3, 16, tower.width)
    with torch.no_grad():
        base = tower(tokens)
        torch.testing.assert_close(tower(tokens, extra=torch.zeros(16, tower.width)), base)
        shifted = tower(tokens, extra=0.1 * torch.randn(3, 16, tower.width))
    assert not torch.allclose(shifted, base)
    # a deep copy is a trainable text-only tower: no image weights, gradients reach the prompts
    trainable = copy.deepcopy(tower)
    assert not any(n.startswith("visual") for n, _ in trainable.named_parameters())
    for p in trainable.parameters():
        p.requires_grad_(True)
    extra = torch.zeros(16, tower.width, requires_grad=True)
    trainable(tokens, extra=extra).sum().backward()
    assert extra.grad is not None and extra.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in bb.model.parameters())  # type: ignore[attr-defined]


def _full_length(tower: nn.Module, tokens: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """The tower's output computed over the whole context (no trimming of trailing padding)."""
    untrimmed = copy.copy(tower)
    untrimmed.trimmed = lambda t, e=None: (t, e)  # type: ignore[method-assign]
    with torch.no_grad():
        return untrimmed(tokens, extra=extra)


def test_text_tower_skips_trailing_padding_exactly(oc: SimpleNamespace, oc_backbone: Backbone) -> None:
    """Short texts are encoded over their own length, with the same result as over the whole context."""
    tower = oc_backbone.text_tower()
    tokens = oc_backbone.tokenize(["a dog", "no", "a red cat!"])
    short, _ = tower.trimmed(tokens)
    assert short.shape == (3, 6)  # "a red cat !" + start and end tokens
    assert torch.equal(short, tokens[:, :6]) and (tokens[:, 6:] == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(tower(tokens), ref_text(oc.model, tokens), atol=1e-5, rtol=0)
        for extra in (0.1 * torch.randn(16, tower.width), 0.1 * torch.randn(3, 16, tower.width)):
            torch.testing.assert_close(tower(tokens, extra=extra), _full_length(tower, tokens, extra),
                                       atol=1e-5, rtol=0)
    with pytest.warns(TruncationWarning):
        full = oc_backbone.tokenize([LONG, "a dog"])  # nothing to trim when one text fills the context
    assert tower.trimmed(full)[0].shape == full.shape == (2, 16)


def test_tokenize_matches_open_clip_and_counts_untruncated(oc_backbone: Backbone) -> None:
    """One BPE pass per text gives open_clip's own ids (truncated ones included) and the untruncated lengths."""
    texts = [*TEXTS, LONG, "", "emoji \U0001f436 and ümlaut!"]
    ids, lengths = oc_backbone._tokenize(texts)  # type: ignore[attr-defined]
    assert torch.equal(ids, oc_backbone.tokenizer(texts))  # type: ignore[attr-defined]
    tok = oc_backbone.tokenizer  # type: ignore[attr-defined]
    assert lengths == [len(tok.encode(t)) + 2 for t in texts]
    assert lengths[3] > 16 and lengths[4] == 2


def test_custom_text_clip_tower(tmp_path: Path) -> None:
    cfg = {**TINY, "custom_text": True}
    model = tiny_model(cfg)
    assert hasattr(model, "text")
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    st = save_open_clip_checkpoint(model, cfg, tmp_path / "c.safetensors", dtype=None)
    bb = load(f"open_clip:{tmp_path / 'c.json'}:{st}")
    tokens = bb.tokenize(TEXTS)
    torch.testing.assert_close(bb.encode_text(TEXTS, normalize=False), ref_text(model, tokens), atol=1e-5, rtol=0)
    layers = bb.encode_text_layers(TEXTS, normalize=False)
    torch.testing.assert_close(layers[:, -1], ref_text(model, tokens), atol=1e-5, rtol=0)


def test_text_tower_rejects_unsupported_modules() -> None:
    from sayno.backbones import OpenClipTextTower

    with pytest.raises(BackboneError, match="not supported for per-layer features"):
        OpenClipTextTower(nn.Linear(2, 2))


def test_truncation_warning(oc_backbone: Backbone) -> None:
    with pytest.warns(TruncationWarning):
        tokens = oc_backbone.tokenize([LONG, "a dog"])
    assert tokens.shape == (2, 16) and int(tokens[0, -1]) == 49407  # still ends with end-of-text


def test_fingerprint_stable_and_distinct(oc: SimpleNamespace, tmp_path: Path) -> None:
    a = load(f"open_clip:{oc.config}:{oc.st}")
    b = load(f"open_clip:{oc.config}:{oc.pt}")
    assert a.fingerprint == b.fingerprint  # same weights, different file formats
    # saved again from the loaded backbone: same fingerprint
    again = save_open_clip_checkpoint(a.model, oc.cfg, tmp_path / "again.safetensors", dtype=None)  # type: ignore[attr-defined]
    assert load(f"open_clip:{oc.config}:{again}").fingerprint == a.fingerprint
    other = save_open_clip_checkpoint(tiny_model(seed=1), oc.cfg, tmp_path / "other.safetensors", dtype=None)
    assert load(f"open_clip:{oc.config}:{other}").fingerprint != a.fingerprint


def test_precision_and_device(oc: SimpleNamespace) -> None:
    bf = load(f"open_clip:{oc.config}:{oc.st}", device=torch.device("cpu"), precision="bf16")
    assert bf.dtype == torch.bfloat16 and bf.device == torch.device("cpu")
    assert all(p.dtype == torch.bfloat16 for p in bf.model.parameters())  # type: ignore[attr-defined]
    f = bf.encode_text(TEXTS)
    assert f.dtype == torch.float32 and f.device.type == "cpu" and torch.isfinite(f).all()
    assert bf.encode_image(torch.randn(1, 3, 32, 32)).shape == (1, 32)
    assert bf.encode_text_layers(TEXTS).shape == (3, 2, 32)
    assert bf.fingerprint == weights_fingerprint(oc.model.state_dict())  # computed before the cast
    fp = load(f"open_clip:{oc.config}:{oc.st}", precision="fp16")
    assert fp.dtype == torch.float16
    try:
        out = fp.encode_text(TEXTS)
    except RuntimeError as e:  # some CPU builds lack fp16 kernels
        pytest.skip(f"fp16 on CPU unsupported here: {e}")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ---- strict loading -----------------------------------------------------------------------------------
def _plain_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda s: s.pop("text_projection"), r"1 missing key\(s\) \(e\.g\. text_projection\)"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), r"1 unexpected key\(s\) \(e\.g\. extra\.weight\)"),
        (lambda s: s.__setitem__("text_projection", torch.zeros(32, 16)), r"1 shape mismatch\(es\).*text_projection"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_strict_loading(oc: SimpleNamespace, tmp_path: Path, edit, pattern: str) -> None:
    state = dict(oc.model.state_dict())
    edit(state)
    path = _plain_safetensors(state, tmp_path / "bad.safetensors")
    with pytest.raises(BackboneError, match=pattern) as err:
        load(f"open_clip:{oc.config}:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _openai_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(16), vocab_size=torch.tensor(49408))
    return state


def _torchscript_archive(model: nn.Module, path: Path) -> Path:
    """An OpenAI-style TorchScript archive: the model's modules plus the three scalar buffers."""

    class OpenAIStyle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, child in model.named_children():
                setattr(self, name, child)
            for name, p in model.named_parameters(recurse=False):
                setattr(self, name, p)
            for name, v in (("input_resolution", 32), ("context_length", 16), ("vocab_size", 49408)):
                self.register_buffer(name, torch.tensor(v))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.logit_scale

    torch.jit.save(torch.jit.trace(OpenAIStyle(), torch.ones(2)), str(path))
    return path


def test_quickgelu_mixup_openai_state_dict(oc: SimpleNamespace, tmp_path: Path) -> None:
    quick = tiny_model(oc.qcfg)
    pt = tmp_path / "openai.pt"
    torch.save(_openai_state(quick), pt)
    assert read_checkpoint(pt).openai
    with pytest.raises(BackboneError, match=r"QuickGELU.*quick_gelu\": true"):
        load(f"open_clip:{oc.config}:{pt}")
    with pytest.raises(BackboneError, match=r"use the 'ViT-B-32-quickgelu' architecture"):
        load(f"open_clip:ViT-B-32:{pt}")  # fails on the file, before building a big model
    bb = load(f"open_clip:{oc.qconfig}:{pt}")  # the right architecture loads, scalars dropped
    tokens = bb.tokenize(TEXTS)
    torch.testing.assert_close(bb.encode_text(TEXTS, normalize=False), ref_text(quick, tokens), atol=1e-5, rtol=0)
    assert bb.fingerprint == weights_fingerprint(quick.state_dict())


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_quickgelu_mixup_torchscript(oc: SimpleNamespace, tmp_path: Path) -> None:
    quick = tiny_model(oc.qcfg)
    archive = _torchscript_archive(quick, tmp_path / "ViT-tiny.pt")
    ckpt = read_checkpoint(archive)
    assert ckpt.openai and "input_resolution" not in ckpt.state
    with pytest.raises(BackboneError, match="QuickGELU"):
        load(f"open_clip:{oc.config}:{archive}")
    bb = load(f"open_clip:{oc.qconfig}:{archive}")
    torch.testing.assert_close(
        bb.encode_text(TEXTS, normalize=False), ref_text(quick, bb.tokenize(TEXTS)), atol=1e-5, rtol=0
    )


def test_sayno_metadata_checked(oc: SimpleNamespace, tmp_path: Path) -> None:
    meta = safe_open(str(oc.st), "pt").metadata()
    assert meta["sayno.format"] == "sayno-open-clip" and meta["sayno.version"] == "1"  # the one envelope
    assert meta["sayno.quick_gelu"] == "false"
    assert json.loads(meta["sayno.config"])["embed_dim"] == 32
    with pytest.raises(BackboneError, match="trained with GELU"):
        load(f"open_clip:{oc.qconfig}:{oc.st}")  # the reverse mix-up
    heads = copy.deepcopy(oc.cfg)
    heads["text_cfg"]["heads"] = 4  # same shapes, different model: only the metadata can tell
    (tmp_path / "heads.json").write_text(json.dumps(heads))
    with pytest.raises(BackboneError, match=r"different architecture.*text_cfg\.heads: file 2 vs architecture 4"):
        load(f"open_clip:{tmp_path / 'heads.json'}:{oc.st}")


def test_save_refuses_wrong_quick_gelu_flag(oc: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="quick_gelu"):
        save_open_clip_checkpoint(oc.model, oc.qcfg, tmp_path / "x.safetensors")
    path = save_open_clip_checkpoint(oc.model, oc.cfg, tmp_path / "half.safetensors")  # fp16 by default
    assert read_checkpoint(path).state["text_projection"].dtype == torch.float16


# ---- bad specs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("", "empty backbone spec"),
        ("nope:thing", "unknown backbone spec 'nope:thing'"),
        ("ViT-B-32", "unknown backbone spec"),
        ("open_clip:ViT-B-32", "bad spec"),
        ("open_clip:configs/tiny.json", "a JSON config needs a checkpoint"),
        ("open_clip:NoSuchNet/openai", "unknown open_clip architecture 'NoSuchNet'"),
        ("open_clip:ViT-B-32/no_such_tag", "unknown pretrained tag 'no_such_tag'"),
        ("open_clip:ViT-B-32/openai", "use the 'ViT-B-32-quickgelu' architecture"),
        ("open_clip:ViT-B-32:/no/such/file.safetensors", "checkpoint file not found: /no/such/file.safetensors"),
        ("open_clip:/no/such/config.json:/x.pt", "model config file not found: /no/such/config.json"),
        ("hf:/no/such/folder", "no Hugging Face model folder at /no/such/folder"),
        ("hf:", "bad spec 'hf:'"),
        ("embedded:extra", "takes no arguments"),
    ],
)
def test_bad_specs(spec: str, pattern: str) -> None:
    with pytest.raises(BackboneError, match=pattern) as err:
        load(spec)
    assert "\n" not in str(err.value)


def test_bad_device_and_precision(oc: SimpleNamespace) -> None:
    with pytest.raises(BackboneError, match="unknown precision 'fp8'"):
        load(f"open_clip:{oc.config}:{oc.st}", precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(BackboneError, match="CUDA is not available"):
            load(f"open_clip:{oc.config}:{oc.st}", device="cuda")


def test_unreadable_and_unsupported_files(oc: SimpleNamespace, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(BackboneError, match="cannot read"):
        load(f"open_clip:{oc.config}:{bad}")
    npz = tmp_path / "w.npz"
    npz.write_bytes(b"")
    with pytest.raises(BackboneError, match="unsupported checkpoint format"):
        load(f"open_clip:{oc.config}:{npz}")
    pickled = tmp_path / "obj.pt"
    torch.save({"state_dict": {"a": SimpleNamespace()}}, pickled)  # not loadable with weights_only=True
    with pytest.raises(BackboneError, match="weights_only=True"):
        load(f"open_clip:{oc.config}:{pickled}")


def test_pretrained_tag_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)  # fail fast instead of retrying the network
    with pytest.raises(BackboneError, match=r"could not fetch .*open_clip:ViT-B-32:<path>") as err:
        load("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert "\n" not in str(err.value)


# ---- embedded -----------------------------------------------------------------------------------------
def test_embedded_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry_module, "EMBEDDED_DIR", tmp_path)
    with pytest.raises(BackboneError, match="embedded model's weights are missing"):
        load("embedded")


def test_embedded_loads_when_present() -> None:
    folder = registry_module.EMBEDDED_DIR
    if not (folder / "clip.safetensors").is_file():
        pytest.skip("embedded weights not built yet")
    bb = load("embedded")
    assert bb.spec == "embedded" and len(bb.fingerprint) == 16
    assert bb.encode_text(TEXTS).shape == (3, bb.embed_dim)
    assert bb.encode_text_layers(TEXTS).shape == (3, bb.num_text_layers, bb.embed_dim)
    _assert_frozen(bb)


# ---- Hugging Face -------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["folder", "legacy"])
def test_hf_round_trip(hf: SimpleNamespace, which: str) -> None:
    folder, model = (hf.folder, hf.model) if which == "folder" else (hf.legacy, hf.legacy_model)
    bb = load(f"hf:{folder}")
    assert bb.spec == f"hf:{folder}"
    tokens = bb.tokenize(TEXTS)
    with torch.no_grad():
        ref_t = pooled(model.get_text_features(input_ids=tokens))
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        ref_i = pooled(model.get_image_features(pixel_values=pixels))
    torch.testing.assert_close(bb.encode_text(TEXTS, normalize=False), ref_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(bb.encode_image(pixels, normalize=False), ref_i, atol=1e-5, rtol=0)
    layers = bb.encode_text_layers(TEXTS, normalize=False)
    assert layers.shape == (3, 2, 32)
    torch.testing.assert_close(layers[:, -1], ref_t, atol=1e-5, rtol=0)
    assert bb.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert bb.fingerprint == weights_fingerprint(model.state_dict())
    assert bb.image_mean == (0.5, 0.4, 0.3) and bb.image_std == (0.2, 0.25, 0.3)
    assert (bb.embed_dim, bb.context_length, bb.num_text_layers, bb.image_size) == (32, 16, 2, 32)
    _assert_frozen(bb)


def test_hf_tokenizer_matches_open_clip(hf: SimpleNamespace, oc_backbone: Backbone) -> None:
    """The tokenizer files written offline give OpenAI CLIP's ids (HF pads with end-of-text, open_clip with 0)."""
    bb = load(f"hf:{hf.folder}")
    a, b = bb.tokenize(TEXTS), oc_backbone.tokenize(TEXTS)
    for row_a, row_b in zip(a, b):
        n = int((row_b != 0).sum())
        assert torch.equal(row_a[:n], row_b[:n]) and (row_a[n:] == 49407).all()
    with pytest.warns(TruncationWarning):
        long = bb.tokenize([LONG])
    assert long.shape == (1, 16) and int(long[0, -1]) == 49407


def test_hf_precision(hf: SimpleNamespace) -> None:
    bb = load(f"hf:{hf.folder}", precision="bf16", device="cpu")
    assert bb.dtype == torch.bfloat16 and bb.device == torch.device("cpu")
    f = bb.encode_text(TEXTS)
    assert f.dtype == torch.float32 and torch.isfinite(f).all()
    assert bb.encode_image(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def _hf_copy_with(hf: SimpleNamespace, tmp_path: Path, edit) -> Path:
    from safetensors.torch import load_file

    folder = tmp_path / "edited"
    shutil.copytree(hf.folder, folder)
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda s: s.pop("text_projection.weight"), r"1 missing key\(s\) \(e\.g\. text_projection\.weight\)"),
        (lambda s: s.__setitem__("foo.bar", torch.zeros(2)), r"1 unexpected key\(s\) \(e\.g\. foo\.bar\)"),
        (lambda s: s.__setitem__("text_projection.weight", torch.zeros(16, 32)), r"1 shape mismatch"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_hf_strict(hf: SimpleNamespace, tmp_path: Path, edit, pattern: str) -> None:
    folder = _hf_copy_with(hf, tmp_path, edit)
    with pytest.raises(BackboneError, match=pattern) as err:
        load(f"hf:{folder}")
    assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_hf_missing_pieces(hf: SimpleNamespace, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackboneError, match="has no config.json"):
        load(f"hf:{empty}")
    no_tok = tmp_path / "no_tok"
    shutil.copytree(hf.folder, no_tok)
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (no_tok / name).unlink(missing_ok=True)
    with pytest.raises(BackboneError, match="write_clip_tokenizer_files"):
        load(f"hf:{no_tok}")
    no_pre = tmp_path / "no_pre"
    shutil.copytree(hf.folder, no_pre)
    (no_pre / "preprocessor_config.json").unlink()
    bb = load(f"hf:{no_pre}")
    assert bb.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


# ---- a real built-in architecture ---------------------------------------------------------------------
@pytest.mark.slow
def test_builtin_vit_b_32_round_trip(tmp_path: Path) -> None:
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-32")
    model = tiny_model(cfg, seed=0)
    path = save_open_clip_checkpoint(model, cfg, tmp_path / "vit-b-32.safetensors")  # fp16 on disk
    for p in model.parameters():  # what the fp16 file holds
        p.data = p.data.half().float()
    bb = load(f"open_clip:ViT-B-32:{path}")
    assert (bb.embed_dim, bb.context_length, bb.num_text_layers, bb.image_size) == (512, 77, 12, 224)
    assert bb.fingerprint == weights_fingerprint(model.state_dict())
    tokens = bb.tokenize(TEXTS[:1])
    torch.testing.assert_close(bb.encode_text(TEXTS[:1], normalize=False), ref_text(model, tokens), atol=1e-4, rtol=0)
    pixels = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(bb.encode_image(pixels, normalize=False), ref_image(model, pixels), atol=1e-4, rtol=0)
