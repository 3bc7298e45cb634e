"""SA-Co image evaluation: cgF1 family (with the multi-annotation oracle) and COCO mAP."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from opensam3.data import rle
from opensam3.eval import cgf1
from opensam3.eval.errors import EvalInputError
from opensam3.eval.saco_io import ImageGroundTruth, load_image_ground_truth, load_image_predictions

IOU_TYPES = ("segm", "bbox")


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise EvalInputError(f"iou type must be one of {IOU_TYPES}, got {iou_type!r}")


def region_of(entry: dict, iou_type: str, where: str) -> Any:
    """The mask RLE or xywh box that IoU is computed on."""
    if iou_type == "segm":
        if "segmentation" not in entry:
            raise EvalInputError(f"{where} has no 'segmentation'; use --iou-type bbox for box-only files")
        segmentation = entry["segmentation"]
        if not isinstance(segmentation, dict):
            raise EvalInputError(f"{where}: 'segmentation' must be an RLE dict (polygons are not supported)")
        return segmentation
    if "bbox" in entry and entry["bbox"] is not None and len(entry["bbox"]) == 4:
        return entry["bbox"]
    if isinstance(entry.get("segmentation"), dict):
        return rle.to_bbox(entry["segmentation"])
    raise EvalInputError(f"{where} has neither a 4-number 'bbox' nor an RLE 'segmentation'")


def pairwise_iou(dets: Sequence[dict], truths: Sequence[dict], iou_type: str, where: str) -> np.ndarray:
    """(D, G) IoU as pycocotools computes it (crowd truths: intersection over detection area)."""
    crowd = [bool(t.get("iscrowd", 0)) for t in truths]
    det_regions = [region_of(d, iou_type, f"prediction for {where}") for d in dets]
    gt_regions = [region_of(t, iou_type, f"ground-truth annotation of {where}") for t in truths]
    try:
        if iou_type == "segm":
            return rle.mask_iou(det_regions, gt_regions, crowd)
        return rle.box_iou_xywh(det_regions, gt_regions, crowd)
    except rle.RleError as exc:
        raise EvalInputError(f"{where}: {exc}") from exc


def group_predictions(preds: Sequence[dict], gt: ImageGroundTruth) -> dict[Any, list[dict]]:
    """Predictions per pair id, in the GT's category order; unknown pair ids are an error."""
    known_categories = set(gt.category_ids)
    by_image: dict[Any, dict[Any, list[dict]]] = defaultdict(dict)
    for index, pred in enumerate(preds):
        if pred["image_id"] not in gt.images:
            raise EvalInputError(
                f"predictions[{index}] has image_id {pred['image_id']!r}, which is not in the ground truth "
                f"{gt.source}; predictions must use the ids of that file's 'images' (image-phrase pairs)"
            )
        category = pred.get("category_id", gt.category_ids[0] if gt.category_ids else None)
        # Like COCOeval, a prediction whose category is not in the GT categories is never seen.
        if category in known_categories:
            by_image[pred["image_id"]].setdefault(category, []).append(pred)
    return {i: [p for c in gt.category_ids for p in groups.get(c, [])] for i, groups in by_image.items()}


def evaluation_ids(gts: Sequence[ImageGroundTruth]) -> list[Any]:
    """Pairs that are instance-exhaustive in the first GT and in every other GT, in file order."""
    excluded: set = set()
    for other in gts[1:]:
        excluded |= {i for i, img in other.images.items() if not img.get("is_instance_exhaustive", 1)}
    ids = [i for i in gts[0].exhaustive_ids() if i not in excluded]
    for other in gts[1:]:
        missing = [i for i in ids if i not in other.images]
        if missing:
            raise EvalInputError(
                f"ground-truth files do not describe the same pairs: {len(missing)} image id(s) of "
                f"{gts[0].source} are missing from {other.source} (first: {missing[:3]}); pass the "
                f"annotation files of one dataset together"
            )
    return ids


def score_image_pair(preds: Sequence[dict], truths: Sequence[dict], iou_type: str, where: str) -> cgf1.PairOutcome:
    kept = [p for p in preds if p["score"] >= cgf1.SCORE_THRESHOLD]
    scored_truths = [t for t in truths if not t.get("iscrowd", 0)]
    ious = pairwise_iou(kept, scored_truths, iou_type, where) if kept and scored_truths else None
    if ious is None:
        ious = np.zeros((len(kept), len(scored_truths)))
    return cgf1.score_pair(ious, len(kept), len(scored_truths))


