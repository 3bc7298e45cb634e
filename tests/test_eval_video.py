"""Video metrics: official-evaluator agreement, the published toy eval_res, hand cases, J&F."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from opensam3.data import rle
from opensam3.eval import EvalInputError, evaluate_video, j_and_f

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
TOY = FIXTURES / "toy"


def _assert_results_equal(ours, official, tol=1e-9):
    for key, value in official.items():
        assert key in ours, key
        if math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=tol), key


def test_random_video_agrees_with_official_evaluators():
    data = json.loads((FIXTURES / "video_random.json").read_text())
    ours = evaluate_video(data["ground_truth"], data["predictions"])
    official = data["official"]
    assert len(official["dataset_results"]) == 44   # cgF1 family, phrase HOTA, phrase AP, mAP x 2 IoU types
    _assert_results_equal(ours["dataset_results"], official["dataset_results"])
    per_pair = {f"{r['video_id']},{r['category_id']}": r for r in ours["video_np_results"]}
    for pair, values in official["video_np_results"].items():
        _assert_results_equal(per_pair[pair], values)


def test_toy_files_reproduce_published_official_scores():
    """The official eval_res of the SAM 3 repository (all metrics except TETA)."""
    published = json.loads((TOY / "toy_saco_veval_sav_test_eval_res.json").read_text())
    ours = evaluate_video(TOY / "toy_saco_veval_sav_test_gt.json", TOY / "toy_saco_veval_sav_test_pred.json")
    expected = {k: v for k, v in published["dataset_results"].items() if "teta" not in k and not
                any(k.endswith(s) for s in ("loc_a", "assoc_a", "cls_a", "loc_re", "loc_pr", "assoc_re",
                                            "assoc_pr", "cls_re", "cls_pr"))}
    assert len(expected) == 78
    _assert_results_equal(ours["dataset_results"], expected)
    per_pair = {(r["video_id"], r["category_id"]): r for r in ours["video_np_results"]}
    for entry in published["video_np_results"]:
        values = {k: v for k, v in entry.items() if k not in ("video_id", "category_id")}
        _assert_results_equal(per_pair[(entry["video_id"], entry["category_id"])], values)


def _masklet(frames):
    return [rle.encode(f) if f is not None else None for f in frames]


def test_spatio_temporal_iou_and_negative_pair_by_hand():
    full = np.ones((4, 4), bool)
    half = np.zeros((4, 4), bool); half[:, :2] = True
    gt = {"videos": [{"id": 1, "file_names": ["a", "b"], "height": 4, "width": 4}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": _masklet([full, full]),
                           "bboxes": [[0, 0, 4, 4]] * 2, "areas": [16, 16], "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "video_np_pairs": [{"video_id": 1, "category_id": 1, "num_masklets": 1},
                             {"video_id": 1, "category_id": 2, "num_masklets": 0}]}
    # Frame 1 half overlap, frame 2 missing: IoU = 8 / (16 + 16) = 0.25 -> no TP at 0.5.
    preds = [{"video_id": 1, "category_id": 1, "segmentations": _masklet([half, None]),
              "bboxes": [[0, 0, 2, 4], None], "areas": [8, None], "score": 0.9}]
    res = evaluate_video(gt, preds, iou_types=("segm",), metrics=("cgf1",))["dataset_results"]
    assert res["video_mask_cgF1_eval_segm_recall@0.5"] == 0.0
    assert res["video_mask_cgF1_eval_segm_IL_MCC"] == pytest.approx(1 / (1 + 1e-6))  # TP + TN (negative pair)
    preds[0]["segmentations"] = _masklet([full, half])   # 24 / 32 = 0.75 -> TP up to 0.75
    res = evaluate_video(gt, preds, iou_types=("segm",), metrics=("cgf1",))["dataset_results"]
    assert res["video_mask_cgF1_eval_segm_recall@0.75"] == pytest.approx(1 / (1 + 1e-4))
    assert res["video_mask_cgF1_eval_segm_recall@0.5"] == pytest.approx(1 / (1 + 1e-4))


def test_unknown_video_is_a_clear_error():
    gt = {"videos": [{"id": 1, "file_names": ["a"]}], "annotations": [], "categories": []}
    with pytest.raises(EvalInputError, match="video_id 7"):
        evaluate_video(gt, [{"video_id": 7, "category_id": 1, "score": 1.0, "segmentations": [None]}])


def test_j_and_f_by_hand():
    truth = np.zeros((20, 20), bool); truth[5:15, 5:15] = True
    assert j_and_f([truth], [truth]) == {"J": 1.0, "F": 1.0, "J&F": 1.0}
    shifted = np.zeros((20, 20), bool); shifted[5:15, 10:20] = True
    scores = j_and_f([shifted, np.zeros_like(truth)], [truth, np.zeros_like(truth)])
    assert scores["J"] == pytest.approx((50 / 150 + 1.0) / 2)   # empty/empty frame scores 1
    assert 0 < scores["F"] < 1
