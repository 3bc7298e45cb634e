"""Duplicate suppression of concept detections (mask NMS): off by default for official configs,
taken from the model config otherwise, overridable per predictor."""

import numpy as np
import pytest
import torch
from torch import nn

from opensam3.config import EMBEDDED, SAM3
from opensam3.errors import InvalidInputError
from opensam3.model.sam3 import GroundingOutput
from opensam3.ops.masks import mask_iou, nms_keep
from opensam3.predictor.image import ConceptPredictor, ImageState


class _StubModel(nn.Module):
    """Only what postprocess reads: a config and a parameter (device/dtype)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.zeros(1))


def _square(y0, x0, size, grid=16, width=None):
    logits = torch.full((grid, grid), -8.0)
    logits[y0:y0 + size, x0:x0 + (width or size)] = 8.0
    return logits


def _outputs():
    # query 0 and its near copy 1 (IoU 56/64 = 0.875), a separate object 2, a weak query 3 on object 2
    masks = torch.stack([_square(0, 0, 8), _square(0, 0, 8, width=7), _square(8, 8, 6), _square(8, 8, 6)])
    logits = torch.logit(torch.tensor([0.95, 0.85, 0.75, 0.30]))
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4], [0.7, 0.7, 0.4, 0.4], [0.7, 0.7, 0.4, 0.4]])
    return GroundingOutput(logits=logits[None], boxes=boxes[None], masks=masks[None],
                           presence_logits=torch.tensor([20.0]), semantic_logits=torch.zeros(1, 1, 16, 16))


def _state():
    return ImageState(features=None, image=np.zeros((32, 32, 3), dtype=np.uint8))


def test_official_config_keeps_duplicates_and_embedded_config_drops_them():
    assert SAM3.nms_iou is None  # the official image processor does no NMS
    official = ConceptPredictor(_StubModel(SAM3)).postprocess(_outputs(), 0, _state(), None)
    assert official.scores.tolist() == pytest.approx([0.95, 0.85, 0.75], abs=1e-4)
    assert EMBEDDED.nms_iou is not None and EMBEDDED.nms_iou < 0.875
    embedded = ConceptPredictor(_StubModel(EMBEDDED)).postprocess(_outputs(), 0, _state(), None)
    assert embedded.scores.tolist() == pytest.approx([0.95, 0.75], abs=1e-4)
    assert embedded.masks.shape == (2, 32, 32)
    # the surviving masks are the two objects, upsampled to the image size
    assert embedded.masks[0, :16, :16].all() and embedded.masks[1, 16:28, 16:28].all()


def test_predictor_setting_overrides_the_config():
    kept = ConceptPredictor(_StubModel(SAM3), nms_iou=0.5).postprocess(_outputs(), 0, _state(), None)
    assert len(kept) == 2
    off = ConceptPredictor(_StubModel(EMBEDDED), nms_iou=1.0).postprocess(_outputs(), 0, _state(), None)
    assert len(off) == 3
    loose = ConceptPredictor(_StubModel(SAM3), nms_iou=0.9).postprocess(_outputs(), 0, _state(), None)
    assert len(loose) == 3  # queries 0 and 1 overlap at IoU 0.875, under 0.9
    # the threshold still applies before suppression: query 3 never shows up
    low = ConceptPredictor(_StubModel(SAM3), nms_iou=0.5).postprocess(_outputs(), 0, _state(), 0.2)
    assert low.scores.tolist() == pytest.approx([0.95, 0.75], abs=1e-4)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_nms_iou_is_refused(bad):
    with pytest.raises(InvalidInputError, match="nms_iou"):
        ConceptPredictor(_StubModel(SAM3), nms_iou=bad)


def test_nms_keeps_the_higher_score_whatever_the_order():
    masks = torch.stack([_square(0, 0, 6), _square(0, 0, 8), _square(9, 9, 4)])
    keep = nms_keep(torch.tensor([0.6, 0.9, 0.7]), masks, 0.5, 0.5)
    assert keep.tolist() == [False, True, True]
    assert mask_iou(masks[:1] > 0, masks[1:2] > 0).item() == pytest.approx(36 / 64)
    assert not nms_keep(torch.tensor([0.4, 0.3, 0.2]), masks, 0.5, 0.5).any()


def test_official_processor_entry_point_follows_the_config():
    from opensam3.api import build_model
    from opensam3.compat import Sam3Processor
    from opensam3.config import TINY

    torch.manual_seed(0)
    model = build_model(TINY).eval()
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    counts = {}
    for nms_iou in (None, 0.1):
        model.config = TINY.replace(nms_iou=nms_iou)
        processor = Sam3Processor(model, resolution=TINY.image_size, confidence_threshold=0.0)  # every query passes
        state = processor.set_text_prompt("a thing", processor.set_image(image))
        counts[nms_iou] = len(state["scores"])
        masks = state["masks"][:, 0]
        if nms_iou is not None:
            ious = mask_iou(masks, masks) - torch.eye(len(masks))
            assert float(ious.max()) <= nms_iou
    assert counts[None] == TINY.detector.num_queries and counts[0.1] < counts[None]
