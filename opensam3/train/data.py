"""SA-Co / COCO-style image-phrase datasets for training.

A dataset is one JSON file in the SA-Co image format:
    images:      image-phrase pairs {id, file_name, text_input, height, width, is_instance_exhaustive}
    annotations: {image_id (a pair id), bbox xywh (normalised to [0, 1], or pixels as in COCO),
                  segmentation (RLE)}
Pairs without annotations are negatives (the phrase is absent from the image). Images are
read relative to an images folder.

``SacoDataset.batch(indices, rng)`` builds a ``Batch``: resized, normalised pixels (the same
preprocessing as inference), target boxes (cxcywh, normalised), target masks at the mask
head's resolution, presence labels and, for a fraction of the positive pairs, exemplar-box
prompts drawn from the pair's own instances (SAM 3 trains text-only and text+box prompts).
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from opensam3.config import Sam3Config
from opensam3.data import rle
from opensam3.data.image_io import preprocess
from opensam3.errors import InvalidInputError

SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation", "test", "heldout", "held_out"),
               "calib": ("calib", "calibration")}


@dataclass
class Batch:
    """B image-phrase pairs, ready for ``Sam3ImageModel`` and ``SetCriterion``."""

    pixels: torch.Tensor                 # (I, 3, S, S) normalised, each distinct image once
    image_index: list[int]               # B: the row of ``pixels`` each pair is asked of
    phrases: list[str]
    target_boxes: list[torch.Tensor]     # B x (T_b, 4) cxcywh in [0, 1]
    target_masks: list[torch.Tensor]     # B x (T_b, h, w) float {0, 1}, mask-head resolution
    exhaustive: torch.Tensor             # (B,) bool
    prompt_boxes: torch.Tensor           # (B, N, 4) cxcywh exemplars (N may be 0)
    prompt_labels: torch.Tensor          # (B, N) bool, True = positive
    prompt_padding: torch.Tensor         # (B, N) bool, True = empty slot
    pair_ids: list
    file_names: list[str]                # I: the image file of each row of ``pixels``
    target_ids: list[list] | None = None  # B x T_b: each instance's ``object_id`` (None where unrecorded)

    @property
    def presence(self) -> torch.Tensor:
        return torch.tensor([t.shape[0] > 0 for t in self.target_boxes])

    def __len__(self) -> int:
        return len(self.phrases)


def find_split(data: Path, split: str) -> Path | None:
    """The annotation JSON of ``split`` in a dataset folder: NAME.json, annotations/NAME.json,
    the only JSON in a NAME/ subfolder (a dataset of its own, e.g. opensam3.synth's output),
    or the only *NAME*.json (NAME one of the split's usual names)."""
    names = SPLIT_NAMES.get(split, (split,))
    for name in names:
        for candidate in (data / f"{name}.json", data / "annotations" / f"{name}.json"):
            if candidate.is_file():
                return candidate
        inside = sorted((data / name).glob("*.json")) if (data / name).is_dir() else []
        if len(inside) == 1:
            return inside[0]
    for folder in (data, data / "annotations"):
        if folder.is_dir():
            hits = sorted(p for p in folder.glob("*.json") if any(n in p.stem.lower() for n in names))
            if len(hits) == 1:
                return hits[0]
    return None


def find_images_dir(annotation: Path) -> Path:
    """Images live next to the JSON, under images/, or under ../images/ (COCO layout)."""
    for folder in (annotation.parent / "images", annotation.parent.parent / "images", annotation.parent):
        if folder.is_dir():
            return folder
    return annotation.parent


def _read_json(path: Path) -> dict:
    try:
        with path.open("r", encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                                f"fix or regenerate the annotation file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InvalidInputError(f"{path}: expected an SA-Co image JSON object with an 'images' list "
                                f"(image-phrase pairs) and an 'annotations' list")
    return data


class SacoDataset:
    """Image-phrase pairs of one SA-Co JSON file, sized for one model config."""

    def __init__(self, annotation: str | Path, config: Sam3Config, images_dir: str | Path | None = None,
                 exemplar_prob: float = 0.0, image_cache: int = 512):
        self.annotation = Path(annotation)
        if not self.annotation.is_file():
            raise InvalidInputError(f"annotation file not found: {self.annotation}")
        self.images_dir = Path(images_dir) if images_dir is not None else find_images_dir(self.annotation)
        self.image_size = config.image_size
        self.mask_size = 4 * (config.image_size // config.vision.patch_size)  # the mask head's output
        self.pixel_mean, self.pixel_std = config.pixel_mean, config.pixel_std
        self.exemplar_prob = exemplar_prob
        data = _read_json(self.annotation)
        self.pairs: list[dict] = []
        for index, pair in enumerate(data["images"]):
            missing = [k for k in ("id", "file_name", "text_input") if k not in pair]
            if missing:
                raise InvalidInputError(f"{self.annotation}: images[{index}] lacks {missing}; every image-phrase "
                                        f"pair needs id, file_name and text_input")
            self.pairs.append(pair)
        self.by_pair: dict = defaultdict(list)
        known = {p["id"] for p in self.pairs}
        for index, ann in enumerate(data.get("annotations") or []):
            if ann.get("image_id") not in known:
                raise InvalidInputError(f"{self.annotation}: annotations[{index}] refers to image_id "
                                        f"{ann.get('image_id')!r}, which is not in 'images'")
            if not ann.get("iscrowd", 0):
                self.by_pair[ann["image_id"]].append(ann)
        if not self.pairs:
            raise InvalidInputError(f"{self.annotation} has no image-phrase pairs")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = image_cache
        self._by_image: list[list[int]] | None = None
        self._by_file: dict[str, list[tuple[str, set]]] | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def image(self, file_name: str) -> np.ndarray:
        """RGB uint8 resized to the model's input size (kept in a small LRU cache)."""
        if file_name in self._cache:
            self._cache.move_to_end(file_name)
            return self._cache[file_name]
        from PIL import Image

        path = self.images_dir / file_name
        if not path.is_file():
            raise InvalidInputError(f"image {path} (from {self.annotation}) not found; images are read from "
                                    f"{self.images_dir}")
        with Image.open(path) as opened:
            array = np.asarray(opened.convert("RGB"), dtype=np.uint8)
        # the inference resize (antialiased bilinear), rounded back to uint8 to keep the cache small
        chw = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float()
        resized = F.interpolate(chw, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        array = resized[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        self._cache[file_name] = array
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return array

    def targets(self, pair: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, 4) cxcywh normalised boxes and (T, h, w) float masks of one pair."""
        anns = self.by_pair.get(pair["id"], [])
        if not anns:
            return torch.zeros(0, 4), torch.zeros(0, self.mask_size, self.mask_size)
        boxes, masks = [], []
        for ann in anns:
            segmentation = ann.get("segmentation")
            mask = rle.decode(segmentation) if isinstance(segmentation, dict) else None
            height, width = (mask.shape if mask is not None else (pair.get("height"), pair.get("width")))
            boxes.append(_normalised_box(ann, mask, height, width, self.annotation))
            if mask is None:
                # box-only annotation: the box interior stands in for the mask
                mask = _box_mask(boxes[-1], self.mask_size)
            masks.append(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)))
        resized = [F.interpolate(m[None, None], size=(self.mask_size,) * 2, mode="area")[0, 0] for m in masks]
        return torch.tensor(boxes, dtype=torch.float32), (torch.stack(resized) >= 0.5).float()

    def pairs_by_image(self) -> list[list[int]]:
        """Pair indices grouped by image file (files sorted by name; pairs in file order)."""
        if self._by_image is None:
            groups: dict[str, list[int]] = defaultdict(list)
            for index, pair in enumerate(self.pairs):
                groups[str(pair["file_name"])].append(index)
            self._by_image = [groups[name] for name in sorted(groups)]
        return self._by_image

    def phrases_of(self, file_name: str) -> list[tuple[str, set]]:
        """Every phrase asked of one image file, with its instances' ``object_id`` values
        (empty for negatives; annotations without one are left out)."""
        if self._by_file is None:
            self._by_file = defaultdict(list)
            for pair in self.pairs:
                ids = {ann["object_id"] for ann in self.by_pair.get(pair["id"], []) if "object_id" in ann}
                self._by_file[str(pair["file_name"])].append((str(pair["text_input"]), ids))
        return self._by_file.get(file_name, [])

    def pixels(self, file_names: list[str]) -> torch.Tensor:
        """The images, normalised as the model's input (B, 3, S, S)."""
        return preprocess([self.image(name) for name in file_names], self.image_size, self.pixel_mean, self.pixel_std)

    def batch(self, indices: list[int], rng: random.Random) -> Batch:
        pairs = [self.pairs[i] for i in indices]
        # an image asked several phrases is encoded once (``image_index`` maps pairs to rows)
        file_names = list(dict.fromkeys(str(p["file_name"]) for p in pairs))
        image_row = {name: i for i, name in enumerate(file_names)}
        pixels = self.pixels(file_names)
        boxes, masks, prompts = [], [], []
        for pair in pairs:
            b, m = self.targets(pair)
            boxes.append(b)
            masks.append(m)
            use_exemplar = b.shape[0] > 0 and rng.random() < self.exemplar_prob
            prompts.append(b[rng.randrange(b.shape[0])][None] if use_exemplar else torch.zeros(0, 4))
        slots = max(p.shape[0] for p in prompts)
        prompt_boxes = torch.zeros(len(pairs), slots, 4)
        prompt_padding = torch.ones(len(pairs), slots, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            prompt_boxes[row, :prompt.shape[0]] = prompt
            prompt_padding[row, :prompt.shape[0]] = False
        return Batch(
            pixels=pixels,
            image_index=[image_row[str(p["file_name"])] for p in pairs],
            phrases=[str(p["text_input"]) for p in pairs],
            target_boxes=boxes,
            target_masks=masks,
            exhaustive=torch.tensor([bool(p.get("is_instance_exhaustive", 1)) for p in pairs]),
            prompt_boxes=prompt_boxes,
            prompt_labels=~prompt_padding,
            prompt_padding=prompt_padding,
            pair_ids=[p["id"] for p in pairs],
            file_names=file_names,
            target_ids=[[ann.get("object_id") for ann in self.by_pair.get(p["id"], [])] for p in pairs],
        )


def collate(dataset: SacoDataset, indices: list[int], seed: int) -> Batch:
    """A batch that depends only on (indices, seed): what makes resumed runs repeat exactly."""
    return dataset.batch(indices, random.Random(seed))


def epoch_order(num_items: int, epoch: int, seed: int) -> list[int]:
    """The shuffled item order of one epoch (a pure function of seed and epoch)."""
    order = list(range(num_items))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Items of training step ``step``: consecutive slices of per-epoch shuffles, wrapping across epochs."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_items)
        order = epoch_order(num_items, epoch, seed)
        out.extend(order[offset:offset + batch_size - len(out)])
    return out


def grouped_batch_indices(groups: list[list[int]], batch_size: int, pairs_per_image: int, step: int,
                          seed: int) -> list[int]:
    """Items of step ``step`` when each image is asked several phrases: consecutive images of
    per-epoch image shuffles, and up to ``pairs_per_image`` of each image's pairs drawn by a
    step-seeded generator, until ``batch_size`` pairs. Asking one image for a present phrase and
    a hard negative side by side is what teaches presence; encoding it once makes it cheap."""
    rng = random.Random(seed * 1_000_003 + step + 1)
    images_per_step = -(-batch_size // pairs_per_image)
    out: list[int] = []
    position = step * images_per_step
    while len(out) < batch_size:
        epoch, offset = divmod(position, len(groups))
        group = groups[epoch_order(len(groups), epoch, seed)[offset]]
        out.extend(rng.sample(group, min(pairs_per_image, len(group), batch_size - len(out))))
        position += 1
    return out


def _normalised_box(ann: dict, mask: np.ndarray | None, height: int | None, width: int | None,
                    source: Path) -> list[float]:
    """Annotation box -> cxcywh in [0, 1]. SA-Co boxes are normalised xywh; COCO boxes are pixels."""
    bbox = ann.get("bbox")
    if bbox is None and mask is not None:
        bbox = rle.to_bbox(rle.encode(mask))
    if bbox is None or len(bbox) != 4:
        raise InvalidInputError(f"{source}: annotation {ann.get('id')!r} has neither a 4-number bbox nor a mask")
    x, y, w, h = (float(v) for v in bbox)
    if max(x + w, y + h) > 1.0 + 1e-6:  # pixels
        if not height or not width:
            raise InvalidInputError(f"{source}: pixel bbox for pair {ann.get('image_id')!r} needs the pair's "
                                    f"height and width")
        x, w, y, h = x / width, w / width, y / height, h / height
    return [x + w / 2, y + h / 2, w, h]


def _box_mask(box: list[float], size: int) -> np.ndarray:
    cx, cy, w, h = box
    mask = np.zeros((size, size), dtype=np.float32)
    x0, x1 = int(round((cx - w / 2) * size)), int(round((cx + w / 2) * size))
    y0, y1 = int(round((cy - h / 2) * size)), int(round((cy + h / 2) * size))
    mask[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)] = 1
    return mask
