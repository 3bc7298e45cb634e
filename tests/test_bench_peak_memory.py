"""The benchmarks' peak-memory reading is the worker's own, not its parent's (ru_maxrss is)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

CHILD = f"""
import resource, sys
sys.path.insert(0, {str(BENCHMARKS)!r})
from peak_memory import peak_rss_gb
print(peak_rss_gb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_a_worker_started_by_a_large_parent_reports_its_own_peak():
    ballast = bytearray(400 * 1024 ** 2)  # the parent holds 400 MB, touched
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split()
    own, inherited = float(out[0]), float(out[1])  # inherited: ru_maxrss, 0.40 GB on this project's kernel
    assert own < 0.2, f"the child's own peak should be a bare interpreter's, got {own:.3f} GB (ru_maxrss {inherited:.3f})"
