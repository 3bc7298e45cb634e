"""ops.attention: chunked bmm-softmax-bmm for bfloat16 CPU inference, SDPA for float32 (the exact
mode) and wherever gradients may flow."""

import pytest
import torch
import torch.nn.functional as F

from opensam3.ops import attention as attention_ops
from opensam3.ops.attention import attention


def _exact(q, k, v):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double())


@pytest.mark.parametrize("shape_q, keys", [
    ((9, 4, 64, 16), 64),      # many small blocks: whole (L, L) score blocks, several heads a chunk
    ((1, 2, 1200, 16), 1200),  # long: one head at a time in query-row slices, last slice partial
    ((2, 3, 100, 8), 700),     # cross-attention: more keys than queries
])
def test_bfloat16_matches_exact_attention(shape_q, keys, monkeypatch):
    monkeypatch.setattr(attention_ops, "_SCORE_BUDGET", 64 * 64 * 4)  # several chunks at test sizes
    torch.manual_seed(0)
    batch, heads, length, dim = shape_q
    q = torch.randn(batch, heads, length, dim)
    k, v = torch.randn(batch, heads, keys, dim), torch.randn(batch, heads, keys, dim)
    # strided inputs, as the ViT's rotated q / k and its fused-qkv v arrive
    q, k, v = (t.bfloat16().transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    with torch.inference_mode():
        got = attention(q, k, v)
        sdpa = F.scaled_dot_product_attention(q, k, v)
    exact = _exact(q, k, v)
    assert got.dtype == torch.bfloat16 and got.shape == (batch, heads, length, dim)
    # bfloat16 rounding of the scores and probabilities: within a few bf16 steps of the exact
    # result, and of the same order as SDPA's own bfloat16 error
    error = (got.double() - exact).abs().max().item()
    assert error < 3e-2
    assert error < 4 * max((sdpa.double() - exact).abs().max().item(), 4e-3)


def test_float32_and_gradients_take_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_ops.F, "scaled_dot_product_attention", spy)
    q = torch.randn(1, 2, 10, 8)
    with torch.inference_mode():
        out = attention(q, q, q)  # float32, the exact mode: bitwise SDPA's result
        assert torch.equal(out, real(q, q, q))
        attention(q.bfloat16(), q.bfloat16(), q.bfloat16())  # chunked path
    assert calls == [torch.float32]
    wants_grad = q.bfloat16().requires_grad_()
    attention(wants_grad, wants_grad, wants_grad).float().sum().backward()  # SDPA, gradients flow
    assert calls == [torch.float32, torch.bfloat16] and wants_grad.grad is not None


def test_empty_sequences_keep_their_shape():
    q = torch.randn(1, 2, 0, 8).bfloat16()
    k = torch.randn(1, 2, 5, 8).bfloat16()
    with torch.inference_mode():
        assert attention(q, k, k).shape == (1, 2, 0, 8)
