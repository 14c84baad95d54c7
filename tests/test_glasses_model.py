"""Glasses scoring: the formula, plain-CLIP equality for affirmative captions, batch independence, checkpoints."""

import zlib

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sayno.base.scoring import PlainClip, Scorer, TextBatch
from sayno.checkpoint import CheckpointError, read_header
from sayno.config import ConfigError
from sayno.errors import BackboneMismatch
from sayno.glasses import Glasses, GlassesConfig, GlassesError, load_glasses
from sayno.glasses.modules import Lens, glasses_logits, glasses_pair_logits
from sayno.glasses.testing import tiny_clip

D, L = 8, 4


def unit(*xs):
    v = torch.tensor(xs, dtype=torch.float32)
    return v / v.norm()


# ------------------------------------------------------------------------------------------- the formula
def test_reference_formula_on_hand_made_vectors():
    h = torch.stack([unit(1, 1, 0), unit(0, 0, 1)])  # caption 0 negates, caption 1 is affirmative
    images = torch.stack([unit(1, 0, 0), unit(0, 1, 0), unit(1, 1, 1)])
    h_neg = torch.stack([unit(0, 1, 0)])
    lam = torch.tensor([0.5])
    owner = torch.tensor([0])
    S = glasses_logits(h, images, h_neg, lam, owner, 0.0, 100.0, clamp=True)
    c = 1 / np.sqrt(2)
    # S = s*cos(h,I) - max(0, lambda*s*cos(h_neg,I))
    expected0 = [100 * c - 0, 100 * c - 50 * 1.0, 100 * (2 / np.sqrt(6)) - 50 / np.sqrt(3)]
    np.testing.assert_allclose(S[0].numpy(), expected0, rtol=1e-6)
    np.testing.assert_allclose(S[1].numpy(), 100 * (images @ h[1]).numpy(), rtol=1e-6)


def test_clamp_never_rewards_and_tau_variant_rewards_absence():
    h = torch.stack([unit(1, 1, 0)])
    absent = torch.stack([unit(1, 0, -1)])  # cos(h_neg, I) < 0 for h_neg = (0, 0, 1)
    h_neg = torch.stack([unit(0, 0, 1)])
    args = (h, absent, h_neg, torch.tensor([0.8]), torch.tensor([0]))
    plain = 10 * float(h[0] @ absent[0])
    clamped = float(glasses_logits(*args, 0.0, 10.0, clamp=True))
    assert clamped == pytest.approx(plain)  # clamp: never above the plain score
    tau = 0.2
    variant = float(glasses_logits(*args, tau, 10.0, clamp=False))
    assert variant == pytest.approx(plain - 10 * 0.8 * (float(h_neg[0] @ absent[0]) - tau))
    assert variant > plain


def test_several_slots_add_up_and_match_the_pair_formula():
    torch.manual_seed(0)
    h = torch.nn.functional.normalize(torch.randn(3, D), dim=-1)
    images = torch.nn.functional.normalize(torch.randn(3, D), dim=-1)
    h_neg = torch.nn.functional.normalize(torch.randn(3, D), dim=-1)
    lam = torch.tensor([0.3, 0.6, 0.9])
    owner = torch.tensor([0, 0, 2])  # caption 0 negates two things ("no dog and no cat"), caption 1 none
    for clamp in (False, True):
        S = glasses_logits(h, images, h_neg, lam, owner, 0.1, 20.0, clamp)
        f = (lambda x: x.clamp_min(0)) if clamp else (lambda x: x)
        manual0 = 20 * (h[0] @ images.T) - 20 * (f(0.3 * (h_neg[0] @ images.T - 0.1))
                                                 + f(0.6 * (h_neg[1] @ images.T - 0.1)))
        torch.testing.assert_close(S[0], manual0)
        torch.testing.assert_close(S[1], 20 * (h[1] @ images.T))
        pairs = glasses_pair_logits(h, images, h_neg, lam, owner, 0.1, 20.0, clamp)
        torch.testing.assert_close(pairs, torch.diagonal(S))


