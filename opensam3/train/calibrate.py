"""Score calibration: two offsets that make the fixed 0.5 score threshold fit a small model.

SAM 3 keeps a prediction when sigmoid(query logit) x sigmoid(presence logit) >= 0.5, and the
SA-Co metrics use the same threshold. A small model trained with SAM 3's IoU-aware classification
targets learns query scores close to its boxes' IoU (~0.6 while its boxes are coarse, often
under 0.5), so the product falls under 0.5 for many objects it does find: measured on the
2026-11-29 embedded run, 34 of 100 held-out positive pairs passed 0.5 with no false positive, and
a threshold of 0.3 would have given IL_MCC 0.61 instead of 0.40.

The threshold is part of the protocol, so the model moves instead, in two exact ways:
- ``a`` is added to the presence head's output bias (a weight: the checkpoint layout is unchanged);
- ``b`` is added to every query's classification logit (``Sam3Config.query_logit_offset``, saved
  with the config in the checkpoint metadata; the query logit is a dot product with the prompt,
  so no weight can shift it by a constant).
A score becomes sigmoid(l + b) x sigmoid(p + a). Both are chosen on a calibration split that is
neither the training nor the held-out evaluation data, to maximise cgF1 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from opensam3.model.sam3 import Sam3ImageModel

# Presence offsets tried (logit units): sigmoid(l + 3) lifts a presence of 0.5 to 0.95.
DEFAULT_OFFSETS = tuple(round(0.25 * i, 2) for i in range(-8, 17))
# Query-logit offsets tried: +1 lifts a query probability of 0.4 to 0.64.
DEFAULT_QUERY_OFFSETS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


@dataclass
class Calibration:
    offset: float                          # added to the presence logit
    metrics: dict[str, float]              # cgF1 / IL_MCC / pmF1 at the chosen offsets on the calibration split
    by_offset: dict[tuple[float, float], dict[str, float]]   # (presence, query) offsets -> metrics
    query_offset: float = 0.0              # added to every query logit (the config's query_logit_offset)


@dataclass
class _Candidate:
    image_id: int
    query_logit: float      # with the model's current query_logit_offset
    presence_logit: float
    result: dict            # COCO result dict (RLE segmentation, bbox)


def presence_bias(model: Sam3ImageModel) -> torch.Tensor:
    """The bias of the presence head's last layer (a (1,) parameter)."""
    return model.transformer.decoder.presence_token_head.layers[-1].bias


@torch.no_grad()
def collect_candidates(model: Sam3ImageModel, gt_path: str | Path, images_dir: str | Path,
                       min_query_logit: float = 0.0) -> tuple[list[_Candidate], dict]:
    """One pass of the model over the split: every query that could pass 0.5 under some offsets
    (its query logit is >= ``min_query_logit``, minus the largest query offset to be tried),
    with what is needed to re-score it. Mask NMS (the config's ``nms_iou``) runs on this set;
    a higher threshold keeps a top-scoring prefix of it, whose suppressions are the same."""
    from PIL import Image

    from opensam3.api import Sam3
    from opensam3.eval.saco_io import read_json, with_coco_defaults

    gt = with_coco_defaults(read_json(gt_path, "calibration ground truth"))
    sam = Sam3(model, confidence_threshold=0.0)
    by_file: dict[str, list[dict]] = {}
    for pair in gt["images"]:
        by_file.setdefault(pair["file_name"], []).append(pair)
    candidates: list[_Candidate] = []
    floor = torch.sigmoid(torch.tensor(min_query_logit)).item()
    was_training = model.training
    model.eval()
    try:
        for file_name, pairs in by_file.items():
            with Image.open(Path(images_dir) / file_name) as opened:
                state = sam.set_image(opened.convert("RGB"))
            phrases = [pair["text_input"] for pair in pairs]
            outputs = sam.run_prompts(state.features, phrases, None, None)
            for index, pair in enumerate(pairs):
                logit = float(outputs.presence_logits[index].float())
                presence = torch.sigmoid(torch.tensor(logit)).item()
                found = sam.postprocess(outputs, index, state, threshold=floor * presence)
                for result in found.to_coco_rle():
                    query_logit = torch.logit(torch.tensor(result["score"] / presence), eps=1e-7).item()
                    candidates.append(_Candidate(pair["id"], query_logit, logit, result))
    finally:
        model.train(was_training)
    return candidates, gt


def rescored(candidates: list[_Candidate], offset: float, category_id: int = 1, query_offset: float = 0.0) -> list[dict]:
    """The predictions the model would make with ``offset`` added to its presence logit and
    ``query_offset`` to its query logits."""
    predictions = []
    for c in candidates:
        score = torch.sigmoid(torch.tensor(c.query_logit + query_offset)).item() * \
            torch.sigmoid(torch.tensor(c.presence_logit + offset)).item()
        predictions.append({**c.result, "image_id": c.image_id, "category_id": category_id, "score": score})
    return predictions


def calibrate_presence(model: Sam3ImageModel, gt_path: str | Path, images_dir: str | Path,
                       offsets: tuple[float, ...] = DEFAULT_OFFSETS,
                       query_offsets: tuple[float, ...] = (0.0,), apply: bool = True) -> Calibration:
    """Pick the presence and query-logit offsets with the best cgF1 on the split (ties: the
    smallest shifts) and, with ``apply``, add them to the model (presence bias; config's
    ``query_logit_offset``, on top of the one it has)."""
    from opensam3.eval.image_eval import evaluate_image_cgf1

    candidates, gt = collect_candidates(model, gt_path, images_dir, min_query_logit=-max(query_offsets))
    category_id = (gt.get("categories") or [{"id": 1}])[0]["id"]
    by_offset: dict[tuple[float, float], dict[str, float]] = {}
    for query_offset in query_offsets:
        for offset in offsets:
            raw = evaluate_image_cgf1([gt], rescored(candidates, offset, category_id, query_offset), iou_type="segm")
            by_offset[offset, query_offset] = {"cgF1": raw["cgF1_eval_segm_cgF1"],
                                               "IL_MCC": raw["cgF1_eval_segm_IL_MCC"],
                                               "pmF1": raw["cgF1_eval_segm_positive_micro_F1"]}
    best = max(by_offset, key=lambda key: (round(by_offset[key]["cgF1"], 6), -abs(key[0]) - abs(key[1])))
    offset, query_offset = best
    if apply:
        with torch.no_grad():
            presence_bias(model).add_(offset)
        if query_offset:
            model.config = model.config.replace(query_logit_offset=model.config.query_logit_offset + query_offset)
    return Calibration(offset, by_offset[best], by_offset, query_offset)
