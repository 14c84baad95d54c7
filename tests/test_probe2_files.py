"""Issue 29 (second probe): files sayno reads are validated where they are read, nothing runs from a planted
file, hostile art has limits, a full disk while encoding is one line, and logs to a file stay readable."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sayno.base.training import OtherRunState, ResumeFile, run_key
from sayno.checkpoint import CheckpointError


class _Planted:
    """A pickle whose loading would create a marker file (what a planted resume state could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------------------------- item 1: resume state
def test_a_planted_pickle_as_resume_state_does_not_run(clipn_file, tmp_path):
    from sayno.clipn.train import TrainConfig, TrainData, state_path, train_clipn

    bb, _ = clipn_file
    caps = [f"a {w}" for w in ("dog", "cat", "car", "tree")] * 2
    g = bb.encode_text(caps)
    data = TrainData(g.clone(), g, bb.tokenize(caps), caps, torch.arange(len(caps)), "planted")
    out = tmp_path / "clipn.safetensors"
    marker = tmp_path / "pwned"
    torch.save({"key": "x", "payload": _Planted(marker)}, state_path(out))
    assert state_path(out).name == "clipn.safetensors.state.pt"
    with pytest.raises(CheckpointError) as info:
        train_clipn(bb, data, out, TrainConfig(epochs=1, batch_size=4), progress=False)
    assert not marker.exists()
    msg = str(info.value)
    assert str(state_path(out)) in msg and "\n" not in msg and "delete it" in msg
    with pytest.raises(CheckpointError, match="not a resume state"):  # refused before the data is even read
        train_clipn(bb, tmp_path / "no-such-captions.csv", out, TrainConfig(epochs=1, batch_size=4), progress=False)
    # the same file read directly, and a plain pickle: refused without unpickling
    with pytest.raises(CheckpointError, match="not a resume state"):
        ResumeFile(state_path(out), "k").load()
    assert not marker.exists()


def test_a_planted_partial_file_does_not_run_in_glasses_training(clip, tmp_path):
    from sayno.glasses.train import train_glasses

    out = tmp_path / "g.safetensors"
    marker = tmp_path / "pwned"
    torch.save({"key": "x", "payload": _Planted(marker)}, str(out) + ".partial")
    with pytest.raises(CheckpointError, match="g.safetensors.partial: not a resume state"):
        train_glasses(clip, tmp_path / "no-such-world", out, log=lambda s: None)  # before the data is read
    assert not marker.exists()


def test_resume_state_round_trips_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    rng = np.random.default_rng(3)
    state = {"opt": opt.state_dict(), "sched": sched.state_dict(), "best_loss": float("inf"), "pair": (1, "a"),
             "arr": np.arange(6, dtype=np.float32).reshape(2, 3), "history": [{"step": 1, "loss": 0.5}], "none": None}
    resume = ResumeFile(tmp_path / "run.partial", run_key({"lr": 1}))
    resume.save(state, rng=rng)
    assert resume.path.read_bytes()[:1] != b"\x80"  # not a pickle
    assert oct(resume.path.stat().st_mode & 0o777) == "0o600"
    back = resume.load()
    assert back["best_loss"] == float("inf") and back["pair"] == (1, "a") and back["none"] is None
    assert np.array_equal(back["arr"], state["arr"]) and back["history"] == state["history"]
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.98)
    assert set(back["opt"]["state"]) == {0, 1}
    for k in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(back["opt"]["state"][0][k], opt.state_dict()["state"][0][k])
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-2)
    opt2.load_state_dict(back["opt"])  # loads into a real optimiser
    with pytest.raises(OtherRunState):
        ResumeFile(resume.path, run_key({"lr": 2})).load()


def test_resume_state_of_someone_else_is_refused(tmp_path):
    resume = ResumeFile(tmp_path / "run.partial", "k")
    resume.save({"epoch": 1})
    os.chmod(resume.path, 0o666)
    with pytest.raises(CheckpointError, match="other users may write"):
        resume.load()
    os.chmod(resume.path, 0o600)
    assert resume.load()["epoch"] == 1
    damaged = tmp_path / "damaged.partial"
    damaged.write_bytes(b"\x80\x04K\x01.")  # pickle of 1
    with pytest.raises(CheckpointError, match="damaged.partial"):
        ResumeFile(damaged, "k").load()


