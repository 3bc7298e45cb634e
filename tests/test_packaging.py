"""`pip install .` next to torch 2.13.0 pulls no torchvision, no triton and no CUDA packages."""

import json
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_PREFIXES = ("torchvision", "triton", "nvidia-", "cuda-")

pytestmark = pytest.mark.slow


def test_install_pulls_no_gpu_stack(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    report = tmp_path / "report.json"
    subprocess.run([python, "-m", "pip", "install", "-q", "--dry-run", "--report", str(report), str(ROOT)], check=True)
    planned = [item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]]
    assert "opensam3" in planned
    assert "torch" not in planned, "installing opensam3 must keep the torch already there"
    bad = [name for name in planned if name.startswith(FORBIDDEN_PREFIXES)]
    assert not bad, f"pip would install GPU packages: {bad}"
    version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("2.13.0"), version.stdout
