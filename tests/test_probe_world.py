"""Issue 12, items 3 and 15: ``world build`` refuses to mix a new world into an old one, replaces it whole on
``--overwrite``, and checks its arguments (a file as OUT, ``--size 0``, ``--scale 0``) before any work."""

import json

import pytest
from typer.testing import CliRunner

from sayno.cli import app
from sayno.errors import InputError
from sayno.world import WorldConfig, build_world

TINY = {"train_groups": 1, "val_groups": 1, "test_groups": 3, "caption_images": 2, "classify_per_class": 1, "predicate_scenes": 2, "predicate_train_scenes": 2,
        "ood_id_per_class": 1, "ood_per_class": 1}
runner = CliRunner()


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_an_existing_world_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "w"
    build_world(out, WorldConfig(**TINY), parts=("test",), progress=False)
    before = {f: (out / f).read_bytes() for f in _files(out)}
    with pytest.raises(InputError, match="overwrite"):
        build_world(out, WorldConfig(**{**TINY, "test_groups": 2}, seed=1), parts=("test",), progress=False)
    assert {f: (out / f).read_bytes() for f in _files(out)} == before  # untouched


def test_overwrite_replaces_the_whole_world_no_stale_images(tmp_path):
    out = tmp_path / "w"
    build_world(out, WorldConfig(**{**TINY, "test_groups": 5}), parts=("test", "classify"), progress=False)
    (out / "notes.txt").write_text("mine")
    build_world(out, WorldConfig(**{**TINY, "test_groups": 2}), parts=("test",), progress=False, overwrite=True)
    files = _files(out)
    assert "notes.txt" not in files and not any(f.startswith("classify") for f in files)
    images = [f for f in files if f.startswith("images/test/")]
    assert len(images) == 4  # 2 groups of 2: none of the 10 old images is left beside them
    assert json.loads((out / "world.json").read_text())["parts"].keys() == {"test"}
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no temporary folder left beside it


def test_a_failed_build_leaves_the_old_world_as_it_was(tmp_path, monkeypatch):
    from sayno.world import build as world_build

    out = tmp_path / "w"
    build_world(out, WorldConfig(**TINY), parts=("test",), progress=False)
    before = _files(out)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(world_build, "build_captions", broken)
    with pytest.raises(RuntimeError, match="fire"):
        build_world(out, WorldConfig(**TINY), parts=("test", "captions"), progress=False, overwrite=True)
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["w"]


def test_an_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "w").mkdir()
    build_world(tmp_path / "w", WorldConfig(**TINY), parts=("test",), progress=False)
    assert (tmp_path / "w" / "world.json").is_file()
    assert (tmp_path / "w").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("args, needle", [
    (["--size", "0"], "size"),
    (["--size", "8"], "size"),
    (["--scale", "0"], "scale"),
    (["--scale", "-1"], "scale"),
])
def test_cli_checks_arguments_before_any_work(tmp_path, args, needle):
    out = tmp_path / "w"
    r = runner.invoke(app, ["world", "build", str(out), "--parts", "test", *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error:") and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_refuses_a_file_and_an_existing_world(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    r = runner.invoke(app, ["world", "build", str(target), "--parts", "test", "--scale", "0.001"])
    assert r.exit_code == 2 and "is a file" in r.stderr, r.output
    assert target.read_text() == "x"
    out = tmp_path / "w"
    build_world(out, WorldConfig(**TINY), parts=("test",), progress=False)
    r = runner.invoke(app, ["world", "build", str(out), "--parts", "test", "--scale", "0.001"])
    assert r.exit_code == 2 and "--overwrite" in r.stderr, r.output
    r = runner.invoke(app, ["world", "build", str(out), "--parts", "test", "--scale", "0.001", "--force"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "images" / "test").iterdir())) == 2  # scale 0.001: one group