def test_no_weights_only_false_outside_the_ccneg_reader():
    root = Path(__file__).resolve().parents[1] / "sayno"
    hits = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                  if "weights_only=False)" in p.read_text(encoding="utf-8"))
    assert hits == ["data/ccneg.py"]
    assert not any("pickle.load" in p.read_text(encoding="utf-8") for p in root.rglob("*.py"))


# ------------------------------------------------------------------------------------- item 4: Glasses checkpoints
@pytest.fixture(scope="module")
def clip():
    from sayno.glasses.testing import tiny_clip

    return tiny_clip(seed=0)


@pytest.fixture(scope="module")
def glasses_file(clip, tmp_path_factory):
    from sayno.glasses import Glasses, GlassesConfig

    g = Glasses(GlassesConfig(embed_dim=clip.embed_dim, num_layers=clip.num_text_layers, hidden=16,
                              detector_hidden=8), clip)
    path = tmp_path_factory.mktemp("glasses") / "g.safetensors"
    g.save(path)
    return clip, path


def _rewrite(src: Path, dst: Path, config: dict | None = None, raw_config: str | None = None,
             tensor_dtype: torch.dtype | None = None) -> Path:
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if config is not None:
        meta["sayno.config"] = json.dumps({**json.loads(meta["sayno.config"]), **config})
    if raw_config is not None:
        meta["sayno.config"] = raw_config
    if tensor_dtype is not None:
        name = min(tensors)
        tensors[name] = tensors[name].to(tensor_dtype)
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("change, needle", [
    ({"hidden": -5}, "hidden must be in 1..16384"), ({"hidden": "abc"}, "hidden must be a whole number"),
    ({"hidden": 2.5}, "hidden must be a whole number"), ({"hidden": 1e9}, "hidden must be a whole number"),
    ({"hidden": 10**9}, "hidden must be in"), ({"detector_hidden": True}, "detector_hidden must be a whole"),
    ({"lambda_max": float("nan")}, "lambda_max must be a finite number"), ({"lambda_max": -1e9}, "lambda_max"),
    ({"lambda_max": "2"}, "lambda_max must be a number"), ({"syntax_layers": [0.5]}, "syntax_layers"),
    ({"prompt": 3}, "prompt must be a string"),
])
def test_glasses_checkpoint_config_is_checked_where_it_is_read(glasses_file, tmp_path, change, needle):
    from sayno.glasses import load_glasses

    clip, good = glasses_file
    bad = _rewrite(good, tmp_path / "bad.safetensors", config=change)
    with pytest.raises(CheckpointError) as info:
        load_glasses(bad, clip)
    msg = str(info.value)
    assert msg.startswith(f"{bad}: its config is not usable") and needle in msg and "\n" not in msg


@pytest.mark.parametrize("kind", ["float8", "deep json", "not json object"])
def test_glasses_checkpoint_tensors_and_header_are_checked(glasses_file, tmp_path, kind):
    from sayno.glasses import load_glasses

    clip, good = glasses_file
    if kind == "float8":
        bad = _rewrite(good, tmp_path / "f8.safetensors", tensor_dtype=torch.float8_e4m3fn)
        needle = "has dtype float8_e4m3fn"
    elif kind == "deep json":
        bad = _rewrite(good, tmp_path / "deep.safetensors", raw_config="[" * 100_000 + "]" * 100_000)
        needle = "nested too deeply"
    else:
        bad = _rewrite(good, tmp_path / "list.safetensors", raw_config="[1, 2]")
        needle = "not a JSON object"
    with pytest.raises(CheckpointError) as info:
        load_glasses(bad, clip)
    assert str(bad) in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_index_build_loads_the_glasses_checkpoint_before_recording_it(glasses_file, tmp_path):
    from sayno.search.build import glasses_identity

    clip, good = glasses_file
    assert glasses_identity(good, clip)["path"] == str(good)
    bad = _rewrite(good, tmp_path / "f8.safetensors", tensor_dtype=torch.float8_e4m3fn)  # the header is fine
    with pytest.raises(CheckpointError, match="float8"):
        glasses_identity(bad, clip)
    missing = _rewrite(good, tmp_path / "shape.safetensors", config={"hidden": 17})  # tensors of another size
    with pytest.raises(CheckpointError, match="shape"):
        glasses_identity(missing, clip)


