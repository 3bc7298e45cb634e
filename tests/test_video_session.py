"""The official video predictor protocol (Sam3VideoPredictor) on a tiny seeded model: request
validation, independent sessions, closing frees the session, output format; and the
``opensam3 track`` command (track_cli) end to end on an MP4."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import weakref

import numpy as np
import pytest
from safetensors import safe_open
from test_video_concept_parity import FIXTURE, build_tiny_concept_predictor
from test_video_tracker_parity import make_frames

from opensam3 import TINY, Sam3
from opensam3.errors import InvalidInputError
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker import (
    TrackerHeads,
    TrackerHeadsConfig,
    TrackerMemory,
    TrackerMemoryConfig,
)
from opensam3.predictor.track_cli import add_track_parser, run_track
from opensam3.predictor.video_concept_rules import ConceptVideoConfig
from opensam3.seeded import apply_weight_overrides, seed_module

SIZE = 224
TEXT = "a yellow square"


@pytest.fixture(scope="module")
def meta():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return handle.metadata()


@pytest.fixture(scope="module")
def predictor(meta):
    return build_tiny_concept_predictor(meta)


@pytest.fixture(scope="module")
def frames():
    return make_frames(4, SIZE, SIZE)


def _request(predictor, **request):
    return predictor.handle_request(request)


def test_request_errors(predictor, frames):
    with pytest.raises(InvalidInputError, match="invalid request type 'bogus'"):
        _request(predictor, type="bogus")
    with pytest.raises(InvalidInputError, match="handle_stream_request"):
        _request(predictor, type="propagate_in_video", session_id="x")
    with pytest.raises(InvalidInputError, match="a request is a dict"):
        predictor.handle_request(["start_session"])
    with pytest.raises(InvalidInputError, match="unknown session id 'nope'"):
        _request(predictor, type="add_prompt", session_id="nope", frame_index=0, text=TEXT)
    with pytest.raises(InvalidInputError, match="unknown session id 'nope'"):
        predictor.handle_stream_request({"type": "propagate_in_video", "session_id": "nope"})
    with pytest.raises(InvalidInputError, match="does not exist"):
        _request(predictor, type="start_session", resource_path="/no/such/video.mp4")
    with pytest.raises(InvalidInputError, match="needs 'resource_path'"):
        _request(predictor, type="start_session")
    sid = _request(predictor, type="start_session", resource_path=frames)["session_id"]
    try:
        with pytest.raises(InvalidInputError, match="already in use"):
            _request(predictor, type="start_session", resource_path=frames, session_id=sid)
        with pytest.raises(InvalidInputError, match="frame_index 9 is out of range: the video has 4 frames"):
            _request(predictor, type="add_prompt", session_id=sid, frame_index=9, text=TEXT)
        with pytest.raises(InvalidInputError, match="needs 'frame_index'"):
            _request(predictor, type="add_prompt", session_id=sid, text=TEXT)
        with pytest.raises(InvalidInputError, match="needs text, bounding_boxes or points"):
            _request(predictor, type="add_prompt", session_id=sid, frame_index=0)
        with pytest.raises(InvalidInputError, match="give its obj_id"):
            _request(predictor, type="add_prompt", session_id=sid, frame_index=0, points=[[0.5, 0.5]],
                     point_labels=[1])
        with pytest.raises(InvalidInputError, match="must lie in \\[0, 1\\]"):
            _request(predictor, type="add_prompt", session_id=sid, frame_index=0, points=[[50, 60]],
                     point_labels=[1], obj_id=1)
        with pytest.raises(InvalidInputError, match="1 \\(positive\\) or 0"):
            _request(predictor, type="add_prompt", session_id=sid, frame_index=0, points=[[0.5, 0.5]],
                     point_labels=[2], obj_id=1)
        with pytest.raises(InvalidInputError, match="one box"):
            _request(predictor, type="add_prompt", session_id=sid, frame_index=0,
                     bounding_boxes=[[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]], bounding_box_labels=[1, 1])
        with pytest.raises(InvalidInputError, match="no prompts yet"):
            list(predictor.handle_stream_request({"type": "propagate_in_video", "session_id": sid}))
        with pytest.raises(InvalidInputError, match="invalid propagation_direction 'sideways'"):
            predictor.handle_stream_request({"type": "propagate_in_video", "session_id": sid,
                                             "propagation_direction": "sideways"})
        with pytest.raises(InvalidInputError, match="unknown object id 7"):
            _request(predictor, type="remove_object", session_id=sid, obj_id=7)
    finally:
        _request(predictor, type="close_session", session_id=sid)
    # closing is idempotent, as the official
    assert _request(predictor, type="close_session", session_id=sid) == {"is_success": True}


def test_sessions_are_independent_and_close_frees_them(predictor, frames):
    a = _request(predictor, type="start_session", resource_path=frames, session_id="a")["session_id"]
    b = _request(predictor, type="start_session", resource_path=frames)["session_id"]
    assert a == "a" and b != a and set(predictor.session_ids) >= {a, b}
    out_a = _request(predictor, type="add_prompt", session_id=a, frame_index=0, text=TEXT)
    outputs = out_a["outputs"]
    assert out_a["frame_index"] == 0
    assert outputs["out_obj_ids"].dtype == np.int64 and outputs["out_probs"].dtype == np.float32
    assert outputs["out_boxes_xywh"].shape == (len(outputs["out_obj_ids"]), 4)
    assert outputs["out_binary_masks"].shape == (len(outputs["out_obj_ids"]), SIZE, SIZE)
    assert outputs["out_binary_masks"].dtype == bool and len(outputs["out_obj_ids"]) >= 1
    assert ((outputs["out_boxes_xywh"] >= 0) & (outputs["out_boxes_xywh"] <= 1)).all()
    # session b has no prompt: it cannot propagate, and prompting a leaves b untouched
    with pytest.raises(InvalidInputError, match="no prompts yet"):
        list(predictor.handle_stream_request({"type": "propagate_in_video", "session_id": b}))
    frames_a = [item["frame_index"] for item in predictor.handle_stream_request(
        {"type": "propagate_in_video", "session_id": a, "propagation_direction": "forward",
         "max_frame_num_to_track": 2})]
    assert frames_a == [0, 1, 2]
    out_b = _request(predictor, type="add_prompt", session_id=b, frame_index=0, text=TEXT)
    np.testing.assert_array_equal(out_b["outputs"]["out_binary_masks"], outputs["out_binary_masks"])
    # points add an object on a frame; removing it hides it
    obj = _request(predictor, type="add_prompt", session_id=a, frame_index=1, points=[[0.3, 0.5]],
                   point_labels=[1], obj_id=42)["outputs"]
    assert 42 in obj["out_obj_ids"].tolist()
    assert _request(predictor, type="remove_object", session_id=a, obj_id=42) == {"is_success": True}
    fetched = list(predictor.handle_stream_request({"type": "propagate_in_video", "session_id": a,
                                                    "propagation_direction": "forward", "start_frame_index": 1,
                                                    "max_frame_num_to_track": 0}))
    assert [item["frame_index"] for item in fetched] == [1]
    assert 42 not in fetched[0]["outputs"]["out_obj_ids"].tolist()
    # closing a session frees its state and tensors
    state = predictor._sessions[a]["state"]
    state_ref = weakref.ref(state)
    tensor_refs = [weakref.ref(f.image) for f in state.features.values()]
    tensor_refs += [weakref.ref(r.pred_masks) for ts in state.tracker_states for r in ts.outputs["cond"].values()
                    if r.pred_masks is not None]
    assert tensor_refs
    del state, obj, fetched
    _request(predictor, type="close_session", session_id=a)
    gc.collect()
    assert a not in predictor.session_ids and b in predictor.session_ids
    assert state_ref() is None
    assert all(ref() is None for ref in tensor_refs)
    _request(predictor, type="reset_session", session_id=b)
    assert predictor._sessions[b]["state"].obj_ids == []
    _request(predictor, type="close_session", session_id=b)


def test_config_defaults_are_official():
    config = ConceptVideoConfig()
    assert (config.score_threshold_detection, config.assoc_iou_thresh, config.det_nms_thresh,
            config.new_det_thresh) == (0.5, 0.1, 0.1, 0.7)
    assert (config.hotstart_delay, config.hotstart_unmatch_thresh, config.hotstart_dup_thresh) == (15, 8, 8)
    assert (config.recondition_every_nth_frame, config.fill_hole_area, config.max_trk_keep_alive) == (16, 16, 30)
    ablation = ConceptVideoConfig.without_heuristics()
    assert ablation.hotstart_delay == 0 and ablation.recondition_every_nth_frame == 0


@pytest.fixture(scope="module")
def tiny_video_checkpoint(tmp_path_factory, meta):
    """A tiny model with detector, tracker heads and memory (seeded, with the fixture's overrides)."""
    config = TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))
    model = Sam3ImageModel(config).eval()
    seed_module(model)
    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(config))
    seed_module(heads, prefix="tracker.")
    memory = TrackerMemory(TrackerMemoryConfig.from_model_config(config))
    seed_module(memory, prefix="tracker.")
    apply_weight_overrides({"detector.": model, "tracker.": heads}, meta["weight_override"])
    path = tmp_path_factory.mktemp("tiny_video") / "tiny_video.safetensors"
    Sam3(model, tracker=heads, memory=memory).save(path)
    return path


