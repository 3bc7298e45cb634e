"""Shared fixtures: a tiny SAM 3 with the reference fixture's seeded weights."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from opensam3 import TINY, Sam3, build_model
from opensam3.seeded import seeded_state_dict

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_state():
    with safe_open(str(FIXTURES / "tiny_reference.safetensors"), framework="pt") as handle:
        shapes = json.loads(handle.metadata()["state_dict_shapes"])
    return seeded_state_dict(shapes)


@pytest.fixture(scope="session")
def tiny_sam(tiny_state):
    return Sam3(build_model(TINY, tiny_state), confidence_threshold=0.0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_sam, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    tiny_sam.save(path)
    return path


@pytest.fixture(scope="session")
def sample_image():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(90, 130, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tiny_interactive_checkpoint(tmp_path_factory):
    """A tiny model with the tracker neck and tracker heads (seeded), saved like a user would."""
    import dataclasses

    from opensam3.model.tracker.config import TrackerHeadsConfig
    from opensam3.model.tracker.heads import TrackerHeads
    from opensam3.seeded import seed_module

    config = dataclasses.replace(TINY, vision=dataclasses.replace(TINY.vision, tracker_neck=True))
    model = build_model(config)
    seed_module(model)
    heads = TrackerHeads(TrackerHeadsConfig.from_model_config(config))
    seed_module(heads, prefix="tracker.")
    path = tmp_path_factory.mktemp("tiny_interactive") / "tiny_interactive.safetensors"
    Sam3(model, tracker=heads).save(path)
    return path


# The official code's own fp32 outputs differ between CPU kernel families by up to ~1e-3 at
# full size (FPN values reach ~385, so last-bit differences in MKL/oneDNN summation order add
# up), so a 1e-4 comparison is only meaningful against a fixture made on the same kind of CPU.
# Each file below is shared/reference/full_reference.py run on such a machine. AVX-512 machines
# differ too: MKL and oneDNN take other code paths on Intel (AMX) than on AMD, and the official
# outputs of the two differ by the same ~1e-3.
# Keys: (capability, vendor); (capability, None) is the fixture for any other vendor.
FULL_REFERENCE_BY_CPU = {
    ("AVX512", "AuthenticAMD"): "full_reference.safetensors",
    ("AVX512", "GenuineIntel"): "full_reference_intel.safetensors",
    ("AVX512", None): "full_reference.safetensors",
    ("AVX2", None): "full_reference_avx2.safetensors",
}


def _cpu_vendor() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def full_reference_path() -> Path:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    name = FULL_REFERENCE_BY_CPU.get((capability, _cpu_vendor())) or FULL_REFERENCE_BY_CPU.get((capability, None))
    if name is None:
        pytest.fail(f"no full-size reference fixture for CPU capability {capability!r}; make one with "
                    f"shared/reference/run.sh full_reference.py tests/fixtures/full_reference_<cpu>.safetensors "
                    f"BPE and add it to FULL_REFERENCE_BY_CPU in tests/conftest.py")
    return FIXTURES / name


@pytest.fixture(scope="session")
def full_reference():
    """Outputs of the official code for the full-size model on this kind of CPU (see
    tests/test_full_parity.py)."""
    with safe_open(str(full_reference_path()), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


@pytest.fixture(scope="session")
def full_checkpoint(tmp_path_factory):
    """An official-layout sam3.pt with the seeded rule applied to every key of the manifest.

    $OPENSAM3_SEEDED_CHECKPOINT may name a prebuilt one (building takes ~30 s and 3.4 GB of disk)."""
    import os

    import torch

    from opensam3.seeded import seeded_value

    prebuilt = os.environ.get("OPENSAM3_SEEDED_CHECKPOINT")
    if prebuilt:
        return Path(prebuilt)
    manifest = json.loads((FIXTURES / "sam3_checkpoint_manifest.json").read_text())
    state = {k: seeded_value(k, v["shape"]) for k, v in manifest.items() if v["dtype"] == "float32"}
    path = tmp_path_factory.mktemp("full") / "sam3.pt"
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="session")
def full_sam(full_checkpoint):
    """The full-size model (detector and tracker heads) loaded through opensam3.load."""
    import opensam3

    return opensam3.load(full_checkpoint)