@pytest.fixture(scope="module")
def clipn_file(tmp_path_factory):
    from sayno.clipn.checkpoint import load_clipn, save_clipn
    from sayno.clipn.model import NoTextEncoder
    from sayno.clipn.testing import tiny_backbone

    bb = tiny_backbone(seed=0)
    good = save_clipn(tmp_path_factory.mktemp("clipn") / "c.safetensors", NoTextEncoder.from_backbone(bb, n_prompts=2),
                      bb, {})
    assert load_clipn(good, bb) is not None
    return bb, good


@pytest.mark.parametrize("change, needle", [
    ({"n_prompts": "abc"}, "n_prompts 'abc'"), ({"n_prompts": -5}, "n_prompts -5"), ({"n_prompts": 2.5}, "n_prompts"),
    ({"variant": "odd"}, "variant 'odd'"), ({"learn_bias": "yes"}, "learn_bias 'yes'"),
])
def test_clipn_checkpoint_config_is_checked_where_it_is_read(clipn_file, tmp_path, change, needle):
    from sayno.clipn.checkpoint import load_clipn

    bb, good = clipn_file
    bad = _rewrite(good, tmp_path / "bad.safetensors", config=change)
    with pytest.raises(CheckpointError) as info:
        load_clipn(bad, bb)
    assert str(info.value).startswith(f"{bad}: its config has") and needle in str(info.value)


def test_envelope_json_from_an_index_is_checked():
    from sayno.checkpoint import Envelope

    with pytest.raises(CheckpointError, match="config is not a JSON object"):
        Envelope.from_dict({"format": "x", "config": [1, 2]}, "meta.json")
    with pytest.raises(CheckpointError, match="metadata is not a JSON object"):
        Envelope.from_dict([1], "meta.json")


