"""COCO RLE: hand-made masks and strings written by pycocotools (in the official fixture)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from opensam3.data import rle

FIXTURE = Path(__file__).parent / "fixtures" / "eval" / "image_random.json"


def test_hand_encoded_mask_counts_are_column_major_runs():
    mask = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    # Column-major pixels: 0,0 | 1,1 | 1,0 -> runs: 2 zeros, 3 ones, 1 zero.
    encoded = rle.encode(mask)
    assert encoded["size"] == [2, 3]
    assert rle.rle_counts(encoded) == [2, 3, 1]
    assert rle.area(encoded) == 3
    assert rle.to_bbox(encoded) == [1.0, 0.0, 2.0, 2.0]
    np.testing.assert_array_equal(rle.decode(encoded), mask)


def test_mask_starting_with_foreground_has_leading_zero_run():
    mask = np.ones((2, 2), dtype=bool)
    assert rle.rle_counts(rle.encode(mask)) == [0, 4]
    assert rle.to_bbox(rle.encode(mask)) == [0.0, 0.0, 2.0, 2.0]
    assert rle.to_bbox(rle.encode(np.zeros((3, 3)))) == [0.0, 0.0, 0.0, 0.0]


def test_counts_string_round_trip_with_negative_differences():
    counts = [5, 300, 2, 7, 1000, 1, 0, 40]  # differences to two places back are negative too
    assert rle.string_to_counts(rle.counts_to_string(counts)) == counts


def test_strings_written_by_pycocotools_round_trip_and_match_box_and_area():
    data = json.loads(FIXTURE.read_text())
    anns = data["ground_truths"][0]["annotations"][:40]
    for ann in anns:
        mask = rle.decode(ann["segmentation"])
        assert rle.encode(mask)["counts"] == ann["segmentation"]["counts"]
        assert rle.area(ann["segmentation"]) == ann["area"]
        assert rle.to_bbox(ann["segmentation"]) == ann["bbox"]  # bbox written by pycocotools.toBbox


def test_uncompressed_rle_and_torch_input():
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1:3, 2:4] = True
    compressed = rle.encode(mask)
    uncompressed = {"size": [4, 5], "counts": rle.rle_counts(compressed)}
    assert rle.compress(uncompressed) == compressed
    np.testing.assert_array_equal(rle.decode(uncompressed), mask.numpy())
    assert [r["counts"] for r in rle.encode_many(torch.stack([mask, mask]))] == [compressed["counts"]] * 2


def test_mask_iou_by_hand_including_crowd():
    a = np.zeros((4, 4), bool); a[:2, :2] = True          # 4 px
    b = np.zeros((4, 4), bool); b[:2, :] = True            # 8 px, overlap 4
    iou = rle.mask_iou([rle.encode(a)], [rle.encode(b), rle.encode(b)], [False, True])
    np.testing.assert_allclose(iou, [[4 / 8, 4 / 4]])      # crowd: intersection / detection area
    empty = rle.encode(np.zeros((4, 4), bool))
    assert rle.mask_iou([empty], [empty])[0, 0] == 0.0


def test_box_iou_by_hand():
    iou = rle.box_iou_xywh([[0, 0, 2, 2]], [[1, 1, 2, 2], [5, 5, 1, 1]])
    np.testing.assert_allclose(iou, [[1 / 7, 0.0]])


def test_bad_rle_is_reported():
    with pytest.raises(rle.RleError, match="cover"):
        rle.decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(rle.RleError, match="polygons"):
        rle.rle_counts([[0, 0, 1, 1]])
    with pytest.raises(rle.RleError, match="different sizes"):
        rle.mask_iou([rle.encode(np.ones((2, 2)))], [rle.encode(np.ones((3, 3)))])
