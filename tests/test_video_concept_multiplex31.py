"""SAM 3.1 concept video tracking (opensam3/predictor/video_concept_multiplex31.py) on a tiny
seeded SAM 3.1 model: the multiplex groups track exactly as the interactive multiplex tracker
does from the same masks; new detections fill free slots of an existing group (official
placement) or open a new group; one tracker pass per group per frame however many objects; the
official session protocol end to end; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_multiplex31_loader import seeded_sam31_parts
from test_video_multiplex31 import CONFIG, H, W, moving_square_clip

from opensam3.errors import InvalidInputError
from opensam3.predictor import video_multiplex31 as tracker_module
from opensam3.predictor.video_concept import Detections
from opensam3.predictor.video_concept_multiplex31 import ConceptMultiplex31Predictor
from opensam3.predictor.video_concept_rules import ConceptVideoConfig
from opensam3.predictor.video_multiplex31 import Multiplex31VideoTracker
from opensam3.predictor.video_prompts import fill_holes_in_mask_scores
from opensam3.predictor.video_session import Sam3VideoPredictor

L = CONFIG.low_res_size


@pytest.fixture(scope="module")
def parts():
    return seeded_sam31_parts()


@pytest.fixture(scope="module")
def frames():
    return moving_square_clip(6, seed=1)


def square_logits(squares) -> torch.Tensor:
    """(n, L, L) +-10 logits of squares (y0, x0, side) on the low-res grid."""
    out = torch.full((len(squares), L, L), -10.0)
    for i, (y0, x0, side) in enumerate(squares):
        out[i, y0:y0 + side, x0:x0 + side] = 10.0
    return out


def predictor(parts, config=None, **options) -> ConceptMultiplex31Predictor:
    return ConceptMultiplex31Predictor(Multiplex31VideoTracker(*parts, **options),
                                       config=config or ConceptVideoConfig.without_heuristics())


@torch.inference_mode()
def test_groups_track_as_the_interactive_multiplex_tracker_from_the_same_masks(parts, frames):
    concept = predictor(parts)
    state = concept.init_state(frames)
    squares = [(5, 5, 20), (40, 10, 16), (20, 50, 24)]
    masks = square_logits(squares)
    concept.encode_frame(state, 0)
    concept._add_objects(state, 0, [1, 2, 3], masks)
    concept.encode_frame(state, 1)
    ids, low_res, scores = concept._propagate_states(state, state.tracker_states, 1, False, False)
    assert ids == [1, 2, 3] and low_res.shape == (3, L, L)

    # the reference: the interactive tracker given the same mask prompts and the same (bf16-rounded) features
    reference = Multiplex31VideoTracker(*parts)
    reference._compute_features = lambda video, t: reference.features_from_trunk(
        reference.frame_trunk(video, t), via_bfloat16=True)
    ref_state = reference.init_state(frames)
    prompts = concept._mask_input(masks)
    assert prompts.shape[-1] == reference.input_mask_size
    for obj_id, prompt in zip([1, 2, 3], prompts):
        reference.add_new_mask(ref_state, 0, obj_id, prompt)
    out = list(reference.propagate_in_video(ref_state, max_frame_num_to_track=1))[1]
    assert out.frame_idx == 1 and out.obj_ids == [1, 2, 3]
    # the reference returns the decoder's logits; the concept path fills small holes first
    filled = fill_holes_in_mask_scores(out.low_res_logits.float()[:, None], concept.config.fill_hole_area)[:, 0]
    torch.testing.assert_close(low_res, filled, atol=1e-4, rtol=0)
    torch.testing.assert_close(scores, out.object_score_logits, atol=1e-4, rtol=0)
    assert (low_res > 0).any()  # the comparison is not between two empty masks


@torch.inference_mode()
def test_new_detections_fill_free_slots_else_open_a_group(parts, frames):
    concept = predictor(parts)
    state = concept.init_state(frames)
    concept.encode_frame(state, 0)
    concept._add_objects(state, 0, [1, 2, 3], square_logits([(5, 5, 20), (40, 10, 16), (20, 50, 24)]))
    [group] = state.tracker_states
    assert group.slots.num_buckets == 1 and group.slots.free_slots == 1 and group.cond == {0}

    concept.encode_frame(state, 1)
    _, low_res, _ = concept._propagate_states(state, state.tracker_states, 1, False, False)
    concept._update_memories(state, 1, low_res)
    memory_before = group.frames[1].memory.clone()
    _, masks_before, _ = group.memory_input
    encoded = []
    real_encode = concept.tracker.tracker.encode_memory

    def spy(image, masks, scores, slots, conditioning=None):
        encoded.append((masks, conditioning))
        return real_encode(image, masks, scores, slots, conditioning=conditioning)

    concept.tracker.tracker.encode_memory = spy
    try:
        concept._add_objects(state, 1, [4], square_logits([(60, 60, 12)]))
    finally:
        del concept.tracker.tracker.encode_memory
    # object 4 took the free slot: one group, one bucket, flagged as conditioning on frame 1,
    # which stays a non-conditioning frame of the group (official rule)
    assert state.tracker_states == [group] and group.obj_ids == [1, 2, 3, 4]
    assert group.slots.num_buckets == 1 and group.slots.free_slots == 0
    assert group.cond == {0} and group.cond_objects[1] == {4}
    stored = group.frames[1]
    assert stored.masks.shape[0] == 4 and stored.pointers.shape[:2] == (1, CONFIG.multiplex_count)
    # the frame's bucket memory was encoded again: the old objects' masks as before, the
    # newcomer's after them, flagged as the only conditioning object
    [(masks, conditioning)] = encoded
    assert masks.shape[0] == 4 and torch.equal(masks[:3].cpu(), masks_before.to(masks.dtype))
    assert conditioning.tolist() == [False, False, False, True]
    assert not torch.equal(stored.memory, memory_before)
    assert group.memory_input is None  # a full group keeps no masks for newcomers

    concept._add_objects(state, 1, [5, 6], square_logits([(70, 5, 8), (70, 30, 8)]))
    assert len(state.tracker_states) == 2 and state.tracker_states[1].obj_ids == [5, 6]
    assert state.tracker_states[1].cond == {1}

    # removal retires the slot; a group left empty is dropped
    concept._remove_from_trackers(state, 2)
    assert group.obj_ids == [1, 3, 4] and group.frames[1].masks.shape[0] == 3
    assert group.slots.free_slots == 0  # a retired slot is never refilled
    for obj_id in (5, 6):
        concept._remove_from_trackers(state, obj_id)
    assert state.tracker_states == [group]
    # the remaining objects still track, rows in id order
    concept.encode_frame(state, 2)
    ids, low_res, _ = concept._propagate_states(state, state.tracker_states, 2, False, False)
    assert ids == [1, 3, 4] and low_res.shape == (3, L, L)


def scripted(concept, script):
    """Replace the detector with per-frame (masks, scores)."""
    def detect(state, frame_idx, allow_new):
        concept.encode_frame(state, frame_idx)
        squares, scores = script.get(frame_idx, ([], []))
        return Detections(square_logits(squares), np.asarray(scores, np.float32))
    concept._detect = detect


@torch.inference_mode()
@pytest.mark.parametrize("per_bucket", [None, 1])
def test_one_tracker_pass_per_group_and_frame_however_many_objects(parts, frames, monkeypatch, per_bucket):
    concept = predictor(parts, objects_per_bucket=per_bucket)
    five = [(2, 2, 10), (2, 40, 10), (40, 2, 10), (40, 40, 10), (60, 60, 10)]
    scripted(concept, {0: (five, [0.9] * 5)})
    buckets = []
    real = tracker_module.propagate
    monkeypatch.setattr(tracker_module, "propagate", lambda tracker, features, slots, *a, **k: (
        buckets.append(slots.num_buckets), real(tracker, features, slots, *a, **k))[1])
    state = concept.init_state(frames)
    state.text = "square"
    outputs = [concept.run_frame(state, t, reverse=False) for t in range(4)]
    assert sorted(outputs[0]["obj_id_to_mask"]) == [0, 1, 2, 3, 4]
    assert len(state.tracker_states) == 1
    # frames 1-3: one call each for the group; 5 objects need 2 buckets of 4 (or 5 of 1)
    assert buckets == [2 if per_bucket is None else 5] * 3
    for out in outputs[1:]:
        assert sorted(out["obj_id_to_mask"]) == [0, 1, 2, 3, 4]
        assert all(mask.shape[-2:] == (H, W) for mask in out["obj_id_to_mask"].values())


@torch.inference_mode()
def test_session_protocol_end_to_end_and_clear_errors(parts, frames):
    concept = predictor(parts, config=ConceptVideoConfig())
    scripted(concept, {t: ([(20, 5 + 2 * t, 24), (60, 60, 12)], [0.9, 0.8]) for t in range(6)})
    server = Sam3VideoPredictor(concept)
    session = server.handle_request({"type": "start_session", "resource_path": frames})["session_id"]
    out = server.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 2, "text": "a square"})
    assert out["frame_index"] == 2
    first = out["outputs"]
    assert list(first["out_obj_ids"]) == [0, 1] and first["out_binary_masks"].shape == (2, H, W)
    seen = {}
    for item in server.handle_stream_request({"type": "propagate_in_video", "session_id": session,
                                              "propagation_direction": "both"}):
        seen[item["frame_index"]] = item["outputs"]
    assert sorted(seen) == list(range(6))
    for outputs in seen.values():
        assert set(outputs) >= {"out_obj_ids", "out_probs", "out_boxes_xywh", "out_binary_masks"}
        assert outputs["out_binary_masks"].shape[1:] == (H, W)
        assert len(outputs["out_obj_ids"]) == len(outputs["out_probs"]) == len(outputs["out_boxes_xywh"])
    server.handle_request({"type": "remove_object", "session_id": session, "obj_id": 1})
    state = server._session(session)["state"]
    assert 1 not in state.obj_ids and all(1 not in group.obj_ids for group in state.tracker_states)
    assert all(group.obj_ids for group in state.tracker_states)  # no empty group is kept
    server.handle_request({"type": "close_session", "session_id": session})
    with pytest.raises(InvalidInputError, match="session"):
        server.handle_request({"type": "reset_session", "session_id": session})


@torch.inference_mode()
def test_the_real_detector_runs_on_a_sam31_backbone(parts, frames):
    concept = predictor(parts, config=ConceptVideoConfig())
    state = concept.init_state(frames)
    state.text = "a yellow square"
    out = concept.run_frame(state, 0, reverse=False)
    assert set(out) >= {"obj_id_to_mask", "obj_id_to_score"}
    assert state.features[0][0].image.shape == state.features[0][1].image.shape


@torch.inference_mode()
def test_clicks_add_an_object_and_refine_a_detected_one(parts, frames):
    concept = predictor(parts)
    scripted(concept, {0: ([(10, 10, 20), (50, 50, 16)], [0.9, 0.9])})
    server = Sam3VideoPredictor(concept)
    session = server.handle_request({"type": "start_session", "resource_path": frames})["session_id"]
    server.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 0, "text": "a square"})
    list(server.handle_stream_request({"type": "propagate_in_video", "session_id": session}))
    state = server._session(session)["state"]
    [detected] = state.tracker_states
    assert detected.obj_ids == [0, 1]

    # a new object: its own group, its mask what the interactive multiplex tracker gives the same clicks
    point, pixels = [[0.7, 0.3]], np.array([[0.7 * W, 0.3 * H]], np.float32)
    out = server.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 3, "points": point,
                                 "point_labels": [1], "obj_id": 7})["outputs"]
    assert 7 in list(out["out_obj_ids"])
    reference = Multiplex31VideoTracker(*parts, non_overlap_masks=False)
    reference._compute_features = lambda video, t: reference.features_from_trunk(
        reference.frame_trunk(video, t), via_bfloat16=True)
    ref_state = reference.init_state(frames)
    reference.add_new_points_or_box(ref_state, 3, 7, points=pixels, labels=[1])
    ref_low = reference._frame_result(ref_state, 3, with_logits=True).low_res_logits
    filled = fill_holes_in_mask_scores(ref_low[:, None], concept.config.fill_hole_area)[:, 0]
    expected = concept._video_res(state, filled)
    assert expected.any()
    assert torch.equal(state.cached_outputs[3][7], expected[0])
    [clicked] = [g for g in state.tracker_states if 7 in g.obj_ids]
    assert clicked.obj_ids == [7] and clicked.cond == {3} and clicked.cond_objects[3] == {7}
    refreshed = [item["frame_index"] for item in server.handle_stream_request(
        {"type": "propagate_in_video", "session_id": session, "start_frame_index": 3})]
    assert refreshed == [3, 4, 5, 2, 1, 0]  # both ways by default
    assert all(7 in state.cached_outputs[t] for t in range(6))  # tracked from its clicked frame

    # refining a detected object moves it out of its group; the detector's conditioning frame nearby is dropped
    server.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 4, "points": [[0.2, 0.2]],
                           "point_labels": [1], "obj_id": 0})
    [alone] = [g for g in state.tracker_states if 0 in g.obj_ids]
    assert alone.obj_ids == [0] and alone.cond == {4} and detected.obj_ids == [1]
    assert alone.frames[2].memory is None and alone.frames[4].memory is not None  # pointers kept, not bucket memories
    before = {t: state.cached_outputs[t].get(1) for t in range(6)}
    list(server.handle_stream_request({"type": "propagate_in_video", "session_id": session, "start_frame_index": 4}))
    for t in range(6):  # the partial propagation re-tracks only the refined object's group
        assert (before[t] is None) == (state.cached_outputs[t].get(1) is None)
        if before[t] is not None:
            assert torch.equal(before[t], state.cached_outputs[t][1])
    # an id clicked in below an existing one: rows still follow the session's object list
    server.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 4, "points": [[0.5, 0.8]],
                           "point_labels": [1], "obj_id": 5})
    assert [int(i) for i in state.meta.obj_ids] == [0, 1, 7, 5]
    concept.encode_frame(state, 5)
    ids, low_res, _ = concept._propagate_states(state, state.tracker_states, 5, False, False)
    assert ids == [0, 1, 7, 5] and low_res.shape[0] == 4
    with pytest.raises(InvalidInputError, match="obj_id"):
        server.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 4, "points": [[0.2, 0.2]],
                               "point_labels": [1]})
