"""Issue 12, items 6 and 15 (Glasses): seeded training is bitwise reproducible, also across kill -9 + resume;
``glasses train`` checks its arguments before any work; a full disk gives one line and leaves no temporary file;
a damaged checkpoint is refused in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from sayno.checkpoint import CheckpointError
from sayno.errors import InputError, SaynoError
from sayno.glasses import Glasses, GlassesConfig, load_glasses
from sayno.glasses.testing import SyntheticClip, tiny_clip, write_synthetic_world
from sayno.glasses.train import TrainConfig, train_glasses

NAMES = ["cat", "dog", "cow", "horse", "apple", "pear", "car", "bus", "tree", "ship", "lamp", "kite"]
SETTINGS = {"epochs": (1, 2, 1, 1), "batch_groups": 8, "lr": 3e-3, "min_steps": 0, "seed": 7}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    for split, n in (("train", 40), ("val", 10)):
        write_synthetic_world(folder, NAMES, n, split=split)
    return folder, SyntheticClip(NAMES)


def small_config(backbone) -> GlassesConfig:
    return GlassesConfig(embed_dim=backbone.embed_dim, num_layers=backbone.num_text_layers, hidden=32,
                         detector_hidden=8)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict


def _assert_bitwise_equal(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _train(synthetic, out: Path, log=lambda s: None, **overrides):
    folder, clip = synthetic
    return train_glasses(clip, folder, out, config=small_config(clip), train=TrainConfig(**{**SETTINGS, **overrides}),
                         log=log)


# ------------------------------------------------------------------------------------------ item 6
def test_two_seeded_runs_are_bitwise_identical_whatever_ran_before(synthetic, tmp_path):
    torch.manual_seed(1)  # the caller's random state must not reach the model's initial weights
    _train(synthetic, tmp_path / "a.safetensors")
    torch.manual_seed(2)
    torch.rand(5)
    _train(synthetic, tmp_path / "b.safetensors")
    _assert_bitwise_equal(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def test_resume_after_an_interruption_in_the_first_stage_is_bitwise_identical(synthetic, tmp_path):
    _train(synthetic, tmp_path / "full.safetensors")

    class Stop(Exception):
        pass

    def stop_after_first_epoch(msg: str) -> None:
        if msg.startswith("detector epoch  1"):
            raise Stop

    out = tmp_path / "cut.safetensors"
    torch.manual_seed(3)
    with pytest.raises(Stop):
        _train(synthetic, out, log=stop_after_first_epoch)
    logs: list[str] = []
    torch.manual_seed(4)
    _train(synthetic, out, log=logs.append)
    assert any(m.startswith("resuming") for m in logs)
    _assert_bitwise_equal(tmp_path / "full.safetensors", out)


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from sayno.glasses.testing import SyntheticClip
from sayno.glasses.train import TrainConfig, train_glasses
from sayno.glasses import GlassesConfig
names, folder, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
clip = SyntheticClip(names)
config = GlassesConfig(embed_dim=clip.embed_dim, num_layers=clip.num_text_layers, hidden=32, detector_hidden=8)
def log(msg):
    if msg.startswith("frame    epoch  1"):  # the state after this epoch is saved: wait to be killed
        print("READY", flush=True)
        time.sleep(600)
train_glasses(clip, folder, out, config=config, train=TrainConfig(epochs=(1, 2, 1, 1), batch_groups=8, lr=3e-3,
              min_steps=0, seed=7), log=log)
"""


def test_kill_9_and_resume_is_bitwise_identical(synthetic, tmp_path):
    folder, _ = synthetic
    _train(synthetic, tmp_path / "full.safetensors")
    out = tmp_path / "killed.safetensors"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, ",".join(NAMES), str(folder), str(out)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and "READY" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "READY" in line, "the training subprocess did not reach the frame stage"  # saved before the log line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert Path(str(out) + ".partial").exists() and not out.exists()
    logs: list[str] = []
    _train(synthetic, out, log=logs.append)
    assert any(m.startswith("resuming") and "stage frame" in m for m in logs), logs
    _assert_bitwise_equal(tmp_path / "full.safetensors", out)


# ------------------------------------------------------------------------------------- item 15: arguments
@pytest.mark.parametrize("overrides, needle", [
    ({"fraction": 0.0}, "fraction"), ({"fraction": -1.0}, "fraction"), ({"fraction": 2.0}, "fraction"),
    ({"epochs": (0, 0, 0, 0)}, "epochs"), ({"threads": 0}, "threads"), ({"batch_groups": 0}, "batch_groups"),
])
def test_train_config_refuses_settings_that_train_on_nothing(overrides, needle):
    with pytest.raises(InputError, match=needle):
        TrainConfig(**{**SETTINGS, **overrides})


