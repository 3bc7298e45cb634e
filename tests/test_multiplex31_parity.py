"""SAM 3.1's multiplex mask decoder against the official ``MultiplexMaskDecoder`` (GitHub main,
fixture made by tools/parity/make_multiplex_decoder_fixture.py with seeded weights)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3.model.tracker.multiplex31 import TINY_MULTIPLEX
from opensam3.model.tracker.multiplex31.mask_decoder import MultiplexMaskDecoder
from opensam3.seeded import apply_weight_overrides, seed_module

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "multiplex_decoder.safetensors"


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def test_tiny_config_is_the_fixtures(fixture):
    _, metadata = fixture
    config = json.loads(metadata["config"])
    assert (TINY_MULTIPLEX.dim, TINY_MULTIPLEX.multiplex_count, TINY_MULTIPLEX.masks_per_slot) == \
        (config["dim"], config["slots"], config["masks_per_slot"])
    assert TINY_MULTIPLEX.embedding_size == config["grid"]
    assert (TINY_MULTIPLEX.decoder_depth, TINY_MULTIPLEX.decoder_heads, TINY_MULTIPLEX.decoder_mlp_dim,
            TINY_MULTIPLEX.iou_head_hidden) == (config["decoder_depth"], config["decoder_heads"],
                                                config["decoder_mlp_dim"], config["iou_head_hidden"])


def test_state_dict_layout_is_the_official_one(fixture):
    _, metadata = fixture
    official = json.loads(metadata["state_dict_shapes"])
    ours = {k: list(v.shape) for k, v in MultiplexMaskDecoder(TINY_MULTIPLEX).state_dict().items()}
    assert ours == official


def test_outputs_match_the_official_decoder(fixture):
    tensors, metadata = fixture
    decoder = MultiplexMaskDecoder(TINY_MULTIPLEX).eval()
    seed_module(decoder, prefix=metadata["prefix"])
    apply_weight_overrides({metadata["prefix"]: decoder}, metadata["weight_override"])
    with torch.no_grad():
        out = decoder(tensors["in.image"], tensors["in.image_pe"], (tensors["in.feat_s0"], tensors["in.feat_s1"]),
                      tensors["in.slot_embed"])
    torch.testing.assert_close(out.masks, tensors["out.masks"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.ious, tensors["out.iou_pred"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.object_score_logits, tensors["out.object_score_logits"], atol=1e-5, rtol=0)
    # the pointer is made from these (release: every multimask token, no single-mask one)
    torch.testing.assert_close(out.tokens, tensors["out.sam_tokens_out"], atol=1e-5, rtol=0)
    # slots differ by well over the tolerance, so the match pins the per-slot token handling
    assert (out.masks[:, 0] - out.masks[:, 1]).abs().max() > 10 * 1e-4
    assert (out.ious[:, 0] - out.ious[:, 1]).abs().max() > 10 * 1e-5
