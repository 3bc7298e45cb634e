"""The second look at small objects (predictor/zoom.py): window geometry, low-res resampling,
and the predictor's use of them (window encoded once, prompts moved into it, results pasted)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from opensam3.config import EMBEDDED, SAM3, SAM3_1, TINY
from opensam3.errors import InvalidInputError
from opensam3.model.sam3 import ImageFeatures
from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig
from opensam3.predictor.image import ImageState
from opensam3.predictor.interactive import InteractivePredictor
from opensam3.predictor.zoom import BACKGROUND_LOGIT, ZoomRule, ZoomWindow, crop_low_res, paste, to_low_res
from opensam3.seeded import seed_module

CONFIG = TrackerHeadsConfig.from_model_config(TINY.replace(vision=dataclasses.replace(TINY.vision, tracker_neck=True)))


def _mask(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[rows, cols] = True
    return mask


def test_window_frames_a_small_object_and_its_prompts():
    rule = ZoomRule(3.5)
    mask = _mask(200, 300, slice(50, 70), slice(100, 110))  # 10 x 20 px object
    window = rule.window(mask, np.array([[105.0, 60.0]]))
    assert window.side == round(max(20 * 3.5, 0.43 * 200))  # 86: the minimum share of the image wins
    rows, cols = window.slices()
    assert mask[rows, cols].sum() == mask.sum()
    # centred on the object, kept inside the image
    assert abs(window.left + window.side / 2 - 105) <= 1 and abs(window.top + window.side / 2 - 60) <= 1
    corner = rule.window(_mask(200, 300, slice(0, 30), slice(0, 30)), np.zeros((0, 2)))
    assert (corner.left, corner.top, corner.side) == (0, 0, 105)
    # a far prompt widens the window (it must stay inside)
    wide = rule.window(mask, np.array([[105.0, 60.0], [130.0, 60.0]]))
    assert wide.side == round(30 * 3.5) and wide.left <= 100 and wide.left + wide.side >= 130
    assert rule.window(mask, np.array([[105.0, 60.0], [160.0, 60.0]])) is None  # 60 px apart: not small


def test_no_window_for_large_or_empty_masks():
    rule = ZoomRule(3.5)
    assert rule.window(_mask(200, 300, slice(50, 110), slice(100, 160)), np.zeros((0, 2))) is None  # 60 px
    assert rule.window(np.zeros((200, 300), bool), np.array([[10.0, 10.0]])) is None


def test_low_res_crop_paste_and_shrink():
    low = 16
    # logits that equal the x pixel coordinate of each low-res cell centre on a 320 x 160 image
    xs = (torch.arange(low) + 0.5) / low * 320
    logits = xs.expand(low, low)[None].clone()
    window = ZoomWindow(left=80, top=40, side=80)
    cropped = crop_low_res(logits, window, (160, 320))
    expected = 80 + (torch.arange(low) + 0.5) / low * 80
    assert cropped.shape == (1, low, low)
    assert torch.allclose(cropped[0, 3], expected, atol=1e-3)
    assert torch.allclose(cropped[0, :, 5], cropped[0, 0, 5].expand(low))  # constant along y
    pasted = paste(torch.ones(2, 80, 80), window, (160, 320))
    assert pasted.shape == (2, 160, 320)
    assert (pasted[:, 40:120, 80:160] == 1).all() and pasted.sum() == 2 * 80 * 80 + BACKGROUND_LOGIT * 2 * (160 * 320 - 6400)
    shrunk = to_low_res(pasted, low)
    assert shrunk.shape == (2, low, low) and shrunk.max() <= 1 + 1e-5 and shrunk.min() >= BACKGROUND_LOGIT - 1e-5
    assert torch.allclose(shrunk[:, 5:11, 5:7], torch.ones(1)) and torch.allclose(shrunk[:, :, 9:], torch.tensor(BACKGROUND_LOGIT))


def _random_state(height: int, width: int, seed: int) -> ImageState:
    g = torch.Generator().manual_seed(seed)
    e = CONFIG.embedding_size
    levels = [torch.randn(1, 256, 4 * e, 4 * e, generator=g), torch.randn(1, 256, 2 * e, 2 * e, generator=g),
              torch.randn(1, 256, e, e, generator=g)]
    features = ImageFeatures(fpn=levels, fpn_pos=levels, tracker_fpn=levels, tracker_pos=levels)
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return ImageState(features, image)


class _CountingEncoder:
    def __init__(self):
        self.images: list[np.ndarray] = []

    def __call__(self, image: np.ndarray) -> ImageState:
        self.images.append(image)
        return _random_state(*image.shape[:2], seed=len(self.images))


def test_predictor_asks_the_window_and_pastes_back(monkeypatch):
    heads = TrackerHeads(CONFIG)
    seed_module(heads, prefix="tracker.")
    encoder = _CountingEncoder()
    predictor = InteractivePredictor(heads, zoom=ZoomRule(3.5), encode=encoder)
    state = _random_state(120, 160, seed=0)
    # random heads give arbitrary masks: fix the first look's answer to a small blob
    window = ZoomWindow(left=40, top=30, side=60)
    monkeypatch.setattr(ZoomRule, "window", lambda self, mask, xy: window)
    out = predictor.predict(state, points=[[70, 60]], point_labels=[1])
    assert len(encoder.images) == 1 and np.array_equal(encoder.images[0], state.image[30:90, 40:100])
    assert out.masks.shape == (3, 120, 160)
    outside = torch.ones(120, 160, dtype=torch.bool)
    outside[30:90, 40:100] = False
    assert not out.masks[:, outside].any()
    # the window's own answer: the click moved into the window's pixels
    window_state = predictor._window[2]
    direct = InteractivePredictor(heads).predict(window_state, points=[[30, 30]], point_labels=[1], return_logits=True)
    logits = predictor.predict(state, points=[[70, 60]], point_labels=[1], return_logits=True)
    assert torch.allclose(logits.masks[:, 30:90, 40:100], direct.masks, atol=1e-5)
    # refinement on the same window reuses its encoding; the low-res logits round-trip
    refined = predictor.predict(state, points=[[70, 60], [75, 62]], point_labels=[1, 0],
                                mask_input=out.low_res_logits[:1], multimask_output=False)
    assert refined.masks.shape == (1, 120, 160) and len(encoder.images) == 1
    assert torch.equal(predictor.predict(state, points=[[70, 60]], point_labels=[1], zoom=False).masks,
                       InteractivePredictor(heads).predict(state, points=[[70, 60]], point_labels=[1]).masks)


def test_zoom_switches_and_errors():
    heads = TrackerHeads(CONFIG)
    seed_module(heads, prefix="tracker.")
    state = _random_state(120, 160, seed=0)
    with pytest.raises(InvalidInputError, match="encode"):
        InteractivePredictor(heads).predict(state, points=[[70, 60]], point_labels=[1], zoom=True)
    with pytest.raises(ValueError, match="encode"):
        InteractivePredictor(heads, zoom=ZoomRule(3.5))
    # official configs keep the official behaviour; the embedded model zooms
    assert SAM3.interactive_zoom is None and SAM3_1.interactive_zoom is None and TINY.interactive_zoom is None
    assert EMBEDDED.interactive_zoom == 3.0
