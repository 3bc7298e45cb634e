"""Checks shared by every predictor that takes user coordinates (clicks, boxes)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidInputError


def finite_numbers(values, name: str, shape_hint: str | None = None) -> np.ndarray:
    """``values`` (list, array or tensor) as float32, or an InvalidInputError naming ``name``
    when they are not numbers or not finite."""
    try:
        array = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float32)
    except (TypeError, ValueError):
        hint = f" ({shape_hint})" if shape_hint else ""
        raise InvalidInputError(f"{name} must be numbers{hint}; got {values!r}") from None
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name} contain NaN or infinite values")
    return array
