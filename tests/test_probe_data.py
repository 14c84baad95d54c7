"""Issue 12, item 9: NegBench's official CSVs hold absolute paths of their authors' machine; every reader re-roots
them under ``--root`` by their longest tail that exists there (one rule, :func:`sayno.data._io.locate`)."""

import csv
from pathlib import Path

import pytest
from PIL import Image

from sayno.data import read_ccneg, read_mcq_csv, read_retrieval_csv
from sayno.data._io import locate

NEGBENCH = Path(__file__).resolve().parents[2] / "shared" / "negbench"
VOC = "/data/healthy-ml/scratch/kumail/projects/data/voc2007/VOCdevkit/VOC2007/JPEGImages/{}.jpg"
COCO = "/data/healthy-ml/scratch/kumail/projects/data/coco/images/val2017/{}.jpg"


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path, format="PNG")
    return path


def _head(file: Path, rows: int) -> tuple[list[str], list[list[str]]]:
    with open(file, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [next(reader) for _ in range(rows)]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_locate_takes_the_longest_existing_tail(tmp_path):
    root = tmp_path / "images"
    deep = _png(root / "voc2007/VOCdevkit/VOC2007/JPEGImages/000005.jpg")
    shallow = _png(root / "JPEGImages/000005.jpg")
    assert locate(VOC.format("000005"), root) == deep  # the longest tail wins over a shorter one
    deep.unlink()
    assert locate(VOC.format("000005"), root) == shallow
    assert locate(VOC.format("999999"), root) == Path(VOC.format("999999"))  # nowhere: reported as given
    assert locate("JPEGImages/000005.jpg", root) == shallow  # relative: under root, as before
    outside = _png(tmp_path / "outside.png")
    assert locate(str(outside), root) == outside  # an existing absolute path is kept
    _png(tmp_path / "etc" / "passwd.png")
    assert locate("/x/y/../etc/passwd.png", root) == Path("/x/y/../etc/passwd.png")  # a tail never climbs out


def test_mcq_with_the_authors_absolute_paths_is_rerooted(tmp_path):
    rows = [[VOC.format("004070"), "0", "This image does not include person", "This image includes person but not motorbike",
             "This image includes person", "This image does not include motorbike", "negative"],
            [VOC.format("001089"), "0", "This image includes bicycle but not person", "This image includes person but not bicycle",
             "This image includes person", "This image does not include bicycle", "hybrid"]]
    header = ["image_path", "correct_answer", "caption_0", "caption_1", "caption_2", "caption_3",
              "correct_answer_template"]
    data = _write(tmp_path / "VOC2007_mcq.csv", header, rows)
    root = tmp_path / "datasets"
    _png(root / "voc2007/VOCdevkit/VOC2007/JPEGImages/004070.jpg")
    _png(root / "voc2007/VOCdevkit/VOC2007/JPEGImages/001089.jpg")
    ds = read_mcq_csv(data, root)
    assert ds.bad_rows == [] and len(ds) == 2
    assert ds.image_paths[0] == root / "voc2007/VOCdevkit/VOC2007/JPEGImages/004070.jpg"


def test_retrieval_with_the_authors_absolute_paths_is_rerooted(tmp_path):
    rows = [["['person', 'cup']", "['chair']", COCO.format("000000397133"), "397133",
             "['A man is in a kitchen. There is no chair in the image.']"]]
    data = _write(tmp_path / "r.csv", ["positive_objects", "negative_objects", "filepath", "image_id", "captions"],
                  rows)
    root = tmp_path / "coco"
    _png(root / "val2017" / "000000397133.jpg")  # only the shortest useful tail exists under root
    ds = read_retrieval_csv(data, root)
    assert ds.bad_rows == [] and ds.image_paths == [root / "val2017" / "000000397133.jpg"]


def test_ccneg_csv_reroots_too(tmp_path):
    data = _write(tmp_path / "c.csv", ["image_path", "caption", "negative_caption"],
                  [["/workspace/datasets/cc3m/ccneg_images/0.jpg", "a dog", "no dog"]])
    _png(tmp_path / "imgs" / "ccneg_images" / "0.jpg")
    ds = read_ccneg(data, tmp_path / "imgs")
    assert ds.bad_rows == [] and ds.image_paths == [tmp_path / "imgs" / "ccneg_images" / "0.jpg"]


@pytest.mark.skipif(not (NEGBENCH / "VOC2007_mcq.csv").is_file(), reason="../shared/negbench is not here")
def test_real_negbench_voc_rows_read_under_root(tmp_path):
    header, rows = _head(NEGBENCH / "VOC2007_mcq.csv", 5)
    assert all(r[0].startswith("/data/") for r in rows)  # the authors' machine
    data = _write(tmp_path / "VOC2007_mcq.csv", header, rows)
    root = tmp_path / "root"
    for r in rows:
        _png(root / "VOCdevkit" / "VOC2007" / "JPEGImages" / Path(r[0]).name)
    ds = read_mcq_csv(data, root)
    assert ds.bad_rows == [] and len(ds) == 5
    assert all(str(p).startswith(str(root)) for p in ds.image_paths)


@pytest.mark.skipif(not (NEGBENCH / "COCO_val_negated_retrieval_template.csv").is_file(),
                    reason="../shared/negbench is not here")
def test_real_negbench_coco_retrieval_rows_read_under_root(tmp_path):
    header, rows = _head(NEGBENCH / "COCO_val_negated_retrieval_template.csv", 4)
    column = header.index("filepath")
    assert all(r[column].startswith("/data/") for r in rows)
    data = _write(tmp_path / "r.csv", header, rows)
    root = tmp_path / "root"
    for r in rows:
        _png(root / "coco" / "images" / "val2017" / Path(r[column]).name)
    ds = read_retrieval_csv(data, root)
    assert ds.bad_rows == [] and len(ds.image_paths) == 4
