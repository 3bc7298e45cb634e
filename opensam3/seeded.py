"""Reproducible stand-in weights, buildable from a parameter's name and shape alone.

The reference fixtures were made with this rule (official ``sam3`` code on seeded weights), so a
model filled by it must give the fixtures' outputs. Real weights are never produced this way.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

import torch


def seeded_value(key: str, shape: Sequence[int]) -> torch.Tensor:
    """0.05 * randn seeded by crc32(key); 1-D ``*.weight`` tensors (norm scales) get +1."""
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    value = 0.05 * torch.randn(tuple(shape), generator=generator)
    if len(shape) == 1 and key.endswith(".weight"):
        value = value + 1.0
    return value


def seeded_state_dict(shapes: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    items = shapes.items() if isinstance(shapes, Mapping) else shapes
    return {key: seeded_value(key, shape) for key, shape in items}


def seed_module(module: torch.nn.Module, prefix: str = "") -> None:
    """Fill every floating parameter and buffer of ``module`` in place with the seeded rule,
    using ``prefix + name`` as the key (so a submodule can be seeded under its full-model name)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not tensor.is_complex():
                tensor.copy_(seeded_value(prefix + name, tensor.shape))
