"""Unmasked attention, with a faster bfloat16 path on the CPU.

PyTorch's CPU flash attention (``F.scaled_dot_product_attention``) tiles small blocks and
rescales its running softmax per block; in bfloat16 on our 2-core AVX-512 machine it is no faster
than in float32. Plain ``bmm -> softmax -> bmm`` over a few heads (or query rows) at a time, with
the score block small enough to stay in cache, sends both products to oneDNN's bf16 kernels: over
the full-size ViT's attention calls ~2.5x SDPA (``benchmarks/bench_kernels.py``: 353 GFLOP/s,
where SDPA gave 143). The scores exist one chunk at a time (a few MB), never whole.

float32 keeps SDPA: it is the exact mode, matched to the official code to 1e-4, and changing
the summation order there moves the seeded full-size model's outputs. Anything that may need
gradients keeps SDPA too (its backward is memory-efficient; this path is inference-only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNKED_DTYPES = (torch.bfloat16,)
# score elements per chunk (heads x query rows x keys), 2.6 MB in bf16: measured best on 2 cores
# for both 576-token windows (4 window-heads a chunk) and 5184-token global blocks (256 rows)
_SCORE_BUDGET = 4 * 576 * 576


def _chunked_ok(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    if q.device.type != "cpu" or q.dtype not in _CHUNKED_DTYPES or not (q.dtype == k.dtype == v.dtype):
        return False
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return False
    return not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, unmasked: q (N, heads, Lq, d), k and v (N, heads, Lk, d)
    -> (N, heads, Lq, d): ``F.scaled_dot_product_attention(q, k, v)``'s result (on the chunked
    path to bfloat16 rounding: the probabilities are rounded before the second product)."""
    if not _chunked_ok(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)
    batch, heads, length, head_dim = q.shape
    keys = k.shape[-2]
    groups = batch * heads
    # packed once: a strided operand (rotated q / k keep the fused qkv layout) would be copied
    # by every chunk's bmm, and a (d, Lk) key block is the faster layout for q @ k^T
    q = (q * head_dim ** -0.5).reshape(groups, length, head_dim).contiguous()
    k_t = k.reshape(groups, keys, head_dim).transpose(1, 2).contiguous()
    v = v.reshape(groups, keys, v.shape[-1]).contiguous()
    out = q.new_empty(groups, length, v.shape[-1])
    # whole (Lq, Lk) score blocks for several heads at once, or query-row slices of one head
    heads_per_chunk = max(1, _SCORE_BUDGET // (length * keys))
    rows = length if heads_per_chunk > 1 else max(64, _SCORE_BUDGET // keys // 64 * 64)
    for start in range(0, groups, heads_per_chunk):
        stop = min(start + heads_per_chunk, groups)
        for row in range(0, length, rows):
            end = min(row + rows, length)
            scores = torch.bmm(q[start:stop, row:end], k_t[start:stop]).softmax(dim=-1)
            torch.bmm(scores, v[start:stop], out=out[start:stop, row:end])
    return out.view(batch, heads, length, -1)
