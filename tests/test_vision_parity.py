"""Parity of the vision backbone (ViT trunk + dual FPN neck) with the official SAM 3 code.

Fixture: tests/fixtures/modules/vision.safetensors, made by tools/parity/make_vision_fixture.py.
Stored maps keep their leading channels only (see the fixture's ``crops`` metadata).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3.config import SAM3, TINY, VisionConfig
from opensam3.model.vision import DualFPNNeck, VisionTransformer, window_partition, window_unpartition
from opensam3.seeded import seed_module

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "modules" / "vision.safetensors"
PREFIX = "backbone.vision_backbone."
TOLERANCE = 1e-4

TINY_DUAL = dataclasses.replace(TINY.vision, tracker_neck=True)


def make_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """The fixture's input rule (see make_vision_fixture.py)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, size, size), generator=generator).clamp_(-1.0, 1.0)


@pytest.fixture(scope="module")
def fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def main_run(fixture):
    tensors, meta = fixture
    case = json.loads(meta["main"])
    images = make_images(case["batch"], case["image_size"], case["seed"])
    torch.testing.assert_close(images[:, :, :2], tensors["input.images_rows01"], rtol=0, atol=0)
    neck = DualFPNNeck(TINY_DUAL).eval()
    seed_module(neck, prefix=PREFIX)
    with torch.no_grad():
        trunk = neck.trunk(images)
        features = neck(images)
    return trunk, features, case


def max_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return (ours.float() - reference.float()).abs().max().item()


def test_trunk_output(fixture, main_run):
    tensors, meta = fixture
    trunk, _, case = main_run
    assert list(trunk.shape) == case["full_shapes"]["trunk"]
    channels = json.loads(meta["crops"])["trunk_channels"]
    assert max_error(trunk[:, :channels], tensors["out.trunk"]) <= TOLERANCE


def test_pyramids(fixture, main_run):
    tensors, meta = fixture
    _, features, case = main_run
    crops = json.loads(meta["crops"])
    assert features.tracker is not None and features.tracker_pos is not None
    assert len(features.detector) == len(features.tracker) == 4
    step = crops["pos_channel_step"]
    for i, channels in enumerate(crops["level_channels"]):
        assert list(features.detector[i].shape) == case["full_shapes"]["levels"][i]
        assert list(features.tracker[i].shape) == case["full_shapes"]["levels"][i]
        assert max_error(features.detector[i][:, :channels], tensors[f"out.detector.{i}"]) <= TOLERANCE, i
        assert max_error(features.tracker[i][:, :channels], tensors[f"out.tracker.{i}"]) <= TOLERANCE, i
        for pos in (features.detector_pos[i], features.tracker_pos[i]):
            assert pos.shape == features.detector[i].shape and pos.dtype == features.detector[i].dtype
            for item in range(pos.shape[0]):
                assert max_error(pos[item, ::step], tensors[f"out.pos.{i}"]) <= TOLERANCE, i


def test_padded_windows_and_tiled_pos_embed(fixture):
    """22x22 grid: windows padded to 24x24, global RoPE scaled by 8/22, pos embed tiled 3x."""
    tensors, meta = fixture
    case = json.loads(meta["edge"])
    cfg = dataclasses.replace(TINY.vision, image_size=case["image_size"])
    images = make_images(case["batch"], case["image_size"], case["seed"])
    torch.testing.assert_close(images[:, :, :2], tensors["input.edge_images_rows01"], rtol=0, atol=0)
    trunk = VisionTransformer(cfg).eval()
    expected_keys = json.loads(meta["edge_trunk_state_dict_shapes"])
    assert {k: list(v.shape) for k, v in trunk.state_dict().items()} == expected_keys
    seed_module(trunk, prefix=PREFIX + "trunk.")
    with torch.no_grad():
        out = trunk(images)
    assert out.shape == (1, cfg.embed_dim, 22, 22)
    reference = tensors["out.edge_trunk"]
    assert max_error(out[:, : reference.shape[1]], reference) <= TOLERANCE


