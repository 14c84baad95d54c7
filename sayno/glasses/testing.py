"""Test backbones for the Glasses machinery: a tiny random open_clip CLIP and a hand-built bag-of-words "CLIP".

For tests and benchmarks of the Glasses machinery only (neither has learned anything). Seeded, so two
instances with the same seed have the same fingerprint and two seeds differ.
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sayno.backbones.base import Backbone, TextTower
from sayno.backbones.open_clip_backbone import OpenClipBackbone
from sayno.backbones.testing import tiny_open_clip


def tiny_clip(seed: int = 0, embed_dim: int = 32, text_layers: int = 4, context_length: int = 32) -> OpenClipBackbone:
    """Random-init open_clip CLIP (32x32 images, ``text_layers`` text layers of width 32, joint space
    ``embed_dim``): :func:`sayno.backbones.testing.tiny_open_clip` with spec ``tiny:SEED``."""
    return tiny_open_clip(seed, embed_dim=embed_dim, text_layers=text_layers, context_length=context_length)


def check_tower(backbone: OpenClipBackbone) -> float:
    """Max |difference| between the tower's last layer and open_clip's own encode_text (should be ~0)."""
    tokens = backbone.tokenize(["a dog", "no cat here"])
    with torch.no_grad():
        a = backbone.text_tower()(tokens)
        b = backbone.model.encode_text(tokens)
    return float((a - b).abs().max())





class SyntheticClip(Backbone):
    """A hand-built "CLIP" with a known failure: it embeds a caption as the bag of its words.

    Object words have unit-norm random vectors, every other word (including "no") a small one, so
    "a cat but no dog" lands next to "a cat and a dog", as in a real CLIP. An image is a 1 x K PNG whose pixel
    k is white when object k is present; its feature is the normalised sum of its objects' vectors. Shallow
    "layers" weigh the words by position. Lets tests check that training *learns* negation.
    """

    def __init__(self, names: list[str], seed: int = 0, embed_dim: int = 32, num_layers: int = 4,
                 logit_scale: float = 20.0):
        self.names = list(names)
        rng = torch.Generator().manual_seed(seed)
        self.obj = torch.nn.functional.normalize(torch.randn(len(names), embed_dim, generator=rng), dim=-1)
        self.seed = seed
        self.spec = f"synthetic:{seed}"
        self.fingerprint = f"synthetic{seed:08d}"
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.embed_dim = embed_dim
        self.context_length = 64
        self.num_text_layers = num_layers
        self.image_size = len(names)
        self.image_mean, self.image_std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        self._scale = float(logit_scale)

    @property
    def logit_scale(self) -> float:
        return self._scale

    def _word(self, w: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(w.encode()) + self.seed)
        return 0.3 * torch.nn.functional.normalize(torch.randn(self.embed_dim, generator=g), dim=0)

    def _vectors(self, text: str) -> list[torch.Tensor]:
        words = re.findall(r"[\w'-]+", text.lower())
        out, i = [], 0
        while i < len(words):
            for n, name in enumerate(self.names):
                k = len(name.split())
                if words[i:i + k] == name.split():
                    out.append(self.obj[n])
                    i += k
                    break
            else:
                out.append(self._word(words[i]))
                i += 1
        return out or [self._word("")]

    @torch.no_grad()
    def encode_text_layers(self, texts, normalize: bool = True) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for t in texts:
            v = torch.stack(self._vectors(t))
            j = torch.arange(len(v), dtype=torch.float32)
            layers = [(1 + 0.5 * torch.cos(0.7 * (l + 1) * j)).unsqueeze(1).mul(v).sum(0)
                      for l in range(self.num_text_layers - 1)] + [v.sum(0)]
            rows.append(torch.stack(layers))
        out = torch.stack(rows)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    @torch.no_grad()
    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        return self.encode_text_layers(texts, normalize)[:, -1]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        im = image.convert("L")
        x = torch.tensor(list(im.getdata()), dtype=torch.float32)[: len(self.names)] / 255.0
        return x.view(1, 1, -1).expand(3, 1, -1).contiguous()

    def _tokenize(self, texts: list[str]):
        return torch.zeros((len(texts), 1), dtype=torch.long), [1] * len(texts)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        presence = pixels[:, 0, 0, :]
        return presence @ self.obj

    def text_tower(self) -> TextTower:
        raise NotImplementedError("SyntheticClip has no transformer text tower")


def synthetic_image(names: list[str], objects: list[str]) -> Image.Image:
    """The 1 x K image :class:`SyntheticClip` reads: pixel k white iff ``names[k]`` is in ``objects``."""
    im = Image.new("L", (len(names), 1), 0)
    for k, n in enumerate(names):
        if n in objects:
            im.putpixel((k, 0), 255)
    return im


def write_synthetic_world(folder, names: list[str], groups: int, seed: int = 0, split: str = "train",
                          hedge_error_rate: float = 0.25) -> None:
    """A world-like ``negation_<split>.csv`` and ``ccneg_<split>.csv`` with :func:`synthetic_image` images.

    Per group: image ``a`` shows objects P, image ``b`` shows P plus B; captions follow the world's patterns.
    """
    folder = Path(folder)
    (folder / "images" / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, hash(split) % 1000])
    neg_rows, cc_rows = [], []
    for g in range(groups):
        pick = [names[i] for i in rng.permutation(len(names))[:5]]
        P, B, C, D = pick[: int(rng.integers(1, 3))], pick[2], pick[3], pick[4]
        paths = {"a": f"images/{split}/{g:05d}a.png", "b": f"images/{split}/{g:05d}b.png"}
        objs = {"a": P, "b": P + [B]}
        for k in "ab":
            synthetic_image(names, objs[k]).save(folder / paths[k])
        p = " and ".join(f"a {x}" for x in P)
        rows = [("a", f"a photo of {p}", [], 0, 1), ("a", f"{p} but no {B}", [B], 0, 1),
                ("a", f"there is no {B}", [B], 0, 1), ("b", f"{p} and a {B}", [], 0, 1),
                ("b", f"{p} but no {B}", [B], 0, 0), ("b", f"there is no {B}", [B], 0, 0),
                ("b", f"{p} and a {B} but no {C}", [C], 0, 1), ("b", f"no {D}", [D], 0, 1),
                ("a", f"neither a {B} nor a {C}", [B, C], 0, 1)]
        wrong = rng.random() < hedge_error_rate
        rows.append(("b" if wrong else "a", f"{p}, probably no {B}", [B], 1, 0 if wrong else 1))
        for k, cap, neg, hedged, true in rows:
            neg_rows.append([paths[k], cap, json.dumps(objs[k]), json.dumps(neg), hedged, "x", true, g, ""])
        cc_rows.append([paths["b"], f"{p} and a {B}", f"{p} but no {B}", B])
        cc_rows.append([paths["a"], f"a photo of {p}", f"no {P[0]}", P[0]])
    with open(folder / f"negation_{split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "caption", "positive_objects", "negated_objects", "hedged", "template", "true",
                    "group", "hard_negative"])
        w.writerows(neg_rows)
    with open(folder / f"ccneg_{split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "caption", "negative_caption", "negated_object"])
        w.writerows(cc_rows)
