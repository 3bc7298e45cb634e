"""Image cgF1 family and COCO mAP: hand-computed branches and official-evaluator agreement."""

import json
from pathlib import Path

import numpy as np
import pytest

from opensam3.data import rle
from opensam3.eval import EvalInputError, evaluate_image_cgf1, evaluate_image_map, evaluate_images
from opensam3.eval.cgf1 import IOU_THRESHOLDS

FIXTURE = Path(__file__).parent / "fixtures" / "eval" / "image_random.json"
K = "cgF1_eval_segm_"


def box_mask(y0, y1, x0, x1, size=(10, 10)):
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return rle.encode(m)


def gt_file(pairs):
    """pairs: {pair_id: [rle, ...]} -> SA-Co GT dict (all pairs exhaustive)."""
    images = [{"id": i, "file_name": f"{i}.jpg", "text_input": "x", "height": 10, "width": 10,
               "is_instance_exhaustive": 1} for i in pairs]
    anns = [{"id": n + 1, "image_id": i, "category_id": 1, "segmentation": r, "bbox": rle.to_bbox(r), "iscrowd": 0}
            for n, (i, r) in enumerate((i, r) for i, rs in pairs.items() for r in rs)]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def pred(image_id, r, score=0.9):
    return {"image_id": image_id, "category_id": 1, "segmentation": r, "score": score}


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("mode", ["single", "oracle"])
def test_cgf1_agrees_with_official_evaluator(iou_type, mode):
    data = json.loads(FIXTURE.read_text())
    gts = data["ground_truths"][:1] if mode == "single" else data["ground_truths"]
    ours = evaluate_image_cgf1(gts, data["predictions"], iou_type)
    official = data["official"][f"cgf1_{mode}_{iou_type}"]
    assert set(ours) == set(official)
    for key, value in official.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_coco_map_agrees_with_pycocotools(iou_type):
    data = json.loads(FIXTURE.read_text())
    ours = list(evaluate_image_map(data["ground_truths"][0], data["predictions"], iou_type).values())
    np.testing.assert_allclose(ours, data["official"][f"coco_map_{iou_type}"], atol=1e-9)


def test_true_negative_only_counts_in_il_mcc():
    # Pair 1: perfect match (IoU 1). Pair 2: no truth, no kept prediction (score below 0.5).
    a = box_mask(0, 4, 0, 4)
    res = evaluate_image_cgf1([gt_file({1: [a], 2: []})], [pred(1, a), pred(2, a, score=0.4)])
    eps = 1e-4
    f1 = 2 * (1 / (1 + eps)) ** 2 / (2 / (1 + eps) + eps)
    assert res[K + "positive_micro_F1"] == pytest.approx(f1, abs=1e-12)
    assert res[K + "IL_MCC"] == pytest.approx(1 / (1 + 1e-6), abs=1e-12)   # TP=1, TN=1
    assert res[K + "cgF1"] == pytest.approx(f1 / (1 + 1e-6), abs=1e-12)


def test_prediction_only_pair_is_an_image_level_false_positive():
    a = box_mask(0, 4, 0, 4)
    res = evaluate_image_cgf1([gt_file({1: [a], 2: []})], [pred(1, a), pred(2, a)])
    # IL: TP=1, FP=1 -> MCC numerator 0. pmF1 ignores the FP of the negative pair, F1 does not.
    assert res[K + "IL_MCC"] == 0.0 and res[K + "cgF1"] == 0.0
    assert res[K + "IL_FPR"] == pytest.approx(1 / (1 + 1e-6))
    assert res[K + "positive_micro_precision"] == pytest.approx(1 / (1 + 1e-4))
    assert res[K + "precision"] == pytest.approx(1 / (2 + 1e-4))


def test_truth_only_pair_is_a_false_negative():
    a, b = box_mask(0, 4, 0, 4), box_mask(5, 9, 5, 9)
    res = evaluate_image_cgf1([gt_file({1: [a], 2: [b]})], [pred(1, a)])
    assert res[K + "IL_recall"] == pytest.approx(1 / (2 + 1e-6))
    assert res[K + "recall"] == pytest.approx(1 / (2 + 1e-4))                # the missed truth counts
    assert res[K + "positive_macro_F1"] == pytest.approx(2 * (1 / (1 + 1e-4)) ** 2 / (2 / (1 + 1e-4) + 1e-4))


