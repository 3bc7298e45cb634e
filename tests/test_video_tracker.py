"""The interactive video tracker's API: bad input gives clear errors; options, object removal
and loading from a checkpoint work (tiny seeded model; exactness is in test_video_tracker_parity)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from opensam3.config import TINY, config_to_dict
from opensam3.errors import CheckpointError, InvalidInputError
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig, TrackerMemory
from opensam3.predictor.video_build import load_video_tracker, tracker_memory_config
from opensam3.predictor.video_prompts import apply_non_overlap, fill_holes_in_mask_scores

from test_video_tracker_parity import FIXTURE, build_tiny_tracker, make_frames

SIZE = 224


@pytest.fixture(scope="module")
def meta():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return handle.metadata()


@pytest.fixture(scope="module")
def tracker(meta):
    return build_tiny_tracker(meta)


@pytest.fixture(scope="module")
def frames():
    return make_frames(4, SIZE, SIZE)


def test_bad_prompts(tracker, frames):
    state = tracker.init_state(frames)
    with pytest.raises(InvalidInputError, match="no objects to track"):
        next(tracker.propagate_in_video(state))
    with pytest.raises(InvalidInputError, match=r"frame index 4 is out of range.*4 frames"):
        tracker.add_new_points_or_box(state, 4, 1, points=[[10, 10]], labels=[1])
    with pytest.raises(InvalidInputError, match="out of range"):
        tracker.add_new_points_or_box(state, -1, 1, points=[[10, 10]], labels=[1])
    with pytest.raises(InvalidInputError, match=r"point \[230.0, 10.0\] lies outside the 224x224 frame"):
        tracker.add_new_points_or_box(state, 0, 1, points=[[230, 10]], labels=[1])
    with pytest.raises(InvalidInputError, match="outside"):
        tracker.add_new_points_or_box(state, 0, 1, box=[10, 10, 100, 300])
    with pytest.raises(InvalidInputError, match="x1 > x0"):
        tracker.add_new_points_or_box(state, 0, 1, box=[100, 10, 50, 60])
    with pytest.raises(InvalidInputError, match="labels together"):
        tracker.add_new_points_or_box(state, 0, 1, points=[[10, 10]])
    with pytest.raises(InvalidInputError, match="1 points but 2 labels"):
        tracker.add_new_points_or_box(state, 0, 1, points=[[10, 10]], labels=[1, 0])
    with pytest.raises(InvalidInputError, match="1 \\(object\\) or 0 \\(background\\)"):
        tracker.add_new_points_or_box(state, 0, 1, points=[[10, 10]], labels=[2])
    with pytest.raises(InvalidInputError, match="NaN"):
        tracker.add_new_points_or_box(state, 0, 1, points=[[float("nan"), 10]], labels=[1])
    with pytest.raises(InvalidInputError, match="nothing to track"):
        tracker.add_new_points_or_box(state, 0, 1)
    with pytest.raises(InvalidInputError, match="clear_old_points=True"):
        tracker.add_new_points_or_box(state, 0, 1, box=[10, 10, 50, 60], clear_old_points=False)
    with pytest.raises(InvalidInputError, match="one \\(H, W\\) array"):
        tracker.add_new_mask(state, 0, 1, np.zeros((2, 5, 5)))
    with pytest.raises(InvalidInputError, match="unknown object id 3"):
        tracker.remove_object(state, 3)
    with pytest.raises(InvalidInputError, match="object ids are integers"):
        tracker.add_new_points_or_box(state, 0, "cat", points=[[10, 10]], labels=[1])
    assert state.obj_ids == []  # nothing was added by the failed calls


def test_session_errors_and_removal(tracker, frames):
    state = tracker.init_state(frames)
    out = tracker.add_new_points_or_box(state, 0, 1, points=[[84, 112]], labels=[1])
    assert out.frame_idx == 0 and out.obj_ids == [1] and out.masks.shape == (1, SIZE, SIZE)
    tracker.add_new_points_or_box(state, 0, 2, box=[112, 56, 196, 168])
    with pytest.raises(InvalidInputError, match="out of range"):
        next(tracker.propagate_in_video(state, start_frame_idx=9))
    with pytest.raises(InvalidInputError, match="non-negative"):
        next(tracker.propagate_in_video(state, max_frame_num_to_track=-1))
    results = list(tracker.propagate_in_video(state))
    assert [r.frame_idx for r in results] == [0, 1, 2, 3]
    assert all(r.obj_ids == [1, 2] and r.masks.shape == (2, SIZE, SIZE) and r.masks.dtype == torch.bool
               for r in results)
    with pytest.raises(InvalidInputError, match="cannot add the new object id 3 after tracking has started"):
        tracker.add_new_points_or_box(state, 1, 3, points=[[10, 10]], labels=[1])
    with pytest.raises(InvalidInputError, match="unknown object id 5.*\\[1, 2\\]"):
        tracker.remove_object(state, 5)
    with pytest.raises(InvalidInputError, match="unknown object id 5"):
        tracker.clear_all_points_in_frame(state, 0, 5)
    backward = list(tracker.propagate_in_video(state, start_frame_idx=3, max_frame_num_to_track=1, reverse=True))
    assert [r.frame_idx for r in backward] == [3, 2]
    obj_ids, updated = tracker.remove_object(state, 1)
    assert obj_ids == [2] and [r.frame_idx for r in updated] == [0]
    assert updated[0].masks.shape == (1, SIZE, SIZE)
    assert all(r.masks.shape == (1, SIZE, SIZE) for r in tracker.propagate_in_video(state))
    assert tracker.remove_object(state, 2) == ([], [])
    assert state.obj_ids == [] and not state.outputs["cond"]
    # after a reset new objects may be added again
    tracker.reset_state(state)
    assert tracker.add_new_points_or_box(state, 2, 7, points=[[50, 50]], labels=[1]).obj_ids == [7]


def test_single_object_with_options(meta, frames):
    """One object: corrections clear nearby tracked memories; output options change only the outputs."""
    tracker = build_tiny_tracker(meta, non_overlap_masks=True, fill_hole_area=8)
    state = tracker.init_state(frames[:3])
    mask = np.zeros((SIZE, SIZE), bool)
    mask[60:160, 40:120] = True
    out = tracker.add_new_mask(state, 0, 4, mask)
    assert torch.equal(out.masks[0], torch.from_numpy(mask))
    first = list(tracker.propagate_in_video(state))
    assert len(first) == 3 and first[0].object_score_logits.item() == 10.0
    tracker.add_new_points_or_box(state, 1, 4, points=[[100, 100], [20, 20]], labels=[1, 0], clear_old_points=False)
    list(tracker.propagate_in_video(state, start_frame_idx=1))
    # frame 1 is now a prompted frame; tracked outputs around it were cleared for the object
    assert 1 in state.outputs["cond"] and 2 in state.obj_outputs[0]["non_cond"]
    assert 0 in state.obj_outputs[0]["cond"]
    out = tracker.clear_all_points_in_frame(state, 1, 4)
    assert 1 not in state.outputs["cond"] and 1 in state.outputs["non_cond"]
    assert out.masks.shape == (1, SIZE, SIZE)


def test_output_post_processing():
    logits = torch.full((2, 1, 12, 12), -5.0)
    logits[0, 0, 2:10, 2:10] = 3.0
    logits[0, 0, 5, 5] = -1.0  # a one-pixel hole
    logits[1, 0, 0, 0] = 2.0  # a one-pixel speck
    logits[1, 0, 6:12, 6:12] = 4.0  # overlaps object 0, scores higher
    filled = fill_holes_in_mask_scores(logits, 4)
    assert filled[0, 0, 5, 5] == 0.1 and filled[1, 0, 0, 0] == -0.1
    assert torch.equal(filled[0, 0, 0], logits[0, 0, 0])
    separate = apply_non_overlap(logits)
    assert (separate[0, 0, 6:10, 6:10] <= -10).all()
    foreground = logits[1] > 0
    assert torch.equal(separate[1][foreground], logits[1][foreground])
    assert torch.equal(apply_non_overlap(logits[:1]), logits[:1])


def test_load_video_tracker_from_checkpoint(tmp_path, meta, frames):
    config = TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))
    reference = build_tiny_tracker(meta)
    # a checkpoint in the official layout, memory sized as the official builder (4 layers)
    memory = TrackerMemory(tracker_memory_config(config))
    tensors = {"detector." + k: v for k, v in reference.image_model.state_dict().items()}
    tensors.update({"tracker." + k: v for k, v in reference.heads.state_dict().items()})
    tensors.update({"tracker." + k: v for k, v in memory.state_dict().items()})
    path = tmp_path / "tiny_tracker.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"opensam3_config": json.dumps(config_to_dict(config))})
    loaded = load_video_tracker(path, fill_hole_area=4, bucket_size=8)
    assert loaded.fill_hole_area == 4 and loaded.memory.config.use_memory_selection
    assert loaded.multiplex and loaded.objects_per_pass == 8
    assert loaded.memory.config.attention_layers == 4
    for key, value in memory.state_dict().items():
        assert torch.equal(loaded.memory.state_dict()[key], value), key
    state = loaded.init_state(frames[:2])
    loaded.add_new_points_or_box(state, 0, 1, points=[[84, 112]], labels=[1])
    assert [r.frame_idx for r in loaded.propagate_in_video(state)] == [0, 1]

    no_tracker = tmp_path / "detector_only.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items() if k.startswith("detector.")}, str(no_tracker),
              metadata={"opensam3_config": json.dumps(config_to_dict(config))})
    with pytest.raises(CheckpointError, match="no tracker weights"):
        load_video_tracker(no_tracker)


def test_model_without_tracker_neck_is_refused():
    heads = TrackerHeads(TrackerHeadsConfig(image_size=TINY.image_size))
    with torch.device("meta"):
        image_model = Sam3ImageModel(TINY)
    from opensam3.predictor.video_tracker import VideoTracker

    with pytest.raises(InvalidInputError, match="without the tracker neck"):
        VideoTracker(image_model, heads, TrackerMemory(tracker_memory_config(TINY)))


def test_bf16_backbone_with_float32_tracker(meta, frames):
    """build_video_tracker keeps the backbone's bf16 and runs the tracker on a float32 copy of the heads."""
    from opensam3.api import Sam3
    from opensam3.predictor.video_build import build_video_tracker

    reference = build_tiny_tracker(meta)
    state = reference.init_state(frames[:2])
    reference.add_new_points_or_box(state, 0, 1, points=[[84, 112]], labels=[1])
    expected = [r.masks for r in reference.propagate_in_video(state)]

    fast = build_tiny_tracker(meta)
    sam = Sam3(fast.image_model.to(torch.bfloat16), tracker=fast.heads.to(torch.bfloat16))
    tracker = build_video_tracker(sam, fast.memory)
    assert next(tracker.heads.parameters()).dtype == torch.float32
    assert next(sam.tracker.parameters()).dtype == torch.bfloat16  # the image predictor's heads are untouched
    state = tracker.init_state(frames[:2])
    tracker.add_new_points_or_box(state, 0, 1, points=[[84, 112]], labels=[1])
    for mine, theirs in zip((r.masks for r in tracker.propagate_in_video(state)), expected):
        assert (mine & theirs).sum() / (mine | theirs).sum() > 0.95


