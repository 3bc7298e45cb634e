"""RoI Align against the reference's roi_align (the torchvision stand-in the official code ran).

Stored cases come from tools/parity/make_geometry_mask_fixture.py. When the reference shim is
present next to the repository (../shared), random cases are also compared live.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3.ops.roi_align import roi_align
from opensam3.seeded import seeded_value

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "geometry_mask.safetensors"
SHIM = Path(__file__).resolve().parents[2] / "shared" / "reference" / "shim" / "torchvision" / "ops" / "roi_align.py"


def _size(value):
    return value if isinstance(value, int) else tuple(value)


def test_stored_cases():
    with safe_open(str(FIXTURE), framework="pt") as f:
        configs = json.loads(f.metadata()["roi_configs"])
        rois = f.get_tensor("roi.in.rois")
        expected = [f.get_tensor(f"roi.out.{i}") for i in range(len(configs))]
    features = seeded_value("input.roi.features", (2, 4, 11, 13)) * 20.0
    for (size, scale, ratio, aligned), ref in zip(configs, expected):
        out = roi_align(features, rois, _size(size), scale, ratio, aligned)
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() <= 1e-5, (size, scale, ratio, aligned)


def test_list_and_tensor_boxes_agree():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 9, 10, generator=g)
    per_image = [torch.tensor([[1.0, 1.0, 6.0, 5.0], [-2.0, 3.0, 4.0, 12.0]]), torch.tensor([[0.5, 0.5, 9.5, 8.5]])]
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [0, -2.0, 3.0, 4.0, 12.0], [1, 0.5, 0.5, 9.5, 8.5]])
    assert torch.equal(roi_align(features, per_image, 7), roi_align(features, rois, 7))


def test_no_boxes():
    features = torch.randn(2, 5, 8, 8)
    assert roi_align(features, [torch.zeros(0, 4), torch.zeros(0, 4)], 7).shape == (0, 5, 7, 7)
    assert roi_align(features, torch.zeros(0, 5), (2, 3)).shape == (0, 5, 2, 3)


def test_low_precision_features():
    features = torch.randn(1, 4, 12, 12)
    rois = torch.tensor([[0, 1.0, 2.0, 10.0, 9.0]])
    full = roi_align(features, rois, 7)
    half = roi_align(features.bfloat16(), rois, 7)
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().max().item() < 0.05


@pytest.mark.skipif(not SHIM.exists(), reason="reference shim (../shared) not available")
def test_random_cases_against_shim():
    spec = importlib.util.spec_from_file_location("shim_roi_align", SHIM)
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(4):
        height, width = (int(v) for v in torch.randint(3, 16, (2,), generator=g))
        features = torch.randn(2, 3, height, width, generator=g)
        size = torch.tensor([width, height], dtype=torch.float32)
        corner = torch.rand(6, 2, generator=g) * size * 1.4 - 0.2 * size
        # whole-map, tiny, degenerate, oversized and ordinary boxes, some partly outside
        extent = torch.rand(6, 2, generator=g) * size * torch.tensor([[1.0], [0.05], [0.0], [1.5], [0.3], [0.7]])
        rois = torch.cat((torch.randint(0, 2, (6, 1), generator=g).float(), corner, corner + extent), dim=1)
        for ratio in (-1, 0, 2):
            for aligned in (False, True):
                for scale in (1.0, 0.5):
                    for out_size in (7, (3, 5)):
                        ours = roi_align(features, rois, out_size, scale, ratio, aligned)
                        ref = shim.roi_align(features, rois, out_size, scale, ratio, aligned)
                        worst = max(worst, (ours - ref).abs().max().item())
    assert worst <= 1e-5, worst
