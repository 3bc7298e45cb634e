"""Interactive segmentation of one object from clicks, a box and/or an earlier mask.

    predictor = InteractivePredictor(heads)          # heads: TrackerHeads with tracker.* weights
    state = concept_predictor.set_image(image)       # the same encoded image serves both tasks
    masks, scores, logits = predictor.predict(state, points=[[320, 240]], point_labels=[1])
    # refine: feed the best low-res logits back with more clicks
    masks, scores, _ = predictor.predict(state, points=..., point_labels=...,
                                         mask_input=logits[scores.argmax()][None], multimask_output=False)

This is the official ``Sam3Image.predict_inst`` (SAM 1 task on SAM 3 features): tracker neck
features + no-memory embedding, SAM 2 prompt encoder and mask decoder, small background holes
filled in the low-res logits, bilinear upsampling to the image size. With a
:class:`~opensam3.predictor.zoom.ZoomRule` (the embedded model's config sets one), small objects
get a second look on a window cut around them (``zoom.py``).
"""

from __future__ import annotations

from collections.abc import Callable
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
from .zoom import BACKGROUND_LOGIT, DEFAULT_ZOOM_MARGIN, ZoomRule, ZoomWindow, crop_low_res, paste, to_low_res

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

    def __init__(self, heads: TrackerHeads, mask_threshold: float = 0.0, max_hole_area: float | None = None,
                 zoom: ZoomRule | None = None, encode: Callable[[np.ndarray], ImageState] | None = None,
                 feedback: bool = False, box_clip: bool = False):
        """zoom: look again at small objects on a window around them (default off: the official
        behaviour); encode: turns an image array into an ImageState (the window's encoding);
        feedback: for points without a box or mask_input, decode each candidate again with its own
        logits as the mask input; box_clip: a box prompt bounds the mask (pixels whose centres lie
        outside the box are background). Both default off: the official behaviour."""
        self.heads = heads.eval()
        self.feedback = feedback
        self.box_clip = box_clip
        self.mask_threshold = mask_threshold
        if max_hole_area is None:
            # the official 256 low-res pixels of a 288 x 288 mask, as the same share of a smaller one
            # (the embedded model's 64 x 64: 12.6), else a ring's hole is filled at small sizes
            max_hole_area = OFFICIAL_MAX_HOLE_AREA * (heads.config.low_res_size / OFFICIAL_LOW_RES_SIZE) ** 2
        self.max_hole_area = max_hole_area
        if zoom is not None and encode is None:
            raise ValueError("a zoom rule needs encode, the function that encodes the zoom window's pixels")
        self.zoom = zoom
        self.encode = encode
        # the last two images' decoder inputs (an image and its zoom window alternate on refinement)
        self._cached: list[tuple[ImageState, TrackerImageEmbedding]] = []
        self._window: tuple[ImageState, ZoomWindow, ImageState] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.heads.parameters()).dtype

    @torch.inference_mode()
    def embed(self, state: ImageState) -> TrackerImageEmbedding:
        """The decoder's per-image inputs; the last two images' are kept so clicks are cheap."""
        for cached_state, cached in self._cached:
            if cached_state is state:
                return cached
        levels = state.features.tracker_fpn
        if levels is None:
            raise InvalidInputError("this model was built without the tracker neck, so it cannot take point or box "
                                    "prompts; load a checkpoint with tracker weights (the official sam3.pt has them)")
        embedding = self.heads.embed_image([level[:1].to(self.dtype) for level in levels])
        self._cached = [(state, embedding)] + self._cached[:1]
        return embedding

    def _prompts(self, state: ImageState, points, point_labels, box, mask_input):
        """Checked prompts: box corners and points as (N, 2) pixels (None when neither), their
        labels (1, N), and the mask input (1, 1, L, L) on the device (or None)."""
        height, width = state.size
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
            label_tensor = torch.as_tensor(np.concatenate(labels), dtype=torch.long, device=self.device)
            return np.concatenate(coords), label_tensor[None], mask
        return None, None, mask

    def _model_coords(self, xy: np.ndarray | None, size: tuple[int, int]) -> torch.Tensor | None:
        """(N, 2) x, y pixels of an image of ``size`` (H, W) -> (1, N, 2) model-input pixels."""
        if xy is None:
            return None
        height, width = size
        xy = torch.as_tensor(xy, device=self.device)
        # same float steps as the official transform: to [0, 1] of the image, then model pixels
        return (torch.stack((xy[:, 0] / width, xy[:, 1] / height), dim=-1) * self.heads.config.image_size)[None]

    @staticmethod
    def _check_inside(xy: np.ndarray, width: int, height: int, what: str) -> None:
        outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
        if outside.any():
            raise InvalidInputError(f"{what} {xy[outside][0].tolist()} lies outside the {width}x{height} image; "
                                    "coordinates are x, y pixels of the original image")

    @torch.inference_mode()
    def predict(self, state: ImageState, points=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False, zoom: bool | None = None,
                box_clip: bool | None = None) -> InteractiveMasks:
        """Masks for one object on an encoded image.

        points: (N, 2) x, y pixels of the original image; point_labels: (N,) 1 = object,
        0 = background; box: (4,) x0, y0, x1, y1 pixels; mask_input: (1, L, L) low-res logits
        from an earlier call. At least one of them. ``multimask_output`` returns 3 candidates
        (best for a single click), else 1 mask. ``zoom``: True / False to force the second look
        at small objects on or off (None: on when the predictor has a zoom rule); ``box_clip``:
        True / False to keep the mask inside the box or not (None: the predictor's setting); the
        returned low-res logits are never clipped (the same box clips them again when fed back).
        """
        xy, labels, mask = self._prompts(state, points, point_labels, box, mask_input)
        coords = self._model_coords(xy, state.size)
        low_res, scores = self._decode(state, coords, labels, mask, multimask_output)
        # the box's corners come first in xy
        bounds = xy[:2] if (self.box_clip if box_clip is None else box_clip) and box is not None else None
        feed_back = self.feedback and box is None and mask is None
        logits = _inside(self._upsample(low_res, state.size), bounds)
        rule = self.zoom if zoom is None else (self.zoom or ZoomRule(DEFAULT_ZOOM_MARGIN)) if zoom else None
        window = None
        if rule is not None:
            if self.encode is None:
                raise InvalidInputError("zoom=True needs a predictor that can encode images: use "
                                        "opensam3.load(...).predict, or pass encode= to InteractivePredictor")
            best = logits[int(scores.argmax())] > self.mask_threshold
            window = rule.window(best.numpy(), np.zeros((0, 2)) if xy is None else xy)
        if window is not None:
            low_res, scores, logits = self._predict_in_window(state, window, xy, labels, mask, multimask_output,
                                                              feed_back)
            logits = _inside(logits, bounds)
        elif feed_back:
            low_res, scores = self._fed_back(state, coords, labels, low_res)
            logits = self._upsample(low_res, state.size)
        masks = logits if return_logits else logits > self.mask_threshold
        return InteractiveMasks(masks, scores.cpu(), low_res.clamp(-32.0, 32.0).cpu())

    @torch.inference_mode()
    def masks_for_boxes(self, state: ImageState, boxes: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """One mask per xyxy pixel box (N, 4), each box asked on its own (zoom as configured);
        a box with no area inside the image keeps its ``fallback`` mask (N, H, W) bool. A
        detector's box is looser than a user's, so masks are not clipped to it (on 800 pairs of the
        embedded model's calibration split, 2026-11-30, clipping took pmF1 from 0.638 to 0.525)."""
        height, width = state.size
        limits = torch.tensor([width, height, width, height], dtype=torch.float32)
        masks = fallback.clone()
        for i, box in enumerate(boxes.detach().float().cpu()):
            inside = torch.minimum(box.clamp(min=0), limits)
            if inside[2] - inside[0] >= 1 and inside[3] - inside[1] >= 1:
                masks[i] = self.predict(state, box=inside.tolist(), multimask_output=False, box_clip=False).masks[0]
        return masks

    def _decode(self, state: ImageState, coords, labels, mask, multimask_output: bool):
        """Low-res logits (K, L, L) float and predicted IoUs (K,) for model-pixel prompts."""
        embedding = self.embed(state)
        decoded = self.heads(embedding, coords, labels, None if mask is None else mask.to(self.dtype), multimask_output)
        return decoded.masks.float()[0], decoded.iou_scores[0].float()

    def _fed_back(self, state: ImageState, coords, labels, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate (K, L, L) decoded again with the same prompts and its own logits as the
        mask input, one mask each: a click's first answer is a prior the decoder then sharpens."""
        again = [self._decode(state, coords, labels, candidate.clamp(-32.0, 32.0)[None, None], False)
                 for candidate in low_res]
        return torch.cat([m for m, _ in again]), torch.cat([s for _, s in again])

    def _upsample(self, low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(K, L, L) low-res logits -> (K, H, W) logits on the CPU, small holes filled."""
        filled = fill_small_holes(low_res[None], self.max_hole_area, self.mask_threshold)
        return F.interpolate(filled, size=size, mode="bilinear", align_corners=False)[0].cpu()

    def _predict_in_window(self, state: ImageState, window: ZoomWindow, xy: np.ndarray | None, labels, mask,
                           multimask_output: bool, feed_back: bool):
        """The same prompts asked again on the window's own encoding; results pasted back."""
        if self._window is not None and self._window[0] is state and self._window[1] == window:
            crop = self._window[2]
        else:
            rows, cols = window.slices()
            crop = self.encode(state.image[rows, cols])
            self._window = (state, window, crop)
        if xy is not None:
            xy = xy - np.array([window.left, window.top])
        if mask is not None:
            mask = crop_low_res(mask[0].cpu(), window, state.size)[None].to(self.device)
        coords = self._model_coords(xy, crop.size)
        low_res, scores = self._decode(crop, coords, labels, mask, multimask_output)
        if feed_back:
            low_res, scores = self._fed_back(crop, coords, labels, low_res)
        logits = paste(self._upsample(low_res, crop.size), window, state.size)
        return to_low_res(logits, low_res.shape[-1]), scores, logits


def _inside(logits: torch.Tensor, corners: np.ndarray | None) -> torch.Tensor:
    """(K, H, W) logits with every pixel whose centre lies outside the x0, y0 / x1, y1 ``corners``
    set to background (unchanged for None)."""
    if corners is None:
        return logits
    (x0, y0), (x1, y1) = corners
    cols = torch.arange(logits.shape[-1], dtype=torch.float64) + 0.5
    rows = torch.arange(logits.shape[-2], dtype=torch.float64) + 0.5
    inside = ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :]
    return logits.masked_fill(~inside, BACKGROUND_LOGIT)
