"""Checking and converting video prompts, and the video tracker's mask post-processing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..model.tracker.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from ..ops.components import connected_components
from .inputs import finite_numbers


def _check_inside(xy: np.ndarray, width: int, height: int, what: str) -> None:
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if outside.any():
        raise InvalidInputError(f"{what} {xy[outside][0].tolist()} lies outside the {width}x{height} frame; "
                                "coordinates are x, y pixels of the original video")


def point_prompt(points, labels, box, width: int, height: int, image_size: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """User clicks/box in video pixels -> (coords (1, N, 2) in model-input pixels, labels (1, N)),
    the box first as its two corners (labels 2, 3), as the official tracker orders them."""
    if (points is None) != (labels is None):
        raise InvalidInputError("give labels together with points (1 = object, 0 = background)")
    if points is None and box is None:
        raise InvalidInputError("nothing to track: give points with labels, or a box")
    coords, values = [], []
    if box is not None:
        corners = finite_numbers(box, "box").reshape(-1)
        if corners.size != 4:
            raise InvalidInputError(f"box must be 4 numbers x0, y0, x1, y1 (pixels); got {corners.size}")
        corners = corners.reshape(2, 2)
        if corners[1, 0] <= corners[0, 0] or corners[1, 1] <= corners[0, 1]:
            raise InvalidInputError("box must have x1 > x0 and y1 > y0 (xyxy pixels); "
                                    f"got {corners.reshape(-1).tolist()}")
        _check_inside(corners, width, height, "box corner")
        coords.append(corners)
        values += [BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]
    if points is not None:
        xy = finite_numbers(points, "points")
        if xy.ndim == 1 and xy.size == 2:
            xy = xy[None]
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise InvalidInputError(f"points must be an (N, 2) array of x, y pixels; got shape {xy.shape}")
        raw = np.asarray(labels.detach().cpu() if torch.is_tensor(labels) else labels).reshape(-1).tolist()
        if len(raw) != xy.shape[0]:
            raise InvalidInputError(f"got {xy.shape[0]} points but {len(raw)} labels")
        if any(isinstance(v, float) and not v.is_integer() for v in raw) or any(v not in (0, 1) for v in raw):
            raise InvalidInputError(f"point labels must be 1 (object) or 0 (background); got {raw}")
        _check_inside(xy, width, height, "point")
        coords.append(xy)
        values += [int(v) for v in raw]
    if not values:
        raise InvalidInputError("nothing to track: the point list is empty")
    xy = torch.as_tensor(np.concatenate(coords), device=device)
    # the official predictor takes coordinates relative to the frame and scales them to the model input
    xy = torch.stack((xy[:, 0] / width, xy[:, 1] / height), dim=-1) * image_size
    return xy[None], torch.tensor([values], dtype=torch.long, device=device)


def mask_prompt(mask, height: int, width: int, input_mask_size: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """An (H', W') mask -> (model prompt (1, 1, S, S) float, (H, W) bool at the video's size),
    both resized with antialiased bilinear filtering when the sizes differ."""
    if torch.is_tensor(mask):
        tensor = mask.detach().to(device)
    else:
        try:
            tensor = torch.as_tensor(np.asarray(mask), device=device)
        except (TypeError, ValueError):
            raise InvalidInputError(f"mask must be an (H, W) array; got {type(mask).__name__}") from None
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2 or min(tensor.shape) < 1:
        raise InvalidInputError(f"mask must be one (H, W) array; got shape {tuple(tensor.shape)}")
    tensor = tensor.float()[None, None]
    if not torch.isfinite(tensor).all():
        raise InvalidInputError("mask contains NaN or infinite values")
    model = tensor
    if tuple(tensor.shape[-2:]) != (input_mask_size, input_mask_size):
        model = F.interpolate(tensor, size=(input_mask_size, input_mask_size), mode="bilinear", align_corners=False,
                              antialias=True)
    video = tensor
    if tuple(tensor.shape[-2:]) != (height, width):
        video = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return model, video[0, 0] > 0.5


def apply_non_overlap(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) logits: where objects overlap, all but the highest-scoring one are pushed to
    at most -10 (official ``_apply_non_overlapping_constraints``)."""
    if masks.shape[0] == 1:
        return masks
    winner = masks.argmax(dim=0, keepdim=True)
    keep = winner == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(keep, masks, masks.clamp(max=-10.0))


def fill_holes_in_mask_scores(masks: torch.Tensor, max_area: int) -> torch.Tensor:
    """(B, 1, H, W) logits: background regions (8-connected) of at most ``max_area`` pixels
    become 0.1, then foreground specks of at most min(max_area, half the object's area) become -0.1."""
    if max_area <= 0:
        return masks
    flat = masks[:, 0]
    background = flat <= 0
    _, areas = connected_components(background)
    flat = torch.where(background & (areas <= max_area), torch.full_like(flat, 0.1), flat)
    foreground = flat > 0
    limit = (foreground.sum(dim=(1, 2), keepdim=True) // 2).clamp(max=max_area)
    _, areas = connected_components(foreground)
    flat = torch.where(foreground & (areas <= limit), torch.full_like(flat, -0.1), flat)
    return flat[:, None]
