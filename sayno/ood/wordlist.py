"""Word lists for NegLabel's negative-label mining: WordNet (Debian ``wordnet-base``) or a user's file."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from sayno.data.errors import DataError

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/wordnet-3.0/dict")
_WORD = re.compile(r"^[a-z][a-z'-]*[a-z]$")


def find_wordnet() -> Path | None:
    """The WordNet database folder (``$WNHOME``/``$WORDNET_DIR`` or a Debian/Homebrew location), or None."""
    for env in ("WORDNET_DIR", "WNHOME"):
        v = os.environ.get(env)
        if v:
            for cand in (Path(v), Path(v) / "dict"):
                if (cand / "index.noun").is_file():
                    return cand
    for d in WORDNET_DIRS:
        if (Path(d) / "index.noun").is_file():
            return Path(d)
    return None


def wordnet_words(root: str | os.PathLike | None = None, pos: Sequence[str] = ("noun", "adj"),
                  multiword: bool = False) -> list[str]:
    """Lemmas of the given parts of speech, lower case, sorted, unique.

    Single words of letters (inner ``'`` and ``-`` allowed, at least 2 letters) unless ``multiword``, in
    which case ``_`` becomes a space. Raises :class:`DataError` when WordNet is not installed.
    """
    folder = Path(root) if root is not None else find_wordnet()
    if folder is None or not (folder / "index.noun").is_file():
        raise DataError("WordNet not found (install Debian's wordnet-base, set WORDNET_DIR, or pass a word list)")
    words: set[str] = set()
    for p in pos:
        f = folder / f"index.{p}"
        if not f.is_file():
            raise DataError(f"{f}: no such WordNet index")
        for line in f.read_text(encoding="latin-1").splitlines():
            if not line or line.startswith(" "):  # the licence header lines start with spaces
                continue
            lemma = line.split(" ", 1)[0].lower()
            if "_" in lemma:
                if not multiword:
                    continue
                parts = lemma.split("_")
                if all(_WORD.match(w) for w in parts):
                    words.add(" ".join(parts))
            elif _WORD.match(lemma):
                words.add(lemma)
    return sorted(words)


def read_word_list(path: str | os.PathLike) -> list[str]:
    """One word (or phrase) per line; blank lines and ``#`` comments skipped; duplicates dropped, order kept."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{p}: no such word list") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read word list ({type(e).__name__})") from e
    words = [" ".join(s.split()) for s in lines]
    words = [w for w in dict.fromkeys(words) if w and not w.startswith("#")]
    if not words:
        raise DataError(f"{p}: no words in the list")
    return words


def candidates(words: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """``words`` without the ID class names (case-insensitive), order kept."""
    ex = {" ".join(e.lower().replace("_", " ").split()) for e in exclude}
    return [w for w in words if " ".join(w.lower().split()) not in ex]
