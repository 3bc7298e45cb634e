"""The SA-Co cgF1 family, shared by image and video evaluation.

Per evaluation item (an image-phrase or video-phrase pair): keep predictions with score >= 0.5,
match them one-to-one to non-crowd truths by Hungarian assignment maximising IoU, and count at
every IoU threshold 0.50:0.05:0.95 TP (matched with IoU >= t), FP, FN. Over all items:
precision/recall/F1 (micro), positive micro F1 (pmF1: FPs only from items with truths),
positive macro F1, image-level (IL_) confusion counts with MCC, and cgF1 = pmF1 x IL_MCC.
The small epsilons (1e-4 for instance metrics, 1e-6 for image-level ones) are part of the
official definition and are kept so numbers agree to the last digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from opensam3.eval.matching import linear_sum_assignment

# Same construction as COCOeval's params.iouThrs, so 0.5 and 0.75 are found by equality.
IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
SCORE_THRESHOLD = 0.5
_EPS = 1e-4
_IL_EPS = 1e-6

# (name, image_level, iou_threshold) in the order the official summary reports them.
CGF1_METRICS: tuple[tuple[str, bool, float | None], ...] = tuple(
    [(n, False, None) for n in ("cgF1", "precision", "recall", "F1", "positive_macro_F1",
                                "positive_micro_F1", "positive_micro_precision")]
    + [(n, True, None) for n in ("IL_precision", "IL_recall", "IL_F1", "IL_FPR", "IL_MCC")]
    + [(n, False, t) for t in (0.5, 0.75) for n in ("cgF1", "precision", "recall", "F1",
                                                    "positive_macro_F1", "positive_micro_F1",
                                                    "positive_micro_precision")]
)


@dataclass
class PairOutcome:
    """Counts for one item. `tps` is None for a true negative (no truth, no kept prediction)."""

    num_truths: int
    num_kept: int
    tps: np.ndarray | None = None
    fps: np.ndarray | None = None
    fns: np.ndarray | None = None
    local_f1: np.ndarray | None = None

    @property
    def is_true_negative(self) -> bool:
        return self.tps is None


def _f1_parts(tps: np.ndarray, fps: np.ndarray, fns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = tps / (tps + fps + _EPS)
    recall = tps / (tps + fns + _EPS)
    return precision, recall, 2 * precision * recall / (precision + recall + _EPS)


def score_pair(ious: np.ndarray, num_kept: int, num_truths: int) -> PairOutcome:
    """Outcome of one item from the (kept predictions x non-crowd truths) IoU matrix."""
    num_thresholds = len(IOU_THRESHOLDS)
    if num_truths == 0 and num_kept == 0:
        return PairOutcome(0, 0)
    if num_kept == 0:
        zeros = np.zeros(num_thresholds, dtype=np.int64)
        return PairOutcome(num_truths, 0, zeros, zeros.copy(), np.full(num_thresholds, num_truths, dtype=np.int64),
                           np.zeros(num_thresholds, dtype=np.int64))
    ious = np.asarray(ious).reshape(num_kept, num_truths)
    rows, cols = linear_sum_assignment(-ious)
    matched = ious[rows, cols]
    # float32 IoUs (video boxes) meet the thresholds in float32, as under the official NumPy 1.x.
    tps = np.array([(matched >= matched.dtype.type(t)).sum() for t in IOU_THRESHOLDS], dtype=np.int64)
    fps = num_kept - tps
    fns = num_truths - tps
    return PairOutcome(num_truths, num_kept, tps, fps, fns, _f1_parts(tps, fps, fns)[2])


def select_oracle(candidates: Sequence[PairOutcome]) -> PairOutcome:
    """Best outcome of one item over several ground-truth annotations (SA-Co/Gold has three).

    Walk the annotations in order; a later one replaces the current best if its F1 averaged over
    thresholds is strictly higher, or if it is a true negative (a perfect answer). A current
    true negative is never replaced by a scored outcome.
    """
    best = candidates[0]
    for current in candidates[1:]:
        if not best.is_true_negative and not current.is_true_negative:
            if current.local_f1.mean() > best.local_f1.mean():
                best = current
        elif current.is_true_negative:
            best = current
    return best


def accumulate(outcomes: Iterable[PairOutcome]) -> dict[str, np.ndarray | float]:
    """Dataset-level cgF1 family (arrays over IoU thresholds, scalars for IL_ metrics).

    Items are summed in the given order (floating-point sums depend on it; the official
    evaluator follows the order of the ground-truth file).
    """
    num_thresholds = len(IOU_THRESHOLDS)
    tps = np.zeros(num_thresholds, dtype=np.int64)
    fps = np.zeros(num_thresholds, dtype=np.int64)
    fns = np.zeros(num_thresholds, dtype=np.int64)
    positive_fps = np.zeros(num_thresholds, dtype=np.int64)
    positive_f1_sum = np.zeros(num_thresholds, dtype=np.float64)
    positive_count = 0
    il_tp = il_fp = il_tn = il_fn = 0
    for outcome in outcomes:
        has_truth, has_pred = outcome.num_truths > 0, outcome.num_kept > 0
        il_tp += has_truth and has_pred
        il_fp += (not has_truth) and has_pred
        il_tn += (not has_truth) and (not has_pred)
        il_fn += has_truth and (not has_pred)
        if outcome.is_true_negative:
            continue
        tps += outcome.tps
        fps += outcome.fps
        fns += outcome.fns
        if has_truth and has_pred:
            positive_f1_sum += outcome.local_f1
            positive_fps += outcome.fps
            positive_count += 1

    precision, recall, f1 = _f1_parts(tps, fps, fns)
    positive_precision = tps / (tps + positive_fps + _EPS)
    positive_micro_f1 = 2 * positive_precision * recall / (positive_precision + recall + _EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive_macro_f1 = positive_f1_sum / positive_count  # NaN without positives -> reported -1
        # Older official releases also report the macro F1 with missed positives counted as 0.
        macro_f1_with_missed = positive_f1_sum / (positive_count + il_fn)
    il_recall = il_tp / (il_tp + il_fn + _IL_EPS)
    il_precision = il_tp / (il_tp + il_fp + _IL_EPS)
    il_f1 = 2 * il_precision * il_recall / (il_precision + il_recall + _IL_EPS)
    il_fpr = il_fp / (il_fp + il_tn + _IL_EPS)
    il_mcc = float(il_tp * il_tn - il_fp * il_fn) / (
        (float(il_tp + il_fp) * float(il_tp + il_fn) * float(il_tn + il_fp) * float(il_tn + il_fn)) ** 0.5
        + _IL_EPS
    )
    return {
        "TPs": tps, "FPs": fps, "FNs": fns, "positive_micro_FPs": positive_fps,
        "precision": precision, "recall": recall, "F1": f1,
        "positive_micro_precision": positive_precision, "positive_micro_F1": positive_micro_f1,
        "positive_macro_F1": positive_macro_f1, "positive_macro_F1_with_missed": macro_f1_with_missed,
        "IL_TP": il_tp, "IL_FP": il_fp, "IL_TN": il_tn, "IL_FN": il_fn,
        "IL_recall": il_recall, "IL_precision": il_precision, "IL_F1": il_f1, "IL_FPR": il_fpr,
        "IL_MCC": il_mcc, "cgF1": positive_micro_f1 * il_mcc,
    }


def _mean_of_valid(values: np.ndarray) -> float:
    # The official summary averages entries > -1 and reports -1 when none is valid (NaN included).
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def summarize(accumulated: dict, iou_type: str, prefix: str = "cgF1_eval") -> dict[str, float]:
    """Flat results with the official names, e.g. 'cgF1_eval_segm_cgF1@0.5'."""
    out: dict[str, float] = {}
    for name, image_level, threshold in CGF1_METRICS:
        if image_level:
            value = float(accumulated[name])
        elif threshold is None:
            value = _mean_of_valid(np.asarray(accumulated[name]))
        else:
            value = _mean_of_valid(np.asarray(accumulated[name])[np.where(IOU_THRESHOLDS == threshold)[0]])
        key = name if threshold is None else f"{name}@{threshold}"
        out[f"{prefix}_{iou_type}_{key}"] = value
    return out