def test_train_checks_out_and_hidden_before_reading_data(tmp_path):
    clip = SyntheticClip(NAMES)
    missing = tmp_path / "no-such-data"  # a DataError would mean the data was read before the check
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a folder"):
        train_glasses(clip, missing, tmp_path / "adir", config=small_config(clip), log=lambda s: None)
    with pytest.raises(InputError, match="is a file"):
        train_glasses(clip, missing, tmp_path / "afile" / "g.safetensors", config=small_config(clip),
                      log=lambda s: None)
    with pytest.raises(SaynoError, match="hidden"):  # refused by the config itself (issue 29)
        GlassesConfig(embed_dim=clip.embed_dim, num_layers=clip.num_text_layers, hidden=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


@pytest.mark.parametrize("args, needle", [
    (["--fraction", "0"], "fraction"), (["--fraction", "-1"], "fraction"), (["--fraction", "2"], "fraction"),
    (["--hidden", "0"], "hidden"), (["--out-is-dir"], "is a folder"), (["--threads", "0"], "threads"),
])
def test_cli_train_refuses_bad_arguments_before_loading_anything(tmp_path, monkeypatch, args, needle):
    from sayno import cli as root_cli
    from sayno.glasses import cli as glasses_cli

    def no_backbone(*a, **k):
        raise AssertionError("the backbone must not load before the arguments are checked")

    monkeypatch.setattr(glasses_cli, "load_backbone", no_backbone)
    out = tmp_path / "g.safetensors"
    if args == ["--out-is-dir"]:
        out.mkdir()
        args = []
    r = CliRunner().invoke(root_cli.app, ["glasses", "train", "--data", str(tmp_path / "nothing"), "--out", str(out),
                                          *args, "--no-cache"])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error:") and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------- item 15: full disk
class _Full:
    f_bavail, f_frsize = 0, 4096


def test_full_disk_while_saving_the_resume_state(synthetic, tmp_path, monkeypatch):
    import safetensors.torch

    from sayno import checkpoint

    real_save = safetensors.torch.save_file

    def save_until_full(tensors, f, metadata=None):  # the resume state on a full disk: an error, half a file
        if isinstance(f, (str, os.PathLike)) and str(f).endswith(".partial.tmp"):
            Path(f).write_bytes(b"\0" * 1000)
            raise RuntimeError("Error while serializing: I/O error: unexpected end of file")
        return real_save(tensors, f, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_until_full)
    monkeypatch.setattr(checkpoint.os, "statvfs", lambda path: _Full())
    with pytest.raises(CheckpointError, match="no space left") as info:
        _train(synthetic, tmp_path / "g.safetensors")
    assert "\n" not in str(info.value)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_while_writing_the_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    def no_space(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    tiny = tiny_clip(seed=0)
    g = Glasses(GlassesConfig(embed_dim=tiny.embed_dim, num_layers=tiny.num_text_layers, hidden=16), tiny)
    with pytest.raises(CheckpointError, match="no space left"):
        g.save(tmp_path / "g.safetensors")
    assert list(tmp_path.iterdir()) == []


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_real_full_disk_during_glasses_train(synthetic, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "64k"):
        pytest.skip("needs root and tmpfs to make a real full disk")
    try:
        with pytest.raises(CheckpointError, match="no space left"):
            _train(synthetic, disk / "g.safetensors")
        assert list(disk.iterdir()) == []  # neither a .partial.tmp nor a checkpoint
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------------------ item 15: checkpoints
def _saved(tiny, tmp_path):
    g = Glasses(GlassesConfig(embed_dim=tiny.embed_dim, num_layers=tiny.num_text_layers, hidden=16), tiny)
    g.frame.set_bank(torch.nn.functional.normalize(torch.randn(5, tiny.embed_dim), dim=-1))
    path = g.save(tmp_path / "g.safetensors")
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.__setitem__("frame.bank", torch.zeros(5, 7)), "frame.bank"),
    (lambda t: t.__setitem__("frame.bank", torch.zeros(5)), "frame.bank"),
    (lambda t: t.pop("frame.tau0"), "missing tensor"),
    (lambda t: t["frame.bank"].fill_(float("nan")), "NaN"),
])
def test_damaged_checkpoints_are_refused_in_one_line(tmp_path, damage, message):
    tiny = tiny_clip(seed=0)
    meta, tensors = _saved(tiny, tmp_path)
    damage(tensors)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=message) as info:
        load_glasses(tmp_path / "bad.safetensors", tiny)
    assert "\n" not in str(info.value)


def test_load_glasses_without_a_backbone(tmp_path):
    tiny = tiny_clip(seed=0)
    _saved(tiny, tmp_path)
    with pytest.raises(InputError, match="backbone"):
        load_glasses(tmp_path / "g.safetensors", None)
