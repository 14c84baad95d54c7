"""NegBench readers: the multiple-choice (MCQ) CSV and the retrieval CSV.

Relative image paths resolve against ``root`` (default: the CSV's folder); absolute paths that do not exist
(NegBench's official CSVs hold its authors' ``/data/.../voc2007/VOCdevkit/...``) are re-rooted under ``root`` by
their longest tail that exists there. Rows that cannot be used are
dropped and returned as :class:`~sayno.data.errors.BadRow` entries; the rest are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sayno.data._io import locate, one_line, parse_str_list, read_csv
from sayno.data.errors import BadRow

MCQ_COLUMNS = ("image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
               "correct_answer_template")
TEMPLATE_ALIASES = {"positive": "positive", "affirmation": "positive", "negative": "negative",
                    "negation": "negative", "hybrid": "hybrid"}
RETRIEVAL_COLUMNS = ("filepath", "captions")


@dataclass
class McqDataset:
    """NegBench MCQ questions (Q of them), parallel lists.

    image_paths: Q paths; captions: Q lists of 4 options; answers: (Q,) int64 in 0..3; templates: Q of
    positive/negative/hybrid; lines: (Q,) int64 line of each question in the CSV.
    """

    source: Path
    image_paths: list[Path]
    captions: list[list[str]]
    answers: np.ndarray
    templates: list[str]
    lines: np.ndarray
    bad_rows: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_paths)


def _image(value: str, column: str, base: Path | None, reasons: list[str]) -> Path | None:
    """The row's image path resolved against ``base`` (absolute paths of another machine re-rooted there by
    their longest existing tail, :func:`~sayno.data._io.locate`); appends why it is unusable to ``reasons``."""
    img = locate(value, base) if value.strip() else None
    if img is None:
        reasons.append(f"empty {column}")
    elif not img.is_file():
        reasons.append(f"image not found: {img}")
    return img


def _root(path: Path, root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else path.parent


def _answer(value: str) -> int | None:
    try:
        f = float(value.strip())
    except ValueError:
        return None
    return int(f) if f.is_integer() and 0 <= f <= 3 else None


def read_mcq_csv(path: str | os.PathLike, root: str | os.PathLike | None = None) -> McqDataset:
    """Read a NegBench MCQ CSV (``image_path, correct_answer, caption_0..3, correct_answer_template``).

    Templates ``affirmation``/``negation`` are read as ``positive``/``negative``. A row with an empty
    caption, an answer outside 0..3, an unknown template or a missing image file is a bad row.
    Raises :class:`~sayno.data.errors.DataError` for a missing file or missing columns.
    """
    path = Path(path)
    base = _root(path, root)
    _, rows = read_csv(path, MCQ_COLUMNS, "MCQ CSV")
    ds = McqDataset(path, [], [], np.zeros(0, np.int64), [], np.zeros(0, np.int64))
    answers, lines = [], []
    for line, row in rows:
        if isinstance(row, str):
            ds.bad_rows.append(BadRow(str(path), line, row))
            continue
        reasons = []
        caps = [row[f"caption_{k}"].strip() for k in range(4)]
        reasons += [f"empty caption_{k}" for k, c in enumerate(caps) if not c]
        ans = _answer(row["correct_answer"])
        if ans is None:
            reasons.append(f"correct_answer must be 0..3, got {one_line(row['correct_answer'], 40)!r}")
        tpl = TEMPLATE_ALIASES.get(row["correct_answer_template"].strip().lower())
        if tpl is None:
            reasons.append(f"unknown template {one_line(row['correct_answer_template'], 40)!r} "
                           "(expected positive/negative/hybrid)")
        img = _image(row["image_path"], "image_path", base, reasons)
        if reasons:
            ds.bad_rows.append(BadRow(str(path), line, "; ".join(reasons)))
            continue
        ds.image_paths.append(img)  # type: ignore[arg-type]
        ds.captions.append(caps)
        ds.templates.append(tpl)  # type: ignore[arg-type]
        answers.append(ans)
        lines.append(line)
    ds.answers = np.asarray(answers, dtype=np.int64)
    ds.lines = np.asarray(lines, dtype=np.int64)
    return ds


@dataclass
class RetrievalDataset:
    """NegBench retrieval: M images and N captions, flattened.

    image_paths: M paths; captions: N texts; caption_to_image: (N,) int64 image index of each caption;
    positive_objects / negative_objects: M lists of object names; image_ids: M ids (None if absent).
    """

    source: Path
    image_paths: list[Path]
    captions: list[str]
    caption_to_image: np.ndarray
    positive_objects: list[list[str]]
    negative_objects: list[list[str]]
    image_ids: list[str | None]
    bad_rows: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


def read_retrieval_csv(path: str | os.PathLike, root: str | os.PathLike | None = None) -> RetrievalDataset:
    """Read a NegBench retrieval CSV (``filepath, captions`` [+ ``positive_objects, negative_objects,
    image_id``]).

    ``captions`` is a Python list literal (a plain string is one caption); the object columns are list
    literals. Rows naming the same image file are merged into one image (their captions and objects
    joined), so every caption has exactly one target image. A row with no caption, a malformed list or a
    missing image file is a bad row. Raises :class:`~sayno.data.errors.DataError` for a missing file or
    missing columns.
    """
    path = Path(path)
    base = _root(path, root)
    _, rows = read_csv(path, RETRIEVAL_COLUMNS, "retrieval CSV")
    ds = RetrievalDataset(path, [], [], np.zeros(0, np.int64), [], [], [])
    cap2img: list[int] = []
    index: dict[Path, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            ds.bad_rows.append(BadRow(str(path), line, row))
            continue
        reasons = []
        try:
            caps = [c.strip() for c in parse_str_list(row["captions"])]
            caps = [c for c in caps if c]
            if not caps:
                reasons.append("no captions")
        except ValueError as e:
            reasons.append(f"captions: {e}")
        objects = {}
        for col in ("positive_objects", "negative_objects"):
            try:
                objects[col] = [o.strip() for o in parse_str_list(row.get(col))]
            except ValueError as e:
                reasons.append(f"{col}: {e}")
        img = _image(row["filepath"], "filepath", base, reasons)
        if reasons:
            ds.bad_rows.append(BadRow(str(path), line, "; ".join(reasons)))
            continue
        assert img is not None
        image_id = row.get("image_id", "").strip() or None
        key = img.resolve()
        if key in index:
            i = index[key]
            for have, new in ((ds.positive_objects[i], objects["positive_objects"]),
                              (ds.negative_objects[i], objects["negative_objects"])):
                have.extend(o for o in new if o not in have)
        else:
            i = index[key] = len(ds.image_paths)
            ds.image_paths.append(img)
            ds.positive_objects.append(objects["positive_objects"])
            ds.negative_objects.append(objects["negative_objects"])
            ds.image_ids.append(image_id)
        ds.captions.extend(caps)
        cap2img.extend([i] * len(caps))
    ds.caption_to_image = np.asarray(cap2img, dtype=np.int64)
    return ds
