"""Object multiplexing (objects tracked in buckets, one batched pass per bucket) gives the same
results as tracking one object per pass, on the tiny seeded tracker: interactive propagation
(points, boxes, a correction, both directions) and concept tracking, with 1, 3 and 17 objects
(17 = two buckets of the default size 16).

Batched and one-row matrix products round differently in the last bits of float32, so logits
agree to LOGIT_TOL rather than bitwise (measured: 1.3e-6 on mask logits, 2e-5 on object scores
of magnitude ~10-30), and a mask pixel may differ only where the logit is within AMBIGUOUS of 0
(measured: one pixel of logit -5.7e-8 in the 17-object scenario).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from opensam3.errors import InvalidInputError
from opensam3.model.tracker.multiplex import DEFAULT_BUCKET_SIZE, object_buckets

from test_video_concept_parity import FIXTURE as CONCEPT_FIXTURE
from test_video_concept_parity import build_tiny_concept_predictor
from test_video_tracker_parity import FIXTURE, build_tiny_tracker, make_frames

LOGIT_TOL = 1e-5  # absolute on mask logits; relative (and absolute) on object score logits
AMBIGUOUS = 1e-4  # a pixel may flip only where its logit is this close to 0
SIZE = 224


@pytest.fixture(scope="module")
def tracker():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return build_tiny_tracker(handle.metadata())


@pytest.fixture(scope="module")
def frames():
    return make_frames(4, SIZE, SIZE)


def prompt_objects(tracker, state, num_objects: int) -> None:
    """Alternating boxes and clicks spread over the frame; every fifth object is prompted on
    frame 1 instead of frame 0, so objects have different conditioning frames."""
    for i in range(num_objects):
        x, y = 20 + (i * 37) % 180, 20 + (i * 53) % 180
        frame_idx = 1 if i % 5 == 4 else 0
        if i % 2:
            tracker.add_new_points_or_box(state, frame_idx, i + 1, points=[[x, y]], labels=[1])
        else:
            tracker.add_new_points_or_box(state, frame_idx, i + 1, box=[x - 15, y - 15, x + 12, y + 14])


def interactive_scenario(tracker, frames, num_objects: int, multiplex: bool, bucket_size=DEFAULT_BUCKET_SIZE):
    tracker.multiplex, tracker.bucket_size = multiplex, bucket_size
    try:
        state = tracker.init_state(frames)
        prompt_objects(tracker, state, num_objects)
        results = list(tracker.propagate_in_video(state))
        # a correction on a tracked frame, then tracking again both ways from it
        tracker.add_new_points_or_box(state, 2, 2 if num_objects > 1 else 1, points=[[60, 60]], labels=[0],
                                      clear_old_points=False)
        results += list(tracker.propagate_in_video(state, start_frame_idx=2))
        results += list(tracker.propagate_in_video(state, start_frame_idx=2, reverse=True))
        return results
    finally:
        tracker.multiplex, tracker.bucket_size = True, DEFAULT_BUCKET_SIZE


def assert_masks_agree(ours: torch.Tensor, theirs: torch.Tensor, logits: torch.Tensor) -> None:
    """Bool masks (N, H, W) equal except where the (N, L, L) logits, at (H, W), are ambiguous."""
    differ = ours != theirs
    if differ.any():
        video_logits = F.interpolate(logits[:, None].float(), size=ours.shape[-2:], mode="bilinear",
                                     align_corners=False)[:, 0]
        worst = video_logits[differ].abs().max().item()
        assert worst < AMBIGUOUS, f"{int(differ.sum())} mask pixels differ, with logits up to {worst}"


def assert_same_tracking(per_object, multiplexed) -> None:
    assert [(r.frame_idx, r.obj_ids) for r in multiplexed] == [(r.frame_idx, r.obj_ids) for r in per_object]
    for a, b in zip(per_object, multiplexed):
        torch.testing.assert_close(b.low_res_logits, a.low_res_logits, rtol=0, atol=LOGIT_TOL)
        torch.testing.assert_close(b.object_score_logits, a.object_score_logits, rtol=LOGIT_TOL, atol=LOGIT_TOL)
        assert_masks_agree(b.masks, a.masks, a.low_res_logits)


@pytest.mark.parametrize("num_objects", [1, 3, 17])
def test_interactive_multiplex_equals_per_object(tracker, frames, num_objects):
    per_object = interactive_scenario(tracker, frames, num_objects, multiplex=False)
    multiplexed = interactive_scenario(tracker, frames, num_objects, multiplex=True)
    assert len(per_object) == 4 + 2 + 3
    assert all(len(r.obj_ids) == num_objects for r in per_object)
    assert_same_tracking(per_object, multiplexed)


@pytest.mark.parametrize("bucket_size", [2, None])
def test_other_bucket_sizes(tracker, frames, bucket_size):
    # 2: three buckets of 2, 2, 1; None: all five objects in one pass
    per_object = interactive_scenario(tracker, frames, 5, multiplex=False)
    assert_same_tracking(per_object, interactive_scenario(tracker, frames, 5, True, bucket_size))


def test_buckets_and_options(tracker):
    assert object_buckets(17, 16) == [slice(0, 16), slice(16, 17)]
    assert object_buckets(3, None) == [slice(0, 3)]
    assert object_buckets(0, 16) == []
    assert tracker.multiplex and tracker.bucket_size == 16 and tracker.objects_per_pass == 16
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidInputError, match="bucket_size must be a positive integer"):
            type(tracker)(tracker.image_model, tracker.heads, tracker.memory, bucket_size=bad)


# ---- concept tracking: detected objects plus clicked ones ----

def concept_scenario(predictor, frames, num_objects: int, multiplex: bool, bucket_size=DEFAULT_BUCKET_SIZE):
    """A text prompt (the clip's detector finds one object) plus clicked objects up to ``num_objects``."""
    tracker = predictor.model.tracker
    tracker.multiplex, tracker.bucket_size = multiplex, bucket_size
    try:
        sid = predictor.handle_request({"type": "start_session", "resource_path": frames})["session_id"]
        predictor.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": 1, "text": "a yellow square"})
        for i in range(num_objects - 1):
            x, y = 0.1 + (i * 0.17) % 0.8, 0.1 + (i * 0.23) % 0.8
            predictor.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": 1, "points": [[x, y]],
                                      "point_labels": [1], "obj_id": 100 + i})
        results = [(item["frame_index"], item["outputs"]) for item in predictor.handle_stream_request(
            {"type": "propagate_in_video", "session_id": sid, "propagation_direction": "both"})]
        predictor.handle_request({"type": "close_session", "session_id": sid})
        return results
    finally:
        tracker.multiplex, tracker.bucket_size = True, DEFAULT_BUCKET_SIZE


