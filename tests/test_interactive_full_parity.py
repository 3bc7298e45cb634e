"""Full-size parity of the interactive image path: an official-layout seeded ``sam3.pt`` (built from
the key manifest as in test_full_parity.py), loaded through our loaders, must reproduce the
official ``predict_inst`` outputs for two clicks stored in tests/fixtures/full_reference.safetensors.

Heavy: the real 848M-parameter model (a few minutes, ~8 GB).
"""

from __future__ import annotations

import pytest
import torch

TOL = 1e-4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def points_output(full_sam, full_reference):
    reference = full_reference
    # The reference was recorded on 2 CPU threads. fp32 GEMM sums depend on the thread split:
    # with 2 threads our outputs are bit-identical; with 1 or 4 the logits (|x| up to ~30) move by
    # ~1.7e-4, exactly as the official code's own outputs move between thread counts.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return full_sam.predict(reference["input.image_uint8_hwc"].numpy(), points=[[320.0, 240.0], [100.0, 100.0]],
                                point_labels=[1, 0], multimask_output=True)
    finally:
        torch.set_num_threads(threads)


def _close(ours, theirs, name):
    assert tuple(ours.shape) == tuple(theirs.shape), f"{name}: {tuple(ours.shape)} != {tuple(theirs.shape)}"
    err = (ours.float() - theirs.float()).abs().max().item()
    assert err <= TOL, f"{name}: max abs error {err:.3g} > {TOL}"


def test_point_prompt_scores_and_logits(points_output, full_reference):
    _close(points_output.iou_scores, full_reference["out.points.ious"], "iou predictions")
    _close(points_output.low_res_logits, full_reference["out.points.low_res_logits"], "low-res logits (288x288)")


def test_point_prompt_masks(points_output, full_reference):
    ours, theirs = points_output.masks, full_reference["out.points.masks"].bool()
    assert ours.shape == theirs.shape
    mismatched = int((ours != theirs).sum())
    assert mismatched == 0, f"{mismatched} of {theirs.numel()} mask pixels differ"
