"""Interactive segmentation of one object from clicks, a box and/or an earlier mask.

    predictor = InteractivePredictor(heads)          # heads: TrackerHeads with tracker.* weights
    state = concept_predictor.set_image(image)       # the same encoded image serves both tasks
    masks, scores, logits = predictor.predict(state, points=[[320, 240]], point_labels=[1])
    # refine: feed the best low-res logits back with more clicks
    masks, scores, _ = predictor.predict(state, points=..., point_labels=...,
                                         mask_input=logits[scores.argmax()][None], multimask_output=False)

This is the official ``Sam3Image.predict_inst`` (SAM 1 task on SAM 3 features): tracker neck
features + no-memory embedding, SAM 2 prompt encoder and mask decoder, small background holes
filled in the low-res logits, bilinear upsampling to the image size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..model.tracker.heads import TrackerHeads, TrackerImageEmbedding
from ..model.tracker.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from ..ops.components import fill_small_holes
from .image import ImageState
from .inputs import finite_numbers

OFFICIAL_MAX_HOLE_AREA = 256.0  # predict_inst's hole filling, in low-res pixels at full size
OFFICIAL_LOW_RES_SIZE = 288


class InteractiveMasks(NamedTuple):
    """masks: (K, H, W) bool at the original size (float logits with ``return_logits``);
    iou_scores: (K,) predicted mask quality; low_res_logits: (K, L, L) clamped to [-32, 32],
    L = 4 x the tracker's coarsest grid (288 at full size): pass one back as ``mask_input``.
    K = 3 with ``multimask_output`` else 1."""

    masks: torch.Tensor
    iou_scores: torch.Tensor
    low_res_logits: torch.Tensor


class InteractivePredictor:
    """Runs :class:`TrackerHeads` on encoded images (:class:`ImageState` with tracker features)."""

    def __init__(self, heads: TrackerHeads, mask_threshold: float = 0.0, max_hole_area: float | None = None):
        self.heads = heads.eval()
        self.mask_threshold = mask_threshold
        if max_hole_area is None:
            # the official 256 low-res pixels of a 288 x 288 mask, as the same share of a smaller one
            # (the embedded model's 64 x 64: 12.6), else a ring's hole is filled at small sizes
            max_hole_area = OFFICIAL_MAX_HOLE_AREA * (heads.config.low_res_size / OFFICIAL_LOW_RES_SIZE) ** 2
        self.max_hole_area = max_hole_area
        self._cached: tuple[ImageState, TrackerImageEmbedding] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.heads.parameters()).dtype

    @torch.inference_mode()
    def embed(self, state: ImageState) -> TrackerImageEmbedding:
        """The decoder's per-image inputs; kept for the most recent image so clicks are cheap."""
        if self._cached is not None and self._cached[0] is state:
            return self._cached[1]
        levels = state.features.tracker_fpn
        if levels is None:
            raise InvalidInputError("this model was built without the tracker neck, so it cannot take point or box "
                                    "prompts; load a checkpoint with tracker weights (the official sam3.pt has them)")
        embedding = self.heads.embed_image([level[:1].to(self.dtype) for level in levels])
        self._cached = (state, embedding)
        return embedding

    def _prompts(self, state: ImageState, points, point_labels, box, mask_input):
        height, width = state.size
        size = self.heads.config.image_size
        coords, labels = [], []
        if box is not None:
            corners = finite_numbers(box, "box")
            if corners.size != 4:
                raise InvalidInputError(f"box must be 4 numbers x0, y0, x1, y1 (pixels); got shape {corners.shape}")
            corners = corners.reshape(2, 2)
            if corners[1, 0] <= corners[0, 0] or corners[1, 1] <= corners[0, 1]:
                raise InvalidInputError(f"box must have x1 > x0 and y1 > y0 (xyxy pixels); got {corners.reshape(-1).tolist()}")
            self._check_inside(corners, width, height, "box")
            coords.append(corners)
            labels.append(np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]))
        if points is not None or point_labels is not None:
            if points is None or point_labels is None:
                raise InvalidInputError("give point_labels together with points (1 = object, 0 = background)")
            xy = finite_numbers(points, "points")
            if xy.ndim == 1 and xy.size == 2:
                xy = xy[None]
            if xy.ndim != 2 or xy.shape[1] != 2:
                raise InvalidInputError(f"points must be an (N, 2) array of x, y pixels; got shape {xy.shape}")
            raw_labels = np.asarray(point_labels).reshape(-1)
            if raw_labels.shape[0] != xy.shape[0]:
                raise InvalidInputError(f"got {xy.shape[0]} points but {raw_labels.shape[0]} point labels")
            values = raw_labels.tolist()
            if any(isinstance(v, float) and not v.is_integer() for v in values) or any(v not in (0, 1) for v in values):
                raise InvalidInputError(f"point labels must be 1 (object) or 0 (background); got {values}")
            self._check_inside(xy, width, height, "point")
            if xy.shape[0]:
                coords.append(xy)
                labels.append(np.array([int(v) for v in values]))
        if mask_input is not None:
            low = self.heads.config.low_res_size
            mask = torch.as_tensor(np.asarray(mask_input, dtype=np.float32)) if not torch.is_tensor(mask_input) \
                else mask_input.detach().float().cpu()
            if mask.dim() == 2:
                mask = mask[None]
            if tuple(mask.shape) != (1, low, low):
                raise InvalidInputError(f"mask_input must be low-res logits of shape (1, {low}, {low}) (one of the "
                                        f"low_res_logits of an earlier prediction); got {tuple(mask.shape)}")
            mask = mask[None].to(self.device)
        else:
            mask = None
        if not coords and mask is None:
            raise InvalidInputError("nothing to segment: give points with labels, a box, or a mask_input")
        if coords:
            xy = torch.as_tensor(np.concatenate(coords), device=self.device)
            # same float steps as the official transform: to [0, 1] of the image, then model pixels
            xy = torch.stack((xy[:, 0] / width, xy[:, 1] / height), dim=-1) * size
            label_tensor = torch.as_tensor(np.concatenate(labels), dtype=torch.long, device=self.device)
            return xy[None], label_tensor[None], mask
        return None, None, mask

    @staticmethod
    def _check_inside(xy: np.ndarray, width: int, height: int, what: str) -> None:
        outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
        if outside.any():
            raise InvalidInputError(f"{what} {xy[outside][0].tolist()} lies outside the {width}x{height} image; "
                                    "coordinates are x, y pixels of the original image")

    @torch.inference_mode()
    def predict(self, state: ImageState, points=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False) -> InteractiveMasks:
        """Masks for one object on an encoded image.

        points: (N, 2) x, y pixels of the original image; point_labels: (N,) 1 = object,
        0 = background; box: (4,) x0, y0, x1, y1 pixels; mask_input: (1, L, L) low-res logits
        from an earlier call. At least one of them. ``multimask_output`` returns 3 candidates
        (best for a single click), else 1 mask.
        """
        coords, labels, mask = self._prompts(state, points, point_labels, box, mask_input)
        embedding = self.embed(state)
        decoded = self.heads(embedding, coords, labels, None if mask is None else mask.to(self.dtype), multimask_output)
        low_res = decoded.masks.float()
        filled = fill_small_holes(low_res, self.max_hole_area, self.mask_threshold)
        masks = F.interpolate(filled, size=state.size, mode="bilinear", align_corners=False)
        if not return_logits:
            masks = masks > self.mask_threshold
        return InteractiveMasks(masks[0].cpu(), decoded.iou_scores[0].float().cpu(),
                                low_res.clamp(-32.0, 32.0)[0].cpu())
