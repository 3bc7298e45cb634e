"""Reproducible stand-in weights, buildable from a parameter's name and shape alone.

The reference fixtures were made with this rule (official ``sam3`` code on seeded weights), so a
model filled by it must give the fixtures' outputs. Real weights are never produced this way.
"""

from __future__ import annotations

import json
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


def apply_weight_overrides(modules: Mapping[str, torch.nn.Module], overrides: str | Sequence) -> None:
    """Scale and shift named tensors in place, as fixtures record it (``weight_override`` metadata):
    ``overrides`` is ``[(key, scale, shift), ...]`` or its JSON; each key is one of ``modules``'
    prefixes (e.g. "detector.", "tracker.", or "" for bare names) followed by a state-dict name."""
    if isinstance(overrides, str):
        overrides = json.loads(overrides)
    with torch.no_grad():
        for key, scale, shift in overrides:
            prefix = max((p for p in modules if key.startswith(p)), key=len, default=None)
            if prefix is None:
                raise KeyError(f"weight override {key!r} matches none of the prefixes {sorted(modules)}")
            modules[prefix].state_dict()[key[len(prefix):]].mul_(scale).add_(shift)
