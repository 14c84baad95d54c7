"""Image-caption pairs: the ``filepath,caption`` CSV that ``sayno clipn train --data`` reads.

Relative image paths resolve against ``root`` (default: the CSV's folder). Rows that cannot be used are dropped
and returned as :class:`~sayno.data.errors.BadRow` entries; the rest are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sayno.data._io import read_csv, resolve
from sayno.data.errors import BadRow, DataError

CAPTION_COLUMNS = ("filepath", "caption")


@dataclass
class CaptionDataset:
    """N image-caption pairs, parallel lists.

    image_paths: N paths; captions: N captions (whitespace collapsed); lines: N lines of the pairs in the CSV.
    """

    source: Path
    image_paths: list[Path]
    captions: list[str]
    lines: list[int]
    bad_rows: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


def read_captions_csv(path: str | os.PathLike, root: str | os.PathLike | None = None) -> CaptionDataset:
    """Read a ``filepath,caption`` CSV (further columns are ignored).

    A row with an empty filepath or caption, the wrong number of fields or a missing image file is a bad row.
    Raises :class:`~sayno.data.errors.DataError` for a missing file, missing columns or no usable pair.
    """
    path = Path(path)
    base = Path(root).expanduser() if root is not None else path.parent
    _, rows = read_csv(path, CAPTION_COLUMNS, "caption")
    ds = CaptionDataset(path, [], [], [])
    for line, row in rows:
        if isinstance(row, str):
            ds.bad_rows.append(BadRow(str(path), line, row))
            continue
        filepath, caption = row["filepath"].strip(), " ".join(row["caption"].split())
        if not filepath or not caption:
            ds.bad_rows.append(BadRow(str(path), line, "empty filepath or caption"))
            continue
        image = resolve(filepath, base)
        if not image.is_file():
            ds.bad_rows.append(BadRow(str(path), line, f"image not found: {image}"))
            continue
        ds.image_paths.append(image)
        ds.captions.append(caption)
        ds.lines.append(line)
    if not ds.captions:
        raise DataError(f"{path}: no usable image-caption pairs")
    return ds