def test_saturated_term_is_bounded():
    h = torch.stack([unit(1, 0, 0)])
    images = torch.stack([unit(0, 1, 0)])
    h_neg = torch.stack([unit(0, 1, 0)])  # cos(h_neg, I) = 1
    args = (h, images, h_neg, torch.tensor([1.0]), torch.tensor([0]), torch.tensor([0.2]), 10.0, False)
    beta = torch.tensor([0.1])
    sat = float(glasses_pair_logits(*args, beta=beta))
    assert sat == pytest.approx(10 * (0 - 0.1 * np.tanh(0.8 / 0.1)), rel=1e-6)
    assert float(glasses_logits(*args, beta=beta)) == pytest.approx(sat, rel=1e-6)
    assert float(glasses_pair_logits(*args)) == pytest.approx(10 * (0 - 0.8), rel=1e-6)


# ------------------------------------------------------------------------------------------- a model
def random_glasses(score="tau", lens_input="phrase", detector="lexical", seed=0, base="affirmative") -> Glasses:
    torch.manual_seed(seed)
    table: dict[str, np.ndarray] = {}

    def encoder(prompts):
        out = []
        for p in prompts:
            if p not in table:
                v = np.random.default_rng(zlib.crc32(p.encode())).normal(size=D).astype(np.float32)
                table[p] = v / np.linalg.norm(v)
            out.append(table[p])
        return np.stack(out)

    g = Glasses(GlassesConfig(embed_dim=D, num_layers=L, hidden=16, detector_hidden=8, score=score,
                              lens_input=lens_input, detector=detector, base=base), phrase_encoder=encoder,
                logit_scale=100.0)
    with torch.no_grad():  # make the Frame and tau do something
        g.frame.tau0.fill_(0.15)
        for p in g.frame.image.parameters():
            p.normal_(0, 0.3)
    return g


def text_batch(texts, seed=1) -> TextBatch:
    rng = np.random.default_rng(seed)
    layers = rng.normal(size=(len(texts), L, D)).astype(np.float32)
    layers /= np.linalg.norm(layers, axis=-1, keepdims=True)
    return TextBatch(list(texts), np.ascontiguousarray(layers[:, -1]), layers)


