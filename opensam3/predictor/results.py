"""Typed results of concept segmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image


@dataclass
class Segmentation:
    """Every instance found for one prompt on one image.

    masks:  (N, H, W) bool at the original image size
    boxes:  (N, 4) float xyxy in pixels
    scores: (N,) float, sigmoid(query logit) * sigmoid(presence logit), sorted high to low
    presence: probability that the concept is in the image at all
    """

    masks: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    presence: float
    prompt: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image the masks belong to."""
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])

    def to_coco_rle(self) -> list[dict]:
        """One COCO result dict per instance: RLE ``segmentation``, xywh ``bbox``, ``score``."""
        from ..data.rle import encode as encode_mask

        results = []
        for mask, box, score in zip(self.masks, self.boxes, self.scores):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({
                "segmentation": encode_mask(mask.cpu().numpy()),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(score),
            })
        return results

    def overlay(self, image: np.ndarray | Image.Image | None = None, alpha: float = 0.5) -> Image.Image:
        """The image with each instance's mask, box and score drawn on it."""
        from ..data.image_io import to_rgb_array
        from ..data.overlay import draw_overlay

        base = self.image if image is None else to_rgb_array(image)
        if base is None:
            raise ValueError("this result holds no image; pass the image to overlay(image)")
        name = self.prompt or "object"
        labels = [f"{name} {float(s):.2f}" for s in self.scores]
        return draw_overlay(base, self.masks.cpu().numpy(), self.boxes.cpu().numpy(), labels, alpha=alpha)
