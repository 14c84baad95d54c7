"""Train sayno's embedded CLIP from scratch on the emoji world (affirmative captions only).

    python scripts/train_embedded.py --steps 1500 --batch 256 --out sayno/weights/embedded

``--predicates P`` (world 4, issue 25) makes a share P of a batch's draws predicate scenes (a person doing one of
the activities, an object upside down or upright, one object above another: ``sayno.world.predicates``), each with
its hard negative beside it in the batch and an affirmative caption of what is true of each; with P = 0 the
stream is the object-only one of the earlier runs; ``--predicate-kinds activity`` draws only the kinds named (the
shipped backbone's fine-tune: "upside down" and "above / below" are not learned in the budget, docs/RESULTS.md).
``--init DIR --styles openmoji,noto`` continues training from a finished model on scenes drawn in several art
styles (each scene in one style, chosen at random): the "bistyle" backbone of the cross-style experiment in
docs/RESULTS.md, which is not shipped. ``--augment S`` adds photometric jitter; ``--mix S`` draws each object of a
scene in its own style from ``--styles`` and mirrors, rotates, squashes and hue-shifts each glyph (``render_mixed``).
``--first-style-steps N`` draws the first N steps' scenes in the first style only (a curriculum for from-scratch
multi-style runs: docs/RESULTS.md, "A three-style embedded CLIP"). ``--patch-dropout P --unmasked-steps N`` trains
FLIP-style (open_clip's ``PatchDropout`` drops a fraction P of each image's patches, the last N steps see them all),
``--compile`` compiles the image tower and ``--flip`` mirrors half of the scenes: about 1.65x the steps in the same
time on 2 cores. ``--render-worker`` renders the next batches in a worker process (the same stream, a few percent
faster on 2 cores). Three options measured in pilots and not used by the shipped run: ``--randconv P`` (a random
convolution per image, RandConv), ``--concept-loss W`` (each scene also against every bare concept name) and
``--grayscale P`` (a share of the images turned grey); ``--vary S`` (each glyph drawn a little differently,
``vary_glyph``) likewise; ``--palette P`` (a share of the glyphs recoloured at random, ``render_recoloured``) is
measured only in ``scripts/style_proxy.py`` so far. A style that cannot draw every concept (e.g.
``folder:`` with an older emoji set) may be given: scenes showing a concept it lacks are drawn in the first style.

An open_clip ``CLIP`` built from ``config.json`` (a small ViT for 64x64 scenes and a small text transformer
with open_clip's BPE tokenizer) is trained with the standard symmetric InfoNCE loss on scenes rendered on the
fly from the ``pretrain`` split (style ``openmoji``, pretraining concepts only). No caption contains a
negation word: like web CLIP, the model never sees "no". Writes ``clip.safetensors`` (fp16) and
``train_log.json`` next to the config.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image, ImageFilter, ImageOps

from sayno.backbones.checkpoint import read_checkpoint, save_open_clip_checkpoint
from sayno.backbones.open_clip_backbone import OpenClipTextTower
from sayno.world import get_style, pretrain_concepts, render_scene, sample_pretrain, split_rng
from sayno.world.build import class_dir  # noqa: F401  (kept for readers of this script)
from sayno.world.predicates import KINDS as PREDICATE_KINDS
from sayno.world.predicates import sample_predicate_pretrain
from sayno.world.scenes import _GLYPHS, Scene, _background, make_scene
from sayno.world.styles import drawable_concepts

CONFIG = {
    "embed_dim": 128,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
    "preprocess_cfg": {"size": 64, "mean": [0.48145466, 0.4578275, 0.40821073],
                       "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
                       "resize_mode": "shortest"},
}


def to_pixels(images: list, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images])).permute(0, 3, 1, 2)
    return (x.float() / 255.0 - mean) / std


_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@torch.no_grad()
def augment(pixels01: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Photometric jitter of a (B, 3, H, W) batch in [0, 1] -> same shape, in [0, 1].

    Brightness, contrast and saturation jitter, 10% grayscale, 20% 3x3 blur, each drawn per image from ``gen``.
    It keeps shapes and hues (the world's concepts are told apart by them) and makes the image tower rely less
    on one art style's exact palette and line work.
    """
    if strength <= 0:
        return pixels01
    b = pixels01.shape[0]

    def jitter(amount: float) -> torch.Tensor:
        return 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * amount * strength

    x = pixels01
    gray = (x * _LUMA).sum(1, keepdim=True)
    x = gray + (x - gray) * jitter(0.4)                                   # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * jitter(0.3) + mean                                   # contrast
    x = x * jitter(0.25)                                                  # brightness
    x = grayscale(x, gen, 0.1 * strength)
    blur = (torch.rand(b, 1, 1, 1, generator=gen) < 0.2 * strength).float()
    x = blur * F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) + (1 - blur) * x
    return x.clamp(0, 1)


