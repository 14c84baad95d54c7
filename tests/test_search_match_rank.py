"""Issue 27 item 4: the measuring instrument of bench/search_match.py's ranking variants (label-free rankings of
"a X", the bank log-odds, the flag rules) against direct computations and against the real search path, and
the public ``Searcher.matcher()``."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sayno.base.prompts import with_article
from sayno.search.match import MatchTest, presence, relative
from sayno.search.testing import tiny_world


@pytest.fixture(scope="module")
def bench(scripts):
    with scripts("bench/search_match.py") as module:
        yield module


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _view(bench, feats, bank, scale=10.0, tau=0.0, level=0.0):
    """What bench.index_view returns, for a synthetic index (no searcher)."""
    bank_sims = bank @ feats.T
    mu = bank.mean(0)
    return {"F": feats, "paths": [str(i) for i in range(len(feats))], "best": bank_sims.max(0), "mu": mu,
            "bank": bank, "bank_sims": bank_sims, "muI": feats @ mu, "lse": bench.logsumexp(scale * bank_sims, 0),
            "scale": scale, "tau": tau, "level": level}


def test_logsumexp_is_stable_and_exact(bench):
    x = np.array([[1000.0, 0.0], [1000.0, np.log(3.0)]])
    np.testing.assert_allclose(bench.logsumexp(x, 0), [1000.0 + np.log(2.0), np.log(4.0)])


def test_bank_log_odds_is_the_logit_of_clips_softmax_over_bank_plus_query(bench):
    """A hub (like every bank object a little) outranks a scene that shows X beside a bank object under plain
    CLIP; the log-odds is exactly logit P(X | image) over bank + X, and leaves X's own bank entry out."""
    d = 5
    bank = np.eye(d)[:3]  # three bank objects; X (axis 4) is not one of them
    x = np.eye(d)[4]
    # X alone, X beside object 0, a hub, object 1, X beside a bigger object 0, X faint but alone (axis 3: nothing)
    feats = _unit([x, x + 2 * bank[0], bank.sum(0) + x, bank[1], x + 1.05 * bank[0], x + 2 * np.eye(d)[3]])
    view = _view(bench, feats, bank)
    scores, rules = bench.rankings(x, x, view)
    plain = scores["plain CLIP h.I (search)"]
    assert plain[2] > plain[1] and plain[4] > plain[5]  # the hub above a scene that shows X
    logits = view["scale"] * np.vstack([bank @ feats.T, x @ feats.T])  # (4 classes, 4 images)
    p = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    np.testing.assert_allclose(scores["bank log-odds s*e.I - LSE_b s*e_b.I"], np.log(p[-1] / (1 - p[-1])), rtol=1e-9)
    # the match flags are the search's rule (presence), and the stricter rule is P > 1/2 on top of them
    want = presence((feats @ x)[None], view["best"], relative(x[None], view["mu"], feats), 0.0, 0.0)[0]
    assert rules["argmax (search)"].tolist() == want.tolist()
    assert rules["P(p|I) > 1/2"].tolist() == (want & (p[-1] > 0.5)).tolist()
    first = scores["matching first, then plain"]
    assert want.tolist() == [True, False, False, False, False, True]
    assert all(first[i] > first[j] for i in np.flatnonzero(want) for j in np.flatnonzero(~want))
    # a query that is a bank object: its own entry is not one of "the other objects"
    scores, _ = bench.rankings(bank[1], bank[1], view)
    others = view["scale"] * (bank[[0, 2]] @ feats.T)
    np.testing.assert_allclose(scores["bank log-odds s*e.I - LSE_b s*e_b.I"],
                               view["scale"] * (feats @ bank[1]) - bench.logsumexp(others, 0), rtol=1e-9)


# ------------------------------------------------------------------------------------------ the real path
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    tiny_world(out, groups=100, seed=3)
    return out


def test_matcher_is_the_one_search_flags_with(searcher, bench, world):
    objects = bench.scene_objects(world)
    obj = Counter(o for objs in objects.values() for o in objs).most_common(1)[0][0]
    res = searcher.search(with_article(obj), 10)
    assert any(h.match for h in res.hits) and not all(h.match for h in res.hits)  # both kinds compared
    m = searcher.matcher()
    assert m is searcher.matcher() and m.tau == pytest.approx(res.match_test["tau"], abs=1e-4)
    rows = {p: i for i, p in enumerate(str(p) for p in searcher.data.files.path)}
    feats = searcher.data.features(np.array([rows[h.path] for h in res.hits]))
    assert m.flags(MatchTest((obj,), ()), feats).tolist() == [h.match for h in res.hits]


def test_variants_plain_ranking_and_flags_are_what_search_returns(searcher, bench, world):
    """The instrument's plain ranking and its argmax flag rule reproduce Searcher.search hit for hit."""
    objects = bench.scene_objects(world)
    out = bench.variants(searcher, objects, [], world, min_scenes=5)
    names = sorted(o for o, c in Counter(o for objs in objects.values() for o in objs).items() if c >= 5)
    assert out["objects"] == len(names) > 0
    shows = both = 0
    for x in names:
        hits = searcher.search(with_article(x), 5).hits
        shows += sum(x in objects[h.path] for h in hits)
        both += sum(h.match and x in objects[h.path] for h in hits)
    assert out["top5_show"]["plain CLIP h.I (search)"] == pytest.approx(shows / (5 * len(names)))
    assert out["flag_rules"]["argmax (search)"]["present_top5_match_and_show"] == pytest.approx(both / (5 * len(names)))
    assert 0 <= out["backbone_sees_x"]["top5_ceiling"] <= 1 and set(out["caption_r_at_5"]) == {"plain", "bank log-odds"}
