"""How much CLIPGlasses scoring costs over plain CLIP, from cached features, on CPU.

    .venv/bin/python bench/bench_glasses_scoring.py --model embedded \
        --glasses sayno/weights/glasses-embedded.safetensors --world runs/world --n 1000 --m 10000

Scores N captions against M images (``score_matrix``: caption-only lambda, retrieval-grade) with plain CLIP
and with Glasses, from the same cached features (captions' ``h`` and layers, image features; the negated
phrases' prompt embeddings are text features too and are cached by the first, untimed, call). Captions are
the world's negated and affirmative retrieval queries (about half negated), repeated to N; images are the
world's image features, repeated to M. Prints the median time of each over ``--repeat`` alternating runs and
the ratio Glasses / plain, plus the one-off cost of embedding the phrases when the cache is cold.

It also prints where Glasses' extra time goes (medians of ``--repeat`` calls of each part on its own):
the caption plans (what Glasses read from each caption: its negation analysis, slot phrases and read limit,
i.e. how much of a negated caption the text encoder read; memoised per caption, and what reading them costs
when the memo is cold), the
rest of the slots (phrase-prompt lookup, Lens and Frame on the negated captions' slots), and the score from
the slots (query vectors and one matrix product) against plain CLIP's product; and the same ratio for the
training-free Glasses (``--no-training-free`` skips it), calibrated on the first 2,000 image features.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sayno.backbones.registry import load
from sayno.base.scoring import PlainClip, TextBatch
from sayno.data import read_retrieval_csv
from sayno.glasses.data import encode_texts_np
from sayno.glasses.model import Glasses, GlassesConfig, load_glasses
from sayno.glasses.scoring import caption_only_scores
from sayno.glasses.training_free import TrainingFreeGlasses
from sayno.runtime import torch_threads


def captions_of(world: Path, n: int) -> list[str]:
    caps: list[str] = []
    for name in ("retrieval_neg_test.csv", "retrieval_test.csv"):
        p = world / name
        if p.exists():
            caps += read_retrieval_csv(p).captions
    if not caps:
        caps = ["a dog and a cat", "a cat but no dog", "there is no cow here", "a photo of two apples"]
    rng = np.random.default_rng(0)
    return [caps[i] for i in rng.permutation(len(caps))[:n]] if len(caps) >= n else (caps * (n // len(caps) + 1))[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--glasses", default="sayno/weights/glasses-embedded.safetensors")
    ap.add_argument("--world", type=Path, default=Path("runs/world"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--m", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--no-training-free", dest="training_free", action="store_false",
                    help="skip the training-free Glasses' ratio")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    backbone = load(args.model)
    if Path(args.glasses).exists():
        g = load_glasses(args.glasses, backbone)
    else:
        print(f"no checkpoint at {args.glasses}: timing an untrained Glasses (same cost)")
        g = Glasses(GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers), backbone)
    texts = captions_of(args.world, args.n)
    layers = encode_texts_np(backbone, texts, layers=True)
    text = TextBatch(texts, np.ascontiguousarray(layers[:, -1]), layers)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(args.m, backbone.embed_dim)).astype(np.float32)
    images = x / np.linalg.norm(x, axis=1, keepdims=True)
    plain = PlainClip(backbone.logit_scale)
    negated = int(g.slots(text).negated.sum())

    t = time.perf_counter()
    g.phrases.clear()
    g.reading.clear()
    g.plans.clear()
    g.score_matrix(text, images)  # cold: embeds the negated phrases' prompts and tokenizes the captions once
    cold = time.perf_counter() - t
    plain.score_matrix(text, images)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn(text, images)
        return time.perf_counter() - t

    tp, tg = [], []
    for _ in range(args.repeat):
        tp.append(timed(plain.score_matrix))
        tg.append(timed(g.score_matrix))
    ref = Glasses(GlassesConfig(**{**g.config.__dict__, "score": "reference"}), backbone)
    ref.frame.set_bank(g.frame.bank)
    ref.load_state_dict(g.state_dict())
    ref.phrases = g.phrases
    tr = [timed(ref.score_matrix) for _ in range(args.repeat)]
    mp, mg, mr = statistics.median(tp), statistics.median(tg), statistics.median(tr)

    def med(fn) -> float:
        ts = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    slots = g.slots(text, image_terms=False)  # as score_matrix makes them
    negated_texts = [texts[i] for i in np.flatnonzero(slots.negated)]
    m_plans = med(lambda: g.plans(texts))
    m_slots = med(lambda: g.slots(text, image_terms=False))
    m_score = med(lambda: caption_only_scores(text, images, slots, g.logit_scale, g.clamp))
    with torch_threads(1), torch.no_grad():  # the two modules alone, on the slots' inputs, as slots() runs them
        h_t = torch.as_tensor(np.asarray(text.h, dtype=np.float32))
        owner = slots.owner
        lay = torch.as_tensor(np.asarray(text.layers, dtype=np.float32))[owner]
        m_lens = med(lambda: g.lens(lay, h_t[owner]))  # the source's values do not change the cost
        m_frame = med(lambda: g.frame.text_params(slots.base[owner], slots.h_neg, h_t[owner], slots.hedged))
    m_plain = med(lambda: plain.score_matrix(text, images))
    g.reading.clear()
    t = time.perf_counter()
    g.read_chars(negated_texts)
    read_cold = time.perf_counter() - t
    g.plans.clear()
    t = time.perf_counter()
    g.plans(texts)  # the analyses stay cached by sayno.negation; the read limits were just measured cold
    plans_cold = time.perf_counter() - t
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"backbone {backbone.spec} (D={backbone.embed_dim}); {args.n} captions ({negated} negated) x "
          f"{args.m} images; torch threads {torch.get_num_threads()}; median of {args.repeat}; "
          f"load average {load1:.1f} on {os.cpu_count()} CPUs")
    print(f"plain CLIP score_matrix:             {1000 * mp:8.1f} ms")
    print(f"Glasses score_matrix ({g.config.score}):       {1000 * mg:8.1f} ms   ratio {mg / mp:.2f}x")
    print(f"Glasses, reference (clamped) score:  {1000 * mr:8.1f} ms   ratio {mr / mp:.2f}x")
    print(f"first Glasses call, phrase prompts not yet embedded: {1000 * cold:.1f} ms (one-off, cached after)")
    print(f"Glasses parts ({len(slots.owner)} slots), each timed alone:")
    print(f"  caption plans (analysis, slot phrases, read limit; memoised per caption): {1000 * m_plans:8.1f} ms   "
          f"(cold: {1000 * plans_cold:.1f} ms from cached analyses; tokenizing {len(negated_texts)} captions "
          f"for their read limits: {1000 * read_cold:.1f} ms more)")
    print(f"  rest of the slots (phrase lookup, affirmative remainders, Lens, Frame): "
          f"{1000 * max(m_slots - m_plans, 0.0):8.1f} ms   (slots in all: {1000 * m_slots:.1f} ms)")
    print(f"    of which the Lens {1000 * m_lens:.1f} ms and the Frame {1000 * m_frame:.1f} ms (one torch thread)")
    print(f"  score from the slots (query vectors, one product): {1000 * m_score:8.1f} ms   "
          f"(plain CLIP's product: {1000 * m_plain:.1f} ms)")
    if args.training_free:
        tf = TrainingFreeGlasses.from_backbone(backbone, images[:2000])
        tf.score_matrix(text, images)  # embeds the bank, phrases and remainders once
        tt, tq = [], []
        for _ in range(args.repeat):
            tq.append(timed(plain.score_matrix))
            tt.append(timed(tf.score_matrix))
        mq, mt = statistics.median(tq), statistics.median(tt)
        print(f"training-free Glasses score_matrix:  {1000 * mt:8.1f} ms   ratio {mt / mq:.2f}x "
              f"(plain CLIP beside it: {1000 * mq:.1f} ms)")
    print(f"RATIO {mg / mp:.3f}")


if __name__ == "__main__":
    main()
