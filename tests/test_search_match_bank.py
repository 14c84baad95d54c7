"""The match test's bank embeddings stored in an index (sayno.search.match.encode_bank/decode_bank), and
refused where meta.json is read when damaged."""

import numpy as np
import pytest

from sayno.search.match import decode_bank, encode_bank
from sayno.search.store import IndexFileError, check_meta


def test_bank_round_trip_is_exact():
    bank = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    assert np.array_equal(decode_bank(encode_bank(bank), 5), bank)


@pytest.mark.parametrize("damage", ["short", "rows", "dim", "not-base64", "nan", "extra-key", "bool-rows"])
def test_a_damaged_bank_is_refused(damage):
    bank = np.ones((3, 4), np.float32)
    stored = encode_bank(bank)
    dim = 4
    if damage == "short":
        stored["float32"] = stored["float32"][:-4]
    elif damage == "rows":
        stored["rows"] = 4
    elif damage == "dim":
        dim = 5
    elif damage == "not-base64":
        stored["float32"] = "*" * len(stored["float32"])
    elif damage == "nan":
        stored = encode_bank(np.full((3, 4), np.nan, np.float32))
    elif damage == "extra-key":
        stored["more"] = 1
    elif damage == "bool-rows":
        stored["rows"] = True
    with pytest.raises(ValueError):
        decode_bank(stored, dim)


def _meta(match: dict) -> dict:
    return {"format": "sayno-index", "version": 3, "backbone_fingerprint": "f", "backbone_spec": "embedded",
            "config": {}, "root": "/photos", "embed_dim": 4, "bad": [], "glasses": None, "match": match}


def test_check_meta_refuses_a_damaged_bank_and_names_the_file():
    from sayno.search.store import FORMAT

    cal = {"lam": 0.1, "tau": 0.0, "level": 0.2}
    meta = _meta({**cal, "bank": encode_bank(np.ones((2, 4), np.float32))})
    meta["format"] = FORMAT
    check_meta(meta, "IDX/v-1/meta.json")  # a good bank passes
    meta["match"]["bank"]["rows"] = 3
    with pytest.raises(IndexFileError, match="IDX/v-1/meta.json: match bank"):
        check_meta(meta, "IDX/v-1/meta.json")
