"""Parity of the interactive video tracker with the official ``Sam3TrackerPredictor`` at a tiny
configuration, end to end (frames -> ViT trunk + tracker neck -> prompts -> propagation).

Fixture: tests/fixtures/modules/video_tracker.safetensors, made by
tools/parity/make_video_tracker_fixture.py (its docstring lists the scenario). Weights and frames
are rebuilt here from the same seeds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from opensam3.config import TINY
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig, TrackerMemory, TrackerMemoryConfig
from opensam3.predictor.video_state import COND
from opensam3.predictor.video_tracker import VideoTracker
from opensam3.seeded import apply_weight_overrides, seed_module

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "video_tracker.safetensors"
LOGIT_TOL = 1e-4  # measured: 7.6e-6 (object scores), 8e-7 (mask logits)
MIN_IOU = 0.99


def make_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """The generator's clip: smooth random colour fields with two moving squares."""
    g = torch.Generator().manual_seed(7)
    coarse = torch.randint(0, 256, (num_frames, 3, 14, 14), generator=g).float()
    frames = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    for t in range(num_frames):
        frames[t, :, 80:140, 40 + 6 * t:100 + 6 * t] = torch.tensor([250.0, 240.0, 30.0])[:, None, None]
        frames[t, :, 60 + 4 * t:120 + 4 * t, 140:190] = torch.tensor([20.0, 60.0, 245.0])[:, None, None]
    return frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def unpack(bits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    flat = np.unpackbits(bits.numpy(), axis=1)[:, : height * width]
    return torch.from_numpy(flat.reshape(-1, height, width).astype(bool))


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def build_tiny_tracker(meta: dict, **options) -> VideoTracker:
    torch.set_num_threads(1)
    config = json.loads(meta["config"])
    model_config = TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))
    assert model_config.image_size == config["image_size"]
    image_model = Sam3ImageModel(model_config).eval()
    seed_module(image_model.backbone.vision_backbone, prefix="backbone.vision_backbone.")
    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(model_config)).eval()
    seed_module(heads, prefix="tracker.")
    apply_weight_overrides({"": heads}, meta["weight_override"])
    memory = TrackerMemory(TrackerMemoryConfig(image_size=config["image_size"],
                                               attention_layers=config["attention_layers"],
                                               attention_ffn=config["attention_ffn"],
                                               use_memory_selection=config["use_memory_selection"])).eval()
    seed_module(memory, prefix="tracker.")
    return VideoTracker(image_model, heads, memory, **options)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def replay_steps(tracker: VideoTracker, state, steps: list[dict], tensors: dict, height: int, width: int
                 ) -> tuple[dict, dict]:
    """Run the generator's scenario on ``state``: our outputs keyed like the fixture, and per step
    what it reported (object ids, frames), to compare with :func:`expected_report`. Also used by
    tools/device_check.py on other devices."""
    ours, seen = {}, {}
    for step in steps:
        name, kind = step["name"], step["kind"]
        if kind in ("points", "box", "mask"):
            if kind == "points":
                out = tracker.add_new_points_or_box(state, step["frame"], step["obj_id"], points=step["points"],
                                                    labels=step["labels"], clear_old_points=step["clear_old_points"])
            elif kind == "box":
                out = tracker.add_new_points_or_box(state, step["frame"], step["obj_id"], box=step["box"])
            else:
                mask = unpack(tensors[f"{name}.mask_input"], height, width)[0]
                out = tracker.add_new_mask(state, step["frame"], step["obj_id"], mask)
            seen[name] = [int(i) for i in out.obj_ids]
            temp = state.temp[state.obj_index(step["obj_id"])][COND][step["frame"]]
            if temp.pred_masks is not None:
                ours[f"{name}.low_res"] = temp.pred_masks
            ours[f"{name}.video_masks"] = out.masks
        elif kind == "propagate":
            results = list(tracker.propagate_in_video(state, step["start"], step["max_frames"], step["reverse"]))
            seen[name] = [{"frame": int(r.frame_idx), "obj_ids": [int(i) for i in r.obj_ids]} for r in results]
            for r in results:
                ours[f"{name}.{r.frame_idx}.low_res"] = r.low_res_logits[:, None]
                ours[f"{name}.{r.frame_idx}.scores"] = r.object_score_logits[:, None]
                ours[f"{name}.{r.frame_idx}.video_masks"] = r.masks
                if f"{name}.{r.frame_idx}.video_masks_nonoverlap" in tensors:
                    # the same frame with the non-overlap output option
                    tracker.non_overlap_masks = True
                    masks = tracker._video_res(state, r.low_res_logits[:, None].clone())
                    tracker.non_overlap_masks = False
                    ours[f"{name}.{r.frame_idx}.video_masks_nonoverlap"] = masks[:, 0] > 0
        elif kind == "remove":
            obj_ids, updated = tracker.remove_object(state, step["obj_id"])
            seen[name] = {"obj_ids": [int(i) for i in obj_ids], "updated_frames": [r.frame_idx for r in updated]}
            for r in updated:
                ours[f"remove.{r.frame_idx}.video_masks"] = r.masks
    return ours, seen


def expected_report(step: dict):
    """What the official run reported for ``step``, in the form :func:`replay_steps` records."""
    if step["kind"] == "propagate":
        return step["frames"]
    if step["kind"] == "remove":
        return {"obj_ids": step["obj_ids"], "updated_frames": step["updated_frames"]}
    return step["obj_ids"]


@pytest.fixture(scope="module")
def replay(fixture):
    """Run the generator's scenario; collect our outputs keyed like the fixture."""
    tensors, meta = fixture
    config = json.loads(meta["config"])
    steps = json.loads(meta["steps"])
    height, width = config["height"], config["width"]
    frames = make_frames(config["num_frames"], height, width)
    assert str(int(frames.astype(np.int64).sum())) == meta["frames_sum"]
    tracker = build_tiny_tracker(meta)
    ours, seen = replay_steps(tracker, tracker.init_state(frames), steps, tensors, height, width)
    return ours, seen, steps


def test_object_ids_and_frames(replay):
    _, seen, steps = replay
    for step in steps:
        assert seen[step["name"]] == expected_report(step), step["name"]


def test_logits_match(fixture, replay):
    tensors, _ = fixture
    ours = replay[0]
    errors = {}
    for key, theirs in tensors.items():
        if key.endswith((".low_res", ".scores")):
            assert key in ours, key
            assert tuple(ours[key].shape) == tuple(theirs.shape), key
            errors[key] = (ours[key].float() - theirs.float()).abs().max().item()
    assert len(errors) > 40
    worst = max(errors, key=errors.get)
    assert errors[worst] <= LOGIT_TOL, (worst, errors[worst])


def test_video_masks_match(fixture, replay):
    tensors, meta = fixture
    config = json.loads(meta["config"])
    ours = replay[0]
    ious = {}
    for key, bits in tensors.items():
        if ".video_masks" in key:
            theirs = unpack(bits, config["height"], config["width"])
            mine = ours[key]
            assert tuple(mine.shape) == tuple(theirs.shape), key
            for i in range(theirs.shape[0]):
                ious[f"{key}[{i}]"] = iou(mine[i], theirs[i])
    assert len(ious) > 40
    worst = min(ious, key=ious.get)
    assert ious[worst] >= MIN_IOU, (worst, ious[worst])
