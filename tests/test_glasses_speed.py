"""Issue 27, scoring speed: each caption is tokenized once (the read limits are memoised), the training-free
path tokenizes only negated captions and multiplies once, the scores are the ones from before the change, and the
bench (bench/bench_glasses_scoring.py) still runs and prints its ratio and breakdown."""

from __future__ import annotations

import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest

from sayno.base.scoring import PlainClip, TextBatch
from sayno.glasses import Glasses, GlassesConfig, GlassesError, TrainingFreeGlasses, load_glasses
from sayno.glasses.reading import ReadLimits
from sayno.glasses.testing import tiny_clip

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "sayno" / "weights" / "glasses-embedded.safetensors"

LONG = ("no pizza here, just a cat and a dog and a fish and a tree and a car and a horse on a table near a rocket "
        "and a bicycle")
GOLDEN_TEXTS = ["a cat but no dog", "a cat and a dog", "there is no cow here", "no cat, no cat and no fish",
                "an apple, probably no banana", "a photo of a tree without a car", "a penguin", LONG]

# Computed with the code before the change (commit c14ab7c: the read limits re-tokenized every call, the
# training-free path multiplied twice) by the same calls as below; the new code gave the same values bit for bit.
# Recomputed the same way (c14ab7c's code) for the weights shipped on 2026-12-07 (backbone b1e2f20af8b5b6fd) and
# for the CLIPGlasses retrained on 2026-12-08 (sha1 294af5737fa9).
MATRIX = [[-0.23073, 2.81099, 0.73445, 6.17724], [-5.37768, 0.84601, 0.73107, 4.32108], [27.974, 28.3597, 27.66777, 23.82001], [25.13511, 26.2461, 22.49162, 18.68521], [-3.94191, -0.1218, -0.66391, -0.61213], [-1.46934, 3.9015, -3.11044, 1.87086], [-1.04162, 2.04603, -4.04353, 2.12798], [-4.72647, 5.89369, 2.07712, 0.1588]]
PAIRS = [4.32915, -1.79256, 28.00906, 21.35602, 0.00573, -0.79329, 3.9124, -2.08516]
RERANK = [[-0.23073, 2.84652, 0.73445, 7.54975], [-5.37768, 0.84601, 0.73107, 4.32108], [27.49742, 22.52374, 21.52374, 17.67597], [24.23632, 18.54816, 17.54816, 13.74176], [-4.88499, -0.11912, -1.60699, -0.60699], [-1.46934, 3.98827, -3.11044, 2.17234], [-1.04162, 2.04603, -4.04353, 2.12798], [-4.72647, 5.86547, 2.08823, 0.1588]]
TF_MATRIX = [[-0.83658, 3.10841, -0.44838, 4.50119], [-5.37768, 0.84601, 0.73107, 4.32108], [5.62866, 5.81745, 6.52845, 4.11641], [10.58881, 9.4538, 7.92632, 5.87977], [-2.20915, 0.54673, 0.54306, 0.34495], [0.74002, 5.97597, -2.6326, 2.2876], [-1.04162, 2.04603, -4.04353, 2.12798], [-2.68135, 8.04638, 4.67964, 1.44656]]
TF_PAIRS = [1.0384, -1.79256, 5.53666, 7.01939, 0.94997, 3.01828, 3.9124, 1.34652]


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_scores_are_the_ones_from_before_the_speed_fix(embedded):
    rng = np.random.default_rng(27)
    d = embedded.embed_dim
    images, pairs, reference = _unit(rng, 4, d), _unit(rng, len(GOLDEN_TEXTS), d), _unit(rng, 300, d)
    g = load_glasses(SHIPPED, embedded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LONG is longer than the context: the truncation warning
        tb = g.text_batch(GOLDEN_TEXTS)
        tf = TrainingFreeGlasses.from_backbone(embedded, reference)
        tbt = tf.text_batch(GOLDEN_TEXTS)
    close = {"rtol": 0, "atol": 1e-4}
    for _ in range(2):  # the second time from the memoised read limits
        np.testing.assert_allclose(g.score_matrix(tb, images), MATRIX, **close)
        np.testing.assert_allclose(g.score_pairs(tb, pairs), PAIRS, **close)
        np.testing.assert_allclose(g.rerank(tb, images, 2), RERANK, **close)
        np.testing.assert_allclose(tf.score_matrix(tbt, images), TF_MATRIX, **close)
        np.testing.assert_allclose(tf.score_pairs(tbt, pairs), TF_PAIRS, **close)


class _Counting:
    """Wraps a backbone's ``text_read_chars`` and records the texts it was asked about."""

    def __init__(self, backbone):
        self.inner, self.seen = backbone.text_read_chars, []

    def __call__(self, texts):
        self.seen.extend(texts)
        return self.inner(texts)


TEXTS = ["a cat but no dog", "a dog", "no cow and no pig", "a cat but no dog", "there is a tree",
         ("a cat and a dog and a fish and a tree and a car and a horse and a pizza on a table near a rocket "
          "and a bicycle but no apple")]
NEGATED = ["a cat but no dog", "no cow and no pig", TEXTS[-1]]


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(0, embed_dim=16)


def _glasses(backbone) -> Glasses:
    return Glasses(GlassesConfig(embed_dim=16, num_layers=backbone.num_text_layers, hidden=16, detector_hidden=8),
                   backbone)


def test_scoring_again_tokenizes_no_caption_again(clip, monkeypatch):
    counting = _Counting(clip)
    monkeypatch.setattr(clip, "text_read_chars", counting)
    g = _glasses(clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tb = g.text_batch(TEXTS)
    images = _unit(np.random.default_rng(0), 9, 16)
    first = g.score_matrix(tb, images)
    assert sorted(counting.seen) == sorted(NEGATED)  # negated captions only, each once (one is repeated)
    again = [g.score_matrix(tb, images), g.score_pairs(tb, images[: len(TEXTS)]), g.rerank(tb, images, 3)]
    assert sorted(counting.seen) == sorted(NEGATED)  # nothing tokenized again
    np.testing.assert_array_equal(again[0], first)
    g.score_matrix(TextBatch(["no fish", *TEXTS[:2]], tb.h[:3], tb.layers[:3]), images)
    assert counting.seen[len(NEGATED):] == ["no fish"]  # a new caption: only it
    assert g.read_chars(TEXTS) == counting.inner(TEXTS)  # the memo answers what the tokenizer does
    assert g.read_chars(TEXTS)[-1] < len(TEXTS[-1])  # ... including a caption past the context


def test_training_free_tokenizes_negated_captions_once_and_keeps_plain_rows(clip, monkeypatch):
    counting = _Counting(clip)
    monkeypatch.setattr(clip, "text_read_chars", counting)
    rng = np.random.default_rng(1)
    tf = TrainingFreeGlasses.from_backbone(clip, _unit(rng, 200, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tb = tf.text_batch(TEXTS)
    images = _unit(rng, 11, 16)
    out = tf.score_matrix(tb, images)
    tf.score_matrix(tb, images)
    assert sorted(counting.seen) == sorted(NEGATED)
    plain = PlainClip(tf.logit_scale).score_matrix(tb, images)
    for i in (1, 4):
        assert np.array_equal(out[i], plain[i])  # bit for bit
    q, c = tf.query_vectors(tb, tf.slots(tb))
    np.testing.assert_allclose(out, tf.logit_scale * (q @ images.T + c[:, None]), rtol=1e-5, atol=1e-4)


def test_read_limits_memo_is_bounded_and_least_recently_used():
    asked = []

    class Backbone:
        def text_read_chars(self, texts):
            asked.extend(texts)
            return [len(t) - 1 for t in texts]

    memo = ReadLimits(Backbone(), capacity=2)
    assert memo(["ab", "abc", "ab"]) == [1, 2, 1] and asked == ["ab", "abc"]
    memo(["ab"])  # "abc" is now the least recently used
    memo(["abcd"])
    assert len(memo) == 2
    memo(["ab", "abc"])
    assert asked == ["ab", "abc", "abcd", "abc"]
    memo.clear()
    assert len(memo) == 0
    assert ReadLimits(None)(["no dog", "a cat"]) == [None, None]
    assert ReadLimits(Backbone())([]) == []
    with pytest.raises(GlassesError, match="at least one"):
        ReadLimits(Backbone(), capacity=0)


@pytest.mark.slow
def test_bench_runs_and_prints_the_ratio_and_its_parts(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.argv", ["bench_glasses_scoring.py", "--n", "40", "--m", "300", "--repeat", "1",
                                     "--world", str(tmp_path)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 300 reference images: the training-free calibration's warning
        runpy.run_path(str(ROOT / "bench" / "bench_glasses_scoring.py"), run_name="__main__")
    out = capsys.readouterr().out
    for part in ("RATIO", "caption plans", "read limits", "rest of the slots", "score from the slots",
                 "training-free Glasses"):
        assert part in out, out
    assert float(out.split("RATIO")[-1].split()[0]) > 0


def test_caption_plans_read_each_caption_once_and_match_the_analysis(clip, monkeypatch):
    """Glasses and the training-free Glasses read a caption's analysis, slot phrases and read limit once
    (sayno.glasses.reading.CaptionPlans); a plan says what slot_phrases/needs_fallback say of the analysis."""
    from sayno.glasses import reading
    from sayno.glasses.analysis import analyse, needs_fallback, slot_phrases

    asked = []
    real = reading.analyse_texts
    monkeypatch.setattr(reading, "analyse_texts", lambda texts: (asked.extend(texts), real(texts))[1])
    g = _glasses(clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tb = g.text_batch(TEXTS)
    images = _unit(np.random.default_rng(2), 5, 16)
    first = g.score_matrix(tb, images)
    assert sorted(asked) == sorted(set(TEXTS))  # each distinct caption once
    np.testing.assert_array_equal(g.score_matrix(tb, images), first)
    assert sorted(asked) == sorted(set(TEXTS))  # and not again
    for text, plan in zip(TEXTS, g.plans(TEXTS)):
        a = analyse(text)
        limit = g.read_chars([text])[0] if a.negated else None
        assert plan.negated == a.negated and plan.affirmative == a.affirmative_text
        assert plan.phrases == tuple((p.text, p.hedged) for p in (slot_phrases(a, limit) if a.negated else []))
        assert plan.fallback == needs_fallback(a, limit)
    assert g.plans(TEXTS)[-1].phrases == ()  # "... but no apple" starts past the 32-token context: no slot
    g.plans.clear()
    assert len(g.plans) == 0
