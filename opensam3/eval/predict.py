"""Run a model over an SA-Co image dataset and write predictions in the official result format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from opensam3.eval.errors import EvalInputError
from opensam3.eval.saco_io import read_json


def segment_image(model: Any, image: Any, phrases: list[str]) -> list[list[dict]]:
    """The one place that talks to the model: per phrase, its instances as COCO result dicts.

    The image is encoded once (``model.set_image``) and every phrase runs in one batch
    (``model.segment(state, text=[...])``); results give ``to_coco_rle()``.
    """
    state = model.set_image(image)
    results = model.segment(state, text=list(phrases))
    return [result.to_coco_rle() for result in results]


def predict_dataset(
    model: Any,
    gt_path: str | Path,
    images_dir: str | Path,
    out_path: str | Path | None = None,
    limit: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[dict]:
    """Predictions for every image-phrase pair of an SA-Co GT file (each image is opened once)."""
    from PIL import Image

    gt = read_json(gt_path, "ground truth")
    if not isinstance(gt, dict) or "images" not in gt:
        raise EvalInputError(f"{gt_path}: an SA-Co image ground truth with an 'images' list is needed")
    images_root = Path(images_dir)
    if not images_root.is_dir():
        raise EvalInputError(f"images directory not found: {images_root}")
    category_id = (gt.get("categories") or [{"id": 1}])[0]["id"]
    pairs = gt["images"][:limit] if limit else gt["images"]
    by_file: dict[str, list[dict]] = {}
    for pair in pairs:
        if "file_name" not in pair or "text_input" not in pair:
            raise EvalInputError(f"{gt_path}: image entry {pair.get('id')!r} needs 'file_name' and 'text_input'")
        by_file.setdefault(pair["file_name"], []).append(pair)
    predictions: list[dict] = []
    files = progress(list(by_file)) if progress else list(by_file)
    for file_name in files:
        path = images_root / file_name
        if not path.is_file():
            raise EvalInputError(f"image {path} (from {gt_path}) not found; check --images")
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        pairs_here = by_file[file_name]
        per_phrase = segment_image(model, image, [pair["text_input"] for pair in pairs_here])
        for pair, instances in zip(pairs_here, per_phrase):
            for instance in instances:
                predictions.append({"image_id": pair["id"], "category_id": category_id, **instance})
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(predictions, handle)
    return predictions
