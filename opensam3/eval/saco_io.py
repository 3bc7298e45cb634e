"""Reading SA-Co ground truth and prediction JSON (image and video) with clear errors.

Image GT: COCO-style `images` (one per image-phrase pair), `annotations` (`image_id`,
`segmentation` RLE, `bbox` xywh, `iscrowd`), `categories`. Image predictions: the COCO result
list (`image_id`, `category_id`, `segmentation`, `bbox`, `score`).
Video GT: `videos`, `annotations` (masklets: `video_id`, `category_id`, `segmentations`,
`bboxes`, `areas`), `categories` (noun phrases), optional `video_np_pairs`. Video predictions:
one entry per masklet (`video_id`, `category_id`, `segmentations`, `bboxes`, `score`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from opensam3.eval.errors import EvalInputError


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; `what` names it in errors ("ground truth", "predictions")."""
    file = Path(path)
    if not file.is_file():
        raise EvalInputError(f"{what} file not found: {file} (check the path)")
    try:
        with file.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise EvalInputError(
            f"{what} file {file} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise EvalInputError(f"{what} file {file} is not UTF-8 text JSON") from exc


def with_coco_defaults(gt: dict, limit: int | None = None) -> dict:
    """An SA-Co image GT as the evaluator reads it: the first ``limit`` pairs (all when None or 0)
    with their own annotations, a default category, and ``category_id`` / ``iscrowd`` filled in
    where a training dataset left them out. The input is not modified."""
    gt = dict(gt)
    if limit and len(gt["images"]) > limit:
        gt["images"] = gt["images"][:limit]
        kept = {pair["id"] for pair in gt["images"]}
        gt["annotations"] = [a for a in gt.get("annotations", []) if a["image_id"] in kept]
    gt["categories"] = gt.get("categories") or [{"id": 1, "name": "object"}]
    default = gt["categories"][0]["id"]
    gt["annotations"] = [{"category_id": default, "iscrowd": 0, **a} for a in gt.get("annotations", [])]
    return gt


def _require(entry: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, Mapping):
        raise EvalInputError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise EvalInputError(f"{where}: missing field(s) {missing}; present: {sorted(entry)[:12]}")


def _as_source(data_or_path: Any, what: str) -> tuple[Any, str]:
    if isinstance(data_or_path, (str, Path)):
        return read_json(data_or_path, what), str(data_or_path)
    return data_or_path, f"{what} (in memory)"


@dataclass
class ImageGroundTruth:
    """One SA-Co image GT file, indexed for evaluation."""

    source: str
    images: dict[Any, dict] = field(default_factory=dict)  # pair id -> image entry, file order
    truths_by_image: dict[Any, list[dict]] = field(default_factory=dict)
    category_ids: list[Any] = field(default_factory=list)  # sorted, as COCOeval sets params.catIds

    def truths_for(self, image_id: Any) -> list[dict]:
        """Annotations of a pair, grouped by category in sorted order (the official order)."""
        return self.truths_by_image.get(image_id, [])

    def exhaustive_ids(self) -> list[Any]:
        return [i for i, img in self.images.items() if img.get("is_instance_exhaustive", 1)]


def load_image_ground_truth(data_or_path: Any) -> ImageGroundTruth:
    data, source = _as_source(data_or_path, "ground truth")
    if not isinstance(data, Mapping) or "images" not in data:
        raise EvalInputError(
            f"{source}: an image ground truth needs an 'images' list (for a video file with "
            f"'videos' use --video)"
        )
    gt = ImageGroundTruth(source=source)
    for index, image in enumerate(data["images"]):
        _require(image, ("id",), f"{source}: images[{index}]")
        gt.images[image["id"]] = image
    gt.category_ids = sorted({c["id"] for c in data.get("categories", []) if isinstance(c, Mapping) and "id" in c})
    known = set(gt.category_ids)
    by_category: dict[Any, dict[Any, list[dict]]] = {}
    for index, ann in enumerate(data.get("annotations", [])):
        _require(ann, ("image_id", "category_id"), f"{source}: annotations[{index}]")
        if ann["image_id"] not in gt.images:
            raise EvalInputError(
                f"{source}: annotations[{index}] refers to image_id {ann['image_id']!r}, which is "
                f"not in 'images'; the ground-truth file is inconsistent"
            )
        # COCOeval only sees annotations whose category is listed in 'categories'.
        if ann["category_id"] in known:
            by_category.setdefault(ann["image_id"], {}).setdefault(ann["category_id"], []).append(ann)
    for image_id, groups in by_category.items():
        gt.truths_by_image[image_id] = [a for c in gt.category_ids for a in groups.get(c, [])]
    return gt


def load_image_predictions(data_or_path: Any) -> list[dict]:
    data, source = _as_source(data_or_path, "predictions")
    if isinstance(data, Mapping) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise EvalInputError(f"{source}: predictions must be a JSON list of results (COCO result format)")
    for index, pred in enumerate(data):
        _require(pred, ("image_id", "score"), f"{source}: predictions[{index}]")
        if "segmentation" not in pred and "bbox" not in pred:
            raise EvalInputError(f"{source}: predictions[{index}] has neither 'segmentation' nor 'bbox'")
    return data


@dataclass
class VideoGroundTruth:
    """One SA-Co/VEval GT file (kept close to the JSON; video metrics index it themselves)."""

    source: str
    videos: dict[Any, dict]
    masklets: list[dict]
    category_ids: list[Any]
    video_np_pairs: list[dict] | None


def load_video_ground_truth(data_or_path: Any) -> VideoGroundTruth:
    data, source = _as_source(data_or_path, "ground truth")
    if not isinstance(data, Mapping) or "videos" not in data:
        raise EvalInputError(f"{source}: a video ground truth needs a 'videos' list (image files: drop --video)")
    videos: dict[Any, dict] = {}
    for index, video in enumerate(data["videos"]):
        _require(video, ("id",), f"{source}: videos[{index}]")
        videos[video["id"]] = video
    masklets = list(data.get("annotations", []))
    for index, ann in enumerate(masklets):
        _require(ann, ("video_id", "category_id"), f"{source}: annotations[{index}]")
        if ann["video_id"] not in videos:
            raise EvalInputError(f"{source}: annotations[{index}] refers to unknown video_id {ann['video_id']!r}")
    pairs = data.get("video_np_pairs")
    if pairs is not None:
        for index, pair in enumerate(pairs):
            _require(pair, ("video_id", "category_id"), f"{source}: video_np_pairs[{index}]")
    category_ids = sorted({c["id"] for c in data.get("categories", []) if isinstance(c, Mapping) and "id" in c})
    return VideoGroundTruth(source, videos, masklets, category_ids, pairs)


def load_video_predictions(data_or_path: Any, gt: VideoGroundTruth) -> list[dict]:
    data, source = _as_source(data_or_path, "predictions")
    if not isinstance(data, list):
        raise EvalInputError(f"{source}: video predictions must be a JSON list of masklets")
    for index, pred in enumerate(data):
        _require(pred, ("video_id", "category_id", "score"), f"{source}: predictions[{index}]")
        if pred["video_id"] not in gt.videos:
            raise EvalInputError(
                f"{source}: predictions[{index}] has video_id {pred['video_id']!r}, which is not in the "
                f"ground truth {gt.source}; are these predictions for another dataset?"
            )
        if "segmentations" not in pred and "bboxes" not in pred:
            raise EvalInputError(f"{source}: predictions[{index}] has neither 'segmentations' nor 'bboxes'")
    return data
