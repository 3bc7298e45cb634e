"""Concept segmentation on images: encode an image once, ask it many prompts.

    model = opensam3.load("sam3")
    result = model.segment("photo.jpg", text="a player in white")
    result.masks, result.boxes, result.scores

Several phrases on one image run as one batch over a single image encoding; a list of images
is encoded as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.image_io import ImageLike, preprocess, to_rgb_array
from ..errors import InvalidInputError
from ..model.sam3 import GroundingOutput, ImageFeatures, Sam3ImageModel
from ..ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from ..ops.masks import keep_detections
from .results import Segmentation

# Phrase the official processor feeds the text slot when only boxes are given.
VISUAL_ONLY_PHRASE = "visual"


@dataclass
class ImageState:
    """One encoded image: its features (reused by every prompt) and its original pixels."""

    features: ImageFeatures
    image: np.ndarray  # (H, W, 3) uint8

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def _check_phrase(text: str) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"text prompt must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("text prompt is empty; give a short noun phrase such as 'a red car'")
    return text.strip()


def normalize_boxes(boxes, image_size: tuple[int, int], fmt: str = "xyxy") -> torch.Tensor:
    """Boxes given by the caller -> (N, 4) normalised cxcywh, checked against the image.

    ``fmt``: "xyxy" (pixels, the default), "xywh" (pixels) or "cxcywh_norm" (official format:
    centre and size as fractions of the image).
    """
    array = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise InvalidInputError(f"boxes must have 4 numbers each; got shape {tuple(array.shape)}")
    if not torch.isfinite(array).all():
        raise InvalidInputError("boxes contain NaN or infinite values")
    height, width = image_size
    if fmt == "cxcywh_norm":
        xyxy = cxcywh_to_xyxy(array)
        if (array[:, 2:] <= 0).any():
            raise InvalidInputError(f"box width and height must be positive; got {array.tolist()}")
        if (xyxy < -1e-6).any() or (xyxy > 1 + 1e-6).any():
            raise InvalidInputError(f"box {array.tolist()} (cx, cy, w, h) reaches outside [0, 1]; "
                                    "normalised boxes must lie inside the image")
        return array
    if fmt == "xywh":
        array = torch.cat((array[:, :2], array[:, :2] + array[:, 2:]), dim=1)
    elif fmt != "xyxy":
        raise InvalidInputError(f"unknown box format {fmt!r}; use 'xyxy', 'xywh' or 'cxcywh_norm'")
    if (array[:, 2] <= array[:, 0]).any() or (array[:, 3] <= array[:, 1]).any():
        raise InvalidInputError(f"boxes must have x1 > x0 and y1 > y0 (xyxy pixels); got {array.tolist()}")
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    if (array < -0.5).any() or (array > scale + 0.5).any():
        raise InvalidInputError(f"box {array.tolist()} lies outside the {width}x{height} image; "
                                "boxes are xyxy pixel coordinates inside the image")
    return xyxy_to_cxcywh(array.clamp(min=torch.zeros(4), max=scale) / scale)


def _box_labels(labels, count: int) -> torch.Tensor:
    if labels is None:
        return torch.ones(count, dtype=torch.bool)
    values = [bool(v) if isinstance(v, (bool, np.bool_)) else v for v in np.asarray(labels).reshape(-1).tolist()]
    if len(values) != count:
        raise InvalidInputError(f"got {count} boxes but {len(values)} box labels")
    if any(v not in (0, 1, True, False) for v in values):
        raise InvalidInputError(f"box labels must be 1/True (positive) or 0/False (negative); got {values}")
    return torch.tensor([bool(v) for v in values], dtype=torch.bool)


class ConceptPredictor:
    """Runs a :class:`Sam3ImageModel` on user images and prompts; owns device and dtype.

    ``nms_iou``: drop a detection whose mask overlaps a higher-scoring one of the same prompt by
    more than this IoU. None takes the model config's ``nms_iou`` (off for the official configs,
    as in the official image processor); 1.0 turns it off.
    """

    def __init__(self, model: Sam3ImageModel, confidence_threshold: float = 0.5, nms_iou: float | None = None):
        self.model = model.eval()
        self.confidence_threshold = confidence_threshold
        if nms_iou is not None and not 0.0 <= nms_iou <= 1.0:
            raise InvalidInputError(f"nms_iou must be an IoU in [0, 1] (1 turns suppression off); got {nms_iou}")
        self.nms_iou = model.config.nms_iou if nms_iou is None else nms_iou

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- images ---------------------------------------------------------------------------
    @torch.inference_mode()
    def set_image(self, image: ImageLike | ImageState) -> ImageState:
        """Encode one image (the expensive step); reuse the state for any number of prompts."""
        if isinstance(image, ImageState):
            return image
        return self.set_images([image])[0]

    @torch.inference_mode()
    def set_images(self, images: Sequence[ImageLike]) -> list[ImageState]:
        """Encode several images as one batch."""
        if len(images) == 0:
            raise InvalidInputError("no images given")
        arrays = [to_rgb_array(image) for image in images]
        cfg = self.model.config
        pixels = preprocess(arrays, cfg.image_size, cfg.pixel_mean, cfg.pixel_std, self.device, self.dtype)
        features = self.model.encode_image(pixels)
        return [ImageState(features.select([i]), array) for i, array in enumerate(arrays)]

    # -- prompts --------------------------------------------------------------------------
    @torch.inference_mode()
    def segment(
        self,
        image: ImageLike | ImageState | Sequence[ImageLike | ImageState],
        text: str | Sequence[str] | None = None,
        boxes=None,
        box_labels=None,
        box_format: str = "xyxy",
        threshold: float | None = None,
    ) -> Segmentation | list[Segmentation]:
        """Find every instance of a concept.

        ``text``: a noun phrase, or a list of phrases (one result each, run as one batch).
        ``boxes``: exemplar boxes (xyxy pixels by default), ``box_labels`` 1 positive / 0 negative.
        A list of images returns one result per image (same prompt on each).
        """
        if isinstance(image, (list, tuple)):
            raw = [im for im in image if not isinstance(im, ImageState)]
            encoded = iter(self.set_images(raw)) if raw else iter(())
            states = [im if isinstance(im, ImageState) else next(encoded) for im in image]
            return [self._segment_one(s, text, boxes, box_labels, box_format, threshold) for s in states]
        state = self.set_image(image)
        return self._segment_one(state, text, boxes, box_labels, box_format, threshold)

    def _segment_one(self, state, text, boxes, box_labels, box_format, threshold):
        phrases = [text] if text is None or isinstance(text, str) else list(text)
        if not phrases:
            raise InvalidInputError("empty list of text prompts")
        if boxes is None and any(p is None for p in phrases):
            raise InvalidInputError("nothing to segment: give a text prompt, exemplar boxes, or both")
        box_cxcywh = None
        labels = None
        if boxes is not None:
            box_cxcywh = normalize_boxes(boxes, state.size, box_format)
            labels = _box_labels(box_labels, box_cxcywh.shape[0])
        checked = [VISUAL_ONLY_PHRASE if p is None else _check_phrase(p) for p in phrases]
        outputs = self.run_prompts(state.features, checked, box_cxcywh, labels)
        results = [
            self.postprocess(outputs, i, state, threshold, prompt=(p if p is not None else "object"))
            for i, p in enumerate(phrases)
        ]
        return results[0] if isinstance(text, str) or text is None else results

    def run_prompts(self, features: ImageFeatures, phrases: list[str], boxes: torch.Tensor | None,
                    box_labels: torch.Tensor | None) -> GroundingOutput:
        """The raw model outputs for ``len(phrases)`` prompts on one encoded image (one batch)."""
        count = len(phrases)
        text = self.model.encode_text(phrases)
        num_boxes = 0 if boxes is None else boxes.shape[0]
        box_tensor = torch.zeros((count, num_boxes, 4), device=self.device)
        label_tensor = torch.zeros((count, num_boxes), dtype=torch.bool, device=self.device)
        if num_boxes:
            box_tensor[:] = boxes.to(self.device)
            label_tensor[:] = box_labels.to(self.device)
        padding = torch.zeros((count, num_boxes), dtype=torch.bool, device=self.device)
        return self.model.ground(features.select([0] * count), text, box_tensor, label_tensor, padding)

    def postprocess(self, outputs: GroundingOutput, index: int, state: ImageState, threshold: float | None,
                    prompt: str | None = None) -> Segmentation:
        """Keep queries scoring above the threshold (minus mask-NMS duplicates when ``nms_iou`` is
        set); masks and boxes at the original size."""
        threshold = self.confidence_threshold if threshold is None else threshold
        height, width = state.size
        scores = outputs.scores()[index].float()
        selected = keep_detections(scores, outputs.masks[index], threshold, self.nms_iou)
        keep = torch.nonzero(selected).flatten()
        keep = keep[scores[keep].argsort(descending=True)]
        boxes = cxcywh_to_xyxy(outputs.boxes[index, keep].float())
        boxes = boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        mask_logits = outputs.masks[index, keep].float()
        if keep.numel():
            probs = F.interpolate(mask_logits[:, None], size=(height, width), mode="bilinear", align_corners=False).sigmoid()[:, 0]
        else:
            probs = torch.zeros((0, height, width), device=mask_logits.device)
        return Segmentation(
            masks=(probs > 0.5).cpu(),
            boxes=boxes.cpu(),
            scores=scores[keep].cpu(),
            presence=float(outputs.presence_logits[index].float().sigmoid()),
            prompt=prompt,
            image=state.image,
        )
