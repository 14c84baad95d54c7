"""The world's OOD benchmark (issue 11): near / far / never-seen sets by category, covariate shift in several
styles, the tables and the ``sayno eval ood --world`` command."""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from sayno.clipn.infer import Clipn
from sayno.clipn.model import NoTextEncoder
from sayno.clipn.testing import tiny_backbone
from sayno.data import DataError
from sayno.errors import InputError
from sayno.ood import cli as ood_cli
from sayno.ood.bench import print_ood_table, world_ood_benchmark, world_ood_sets
from sayno.world import WorldConfig, build_world, load_concepts, pretrain_concepts, unseen_concepts
from sayno.world.build import OOD_SETS, _id_quota, ood_split

SMALL = {"ood_id_classes": 4, "ood_seen_classes": 3, "ood_id_per_class": 2, "ood_per_class": 1}


# ---------------------------------------------------------------------------------------------- the split rule
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_near_shares_the_id_categories_and_far_never_does(seed):
    cfg = WorldConfig(seed=seed)
    split = ood_split(cfg)
    cats = set(cfg.ood_id_categories)
    assert {c.category for c in split["id"]} == cats == {c.category for c in split["near"]}
    assert {c.category for c in split["unseen_near"]} <= cats
    assert not {c.category for c in split["far"]} & cats and not {c.category for c in split["unseen_far"]} & cats
    assert all(c.pretrain for s in ("id", "near", "far") for c in split[s])
    assert not any(c.pretrain for s in ("unseen_near", "unseen_far") for c in split[s])
    # every pretraining concept of the ID categories is ID or near (the default near cap does not bind)
    assert {c.name for c in split["id"] + split["near"]} == {c.name for c in pretrain_concepts() if c.category in cats}
    assert {c.name for c in split["unseen_near"] + split["unseen_far"]} == {c.name for c in unseen_concepts()}
    assert 40 <= len(split["id"]) <= 50 and len(split["near"]) >= 40 and len(split["far"]) == cfg.ood_seen_classes


def test_split_is_disjoint_and_deterministic_per_seed():
    a, b, c = (ood_split(WorldConfig(seed=s)) for s in (0, 0, 1))
    names = {k: [x.name for x in v] for k, v in a.items()}
    assert names == {k: [x.name for x in v] for k, v in b.items()}
    assert names["id"] != [x.name for x in c["id"]]
    every = [n for v in names.values() for n in v]
    assert len(every) == len(set(every))  # no concept in two sets


def test_split_does_not_depend_on_the_style():
    assert ood_split(WorldConfig(style="openmoji")) == ood_split(WorldConfig(style="folder:/nowhere"))


def test_id_classes_are_shared_in_proportion_to_category_size():
    assert _id_quota(45, {"animal": 53, "food": 39}) == {"animal": 26, "food": 19}
    assert _id_quota(5, {"animal": 53, "food": 39}) == {"animal": 3, "food": 2}
    assert _id_quota(2, {"a": 10, "b": 10}) == {"a": 1, "b": 1}
    assert _id_quota(1, {"a": 10, "b": 10}) == {"a": 1, "b": 0}  # a tie goes to the earlier category
    assert _id_quota(18, {"a": 10, "b": 10}) == {"a": 9, "b": 9}
    with pytest.raises(InputError, match="ood_id_classes must be at most 18"):
        _id_quota(19, {"a": 10, "b": 10})  # a category would keep no near-OOD concept


def test_id_categories_are_checked():
    with pytest.raises(InputError, match="ood_id_categories must be distinct categories of"):
        WorldConfig(ood_id_categories=("animal", "pixels"))
    with pytest.raises(InputError, match="leaving at least one for far-OOD"):
        WorldConfig(ood_id_categories=("animal", "food", "object", "plant", "vehicle"))
    cfg = WorldConfig.from_dict({"ood_id_categories": ["vehicle"], "ood_id_classes": 10})  # as in world.json
    assert cfg.ood_id_categories == ("vehicle",)
    assert {c.category for c in ood_split(cfg)["near"]} == {"vehicle"}


