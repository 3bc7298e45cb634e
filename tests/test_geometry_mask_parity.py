"""Parity of GeometryEncoder and SegmentationHead with the official modules (seeded weights).

Fixture: tests/fixtures/modules/geometry_mask.safetensors, made by
tools/parity/make_geometry_mask_fixture.py with the official sam3 code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3.config import SAM3, TINY
from opensam3.model.detector.geometry import GeometryEncoder
from opensam3.model.detector.mask_head import SegmentationHead
from opensam3.seeded import seed_module, seeded_value

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "geometry_mask.safetensors"
MANIFEST = Path(__file__).parent / "fixtures" / "sam3_checkpoint_manifest.json"
TOL = 1e-4
GRID = 24
CASES = ["text_only", "one_box", "pos_neg_padded", "outside_tiny", "points_boxes", "points_only"]


@pytest.fixture(scope="module")
def fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def inputs(fixture) -> dict[str, torch.Tensor]:
    tensors, meta = fixture
    rebuilt = {}
    for key, shape in json.loads(meta["rebuilt_inputs"]).items():
        value = seeded_value(key, shape) * 20.0
        flat = value.reshape(-1)
        probe = torch.cat((flat[:16], flat[-16:], flat.sum()[None]))
        assert torch.allclose(probe, tensors[f"probe.{key}"], rtol=1e-5, atol=1e-3), f"input {key} not rebuilt"
        rebuilt[key] = value
    return rebuilt


@pytest.fixture(scope="module")
def geometry() -> GeometryEncoder:
    module = GeometryEncoder(TINY.detector).eval()
    seed_module(module, prefix="geometry_encoder.")
    return module


@pytest.fixture(scope="module")
def head() -> SegmentationHead:
    module = SegmentationHead(TINY.detector).eval()
    seed_module(module, prefix="segmentation_head.")
    return module


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_tiny_keys_match_official(fixture, geometry, head):
    _, meta = fixture
    assert int(meta["geometry_layers"]) == TINY.detector.geometry_layers
    assert _shapes(geometry) == json.loads(meta["geometry_state_dict_shapes"])
    assert _shapes(head) == json.loads(meta["segmentation_state_dict_shapes"])


def test_full_size_keys_match_checkpoint():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        modules = {"geometry_encoder": GeometryEncoder(SAM3.detector), "segmentation_head": SegmentationHead(SAM3.detector)}
    for name, module in modules.items():
        prefix = f"detector.{name}."
        expected = {k[len(prefix):]: v["shape"] for k, v in manifest.items() if k.startswith(prefix)}
        assert _shapes(module) == expected, name


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_geometry_encoder_parity(fixture, inputs, geometry, case):
    tensors, _ = fixture
    p = f"geo.{case}.in."
    tokens, pad = geometry(
        tensors.get(p + "boxes"),
        tensors.get(p + "box_labels"),
        tensors.get(p + "box_pad"),
        inputs["input.geo.image_tokens"],
        inputs["input.geo.image_pos"],
        (GRID, GRID),
        points=tensors.get(p + "points"),
        point_labels=tensors.get(p + "point_labels"),
        point_padding_mask=tensors.get(p + "point_pad"),
    )
    ref_tokens, ref_pad = tensors[f"geo.{case}.out.tokens"], tensors[f"geo.{case}.out.pad"]
    assert tokens.shape == ref_tokens.shape
    assert torch.equal(pad, ref_pad)
    valid_err = (tokens - ref_tokens)[~pad].abs().max().item()
    assert valid_err <= TOL, f"{case}: valid tokens differ by {valid_err}"
    # the official packing rule is reproduced, so padded slots agree as well
    assert (tokens - ref_tokens).abs().max().item() <= TOL


@torch.no_grad()
def test_segmentation_head_parity(fixture, inputs, head):
    tensors, _ = fixture
    fpn = [inputs[f"input.seg.fpn{i}"] for i in range(3)]
    queries = inputs["input.seg.hs"][-1]  # the official head reads the last decoder layer
    masks, semantic = head(fpn, queries, inputs["input.seg.encoded_image"], inputs["input.seg.prompt"],
                           tensors["seg.in.prompt_pad"])
    assert masks.shape == tensors["seg.out.masks"].shape
    assert semantic.shape == tensors["seg.out.semantic"].shape
    assert (masks - tensors["seg.out.masks"]).abs().max().item() <= TOL
    assert (semantic - tensors["seg.out.semantic"]).abs().max().item() <= TOL


@torch.no_grad()
def test_segmentation_head_shares_batch_one_levels(inputs, head):
    """FPN levels of one image broadcast over several prompts without copies."""
    fpn = [inputs[f"input.seg.fpn{i}"][:1] for i in range(3)]
    queries = inputs["input.seg.hs"][-1]
    encoded, prompt = inputs["input.seg.encoded_image"], inputs["input.seg.prompt"]
    shared_masks, shared_semantic = head(fpn, queries, encoded, prompt, None)
    expanded = [level.expand(2, -1, -1, -1) for level in fpn]
    masks, semantic = head(expanded, queries, encoded, prompt, None)
    assert torch.allclose(shared_masks, masks, atol=1e-5)
    assert torch.allclose(shared_semantic, semantic, atol=1e-5)


@torch.no_grad()
def test_geometry_encoder_accepts_missing_prompts(inputs, geometry):
    """None boxes/points is the text-only case: one valid cls token per batch element."""
    image, pos = inputs["input.geo.image_tokens"], inputs["input.geo.image_pos"]
    tokens, pad = geometry(None, None, None, image, pos, (GRID, GRID))
    empty = torch.zeros(2, 0, 4)
    ref, ref_pad = geometry(empty, torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), image, pos, (GRID, GRID))
    assert tokens.shape == (2, 1, TINY.detector.d_model) and not pad.any()
    assert torch.equal(tokens, ref) and torch.equal(pad, ref_pad)
