"""ops.linear: oneDNN (GELU fused) for bfloat16 CPU inference; F.linear for float32 (the exact
mode) and wherever gradients may flow."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opensam3.ops import linear as linear_ops
from opensam3.ops.linear import linear


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("gelu", [False, True])
def test_matches_linear_then_gelu(dtype, tol, gelu):
    torch.manual_seed(0)
    layer = nn.Linear(64, 96).to(dtype)
    x = torch.randn(2, 5, 7, 64, dtype=dtype)
    with torch.inference_mode():
        got = linear(x, layer, gelu=gelu)
    exact = F.linear(x.double(), layer.weight.double(), layer.bias.double())
    exact = F.gelu(exact) if gelu else exact
    assert got.dtype == dtype and got.shape == (2, 5, 7, 96)
    assert (got.double() - exact).abs().max() < tol


def test_takes_onednn_only_without_gradients(monkeypatch):
    if not linear_ops._ONEDNN_AVAILABLE:
        pytest.skip("this torch build has no oneDNN linear")
    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    def spy(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(linear_ops, "_onednn_linear", spy)
    layer = nn.Linear(8, 8).bfloat16()
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        linear(x, layer, gelu=True)
        linear(x.t().contiguous().t(), layer)  # not contiguous: F.linear
        linear(x.float(), nn.Linear(8, 8))  # float32 is the exact mode: F.linear
    assert calls == ["gelu"]
    out = linear(x, layer, gelu=True)  # parameters want gradients: F.linear, and they flow
    out.float().sum().backward()
    assert calls == ["gelu"] and layer.weight.grad is not None