# ---------------------------------------------------------------------------------------------- built worlds
def _art(folder: Path, shade: int, skip: set[str] = frozenset()) -> str:
    """A folder style: one coloured square per concept (``shade`` changes every colour: another style)."""
    folder.mkdir()
    for i, c in enumerate(load_concepts()):
        if c.name in skip:
            continue
        im = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
        im.paste(Image.new("RGBA", (12, 12), ((7 * i + shade) % 256, (3 * i) % 256, shade, 255)), (2, 2))
        im.save(folder / f"{c.codepoint}.png")
    return f"folder:{folder}"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Worlds of the ``ood`` part: ``a`` (seed 0), ``less`` (a's art less one ID and one near concept),
    ``other`` (seed 0, other colours: a covariate shift), ``seed1`` (a's art, seed 1)."""
    root = tmp_path_factory.mktemp("ood-worlds")
    split = ood_split(WorldConfig(**SMALL))
    gone = {split["id"][0].name, split["near"][0].name}
    styles = {"a": _art(root / "art", 40), "less": _art(root / "art-less", 40, gone),
              "other": _art(root / "art-other", 200)}
    out = {}
    for name, style, seed in (("a", styles["a"], 0), ("less", styles["less"], 0), ("other", styles["other"], 0),
                              ("seed1", styles["a"], 1)):
        with pytest.warns(UserWarning, match="cannot draw 2 of") if name == "less" else nullcontext():
            build_world(root / name, WorldConfig(seed=seed, style=style, **SMALL), parts=("ood",), progress=False)
        out[name] = root / name
    out["gone"], out["style"] = gone, styles["a"]
    return out


def test_the_ood_part_has_every_set_and_describes_it(worlds):
    w = worlds["a"]
    m = json.loads((w / "world.json").read_text())["parts"]["ood"]
    assert m["sets"] == list(OOD_SETS) and m["id_categories"] == ["animal", "food"] and "near" in m["rule"]
    assert (w / "ood" / "id_classes.txt").read_text().splitlines() == m["classes"]["id"] == m["id_classes"]
    for s in ("id", *OOD_SETS):
        folders = {p.name for p in (w / "ood" / s).iterdir()}
        assert folders == {c.replace(" ", "_") for c in m["classes"][s]}
        assert m["images"][s] == len(folders) * (SMALL["ood_id_per_class"] if s == "id" else SMALL["ood_per_class"])
    assert len(m["classes"]["id"]) == 4 and len(m["classes"]["near"]) == 3 == len(m["classes"]["far"])
    assert list(world_ood_sets(w)) == list(OOD_SETS)


def test_a_style_that_lacks_concepts_keeps_the_classes_and_the_other_scenes(worlds):
    a, less = worlds["a"] / "ood", worlds["less"] / "ood"
    assert (a / "id_classes.txt").read_text() == (less / "id_classes.txt").read_text()
    for s in ("id", *OOD_SETS):
        have_a = {p.name for p in (a / s).iterdir()}
        have_less = {p.name for p in (less / s).iterdir()}
        assert have_less == have_a - {g.replace(" ", "_") for g in worlds["gone"]}
        for cls in have_less:  # the same art and the same scenes: the same pixels, class by class
            for png in (a / s / cls).iterdir():
                assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(less / s / cls / png.name)))


def test_a_shift_only_world_has_the_same_id_classes_and_scenes(worlds, tmp_path):
    """The benchmark builds the other styles' worlds with ID images only (no near/far/unseen images)."""
    cfg = WorldConfig(style=worlds["style"], **{**SMALL, "ood_seen_classes": 0, "ood_per_class": 0})
    build_world(tmp_path / "w", cfg, parts=("ood",), progress=False)
    ood = tmp_path / "w" / "ood"
    assert sorted(p.name for p in ood.iterdir()) == ["id", "id_classes.txt"]
    assert (ood / "id_classes.txt").read_text() == (worlds["a"] / "ood" / "id_classes.txt").read_text()
    for png in (worlds["a"] / "ood" / "id").rglob("*.png"):
        assert np.array_equal(np.asarray(Image.open(png)),
                              np.asarray(Image.open(ood / "id" / png.relative_to(worlds["a"] / "ood" / "id"))))


def _clipns(bb):
    return {"s0": Clipn(bb, NoTextEncoder.from_backbone(bb)), "s1": Clipn(bb, NoTextEncoder.from_backbone(bb))}


def test_every_set_and_every_shift_style_gets_its_columns(worlds):
    bb = tiny_backbone(seed=0)
    res = world_ood_benchmark(bb, worlds["a"], shift_folders={"less": worlds["less"], "other": worlds["other"]},
                              clipn=_clipns(bb), methods=["MSP", "Energy", "MCM", "CLIPN-ATD", "CLIPN-CTW"],
                              progress=False)
    json.dumps(res)
    assert list(res["ood_sets"]) == list(OOD_SETS) and list(res["shifted_id"]) == ["less", "other"]
    assert res["world"]["version"] == json.loads((worlds["a"] / "world.json").read_text())["version"]
    assert res["world"]["ood_split"]["classes"]["near"] and set(res["world"]["shift_worlds"]) == {"less", "other"}
    for row in ("MSP", "Energy", "MCM", "CLIPN-ATD [s0]", "CLIPN-ATD (mean of 2)", "CLIPN-CTW (mean of 2)"):
        m = res["methods"][row]
        for s in (*OOD_SETS, "less", "other"):
            assert m[f"{s} AUROC"] is not None and m[f"{s} FPR95"] is not None
        assert m["avg AUROC"] == pytest.approx(np.mean([m[f"{s} AUROC"] for s in OOD_SETS]))
    mean = res["methods"]["CLIPN-ATD (mean of 2)"]
    assert {"near AUROC std", "far FPR95 std", "unseen_near AUROC std", "other AUROC std", "less ID acc std"} <= set(
        mean)
    con = Console(record=True, width=300)
    print_ood_table(res, con)
    text = con.export_text()
    assert "Covariate shift" in text and "less-ID vs OOD" in text and "other-ID vs OOD" in text
    assert all(f"{s} (n=" in text for s in OOD_SETS) and "CLIPN-ATD (mean of 2)" in text