def _track_args(*argv):
    parser = argparse.ArgumentParser()
    add_track_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["track", *argv])


def test_track_command(tmp_path, tiny_video_checkpoint, frames):
    from opensam3.data.rle import decode
    from opensam3.data.video_io import VideoWriter, open_video

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=5) as writer:
        for frame in frames[:3]:
            writer.write(frame)
    out = tmp_path / "out"
    args = _track_args(str(clip), "--text", TEXT, "--point", "60,110", "--frame", "1", "--obj-id", "7",
                       "--checkpoint", str(tiny_video_checkpoint), "--out", str(out), "--quiet", "--reidentify")
    assert args.reidentify is True and _track_args(str(clip), "--text", TEXT).reidentify is None
    assert _track_args(str(clip), "--text", TEXT, "--no-reidentify").reidentify is False
    assert args.func is run_track and run_track(args) == 0
    records = [json.loads((out / "frames" / f"{t:05d}.json").read_text()) for t in range(3)]
    assert [r["frame_index"] for r in records] == [0, 1, 2]
    for record in records:
        assert record["height"] == SIZE and record["width"] == SIZE and record["text"] == TEXT
        ids = [o["obj_id"] for o in record["objects"]]
        assert 7 in ids and len(ids) >= 2
        for obj in record["objects"]:
            assert decode(obj["segmentation"]).sum() == obj["area"] > 0
    assert len(open_video(out / "overlay.mp4")) == 3


