"""What the CPU can do fast: bf16 is the fast path only where the hardware has bf16 arithmetic."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import warnings

import torch

# x86 flags of native bf16 dot products (AVX-512 BF16, AMX); Arm's is "bf16"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool | None:
    """True/False on Linux; None when the flags cannot be read (other systems)."""
    flags = cpu_flags()
    if not flags:
        return None
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def warn_if_slow_bf16(device: torch.device | str, dtype: torch.dtype) -> None:
    """bf16 on a CPU without bf16 arithmetic is emulated and far slower than float32 (measured on
    an AVX2-only AMD EPYC: a 2048x2048 bf16 matmul under 1 GFLOPS vs ~50 in float32)."""
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and cpu_has_native_bf16() is False:
        warnings.warn(f"this CPU ({platform.processor() or platform.machine()}, torch capability "
                      f"{torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 arithmetic, so bfloat16 "
                      "will be much slower than float32 here; use dtype=torch.float32 (--dtype float32)",
                      RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=None)
def _glibc_function(name: str):
    """A glibc function (``malloc_trim``, ``mallopt``) or None (musl, macOS, Windows: nothing to
    do there)."""
    if platform.system() != "Linux":
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_HEAP_ENV = "OPENSAM3_KEEP_HEAP"


def keep_large_blocks_in_heap(limit_bytes: int = 1 << 30) -> bool:
    """Serve blocks up to ``limit_bytes`` from glibc's heap and keep freed heap pages for reuse.

    By default glibc maps every block over 32 MB afresh and unmaps it when freed, so each frame's
    large tensors (16 objects' masks at 1008-1152 px, 64-170 MB; the ViT's window copies) pay a
    page fault per 4 KB page, which on our 2-core VM costs more than the arithmetic on them. Kept
    in the heap they are reused: a full-size bf16 trunk and SAM 3.1 frame (16 objects) went from
    ~10.5 + 5.6 s to ~8.0 + 3.5 s here. The process keeps its peak memory instead of returning it
    between frames.
    ``OPENSAM3_KEEP_HEAP=0`` in the environment leaves glibc's defaults. Returns whether applied.
    """
    mallopt = _glibc_function("mallopt")
    if mallopt is None or os.environ.get(KEEP_HEAP_ENV, "1") == "0":
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, limit_bytes))


def release_free_memory() -> None:
    """Give the heap pages freed by a one-off large step (reading a checkpoint) back to the
    system; glibc keeps them otherwise. Not for per-image or per-prompt paths: in a process with a
    large fragmented heap one call can take seconds (it made a test of many set_image calls 47x
    slower)."""
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)
