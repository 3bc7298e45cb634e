"""Our BPE tokenizer against the official SAM 3 tokenizer's ids (fixture: tests/fixtures/modules/text.safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3.model.text.tokenizer import BPETokenizer, clean_text

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "text.safetensors"


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    return tensors, json.loads(meta["tokenizer_phrases"])


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer()


def test_vocabulary_found_through_the_package(tokenizer):
    assert tokenizer.vocab_size == 49408
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id) == (49406, 49407)


def test_explicit_vocab_path_gives_the_same_tokenizer(tokenizer):
    import opensam3

    path = Path(opensam3.__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    other = BPETokenizer(path)
    assert other.encode("a person in a red shirt") == tokenizer.encode("a person in a red shirt")
    with pytest.raises(FileNotFoundError):
        BPETokenizer(path.with_name("missing.txt.gz"))


@pytest.mark.parametrize("context_length", [32, 77])
def test_batch_ids_match_official(fixture, tokenizer, context_length):
    tensors, phrases = fixture
    expected = tensors[f"tok.ids_ctx{context_length}"]
    ours = tokenizer(phrases, context_length=context_length)
    assert ours.dtype == torch.long and ours.shape == expected.shape
    bad = [phrases[i] for i in range(len(phrases)) if not torch.equal(ours[i], expected[i])]
    assert not bad, f"{len(bad)} phrases differ, e.g. {bad[:5]}"


def test_raw_encode_matches_official(fixture, tokenizer):
    tensors, phrases = fixture
    flat, offsets = tensors["tok.encode_flat"].tolist(), tensors["tok.encode_offsets"].tolist()
    for i, phrase in enumerate(phrases):
        assert tokenizer.encode(phrase) == flat[offsets[i] : offsets[i + 1]], phrase


def test_truncation_keeps_end_token_last(tokenizer):
    phrase = " ".join(["dog"] * 40)
    ids = tokenizer([phrase], context_length=32)[0]
    assert ids[0] == tokenizer.sot_token_id and ids[-1] == tokenizer.eot_token_id
    assert (ids[1:-1] != 0).all()
    # exactly fitting: 30 words + start + end, nothing cut
    fit = tokenizer([" ".join(["dog"] * 30)], context_length=32)[0]
    assert fit[-1] == tokenizer.eot_token_id and fit[-2] == fit[1]


def test_empty_phrase_is_start_end_then_padding(tokenizer):
    ids = tokenizer([""])[0]
    assert ids[:2].tolist() == [49406, 49407] and (ids[2:] == 0).all()
    assert tokenizer.encode("") == []


def test_single_string_is_a_batch_of_one(tokenizer):
    assert torch.equal(tokenizer("a red dog"), tokenizer(["a red dog"]))


def test_cleaning():
    assert clean_text("  Tom &amp;amp;  JERRY\t\n") == "tom & jerry"


def test_decode_round_trip(tokenizer):
    assert tokenizer.decode(tokenizer.encode("A Café 🐶!")).strip() == "a café 🐶!"


def test_bad_input_errors(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        tokenizer([])
    with pytest.raises(TypeError, match="item 1 is int"):
        tokenizer(["dog", 3])
    with pytest.raises(TypeError, match="list of str"):
        tokenizer(None)
    with pytest.raises(TypeError):
        tokenizer.encode(b"bytes")
    with pytest.raises(ValueError, match="context_length"):
        tokenizer(["dog"], context_length=0)


def test_word_cache_gives_stable_results(tokenizer):
    first = tokenizer.encode("striped zebra zebra zebra")
    assert tokenizer.encode("striped zebra zebra zebra") == first
    assert first[1] == first[2] == first[3]
