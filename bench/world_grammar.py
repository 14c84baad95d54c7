"""Does the negation analyser read every construction of the emoji world's grammar exactly, for every object?

For every construction of :data:`sayno.world.captions.FAMILIES` and every pretraining concept it fits, it writes
the negation alone (when the construction allows) and in ``--contexts`` hybrid captions with random affirmed
objects, and checks the analysis against what the world knows: the negated phrases name exactly the negated
object, the affirmative remainder names exactly the affirmed objects, and the hedge flag. Pairs listed in
:data:`sayno.world.captions.MISREAD` are skipped by the world; ``--all`` checks them too (to refresh that list).
Prints the misread (construction, object) pairs with an example, then the totals and captions/s.

    python bench/world_grammar.py [--contexts 2] [--seed 0] [--all]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from sayno.negation import ObjectVocabulary, parse_many
from sayno.world.captions import HYBRID_JOINS, MISREAD, Construction, constructions, object_list
from sayno.world.concepts import Concept, load_concepts, pretrain_concepts


def world_vocabulary() -> ObjectVocabulary:
    """Every concept name and its plural."""
    concepts = load_concepts()
    return ObjectVocabulary.from_names([c.name for c in concepts], {c.name: c.plural for c in concepts})


def cases(contexts: int, seed: int, include_misread: bool) -> list[tuple[Construction, Concept, tuple[str, ...], str]]:
    """(construction, negated concept, affirmed names, caption) for every construction x fitting concept."""
    rng = np.random.default_rng(seed)
    pre = pretrain_concepts()
    out = []
    for c in constructions():
        for concept in pre:
            if not c.fits(concept) and not (include_misread and concept.name in MISREAD.get(c.template, ())):
                continue
            if c.usable(with_pos=False):
                out.append((c, concept, (), c.fill(concept)))
            if not c.usable(with_pos=True):
                continue
            others = [o for o in pre if o.name != concept.name]
            for _ in range(contexts):
                picks = [others[i] for i in rng.choice(len(others), int(rng.integers(1, 3)), replace=False)]
                counts = tuple((o, int(rng.integers(1, 3))) for o in picks)
                pos = object_list(counts)
                text = (c.fill(concept, pos) if c.needs_pos
                        else HYBRID_JOINS[int(rng.integers(len(HYBRID_JOINS)))].format(pos=pos, neg=c.fill(concept)))
                out.append((c, concept, tuple(o.name for o in picks), text))
    return out


def read_exactly(analysis, negated: str, affirmed: tuple[str, ...], hedged: bool, vocab: ObjectVocabulary) -> bool:
    """One phrase naming exactly ``negated``, a remainder naming exactly ``affirmed``, the right hedge flag."""
    found = [o for p in analysis.phrases for o in vocab.find(p.text)]
    return (found == [negated] and len(analysis.phrases) == 1 and analysis.hedged == hedged
            and set(vocab.find(analysis.affirmative_text)) == set(affirmed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contexts", type=int, default=2, help="hybrid captions per (construction, object)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--all", action="store_true", help="also check the pairs the world skips (MISREAD)")
    args = ap.parse_args()
    items = cases(args.contexts, args.seed, args.all)
    vocab = world_vocabulary()
    parse_many(["no dog"])  # load the pipeline outside the timing
    t = time.perf_counter()
    analyses = parse_many([text for *_, text in items])
    dt = time.perf_counter() - t
    misread: dict[str, dict[str, str]] = defaultdict(dict)
    for (c, concept, affirmed, text), a in zip(items, analyses):
        if not read_exactly(a, concept.name, affirmed, c.hedged, vocab):
            misread[c.template].setdefault(concept.name, f"{text!r} -> {[p.text for p in a.phrases]}, "
                                                         f"{a.affirmative_text!r}")
    for template, names in misread.items():
        print(f"{template!r}: {sorted(names)}  e.g. {next(iter(names.values()))}")
    bad = sum(len(v) for v in misread.values())
    print(f"{len(items)} captions from {len(constructions())} constructions; {bad} misread (construction, object) "
          f"pairs; {len(items) / dt:.0f} captions/s")


if __name__ == "__main__":
    main()
