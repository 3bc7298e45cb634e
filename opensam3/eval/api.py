"""Top-level evaluation entry points (re-exported by opensam3.eval)."""

from __future__ import annotations

from typing import Any, Sequence

from opensam3.eval.image_eval import evaluate_image_cgf1, evaluate_image_map
from opensam3.eval.saco_io import load_image_ground_truth, load_image_predictions
from opensam3.eval.video_eval import evaluate_video


def evaluate_images(gt_files: Any, predictions: Any, iou_type: str = "segm", with_map: bool = True) -> dict[str, float]:
    """cgF1 family (oracle over several GT files) and, optionally, COCO mAP on the first GT file."""
    files = list(gt_files) if isinstance(gt_files, (list, tuple)) else [gt_files]
    gts = [load_image_ground_truth(g) for g in files]
    preds = load_image_predictions(predictions)
    results = evaluate_image_cgf1(gts, preds, iou_type)
    if with_map:
        results.update(evaluate_image_map(gts[0], preds, iou_type))
    return results


def evaluate_videos(gt_file: Any, predictions: Any, iou_types: Sequence[str] = ("bbox", "segm")) -> dict[str, Any]:
    """SA-Co/VEval results: {'dataset_results': {...}, 'video_np_results': [...]}."""
    return evaluate_video(gt_file, predictions, iou_types=iou_types)
