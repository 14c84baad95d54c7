"""``sayno benchmark`` across art styles (issue 11): which styles run, the note for a style whose art is missing,
the drop from the training style (from the per-style rows) in tables, JSON and ``sayno report --markdown``, and
every other style's world handed to the OOD benchmark as covariate shift."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sayno.cli import app
from sayno.errors import InputError
from sayno.eval import runner
from sayno.eval.benchmarks import plain
from sayno.world import WorldConfig
from sayno.world.styles import NOTO_PATHS, get_style, style_coverage

cli = CliRunner()
TINY = {"train_groups": 0, "val_groups": 0, "test_groups": 8, "caption_images": 0, "classify_per_class": 1, "predicate_scenes": 2, "predicate_train_scenes": 2,
        "ood_id_classes": 3, "ood_id_per_class": 1}  # the OOD sets' sizes stay the main job's choice


@pytest.fixture
def no_npm_styles(tmp_path, monkeypatch):
    """twemoji and fluent without their npm packages (an empty emoji folder); style caches cleared around."""
    monkeypatch.setenv("SAYNO_EMOJI_DIR", str(tmp_path / "emoji"))
    get_style.cache_clear()
    style_coverage.cache_clear()
    yield
    get_style.cache_clear()
    style_coverage.cache_clear()


# ---------------------------------------------------------------------------------------------- choosing styles
def test_styles_default_to_all_four_and_keep_the_order_given():
    assert runner.select_styles() == ("openmoji", "noto", "twemoji", "fluent")
    assert runner.select_styles(["fluent", " openmoji", "fluent"]) == ("fluent", "openmoji")


def test_an_unknown_style_names_the_known_ones():
    with pytest.raises(InputError, match=r"unknown style\(s\) 'apple': use openmoji, noto, twemoji, fluent"):
        runner.select_styles(["openmoji", "apple"])
    with pytest.raises(InputError, match="no style given"):
        runner.select_styles([""])
    r = cli.invoke(app, ["benchmark", "--styles", "openmoji,apple"])
    assert r.exit_code == 2 and "apple" in r.stderr and "twemoji" in r.stderr, r.output
    assert "Traceback" not in r.output


def test_the_styles_option_reaches_the_benchmark(monkeypatch):
    seen = {}
    monkeypatch.setattr(runner, "benchmark", lambda **kw: seen.update(kw) or [])
    r = cli.invoke(app, ["benchmark", "--styles", "noto,fluent", "--json"])
    assert r.exit_code == 0, r.output
    assert seen["styles"] == ["noto", "fluent"]


def test_other_styles_build_only_the_id_images_of_the_ood_part():
    assert runner.style_config("openmoji") == WorldConfig(style="openmoji")
    other = runner.style_config("fluent")
    assert other.style == "fluent" and other.ood_per_class == 0 and other.ood_seen_classes == 0
    assert (other.test_groups, other.ood_id_classes, other.ood_id_per_class) == (
        (WorldConfig().test_groups, WorldConfig().ood_id_classes, WorldConfig().ood_id_per_class))
    # every class keeps a zero-shot row, with half the images
    assert other.classify_per_class == WorldConfig().classify_per_class // 2


def test_a_style_without_its_art_is_skipped_with_a_note(tmp_path, monkeypatch, no_npm_styles):
    built = []

    def fake_build(folder, cfg, **kw):  # looks the style up as build_world does, renders nothing
        get_style(cfg.style)
        built.append((Path(folder).name, cfg.style))

    monkeypatch.setattr(runner, "build_world", fake_build)
    console = Console(record=True, width=400)
    folders, skipped = runner._style_worlds(tmp_path / "w", ("openmoji", "twemoji", "fluent"), console)
    assert built == [("w", "openmoji")] and list(folders) == ["openmoji"]
    assert set(skipped) == {"twemoji", "fluent"}
    notes = [line for line in console.export_text().splitlines() if line.startswith("skipping")]
    assert len(notes) == 2  # one line each
    assert notes[0].startswith("skipping style twemoji: the twemoji style needs the npm package "
                               "emoji-datasource-twitter in ") and "npm install" in notes[0]
    assert notes[1].startswith("skipping style fluent: the fluent style needs the npm package fluentui-emoji")
    with pytest.raises(runner.StyleError, match="none of the styles twemoji can be drawn here: the twemoji style"):
        runner._style_worlds(tmp_path / "v", ("twemoji",), None)


# ---------------------------------------------------------------------------------------------- the drop
def _rows(style: str, cc: float, mcq: float, neg_r5: float, zs: float, methods=("CLIP", "CLIPGlasses")) -> list:
    def result(task, dataset, metric, value):
        return {"task": task, "dataset": f"/w-{style}/{dataset}", "style": style,
                "methods": {m: {metric: value + 10 * i} for i, m in enumerate(methods)}}

    return [result("ccneg", "ccneg_test.csv", "accuracy", cc), result("mcq", "mcq_test.csv", "accuracy", mcq),
            result("retrieval", "retrieval_neg_test.csv", "t2i_R@5", neg_r5),
            result("zeroshot", "classify", "top1", zs)]


def test_the_drop_is_in_style_minus_cross_style_for_each_method_and_metric():
    results = (_rows("openmoji", 90.0, 80.0, 70.0, 95.0) + _rows("noto", 60.0, 50.5, 20.0, 5.0)
               + _rows("fluent", 85.0, 81.0, 69.0, 90.0, methods=("CLIP",)))
    drops = runner.style_drops(results)
    assert drops["CLIP"]["noto"] == pytest.approx({"CC-Neg": 30.0, "MCQ": 29.5, "R@5 negated": 50.0,
                                                   "zero-shot top-1": 90.0})
    assert drops["CLIP"]["fluent"] == pytest.approx({"CC-Neg": 5.0, "MCQ": -1.0, "R@5 negated": 1.0,
                                                     "zero-shot top-1": 5.0})
    assert list(drops["CLIPGlasses"]) == ["noto"]  # no fluent row for it: no drop
    assert drops["CLIPGlasses"]["noto"]["CC-Neg"] == pytest.approx(30.0)
    assert runner.style_drops(_rows("noto", 1, 2, 3, 4)) == {}  # no training-style rows: nothing to compare


class _Backbone:
    spec, fingerprint = "embedded", "0123456789abcdef"


def test_the_drop_result_is_printed_written_and_reported(tmp_path):
    results = _rows("openmoji", 90.0, 80.0, 70.0, 95.0) + _rows("noto", 60.0, 50.5, 20.0, 5.0)
    folders = {"openmoji": tmp_path / "w", "noto": tmp_path / "w-noto"}
    drop = runner.drop_result(results, _Backbone(), folders, {"fluent": "the fluent style needs ..."})
    assert drop["task"] == "style_drop" and drop["train_style"] == "openmoji" and drop["styles"] == ["noto"]
    assert drop["methods"]["CLIPGlasses"]["noto MCQ"] == pytest.approx(29.5)
    assert runner.drop_result(results, _Backbone(), {"noto": tmp_path}, {}) is None  # no training style
    console = Console(record=True, width=300)
    runner.print_benchmark(results + [drop], console)
    text = console.export_text()
    assert "Drop from the training style (openmoji)" in text and "+29.5" in text and "+90.0" in text
    out = tmp_path / "results"
    for r in results[:1] + [drop]:
        runner.write_result(r | {"model": "embedded", "fingerprint": "f"}, out)
    r = cli.invoke(app, ["report", str(out), "--markdown"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "| method | style | CC-Neg | MCQ | R@5 negated | zero-shot top-1 |" in lines
    assert "| CLIPGlasses | noto | +30.0 | +29.5 | +50.0 | +90.0 |" in lines
    assert "Style fluent skipped: the fluent style needs ..." in lines


def test_a_report_lists_rows_by_task_file_and_style_whatever_the_world_folder(tmp_path):
    # result file names hash the dataset's full path, so the folder the worlds were built in must not set the order
    for n, base in enumerate(("/tmp/a", "/tmp/zz")):
        out = tmp_path / f"results{n}"
        for style in ("fluent", "openmoji", "twemoji", "noto"):
            for r in _rows(style, 90.0, 80.0, 70.0, 95.0):
                runner.write_result(r | {"dataset": base + r["dataset"], "model": "embedded", "fingerprint": "f"}, out)
        order = [(r["task"], r["style"]) for r in runner.read_results(out)]
        assert order == [(t, s) for t in ("ccneg", "mcq", "retrieval", "zeroshot") for s in runner.BENCHMARK_STYLES]


# ---------------------------------------------------------------------------------------------- OOD shifts
def _fake_ood(calls: list):
    def world_ood_benchmark(backbone, folder, *, shift_folders=None, clipn=None, cache=None, progress=True):
        calls.append({"folder": folder, "shift_folders": shift_folders})
        return {"task": "ood", "methods": {}}

    return world_ood_benchmark


def test_every_other_style_is_a_covariate_shift_of_the_ood_benchmark(monkeypatch):
    calls: list = []
    monkeypatch.setattr(runner, "world_ood_benchmark", _fake_ood(calls))
    folders = {"openmoji": Path("/w"), "noto": Path("/w-noto"), "fluent": Path("/w-fluent")}
    runner._ood_result(_Backbone(), "embedded", None, folders, progress=False)
    assert calls == [{"folder": Path("/w"), "shift_folders": {"noto": Path("/w-noto"), "fluent": Path("/w-fluent")}}]


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.skipif(not any(os.path.exists(p) for p in NOTO_PATHS), reason="Noto Color Emoji is not installed")
def test_benchmark_runs_each_available_style_and_reports_the_drop(tmp_path, monkeypatch, no_npm_styles):
    monkeypatch.setenv("SAYNO_CACHE", str(tmp_path / "features"))
    real = runner.style_config
    monkeypatch.setattr(runner, "style_config", lambda style: dataclasses.replace(real(style), **TINY))
    calls: list = []
    monkeypatch.setattr(runner, "world_ood_benchmark", _fake_ood(calls))
    monkeypatch.setattr(runner, "methods_for", lambda backbone, *a, **kw: [plain(backbone)])  # CLIP only: quick
    console = Console(record=True, width=400)
    results = runner.benchmark(world=tmp_path / "w", styles=["openmoji", "fluent", "noto"], progress=False,
                               console=console)
    assert "skipping style fluent: the fluent style needs the npm package" in console.export_text()
    assert {r["style"] for r in results if "style" in r} == {"openmoji", "noto"}
    assert json.loads((tmp_path / "w-noto" / "world.json").read_text())["config"]["ood_per_class"] == 0
    (drop,) = [r for r in results if r["task"] == "style_drop"]
    assert drop["styles"] == ["noto"] and set(drop["skipped"]) == {"fluent"}
    rows = runner.summary_rows(results)
    for method, vals in drop["methods"].items():
        assert vals["noto MCQ"] == pytest.approx(rows["openmoji"][method]["MCQ"] - rows["noto"][method]["MCQ"])
    assert calls == [{"folder": tmp_path / "w", "shift_folders": {"noto": tmp_path / "w-noto"}}]
    assert results[-1]["task"] == "ood"
