"""bfloat16 linear layers through oneDNN on the CPU, with the GELU fused in.

On CPU inference PyTorch's ``F.linear`` goes to MKL. oneDNN's matmul (``mkldnn._linear_pointwise``,
what torch.compile's CPU backend emits) applies the exact (erf) GELU to its float32 accumulator in
the same pass, which saves a read and a write of the ViT's largest activation. float32 stays on
``F.linear``: oneDNN is 13-17% faster there on our AVX-512 machine, but its different summation
order moves the full-size model's outputs by ~1e-3 from the official code's (the seeded weights
amplify rounding), and float32 is the exact mode. The op has no autograd formula, so anything
that may need gradients also takes ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_FUSED_DTYPES = (torch.bfloat16,)


def _onednn_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype not in _FUSED_DTYPES or weight.dtype != x.dtype or not x.is_contiguous():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    return _ONEDNN_AVAILABLE


def _probe() -> bool:
    try:
        if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
            return False
        x, w = torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(3, 4, dtype=torch.bfloat16)
        out = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return bool(torch.equal(out, F.linear(x, w)))
    except (RuntimeError, AttributeError):
        return False


_ONEDNN_AVAILABLE = _probe()


def _onednn_linear(x, weight, bias, attr: str, scalars: list, algorithm: str) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, scalars, algorithm)


def linear(x: torch.Tensor, layer: nn.Linear, gelu: bool = False) -> torch.Tensor:
    """``layer(x)``, then the exact GELU when ``gelu``; one oneDNN pass when it applies."""
    if _onednn_ok(x, layer.weight):
        if gelu:
            return _onednn_linear(x, layer.weight, layer.bias, "gelu", [], "none")
        return _onednn_linear(x, layer.weight, layer.bias, "none", [], "")
    out = F.linear(x, layer.weight, layer.bias)
    return F.gelu(out) if gelu else out