def test_processing_order():
    from opensam3.predictor.video_state import processing_order

    assert list(processing_order(2, None, False, 6)) == [2, 3, 4, 5]
    assert list(processing_order(2, 1, False, 6)) == [2, 3]
    assert list(processing_order(4, None, True, 6)) == [4, 3, 2, 1, 0]
    assert list(processing_order(4, 2, True, 6)) == [4, 3, 2]
    assert list(processing_order(0, 3, True, 6)) == [0]  # the official edge case
    assert list(processing_order(5, 0, False, 6)) == [5]
    with pytest.raises(InvalidInputError, match="non-negative integer"):
        processing_order(0, 1.5, False, 6)


def test_full_size_memory_config_is_official():
    from opensam3.config import SAM3
    from opensam3.model.tracker import TrackerMemoryConfig

    assert tracker_memory_config(SAM3) == dataclasses.replace(TrackerMemoryConfig(), use_memory_selection=True)
    assert tracker_memory_config(SAM3, use_memory_selection=False) == TrackerMemoryConfig()


def test_track_an_mp4_and_write_overlay(tmp_path, tracker, frames):
    from opensam3.data.video_io import VideoWriter, open_video, write_overlay_video

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=5) as writer:
        for frame in frames[:2]:
            writer.write(frame)
    state = tracker.init_state(clip)
    assert (state.num_frames, state.height, state.width) == (2, SIZE, SIZE)
    tracker.add_new_points_or_box(state, 0, 3, box=[112, 56, 196, 168])
    results = {r.frame_idx: dict(zip(r.obj_ids, r.masks.numpy())) for r in tracker.propagate_in_video(state)}
    out = write_overlay_video(tmp_path / "overlay.mp4", clip, results)
    assert len(open_video(out)) == 2