def test_partial_match_counts_per_threshold():
    truth = box_mask(0, 10, 0, 10)          # 100 px
    guess = box_mask(0, 10, 0, 7)           # 70 px inside: IoU 0.70
    res = evaluate_image_cgf1([gt_file({1: [truth]})], [pred(1, guess)])
    tp = (0.70 >= IOU_THRESHOLDS).astype(float)   # TP at 0.50..0.70 (5 of 10 thresholds)
    assert tp.sum() == 5
    p = tp / (1 + 1e-4)
    f1 = 2 * p * p / (p + p + 1e-4)
    assert res[K + "positive_micro_F1"] == pytest.approx(f1.mean(), abs=1e-12)
    assert res[K + "positive_micro_F1@0.5"] == pytest.approx(f1[0], abs=1e-12)
    assert res[K + "positive_micro_F1@0.75"] == 0.0


def test_hungarian_beats_greedy_matching():
    # Prediction 0 overlaps both truths; greedy on pred 0 would steal truth A from prediction 1.
    ta, tb = box_mask(0, 10, 0, 5), box_mask(0, 10, 5, 10)
    p0, p1 = box_mask(0, 10, 1, 6), box_mask(0, 10, 0, 4)   # IoU(p0,ta)=4/6, (p0,tb)=1/9, (p1,ta)=4/5
    res = evaluate_image_cgf1([gt_file({1: [ta, tb]})], [pred(1, p0), pred(1, p1)])
    # Optimum: p1-ta (0.8) + p0-tb (1/9): TP=1 at thresholds <= 0.8.
    assert res[K + "recall@0.5"] == pytest.approx(1 / (2 + 1e-4))


def test_oracle_takes_the_best_annotation_and_prefers_true_negatives():
    a = box_mask(0, 4, 0, 4)
    wrong = box_mask(6, 10, 6, 10)
    gt1, gt2 = gt_file({1: [wrong], 2: [a]}), gt_file({1: [a], 2: []})
    preds = [pred(1, a)]
    single = evaluate_image_cgf1([gt1], preds)
    oracle = evaluate_image_cgf1([gt1, gt2], preds)
    # Pair 1 wrong (IoU 0), pair 2 missed: no TP at any threshold, MCC 0 (no negatives at all).
    assert single[K + "positive_micro_F1"] == 0.0 and single[K + "IL_MCC"] == 0.0
    # Oracle: pair 1 perfect (second file), pair 2 true negative (second file) -> like a perfect run.
    perfect = evaluate_image_cgf1([gt2], preds)
    assert oracle == perfect and oracle[K + "IL_MCC"] > 0.99


def test_non_exhaustive_pairs_are_skipped():
    a = box_mask(0, 4, 0, 4)
    gt = gt_file({1: [a], 2: [a]})
    gt["images"][1]["is_instance_exhaustive"] = 0
    assert evaluate_image_cgf1([gt], [pred(1, a)]) == evaluate_image_cgf1([gt_file({1: [a]})], [pred(1, a)])


def test_bad_inputs_give_clear_errors(tmp_path):
    a = box_mask(0, 4, 0, 4)
    with pytest.raises(EvalInputError, match="not found"):
        evaluate_images([tmp_path / "missing.json"], [])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(EvalInputError, match="not valid JSON"):
        evaluate_images([broken], [])
    with pytest.raises(EvalInputError, match="image_id 99"):
        evaluate_image_cgf1([gt_file({1: [a]})], [pred(99, a)])
    with pytest.raises(EvalInputError, match="same pairs"):
        evaluate_image_cgf1([gt_file({1: [a], 2: []}), gt_file({1: [a]})], [])
    with pytest.raises(EvalInputError, match="size"):
        evaluate_image_cgf1([gt_file({1: [a]})], [pred(1, rle.encode(np.ones((5, 5), bool)))])