@pytest.fixture(scope="module")
def concept_predictor():
    with safe_open(str(CONCEPT_FIXTURE), framework="pt") as handle:
        return build_tiny_concept_predictor(handle.metadata())


@pytest.mark.parametrize("num_objects", [1, 3, 17])
def test_concept_multiplex_equals_per_object(concept_predictor, num_objects):
    frames = make_frames(4, SIZE, SIZE)
    per_object = concept_scenario(concept_predictor, frames, num_objects, multiplex=False)
    multiplexed = concept_scenario(concept_predictor, frames, num_objects, multiplex=True)
    assert [t for t, _ in per_object] == [1, 2, 3, 0]
    assert len(per_object[0][1]["out_obj_ids"]) == num_objects
    assert [t for t, _ in multiplexed] == [t for t, _ in per_object]
    for (_, a), (_, b) in zip(per_object, multiplexed):
        assert np.array_equal(b["out_obj_ids"], a["out_obj_ids"])
        np.testing.assert_allclose(b["out_probs"], a["out_probs"], rtol=0, atol=LOGIT_TOL)
        # no logits come out of the concept tracker: masks must be equal but for a stray pixel
        differ = int((b["out_binary_masks"] != a["out_binary_masks"]).sum())
        assert differ <= 2, f"{differ} mask pixels differ"
        np.testing.assert_allclose(b["out_boxes_xywh"], a["out_boxes_xywh"], rtol=0, atol=1.0 / SIZE)
