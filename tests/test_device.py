"""bfloat16 is only the fast path on CPUs with bf16 arithmetic; elsewhere loading warns."""

import warnings

import pytest
import torch

import opensam3.device as device


@pytest.mark.parametrize("flags, warns", [
    (frozenset({"sse4_2", "avx2", "fma"}), True),            # AVX2 only: bf16 is emulated
    (frozenset({"avx2", "avx512f", "avx512_bf16"}), False),  # AVX-512 BF16
    (frozenset({"avx2", "amx_bf16", "amx_tile"}), False),    # AMX
    (frozenset(), False),                                    # unknown: say nothing
])
def test_bf16_warning_follows_cpu_flags(monkeypatch, flags, warns):
    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        device.warn_if_slow_bf16("cpu", torch.bfloat16)
        device.warn_if_slow_bf16("cpu", torch.float32)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == int(warns), messages
    if warns:
        assert "float32" in messages[0] and "bfloat16" in messages[0]


def test_load_warns_for_bf16_on_a_cpu_without_it(monkeypatch, tiny_checkpoint):
    import opensam3

    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.warns(RuntimeWarning, match="no native bfloat16"):
        opensam3.load(tiny_checkpoint, dtype=torch.bfloat16)


@pytest.mark.skipif(device._glibc_function("malloc_trim") is None, reason="glibc only")
def test_release_free_memory_returns_heap_holes_to_the_system():
    """Freed blocks in the middle of the heap stay resident until released (what reading a
    checkpoint tensor by tensor leaves behind; `load` releases them)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import torch
        from opensam3.device import release_free_memory

        def rss_mb():
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024

        big = torch.ones(20 << 18)
        del big  # glibc raises its mmap threshold after freeing a 20 MB block
        blocks, pins = [], []
        for _ in range(100):  # 1 MB blocks from the heap, each followed by a small live one
            blocks.append(torch.ones(1 << 18))
            pins.append(torch.ones(1 << 12))
        del blocks
        before = rss_mb()
        release_free_memory()
        print(before - rss_mb())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    released_mb = float(done.stdout.strip().splitlines()[-1])
    assert released_mb > 80, released_mb


@pytest.mark.skipif(device._glibc_function("mallopt") is None, reason="glibc only")
def test_large_blocks_stay_in_the_heap_unless_opted_out(monkeypatch):
    monkeypatch.setenv(device.KEEP_HEAP_ENV, "0")
    assert device.keep_large_blocks_in_heap() is False
    monkeypatch.delenv(device.KEEP_HEAP_ENV)
    assert device.keep_large_blocks_in_heap() is True  # what `import opensam3` does


def test_no_glibc_no_heap_tuning(monkeypatch):
    monkeypatch.setattr(device, "_glibc_function", lambda name: None)
    assert device.keep_large_blocks_in_heap() is False