def test_state_dict_matches_official_tiny(fixture):
    _, meta = fixture
    expected = json.loads(meta["neck_state_dict_shapes"])
    neck = DualFPNNeck(TINY_DUAL)
    ours = {k: list(v.shape) for k, v in neck.state_dict().items()}
    assert ours == expected
    assert not any("freqs_cis" in k for k in ours)


def test_state_dict_matches_full_checkpoint():
    manifest = json.loads((FIXTURES / "sam3_checkpoint_manifest.json").read_text())
    prefix = "detector.backbone.vision_backbone."
    expected = {
        k[len(prefix):]: v["shape"]
        for k, v in manifest.items()
        if k.startswith(prefix) and not k.endswith("freqs_cis")
    }
    with torch.device("meta"):
        neck = DualFPNNeck(SAM3.vision)
    ours = {k: list(v.shape) for k, v in neck.state_dict().items()}
    assert ours == expected


def test_no_tracker_neck_when_disabled():
    neck = DualFPNNeck(TINY.vision)
    assert TINY.vision.tracker_neck is False
    assert not any(k.startswith("sam2_convs.") for k in neck.state_dict())
    with torch.no_grad():
        features = neck(torch.zeros(1, 3, 336, 336))
    assert features.tracker is None and features.tracker_pos is None
    assert [tuple(t.shape[-2:]) for t in features.detector] == [(96, 96), (48, 48), (24, 24), (12, 12)]


def test_window_partition_roundtrip_with_padding():
    x = torch.randn(2, 11, 13, 5)
    windows, padded = window_partition(x, 4)
    assert padded == (12, 16) and windows.shape == (2 * 3 * 4, 16, 5)
    torch.testing.assert_close(window_unpartition(windows, 4, padded, (11, 13)), x, rtol=0, atol=0)


def test_rope_tables_cached_and_bf16_forward():
    cfg = VisionConfig(image_size=112, embed_dim=64, depth=2, num_heads=2, window_size=4,
                       global_blocks=(1,), pretrain_image_size=56, tracker_neck=False)
    neck = DualFPNNeck(cfg).eval()
    seed_module(neck, prefix=PREFIX)
    images = make_images(1, 112, 0)
    with torch.no_grad():
        reference = neck(images).detector
        first = neck.trunk.rope.table(8, 8, neck.trunk.global_rope_scale, images.device)
        assert neck.trunk.rope.table(8, 8, neck.trunk.global_rope_scale, images.device) is first
        neck_bf16 = neck.to(torch.bfloat16)
        low = neck_bf16(images.to(torch.bfloat16)).detector
    for a, b in zip(low, reference):
        assert a.dtype == torch.bfloat16
        assert (a.float() - b).abs().max().item() <= 0.1 * b.abs().max().item()


def test_position_encodings_are_shared_per_dtype():
    """A bf16 neck hands every image the same cached bf16 grid (not a new cast per image), equal
    to the float32 grid rounded once."""
    cfg = VisionConfig(image_size=112, embed_dim=64, depth=2, num_heads=2, window_size=4,
                       global_blocks=(1,), pretrain_image_size=56, tracker_neck=False)
    neck = DualFPNNeck(cfg).eval()
    seed_module(neck, prefix=PREFIX)
    with torch.no_grad():
        fp32 = neck(make_images(1, 112, 0)).detector_pos
        neck = neck.to(torch.bfloat16)
        first = neck(make_images(1, 112, 0).bfloat16()).detector_pos
        second = neck(make_images(1, 112, 1).bfloat16()).detector_pos
    for a, b, reference in zip(first, second, fp32):
        assert a.dtype == torch.bfloat16 and a.data_ptr() == b.data_ptr()
        assert torch.equal(a, reference.bfloat16())
