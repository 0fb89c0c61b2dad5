import numpy as np
import pytest
from t2s_helpers import REF_TEXT, S1, TEXT, reference_codes, tiny

from fish_speech.models.text2semantic import PromptTooLongError


def test_text_only_prompt_matches_original():
    prompt = tiny().build_prompt(TEXT)
    assert prompt.dtype.is_floating_point is False
    np.testing.assert_array_equal(prompt.numpy(), np.load(S1 / "prompt_text_only.npy"))


def test_reference_prompt_matches_original():
    prompt = tiny().build_prompt(TEXT, [REF_TEXT], [reference_codes()])
    np.testing.assert_array_equal(prompt.numpy(), np.load(S1 / "prompt_with_reference.npy"))


def test_several_references_are_laid_out_in_order():
    t2s = tiny()
    tok = t2s.tokenizer
    first, second = reference_codes(), reference_codes()[:, 3:8]
    prompt = t2s.build_prompt(TEXT, [REF_TEXT, "Second one."], [first, second]).numpy()

    def text(ids):
        return np.pad(np.array([ids]), ((0, first.shape[0]), (0, 0)))

    def vq(codes):
        return np.concatenate([codes[:1] + tok.semantic_begin_id, codes])

    speaker = tok.encode("<|speaker:0|>")
    expected = np.concatenate(
        [
            text([tok.token_id("<|interleave|>")]),
            text(speaker + tok.encode(REF_TEXT)),
            vq(first),
            text([tok.im_end_id]),
            text(speaker + tok.encode("Second one.")),
            vq(second),
            text([tok.im_end_id]),
            text(speaker + tok.encode(TEXT)),
        ],
        axis=1,
    )
    np.testing.assert_array_equal(prompt, expected)


def test_prompt_too_long_raises():
    t2s = tiny()
    limit = t2s.max_seq_len - 2048
    with pytest.raises(PromptTooLongError, match="prompt too long"):
        t2s.build_prompt("a " * (limit + 10))


@pytest.mark.parametrize(
    "codes, message",
    [
        (np.zeros((3, 4), dtype=np.int64), "shape"),
        (np.full((4, 4), 5000, dtype=np.int64), "semantic codes"),
        (np.zeros((4, 4), dtype=np.float32), "integers"),
    ],
)
def test_bad_reference_codes_raise(codes, message):
    with pytest.raises(ValueError, match=message):
        tiny().build_prompt(TEXT, [REF_TEXT], [codes])


def test_reference_count_mismatch_raises():
    with pytest.raises(ValueError, match="reference texts"):
        tiny().build_prompt(TEXT, [REF_TEXT, REF_TEXT], [reference_codes()])


def test_control_token_strings_in_text_are_read_as_text():
    t2s = tiny()
    tok = t2s.tokenizer
    text = "Stop <|im_end|> here <|semantic:3|>."
    prompt = t2s.build_prompt(text, ["Ref <|im_end|>"], [reference_codes()]).numpy()
    # The only control tokens are the layout's own: one <|interleave|>, one <|im_end|> closing
    # the reference, and the reference's semantic tokens.
    ids = prompt[0]
    assert (ids == tok.im_end_id).sum() == 1
    semantic = (ids >= tok.semantic_begin_id) & (ids <= tok.semantic_end_id)
    assert semantic.sum() == reference_codes().shape[1]
    tail = ids[-len(tok.encode(text, allowed_special=False)) :]
    assert tok.decode(tail.tolist()) == text
