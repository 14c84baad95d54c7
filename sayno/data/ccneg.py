"""CC-Neg: per image one true caption and one negated caption.

Two layouts are read:

* the original torch pickle (``.pt``/``.pth``/``.pkl``): a dict with ``image_paths`` and ``annotations``,
  ``annotations[i]["json"]["caption"]`` the true caption, ``annotations[i]["sop_data"]["negative-prompt"]``
  the negated one (commas removed, as the reference evaluation does) and, when present,
  ``["sop_data"]["sop_chosen_object"]`` the negated object. The last 40,000 entries are the test split.
  This is the only place sayno calls ``torch.load(weights_only=False)`` (checked by
  ``tests/test_probe2_files.py``; resume states are safetensors + JSON, backbone weights load with
  ``weights_only=True``), and it runs only on the file the user names as their CC-Neg dataset: the reference
  release is a torch pickle, and a pickle can run code, so read only files you trust.
* a CSV with ``image_path, caption, negative_caption`` [+ ``negated_object``]; one file is one split.

Image paths: relative ones resolve under ``root``; absolute ones that do not exist (the reference pickle's
``/workspace/datasets/cc3m/...``) are re-rooted under ``root`` by their longest tail that exists there
(:func:`sayno.data._io.locate`, the rule of every reader).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sayno.data._io import locate, one_line, read_csv
from sayno.data.errors import BadRow, DataError
from sayno.errors import InputError

TEST_SIZE = 40_000
SPLITS = ("test", "train", "all")
CSV_COLUMNS = ("image_path", "caption", "negative_caption")


@dataclass
class CcNegDataset:
    """K (image, caption, negated caption) triples, parallel lists; negated_objects entries may be None."""

    source: Path
    image_paths: list[Path]
    captions: list[str]
    negative_captions: list[str]
    negated_objects: list[str | None]
    bad_rows: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_paths)


def read_ccneg(path: str | os.PathLike, root: str | os.PathLike | None = None,
               split: str = "test") -> CcNegDataset:
    """Read CC-Neg from the torch pickle or the CSV variant (chosen by the ``.csv`` suffix).

    ``split``: ``"test"`` (the last 40,000 entries), ``"train"`` (the rest) or ``"all"``; it applies to the
    pickle only (a CSV is read whole). Rows with an empty caption or a missing image file are bad rows.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(path)
    base = Path(root).expanduser() if root is not None else path.parent
    if path.suffix.lower() == ".csv":
        return _read_csv(path, base)
    return _read_pickle(path, base, split)


def _read_csv(path: Path, base: Path) -> CcNegDataset:
    _, rows = read_csv(path, CSV_COLUMNS, "CC-Neg CSV")
    ds = CcNegDataset(path, [], [], [], [])
    for line, row in rows:
        if isinstance(row, str):
            ds.bad_rows.append(BadRow(str(path), line, row))
            continue
        obj = row.get("negated_object", "").strip() or None
        _add(ds, line, row["image_path"], row["caption"], row["negative_caption"], obj,
             lambda v: locate(v, base))
    return ds


def _read_pickle(path: Path, base: Path, split: str) -> CcNegDataset:
    import torch

    if not path.is_file():
        raise DataError(f"{path}: no such CC-Neg file")
    try:
        # the user's own dataset file (see the module docstring): the one weights_only=False in sayno
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise DataError(f"{path}: cannot load the CC-Neg pickle "
                        f"({type(e).__name__}: {one_line(e, 120)})") from e
    if not isinstance(data, dict) or "image_paths" not in data or "annotations" not in data:
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: a CC-Neg pickle is a dict with image_paths and annotations (has: {keys})")
    paths, anns = list(data["image_paths"]), list(data["annotations"])
    if len(paths) != len(anns):
        raise DataError(f"{path}: {len(paths)} image_paths but {len(anns)} annotations")
    n = len(paths)
    cut = max(0, n - TEST_SIZE)
    start, stop = {"test": (cut, n), "train": (0, cut), "all": (0, n)}[split]
    ds = CcNegDataset(path, [], [], [], [])
    for i in range(start, stop):
        ann = anns[i]
        try:
            cap = ann["json"]["caption"]
            neg = ann["sop_data"]["negative-prompt"]
        except (KeyError, TypeError, IndexError):
            reason = "annotation lacks json.caption or sop_data.negative-prompt"
            ds.bad_rows.append(BadRow(str(path), i, reason))
            continue
        obj = ann["sop_data"].get("sop_chosen_object") if isinstance(ann["sop_data"], dict) else None
        _add(ds, i, str(paths[i]), str(cap), str(neg).replace(",", ""), str(obj).strip() if obj else None,
             lambda v: locate(v, base))
    return ds


def _add(ds: CcNegDataset, row: int, image: str, caption: str, negative: str, obj: str | None,
         locate: Callable[[str], Path]) -> None:
    reasons = []
    caption, negative = caption.strip(), negative.strip()
    if not caption:
        reasons.append("empty caption")
    if not negative:
        reasons.append("empty negative caption")
    img = locate(image) if image.strip() else None
    if img is None:
        reasons.append("empty image path")
    elif not img.is_file():
        reasons.append(f"image not found: {img}")
    if reasons:
        ds.bad_rows.append(BadRow(str(ds.source), row, "; ".join(reasons)))
        return
    ds.image_paths.append(img)
    ds.captions.append(caption)
    ds.negative_captions.append(negative)
    ds.negated_objects.append(obj)