@torch.no_grad()
def grayscale(pixels01: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """A (B, 3, H, W) batch in [0, 1] with each image turned to grey (luma in all three channels) with probability
    ``prob`` -> same shape. Without colour the model has to tell concepts apart by shape, which an unseen art style
    shares with the training styles more than it shares their exact colours. Draws nothing at ``prob`` 0."""
    if prob <= 0:
        return pixels01
    to_gray = (torch.rand(pixels01.shape[0], 1, 1, 1, generator=gen) < prob).float()
    return to_gray * (pixels01 * _LUMA).sum(1, keepdim=True).expand_as(pixels01) + (1 - to_gray) * pixels01


@torch.no_grad()
def randconv(pixels01: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """RandConv (Xu et al., ICLR 2021) on a (B, 3, H, W) batch in [0, 1] -> same shape, in [0, 1].

    With probability ``prob`` per image, the image is blended (weight ~ U(0, 1)) with itself passed through a
    random 3->3 convolution (kernel size 1, 3, 5 or 7 drawn per call, Kaiming-normal weights) and rescaled to
    [0, 1]. A random convolution keeps shapes and scrambles colour and local texture: a style the model has
    never seen, at every step.
    """
    if prob <= 0:  # draws nothing from ``gen``, so runs without RandConv keep their random stream
        return pixels01
    b, c, h, w = pixels01.shape
    chosen = torch.rand(b, generator=gen) < prob
    if not chosen.any():
        return pixels01
    k = int((1, 3, 5, 7)[int(torch.randint(4, (1,), generator=gen))])
    x = pixels01[chosen]
    n = x.shape[0]
    weight = torch.randn(n * c, c, k, k, generator=gen) * math.sqrt(2.0 / (c * k * k))
    y = F.conv2d(x.reshape(1, n * c, h, w), weight, padding=k // 2, groups=n).reshape(n, c, h, w)
    lo = y.amin(dim=(1, 2, 3), keepdim=True)
    hi = y.amax(dim=(1, 2, 3), keepdim=True)
    y = (y - lo) / (hi - lo).clamp_min(1e-6)
    alpha = torch.rand(n, 1, 1, 1, generator=gen)
    out = pixels01.clone()
    out[chosen] = alpha * x + (1 - alpha) * y
    return out


def render_mixed(scene: Scene, styles: list, rng: np.random.Generator, strength: float) -> Image.Image:
    """Draw ``scene`` with each object in a style drawn from ``styles`` (not one style per scene) and, with
    ``strength`` > 0, each glyph randomly mirrored, rotated (up to 15 degrees), squashed (up to 20%) and hue
    shifted (up to 0.04 of the colour wheel): (size, size) RGB image.

    Objects of one caption then come in several art styles in the same picture, so the image tower can only
    match the caption by what the styles share (shape, layout of colours), not by one style's line work.
    """
    def glyph(p) -> Image.Image:
        g = _GLYPHS.get(styles[int(rng.integers(len(styles)))], p.concept, p.size, p.turn)  # resized once, cached
        if strength > 0:
            if rng.random() < 0.5:
                g = g.transpose(Image.FLIP_LEFT_RIGHT)
            angle = float(rng.uniform(-15, 15)) * strength
            if abs(angle) > 1:
                g = g.rotate(angle, resample=Image.BILINEAR, expand=True)
            if rng.random() < 0.3 * strength:
                g = _hue_shift(g, float(rng.uniform(-0.04, 0.04)))
            squash = 1 + float(rng.uniform(-0.2, 0.2)) * strength
            scale = p.size / max(g.width * squash, g.height / squash)
            g = g.resize((max(1, round(g.width * squash * scale)), max(1, round(g.height / squash * scale))),
                         Image.BILINEAR)
        return g

    return _draw(scene, glyph)


def _draw(scene: Scene, glyph) -> Image.Image:
    """``scene``'s background with ``glyph(p)`` (an RGBA image, called once per placed object, in order) pasted
    centred in each object's box: (size, size) RGB image."""
    canvas = Image.fromarray(_background(scene))
    for p in scene.placed:
        g = glyph(p)
        canvas.paste(g, (p.x + (p.size - g.width) // 2, p.y + (p.size - g.height) // 2), g)
    return canvas


def vary_glyph(glyph: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """One glyph (RGBA PIL image) drawn a little differently -> RGBA image of about the same size.

    At ``strength`` 1: mirrored half of the time, rotated up to 20 degrees, squashed up to 25%; its colours
    turned (hue up to 0.08 of the wheel), desaturated or saturated (x0.6-1.3) and darkened or lightened
    (x0.75-1.15), each drawn per glyph, so the background and the other objects keep theirs; with probability 0.2
    a dark outline (as openmoji draws), 0.15 a slight blur, 0.15 fewer colour levels (posterised). A new drawing
    of a concept shares its shape and the layout of its colours, not the exact colours and line work of the three
    training drawings, which a model can otherwise memorise.
    """
    if strength <= 0:
        return glyph
    g = glyph
    if rng.random() < 0.5:
        g = g.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.8:
        h, s, v = g.convert("RGB").convert("HSV").split()
        shift = int(float(rng.uniform(-0.08, 0.08)) * strength * 256)
        sat = 1 + float(rng.uniform(-0.4, 0.3)) * strength
        val = 1 + float(rng.uniform(-0.25, 0.15)) * strength
        h = h.point(lambda x: (x + shift) % 256)
        s = s.point(lambda x: max(0, min(255, round(x * sat))))
        v = v.point(lambda x: max(0, min(255, round(x * val))))
        out = Image.merge("HSV", (h, s, v)).convert("RGB")
        out.putalpha(g.getchannel("A"))
        g = out
    if rng.random() < 0.2 * strength:  # a dark outline one pixel wide behind the glyph
        alpha = g.getchannel("A")
        grown = alpha.filter(ImageFilter.MaxFilter(3))
        tone = int(rng.integers(0, 60))
        back = Image.new("RGBA", g.size, (tone, tone, tone, 0))
        back.putalpha(grown)
        g = Image.alpha_composite(back, g)
    if rng.random() < 0.15 * strength:
        g = g.filter(ImageFilter.GaussianBlur(0.6))
    elif rng.random() < 0.15 * strength:
        rgb = ImageOps.posterize(g.convert("RGB"), int(rng.integers(2, 4)))
        rgb.putalpha(g.getchannel("A"))
        g = rgb
    angle = float(rng.uniform(-20, 20)) * strength
    if abs(angle) > 1:
        g = g.rotate(angle, resample=Image.BILINEAR, expand=True)
    squash = 1 + float(rng.uniform(-0.25, 0.25)) * strength
    return g.resize((max(1, round(g.width * squash)), max(1, round(g.height / squash))), Image.BILINEAR)


def render_varied(scene: Scene, style, rng: np.random.Generator, strength: float) -> Image.Image:
    """Draw ``scene`` in one ``style`` with each glyph passed through ``vary_glyph`` and fitted back into its
    box: (size, size) RGB image."""
    def glyph(p) -> Image.Image:
        g = vary_glyph(_GLYPHS.get(style, p.concept, p.size, p.turn), rng, strength)
        scale = min(1.0, p.size / max(g.width, g.height))
        if scale < 1:
            g = g.resize((max(1, round(g.width * scale)), max(1, round(g.height * scale))), Image.BILINEAR)
        return g

    return _draw(scene, glyph)


def render_recoloured(scene: Scene, style, rng: np.random.Generator, prob: float) -> Image.Image:
    """Draw ``scene`` in one ``style``, each glyph with probability ``prob`` reduced to six colours and those replaced
    by six random ones: (size, size) RGB image. The shape and the layout of the colour regions stay, the colours
    go, so a recoloured glyph can only be told by its shape (``--palette``; ``scripts/style_proxy.py``)."""
    def glyph(p) -> Image.Image:
        g = _GLYPHS.get(style, p.concept, p.size, p.turn)
        if rng.random() >= prob:
            return g
        q = g.convert("RGB").quantize(colors=6)
        q.putpalette([int(v) for v in rng.integers(0, 256, 6 * 3)] + [0] * (768 - 18))
        rgb = q.convert("RGB")
        rgb.putalpha(g.getchannel("A"))
        return rgb

    return _draw(scene, glyph)


def _hue_shift(rgba: Image.Image, shift: float) -> Image.Image:
    """``rgba`` with its hue turned by ``shift`` (fraction of the colour wheel); alpha kept."""
    h, s, v = rgba.convert("RGB").convert("HSV").split()
    h = h.point(lambda x: (x + int(shift * 256)) % 256)
    out = Image.merge("HSV", (h, s, v)).convert("RGB")
    out.putalpha(rgba.getchannel("A"))
    return out


@torch.no_grad()
def zero_shot(model: CLIP, tok: SimpleTokenizer, mean, std, seed: int, per_class: int = 4,
              style_name: str = "openmoji") -> float:
    """Quick zero-shot accuracy on single-object scenes of a held-out stream (monitoring only)."""
    model.eval()
    concepts = pretrain_concepts()
    style = get_style(style_name)
    rng = np.random.default_rng([seed, 99])
    text = F.normalize(model.encode_text(tok([f"a photo of {c.phrase(1)}" for c in concepts])), dim=-1)
    correct = total = 0
    for start in range(0, len(concepts), 64):
        imgs, labels = [], []
        for ci in range(start, min(start + 64, len(concepts))):
            for _ in range(per_class):
                imgs.append(render_scene(make_scene(((concepts[ci], 1),), rng), style))
                labels.append(ci)
        f = F.normalize(model.encode_image(to_pixels(imgs, mean, std)), dim=-1)
        correct += (f @ text.T).argmax(1).eq(torch.tensor(labels)).sum().item()
        total += len(labels)
    model.train()
    return correct / total


def render_batches(args: argparse.Namespace, styles: list[str]):
    """Yield one training batch per step: (B, 64, 64, 3) uint8 scenes, their B captions and the B lists of
    concept names they show. The same seed gives the same stream, in this process or in a worker."""
    rng = split_rng(args.seed, "pretrain")
    concepts, style_of = pretrain_concepts(), {name: get_style(name) for name in styles}
    # a style that cannot draw every concept (e.g. an older emoji set) draws only the scenes it can; the others fall
    # back to the first style, so full-coverage styles keep their stream
    lacks = {name: {c.name for c in concepts} - {c.name for c in drawable_concepts(name, concepts)} for name in styles}
    kinds = tuple(k.strip() for k in args.predicate_kinds.split(",") if k.strip())
    for step in range(args.steps):
        if args.predicates > 0:  # world 4: a share of predicate scenes, each beside its hard negative
            pairs = []
            while len(pairs) < args.batch:
                pairs += (sample_predicate_pretrain(rng, 64, kinds) if rng.random() < args.predicates
                          else [sample_pretrain(rng, concepts, 64)])
            pairs = pairs[: args.batch]
        else:  # the stream of the object-only runs, unchanged
            pairs = [sample_pretrain(rng, concepts, 64) for _ in range(args.batch)]
        drawn = rng.integers(0, len(styles), size=len(pairs)) if len(styles) > 1 else np.zeros(len(pairs), int)
        if step < args.first_style_steps:
            drawn = np.zeros(len(pairs), int)
        if args.mix > 0 and step >= args.first_style_steps:
            rendered = [render_mixed(s, list(style_of.values()), rng, args.mix) for s, _ in pairs]
        else:
            chosen = [style_of[styles[k] if not _shows(s, lacks[styles[k]]) else styles[0]]
                      for (s, _), k in zip(pairs, drawn)]
            if args.vary > 0:
                rendered = [render_varied(s, st, rng, args.vary) for (s, _), st in zip(pairs, chosen)]
            elif args.palette > 0:
                rendered = [render_recoloured(s, st, rng, args.palette) for (s, _), st in zip(pairs, chosen)]
            else:
                rendered = [render_scene(s, st) for (s, _), st in zip(pairs, chosen)]
        yield (np.stack([np.asarray(im, dtype=np.uint8) for im in rendered]), [c.text for _, c in pairs],
               [[p.concept.name for p in s.placed] for s, _ in pairs])


def _shows(scene, names: set[str]) -> bool:
    return bool(names) and any(p.concept.name in names for p in scene.placed)


def _render_worker(args: argparse.Namespace, styles: list[str], queue) -> None:
    for batch in render_batches(args, styles):
        queue.put(batch)


def render_batches_in_worker(args: argparse.Namespace, styles: list[str]):
    """``render_batches`` run ahead in one worker process (rendering overlaps the model's step)."""
    import multiprocessing as mp
    from queue import Empty

    ctx = mp.get_context("fork")
    queue = ctx.Queue(maxsize=3)
    worker = ctx.Process(target=_render_worker, args=(args, styles, queue), daemon=True)
    worker.start()
    try:
        for _ in range(args.steps):
            while True:
                try:
                    yield queue.get(timeout=30)
                    break
                except Empty:
                    if not worker.is_alive():
                        raise RuntimeError(f"the render worker exited with code {worker.exitcode}") from None
    finally:
        worker.terminate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("sayno/weights/embedded"))
    ap.add_argument("--styles", default="openmoji", help="comma-separated art styles of the training scenes")
    ap.add_argument("--augment", type=float, default=0.0,
                    help="photometric jitter strength (0 = none, 1 = the documented default of the multi-style run)")
    ap.add_argument("--mix", type=float, default=0.0,
                    help="glyph-level augmentation strength with one style per object (0 = one style per scene, "
                         "no glyph augmentation); see render_mixed")
    ap.add_argument("--vary", type=float, default=0.0,
                    help="per-glyph augmentation strength with one style per scene (colour, outline, blur, "
                         "posterise, mirror, rotation, squash; see vary_glyph); 0 = off, draws nothing")
    ap.add_argument("--palette", type=float, default=0.0,
                    help="share of glyphs recoloured with six random colours (shape kept, colour gone; see "
                         "render_recoloured); 0 = off, draws nothing")
    ap.add_argument("--first-style-steps", type=int, default=0,
                    help="curriculum: the first N steps draw every scene in the first of --styles only (a from-scratch "
                         "run leaves the loss plateau sooner on one style), then all styles")
    ap.add_argument("--patch-dropout", type=float, default=0.0,
                    help="FLIP-style training: drop this fraction of image patches per image (open_clip's PatchDropout; "
                         "0.5 halves the image tower's cost); off at evaluation, not written to config.json")
    ap.add_argument("--unmasked-steps", type=int, default=0,
                    help="with --patch-dropout: the last N steps see every patch (FLIP's unmasked tuning)")
    ap.add_argument("--flip", action="store_true", help="mirror half of the training scenes left-right")
    ap.add_argument("--compile", action="store_true", help="torch.compile the image tower (about 20%% faster on CPU)")
    ap.add_argument("--grayscale", type=float, default=0.0,
                    help="share of training images turned grey (shape over colour; 0 = off, draws nothing)")
    ap.add_argument("--randconv", type=float, default=0.0,
                    help="probability of a random-convolution style per image (RandConv; needs no --augment)")
    ap.add_argument("--render-worker", action="store_true",
                    help="render the next batches in a worker process while the model trains (same stream)")
    ap.add_argument("--concept-loss", type=float, default=0.0,
                    help="weight of an extra image->concept-name loss (each scene's objects against all concepts)")
    ap.add_argument("--monitor-every", type=int, default=250, help="zero-shot monitor interval in steps")
    ap.add_argument("--monitor", default="", help="comma-separated extra styles to monitor zero-shot on (not trained)")
    ap.add_argument("--predicate-kinds", default=",".join(PREDICATE_KINDS),
                    help="comma-separated predicate kinds --predicates draws (activity, attribute, relation)")
    ap.add_argument("--predicates", type=float, default=0.0,
                    help="share of a batch's draws that are world-4 predicate scenes (people's activities, objects "
                         "upside down, one object above another), each with its hard negative beside it")
    ap.add_argument("--init", type=Path, default=None, help="start from DIR/clip.safetensors instead of scratch")
    args = ap.parse_args()
    if sum(v > 0 for v in (args.mix, args.vary, args.palette)) > 1:
        ap.error("--mix, --vary and --palette each choose how glyphs are drawn: give at most one")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(CONFIG, indent=1))
    cfg = {k: v for k, v in CONFIG.items() if k != "preprocess_cfg"}
    if args.patch_dropout > 0:  # a training-time option of the same architecture: the saved config stays CONFIG
        cfg["vision_cfg"] = {**cfg["vision_cfg"], "patch_dropout": args.patch_dropout}
    model = CLIP(**cfg)
    if args.init is not None:
        init = read_checkpoint(args.init / "clip.safetensors").state
        model.load_state_dict({k: v.float() for k, v in init.items()}, strict=True)
    model.train()
    # the text tower drops each batch's trailing padding: exact for this causal, end-of-text-pooled tower, and
    # captions of about 16 tokens then cost half of the 32-token context
    text_tower = OpenClipTextTower(model)
    # compiled separately and called directly, so the model's state-dict keys stay open_clip's
    image_tower = torch.compile(model.visual) if args.compile else model.visual
    tok = SimpleTokenizer(context_length=CONFIG["text_cfg"]["context_length"])
    mean = torch.tensor(CONFIG["preprocess_cfg"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(CONFIG["preprocess_cfg"]["std"]).view(1, 3, 1, 1)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * t))

    styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    concepts = pretrain_concepts()
    batches = (render_batches_in_worker(args, styles) if args.render_worker else render_batches(args, styles))
    monitored = [name for name in styles[1:] if len(drawable_concepts(name, concepts)) == len(concepts)]
    monitored += [m.strip() for m in args.monitor.split(",") if m.strip() and m.strip() not in styles]
    aug_gen = torch.Generator().manual_seed(args.seed + 7919)
    concept_index = {c.name: i for i, c in enumerate(concepts)}
    concept_texts = tok([c.phrase(1) for c in concepts])  # bare names ("a dog"), not the monitor's prompt
    log, t0 = [], time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if args.patch_dropout > 0 and step == args.steps - args.unmasked_steps:
            model.visual.patch_dropout.prob = 0.0
        raw, captions, shown_names = next(batches)
        x01 = torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255.0
        images = (grayscale(randconv(augment(x01, aug_gen, args.augment), aug_gen, args.randconv), aug_gen,
                             args.grayscale) - mean) / std
        if args.flip:
            mirror = torch.rand(len(images), generator=aug_gen) < 0.5
            images = torch.where(mirror.view(-1, 1, 1, 1), images.flip(-1), images)
        texts = tok(captions)
        fi = F.normalize(image_tower(images), dim=-1)
        ft = F.normalize(text_tower(texts), dim=-1)
        logits = model.logit_scale.exp() * fi @ ft.T
        # identical captions in one batch are positives of each other, not negatives
        same = texts.unsqueeze(1).eq(texts.unsqueeze(0)).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())
        if args.concept_loss > 0:
            # every scene against every concept name: the objects it shows are its positives (UniCL-style)
            fc = F.normalize(text_tower(concept_texts), dim=-1)
            shown = torch.zeros(len(captions), len(concepts))
            for i, names in enumerate(shown_names):
                for name in names:
                    if name in concept_index:  # a person's drawing is not a concept
                        shown[i, concept_index[name]] = 1.0
            concept_logits = model.logit_scale.exp() * fi @ fc.T
            concept_loss = torch.sum(-(shown / shown.sum(1, keepdim=True)) * F.log_softmax(concept_logits, 1), 1).mean()
            contrastive = loss.detach()
            loss = loss + args.concept_loss * concept_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps - 1:
            entry = {"step": step, "loss": round(loss.item(), 4), "lr": lr_at(step),
                     "logit_scale": round(model.logit_scale.exp().item(), 2), "minutes": round((time.time() - t0) / 60, 2)}
            if args.concept_loss > 0:
                entry.update(contrastive_loss=round(contrastive.item(), 4), concept_loss=round(concept_loss.item(), 4))
            if step % args.monitor_every == 0 or step == args.steps - 1:
                entry["zero_shot_monitor"] = round(zero_shot(model, tok, mean, std, args.seed), 4)
                for name in monitored:
                    entry[f"zero_shot_monitor_{name}"] = round(zero_shot(model, tok, mean, std, args.seed,
                                                                         style_name=name), 4)
            log.append(entry)
            print(json.dumps(entry), flush=True)
    model.eval()
    save_open_clip_checkpoint(model, CONFIG, args.out / "clip.safetensors")  # fp16, sayno's checkpoint envelope
    (args.out / "train_log.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "samples": args.steps * args.batch,
                                                         "wall_minutes": round((time.time() - t0) / 60, 2),
                                                         "log": log}, indent=1))
    print(f"saved {args.out / 'clip.safetensors'}")


if __name__ == "__main__":
    main()
