"""Issue 12, items 7-8: ``sayno eval`` never loses a row silently and never prints ``nan``.

Images that exist but cannot be decoded (corrupt, truncated, a text file) are bad rows, reported on stderr and
counted in ``bad_rows``; a run with no usable row exits 2 with one line, and ``--json`` output stays valid JSON.
The embedded CLIP scores a handful of tiny images written here.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sayno.cli import app

runner = CliRunner()
MCQ_HEADER = ["image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
              "correct_answer_template"]


def _png_bytes(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


def _images(folder: Path) -> dict[str, Path]:
    """Two good images and three that exist but do not decode."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"red.png": _png_bytes((255, 0, 0)), "blue.png": _png_bytes((0, 0, 255)),
             "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
             "truncated.png": _png_bytes((0, 255, 0))[:60],
             "text.jpg": b"root:x:0:0:root:/root:/bin/bash\n"}
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


BAD = ("corrupt.png", "truncated.png", "text.jpg")


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _mcq(path: Path, names: list[str]) -> Path:
    return _write(path, MCQ_HEADER, [[f"images/{n}", 0, "a red square", "a dog", "no cat", "a blue square",
                                      "positive"] for n in names])


def _eval(*args: str):
    return runner.invoke(app, ["eval", *args, "--json", "--no-cache"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe")
    _images(root / "images")
    return root


def _assert_bad_reported(r, expected_rows: int) -> dict:
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["bad_rows"] == 3
    for name in BAD:
        assert name in r.stderr, r.stderr
    assert "cannot decode" in r.stderr
    for metrics in res["methods"].values():
        assert expected_rows in metrics.values()
    return res


def test_mcq_reports_undecodable_images(folder):
    data = _mcq(folder / "mcq.csv", ["red.png", "blue.png", *BAD])
    _assert_bad_reported(_eval("mcq", "--data", str(data)), 2)


def test_ccneg_reports_undecodable_images(folder):
    data = _write(folder / "cc.csv", ["image_path", "caption", "negative_caption"],
                  [[f"images/{n}", "a red square", "no red square"] for n in ["red.png", "blue.png", *BAD]])
    _assert_bad_reported(_eval("ccneg", "--data", str(data)), 2)


def test_retrieval_reports_undecodable_images(folder):
    data = _write(folder / "ret.csv", ["filepath", "captions"],
                  [[f"images/{n}", json.dumps([f"picture {n}"])] for n in ["red.png", "blue.png", *BAD]])
    _assert_bad_reported(_eval("retrieval", "--data", str(data)), 2)


def test_zeroshot_reports_undecodable_images(tmp_path):
    images = _images(tmp_path / "src")
    for cls, names in (("red", ["red.png", "corrupt.png"]), ("blue", ["blue.png", "truncated.png", "text.jpg"])):
        (tmp_path / "classes" / cls).mkdir(parents=True)
        for n in names:
            (tmp_path / "classes" / cls / n).write_bytes(images[n].read_bytes())
    _assert_bad_reported(_eval("zeroshot", "--data", str(tmp_path / "classes")), 2)


@pytest.mark.parametrize("case", ["header_only", "all_missing", "all_undecodable", "all_captions_empty"])
@pytest.mark.parametrize("task", ["mcq", "ccneg", "retrieval"])
def test_no_usable_rows_exits_2_in_one_line(folder, tmp_path, task, case):
    names = {"header_only": [], "all_missing": ["gone1.png", "gone2.png"], "all_undecodable": list(BAD),
             "all_captions_empty": ["red.png", "blue.png"]}[case]
    caption = "" if case == "all_captions_empty" else "a red square"
    if task == "mcq":
        rows = [[f"images/{n}", 0, caption, caption, caption, caption, "positive"] for n in names]
        data = _write(folder / f"{task}-{case}.csv", MCQ_HEADER, rows)
    elif task == "ccneg":
        data = _write(folder / f"{task}-{case}.csv", ["image_path", "caption", "negative_caption"],
                      [[f"images/{n}", caption, caption] for n in names])
    else:
        data = _write(folder / f"{task}-{case}.csv", ["filepath", "captions"],
                      [[f"images/{n}", json.dumps([caption])] for n in names])
    r = _eval(task, "--data", str(data), "--out", str(tmp_path / "results"))
    assert r.exit_code == 2, r.output
    assert r.stdout == ""  # no table, no JSON with NaN
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("no usable rows" in errors[0] or "no rows" in errors[0]), r.stderr
    assert not (tmp_path / "results").exists()


def test_zeroshot_with_only_undecodable_images_exits_2(tmp_path):
    images = _images(tmp_path / "src")
    (tmp_path / "classes" / "red").mkdir(parents=True)
    for n in BAD:
        (tmp_path / "classes" / "red" / n).write_bytes(images[n].read_bytes())
    r = _eval("zeroshot", "--data", str(tmp_path / "classes"))
    assert r.exit_code == 2 and "no usable rows" in r.stderr and r.stdout == "", r.output