def images(m=7, seed=2):
    x = np.random.default_rng(seed).normal(size=(m, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


TEXTS = ["a dog and a cat", "a cat but no dog", "no dog and no cat", "probably no cow", "no", "",
         "a notebook", "kein Hund", "neither a cow nor a pig"]


def test_glasses_is_a_scorer():
    assert isinstance(random_glasses(), Scorer)
    assert isinstance(random_glasses().scorer(rerank_k=3), Scorer)


@pytest.mark.parametrize("score", ["tau", "reference"])
def test_affirmative_captions_score_exactly_like_plain_clip(score):
    g = random_glasses(score)
    tb, im = text_batch(TEXTS), images()
    plain = PlainClip(g.logit_scale)
    affirmative = [0, 5, 6, 7]  # includes empty and non-English text
    G, P = g.score_matrix(tb, im), plain.score_matrix(tb, im)
    assert np.array_equal(G[affirmative], P[affirmative])
    # "no" is a cue with no phrase: not plain CLIP but the fallback, the Lens on the whole caption (issue 24)
    assert not np.allclose(G[4], P[4])
    assert [e["path"] for e in g.explain(TEXTS[:5], tb.layers[:5], tb.h[:5])] == [
        "none", "parse", "parse", "parse", "fallback"]
    pi = images(len(TEXTS), seed=5)
    assert np.array_equal(g.score_pairs(tb, pi)[affirmative], plain.score_pairs(tb, pi)[affirmative])
    assert np.array_equal(g.rerank(tb, im, 3)[affirmative], P[affirmative])
    negated = [1, 2, 3, 8]
    assert not np.allclose(G[negated], P[negated])


def test_score_matrix_uses_caption_only_lambda():
    g = random_glasses()
    tb, im = text_batch(TEXTS), images()
    full = g.score_matrix(tb, im)
    for j in range(im.shape[0]):  # a column does not depend on which other images are scored
        np.testing.assert_allclose(g.score_matrix(tb, im[j:j + 1])[:, 0], full[:, j], rtol=1e-5, atol=1e-4)
    s = g.slots(tb)
    assert torch.allclose(s.tau, torch.full_like(s.tau, 0.15))  # tau0 + a zero-initialised offset
    # one query vector per caption: S = s*(q . I + const)
    q = s.base.numpy().copy()  # the affirmative remainder's embedding for negated captions, h otherwise
    assert np.array_equal(q[[0, 5, 6, 7]], tb.h[[0, 5, 6, 7]])  # "no" (4) takes the fallback slot
    const = np.zeros(len(q), np.float32)
    for p, o in enumerate(s.owner.tolist()):
        q[o] -= float(s.lam[p]) * s.h_neg[p].numpy()
        const[o] += float(s.lam[p]) * float(s.tau[p])
    np.testing.assert_allclose(full, g.logit_scale * (q @ im.T + const[:, None]), rtol=1e-5, atol=1e-4)


def test_reference_options_give_the_reference_formula():
    g = random_glasses(score="reference", base="caption")
    tb, im = text_batch(TEXTS), images()
    s = g.slots(tb)
    assert torch.equal(s.tau, torch.zeros_like(s.tau)) and torch.equal(s.base, torch.as_tensor(tb.h))
    expected = g.logit_scale * (tb.h @ im.T)
    for p, o in enumerate(s.owner.tolist()):
        expected[o] -= np.maximum(0, float(s.lam[p]) * g.logit_scale * (s.h_neg[p].numpy() @ im.T))
    np.testing.assert_allclose(g.score_matrix(tb, im), expected, rtol=1e-5, atol=1e-4)


def test_affirmative_base_is_the_remainder_embedding():
    g = random_glasses()
    tb = text_batch(TEXTS)
    s = g.slots(tb)
    np.testing.assert_array_equal(s.base[1].numpy(), g.encode_texts(["a cat"])[0])  # "a cat but no dog"
    np.testing.assert_array_equal(s.base[2].numpy(), g.encode_texts([""])[0])  # "no dog and no cat"


def test_score_pairs_conditions_on_the_image():
    g = random_glasses()
    tb = text_batch(TEXTS)
    im = images(len(TEXTS), seed=3)
    pairs = g.score_pairs(tb, im)
    caption_only = np.array([g.score_matrix(TextBatch([t], tb.h[i:i + 1], tb.layers[i:i + 1]), im[i:i + 1])[0, 0]
                             for i, t in enumerate(TEXTS)])
    assert not np.allclose(pairs[[1, 2, 3, 8]], caption_only[[1, 2, 3, 8]])


def test_slots_one_per_negated_phrase_with_hedges():
    g = random_glasses()
    s = g.slots(text_batch(TEXTS))
    # "no" (index 4) is a cue with no phrase: one caption-level fallback slot (phrase "", issue 24)
    assert s.owner.tolist() == [1, 2, 2, 3, 4, 8, 8]
    assert s.phrases == ["dog", "dog", "cat", "cow", "", "cow", "pig"]
    assert s.hedged.tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert ((s.lam > 0) & (s.lam < 1)).all()
    c = random_glasses(lens_input="caption").slots(text_batch(TEXTS))
    assert c.owner.tolist() == [1, 2, 3, 4, 8]  # one per negated caption, "no" included (the fallback)


def test_lens_is_batch_independent():
    """A caption's h_neg and lambda do not change with the rest of the batch (attention over layers)."""
    g = random_glasses()
    tb = text_batch(TEXTS)
    alone = g.slots(TextBatch([TEXTS[2]], tb.h[2:3], tb.layers[2:3]))
    together = g.slots(tb)
    sel = (together.owner == 2).nonzero().squeeze(-1)
    torch.testing.assert_close(together.h_neg[sel], alone.h_neg, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together.lam[sel], alone.lam, rtol=1e-5, atol=1e-6)
    lens = Lens(D, (0, 1, 2), 16)
    a = lens.attention(torch.randn(5, L, D), torch.randn(5, D))
    torch.testing.assert_close(a.sum(-1), torch.ones(5))
    assert a.shape == (5, 3)


def test_lens_applies_value_once_after_attention_same_as_per_layer():
    """The Lens runs its value projection on the attention-weighted syntax tokens (once per slot); since the
    weights sum to 1 and the projection is affine, that equals weighting the projected tokens (the reference's
    form, once per layer), for trained-looking (random, non-zero) weights and bias."""
    torch.manual_seed(3)
    lens = Lens(D, (0, 1, 2), 16)
    for p in lens.parameters():
        torch.nn.init.normal_(p, std=0.3)
    layers, src = torch.randn(7, L, D), torch.randn(7, D)
    with torch.no_grad():
        out = lens(layers, src)
        q = lens._queries(layers)
        a = lens.attention(layers, src)
        ctx = torch.einsum("ps,psd->pd", a, lens.value(q))  # per layer, then weighted
        c = lens.out(ctx) + lens.skip(src)
        g = torch.sigmoid(lens.gate(c))
        c = g * c + (1 - g) * src
        expected = torch.nn.functional.normalize(c + lens.ffn(c), dim=-1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_lens_starts_near_its_source():
    lens = Lens(D, (0, 1, 2), 16)
    src = torch.nn.functional.normalize(torch.randn(4, D), dim=-1)
    with torch.no_grad():
        out = lens(torch.randn(4, L, D), src)
    assert float((out * src).sum(-1).min()) > 0.6


def test_rerank_keeps_shortlist_on_top():
    g = random_glasses()
    tb, im = text_batch(TEXTS), images(12)
    caption_only = g.score_matrix(tb, im)
    rr = g.rerank(tb, im, k=4)
    for r in [1, 2, 3, 8]:
        short = set(np.argsort(-caption_only[r])[:4].tolist())
        assert set(np.argsort(-rr[r])[:4].tolist()) == short
        rest = [j for j in range(12) if j not in short]
        assert list(np.argsort(-rr[r, rest], kind="stable")) == list(np.argsort(-caption_only[r, rest],
                                                                               kind="stable"))


@pytest.mark.parametrize("mode, expect", [("lexical", [1, 2, 3, 4, 8]), ("learned", "all"), ("and", [1, 2, 3, 4, 8]),
                                          ("or", "all")])
def test_detector_modes(mode, expect):
    g = random_glasses(detector=mode)
    with torch.no_grad():  # a head that says "negated" for everything
        g.detector.net[-1].weight.zero_()
        g.detector.net[-1].bias.fill_(5.0)
    mask = g.negated_mask(TEXTS, torch.as_tensor(text_batch(TEXTS).layers))
    want = list(range(len(TEXTS))) if expect == "all" else expect
    assert np.flatnonzero(mask).tolist() == want


def test_config_validation():
    with pytest.raises(GlassesError):
        GlassesConfig(embed_dim=D, num_layers=L, score="nope")
    with pytest.raises(GlassesError):
        GlassesConfig(embed_dim=D, num_layers=L, syntax_layers=(7,))
    assert GlassesConfig(embed_dim=D, num_layers=12).syntax_layers == (0, 1, 2)
    assert GlassesConfig(embed_dim=D, num_layers=2).syntax_layers == (0,)


def test_negated_captions_need_layers():
    g = random_glasses()
    tb = text_batch(TEXTS)
    with pytest.raises(GlassesError):
        g.score_matrix(TextBatch(tb.texts, tb.h, None), images())
    # affirmative-only batches do not
    aff = TextBatch(["a dog"], tb.h[:1], None)
    assert np.array_equal(g.score_matrix(aff, images()), PlainClip(g.logit_scale).score_matrix(aff, images()))


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def tiny():
    return tiny_clip(seed=0)


def test_checkpoint_roundtrip_and_backbone_check(tiny, tmp_path):
    g = Glasses(GlassesConfig(embed_dim=tiny.embed_dim, num_layers=tiny.num_text_layers, hidden=16), tiny)
    with torch.no_grad():
        g.frame.tau0.fill_(0.1)
    g.frame.set_bank(torch.nn.functional.normalize(torch.randn(5, tiny.embed_dim), dim=-1))
    path = g.save(tmp_path / "g.safetensors", training={"note": "test"})
    header = read_header(path)
    assert header.format == "sayno-glasses" and header.version == "1"
    assert header.backbone_fingerprint == tiny.fingerprint
    g2 = load_glasses(path, tiny)
    assert g2.training_summary == {"note": "test"}
    assert torch.equal(g2.frame.bank, g.frame.bank)
    texts = ["a dog but no cat", "a dog"]
    layers = tiny.encode_text_layers(texts).numpy()
    tb = TextBatch(texts, np.ascontiguousarray(layers[:, -1]), layers)
    im = tiny.encode_image(torch.zeros(3, 3, 32, 32)).numpy()
    assert np.array_equal(g.score_matrix(tb, im), g2.score_matrix(tb, im))
    assert g2.training is False
    with pytest.raises(BackboneMismatch, match="fingerprint"):
        load_glasses(path, tiny_clip(seed=1))


def test_load_rejects_other_files(tmp_path, tiny):
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"sayno.format": "open_clip"})
    with pytest.raises(CheckpointError, match="not 'sayno-glasses'"):
        load_glasses(tmp_path / "other.safetensors", tiny)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        load_glasses(tmp_path / "junk.safetensors", tiny)


def _saved_glasses(tiny, tmp_path):
    g = Glasses(GlassesConfig(embed_dim=tiny.embed_dim, num_layers=tiny.num_text_layers, hidden=16), tiny)
    path = g.save(tmp_path / "g.safetensors")
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.pop("lens.gate.weight"), "missing tensor"),
    (lambda t: t.__setitem__("extra.weight", torch.zeros(2)), "unexpected tensor"),
    (lambda t: t.__setitem__("lens.gate.weight", torch.zeros(3, 3)), "has shape"),
    (lambda t: t["lens.gate.weight"].fill_(float("nan")), "NaN"),
])
def test_load_rejects_bad_tensors_in_one_line(tiny, tmp_path, damage, message):
    meta, tensors = _saved_glasses(tiny, tmp_path)
    damage(tensors)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=message) as info:
        load_glasses(tmp_path / "bad.safetensors", tiny)
    assert "\n" not in str(info.value)


