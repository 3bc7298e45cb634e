"""End-to-end parity with the official code on the tiny configuration (seeded weights).

Fixture: tests/fixtures/tiny_reference.safetensors, made by the official sam3==0.1.4 code
(Sam3Image + Sam3Processor, CPU fp32). Every tensor in it is compared.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3 import TINY, Sam3Processor, build_model
from opensam3.seeded import seeded_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_reference.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        meta = handle.metadata()
    return tensors, meta


@pytest.fixture(scope="module")
def model(reference):
    _, meta = reference
    shapes = json.loads(meta["state_dict_shapes"])
    return build_model(TINY, seeded_state_dict(shapes))


@pytest.fixture(scope="module")
def processor_runs(model, reference):
    tensors, meta = reference
    processor = Sam3Processor(model, resolution=TINY.image_size, confidence_threshold=0.0)
    image = tensors["input.image_uint8_hwc"].numpy()
    state = processor.set_image(image)
    text_state = dict(processor.set_text_prompt(meta["text_prompt"], state))
    text_raw = _raw(model, state, [])
    boxes = json.loads(meta["box_prompts"])
    for box in boxes[:-1]:
        processor.add_geometric_prompt(box["box_cxcywh_norm"], box["label"], state)
    box_state = dict(processor.add_geometric_prompt(boxes[-1]["box_cxcywh_norm"], boxes[-1]["label"], state))
    box_raw = _raw(model, state, boxes)
    return state, text_state, text_raw, box_state, box_raw


def _raw(model, state, boxes):
    text = model.encode_text([state["text_prompt"]])
    box_tensor = torch.tensor([[b["box_cxcywh_norm"] for b in boxes]]).reshape(1, len(boxes), 4)
    labels = torch.tensor([[b["label"] for b in boxes]], dtype=torch.bool).reshape(1, len(boxes))
    with torch.inference_mode():
        return model.ground(state["image_state"].features, text, box_tensor, labels, torch.zeros_like(labels))


def _close(ours, theirs, name, tol=TOL):
    assert ours.shape == theirs.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    err = (ours.float() - theirs.float()).abs().max().item()
    assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


def test_state_dict_matches_official_layout(model, reference):
    _, meta = reference
    shapes = json.loads(meta["state_dict_shapes"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == shapes


def test_backbone_features(processor_runs, reference):
    tensors, _ = reference
    features = processor_runs[0]["image_state"].features
    _close(features.fpn[-1], tensors["out.backbone_fpn.last"], "backbone_fpn[-1]")
    _close(features.fpn_pos[-1], tensors["out.vision_pos_enc.last"], "vision_pos_enc[-1]")


def test_text_features(model, reference):
    tensors, meta = reference
    text = model.encode_text([meta["text_prompt"]])
    _close(text.language_features, tensors["out.text.language_features"], "language_features")
    assert torch.equal(text.language_mask, tensors["out.text.language_mask"])


def test_text_prompt_raw_outputs(processor_runs, reference):
    tensors, _ = reference
    raw = processor_runs[2]
    _close(raw.logits[..., None], tensors["out.text.pred_logits"], "pred_logits")
    _close(raw.boxes, tensors["out.text.pred_boxes"], "pred_boxes")
    _close(raw.masks, tensors["out.text.pred_masks"], "pred_masks")
    _close(raw.presence_logits[:, None], tensors["out.text.presence_logit_dec"], "presence_logit_dec")
    _close(raw.semantic_logits, tensors["out.text.semantic_seg"], "semantic_seg")


def test_text_prompt_postprocessed(processor_runs, reference):
    tensors, _ = reference
    out = processor_runs[1]
    _close(out["scores"], tensors["out.text.scores"], "scores")
    _close(out["boxes"], tensors["out.text.boxes_xyxy"], "boxes_xyxy")
    # the fixture stores mask probabilities in fp16: compare at fp16 precision
    _close(out["masks_logits"].half(), tensors["out.text.masks_prob_fp16"], "mask probabilities", tol=1e-3)


def test_text_and_exemplar_boxes(processor_runs, reference):
    tensors, _ = reference
    raw, out = processor_runs[4], processor_runs[3]
    _close(raw.logits[..., None], tensors["out.boxes.pred_logits"], "pred_logits")
    _close(raw.boxes, tensors["out.boxes.pred_boxes"], "pred_boxes")
    _close(raw.masks, tensors["out.boxes.pred_masks"], "pred_masks")
    _close(raw.presence_logits[:, None], tensors["out.boxes.presence_logit_dec"], "presence_logit_dec")
    _close(out["scores"], tensors["out.boxes.scores"], "scores")
