"""The SAM 3.1 multiplex video tracker (opensam3/predictor/video_multiplex31.py) on a tiny seeded
model: prompts, forward/backward propagation, bucket independence (the multiplexed pass equals
separate passes for objects in different buckets), and clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from opensam3.config import TINY
from opensam3.errors import InvalidInputError
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker.multiplex31 import InteractiveHead, MultiplexTracker, MultiplexTrackerConfig
from opensam3.predictor.video_multiplex31 import Multiplex31VideoTracker
from opensam3.seeded import seed_module

CONFIG = MultiplexTrackerConfig(image_size=336, dim=256, multiplex_count=4, decoder_mlp_dim=256,
                                attention_layers=1, attention_ffn=256, mask_first_channels=1)
H, W = 96, 128


def seeded_heads(config: MultiplexTrackerConfig = CONFIG) -> tuple[InteractiveHead, MultiplexTracker]:
    """Both SAM 3.1 heads with seeded weights (official ``tracker.model.*`` names)."""
    interactive, tracker = InteractiveHead(config).eval(), MultiplexTracker(config).eval()
    seed_module(tracker, prefix="tracker.model.")
    seed_module(interactive, prefix="tracker.model.")
    with torch.no_grad():  # seeded scores sit near 0: make objects present so masks are real
        tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 10
        interactive.interactive_sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 10
    return interactive, tracker


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    config = TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))
    model = Sam3ImageModel(config).eval()
    seed_module(model.backbone.vision_backbone, prefix="backbone.vision_backbone.")
    return (model, *seeded_heads())


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (5, 6, 8, 3)).astype(np.uint8)
    clip = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    for t in range(5):
        clip[t, 20:50, 10 + 4 * t:40 + 4 * t] = (250, 240, 30)
    return clip


def square_mask(y0, x0, side=24):
    mask = np.zeros((H, W), bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    return mask


def prompt_objects(tracker, state, objects=range(4), frame=1):
    for i in objects:
        if i % 2:
            tracker.add_new_mask(state, frame, 10 + i, square_mask(10 + 12 * i, 8 + 20 * i))
        else:
            tracker.add_new_points_or_box(state, frame, 10 + i, box=[8 + 20 * i, 10 + 12 * i, 40 + 20 * i, 40 + 12 * i])


def run_both_ways(tracker, state):
    return list(tracker.propagate_in_video(state)) + list(tracker.propagate_in_video(state, reverse=True))


@torch.inference_mode()
def test_prompts_then_propagation_forward_and_backward(parts, frames):
    tracker = Multiplex31VideoTracker(*parts)
    state = tracker.init_state(frames)
    result = tracker.add_new_mask(state, 1, 7, square_mask(30, 40))
    assert result.frame_idx == 1 and result.obj_ids == [7] and result.masks.shape == (1, H, W)
    iou = (result.masks[0] & torch.from_numpy(square_mask(30, 40))).sum() / (result.masks[0] | torch.from_numpy(square_mask(30, 40))).sum()
    assert float(iou) > 0.9  # a mask prompt is its own output
    result = tracker.add_new_points_or_box(state, 1, 3, points=[[20, 30], [60, 70]], labels=[1, 0])
    assert result.obj_ids == [7, 3] and result.masks.shape == (2, H, W)

    outputs = run_both_ways(tracker, state)
    assert [o.frame_idx for o in outputs] == [1, 2, 3, 4, 1, 0]
    for out in outputs:
        assert out.obj_ids == [7, 3] and out.masks.shape == (2, H, W) and out.masks.dtype == torch.bool
        assert out.object_score_logits.shape == (2,) and out.low_res_logits.shape == (2, 96, 96)
    assert torch.equal(outputs[0].masks, outputs[4].masks)  # the prompted frame keeps its output
    assert sorted(state.frames) == [0, 1, 2, 3, 4]
    # one bucket of 4 slots, 2 of them used; its memory and pointers are stored per frame
    assert state.slots.buckets == [[0, 1, -1, -1]]
    assert state.frames[3].memory.shape == (1, 256, 24, 24) and state.frames[3].pointers.shape == (1, 4, 256)
    assert state.frames[3].memory.dtype == torch.bfloat16

    # deterministic, and frames already tracked are not tracked again
    again = tracker.init_state(frames)
    tracker.add_new_mask(again, 1, 7, square_mask(30, 40))
    tracker.add_new_points_or_box(again, 1, 3, points=[[20, 30], [60, 70]], labels=[1, 0])
    for a, b in zip(outputs, run_both_ways(tracker, again)):
        assert torch.equal(a.low_res_logits, b.low_res_logits)
    first = state.frames[2]
    list(tracker.propagate_in_video(state, start_frame_idx=2, max_frame_num_to_track=1))
    assert state.frames[2] is first


@torch.inference_mode()
def test_buckets_are_independent_so_one_per_bucket_equals_tracking_alone(parts, frames):
    """With one object per bucket the batched pass gives exactly what tracking each object
    alone gives; objects sharing a bucket see each other (the learned multiplex)."""
    alone_tracker = Multiplex31VideoTracker(*parts, objects_per_bucket=1)
    state = alone_tracker.init_state(frames)
    prompt_objects(alone_tracker, state)
    together = list(alone_tracker.propagate_in_video(state))
    assert state.slots.buckets == [[i, -1, -1, -1] for i in range(4)]
    for i in (0, 3):
        single = alone_tracker.init_state(frames)
        prompt_objects(alone_tracker, single, objects=[i])
        for batched, own in zip(together, alone_tracker.propagate_in_video(single)):
            torch.testing.assert_close(batched.low_res_logits[i], own.low_res_logits[0], atol=1e-4, rtol=0)

    packed_tracker = Multiplex31VideoTracker(*parts)
    packed = packed_tracker.init_state(frames)
    prompt_objects(packed_tracker, packed)
    shared = list(packed_tracker.propagate_in_video(packed))
    assert packed.slots.buckets == [[0, 1, 2, 3]]
    assert (shared[-1].low_res_logits - together[-1].low_res_logits).abs().max() > 1e-3


@torch.inference_mode()
def test_memory_rows_and_pointers_follow_the_propagation_direction(parts, frames):
    tracker = Multiplex31VideoTracker(*parts)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=[0], frame=2)
    tracker._preflight(state)
    last = CONFIG.num_maskmem - 1
    spatial, pointers = tracker._memories(state, 4, reverse=False)  # prompt 2 frames back
    assert [m.tpos_row for m in spatial] == [last - 2] and [p.distance for p in pointers] == [2]
    spatial, pointers = tracker._memories(state, 0, reverse=True)   # backward: also 2 frames back
    assert [m.tpos_row for m in spatial] == [last - 2] and [p.distance for p in pointers] == [2]
    # tracking forward from before the prompted frame: its memory is read, its pointers are not
    spatial, pointers = tracker._memories(state, 0, reverse=False)
    assert [m.tpos_row for m in spatial] == [last] and pointers == []
    outputs = list(tracker.propagate_in_video(state, start_frame_idx=0))
    assert [o.frame_idx for o in outputs] == [0, 1, 2, 3, 4]
    # the prompted frame, then tracked frames 0, 1 and 3 (4, 3 and 1 back; frame 2 is the prompt), oldest first
    spatial, pointers = tracker._memories(state, 4, reverse=False)
    assert [m.tpos_row for m in spatial] == [last - 2, 3, 2, 0]
    assert [p.distance for p in pointers] == [2, 1, 3, 4]


@torch.inference_mode()
def test_objects_fill_buckets_in_order(parts, frames):
    tracker = Multiplex31VideoTracker(*parts, objects_per_bucket=3)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=range(5))
    out = list(tracker.propagate_in_video(state, max_frame_num_to_track=1))
    assert state.slots.buckets == [[0, 1, 2, -1], [3, 4, -1, -1]]
    assert out[-1].masks.shape == (5, H, W) and state.frames[2].memory.shape[0] == 2
    tracker.reset_state(state)
    assert not state.frames and not state.obj_ids and not state.started


@torch.inference_mode()
def test_bad_input_is_a_clear_error(parts, frames):
    model, interactive, tracker_modules = parts
    tracker = Multiplex31VideoTracker(*parts)
    state = tracker.init_state(frames)
    with pytest.raises(InvalidInputError, match="no objects to track"):
        next(tracker.propagate_in_video(state))
    with pytest.raises(InvalidInputError, match="frame"):
        tracker.add_new_points_or_box(state, 9, 1, box=[1, 1, 20, 20])
    tracker.add_new_points_or_box(state, 1, 1, box=[1, 1, 20, 20])
    with pytest.raises(InvalidInputError, match="prompted on frame 1"):
        tracker.add_new_points_or_box(state, 2, 2, box=[1, 1, 20, 20])
    with pytest.raises(InvalidInputError, match="outside"):
        tracker.add_new_points_or_box(state, 1, 2, points=[[500, 5]], labels=[1])
    with pytest.raises(InvalidInputError, match="integers"):
        tracker.add_new_points_or_box(state, 1, "a", box=[1, 1, 20, 20])
    assert state.obj_ids == [1]  # failed prompts leave the state as it was
    next(tracker.propagate_in_video(state))
    with pytest.raises(InvalidInputError, match="reset_state"):
        tracker.add_new_mask(state, 1, 2, square_mask(0, 0))
    with pytest.raises(InvalidInputError, match="objects_per_bucket"):
        Multiplex31VideoTracker(*parts, objects_per_bucket=5)
    wrong = MultiplexTracker(dataclasses.replace(CONFIG, image_size=112))
    with pytest.raises(InvalidInputError, match="sized for 112 px"):
        Multiplex31VideoTracker(model, interactive, wrong)
