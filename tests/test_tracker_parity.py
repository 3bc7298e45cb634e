"""Parity of the interactive (point / box / mask prompt) image path with the official
``Sam3Image.predict_inst`` at the tiny configuration.

Fixture: tests/fixtures/modules/tracker.safetensors, made by tools/parity/make_tracker_fixture.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from opensam3.config import TINY
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig, tracker_image_state
from opensam3.model.tracker.heads import IMAGE_PATH_PREFIXES, VIDEO_ONLY_PREFIXES
from opensam3.predictor.image import ConceptPredictor
from opensam3.predictor.interactive import OFFICIAL_MAX_HOLE_AREA, InteractivePredictor
from opensam3.seeded import seed_module

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "tracker.safetensors"
TOLERANCE = 1e-4
TRACKER_PREFIX = "inst_interactive_predictor.model."
TINY_TRACKER = TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True))


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


@pytest.fixture(scope="module")
def setup(fixture):
    tensors, _ = fixture
    torch.manual_seed(0)
    model = Sam3ImageModel(TINY_TRACKER).eval()
    seed_module(model)
    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(TINY_TRACKER))
    seed_module(heads, prefix=TRACKER_PREFIX)
    state = ConceptPredictor(model).set_image(tensors["input.image_uint8_hwc"].numpy())
    # the official code fills holes up to 256 low-res pixels at any size; ours scales that share of
    # the full-size 288 x 288 mask to smaller models, so the tiny model is given the official value
    return state, InteractivePredictor(heads, max_hole_area=OFFICIAL_MAX_HOLE_AREA)


def _err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert tuple(ours.shape) == tuple(theirs.shape), (tuple(ours.shape), tuple(theirs.shape))
    return (ours.float() - theirs.float()).abs().max().item()


def test_state_dict_matches_official_keys(fixture):
    official = json.loads(fixture[1]["tracker_state_dict_shapes"])
    image_path = {k: v for k, v in official.items() if k.startswith(IMAGE_PATH_PREFIXES)}
    video_only = [k for k in official if not k.startswith(IMAGE_PATH_PREFIXES)]
    assert all(k.startswith(VIDEO_ONLY_PREFIXES) for k in video_only), video_only
    ours = {k: list(v.shape) for k, v in TrackerHeads(TrackerHeadsConfig(image_size=336)).state_dict().items()}
    assert ours == image_path
    assert set(tracker_image_state({k: torch.zeros(1) for k in official})) == set(image_path)


def test_tracker_features(setup, fixture):
    state, predictor = setup
    tensors = fixture[0]
    assert _err(state.features.tracker_fpn[-1][:, :16], tensors["out.tracker_fpn.last.ch16"]) <= TOLERANCE
    embedding = predictor.embed(state)
    assert _err(embedding.high_res[1][:, :8], tensors["out.high_res_s1.ch8"]) <= TOLERANCE


def _run(setup, fixture, name):
    state, predictor = setup
    tensors, meta = fixture
    case = dict(json.loads(meta["cases"])[name])
    kwargs = {"multimask_output": case["multimask_output"]}
    if "point_coords" in case:
        kwargs["points"], kwargs["point_labels"] = case["point_coords"], case["point_labels"]
    if "box" in case:
        kwargs["box"] = case["box"]
    if "mask_input" in case:
        best = int(tensors["out.points.ious"].argmax())
        assert case["mask_input"] == f"points.low_res_logits[{best}][None]"
        kwargs["mask_input"] = tensors["out.points.low_res_logits"][best][None]
    return predictor.predict(state, **kwargs)


@pytest.mark.parametrize("name", ["points", "box", "click1", "refine", "mask_only"])
def test_predict_matches_official(setup, fixture, name):
    tensors = fixture[0]
    out = _run(setup, fixture, name)
    assert _err(out.iou_scores, tensors[f"out.{name}.ious"]) <= TOLERANCE
    assert _err(out.low_res_logits, tensors[f"out.{name}.low_res_logits"]) <= TOLERANCE
    reference = tensors[f"out.{name}.masks"].bool()
    assert out.masks.dtype == torch.bool and out.masks.shape == reference.shape
    assert int((out.masks != reference).sum()) == 0


def test_refinement_from_our_own_logits(setup, fixture):
    """Feeding our own best logits back gives the official refinement too (the usual loop)."""
    state, predictor = setup
    tensors, meta = fixture
    first = _run(setup, fixture, "points")
    best = int(first.iou_scores.argmax())
    out = predictor.predict(state, box=[30.0, 20.0, 130.0, 100.0], points=np.array([[70.0, 50.0]]),
                            point_labels=np.array([1]), mask_input=first.low_res_logits[best][None],
                            multimask_output=False)
    assert _err(out.low_res_logits, tensors["out.refine.low_res_logits"]) <= TOLERANCE
