"""COCO-style average precision (what pycocotools' COCOeval reports), for images and videos.

The caller supplies "cells": for every category (or one pseudo-category when categories are
ignored) and every item (image, image-phrase pair, or video), the truths, the detections and
their IoU matrix. This module does COCOeval's greedy score-ordered matching per IoU threshold
and area range, the 101-point interpolated precision and the 12 summary numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from opensam3.eval.cgf1 import IOU_THRESHOLDS

RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2),
}
# The YT-VIS toolkit's object size bins (mean area over frames).
VIDEO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2), "small": (0.0, 128.0**2), "medium": (128.0**2, 256.0**2), "large": (256.0**2, 1e5**2),
}
MAX_DETECTIONS = (1, 10, 100)
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


@dataclass
class Cell:
    """Truths and detections of one (category, item).

    truth_ids must be non-zero: like COCOeval, a match is recorded as the truth's id and id 0
    reads as "unmatched". iou_fn(det_order, truth_order) is called only when both are non-empty
    and returns the IoU of the detections in det_order (a list of indices) against all truths.
    """

    truth_ids: list
    truth_crowd: list[bool]
    truth_area: list[float]
    det_scores: list[float]
    det_area: list[float]
    iou_fn: Callable[[list[int]], np.ndarray] | None = None
    _ious: np.ndarray | None = field(default=None, repr=False)


def _score_order(scores: Sequence[float]) -> np.ndarray:
    return np.argsort([-s for s in scores], kind="mergesort")


def _evaluate_cell(cell: Cell, area_range: tuple[float, float], max_det: int) -> dict | None:
    num_truths, num_dets = len(cell.truth_ids), len(cell.det_scores)
    if num_truths == 0 and num_dets == 0:
        return None
    truth_ignore = np.array(
        [bool(c) or a < area_range[0] or a > area_range[1] for c, a in zip(cell.truth_crowd, cell.truth_area)],
        dtype=bool,
    )
    truth_order = np.argsort(truth_ignore.astype(np.int64), kind="mergesort")
    det_order = _score_order(cell.det_scores)[:max_det]
    crowd = [bool(cell.truth_crowd[g]) for g in truth_order]
    ignore_sorted = truth_ignore[truth_order]
    num_thr = len(IOU_THRESHOLDS)
    truth_match = np.zeros((num_thr, num_truths))
    det_match = np.zeros((num_thr, len(det_order)))
    det_ignore = np.zeros((num_thr, len(det_order)), dtype=bool)
    if cell._ious is not None and cell._ious.size:
        ious = cell._ious[: len(det_order)][:, truth_order]
        truth_ids = [cell.truth_ids[g] for g in truth_order]
        for t_index, threshold in enumerate(IOU_THRESHOLDS):
            for d_index in range(len(det_order)):
                best_iou = min(threshold, 1 - 1e-10)
                best = -1
                for g_index in range(num_truths):
                    if truth_match[t_index, g_index] > 0 and not crowd[g_index]:
                        continue
                    # Truths are sorted with ignored ones last: stop once a real match exists.
                    if best > -1 and not ignore_sorted[best] and ignore_sorted[g_index]:
                        break
                    if ious[d_index, g_index] < best_iou:
                        continue
                    best_iou = ious[d_index, g_index]
                    best = g_index
                if best == -1:
                    continue
                det_ignore[t_index, d_index] = ignore_sorted[best]
                det_match[t_index, d_index] = truth_ids[best]
                truth_match[t_index, best] = d_index + 1
    det_outside = np.array(
        [cell.det_area[d] < area_range[0] or cell.det_area[d] > area_range[1] for d in det_order], dtype=bool
    ).reshape(1, -1)
    det_ignore = np.logical_or(det_ignore, np.logical_and(det_match == 0, np.repeat(det_outside, num_thr, 0)))
    return {
        "scores": np.array([cell.det_scores[d] for d in det_order], dtype=np.float64),
        "det_match": det_match,
        "det_ignore": det_ignore,
        "truth_ignore": ignore_sorted,
    }


def average_precision(
    cells: Sequence[Sequence[Cell]],
    area_ranges: dict[str, tuple[float, float]] = AREA_RANGES,
    max_dets: Sequence[int] = MAX_DETECTIONS,
) -> dict[str, float]:
    """The 12 COCO summary numbers; cells[category][item]."""
    max_dets = sorted(max_dets)
    ranges = list(area_ranges.values())
    for category_cells in cells:
        for cell in category_cells:
            if cell.truth_ids and cell.det_scores and cell.iou_fn is not None:
                order = _score_order(cell.det_scores)[: max_dets[-1]].tolist()
                cell._ious = np.asarray(cell.iou_fn(order), dtype=np.float64)
    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    shape = (num_thr, num_rec, len(cells), len(ranges), len(max_dets))
    precision = -np.ones(shape)
    recall = -np.ones((num_thr, len(cells), len(ranges), len(max_dets)))
    for k, category_cells in enumerate(cells):
        for a, area_range in enumerate(ranges):
            # COCOeval evaluates every cell once at the largest max_det and slices for smaller ones.
            evaluated = [_evaluate_cell(c, area_range, max_dets[-1]) for c in category_cells]
            evaluated = [e for e in evaluated if e is not None]
            if not evaluated:
                continue
            for m, max_det in enumerate(max_dets):
                _accumulate_one(evaluated, max_det, precision[:, :, k, a, m], recall[:, k, a, m])
    labels = list(area_ranges)

    def summary(use_precision: bool, iou: float | None = None, area: str = "all", max_det: int = max_dets[-1]) -> float:
        values = precision if use_precision else recall
        if iou is not None:
            values = values[np.where(iou == IOU_THRESHOLDS)[0]]
        a_index = [i for i, lbl in enumerate(labels) if lbl == area]
        m_index = [i for i, m in enumerate(max_dets) if m == max_det]
        values = values[:, :, :, a_index, m_index] if use_precision else values[:, :, a_index, m_index]
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    stats = [
        summary(True), summary(True, 0.5), summary(True, 0.75),
        summary(True, area="small"), summary(True, area="medium"), summary(True, area="large"),
        summary(False, max_det=max_dets[0]), summary(False, max_det=max_dets[1] if len(max_dets) > 1 else max_dets[0]),
        summary(False), summary(False, area="small"), summary(False, area="medium"), summary(False, area="large"),
    ]
    return dict(zip(STAT_NAMES, stats))


def _accumulate_one(evaluated: list[dict], max_det: int, precision_out: np.ndarray, recall_out: np.ndarray) -> None:
    scores = np.concatenate([e["scores"][:max_det] for e in evaluated])
    order = np.argsort(-scores, kind="mergesort")
    det_match = np.concatenate([e["det_match"][:, :max_det] for e in evaluated], axis=1)[:, order]
    det_ignore = np.concatenate([e["det_ignore"][:, :max_det] for e in evaluated], axis=1)[:, order]
    truth_ignore = np.concatenate([e["truth_ignore"] for e in evaluated])
    num_positive = np.count_nonzero(truth_ignore == 0)
    if num_positive == 0:
        return
    tps = np.logical_and(det_match, np.logical_not(det_ignore))
    fps = np.logical_and(np.logical_not(det_match), np.logical_not(det_ignore))
    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
        num_dets = len(tp)
        rc = tp / num_positive
        pr = tp / (fp + tp + np.spacing(1))
        recall_out[t] = rc[-1] if num_dets else 0
        # Precision envelope: make it non-increasing from the right.
        pr_list = pr.tolist()
        for i in range(num_dets - 1, 0, -1):
            if pr_list[i] > pr_list[i - 1]:
                pr_list[i - 1] = pr_list[i]
        q = np.zeros(len(RECALL_THRESHOLDS))
        positions = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
        for r_index, position in enumerate(positions):
            if position >= num_dets:
                break  # recall levels never reached keep precision 0
            q[r_index] = pr_list[position]
        precision_out[t] = q
