"""Parity of concept video tracking (the official ``Sam3VideoPredictor`` protocol over
``Sam3VideoInferenceWithInstanceInteractivity``) at a tiny configuration: a text prompt on frame
2, propagation both ways, clicks adding an object and refining a detected one, partial
re-propagation, removing an object and fetching stored results; and in a second session an
exemplar box alone. Plus the heuristics (NMS, association, hot-start, occlusion suppression,
output post-processing) on synthetic inputs.

Fixture: tests/fixtures/modules/video_concept.safetensors, made by
tools/parity/make_video_concept_fixture.py (its docstring lists the scenario and the weight
overrides). Weights and frames are rebuilt here from the same seeds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_video_tracker_parity import make_frames, unpack

from opensam3.config import TINY
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker import (
    TrackerHeads,
    TrackerHeadsConfig,
    TrackerMemory,
    TrackerMemoryConfig,
)
from opensam3.predictor.video_concept_prompts import ConceptVideoPredictor
from opensam3.predictor.video_concept_rules import (
    ConceptVideoConfig,
    TrackMetadata,
    associate,
    frame_outputs,
    process_hotstart,
    suppress_by_recent_occlusion,
)
from opensam3.ops.masks import nms_keep
from opensam3.predictor.video_session import Sam3VideoPredictor
from opensam3.predictor.video_tracker import VideoTracker
from opensam3.seeded import apply_weight_overrides, seed_module

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "video_concept.safetensors"
# Binary masks: the pooled IoU of all masks must reach 0.99 and no mask may differ by more than
# MAX_FLIPPED pixels. Per-mask IoU alone is ill-posed on tiny masks: the logits agree to ~1e-7,
# but pixels whose logit is ~0 flip with the CPU's kernels (measured: AVX2, one pixel, worst
# per-mask IoU 0.99687; AMD AVX-512, at most 2 pixels per mask, worst per-mask IoU 0.978 on a
# 46-pixel mask, pooled IoU 0.99998; Intel AVX-512 with AMX, against the fixture made on the AMD
# machine, at most 5 pixels, worst per-mask IoU 0.978, pooled 0.99997, probabilities 1.2e-7).
MIN_IOU = 0.99
MAX_FLIPPED = 6
PROB_TOL = 1e-3  # measured: 0
BOX_TOL = 1e-2  # measured: 0 (normalised; one pixel is 0.0045 here)


def build_tiny_concept_predictor(meta: dict) -> Sam3VideoPredictor:
    torch.set_num_threads(1)
    config = json.loads(meta["config"])
    model_config = TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))
    assert model_config.image_size == config["image_size"]
    image_model = Sam3ImageModel(model_config).eval()
    seed_module(image_model)
    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(model_config)).eval()
    seed_module(heads, prefix="tracker.")
    memory = TrackerMemory(TrackerMemoryConfig(image_size=config["image_size"],
                                               attention_layers=config["attention_layers"],
                                               attention_ffn=config["attention_ffn"],
                                               use_memory_selection=True)).eval()
    seed_module(memory, prefix="tracker.")
    apply_weight_overrides({"detector.": image_model, "tracker.": heads}, meta["weight_override"])
    return Sam3VideoPredictor(ConceptVideoPredictor(VideoTracker(image_model, heads, memory)))


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118 (safe_open is not iterable)


@pytest.fixture(scope="module")
def replay(fixture):
    _, meta = fixture
    config = json.loads(meta["config"])
    frames = make_frames(config["num_frames"], config["height"], config["width"])
    assert str(int(frames.astype(np.int64).sum())) == meta["frames_sum"]
    predictor = build_tiny_concept_predictor(meta)
    results, sessions = {}, {}
    for step in json.loads(meta["steps"]):
        if step["session"] not in sessions:
            sessions[step["session"]] = predictor.handle_request({"type": "start_session",
                                                                  "resource_path": frames})["session_id"]
        request = {**step["request"], "session_id": sessions[step["session"]]}
        if request["type"] == "propagate_in_video":
            results[step["name"]] = [(item["frame_index"], item["outputs"])
                                     for item in predictor.handle_stream_request(request)]
        else:
            out = predictor.handle_request(request)
            results[step["name"]] = [(out["frame_index"], out["outputs"])] if "outputs" in out else []
    for sid in sessions.values():
        predictor.handle_request({"type": "close_session", "session_id": sid})
    return results


def test_same_frames_and_object_ids(fixture, replay):
    _, meta = fixture
    for step in json.loads(meta["steps"]):
        ours = [(t, [int(i) for i in out["out_obj_ids"]]) for t, out in replay[step["name"]]]
        theirs = [(f["frame"], f["obj_ids"]) for f in step["frames"]]
        assert ours == theirs, step["name"]


def test_masks_probs_boxes(fixture, replay):
    tensors, meta = fixture
    config = json.loads(meta["config"])
    height, width = config["height"], config["width"]
    worst_iou, worst_prob, worst_flipped, overlap, union_total = 1.0, 0.0, 0, 0, 0
    for step in json.loads(meta["steps"]):
        for t, out in replay[step["name"]]:
            key = f"{step['name']}.{t}"
            probs = tensors[f"{key}.probs"]
            assert out["out_probs"].dtype == np.float32 and out["out_binary_masks"].dtype == bool
            assert out["out_binary_masks"].shape[1:] == (height, width)
            if probs.numel() == 0:
                assert len(out["out_obj_ids"]) == 0
                continue
            prob_err = float((torch.from_numpy(out["out_probs"]) - probs).abs().max())
            worst_prob = max(worst_prob, prob_err)
            theirs = unpack(tensors[f"{key}.masks"], height, width)
            ours = torch.from_numpy(out["out_binary_masks"])
            for a, b in zip(ours, theirs):
                union = (a | b).sum().item()
                overlap, union_total = overlap + (a & b).sum().item(), union_total + union
                worst_iou = min(worst_iou, 1.0 if union == 0 else (a & b).sum().item() / union)
                worst_flipped = max(worst_flipped, (a ^ b).sum().item())
            box_err = float((torch.from_numpy(out["out_boxes_xywh"]) - tensors[f"{key}.boxes_xywh"]).abs().max())
            assert box_err <= BOX_TOL, (key, box_err)
    pooled = overlap / max(union_total, 1)
    print(f"pooled mask IoU {pooled:.5f}, worst mask IoU {worst_iou:.5f} ({worst_flipped} pixels flipped), "
          f"worst prob error {worst_prob:.2e}")
    assert pooled >= MIN_IOU and worst_flipped <= MAX_FLIPPED
    assert worst_prob <= PROB_TOL


# ---- the heuristics on synthetic inputs (the clip has one detection per frame) ----

def test_rules_nms_and_association(fixture):
    tensors, meta = fixture
    rules = json.loads(meta["rules"])
    for case, expected in enumerate(rules["nms"]):
        keep = nms_keep(tensors[f"rules.nms.{case}.probs"], tensors[f"rules.nms.{case}.masks"], 0.5, 0.1)
        assert keep.tolist() == expected, case
    config = ConceptVideoConfig()
    for case, expected in enumerate(rules["assoc"]):
        trk = tensors[f"rules.assoc.{case}.trk"]
        out = associate(tensors[f"rules.assoc.{case}.det"], tensors[f"rules.assoc.{case}.scores"].numpy(), trk,
                        np.arange(10, 10 + trk.shape[0], dtype=np.int64), config)
        assert out.new_det.tolist() == expected["new_det"] and out.unmatched_trk.tolist() == expected["unmatched"]
        assert {str(k): v.tolist() for k, v in out.det_to_trk.items()} == expected["det_to_trk"]
        assert {str(k): v for k, v in out.trk_to_det.items()} == expected["trk_to_det"]
        assert out.empty_trk.tolist() == expected["empty"]


def test_rules_hotstart(fixture):
    tensors, meta = fixture
    config = ConceptVideoConfig()
    records = json.loads(meta["rules"])["hotstart"]
    for reverse in (False, True):
        meta_state = TrackMetadata()
        trk_ids = np.arange(6, dtype=np.int64)
        empty = associate(torch.zeros(0, 16, 16), np.zeros(0, np.float32), torch.zeros(0, 16, 16), trk_ids[:0],
                          config)
        process_hotstart(meta_state, 19 if reverse else 0, reverse, empty, trk_ids, config)
        for record in [r for r in records if r["reverse"] == reverse]:
            prefix = f"rules.hotstart.{int(reverse)}.{record['step']}"
            assoc = associate(tensors[f"{prefix}.det"], tensors[f"{prefix}.scores"].numpy(), tensors[f"{prefix}.trk"],
                              trk_ids, config)
            new_ids = 100 + 10 * record["step"] + np.arange(len(assoc.new_det), dtype=np.int64)
            removed = process_hotstart(meta_state, record["frame"], reverse, assoc, new_ids, config)
            assert sorted(int(i) for i in removed) == record["removed"], record
            assert {str(k): int(v) for k, v in meta_state.keep_alive.items()} == record["keep_alive"], record


def test_rules_occlusion_and_outputs(fixture):
    tensors, meta = fixture
    rules = json.loads(meta["rules"])
    meta_state = TrackMetadata()
    obj_ids = np.arange(5, dtype=np.int64)
    for step, expected in enumerate(rules["occlusion"]):
        masks = tensors[f"rules.occlusion.{step}.masks"].clone()
        last = suppress_by_recent_occlusion(masks, obj_ids, meta_state, step, {4} if step == 3 else set(), False, 0.7)
        assert torch.equal(masks, tensors[f"rules.occlusion.{step}.out"]), step
        assert {str(k): int(v.item()) for k, v in last.items()} == expected, step
        meta_state.last_occluded = last
    for case, expected in enumerate(rules["post"]):
        masks = tensors[f"rules.post.{case}.masks_in"]
        ids = expected["ids"]
        out = frame_outputs({i: masks[k:k + 1] for k, i in enumerate(ids)},
                            {int(k): v for k, v in expected["scores"].items()},
                            {int(k): v for k, v in expected["tracker_scores"].items()}, 20, 30, expected["hidden"])
        assert out["out_obj_ids"].tolist() == expected["out_obj_ids"]
        assert np.array_equal(out["out_binary_masks"], tensors[f"rules.post.{case}.masks"].numpy())
        assert np.allclose(out["out_boxes_xywh"], tensors[f"rules.post.{case}.boxes"].numpy(), atol=1e-7)
        assert np.allclose(out["out_probs"], tensors[f"rules.post.{case}.probs"].numpy(), atol=1e-7)
