"""Write sayno/templates/match_vocabulary.json: the open vocabulary of search's match test (issue 27, item 4).

    .venv/bin/python scripts/make_match_vocabulary.py [--wordnet DIR] [--out sayno/templates/match_vocabulary.json]

The rule, fixed before any measurement of the match test with it: every WordNet 3.0 noun lemma with at least one
sense in a lexicographer file of concrete things (noun.animal, noun.artifact, noun.food, noun.object,
noun.plant) that is attested in WordNet's sense-tagged corpus (tag count >= 1 in ``cntlist.rev``): the things
people name often enough to have been tagged. Nothing is chosen by hand and nothing depends on the emoji world.

Beside the words, the hypernym graph of their senses (every synset from a word's concrete senses up to the root),
so the match test can leave out of a query's competitors the words that name it, a kind of it, or what it is a
kind of ("cat" is not tested against "house cat" or "feline"). Synsets are renumbered 0..S-1 in offset order.
WordNet 3.0 licence (Princeton University; redistribution with its notice): see the ``licence`` field.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from sayno.ood.wordlist import find_wordnet

ROOT = Path(__file__).resolve().parent.parent
CONCRETE = {"05": "noun.animal", "06": "noun.artifact", "13": "noun.food", "17": "noun.object", "20": "noun.plant"}
LICENCE = ("WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to use, copy, "
           "modify and distribute this software and database and its documentation for any purpose and without fee "
           "or royalty is hereby granted, provided that you agree to comply with the following copyright notice and "
           "statements, including the disclaimer, and that the same appear on ALL copies of the software, database "
           "and documentation, including modifications that you make for internal use or for distribution. "
           "THIS SOFTWARE AND DATABASE IS PROVIDED \"AS IS\" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR "
           "WARRANTIES, EXPRESS OR IMPLIED. The name of Princeton University or Princeton may not be used in "
           "advertising or publicity pertaining to distribution of the software and/or database.")


def attested_concrete(folder: Path) -> dict[str, set[str]]:
    """lemma (lower case, spaces) -> the lexicographer numbers of its tagged concrete senses."""
    out: dict[str, set[str]] = defaultdict(set)
    for line in (folder / "cntlist.rev").read_text(encoding="latin-1").splitlines():
        key, _, count = line.split()
        lemma, rest = key.split("%", 1)
        parts = rest.split(":")
        if parts[0] == "1" and parts[1] in CONCRETE and int(count) >= 1:
            out[lemma.replace("_", " ").lower()].add(parts[1])
    return out


def read_nouns(folder: Path) -> tuple[dict[str, list[str]], dict[str, tuple[str, list[str]]]]:
    """(lemma -> synset offsets, offset -> (lexicographer number, hypernym offsets)) of WordNet's nouns."""
    index: dict[str, list[str]] = {}
    for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
        if not line or line.startswith(" "):
            continue
        f = line.split()
        pointers = int(f[3])
        index[f[0].replace("_", " ").lower()] = f[4 + pointers + 2:]
    data: dict[str, tuple[str, list[str]]] = {}
    for line in (folder / "data.noun").read_text(encoding="latin-1").splitlines():
        if not line or line.startswith(" "):
            continue
        f = line.split("|", 1)[0].split()
        words = int(f[3], 16)
        k = 4 + 2 * words
        hypernyms = [f[k + 2 + 4 * i] for i in range(int(f[k])) if f[k + 1 + 4 * i] in ("@", "@i")]
        data[f[0]] = (f[1], hypernyms)
    return index, data


def build(folder: Path) -> dict:
    attested = attested_concrete(folder)
    index, data = read_nouns(folder)
    words = sorted(w for w in attested if w in index)
    senses = {w: [o for o in index[w] if data[o][0] in attested[w]] for w in words}
    keep: set[str] = set()
    stack = [o for w in words for o in senses[w]]
    while stack:
        o = stack.pop()
        if o not in keep:
            keep.add(o)
            stack += data[o][1]
    number = {o: i for i, o in enumerate(sorted(keep))}
    return {"name": "match_vocabulary", "version": 1,
            "source": "WordNet 3.0 (Debian wordnet-base): scripts/make_match_vocabulary.py",
            "rule": "noun lemmas with a sense in noun.animal, noun.artifact, noun.food, noun.object or noun.plant "
                    "tagged at least once in WordNet's sense-tagged corpus",
            "licence": LICENCE,
            "words": words,
            "senses": [[number[o] for o in senses[w]] for w in words],
            "parents": [[number[p] for p in data[o][1]] for o in sorted(keep)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wordnet", type=Path, default=None, help="WordNet dict folder (default: found like NegLabel's)")
    ap.add_argument("--out", type=Path, default=ROOT / "sayno" / "templates" / "match_vocabulary.json")
    args = ap.parse_args()
    folder = args.wordnet or find_wordnet()
    if folder is None:
        raise SystemExit("WordNet not found: install Debian's wordnet-base or pass --wordnet DIR")
    out = build(folder)
    args.out.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{args.out}: {len(out['words'])} words, {len(out['parents'])} synsets, "
          f"{args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