def evaluate_image_cgf1(
    gt_files: Sequence[Any], predictions: Any, iou_type: str = "segm"
) -> dict[str, float]:
    """cgF1 family of image predictions against one or more GT files (paths or loaded JSON).

    Several GT files give the oracle: per pair, the annotation the predictions agree with best.
    Returns the official keys, e.g. {'cgF1_eval_segm_cgF1': ..., 'cgF1_eval_segm_IL_MCC': ...}.
    """
    _check_iou_type(iou_type)
    if not gt_files:
        raise EvalInputError("at least one ground-truth file is needed")
    gts = [g if isinstance(g, ImageGroundTruth) else load_image_ground_truth(g) for g in gt_files]
    preds = predictions if isinstance(predictions, list) else load_image_predictions(predictions)
    preds_by_image = group_predictions(load_image_predictions(preds), gts[0])
    outcomes = []
    for image_id in evaluation_ids(gts):
        image_preds = preds_by_image.get(image_id, [])
        candidates = [
            score_image_pair(image_preds, gt.truths_for(image_id), iou_type, f"image_id {image_id!r}") for gt in gts
        ]
        outcomes.append(cgf1.select_oracle(candidates))
    return cgf1.summarize(cgf1.accumulate(outcomes), iou_type)


def _prediction_areas(preds: Sequence[dict]) -> list[float]:
    # pycocotools' loadRes takes the box area when the first result has a box, else the mask area.
    if preds and preds[0].get("bbox"):
        return [float(p["bbox"][2]) * float(p["bbox"][3]) for p in preds]
    return [float(rle.area(p["segmentation"])) if isinstance(p.get("segmentation"), dict) else 0.0 for p in preds]


def _truth_area(ann: dict) -> float:
    if "area" in ann:
        return float(ann["area"])
    if isinstance(ann.get("segmentation"), dict):
        return float(rle.area(ann["segmentation"]))
    return float(ann["bbox"][2]) * float(ann["bbox"][3]) if ann.get("bbox") else 0.0


def evaluate_image_map(gt_file: Any, predictions: Any, iou_type: str = "segm") -> dict[str, float]:
    """COCO mAP (pycocotools COCOeval defaults, per category) over every pair of the GT file.

    Returns keys like 'coco_eval_segm_AP', 'coco_eval_segm_AP50', ..., 'coco_eval_segm_AR100'.
    """
    from opensam3.eval.coco_map import Cell, average_precision

    _check_iou_type(iou_type)
    gt = gt_file if isinstance(gt_file, ImageGroundTruth) else load_image_ground_truth(gt_file)
    preds = load_image_predictions(predictions if isinstance(predictions, list) else predictions)
    areas = _prediction_areas(preds)
    for pred, pred_area in zip(preds, areas):
        pred["_area"] = pred_area
    preds_by_image = group_predictions(preds, gt)
    image_ids = sorted(gt.images)
    cells = []
    for category in gt.category_ids:
        row = []
        for image_id in image_ids:
            truths = [t for t in gt.truths_for(image_id) if t["category_id"] == category]
            dets = [p for p in preds_by_image.get(image_id, []) if p.get("category_id") == category]

            def iou_fn(order: list[int], dets=dets, truths=truths, image_id=image_id) -> np.ndarray:
                return pairwise_iou([dets[i] for i in order], truths, iou_type, f"image_id {image_id!r}")

            row.append(Cell(
                truth_ids=[t.get("id", i + 1) for i, t in enumerate(truths)],
                truth_crowd=[bool(t.get("iscrowd", 0)) for t in truths],
                truth_area=[_truth_area(t) for t in truths],
                det_scores=[float(d["score"]) for d in dets],
                det_area=[d["_area"] for d in dets],
                iou_fn=iou_fn,
            ))
        cells.append(row)
    for pred in preds:
        pred.pop("_area", None)
    stats = average_precision(cells)
    return {f"coco_eval_{iou_type}_{name}": value for name, value in stats.items()}