def test_noto_folder_is_still_accepted(worlds):
    res = world_ood_benchmark(tiny_backbone(seed=0), worlds["a"], noto_folder=worlds["other"], methods=["MCM"],
                              progress=False)
    assert list(res["shifted_id"]) == ["noto"] and res["methods"]["MCM"]["noto AUROC"] is not None
    res = world_ood_benchmark(tiny_backbone(seed=0), worlds["a"], noto_folder=worlds["a"] / "missing",
                              methods=["MCM"], progress=False)
    assert res["shifted_id"] == {}


def test_a_shift_world_of_another_seed_or_without_ood_is_refused(worlds, tmp_path):
    bb = tiny_backbone(seed=0)
    with pytest.raises(DataError, match="ID classes differ"):
        world_ood_benchmark(bb, worlds["a"], shift_folders={"x": worlds["seed1"]}, methods=["MCM"], progress=False)
    with pytest.raises(DataError, match="no ood/id for the fluent covariate shift"):
        world_ood_benchmark(bb, worlds["a"], shift_folders={"fluent": tmp_path}, methods=["MCM"], progress=False)
    with pytest.raises(DataError, match="no OOD part"):
        world_ood_benchmark(bb, tmp_path, methods=["MCM"], progress=False)
    with pytest.raises(InputError, match="distinct names"):
        world_ood_benchmark(bb, worlds["a"], shift_folders={"near": worlds["other"]}, methods=["MCM"],
                            progress=False)


def test_a_world_before_version_3_is_read_with_its_two_sets(worlds, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(worlds["a"] / "ood", old / "ood")
    (old / "ood" / "near").rename(old / "ood" / "ood_seen")
    (old / "ood" / "unseen_far").rename(old / "ood" / "ood_unseen")
    for s in ("far", "unseen_near"):
        shutil.rmtree(old / "ood" / s)
    res = world_ood_benchmark(tiny_backbone(seed=0), old, methods=["MCM"], progress=False)
    assert list(res["ood_sets"]) == ["ood_seen", "ood_unseen"] and res["world"]["version"] is None


# ---------------------------------------------------------------------------------------------- command line
@pytest.fixture()
def app(monkeypatch):
    monkeypatch.setattr(ood_cli, "_load_backbone", lambda model, device: tiny_backbone(seed=0))
    app = typer.Typer()
    ood_cli.register(app)
    app.command("noop")(lambda: None)  # a second command keeps "eval" a group
    return app


def test_eval_ood_world_command(app, worlds, tmp_path):
    run = CliRunner().invoke
    r = run(app, ["eval", "ood", "--world", str(worlds["a"]), "--shift-world", f"other={worlds['other']}",
                  "--shift-world", f"less={worlds['less']}", "--methods", "MCM,Energy", "--plots",
                  str(tmp_path / "plots"), "--out", str(tmp_path / "res"), "--no-cache"])
    assert r.exit_code == 0, r.output
    assert "other-ID vs OOD" in r.stdout and "less-ID vs OOD" in r.stdout and "unseen_far" in r.stdout
    res = json.loads(next((tmp_path / "res").glob("ood-*.json")).read_text())
    assert list(res["ood_sets"]) == list(OOD_SETS) and list(res["shifted_id"]) == ["other", "less"]
    assert set(res["methods"]) == {"MCM", "Energy"}
    r = run(app, ["eval", "ood", "--world", str(worlds["a"]), "--id", str(worlds["a"] / "ood" / "id"), "--no-cache"])
    assert r.exit_code == 2 and "--world gives the ID and OOD sets" in " ".join(r.output.split())
    r = run(app, ["eval", "ood", "--shift-world", f"x={worlds['other']}", "--no-cache"])
    assert r.exit_code == 2 and "--shift-world needs --world" in " ".join(r.output.split())
    r = run(app, ["eval", "ood", "--id", str(worlds["a"] / "ood" / "id"), "--no-cache"])
    assert r.exit_code == 2 and "or --world DIR" in " ".join(r.output.split())
