"""The paper preset (``sayno glasses train --preset paper``): trains PaperLens + PaperFrame end to end, the
checkpoint round-trips through ``load_glasses`` and scores under the scoring contract."""

import numpy as np
import pytest
import torch

from sayno.base.scoring import TextBatch
from sayno.checkpoint import CheckpointError
from sayno.errors import BackboneMismatch, InputError
from sayno.glasses import load_glasses
from sayno.glasses.paper import PaperGlasses, PaperGlassesConfig, is_paper_checkpoint, load_paper_glasses
from sayno.glasses.paper_train import PaperTrainConfig, reference_contrastive_loss, train_paper_glasses
from sayno.glasses.testing import SyntheticClip, write_synthetic_world

NAMES = ["cat", "dog", "cow", "horse", "apple", "pear", "car", "bus", "tree", "ship", "lamp", "sheep"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper")
    for split, n in (("train", 40), ("val", 10)):
        write_synthetic_world(folder, NAMES, n, split=split)
    clip = SyntheticClip(NAMES)
    out = folder / "paper.safetensors"
    logs: list[str] = []
    res = train_paper_glasses(clip, folder, out, config=PaperGlassesConfig(clip.embed_dim, clip.num_text_layers),
                              train=PaperTrainConfig(epochs=(1, 4, 1), batch_groups=4), log=logs.append)
    return folder, clip, out, res, logs


def test_reference_loss_matches_its_definition():
    torch.manual_seed(0)
    S = torch.randn(5, 3)
    pc, pi = torch.tensor([0, 1, 3]), torch.tensor([0, 0, 2])
    t2i = -torch.log_softmax(S[pc], 1)[torch.arange(3), pi].mean()
    e = S.exp()
    i2t = -torch.stack([torch.log(e[[0, 1], 0].sum() / e[:, 0].sum()), torch.log(e[3, 2] / e[:, 2].sum())]).mean()
    assert torch.allclose(reference_contrastive_loss(S, pc, pi), 0.5 * (t2i + i2t), atol=1e-6)


def test_trains_three_stages_and_learns(trained):
    _, _, out, res, logs = trained
    stages = [e["stage"] for e in res.summary["history"]]
    assert stages == ["frame", "lens", "lens", "lens", "lens", "joint"] and any(m.startswith("saved") for m in logs)
    lens = [e["val_lens_cos"] for e in res.summary["history"] if e["stage"] == "lens"]
    assert lens[-1] > lens[0] + 0.1  # the Lens moves towards its object's prompt
    assert is_paper_checkpoint(out) and res.summary["preset"] == "paper"


def test_checkpoint_round_trips_and_scores(trained):
    _, clip, out, res, _ = trained
    g = load_glasses(out, clip)
    assert isinstance(g, PaperGlasses)
    for k, v in res.glasses.state_dict().items():
        assert torch.equal(v, g.state_dict()[k]), k
    texts = ["a cat and a dog", "a cat but no dog", "no dog"]
    batch = g.text_batch(texts)
    feats = torch.nn.functional.normalize(clip.obj[[0, 0, 2]] + clip.obj[[1, 4, 1]] * torch.tensor([[1.], [0.], [1.]]),
                                          dim=-1).numpy()
    pairs = g.score_pairs(batch, feats)
    matrix = g.score_matrix(batch, feats)
    plain = clip.logit_scale * batch.h @ feats.T
    assert pairs.shape == (3,) and matrix.shape == (3, 3) and np.isfinite(matrix).all()
    np.testing.assert_allclose(matrix[0], plain[0], rtol=1e-5)  # affirmative: CLIP's score, bit for bit
    exact = PaperGlasses(g.config, clip, rerank_k=None)
    exact.load_state_dict(g.state_dict())
    full = exact.score_matrix(batch, feats)  # k >= M: the re-ranked rows are the exact paper scores
    np.testing.assert_allclose(full[1], [exact.score_pairs(TextBatch([texts[1]], batch.h[[1]], batch.layers[[1]]),
                                                           feats[[j]])[0] for j in range(3)], rtol=1e-4)
    with pytest.raises(BackboneMismatch):
        load_paper_glasses(out, SyntheticClip(NAMES, seed=1))


def test_quirks_train_and_bad_settings(trained, tmp_path):
    folder, clip, _, _, _ = trained
    out = tmp_path / "q.safetensors"
    cfg = PaperGlassesConfig(clip.embed_dim, clip.num_text_layers, reference_quirks=True)
    train_paper_glasses(clip, folder, out, config=cfg, train=PaperTrainConfig(epochs=(1, 0, 1)), log=lambda s: None)
    g = load_glasses(out, clip)
    assert g.config.reference_quirks and g.lens.reference_quirks and g.frame.reference_quirks
    with pytest.raises(InputError):
        PaperTrainConfig(epochs=(0, 0, 0))
    with pytest.raises(InputError, match="exists"):
        train_paper_glasses(clip, folder, out, config=cfg, log=lambda s: None)
    with pytest.raises(CheckpointError):
        load_paper_glasses(folder / "negation_train.csv", clip)


def test_cli_preset_paper(trained, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sayno import cli as root_cli
    from sayno.glasses import cli as glasses_cli

    folder, clip, _, _, _ = trained
    monkeypatch.setattr(glasses_cli, "load_backbone", lambda spec, device="cpu": clip)
    out = tmp_path / "cli.safetensors"
    base = ["glasses", "train", "--model", "synthetic", "--data", str(folder), "--out", str(out), "--no-cache"]
    r = CliRunner().invoke(root_cli.app, [*base, "--preset", "paper", "--epochs", "1,0,1", "--reference-quirks"])
    assert r.exit_code == 0, r.output
    assert "frame" in r.output and "joint" in r.output and load_glasses(out, clip).config.reference_quirks
    bad = CliRunner().invoke(root_cli.app, [*base, "--preset", "paper", "--lens", "caption", "--overwrite"])
    assert bad.exit_code == 2 and "--lens" in bad.stderr
    bad = CliRunner().invoke(root_cli.app, [*base, "--reference-quirks", "--overwrite"])
    assert bad.exit_code == 2 and "--preset paper" in bad.stderr


def test_benchmark_row(trained):
    from sayno.eval import runner

    _, clip, out, _, _ = trained
    methods = runner.methods_for(clip, None, paper_glasses=out)
    assert [m.name for m in methods] == ["CLIP", "CLIPGlasses (paper)"]
    assert isinstance(methods[1].scorer, PaperGlasses) and methods[1].scorer.needs_layers


def test_shipped_paper_glasses(embedded):
    """The shipped paper checkpoint loads for the embedded CLIP, is the default benchmark row, and scores: an
    affirmative caption keeps CLIP's score, a negated caption on an image showing its object loses."""
    from sayno.base.shipped import shipped_weights

    path = shipped_weights("glasses-paper", "embedded")
    assert path is not None and path.stat().st_size < 5e6
    g = load_glasses(path, embedded)
    assert isinstance(g, PaperGlasses) and not g.config.reference_quirks
    assert g.training_summary["preset"] == "paper" and g.training_summary["data_root"] == "world-v4"
    texts = ["a photo of a dog", "a photo with no dog"]
    batch = g.text_batch(texts)
    dog = batch.h[[0, 0]]  # stand-in image features: the affirmative caption's own direction
    pairs = g.score_pairs(batch, dog)
    plain = g.logit_scale * (batch.h * dog).sum(-1)
    np.testing.assert_allclose(pairs[0], plain[0], rtol=1e-5)
    assert pairs[1] < plain[1]
