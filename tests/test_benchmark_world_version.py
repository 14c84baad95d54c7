"""``sayno benchmark``'s cached world is rebuilt when it was built by another world version (new captions), and
its tables show the negation families apart."""

from __future__ import annotations

import json
from dataclasses import asdict

from rich.console import Console

from sayno.eval import runner
from sayno.world.build import WORLD_VERSION, WorldConfig


def _calls(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(runner, "build_world", lambda folder, cfg, **kw: calls.append((folder, kw)))
    return calls


def test_a_stale_cached_world_is_rebuilt(tmp_path, monkeypatch):
    calls = _calls(monkeypatch)
    (tmp_path / "world.json").write_text(json.dumps({"parts": {"test": {}, "classify": {}, "ood": {}}}))
    runner.ensure_world(tmp_path, "openmoji", ("test", "classify", "ood"), None)
    assert len(calls) == 1 and calls[0][1]["overwrite"]  # version 1 (no "version"): rebuilt whole
    parts = {"test": {}, "classify": {}, "ood": {}}
    config = json.loads(json.dumps(asdict(WorldConfig())))
    (tmp_path / "world.json").write_text(json.dumps({"version": WORLD_VERSION, "config": config, "parts": parts}))
    runner.ensure_world(tmp_path, "openmoji", ("test", "classify", "ood"), None)
    assert len(calls) == 1  # current: kept
    other = {**config, "classify_per_class": 3}  # the same version built with another config: rebuilt
    (tmp_path / "world.json").write_text(json.dumps({"version": WORLD_VERSION, "config": other, "parts": parts}))
    runner.ensure_world(tmp_path, "openmoji", ("test", "classify", "ood"), None)
    assert len(calls) == 2 and calls[1][1]["overwrite"]


def test_benchmark_table_shows_training_and_held_out_families():
    def result(task, stem, acc):
        return {"task": task, "dataset": f"/w/{stem}.csv", "style": "openmoji",
                "methods": {"CLIP": {"accuracy": acc}, "CLIPGlasses": {"accuracy": acc + 50}}}

    results = [result("mcq", "mcq_test", 30.0), result("mcq", "mcq_test_trainfam", 31.0),
               result("mcq", "mcq_test_heldout", 29.0), result("ccneg", "ccneg_test_heldout", 40.0)]
    console = Console(record=True, width=200)
    runner.print_benchmark(results, console)
    text = console.export_text()
    assert "training vs held-out" in text and "MCQ held-out" in text and "79.0" in text and "90.0" in text


def test_benchmark_table_puts_objects_and_predicates_side_by_side():
    def result(task, stem, acc, neg=None):
        vals = {"accuracy": acc, **({"negative": neg} if neg is not None else {})}
        return {"task": task, "dataset": f"/w/{stem}.csv", "style": "noto",
                "methods": {"CLIP": dict(vals), "CLIPGlasses": {k: v + 40 for k, v in vals.items()}}}

    results = [result("mcq", "mcq_test", 30.0, 10.0), result("ccneg", "ccneg_test", 70.0),
               result("mcq", "pred_affirm_test_activity", 91.0), result("mcq", "pred_mcq_test_activity", 33.0, 12.0),
               result("mcq", "pred_mcq_test_activity_heldout", 31.0), result("ccneg", "pred_ccneg_test_relation", 55.0)]
    rows = runner.predicate_rows(results)
    assert rows["noto"][("CLIP", "objects")] == {"MCQ": 30.0, "MCQ neg.": 10.0, "CC-Neg": 70.0}
    assert rows["noto"][("CLIPGlasses", "activity")] == {"affirm.": 131.0, "MCQ": 73.0, "MCQ neg.": 52.0,
                                                         "MCQ held-out": 71.0}
    assert rows["noto"][("CLIP", "relation")] == {"CC-Neg": 55.0}
    console = Console(record=True, width=250)
    runner.print_benchmark(results, console)
    text = console.export_text()
    assert "Objects and predicates, style noto" in text
    line = next(x for x in text.splitlines() if "CLIPGlasses" in x and "activity" in x)
    assert "131.0" in line and "52.0" in line and "71.0" in line
    assert runner.predicate_rows([r for r in results if "pred_" not in r["dataset"]]) == {}