def test_load_rejects_unknown_config_keys(tiny, tmp_path):
    meta, tensors = _saved_glasses(tiny, tmp_path)
    meta["sayno.config"] = meta["sayno.config"][:-1] + ', "colour": "red"}'
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ConfigError, match="colour"):
        load_glasses(tmp_path / "bad.safetensors", tiny)
    with pytest.raises(ConfigError):
        GlassesConfig.from_dict({"embed_dim": D, "num_layers": L, "hiden": 3})


def test_save_is_atomic_and_leaves_no_temporary_file(tiny, tmp_path):
    g = Glasses(GlassesConfig(embed_dim=tiny.embed_dim, num_layers=tiny.num_text_layers, hidden=16), tiny)
    with torch.no_grad():
        g.frame.tau0.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        g.save(tmp_path / "g.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_phrase_cache_is_bounded():
    g = random_glasses()
    g.phrases.capacity = 3
    first = g.encode_texts(["a", "b", "c", "d"])  # more texts than the cache holds: still all encoded
    assert first.shape == (4, D) and len(g.phrases) == 3
    np.testing.assert_array_equal(g.encode_texts(["a"])[0], first[0])  # evicted, encoded again: same vector
    assert len(g.phrases) == 3


def test_explain_with_backbone(tiny):
    g = Glasses(GlassesConfig(embed_dim=tiny.embed_dim, num_layers=tiny.num_text_layers, hidden=16), tiny)
    (e1, e2, e3, e4) = g.explain(["a cat but probably no dog", "a notebook", "no", "no dog and no cat"])
    assert e1["negated"] and e1["phrases"] == ["dog"] and e1["hedged"] == [True] and len(e1["lambda"]) == 1
    assert e1["affirmative"] == "a cat"
    assert not e2["negated"] and e2["phrases"] == [] and e2["slots"] == 0
    assert e3["negated"] and e3["phrases"] == [] and e3["slots"] == 1 and e3["path"] == "fallback"
    assert e1["path"] == "parse" and e2["path"] == "none"
    assert e4["phrases"] == ["dog", "cat"] and e4["slots"] == 2  # one h_neg per negated phrase
