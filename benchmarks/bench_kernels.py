"""What this CPU's PyTorch kernels allow for the full-size image encoder: a floor, not a target.

    .venv/bin/python benchmarks/bench_kernels.py [--threads N]

Times the matrix products and attention calls (``opensam3.ops.attention``) the full-size ViT
makes on a 1008 px image (the ``sam3`` config: 72x72 patches, 32 blocks of width 1024 with a
4736-wide MLP, 28 of them windowed over 24x24 windows, 4 global), in float32 and bfloat16, and
adds them up: the seconds set_image cannot go below with these kernels, however little else it
does. Compare with ``bench_image.py`` (the whole set_image) and with the arithmetic peak the CPU
advertises.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from opensam3.config import get_config  # noqa: E402
from opensam3.ops.attention import attention  # noqa: E402

_VIT = get_config("sam3").vision
GRID = _VIT.image_size // _VIT.patch_size
TOKENS, DIM, MLP, HEADS, DEPTH = GRID * GRID, _VIT.embed_dim, int(_VIT.embed_dim * _VIT.mlp_ratio), _VIT.num_heads, _VIT.depth
GLOBAL_BLOCKS = len(_VIT.global_blocks)
WINDOWS, WINDOW_TOKENS = (GRID // _VIT.window_size) ** 2, _VIT.window_size ** 2


def _seconds(fn, repeats: int = 3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def encoder_floor(dtype: torch.dtype) -> dict[str, float]:
    """Seconds per encoder for each kernel kind, and their achieved GFLOP/s."""
    x = torch.randn(TOKENS, DIM, dtype=dtype)
    hidden = torch.randn(TOKENS, MLP, dtype=dtype)
    linears = {  # (input, out features) per block: qkv, proj, fc1, fc2
        "qkv": (x, 3 * DIM), "proj": (x, DIM), "fc1": (x, MLP), "fc2": (hidden, DIM),
    }
    linear_s, linear_flop = 0.0, 0.0
    for inputs, out in linears.values():
        weight = torch.randn(out, inputs.shape[1], dtype=dtype) * 0.02
        linear_s += _seconds(lambda: F.linear(inputs, weight)) * DEPTH
        linear_flop += 2 * TOKENS * inputs.shape[1] * out * DEPTH
    head_dim = DIM // HEADS
    windowed = [torch.randn(WINDOWS, HEADS, WINDOW_TOKENS, head_dim, dtype=dtype) for _ in range(3)]
    glob = [torch.randn(1, HEADS, TOKENS, head_dim, dtype=dtype) for _ in range(3)]
    # the ViT's own attention op: SDPA in float32, chunked bmm-softmax-bmm in bfloat16
    window_s = _seconds(lambda: attention(*windowed)) * (DEPTH - GLOBAL_BLOCKS)
    global_s = _seconds(lambda: attention(*glob), repeats=1) * GLOBAL_BLOCKS
    attention_flop = 4 * head_dim * HEADS * (WINDOWS * WINDOW_TOKENS ** 2 * (DEPTH - GLOBAL_BLOCKS)
                                             + TOKENS ** 2 * GLOBAL_BLOCKS)
    return {
        "linear_s": linear_s, "linear_gflops": linear_flop / linear_s / 1e9,
        "attention_s": window_s + global_s, "attention_gflops": attention_flop / (window_s + global_s) / 1e9,
        "floor_s": linear_s + window_s + global_s, "tflop": (linear_flop + attention_flop) / 1e12,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print(f"{'dtype':<10}{'linears s':>11}{'GFLOP/s':>9}{'attention s':>13}{'GFLOP/s':>9}{'floor s':>9}{'TFLOP':>7}")
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            r = encoder_floor(dtype)
            print(f"{str(dtype).split('.')[-1]:<10}{r['linear_s']:>11.2f}{r['linear_gflops']:>9.0f}"
                  f"{r['attention_s']:>13.2f}{r['attention_gflops']:>9.0f}{r['floor_s']:>9.2f}{r['tflop']:>7.2f}")
    print("floor = the encoder's linear layers and attention alone, at the rates these kernels reach here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
