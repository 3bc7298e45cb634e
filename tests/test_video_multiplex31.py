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


def moving_square_clip(num_frames: int, seed: int) -> np.ndarray:
    """(T, H, W, 3) blocky noise with a yellow square moving right 4 pixels a frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (num_frames, 6, 8, 3)).astype(np.uint8)
    clip = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    for t in range(num_frames):
        clip[t, 20:50, 10 + 4 * t:40 + 4 * t] = (250, 240, 30)
    return clip


@pytest.fixture(scope="module")
def frames():
    return moving_square_clip(5, seed=0)


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
    (group,) = state.groups
    assert sorted(group.frames) == [0, 1, 2, 3, 4] and group.cond == {1}
    # one bucket of 4 slots, 2 of them used; its memory and pointers are stored per frame
    assert group.slots.buckets == [[0, 1, -1, -1]]
    assert group.frames[3].memory.shape == (1, 256, 24, 24) and group.frames[3].pointers.shape == (1, 4, 256)
    assert group.frames[3].memory.dtype == torch.bfloat16

    # deterministic, and frames already tracked are not tracked again
    again = tracker.init_state(frames)
    tracker.add_new_mask(again, 1, 7, square_mask(30, 40))
    tracker.add_new_points_or_box(again, 1, 3, points=[[20, 30], [60, 70]], labels=[1, 0])
    for a, b in zip(outputs, run_both_ways(tracker, again)):
        assert torch.equal(a.low_res_logits, b.low_res_logits)
    first = group.frames[2]
    list(tracker.propagate_in_video(state, start_frame_idx=2, max_frame_num_to_track=1))
    assert group.frames[2] is first


@torch.inference_mode()
def test_buckets_are_independent_so_one_per_bucket_equals_tracking_alone(parts, frames):
    """With one object per bucket the batched pass gives exactly what tracking each object
    alone gives; objects sharing a bucket see each other (the learned multiplex)."""
    alone_tracker = Multiplex31VideoTracker(*parts, objects_per_bucket=1)
    state = alone_tracker.init_state(frames)
    prompt_objects(alone_tracker, state)
    together = list(alone_tracker.propagate_in_video(state))
    assert state.groups[0].slots.buckets == [[i, -1, -1, -1] for i in range(4)]
    for i in (0, 3):
        single = alone_tracker.init_state(frames)
        prompt_objects(alone_tracker, single, objects=[i])
        for batched, own in zip(together, alone_tracker.propagate_in_video(single)):
            torch.testing.assert_close(batched.low_res_logits[i], own.low_res_logits[0], atol=1e-4, rtol=0)

    packed_tracker = Multiplex31VideoTracker(*parts)
    packed = packed_tracker.init_state(frames)
    prompt_objects(packed_tracker, packed)
    shared = list(packed_tracker.propagate_in_video(packed))
    assert packed.groups[0].slots.buckets == [[0, 1, 2, 3]]
    assert (shared[-1].low_res_logits - together[-1].low_res_logits).abs().max() > 1e-3


@torch.inference_mode()
def test_memory_rows_and_pointers_follow_the_propagation_direction(parts, frames):
    tracker = Multiplex31VideoTracker(*parts)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=[0], frame=2)
    tracker._preflight(state)
    (group,) = state.groups
    last = CONFIG.num_maskmem - 1
    spatial, pointers = tracker._memories(state, group, 4, reverse=False)  # prompt 2 frames back
    assert [m.tpos_row for m in spatial] == [last - 2] and [p.distance for p in pointers] == [2]
    spatial, pointers = tracker._memories(state, group, 0, reverse=True)   # backward: also 2 frames back
    assert [m.tpos_row for m in spatial] == [last - 2] and [p.distance for p in pointers] == [2]
    # tracking forward from before the prompted frame: its memory is read, its pointers are not
    spatial, pointers = tracker._memories(state, group, 0, reverse=False)
    assert [m.tpos_row for m in spatial] == [last] and pointers == []
    outputs = list(tracker.propagate_in_video(state, start_frame_idx=0))
    assert [o.frame_idx for o in outputs] == [0, 1, 2, 3, 4]
    # the prompted frame, then tracked frames 0, 1 and 3 (4, 3 and 1 back; frame 2 is the prompt), oldest first
    spatial, pointers = tracker._memories(state, group, 4, reverse=False)
    assert [m.tpos_row for m in spatial] == [last - 2, 3, 2, 0]
    assert [p.distance for p in pointers] == [2, 1, 3, 4]


@torch.inference_mode()
def test_objects_fill_buckets_in_order(parts, frames):
    tracker = Multiplex31VideoTracker(*parts, objects_per_bucket=3)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=range(5))
    out = list(tracker.propagate_in_video(state, max_frame_num_to_track=1))
    (group,) = state.groups
    assert group.slots.buckets == [[0, 1, 2, -1], [3, 4, -1, -1]]
    assert out[-1].masks.shape == (5, H, W) and group.frames[2].memory.shape[0] == 2
    tracker.reset_state(state)
    assert not state.groups and not state.obj_ids and not state.started


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
    with pytest.raises(InvalidInputError, match="outside"):
        tracker.add_new_points_or_box(state, 1, 2, points=[[500, 5]], labels=[1])
    with pytest.raises(InvalidInputError, match="integers"):
        tracker.add_new_points_or_box(state, 1, "a", box=[1, 1, 20, 20])
    with pytest.raises(InvalidInputError, match="before any clicks"):
        tracker.add_new_points_or_box(state, 1, 1, box=[1, 1, 20, 20], clear_old_points=False)
    assert state.obj_ids == [1] and len(state.groups) == 1  # failed prompts leave the state as it was
    next(tracker.propagate_in_video(state))
    with pytest.raises(InvalidInputError, match=r"unknown object id 5; this session tracks \[1\]"):
        tracker.remove_object(state, 5)
    with pytest.raises(InvalidInputError, match="objects_per_bucket"):
        Multiplex31VideoTracker(*parts, objects_per_bucket=5)
    wrong = MultiplexTracker(dataclasses.replace(CONFIG, image_size=112))
    with pytest.raises(InvalidInputError, match="sized for 112 px"):
        Multiplex31VideoTracker(model, interactive, wrong)


def low_res_of(result, obj_id):
    return result.low_res_logits[result.obj_ids.index(obj_id)]


@torch.inference_mode()
def test_an_object_added_later_is_tracked_as_if_prompted_alone(parts, frames):
    """A new object prompted after propagation starts a group of its own on its frame: the
    objects already tracked keep their outputs, and it tracks as it would alone."""
    tracker = Multiplex31VideoTracker(*parts)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=[0, 1])
    before = list(tracker.propagate_in_video(state))
    added = tracker.add_new_mask(state, 2, 50, square_mask(50, 70))
    assert added.obj_ids == [10, 11, 50]  # every object with an output on frame 2
    after = list(tracker.propagate_in_video(state, start_frame_idx=2))
    assert len(state.groups) == 2 and state.groups[1].obj_ids == [50] and state.groups[1].cond == {2}
    for old, new in zip(before[1:], after):
        assert new.obj_ids == [10, 11, 50]
        assert torch.equal(old.low_res_logits, new.low_res_logits[:2])

    alone = tracker.init_state(frames)
    tracker.add_new_mask(alone, 2, 50, square_mask(50, 70))
    for own, joined in zip(tracker.propagate_in_video(alone), after):
        assert torch.equal(own.low_res_logits[0], low_res_of(joined, 50))
    # the new object had no output before frame 2; a backward pass tracks it there too
    assert [o.obj_ids for o in tracker.propagate_in_video(state, start_frame_idx=1, reverse=True)] == [[10, 11, 50]] * 2


@torch.inference_mode()
def test_a_correction_moves_the_object_out_of_its_bucket(parts, frames):
    tracker = Multiplex31VideoTracker(*parts)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=[0, 1, 2])
    before = list(tracker.propagate_in_video(state))  # frames 1..4
    shared = state.groups[0]
    old_pointer = shared.slots.demux(shared.frames[2].pointers)[0]

    clicks = dict(points=[[30, 20], [60, 40]], labels=[1, 0])
    result = tracker.add_new_points_or_box(state, 3, 10, **clicks)
    assert len(state.groups) == 2
    shared, alone = state.groups
    assert shared.obj_ids == [11, 12] and shared.slots.buckets == [[-2, 0, 1, -1]]  # its slot is retired
    assert alone.obj_ids == [10] and alone.slots.buckets == [[0, -1, -1, -1]] and alone.cond == {1, 3}
    # it keeps its outputs and pointers, not the shared bucket memories (they hold the others too)
    assert [t for t, f in sorted(alone.frames.items()) if f.memory is not None] == [3]
    torch.testing.assert_close(alone.frames[2].pointers[0, 0], old_pointer, atol=0, rtol=0)
    assert torch.equal(alone.frames[2].masks[0, 0], low_res_of(before[1], 10))
    # on the corrected frame its mask is what the clicks alone give
    fresh = tracker.init_state(frames)
    tracker.add_new_points_or_box(fresh, 3, 10, **clicks)
    assert torch.equal(alone.frames[3].masks, fresh.groups[0].prompts[10].low_res)
    assert result.obj_ids == [10, 11, 12]

    after = list(tracker.propagate_in_video(state, start_frame_idx=3))
    assert [o.frame_idx for o in after] == [3, 4] and after[1].obj_ids == [10, 11, 12]
    # the others keep their outputs; the corrected object is tracked again from its new prompt
    assert torch.equal(after[1].low_res_logits[1:], before[3].low_res_logits[1:])
    assert not torch.equal(low_res_of(after[1], 10), low_res_of(before[3], 10))
    assert alone.fresh == {4} and alone.frames[4].memory is not None
    # a later frame of the same object is another conditioning frame of its own group
    tracker.add_new_mask(state, 4, 10, square_mask(20, 20))
    assert len(state.groups) == 2 and alone.cond == {1, 3, 4} and not alone.fresh


@torch.inference_mode()
def test_clicks_add_up_unless_cleared(parts, frames):
    tracker = Multiplex31VideoTracker(*parts)
    state, once = tracker.init_state(frames), tracker.init_state(frames)
    tracker.add_new_points_or_box(state, 1, 4, points=[[30, 20]], labels=[1])
    both = tracker.add_new_points_or_box(state, 1, 4, points=[[60, 40]], labels=[0], clear_old_points=False)
    expected = tracker.add_new_points_or_box(once, 1, 4, points=[[30, 20], [60, 40]], labels=[1, 0])
    assert torch.equal(both.masks, expected.masks)
    replaced = tracker.add_new_points_or_box(state, 1, 4, points=[[60, 40]], labels=[0])
    single = tracker.add_new_points_or_box(once, 1, 4, points=[[60, 40]], labels=[0])
    assert torch.equal(replaced.masks, single.masks)


@torch.inference_mode()
def test_removing_objects_frees_their_slots_and_buckets(parts, frames):
    tracker = Multiplex31VideoTracker(*parts, objects_per_bucket=3)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=range(5))   # ids 10..14
    before = list(tracker.propagate_in_video(state, max_frame_num_to_track=2))
    (group,) = state.groups
    tracker.remove_object(state, 13)
    tracker.remove_object(state, 14)
    assert group.slots.buckets == [[0, 1, 2, -1]]   # the second bucket lost all its objects
    assert group.frames[2].memory.shape[0] == 1 and group.frames[2].masks.shape[0] == 3
    tracker.remove_object(state, 11)
    assert group.slots.buckets == [[0, -2, 1, -1]] and state.obj_ids == [10, 12]
    again = list(tracker.propagate_in_video(state, max_frame_num_to_track=2))
    for old, new in zip(before, again):  # stored outputs are kept for the others
        assert new.obj_ids == [10, 12] and torch.equal(new.low_res_logits, old.low_res_logits[[0, 2]])
    tracker.remove_object(state, 10)
    tracker.remove_object(state, 12)
    assert not state.groups and not state.obj_ids
    with pytest.raises(InvalidInputError, match="no objects to track"):
        next(tracker.propagate_in_video(state))


@torch.inference_mode()
def test_an_object_prompted_on_a_second_frame_before_propagating(parts, frames):
    tracker = Multiplex31VideoTracker(*parts, non_overlap_masks=False)
    state = tracker.init_state(frames)
    prompt_objects(tracker, state, objects=[0, 1], frame=1)
    tracker.add_new_mask(state, 3, 10, square_mask(20, 30))   # object 10 again, on frame 3
    shared, alone = state.groups
    assert shared.obj_ids == [11] and alone.obj_ids == [10] and alone.cond == {1, 3}
    out = list(tracker.propagate_in_video(state))
    assert [o.frame_idx for o in out] == [1, 2, 3, 4] and all(o.obj_ids == [10, 11] for o in out)
    mask = torch.from_numpy(square_mask(20, 30))
    assert float((out[2].masks[0] & mask).sum() / (out[2].masks[0] | mask).sum()) > 0.9   # its own prompt there


@torch.inference_mode()
def test_returned_masks_do_not_overlap_unless_asked(parts, frames):
    masks = {}
    for non_overlap in (True, False):
        tracker = Multiplex31VideoTracker(*parts, non_overlap_masks=non_overlap)
        state = tracker.init_state(frames)
        tracker.add_new_mask(state, 0, 1, square_mask(10, 10, side=40))
        result = tracker.add_new_mask(state, 0, 2, square_mask(30, 30, side=40))
        masks[non_overlap] = result.masks
        out = list(tracker.propagate_in_video(state, max_frame_num_to_track=1))
        if non_overlap:
            assert not (out[1].masks[0] & out[1].masks[1]).any()
    assert (masks[False][0] & masks[False][1]).sum() > 300   # the two prompts share a 20 x 20 corner
    assert not (masks[True][0] & masks[True][1]).any()
    assert torch.equal(masks[True][0] | masks[True][1], masks[False][0] | masks[False][1])
