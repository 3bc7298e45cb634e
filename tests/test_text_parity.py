"""Text encoder parity with the official VETextEncoder (tiny config, seeded weights).

Fixture: tests/fixtures/modules/text.safetensors, made by tools/parity/make_text_fixture.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3.config import SAM3, TINY, TextConfig
from opensam3.model.text import TextEncoder, TextFeatures
from opensam3.seeded import seed_module

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "modules" / "text.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    return tensors, meta


@pytest.fixture(scope="module")
def encoder(fixture) -> TextEncoder:
    _, meta = fixture
    cfg = json.loads(meta["config"])
    text_cfg = TextConfig(width=cfg["width"], layers=cfg["layers"], heads=cfg["heads"],
                          context_length=cfg["context_length"])
    assert text_cfg == TINY.text
    model = TextEncoder(text_cfg, d_model=cfg["d_model"]).eval()
    seed_module(model, prefix=meta["seed_prefix"])
    return model


def test_state_dict_matches_official_tiny(fixture, encoder):
    _, meta = fixture
    official = json.loads(meta["state_dict_shapes"])
    ours = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    assert ours == official


def test_state_dict_matches_full_checkpoint_manifest():
    manifest = json.loads((FIXTURES / "sam3_checkpoint_manifest.json").read_text())
    prefix = "detector.backbone.language_backbone."
    official = {k[len(prefix):]: v["shape"] for k, v in manifest.items() if k.startswith(prefix)}
    with torch.device("meta"):
        model = TextEncoder(SAM3.text, d_model=SAM3.detector.d_model)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official
    assert not any("freqs_cis" in k or "attn_mask" in k for k in ours)


def test_encoder_outputs_match_official(fixture, encoder):
    tensors, meta = fixture
    phrases = json.loads(meta["encoder_phrases"])
    with torch.no_grad():
        out = encoder(phrases)
    assert torch.equal(out.token_ids, tensors["enc.token_ids"])
    assert torch.equal(out.language_mask, tensors["enc.language_mask"])
    assert out.features.shape == (len(phrases), 32, 256)
    errors = {
        "language_features": (out.language_features - tensors["enc.language_features"]).abs().max().item(),
        "language_embeds": (out.language_embeds - tensors["enc.language_embeds"]).abs().max().item(),
    }
    assert max(errors.values()) <= TOL, errors


def test_encoder_matches_tiny_reference_model(encoder):
    """The tiny full-model fixture's text features ('a red dog') come out of the same weights."""
    with safe_open(str(FIXTURES / "tiny_reference.safetensors"), "pt") as f:
        prompt = f.metadata()["text_prompt"]
        expected = f.get_tensor("out.text.language_features")
        expected_mask = f.get_tensor("out.text.language_mask")
    with torch.no_grad():
        out = encoder([prompt])
    assert torch.equal(out.language_mask, expected_mask)
    assert (out.language_features - expected).abs().max().item() <= TOL


def test_padding_mask_polarity(encoder):
    with torch.no_grad():
        out = encoder(["a red dog", ""])
    # [start, a, red, dog, end] are real tokens; everything after is padding
    assert out.padding_mask[0].tolist() == [False] * 5 + [True] * 27
    assert out.padding_mask[1].tolist() == [False] * 2 + [True] * 30
    assert out.padding_mask.dtype == torch.bool


def test_rows_are_independent_of_batch(encoder):
    with torch.no_grad():
        batch = encoder(["a red dog", "a person in a red shirt"])
        single = encoder(["a person in a red shirt"])
    assert (batch.features[1] - single.features[0]).abs().max().item() <= 1e-5


def test_phrase_cache(encoder):
    encoder.clear_cache()
    with torch.no_grad():
        direct = encoder(["dog", "cat", "dog"])
    cached = encoder.encode_cached(["dog", "cat", "dog"])
    assert encoder.cache_info()["entries"] == 2
    assert torch.allclose(cached.features, direct.features, atol=1e-6)
    assert torch.equal(cached.padding_mask, direct.padding_mask)
    again = encoder.encode_cached(["cat", "bird"])
    assert encoder.cache_info()["entries"] == 3
    assert torch.equal(again.features[0], cached.features[1])
    encoder.load_state_dict(encoder.state_dict())  # new weights: cache must be dropped
    assert encoder.cache_info()["entries"] == 0
    encoder.encode_cached(["dog"])
    encoder.clear_cache()
    assert encoder.cache_info()["entries"] == 0


def test_phrase_cache_is_bounded():
    small = TextEncoder(TextConfig(width=32, layers=1, heads=2), d_model=16, cache_size=3)
    small.encode_cached([f"thing {i}" for i in range(5)])
    assert small.cache_info()["entries"] == 3


def test_features_layouts(encoder):
    with torch.no_grad():
        out = encoder(["dog", "cat"])
    official = out.as_official()
    assert official["language_features"].shape == (32, 2, 256)
    assert official["language_embeds"].shape == (32, 2, 128)
    assert official["language_mask"].shape == (2, 32)
    picked = out.select(1)
    assert isinstance(picked, TextFeatures) and picked.batch_size == 1
    assert torch.equal(picked.features[0], out.features[1])


def test_bad_input_errors(encoder):
    with pytest.raises(ValueError, match="empty"):
        encoder([])
    with pytest.raises(TypeError, match="item 0 is NoneType"):
        encoder([None])
    with pytest.raises(TypeError):
        encoder.encode_cached([1.5])
