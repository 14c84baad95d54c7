"""CLIPN's commands end to end on a tiny world with a tiny random backbone (the loader is patched)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from sayno.clipn import cli as clipn_cli
from sayno.clipn.testing import tiny_backbone
from sayno.ood import cli as ood_cli


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sayno.world import WorldConfig, build_world

    w = tmp_path_factory.mktemp("world")
    build_world(w, WorldConfig(train_groups=1, val_groups=1, test_groups=1, caption_images=24, classify_per_class=1,
                               ood_id_per_class=1, ood_per_class=1), parts=("captions", "ood"), progress=False)
    return w


@pytest.fixture()
def app(monkeypatch):
    """CLIPN's and the OOD benchmark's commands, registered the way sayno/cli.py does."""
    for module in (clipn_cli, ood_cli):
        monkeypatch.setattr(module, "_load_backbone", lambda model, device: tiny_backbone(seed=0))
    app = typer.Typer()
    clipn_cli.register(app)
    ood_cli.register(app)
    return app


def test_train_eval_and_ood_commands(app, world, tmp_path):
    run = CliRunner().invoke
    ck = tmp_path / "c.safetensors"
    r = run(app, ["clipn", "train", "--data", str(world / "captions_train.csv"), "--out", str(ck), "--epochs", "2",
                  "--batch-size", "8", "--no-cache", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == 6
    r = run(app, ["clipn", "train", "--data", str(world / "captions_train.csv"), "--out", str(ck), "--no-cache"])
    assert r.exit_code == 2 and "exists" in r.output
    r = run(app, ["clipn", "info", str(ck)])
    assert r.exit_code == 0 and json.loads(r.stdout)["backbone_fingerprint"] == tiny_backbone(seed=0).fingerprint

    o = world / "ood"
    r = run(app, ["eval", "ood", "--clipn", str(ck), "--id-classes", str(o / "id_classes.txt"), "--id", str(o / "id"),
                  "--ood", f"seen={o / 'near'}", "--ood", f"unseen={o / 'unseen_far'}", "--methods",
                  "MCM,CLIPN-ATD", "--plots", str(tmp_path / "plots"), "--out", str(tmp_path / "res"), "--json",
                  "--no-cache"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res["methods"]) == {"MCM", "CLIPN-ATD"} and set(res["ood_sets"]) == {"seen", "unseen"}
    assert len(list((tmp_path / "res").glob("ood-*.json"))) == 1 and (tmp_path / "plots" / "roc_seen.png").exists()

    r = run(app, ["ood", "--clipn", str(ck), "--classes", str(o / "id_classes.txt"), "--json",
                  str(o / "unseen_far"), str(tmp_path / "missing.png")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == len(list((o / "unseen_far").rglob("*.png"))) > 0 and {x["decision"] for x in rows} <= {"ID", "OOD"}
    assert "missing.png" in "".join(r.output.split())  # the unreadable file is reported (stderr is mixed in)
    r = run(app, ["ood", "--clipn", str(ck), "--classes", str(o / "id_classes.txt"), "--json", "--threshold", "2",
                  str(o / "unseen_far")])
    assert r.exit_code == 0 and {json.loads(x)["decision"] for x in r.stdout.splitlines()} == {"OOD"}

    r = run(app, ["eval", "ood", "--id-classes", str(o / "id_classes.txt"), "--id", str(o / "id"),
                  "--ood", f"x={tmp_path / 'nope'}", "--no-cache"])
    assert r.exit_code == 2 and "no such image folder" in " ".join(r.output.split())
