"""The match test's open vocabulary (sayno.search.vocabulary, issue 27 item 4): the shipped WordNet word list, the
words a query leaves out of its competitors, and an index built with ``vocabulary=True``."""

from __future__ import annotations

import numpy as np
import pytest

from sayno.glasses.training_free import Calibration, TrainingFreeGlasses
from sayno.search import match as match_module
from sayno.search.match import VOCAB_KEY, Matcher, encode_bank, stored_vocabulary
from sayno.search.store import FORMAT, IndexFileError, check_meta
from sayno.search.vocabulary import Vocabulary, load_vocabulary, singulars


def test_the_shipped_vocabulary_holds_concrete_nouns_and_their_graph():
    v = load_vocabulary()
    assert 2000 < len(v) < 5000 and v.version == 1
    assert {"dog", "chair", "apple", "bicycle", "tree"} <= set(v.words)
    assert not {"idea", "happiness", "running", "mathematics"} & set(v.words)  # not concrete things
    assert list(v.words) == sorted(set(v.words))
    assert all(i in v.named(w) for i, w in enumerate(v.words))  # every entry names itself ("b-52", four words)


def test_a_query_leaves_out_its_own_word_its_kinds_and_what_it_is_a_kind_of():
    v = load_vocabulary()
    out = {v.words[i] for i in np.flatnonzero(v.related("a dog"))}
    assert {"dog", "puppy", "terrier", "mammal"} <= out  # itself, kinds of dog, what a dog is
    assert not {"cat", "chair", "apple", "horse"} & out  # other things stay competitors
    assert v.related("two dogs").tolist() == v.related("dog").tolist() == v.related("The Dog").tolist()
    assert [v.words[i] for i in v.named("two fire engines")] == ["fire", "engine"]  # singular of the last word
    # every thing a phrase names leaves the competitors: a dog on a sofa must not lose to "dog" or to "couch"
    assert [v.words[i] for i in v.named("a dog on a sofa")] == ["dog", "sofa"]
    on_sofa = {v.words[i] for i in np.flatnonzero(v.related("a dog on a sofa"))}
    assert {"dog", "puppy", "sofa", "couch"} <= on_sofa and "cat" not in on_sofa
    assert v.named("two apples and a tree") == [v.words.index("apple"), v.words.index("tree")]
    nothing = v.related("a zorblax")
    assert not nothing.any() and not nothing.flags.writeable
    assert singulars("berries") == ["berry", "berrie"] and singulars("boxes") == ["box", "boxe"]
    assert singulars("glass") == []


def test_a_vocabulary_with_a_synset_out_of_range_is_refused():
    with pytest.raises(ValueError, match="synset id 3"):
        Vocabulary(("a",), ((3,),), ((),))
    with pytest.raises(ValueError, match="sense lists"):
        Vocabulary(("a", "b"), ((0,),), ((),))


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class _Encoder:
    """What Matcher needs of the training-free Glasses: prompt-ensembled phrases and the bank, as fixed axes."""

    def __init__(self, axes: dict[str, np.ndarray], bank: np.ndarray):
        self.axes, self._bank = axes, bank

    def encode_phrases(self, phrases):
        return np.stack([self.axes[p] for p in phrases])

    def bank(self):
        return self._bank

    def bank_mean(self):
        return np.zeros(self._bank.shape[1], np.float32)


def test_a_look_alike_in_the_vocabulary_unmarks_an_image_and_a_kind_of_the_query_does_not():
    d = 4
    e = np.eye(d, dtype=np.float32)
    # words: "dog", "puppy" (a kind of dog), "onion" (not related); the bank knows only axis 3
    words = Vocabulary(("dog", "onion", "puppy"), ((0,), (1,), (2,)), ((), (), (0,)))
    vocab = _unit([e[0], e[1], e[0] + 0.3 * e[2]])
    enc = _Encoder({"dog": e[0], "basketball": _unit(e[1] + 0.5 * e[0])}, e[3:4])
    cal = Calibration(lam=0.1, tau=-1.0, level=-1.0)
    images = _unit([e[0] + 0.25 * e[2],  # a dog that looks a little more like "puppy" than like "dog"
                    e[1] + 0.1 * e[0] + 0.5 * e[3]])  # an onion, more like "basketball" than like the bank
    plain = Matcher(None, cal, enc)
    opened = Matcher(None, cal, enc, vocabulary=words, vocabulary_embeddings=vocab)
    assert plain.present(["dog", "basketball"], images).tolist() == [[True, False], [True, True]]
    # the onion is no basketball once "onion" competes; the dog stays a dog ("puppy" is a kind of dog)
    assert opened.present(["dog", "basketball"], images).tolist() == [[True, False], [False, False]]
    comp = opened.competitors(["dog"], images)
    assert comp.shape == (1, 2) and comp[0, 0] == pytest.approx(float(images[0] @ e[3]), abs=1e-6)
    with pytest.raises(ValueError, match="2 vocabulary embeddings for 3 words"):
        Matcher(None, cal, enc, vocabulary=words, vocabulary_embeddings=vocab[:2])


