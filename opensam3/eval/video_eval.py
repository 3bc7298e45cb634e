"""SA-Co/VEval evaluation: video cgF1 family, phrase AP, class mAP and phrase HOTA.

Every (video, noun phrase) pair is one item, like an image-phrase pair for images. Items are
numbered like the official tools do: the sorted set of pairs that have predictions or truths,
then negative pairs from `video_np_pairs` (needed for IL_MCC) in file order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from opensam3.eval import cgf1, hota
from opensam3.eval.coco_map import VIDEO_AREA_RANGES, Cell, average_precision
from opensam3.eval.errors import EvalInputError
from opensam3.eval.masklets import mean_area, spatio_temporal_iou
from opensam3.eval.saco_io import VideoGroundTruth, load_video_ground_truth, load_video_predictions

Pair = tuple[Any, Any]  # (video_id, category_id)
_NAMES = {"segm": "mask", "bbox": "bbox"}


def enumerate_pairs(gt: VideoGroundTruth, preds: Sequence[dict], with_negatives: bool) -> list[Pair]:
    """Evaluation items in the official order."""
    try:
        pairs = sorted({(p["video_id"], p["category_id"]) for p in preds} |
                       {(a["video_id"], a["category_id"]) for a in gt.masklets})
    except TypeError as exc:
        raise EvalInputError("video_id and category_id values must be of one comparable type (all integers)") from exc
    if with_negatives and gt.video_np_pairs is not None:
        known = set(pairs)
        for entry in gt.video_np_pairs:
            pair = (entry["video_id"], entry["category_id"])
            if pair not in known:
                known.add(pair)
                pairs.append(pair)
    return pairs


def _group(entries: Sequence[dict]) -> dict[Pair, list[dict]]:
    grouped: dict[Pair, list[dict]] = defaultdict(list)
    for entry in entries:
        grouped[(entry["video_id"], entry["category_id"])].append(entry)
    return grouped


def _where(pair: Pair) -> str:
    return f"video_id {pair[0]!r}, category_id {pair[1]!r}"


def _load(gt_file: Any, predictions: Any) -> tuple[VideoGroundTruth, list[dict]]:
    gt = gt_file if isinstance(gt_file, VideoGroundTruth) else load_video_ground_truth(gt_file)
    return gt, load_video_predictions(predictions, gt)


def video_cgf1(gt: VideoGroundTruth, preds: Sequence[dict], iou_type: str) -> tuple[dict, list[tuple[Pair, cgf1.PairOutcome]]]:
    """Accumulated cgF1 family over video-phrase pairs, plus the outcome of every pair."""
    preds_by_pair, truths_by_pair = _group(preds), _group(gt.masklets)
    outcomes = []
    for pair in enumerate_pairs(gt, preds, with_negatives=True):
        kept = [p for p in preds_by_pair.get(pair, []) if p["score"] >= cgf1.SCORE_THRESHOLD]
        truths = [t for t in truths_by_pair.get(pair, []) if not t.get("iscrowd", 0)]
        ious = spatio_temporal_iou(kept, truths, iou_type, _where(pair))
        outcomes.append((pair, cgf1.score_pair(ious, len(kept), len(truths))))
    return cgf1.accumulate(o for _, o in outcomes), outcomes


def _official_demo_keys(summary: dict[str, float], iou_type: str) -> dict[str, float]:
    """The dataset-level keys the official VideoCGF1Evaluator writes."""
    get = lambda name: summary[f"cgF1_eval_{iou_type}_{name}"]  # noqa: E731
    prefix = f"video_{_NAMES[iou_type]}_demo"
    out = {
        f"{prefix}_cgf1_micro_50_95": get("cgF1"),
        f"{prefix}_ilmcc_50_95": get("IL_MCC"),
        f"{prefix}_positive_micro_f1_50_95": get("positive_micro_F1"),
    }
    for tag, thr in (("50", 0.5), ("75", 0.75)):
        cg, pm = get(f"cgF1@{thr}"), get(f"positive_micro_F1@{thr}")
        out[f"{prefix}_cgf1_micro_{tag}"] = cg
        # The official tool derives IL_MCC at one threshold as cgF1 / pmF1 (NaN when pmF1 is 0).
        out[f"{prefix}_ilmcc_{tag}"] = float(np.float64(cg) / np.float64(pm)) if pm != 0 else float("nan")
        out[f"{prefix}_positive_micro_f1_{tag}"] = pm
    return out


def _legacy_demo_keys(summary: dict[str, float], accumulated: dict, iou_type: str) -> dict[str, float]:
    """Keys of earlier official releases (as in the published toy eval_res file).

    There 'pmf1' is the positive macro F1 and 'cgf1' = pmf1 x IL_MCC; 'w0dt' counts positive
    pairs without any prediction as F1 = 0.
    """
    get = lambda name: summary[f"cgF1_eval_{iou_type}_{name}"]  # noqa: E731
    prefix = f"video_{_NAMES[iou_type]}_demo"
    il_mcc = get("IL_MCC")
    out = {}
    for tag, suffix in (("50_95", ""), ("50", "@0.5"), ("75", "@0.75")):
        out[f"{prefix}_precision_{tag}"] = get(f"precision{suffix}")
        out[f"{prefix}_recall_{tag}"] = get(f"recall{suffix}")
        out[f"{prefix}_f1_{tag}"] = get(f"F1{suffix}")
        out[f"{prefix}_pmf1_{tag}"] = get(f"positive_macro_F1{suffix}")
        out[f"{prefix}_cgf1_{tag}"] = get(f"positive_macro_F1{suffix}") * il_mcc
    with_missed = float(np.mean(accumulated["positive_macro_F1_with_missed"]))
    out[f"{prefix}_pmf1_w0dt_50_95"] = with_missed
    out[f"{prefix}_cgf1_w0dt_50_95"] = with_missed * il_mcc
    return out


def _pair_f1_details(outcome: cgf1.PairOutcome, iou_type: str) -> dict[str, float]:
    name = _NAMES[iou_type]
    n = len(cgf1.IOU_THRESHOLDS)
    zeros = np.zeros(n, dtype=np.int64)
    tps = outcome.tps if outcome.tps is not None else zeros
    fps = outcome.fps if outcome.fps is not None else zeros
    fns = outcome.fns if outcome.fns is not None else zeros
    denominator = 2 * tps + fps + fns
    f1 = np.where(denominator > 0, 2 * tps / np.maximum(denominator, 1), 1.0)
    i50 = int(np.where(cgf1.IOU_THRESHOLDS == 0.5)[0][0])
    i75 = int(np.where(cgf1.IOU_THRESHOLDS == 0.75)[0][0])
    out = {}
    for stat, values in (("TP", tps), ("FP", fps), ("FN", fns), ("F1", f1)):
        out[f"{name}_{stat}_50_95"] = float(values.mean())
        out[f"{name}_{stat}_50"] = float(values[i50])
        out[f"{name}_{stat}_75"] = float(values[i75])
    return out


def _phrase_ap_cells(gt: VideoGroundTruth, preds: Sequence[dict], iou_type: str, pairs: Sequence[Pair]) -> list[list[Cell]]:
    preds_by_pair, truths_by_pair = _group(preds), _group(gt.masklets)
    row = [_cell(preds_by_pair.get(p, []), truths_by_pair.get(p, []), iou_type, _where(p)) for p in pairs]
    return [row]


def _cell(dets: list[dict], truths: list[dict], iou_type: str, where: str) -> Cell:
    def iou_fn(order: list[int]) -> np.ndarray:
        return spatio_temporal_iou([dets[i] for i in order], truths, iou_type, where)

    return Cell(
        truth_ids=[t.get("id", i + 1) for i, t in enumerate(truths)],
        truth_crowd=[bool(t.get("iscrowd", 0)) for t in truths],
        truth_area=[mean_area(t) for t in truths],
        # YT-VIS results with boxes get their size from the boxes (missing frames count 0).
        det_area=[float(np.mean([b[2] * b[3] if b is not None else 0 for b in d["bboxes"]])) if d.get("bboxes")
                  else mean_area(d) for d in dets],
        det_scores=[float(d["score"]) for d in dets],
        iou_fn=iou_fn,
    )


def _class_map_cells(gt: VideoGroundTruth, preds: Sequence[dict], iou_type: str) -> list[list[Cell]]:
    by_video_cat_pred, by_video_cat_gt = _group(preds), _group(gt.masklets)
    video_ids = sorted(gt.videos)
    return [
        [_cell(by_video_cat_pred.get((v, c), []), by_video_cat_gt.get((v, c), []), iou_type, _where((v, c)))
         for v in video_ids]
        for c in gt.category_ids
    ]


def evaluate_video(
    gt_file: Any,
    predictions: Any,
    iou_types: Sequence[str] = ("bbox", "segm"),
    metrics: Sequence[str] = ("map", "phrase_ap", "hota", "cgf1"),
) -> dict[str, Any]:
    """Official-style SA-Co/VEval results: {'dataset_results': {...}, 'video_np_results': [...]}.

    Keys follow the official eval_res files (e.g. 'video_mask_demo_cgf1_micro_50_95',
    'video_mask_all_phrase_HOTA', 'video_mask_phrase_ap_50_95', 'video_mask_mAP_50_95'), and
    'video_<type>_cgF1_eval_<type>_*' hold the complete cgF1 family.
    """
    gt, preds = _load(gt_file, predictions)
    results: dict[str, float] = {}
    per_pair: dict[Pair, dict[str, float]] = defaultdict(dict)
    for iou_type in iou_types:
        if iou_type not in _NAMES:
            raise EvalInputError(f"iou type must be 'segm' or 'bbox', got {iou_type!r}")
        name = _NAMES[iou_type]
        if "map" in metrics:
            stats = average_precision(_class_map_cells(gt, preds, iou_type), VIDEO_AREA_RANGES)
            results[f"video_{name}_mAP_50_95"] = stats["AP"]
        if "phrase_ap" in metrics:
            pairs = enumerate_pairs(gt, preds, with_negatives=False)
            stats = average_precision(_phrase_ap_cells(gt, preds, iou_type, pairs), VIDEO_AREA_RANGES)
            for tag, key in (("50_95", "AP"), ("50", "AP50"), ("75", "AP75")):
                results[f"video_{name}_phrase_ap_{tag}"] = stats[key]
        if "hota" in metrics:
            combined, seq_results = hota.phrase_hota(gt, preds, iou_type)
            for field in hota.REPORTED_FIELDS:
                results[f"video_{name}_all_phrase_{field}"] = float(np.mean(combined[field]))
            for pair, seq in seq_results:
                per_pair[pair].update({f"{name}_{f}": float(np.mean(seq[f])) for f in hota.REPORTED_FIELDS})
        if "cgf1" in metrics:
            accumulated, outcomes = video_cgf1(gt, preds, iou_type)
            summary = cgf1.summarize(accumulated, iou_type)
            if gt.video_np_pairs is not None:
                results.update(_official_demo_keys(summary, iou_type))
                results.update(_legacy_demo_keys(summary, accumulated, iou_type))
            results.update({f"video_{name}_{k}": v for k, v in summary.items()})
            for pair, outcome in outcomes:
                per_pair[pair].update(_pair_f1_details(outcome, iou_type))
    return {
        "dataset_results": results,
        "video_np_results": [{"video_id": v, "category_id": c, **r} for (v, c), r in per_pair.items()],
    }
