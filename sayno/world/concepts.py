"""The emoji world's concepts: everyday objects with clean English names, from ``concepts.json``.

``pretrain`` says whether the embedded CLIP saw the concept while it was trained; the others are only ever
used as out-of-distribution classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sayno.base.prompts import indefinite_article
from sayno.config import ConfigError, from_mapping

CONCEPTS_FILE = Path(__file__).with_name("concepts.json")


@dataclass(frozen=True)
class Concept:
    name: str  # "hot dog"
    plural: str  # "hot dogs" (equal to name for words without a plural, e.g. "sheep")
    codepoint: str  # "1f32d": the emoji's code point, hex, lower case; also the PNG file stem of folder styles
    category: str  # animal | food | vehicle | plant | object
    pretrain: bool  # seen by the embedded CLIP in pretraining

    @property
    def char(self) -> str:
        return "".join(chr(int(cp, 16)) for cp in self.codepoint.split("-"))

    @property
    def article(self) -> str:
        """"a" or "an" (sayno's one article rule: "an hourglass", "a unicycle")."""
        return indefinite_article(self.name)

    def phrase(self, count: int = 1) -> str:
        """'a dog', 'an apple', 'two dogs', 'three sheep'."""
        if count == 1:
            return f"{self.article} {self.name}"
        return f"{NUMBER_WORDS[count]} {self.plural}"


NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


@cache
def load_concepts(path: str | None = None) -> tuple[Concept, ...]:
    """All concepts, in file order (the default file ships with sayno)."""
    data = json.loads(Path(path or CONCEPTS_FILE).read_text())
    where = str(path or CONCEPTS_FILE)
    concepts = tuple(from_mapping(Concept, d, f"concept in {where}") for d in data)
    names = [c.name for c in concepts]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate concept names in {where}")
    return concepts


def concept_by_name(name: str) -> Concept:
    for c in load_concepts():
        if c.name == name:
            return c
    raise KeyError(f"unknown concept {name!r}")


def pretrain_concepts() -> tuple[Concept, ...]:
    """Concepts the embedded CLIP was trained on."""
    return tuple(c for c in load_concepts() if c.pretrain)


def unseen_concepts() -> tuple[Concept, ...]:
    """Concepts the embedded CLIP never saw (only used as OOD classes)."""
    return tuple(c for c in load_concepts() if not c.pretrain)
