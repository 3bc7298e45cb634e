"""Interactive predictor: input checking, connected components / hole filling, weight loading."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from opensam3.api import build_model
from opensam3.config import EMBEDDED, TINY, architecture_differences
from opensam3.errors import CheckpointError, InvalidInputError
from opensam3.model.sam3 import ImageFeatures
from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig, load_tracker_heads
from opensam3.ops.components import connected_components, fill_small_holes
from opensam3.predictor.image import ImageState
from opensam3.predictor.interactive import InteractivePredictor
from opensam3.seeded import seed_module

CONFIG = TrackerHeadsConfig.from_model_config(TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True)))
H, W = 60, 80


@pytest.fixture(scope="module")
def predictor():
    heads = TrackerHeads(CONFIG)
    seed_module(heads, prefix="tracker.")
    return InteractivePredictor(heads)


@pytest.fixture(scope="module")
def state():
    g = torch.Generator().manual_seed(0)
    e = CONFIG.embedding_size
    levels = [torch.randn(1, 256, 4 * e, 4 * e, generator=g), torch.randn(1, 256, 2 * e, 2 * e, generator=g),
              torch.randn(1, 256, e, e, generator=g)]
    features = ImageFeatures(fpn=levels, fpn_pos=levels, tracker_fpn=levels, tracker_pos=levels)
    return ImageState(features, np.zeros((H, W, 3), np.uint8))


def test_outputs_shapes(predictor, state):
    low = CONFIG.low_res_size
    out = predictor.predict(state, points=[[10, 20], [70, 50]], point_labels=[1, 0])
    assert out.masks.shape == (3, H, W) and out.masks.dtype == torch.bool
    assert out.iou_scores.shape == (3,) and out.low_res_logits.shape == (3, low, low)
    assert out.low_res_logits.abs().max() <= 32
    single = predictor.predict(state, box=[5, 5, 60, 50], multimask_output=False)
    assert single.masks.shape == (1, H, W) and single.iou_scores.shape == (1,)
    refined = predictor.predict(state, points=[[30, 30]], point_labels=[1], mask_input=out.low_res_logits[:1],
                                multimask_output=False)
    assert refined.masks.shape == (1, H, W)
    only_mask = predictor.predict(state, mask_input=out.low_res_logits[0].numpy())
    assert only_mask.masks.shape == (3, H, W)
    logits = predictor.predict(state, points=[[10, 20]], point_labels=[1], return_logits=True)
    assert logits.masks.dtype == torch.float32


def test_image_embedding_reused(predictor, state):
    assert predictor.embed(state) is predictor.embed(state)


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=[[W + 1, 10]], point_labels=[1]), "outside"),
    (dict(points=[[-1, 10]], point_labels=[1]), "outside"),
    (dict(points=[[10, H + 0.5]], point_labels=[1]), "outside"),
    (dict(points=[[10, 10]], point_labels=[2]), "labels"),
    (dict(points=[[10, 10]], point_labels=[0.5]), "labels"),
    (dict(points=[[10, 10], [20, 20]], point_labels=[1]), "2 points but 1"),
    (dict(points=[[10, 10]]), "point_labels"),
    (dict(point_labels=[1]), "point_labels"),
    (dict(points=[10, 10, 3], point_labels=[1]), "(N, 2)"),
    (dict(points=[[np.nan, 10]], point_labels=[1]), "NaN"),
    (dict(), "nothing to segment"),
    (dict(points=np.zeros((0, 2)), point_labels=[]), "nothing to segment"),
    (dict(box=[10, 10, 5, 20]), "x1 > x0"),
    (dict(box=[10, 10, 20]), "4 numbers"),
    (dict(box=[10, 10, W + 5, 20]), "outside"),
    (dict(mask_input=np.zeros((1, 256, 256))), "mask_input"),
])
def test_invalid_inputs(predictor, state, kwargs, message):
    with pytest.raises(InvalidInputError, match=None) as info:
        predictor.predict(state, **kwargs)
    assert message in str(info.value)


def test_needs_tracker_features(predictor, state):
    features = ImageFeatures(state.features.fpn, state.features.fpn_pos)
    with pytest.raises(InvalidInputError, match="tracker"):
        predictor.predict(ImageState(features, state.image), points=[[1, 1]], point_labels=[1])


def test_hole_filling_keeps_the_official_share_of_the_mask():
    # official: holes up to 256 pixels of the 288 x 288 low-res mask are filled; a smaller model
    # fills the same share of its own mask (a ring's hole would otherwise vanish at 64 x 64)
    full = TrackerHeadsConfig()
    assert full.low_res_size == 288
    assert InteractivePredictor(TrackerHeads(full).to("meta")).max_hole_area == 256.0
    embedded = TrackerHeadsConfig.from_model_config(EMBEDDED)
    assert embedded.low_res_size == 64
    assert InteractivePredictor(TrackerHeads(embedded)).max_hole_area == pytest.approx(256 * (64 / 288) ** 2)
    assert InteractivePredictor(TrackerHeads(embedded), max_hole_area=0.0).max_hole_area == 0.0


def test_the_model_config_sets_the_hole_filling_of_a_loaded_model():
    from opensam3.api import Sam3

    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(TINY))
    official = Sam3(build_model(TINY), tracker=heads)
    assert official.interactive.max_hole_area == pytest.approx(256 * (heads.config.low_res_size / 288) ** 2)
    ringed = Sam3(build_model(TINY.replace(interactive_hole_area=0.0)), tracker=heads)
    assert ringed.interactive.max_hole_area == 0.0
    # an inference setting: checkpoints of either config fit the other
    assert architecture_differences(TINY, TINY.replace(interactive_hole_area=0.0)) == []


def _reference_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain flood fill with 8-connectivity: (component id or 0, component area or 0)."""
    h, w = mask.shape
    ids = np.zeros((h, w), np.int64)
    areas = np.zeros((h, w), np.int64)
    next_id = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not ids[y, x]:
                next_id += 1
                stack, members = [(y, x)], []
                ids[y, x] = next_id
                while stack:
                    cy, cx = stack.pop()
                    members.append((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not ids[ny, nx]:
                                ids[ny, nx] = next_id
                                stack.append((ny, nx))
                for cy, cx in members:
                    areas[cy, cx] = len(members)
    return ids, areas


@pytest.mark.parametrize("seed", range(6))
def test_connected_components_match_flood_fill(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, size=2)
    masks = rng.random((2, h, w)) < rng.uniform(0.2, 0.8)
    ids, areas = connected_components(torch.from_numpy(masks))
    for b in range(2):
        ref_ids, ref_areas = _reference_components(masks[b])
        ours = ids[b].numpy()
        assert ((ours > 0) == (ref_ids > 0)).all()
        pairs = set(zip(ref_ids[ref_ids > 0].tolist(), ours[ours > 0].tolist()))
        assert len(pairs) == ref_ids.max() == len({p[1] for p in pairs})
        assert (areas[b].numpy() == ref_areas).all()


def test_diagonal_pixels_connect():
    mask = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=torch.bool)
    ids, areas = connected_components(mask)
    assert len(set(ids[mask].tolist())) == 1 and areas[mask].eq(3).all()


def test_long_snake_component():
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, ::2] = True
    for row in range(1, 64, 2):
        mask[0, row, 63 if row % 4 == 1 else 0] = True
    _, areas = connected_components(mask)
    assert areas.max().item() == mask.sum().item()


def test_fill_small_holes():
    logits = torch.ones(1, 1, 40, 40)
    logits[0, 0, 5:8, 5:8] = -1.0  # 9-pixel hole
    logits[0, 0, 20:, :] = -2.0  # 800-pixel background
    filled = fill_small_holes(logits, max_area=256)
    assert (filled[0, 0, 5:8, 5:8] == 10.0).all()
    assert (filled[0, 0, 20:] == -2.0).all()
    assert torch.equal(fill_small_holes(logits, max_area=0), logits)


def test_loader_ignores_video_keys_and_checks_shapes():
    heads = TrackerHeads(CONFIG)
    state = dict(heads.state_dict())
    state["maskmem_backbone.out_proj.weight"] = torch.zeros(64, 256, 1, 1)
    state["transformer.encoder.layers.0.linear1.weight"] = torch.zeros(2048, 256)
    loaded = load_tracker_heads(state, CONFIG)
    assert set(loaded.state_dict()) == set(heads.state_dict())
    del state["no_mem_embed"]
    with pytest.raises(CheckpointError, match="no_mem_embed"):
        load_tracker_heads(state, CONFIG)