def test_stored_vocabulary_round_trip_and_a_damaged_one_is_refused():
    v = load_vocabulary()
    emb = np.random.default_rng(0).standard_normal((len(v), 4)).astype(np.float32)
    cal = {"lam": 0.1, "tau": 0.0, "level": 0.2}
    match = {**cal, "bank": encode_bank(np.ones((2, 4), np.float32)),
             VOCAB_KEY: {"version": v.version, **encode_bank(emb)}}
    assert np.array_equal(stored_vocabulary({"match": match}, 4), emb)
    assert stored_vocabulary({"match": {**match, VOCAB_KEY: {**match[VOCAB_KEY], "version": 99}}}, 4) is None
    assert stored_vocabulary({"match": cal}, 4) is None
    meta = {"format": FORMAT, "version": 3, "backbone_fingerprint": "f", "backbone_spec": "embedded", "config": {},
            "root": "/photos", "embed_dim": 4, "bad": [], "glasses": None, "match": match}
    check_meta(meta, "IDX/v-1/meta.json")
    meta["match"][VOCAB_KEY]["rows"] = 3
    with pytest.raises(IndexFileError, match="IDX/v-1/meta.json: match vocabulary"):
        check_meta(meta, "IDX/v-1/meta.json")
    meta["match"][VOCAB_KEY] = [1, 2]
    with pytest.raises(IndexFileError, match="match vocabulary is not"):
        check_meta(meta, "IDX/v-1/meta.json")


def test_an_index_built_with_the_vocabulary_stores_it_and_search_uses_it(tmp_path, embedded, monkeypatch):
    from typer.testing import CliRunner

    from sayno.cli import app
    from sayno.search import IndexConfig, Searcher, build_index
    from sayno.search.store import read_index
    from sayno.search.testing import tiny_world

    images = tiny_world(tmp_path / "w", groups=20, seed=4)
    build_index(images, tmp_path / "open.index", IndexConfig(), backbone=embedded, progress=False)  # the default
    r = CliRunner().invoke(app, ["index", "build", str(images), "--out", str(tmp_path / "plain.index"),
                                 "--no-match-vocabulary", "--json"])
    assert r.exit_code == 0, r.output
    plain, opened = Searcher(tmp_path / "plain.index", backbone=embedded), Searcher(tmp_path / "open.index",
                                                                                    backbone=embedded)
    assert plain.matcher().words is None and len(opened.matcher().words) == len(load_vocabulary())
    assert plain.search("a cat", 3).match_test["vocabulary"] == 0
    assert opened.search("a cat", 3).match_test["vocabulary"] == len(load_vocabulary())
    for query, fewer in (("a cat", True), ("a basketball", True), ("a scene with no dog", False)):
        a, b = plain.search(query, 10), opened.search(query, 10)
        assert [h.path for h in a.hits] == [h.path for h in b.hits]  # the ranking is not the match test's
        # more competitors: what the vocabulary marks present the bank marks present too, so a wanted phrase
        # matches a subset of the images and a refused one ("no dog") a superset
        pairs = [(x.match, y.match) for x, y in zip(a.hits, b.hits, strict=True)]
        assert all((y <= x) if fewer else (y >= x) for x, y in pairs), (query, pairs)
    # an update reuses the stored embeddings (the same JSON entry, not embedded again)
    first = read_index(tmp_path / "open.index").envelope.sections["match"][VOCAB_KEY]

    def refuse(*_a, **_k):
        raise AssertionError("the update embedded the vocabulary again")

    monkeypatch.setattr(TrainingFreeGlasses, "encode_vocabulary", refuse)
    monkeypatch.setattr(match_module, "_VOCAB_MEMO", {})
    (images / "test" / min(p.name for p in (images / "test").iterdir())).unlink()
    build_index(images, tmp_path / "open.index", IndexConfig(), backbone=embedded, progress=False)
    assert read_index(tmp_path / "open.index").envelope.sections["match"][VOCAB_KEY] == first


def test_the_shipped_file_is_what_the_script_writes_from_wordnet(scripts, tmp_path):
    from sayno.ood.wordlist import find_wordnet

    folder = find_wordnet()
    if folder is None:
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    import json

    from sayno.base.prompts import load_templates

    with scripts("scripts/make_match_vocabulary.py") as m:
        built = m.build(folder)
    shipped = load_templates("match_vocabulary")
    assert json.loads(json.dumps(built)) == shipped  # the rule, not a hand-made list