# ------------------------------------------------------------------------------------- item 6: full disk while encoding
def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullFile:
    """A file whose writes fail as on a full disk (the OS boundary)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        _no_space()

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_full_disk_while_encoding_into_the_feature_cache_is_one_line(clip, tmp_path, monkeypatch):
    from PIL import Image

    from sayno.features import FeatureCache, encode_images, encode_texts
    from sayno.features import cache as cache_module
    from sayno.features.encode import CacheWriteError
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(files[-1])
    monkeypatch.setattr(cache_module.os, "fsync", _no_space)  # the disk fills as the shard is written
    cache = FeatureCache(tmp_path / "cache")
    for encode in (lambda: encode_images(clip, files, cache=cache, progress=False),
                   lambda: encode_texts(clip, ["a dog"], cache=cache, progress=False)):
        with pytest.raises(CacheWriteError) as info:
            encode()
        msg = str(info.value)
        assert "cannot write the feature cache (No space left on device)" in msg and "\n" not in msg
        assert str(tmp_path / "cache") in msg
    assert not list((tmp_path / "cache").rglob("*.npz")) and not list((tmp_path / "cache").rglob(".tmp-*"))


def test_full_disk_while_encoding_an_index_is_one_line(clip, tmp_path, monkeypatch):
    import builtins

    from PIL import Image

    from sayno.search import shards
    from sayno.search.build import IndexConfig, build_index
    from sayno.search.store import SearchError

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    monkeypatch.setattr(shards, "open", lambda *a, **k: _FullFile(builtins.open(*a, **k)),  # noqa: SIM115
                        raising=False)
    with pytest.raises(SearchError) as info:
        build_index(images, tmp_path / "idx", IndexConfig(glasses="none", batch_size=2), backbone=clip,
                    progress=False)
    assert "cannot write the index (No space left on device)" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------- item 5: hostile art
def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` RGBA pixels (its pixel data is missing: only the header counts)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _nested_use_svg(path: Path, levels: int, fan: int = 10, points: int = 1500) -> Path:
    """The probe's SVG: ``levels`` of ``<g>`` that each ``<use>`` the level below ``fan`` times, over one long
    path (``fan ** levels`` copies of it; 6 levels of 10 is ~12 KB and would keep cairosvg busy for days)."""
    pts = " ".join(f"L{(i * 7) % 128} {(i * 13) % 128}" for i in range(points))
    parts = [('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
              f'viewBox="0 0 128 128"><defs><path id="p0" d="M0 0 {pts} Z" fill="red"/>')]
    for level in range(1, levels + 1):
        parts.append(f'<g id="p{level}">' + f'<use xlink:href="#p{level - 1}"/>' * fan + "</g>")
    parts.append(f'</defs><use xlink:href="#p{levels}"/></svg>')
    path.write_text("".join(parts))
    return path


def test_nested_use_svg_is_refused_by_structure_before_rendering(tmp_path):
    import time

    from sayno.world.concepts import concept_by_name
    from sayno.world.styles import ART_LIMITS, ArtLimits, FolderStyle, StyleError, render_svg, svg_work

    dog = concept_by_name("dog")
    hostile = _nested_use_svg(tmp_path / f"{dog.codepoint}.svg", levels=6)
    assert hostile.stat().st_size < 25_000
    t0 = time.perf_counter()
    with pytest.raises(StyleError, match="expands to more than"):
        FolderStyle(tmp_path).glyph(dog)  # default limits
    assert time.perf_counter() - t0 < 5
    assert svg_work(_nested_use_svg(tmp_path / "one.svg", levels=1)) < ART_LIMITS.max_svg_work
    with pytest.raises(StyleError, match="expands to more than 1,000"):
        render_svg(tmp_path / "one.svg", 32, limits=ArtLimits(max_svg_work=1000))
    (tmp_path / "loop.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999'
                                       '/xlink"><g id="a"><use xlink:href="#b"/></g><g id="b"><use href="#a"/></g>'
                                       '</svg>')
    with pytest.raises(StyleError, match="refers to itself"):
        svg_work(tmp_path / "loop.svg")
    with pytest.raises(StyleError, match="more than the 100 an emoji may have"):
        svg_work(tmp_path / "one.svg", ArtLimits(max_svg_bytes=100))
    (tmp_path / "broken.svg").write_text("<svg><g></svg>")
    with pytest.raises(StyleError, match="not valid XML"):
        svg_work(tmp_path / "broken.svg")


@pytest.mark.parametrize("megapixels, needle", [(400, "too large to draw"), (150, "more than the 16,777,216")])
def test_huge_raster_glyphs_are_refused_from_their_header(tmp_path, megapixels, needle):
    from sayno.world.concepts import concept_by_name
    from sayno.world.styles import FolderStyle, StyleError

    dog = concept_by_name("dog")
    side = int((megapixels * 1e6) ** 0.5)
    _png_header(tmp_path / f"{dog.codepoint}.png", side, side)
    with pytest.raises(StyleError) as info:
        FolderStyle(tmp_path).glyph(dog)
    assert needle in str(info.value) and str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_pixel_limit_is_configurable_and_missing_concepts_say_why(tmp_path):
    import warnings

    from PIL import Image

    from sayno.world.concepts import concept_by_name, load_concepts
    from sayno.world.styles import ArtLimits, StyleError, read_rgba, style_coverage

    small = tmp_path / "small.png"
    Image.new("RGBA", (20, 20), (200, 0, 0, 255)).save(small)
    assert read_rgba(small).size == (20, 20)
    with pytest.raises(StyleError, match="20 x 20 pixels, more than the 100"):
        read_rgba(small, limits=ArtLimits(max_pixels=100))
    art = tmp_path / "art"
    art.mkdir()
    for c in load_concepts():
        if c.name != "dog":
            Image.new("RGBA", (8, 8), (200, 0, 0, 255)).save(art / f"{c.codepoint}.png")
    _png_header(art / f"{concept_by_name('cat').codepoint}.png", 13000, 13000)
    style_coverage.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            style_coverage(f"folder:{art}")
    finally:
        style_coverage.cache_clear()
    msg = " ".join(str(w.message) for w in caught)
    assert f"cannot draw 2 of {len(load_concepts())} concepts" in msg
    assert f"dog (no {concept_by_name('dog').codepoint}.png" in msg and "cat (style image" in msg
    assert "more than the 16,777,216" in msg


# ------------------------------------------------------------------------------------- issue 27 item 5: readable logs
def test_progress_written_to_a_file_is_plain_lines_and_skipped_work_leaves_no_bar(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "build.log"
    with open(log, "w") as f:  # not a terminal: what CI logs and `> file` get
        r = subprocess.run([sys.executable, "-c", "from sayno.cli import app; app()", "world", "build",
                            str(tmp_path / "w"), "--scale", "0.002", "--parts", "test,captions", "-j", "1"],
                           check=False, stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text
    assert "━" not in text and "\x1b[" not in text and "\r" not in text  # no bars, no cursor moves
    done = [re.fullmatch(r"(test scenes|caption pairs): (\d+)/(\d+) in [\d.]+ s", line) for line in text.splitlines()]
    assert [m.group(1) for m in done if m] == ["test scenes", "caption pairs"], text
    assert all(m.group(2) == m.group(3) != "0" for m in done if m)  # finished work only, never 0/N


def test_a_skipped_task_leaves_no_bar_on_a_terminal_either():
    import io

    from rich.console import Console

    from sayno.cliutil import progress_bar

    out = io.StringIO()
    with progress_bar(Console(file=out, force_terminal=True, width=100)) as bar:
        bar.update(bar.add_task("hashing images", total=4), completed=4)
        bar.add_task("encoding images", total=4)  # everything was cached: nothing to encode
    last_frame = out.getvalue().rsplit("\x1b[2K", 1)[-1]
    assert "hashing images" in last_frame and "encoding images" not in last_frame


def test_wide_tables_in_a_log_keep_their_borders(monkeypatch):
    import io

    from rich.table import Table

    from sayno import cliutil

    out = io.StringIO()  # not a terminal
    monkeypatch.setattr(cliutil.sys, "stdout", out)
    table = Table(title="a wide result table")
    for i in range(24):
        table.add_column(f"metric_{i}")
    table.add_row(*[f"{0.123456 * i:.4f}" for i in range(24)])
    cliutil.output_console().print(table)
    lines = [line for line in out.getvalue().splitlines() if line.strip() and "wide result" not in line]
    assert len(lines) == 5 and "…" not in out.getvalue()
    assert all(line[0] in "┏┃┡│└" and line[-1] in "┓┃┩│┘" for line in lines)  # every border closed
    assert len({len(line) for line in lines}) == 1 and "metric_23" in lines[1] and "2.8395" in lines[3]


def test_shipped_weights_record_no_absolute_paths():
    """The shipped checkpoints' metadata names data by paths relative to the data root (issue 29)."""
    from sayno.checkpoint import read_header

    weights = Path(__file__).resolve().parents[1] / "sayno" / "weights"
    for path in sorted(weights.glob("*.safetensors")):
        text = json.dumps(read_header(path).to_dict())
        assert not re.search(r'"/(work|home|root|tmp|Users|mnt)/', text), path.name
    training = read_header(weights / "glasses-embedded.safetensors").sections["training"]
    assert training["data_root"] == "world-v4x" and "negation_train.csv" in training["data"]  # the card's folder


def test_new_checkpoints_record_data_relative_to_its_root(tmp_path):
    from sayno.base.training import data_record

    (tmp_path / "world").mkdir()
    files = [tmp_path / "world" / "a.csv", tmp_path / "world" / "b.csv"]
    assert data_record(files[:1], files[1:]) == {"data_root": "world", "data": ["a.csv"], "val_data": ["b.csv"]}
    assert data_record([files[0]]) == {"data_root": "world", "data": ["a.csv"]}
