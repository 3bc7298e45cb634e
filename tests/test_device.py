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
