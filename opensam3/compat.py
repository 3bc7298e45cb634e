"""Official-name entry points, so code written for Meta's ``sam3`` package runs by changing one import:

    from opensam3 import build_sam3_image_model, Sam3Processor

Behaviour follows the official ``Sam3Processor``: results live in the ``state`` dict under
``masks`` (N, 1, H, W bool), ``masks_logits`` (N, 1, H, W mask probabilities), ``boxes`` (N, 4
xyxy pixels) and ``scores`` (N,), in query order; boxes are normalised cxcywh.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from .api import build_model, resolve_checkpoint
from .checkpoint import read_checkpoint, split_checkpoint
from .config import SAM3
from .data.image_io import preprocess, to_rgb_array
from .errors import InvalidInputError
from .model.sam3 import Sam3ImageModel
from .model.tracker.config import TrackerHeadsConfig
from .model.tracker.heads import TrackerHeads, load_tracker_heads
from .ops.boxes import cxcywh_to_xyxy
from .ops.masks import keep_detections
from .predictor.image import VISUAL_ONLY_PHRASE, ImageState, _check_phrase, normalize_boxes
from .predictor.interactive import InteractivePredictor


def build_sam3_image_model(checkpoint_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                           eval_mode: bool = True, load_from_HF: bool = True, enable_inst_interactivity: bool = False,
                           bpe_path: str | None = None, dtype: torch.dtype = torch.float32,
                           **_ignored: Any) -> Sam3ImageModel:
    """The official builder's signature. Without ``checkpoint_path`` the official weights are
    fetched from the hub when ``load_from_HF`` is true, else the model is randomly initialised.
    ``enable_inst_interactivity`` adds the point/box path (``model.predict_inst``).
    ``bpe_path`` is accepted for compatibility; the vocabulary ships with opensam3."""
    heads_config = TrackerHeadsConfig.from_model_config(SAM3)
    if checkpoint_path is None and not load_from_HF:
        model = build_model(SAM3, device=device, dtype=dtype)
        heads = TrackerHeads(heads_config).to(device=device, dtype=dtype).eval() if enable_inst_interactivity else None
    else:
        path = resolve_checkpoint(checkpoint_path if checkpoint_path is not None else "facebook/sam3")
        state = split_checkpoint(read_checkpoint(path))
        model = build_model(SAM3, state.detector, device=device, dtype=dtype)
        heads = load_tracker_heads(state.tracker, heads_config, device, dtype) if enable_inst_interactivity else None
    if heads is not None:
        model.inst_interactive_predictor = InteractivePredictor(heads)
    return model.eval() if eval_mode else model.train()


class Sam3Processor:
    """Drop-in for ``sam3.model.sam3_image_processor.Sam3Processor``."""

    def __init__(self, model: Sam3ImageModel, resolution: int = 1008, device: str | torch.device = "cpu",
                 confidence_threshold: float = 0.5):
        if resolution != model.config.image_size:
            raise InvalidInputError(f"this model runs at {model.config.image_size} px, not {resolution}")
        self.model = model
        self.device = torch.device(device)
        self.confidence_threshold = confidence_threshold

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def set_image(self, image, state: dict | None = None) -> dict:
        state = {} if state is None else state
        array = to_rgb_array(image)
        cfg = self.model.config
        pixels = preprocess([array], cfg.image_size, cfg.pixel_mean, cfg.pixel_std, self.device, self._dtype)
        state["image_state"] = ImageState(self.model.encode_image(pixels), array)
        state["original_height"], state["original_width"] = array.shape[:2]
        return state

    @torch.inference_mode()
    def set_image_batch(self, images: list, state: dict | None = None) -> dict:
        """Encode several images at once; prompts then run on each (results are per-image lists)."""
        if not isinstance(images, list) or not images:
            raise InvalidInputError("set_image_batch takes a non-empty list of images")
        state = {} if state is None else state
        arrays = [to_rgb_array(image) for image in images]
        cfg = self.model.config
        pixels = preprocess(arrays, cfg.image_size, cfg.pixel_mean, cfg.pixel_std, self.device, self._dtype)
        features = self.model.encode_image(pixels)
        state["image_states"] = [ImageState(features.select([i]), a) for i, a in enumerate(arrays)]
        state["original_heights"] = [a.shape[0] for a in arrays]
        state["original_widths"] = [a.shape[1] for a in arrays]
        return state

    @torch.inference_mode()
    def set_text_prompt(self, prompt: str, state: dict) -> dict:
        self._require_image(state)
        state["text_prompt"] = _check_phrase(prompt)
        return self._forward_grounding(state)

    @torch.inference_mode()
    def add_geometric_prompt(self, box: list, label: bool, state: dict) -> dict:
        """Add one exemplar box ([cx, cy, w, h] normalised) as positive (True) or negative (False)."""
        self._require_image(state)
        box_tensor = normalize_boxes(box, (1, 1), "cxcywh_norm")
        if box_tensor.shape[0] != 1:
            raise InvalidInputError("add_geometric_prompt takes one box [cx, cy, w, h]")
        state.setdefault("text_prompt", VISUAL_ONLY_PHRASE)
        state.setdefault("geometric_boxes", []).append((box_tensor[0], bool(label)))
        return self._forward_grounding(state)

    def reset_all_prompts(self, state: dict) -> None:
        for key in ("text_prompt", "geometric_boxes", "boxes", "masks", "masks_logits", "scores"):
            state.pop(key, None)

    @torch.inference_mode()
    def set_confidence_threshold(self, threshold: float, state: dict | None = None):
        self.confidence_threshold = threshold
        if state is not None and "boxes" in state:
            return self._forward_grounding(state)
        return state

    @staticmethod
    def _require_image(state: dict) -> None:
        if "image_state" not in state and "image_states" not in state:
            raise InvalidInputError("call set_image (or set_image_batch) before adding prompts")

    def _forward_grounding(self, state: dict) -> dict:
        if "image_states" in state:
            per_image = [self._ground_one(s, state) for s in state["image_states"]]
            for key in ("masks", "masks_logits", "boxes", "scores"):
                state[key] = [result[key] for result in per_image]
            return state
        state.update(self._ground_one(state["image_state"], state))
        return state

    def _ground_one(self, image_state: ImageState, state: dict) -> dict:
        boxes = state.get("geometric_boxes", [])
        box_tensor = torch.stack([b for b, _ in boxes])[None] if boxes else torch.zeros(1, 0, 4)
        labels = torch.tensor([[lab for _, lab in boxes]], dtype=torch.bool) if boxes else torch.zeros(1, 0, dtype=torch.bool)
        device = self.device
        text = self.model.encode_text([state["text_prompt"]])
        out = self.model.ground(image_state.features, text, box_tensor.to(device), labels.to(device),
                                torch.zeros_like(labels, device=device))
        scores = out.scores()[0]
        # the config's mask NMS: None for official weights, whose processor has none
        keep = keep_detections(scores, out.masks[0], self.confidence_threshold, self.model.config.nms_iou)
        height, width = image_state.size
        boxes_xyxy = cxcywh_to_xyxy(out.boxes[0, keep].float()) * torch.tensor([width, height, width, height], device=device)
        probs = F.interpolate(out.masks[0, keep].float()[:, None], size=(height, width), mode="bilinear",
                              align_corners=False).sigmoid()
        return {"masks_logits": probs, "masks": probs > 0.5, "boxes": boxes_xyxy, "scores": scores[keep]}


# the official video entry point lives with the video predictor; re-exported so that
# `from opensam3.compat import build_sam3_video_predictor` mirrors the official module layout
from .predictor.video_session import Sam3VideoPredictor, build_sam3_video_predictor  # noqa: E402,F401