def test_track_command_errors(tmp_path, tiny_video_checkpoint):
    with pytest.raises(InvalidInputError, match="give --text"):
        run_track(_track_args(str(tmp_path), "--out", str(tmp_path / "o")))
    with pytest.raises(InvalidInputError, match="video not found"):
        run_track(_track_args(str(tmp_path / "missing.mp4"), "--text", TEXT))
    with pytest.raises(InvalidInputError, match="--frame is given 2 times for 1 --point"):
        run_track(_track_args(str(tmp_path), "--point", "1,2", "--frame", "0", "--frame", "1"))


def test_build_sam3_video_predictor_and_box_prompt(tiny_video_checkpoint, frames):
    from opensam3.predictor.video_session import (
        Sam3VideoPredictor,
        build_sam3_video_predictor,
    )

    predictor = build_sam3_video_predictor(checkpoint_path=tiny_video_checkpoint, device="cpu")
    assert isinstance(predictor, Sam3VideoPredictor)
    assert predictor.model.config == ConceptVideoConfig()
    sid = predictor.handle_request({"type": "start_session", "resource_path": frames[:2]})["session_id"]
    # an exemplar box alone (official "visual" prompt): detections on that frame, tracked after
    out = predictor.handle_request({"type": "add_prompt", "session_id": sid, "frame_index": 0,
                                    "bounding_boxes": [[0.18, 0.36, 0.27, 0.27]], "bounding_box_labels": [1]})
    assert out["frame_index"] == 0 and out["outputs"]["out_binary_masks"].shape[1:] == (SIZE, SIZE)
    items = list(predictor.handle_stream_request({"type": "propagate_in_video", "session_id": sid}))
    assert [item["frame_index"] for item in items] == [0, 1]
    predictor.handle_request({"type": "close_session", "session_id": sid})
    # the official ablation switch
    plain = build_sam3_video_predictor(checkpoint_path=tiny_video_checkpoint, apply_temporal_disambiguation=False)
    assert plain.model.config == ConceptVideoConfig.without_heuristics()
    assert plain.model.tracker.multiplex  # objects share tracker passes by default
    per_object = build_sam3_video_predictor(checkpoint_path=tiny_video_checkpoint, multiplex=False)
    assert per_object.model.tracker.objects_per_pass == 1
