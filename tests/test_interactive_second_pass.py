"""Two inference options of the click / box predictor that the official code does not have:
``feedback`` (each candidate decoded again with its own logits as the mask input) and
``box_clip`` (a box prompt bounds its mask)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opensam3.config import EMBEDDED, SAM3, SAM3_1, TINY
from opensam3.model.tracker import TrackerHeads
from opensam3.predictor.interactive import InteractivePredictor
from opensam3.predictor.zoom import BACKGROUND_LOGIT, ZoomRule, ZoomWindow
from opensam3.seeded import seed_module

from test_zoom import CONFIG, _CountingEncoder, _random_state


@pytest.fixture(scope="module")
def heads():
    heads = TrackerHeads(CONFIG)
    seed_module(heads, prefix="tracker.")
    return heads


def test_feedback_decodes_each_candidate_again_with_its_own_logits(heads):
    state = _random_state(120, 160, seed=0)
    plain, fed = InteractivePredictor(heads), InteractivePredictor(heads, feedback=True)
    click = dict(points=[[70, 60]], point_labels=[1])
    first = plain.predict(state, **click)
    out = fed.predict(state, return_logits=True, **click)
    assert out.masks.shape == (3, 120, 160) and out.iou_scores.shape == (3,)
    for k in range(3):
        again = plain.predict(state, mask_input=first.low_res_logits[k:k + 1], multimask_output=False,
                              return_logits=True, **click)
        assert torch.allclose(out.masks[k], again.masks[0], atol=1e-5)
        assert torch.allclose(out.iou_scores[k], again.iou_scores[0], atol=1e-6)
        assert torch.allclose(out.low_res_logits[k], again.low_res_logits[0], atol=1e-5)
    assert not torch.allclose(out.masks, plain.predict(state, return_logits=True, **click).masks)
    # a given mask_input, or a box, is answered as asked
    given = dict(mask_input=first.low_res_logits[:1], multimask_output=False, return_logits=True, **click)
    assert torch.equal(fed.predict(state, **given).masks, plain.predict(state, **given).masks)
    boxed = dict(box=[40, 30, 100, 90], return_logits=True, **click)
    assert torch.equal(fed.predict(state, **boxed).masks, plain.predict(state, **boxed).masks)


def test_feedback_runs_inside_the_zoom_window(heads, monkeypatch):
    state = _random_state(120, 160, seed=0)
    encoder = _CountingEncoder()
    predictor = InteractivePredictor(heads, zoom=ZoomRule(3.5), encode=encoder, feedback=True)
    monkeypatch.setattr(ZoomRule, "window", lambda self, mask, xy: ZoomWindow(left=40, top=30, side=60))
    logits = predictor.predict(state, points=[[70, 60]], point_labels=[1], return_logits=True)
    assert len(encoder.images) == 1
    direct = InteractivePredictor(heads, feedback=True).predict(predictor._window[2], points=[[30, 30]],
                                                                point_labels=[1], return_logits=True)
    assert torch.allclose(logits.masks[:, 30:90, 40:100], direct.masks, atol=1e-5)
    assert torch.allclose(logits.iou_scores, direct.iou_scores)


def test_box_clip_keeps_the_mask_inside_the_box(heads):
    state = _random_state(120, 160, seed=1)
    box = [10.2, 20.0, 50.7, 60.5]
    plain = InteractivePredictor(heads).predict(state, box=box, multimask_output=True, return_logits=True)
    clipped = InteractivePredictor(heads, box_clip=True).predict(state, box=box, multimask_output=True,
                                                                 return_logits=True)
    # pixel centres (c + 0.5) inside the box: columns 10..50, rows 20..60
    inside = torch.zeros(120, 160, dtype=torch.bool)
    inside[20:61, 10:51] = True
    assert torch.equal(clipped.masks[:, inside], plain.masks[:, inside])
    assert (clipped.masks[:, ~inside] == BACKGROUND_LOGIT).all()
    assert (plain.masks[:, ~inside] > 0).any()  # the random heads do spill out of the box
    assert torch.equal(clipped.iou_scores, plain.iou_scores)
    # clicks alone are not bounded
    click = dict(points=[[70, 60]], point_labels=[1], return_logits=True)
    assert torch.equal(InteractivePredictor(heads, box_clip=True).predict(state, **click).masks,
                       InteractivePredictor(heads).predict(state, **click).masks)


def test_official_configs_keep_the_official_answers():
    for config in (SAM3, SAM3_1, TINY):
        assert not config.interactive_feedback and not config.interactive_box_clip
    assert EMBEDDED.interactive_feedback and EMBEDDED.interactive_box_clip


def test_box_clip_can_be_switched_per_call_and_spares_detection_boxes(heads):
    state = _random_state(120, 160, seed=1)
    box = [10.2, 20.0, 50.7, 60.5]
    clipping = InteractivePredictor(heads, box_clip=True)
    plain = InteractivePredictor(heads).predict(state, box=box, multimask_output=False)
    assert torch.equal(clipping.predict(state, box=box, multimask_output=False, box_clip=False).masks, plain.masks)
    assert not torch.equal(clipping.predict(state, box=box, multimask_output=False).masks, plain.masks)
    assert torch.equal(InteractivePredictor(heads).predict(state, box=box, multimask_output=False, box_clip=True).masks,
                       clipping.predict(state, box=box, multimask_output=False).masks)
    # a detector's box is loose: refined detection masks are not clipped to it
    fallback = torch.zeros(1, 120, 160, dtype=torch.bool)
    refined = clipping.masks_for_boxes(state, torch.tensor([box]), fallback)
    assert torch.equal(refined, plain.masks)
