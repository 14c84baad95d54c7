"""sayno.data: every reader on tiny files, good rows and every kind of bad one."""

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from sayno.data import (
    BadRow,
    DataError,
    load_image,
    read_ccneg,
    read_class_names,
    read_image_folder,
    read_mcq_csv,
    read_retrieval_csv,
    report_bad_rows,
)
from sayno.errors import InputError


def _png(path, mode="RGB", size=(4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_load_image(tmp_path):
    for mode in ("RGB", "RGBA", "L", "P", "LA", "I;16", "CMYK"):
        suffix = ".jpg" if mode == "CMYK" else ".png"
        im = load_image(_png(tmp_path / f"{mode.replace(';', '')}{suffix}", mode))
        assert im.mode == "RGB" and im.size == (4, 4)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    full = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(full, format="PNG")
    (tmp_path / "truncated.png").write_bytes(full.getvalue()[:60])
    (tmp_path / "text.png").write_text("hello")
    for name in ("corrupt.png", "truncated.png", "text.png", "missing.png"):
        with pytest.raises(DataError) as e:
            load_image(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)
    assert issubclass(DataError, ValueError)


def test_read_mcq_csv(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    header = ["image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
              "correct_answer_template"]
    path = _csv(tmp_path / "mcq.csv", header, [
        ["imgs/a.png", "1", "a", "b", "c", "d", "positive"],
        ["imgs/a.png", "0", "a", "b", "c", "d", "Negation"],      # alias, any case
        ["imgs/a.png", "3.0", "a", "b", "c", "d", "affirmation"],
        ["imgs/a.png", "2", "a", "", "c", "d", "hybrid"],         # empty caption
        ["imgs/a.png", "4", "a", "b", "c", "d", "hybrid"],        # answer out of range
        ["imgs/a.png", "x", "a", "b", "c", "d", "hybrid"],        # not a number
        ["imgs/missing.png", "0", "a", "b", "c", "d", "hybrid"],  # no such image
        ["imgs/a.png", "0", "a", "b", "c", "d", "other"],         # unknown template
        ["imgs/a.png", "0", "a"],                                 # too few fields
        [str(tmp_path / "imgs" / "a.png"), "2", "a", "b", "c", "d", "hybrid"],  # absolute path
    ])
    ds = read_mcq_csv(path)
    assert len(ds) == 4
    assert ds.answers.dtype == np.int64 and ds.answers.tolist() == [1, 0, 3, 2]
    assert ds.templates == ["positive", "negative", "positive", "hybrid"]
    assert ds.captions[0] == ["a", "b", "c", "d"] and all(p.is_file() for p in ds.image_paths)
    assert ds.lines.tolist() == [2, 3, 4, 11]
    assert [b.row for b in ds.bad_rows] == [5, 6, 7, 8, 9, 10]
    reasons = [b.reason for b in ds.bad_rows]
    assert "empty caption_1" in reasons[0] and "0..3" in reasons[1] and "0..3" in reasons[2]
    assert "image not found" in reasons[3] and "template" in reasons[4] and "field" in reasons[5]
    assert all(b.file == str(path) for b in ds.bad_rows)
    # root: relative paths resolve against it
    (tmp_path / "sub").mkdir()
    moved = _csv(tmp_path / "sub" / "mcq.csv", header, [["imgs/a.png", "1", "a", "b", "c", "d", "hybrid"]])
    assert len(read_mcq_csv(moved)) == 0 and len(read_mcq_csv(moved, root=tmp_path)) == 1
    # missing columns / missing file / empty file
    bad = _csv(tmp_path / "bad.csv", ["image_path", "caption_0"], [["a.png", "x"]])
    with pytest.raises(DataError, match=r"bad\.csv.*correct_answer.*caption_1"):
        read_mcq_csv(bad)
    with pytest.raises(DataError, match="nope.csv"):
        read_mcq_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_mcq_csv(tmp_path / "empty.csv")


def test_read_retrieval_csv(tmp_path):
    for n in "abc":
        _png(tmp_path / f"{n}.png")
    path = _csv(tmp_path / "ret.csv", ["filepath", "captions", "positive_objects", "negative_objects", "image_id"], [
        ["a.png", "['a dog', 'a dog on grass']", "['dog']", "[]", "1"],
        ["b.png", "a plain caption", '["cat", "mat"]', "['dog']", ""],
        ["a.png", "['another dog']", "['grass']", "", "1"],      # same image: merged
        ["c.png", "[]", "", "", ""],                              # no captions
        ["c.png", "['unclosed", "", "", ""],                      # malformed list
        ["c.png", "['ok']", "[1, 2]", "", ""],                    # objects not strings
        ["zzz.png", "['x']", "", "", ""],                         # missing image
    ])
    ds = read_retrieval_csv(path)
    assert [p.name for p in ds.image_paths] == ["a.png", "b.png"]
    assert ds.captions == ["a dog", "a dog on grass", "a plain caption", "another dog"]
    assert ds.caption_to_image.dtype == np.int64 and ds.caption_to_image.tolist() == [0, 0, 1, 0]
    assert ds.positive_objects == [["dog", "grass"], ["cat", "mat"]]
    assert ds.negative_objects == [[], ["dog"]] and ds.image_ids == ["1", None]
    assert [b.row for b in ds.bad_rows] == [5, 6, 7, 8]
    assert "no captions" in ds.bad_rows[0].reason and "captions:" in ds.bad_rows[1].reason
    assert "positive_objects" in ds.bad_rows[2].reason and "not found" in ds.bad_rows[3].reason
    # the optional columns may be absent
    ds2 = read_retrieval_csv(_csv(tmp_path / "min.csv", ["filepath", "captions"], [["a.png", "['x', 'y']"]]))
    assert ds2.captions == ["x", "y"] and ds2.positive_objects == [[]] and ds2.image_ids == [None]
    with pytest.raises(DataError, match="captions"):
        read_retrieval_csv(_csv(tmp_path / "nocap.csv", ["filepath"], [["a.png"]]))


def test_read_ccneg_pickle_and_csv(tmp_path):
    imgs = tmp_path / "ccneg_images"
    for k in range(5):
        _png(imgs / f"{k}.jpg")

    def ann(k, neg="a photo of no dog, cat"):
        return {"json": {"caption": f"caption {k}"}, "sop_data": {"negative-prompt": neg, "sop_chosen_object": "dog"}}

    data = {"image_paths": [f"/workspace/datasets/cc3m/ccneg_images/{k}.jpg" for k in range(5)] + ["gone.jpg"],
            "annotations": [ann(k) for k in range(5)] + [ann(5)]}
    data["annotations"][1] = {"json": {}}                       # lacks the caption
    data["annotations"][2]["json"]["caption"] = "  "            # empty caption
    torch.save(data, tmp_path / "ccneg.pt")
    ds = read_ccneg(tmp_path / "ccneg.pt", split="all")
    assert [p.name for p in ds.image_paths] == ["0.jpg", "3.jpg", "4.jpg"]
    assert ds.captions == ["caption 0", "caption 3", "caption 4"]
    assert ds.negative_captions[0] == "a photo of no dog cat"   # commas removed, as the reference does
    assert ds.negated_objects == ["dog"] * 3
    assert [b.row for b in ds.bad_rows] == [1, 2, 5] and "not found" in ds.bad_rows[2].reason
    # splits: the last 40,000 entries are the test split (all 6 here), the rest train (none)
    assert len(read_ccneg(tmp_path / "ccneg.pt")) == 3 and len(read_ccneg(tmp_path / "ccneg.pt", split="train")) == 0
    with pytest.raises(InputError, match="split"):  # a SaynoError (one-line CLI error) and a ValueError
        read_ccneg(tmp_path / "ccneg.pt", split="val")
    torch.save({"foo": 1}, tmp_path / "wrong.pt")
    with pytest.raises(DataError, match="image_paths"):
        read_ccneg(tmp_path / "wrong.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.pt"):
        read_ccneg(tmp_path / "junk.pt")
    # the CSV variant
    path = _csv(tmp_path / "cc.csv", ["image_path", "caption", "negative_caption", "negated_object"], [
        ["ccneg_images/0.jpg", "a dog", "no dog", "dog"],
        ["ccneg_images/1.jpg", "a cat", "no cat", ""],
        ["ccneg_images/2.jpg", "a cat", "", ""],
        ["ccneg_images/9.jpg", "a cat", "no cat", ""],
    ])
    ds = read_ccneg(path)
    assert ds.captions == ["a dog", "a cat"] and ds.negative_captions == ["no dog", "no cat"]
    assert ds.negated_objects == ["dog", None] and [b.row for b in ds.bad_rows] == [4, 5]
    with pytest.raises(DataError, match="negative_caption"):
        read_ccneg(_csv(tmp_path / "cc2.csv", ["image_path", "caption"], []))


def test_image_folder_and_class_names(tmp_path):
    root = tmp_path / "data"
    _png(root / "golden_retriever" / "1.png")
    _png(root / "golden_retriever" / "2.JPG")
    _png(root / "cat" / "sub" / "3.webp")
    (root / "cat" / "notes.txt").write_text("not an image")
    _png(root / "stray.png")
    ds = read_image_folder(root)
    assert ds.class_names == ["cat", "golden retriever"]
    assert [p.name for p in ds.image_paths] == ["3.webp", "1.png", "2.JPG"] and ds.labels.tolist() == [0, 1, 1]
    assert len(ds.bad_rows) == 1 and "outside" in ds.bad_rows[0].reason
    # a class list (or file) sets the label order; names without a folder are classes with no images
    names = tmp_path / "classes.txt"
    names.write_text("# ID classes\nGolden Retriever\n\ncat\nbird\n")
    assert read_class_names(names) == ["Golden Retriever", "cat", "bird"]
    ds = read_image_folder(root, names)
    assert ds.class_names == ["Golden Retriever", "cat", "bird"] and ds.labels.tolist() == [1, 0, 0]
    assert ds.folders == ["golden_retriever", "cat", None]
    # no name matches any folder and the counts agree: sorted folders in order (ImageNet wnids)
    assert read_image_folder(root, ["x", "y"]).labels.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="match no class"):
        read_image_folder(root, ["cat", "dog", "bird"])
    names.write_text("cat\ndog\ncat\n")
    with pytest.raises(DataError, match="duplicated.*cat"):
        read_class_names(names)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        read_image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="no such"):
        read_image_folder(tmp_path / "nope")


def test_report_bad_rows():
    console = Console(record=True, width=200)
    report_bad_rows([], console)
    assert console.export_text() == ""
    rows = [BadRow("a.csv", k, f"image not found: {k}.png") for k in range(30)] + [BadRow("x.png", None, "corrupt")]
    report_bad_rows(rows, console, limit=5)
    text = console.export_text()
    assert "31 bad row(s)" in text and "a.csv" in text and "26 more" in text and "image not found: 30" in text
    assert str(rows[-1]) == "x.png: corrupt" and str(rows[0]) == "a.csv:0: image not found: 0.png"
