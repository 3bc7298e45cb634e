"""Axial 2-D rotary position embedding (RoPE) for the ViT backbone.

Each head's channels are taken as adjacent pairs ``(c[2j], c[2j+1])``, each pair a complex number
rotated by an angle that depends on the token's grid position: the first quarter of the head
width (as pairs: the first half of the pairs) rotates with the column index ``x``, the second
with the row index ``y``, at frequencies ``theta ** (-4j / head_dim)``. Positions are multiplied
by a scale so that a large global-attention grid spans the positional range the model was
trained with (the window size): this is the official ``use_interp_rope`` behaviour.

The tables hold no learned values, so they are computed on demand and cached per grid, scale and
device instead of living in the state dict.
"""

from __future__ import annotations

import torch


class AxialRope:
    """Builds and caches rotation tables: (H*W, head_dim // 2) complex64 unit phasors.

    Tokens are laid out row-major: token ``t = row * width + col``.
    A plain object (not an ``nn.Module``) so it adds nothing to any state dict.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        if head_dim % 4:
            raise ValueError(f"axial RoPE needs a head width divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.theta = theta
        self._cache: dict[tuple, torch.Tensor] = {}

    def frequencies(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(head_dim // 4,) angular frequencies shared by the x and y halves."""
        exponents = torch.arange(0, self.head_dim, 4, device=device)[: self.head_dim // 4].float() / self.head_dim
        return 1.0 / (self.theta**exponents)

    def table(
        self,
        height: int,
        width: int,
        scale: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """(height * width, head_dim // 2) complex64 rotations for a row-major grid."""
        device = torch.device(device)
        key = (height, width, float(scale), str(device))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        # Built outside inference mode so a table first made under torch.inference_mode() can
        # still be used later by code that records gradients.
        with torch.inference_mode(False), torch.no_grad():
            index = torch.arange(height * width, dtype=torch.float32, device=device)
            cols = index % width
            rows = torch.div(index, width, rounding_mode="floor")
            freqs = self.frequencies(device)
            angles = torch.cat((torch.outer(cols * scale, freqs), torch.outer(rows * scale, freqs)), dim=-1)
            cached = torch.polar(torch.ones_like(angles), angles)
        if device.type != "meta":
            self._cache[key] = cached
        return cached


def apply_rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` (..., L, D) by a (L, D // 2) complex table; keeps x's dtype.

    A complex multiply in float32, as in the official code: on CPU it is one vectorised pass,
    several times faster than the equivalent real-valued cos/sin arithmetic. For a float32
    ``x`` whose last dimension is contiguous (e.g. a strided view of a fused qkv output) the
    complex view needs no copy.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    if pairs.stride(-1) != 1 or pairs.storage_offset() % 2 or any(s % 2 for s in pairs.stride()[:-1]):
        pairs = pairs.contiguous()
    rotated = torch.view_as_complex(pairs) * rotations
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
