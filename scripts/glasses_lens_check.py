"""Does the Lens's ``h_neg`` tell a present object from an absent one, in and out of its training style?

On every "negative" MCQ question of a world (answer "no A", A absent; distractor "no X", X in the image) it
compares ``cos(h_neg, I)`` of the two negated objects: right when the absent object scores lower. Once with the
frozen CLIP's prompt embeddings ("This image shows a X.") and once with the Lens output. Prints one line per
world: questions, accuracy with prompts, accuracy with the Lens.

    python scripts/glasses_lens_check.py --model SPEC --glasses CKPT runs/world runs/world-noto
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sayno.backbones.registry import load
from sayno.data import read_mcq_csv, report_bad_rows
from sayno.features import FeatureCache, encode_images
from sayno.glasses import load_glasses
from sayno.glasses.analysis import analyse


def lens_check(glasses, backbone, world: str, cache: FeatureCache | None = None) -> dict:
    """{"questions", "prompt_acc", "lens_acc"} over the world's negative-template MCQ test questions."""
    data = read_mcq_csv(f"{world}/mcq_test.csv", root=world)
    report_bad_rows(data.bad_rows)
    img = encode_images(backbone, data.image_paths, cache=cache, progress=False)
    rows, texts = [], []
    for i, template in enumerate(data.templates):
        if template != "negative" or not img.ok_mask[i]:
            continue
        caps, ans = data.captions[i], data.answers[i]
        # negation-only options ("no X", nothing affirmed); the answer and the one distractor of that form
        only = [j for j, c in enumerate(caps) if analyse(c).negated and not analyse(c).affirmative_text.strip()]
        other = [j for j in only if j != ans]
        if ans in only and len(other) == 1:
            rows.append(i)
            texts += [caps[ans], caps[other[0]]]
    s = glasses.slots(glasses.text_batch(texts))  # one batch: caption 2k is the answer, 2k + 1 the distractor
    one_slot = np.bincount(s.owner.numpy(), minlength=len(texts)) == 1
    keep = one_slot[0::2] & one_slot[1::2]
    slot_of = np.full(len(texts), -1)
    slot_of[s.owner.numpy()] = np.arange(len(s.owner))
    images = torch.as_tensor(img.features[rows])  # (Q, D)
    prompts = torch.as_tensor(glasses.encode_phrases(s.phrases))
    ok = {}
    for name, emb in (("prompt", prompts), ("lens", s.h_neg)):
        absent = (emb[slot_of[0::2]] * images).sum(-1)
        present = (emb[slot_of[1::2]] * images).sum(-1)
        ok[name] = (absent < present).numpy()[keep]
    return {"questions": int(keep.sum()), "prompt_acc": 100 * float(ok["prompt"].mean()),
            "lens_acc": 100 * float(ok["lens"].mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--glasses", required=True)
    ap.add_argument("worlds", nargs="+")
    args = ap.parse_args()
    backbone = load(args.model)
    glasses = load_glasses(args.glasses, backbone)
    cache = FeatureCache.default()
    for w in args.worlds:
        r = lens_check(glasses, backbone, w, cache)
        print(f"{w}: {r['questions']} questions, absent below present: prompt {r['prompt_acc']:.1f}%, "
              f"Lens {r['lens_acc']:.1f}%")


if __name__ == "__main__":
    main()
