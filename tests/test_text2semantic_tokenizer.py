import json

import pytest
from t2s_helpers import S1, tiny

CASES = json.loads((S1 / "tokenizer_cases.json").read_text())


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["text"][:20])
def test_ids_match_original(case):
    tok = tiny().tokenizer
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.encode(case["text"], allowed_special=False) == case["ids_allowed_special_false"]
    assert tok.decode(case["ids"]) == case["decoded"]


def test_special_id_layout():
    tok = tiny().tokenizer
    assert tok.semantic_begin_id == CASES["semantic_begin_id"]
    assert tok.semantic_end_id == CASES["semantic_end_id"]
    assert tok.im_end_id == CASES["im_end_id"]
    assert min(tok.special_ids.values()) == CASES["special_token_id_begin"]
    assert len(tok.special_ids) == CASES["n_special_tokens"]


def test_speaker_tag_is_plain_text():
    tok = tiny().tokenizer
    ids = tok.encode("<|speaker:0|>")
    assert len(ids) > 1 and all(i < CASES["n_mergeable_ranks"] for i in ids)
