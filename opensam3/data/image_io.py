"""Reading images into RGB uint8 arrays, with errors that name the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InvalidInputError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def read_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB, fully decoded (so truncated files fail here, not later)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"image file not found: {path}")
    if path.is_dir():
        raise InvalidInputError(f"expected an image file but {path} is a directory")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise InvalidInputError(f"{path} is not a readable image (unknown or corrupt format); "
                                "pass a PNG, JPEG, BMP, TIFF or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"{path} could not be decoded ({exc}); the file may be truncated or corrupt") from None


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Any supported image -> (H, W, 3) uint8 array.

    Accepts a path, a PIL image, an (H, W, 3) / (H, W) uint8 array, or a (3, H, W) uint8 tensor
    (float arrays/tensors are read as values in [0, 1]).
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))  # a writable copy
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim == 3 and tensor.shape[0] in (1, 3) and tensor.shape[-1] not in (1, 3):
            tensor = tensor.permute(1, 2, 0)
        image = tensor.numpy()
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise InvalidInputError(f"image array must be (H, W), (H, W, 3) or (3, H, W); got shape {tuple(image.shape)}")
        if array.shape[2] == 4:
            array = array[:, :, :3]
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating):
                raise InvalidInputError(f"image array must be uint8 or float in [0, 1]; got dtype {array.dtype}")
            array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
        if array.shape[0] < 1 or array.shape[1] < 1:
            raise InvalidInputError(f"image is empty (shape {tuple(array.shape)})")
        return np.ascontiguousarray(array)
    raise InvalidInputError(f"unsupported image type {type(image).__name__}; pass a file path, a PIL image, "
                            "a numpy array or a torch tensor")


def preprocess(images: list[np.ndarray], size: int, mean: float, std: float,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RGB uint8 arrays -> (B, 3, size, size) normalised model input.

    Resizing runs on the uint8 image with antialiased bilinear filtering (what the official
    pipeline does), then scales to [0, 1] and normalises.
    """
    batch = []
    for array in images:
        if not array.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only arrays
            array = array.copy()
        chw = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
        resized = torch.nn.functional.interpolate(chw, size=(size, size), mode="bilinear",
                                                  align_corners=False, antialias=True)
        batch.append(resized)
    pixels = torch.cat(batch).to(device=device, dtype=torch.float32) / 255.0
    return ((pixels - mean) / std).to(dtype)
