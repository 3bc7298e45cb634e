"""Writing the synthetic world to disk as SA-Co-style datasets the evaluator and trainer share.

Image dataset (`write_image_dataset`): `OUT/images/000000.png ...` and `OUT/synth_images.json`,
SA-Co/Gold layout (pass `--images OUT/images` to `opensam3 predict-dataset`):

- `images`: one entry per image-phrase pair: `id`, `file_name` (relative to `OUT/images`; the
  same file under several ids), `text_input` (the phrase), `height`, `width`,
  `is_instance_exhaustive` = 1, `is_pixel_exhaustive` = 1, and synth extras: `specificity`
  (1-4 words), `negative_type` (null, "hard" or "easy"), `exemplar_boxes_xyxy` (one xyxy pixel
  box of the pair's largest instance; [] for negatives) and `exemplar_annotation_ids`.
- `annotations`: one per instance of a positive pair: `id`, `image_id` (the pair),
  `category_id` 1, `segmentation` (compressed COCO RLE of the visible part), `bbox` [x, y, w, h]
  normalised by the image size (SA-Co convention), `area` (pixels), `iscrowd` 0, `object_id`.
- `categories`: [{"id": 1, "name": "object"}] (COCO compatibility only).
- `scenes`: the scene graph per image file: every object's attributes, pose, visible box
  (pixels) and visible mask (RLE), so ground truth can be re-derived, phrases re-sampled and
  dense attribute maps drawn (the trainer's attribute loss reads them).

Video dataset (`write_video_dataset`): `OUT/videos/<video_name>/00000.png ...` and
`OUT/synth_videos.json`, SA-Co/VEval layout: `videos` (`id`, `video_name`, `file_names`
relative to `OUT/videos`, `height`, `width`, `length`), `annotations` = masklets (`id`,
`video_id`, `category_id`, per-frame `segmentations` RLE / `bboxes` xywh pixels / `areas`, null
where the object is not visible, `iscrowd`, `height`, `width`, `noun_phrase`, `object_id`),
`categories` = the distinct phrases (`id`, `name`), `video_np_pairs` (`id`, `video_id`,
`category_id`, `noun_phrase`, `num_masklets` (0 = negative), `negative_type`) and `clips` (per
video: objects with attributes, role and per-frame (x, y, angle) track).

Determinism: image i is drawn from `scene_rng(seed, i)` = `np.random.default_rng([seed, 0, i])`
and video j from `clip_rng(seed, j)` = `[seed, 1, j]`, so any item can be regenerated alone
(`scene_stream(seed)` yields exactly the written scenes), and the same seed writes
byte-identical files (PNG and compact JSON with a fixed key order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from opensam3.data import rle
from opensam3.synth.clip import Clip, ClipConfig, clip_rng, generate_clip
from opensam3.synth.scene import Scene, SceneConfig, generate_scene, scene_rng
from opensam3.synth.world import SceneObject, SynthConfigError, check_non_negative

SYNTH_VERSION = 1
IMAGE_GT_NAME = "synth_images.json"
VIDEO_GT_NAME = "synth_videos.json"
Progress = Callable[[Iterable], Iterable]


@dataclass(frozen=True)
class DatasetSummary:
    gt_path: Path
    media_dir: Path
    items: int  # images or videos
    pairs: int
    negative_pairs: int
    instances: int  # annotations (masks) or masklets

    @property
    def negative_ratio(self) -> float:
        return self.negative_pairs / self.pairs if self.pairs else 0.0


def prepare_output(out_dir: str | Path, media: str) -> tuple[Path, Path]:
    """Create OUT and OUT/<media>, and prove they are writable, with an error saying what to fix."""
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise SynthConfigError(f"output path {root} exists and is not a folder; choose another --out")
    try:
        (root / media).mkdir(parents=True, exist_ok=True)
        probe = root / media / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SynthConfigError(f"cannot write to output folder {root} ({exc.strerror or exc}); choose a writable --out") from exc
    return root, root / media


def save_png(image: np.ndarray, path: Path) -> None:
    # Fixed compression settings: the same pixels always give the same bytes. Level 1: noisy
    # images barely compress anyway (level 6 saves ~10% and costs ~30% more time).
    Image.fromarray(image).save(path, format="PNG", compress_level=1)


def _write_json(data: dict, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"))


def _round(values: Iterable[float], digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in values]


def object_record(obj: SceneObject) -> dict:
    return {"object_id": obj.object_id, "shape": obj.shape, "color": obj.color, "size": obj.size,
            "pattern": obj.pattern, "center": _round(obj.center, 3), "radius": round(obj.radius, 3),
            "angle": round(obj.angle, 3), "rgb": list(obj.rgb)}


def scene_records(scene: Scene, file_name: str, image_id_start: int, annotation_id_start: int) -> tuple[list, list, dict]:
    """The SA-Co `images` and `annotations` entries of one scene, and its scene-graph record."""
    size = scene.size
    encoded = [rle.encode(m) for m in scene.masks]  # once per object, shared by its phrases
    images, annotations = [], []
    for offset, pair in enumerate(scene.pairs()):
        image_id = image_id_start + offset
        ann_ids = []
        for object_id in pair.object_ids:
            index = next(i for i, o in enumerate(scene.objects) if o.object_id == object_id)
            segmentation = encoded[index]
            x, y, w, h = rle.to_bbox(segmentation)
            ann_ids.append(annotation_id_start + len(annotations))
            annotations.append({
                "id": ann_ids[-1], "image_id": image_id, "category_id": 1, "segmentation": segmentation,
                "bbox": _round([x / size, y / size, w / size, h / size]), "area": rle.area(segmentation),
                "iscrowd": 0, "object_id": object_id,
            })
        exemplar_ids = []
        if pair.exemplar_box is not None:
            areas = [annotations[a - annotation_id_start]["area"] for a in ann_ids]
            exemplar_ids = [ann_ids[int(np.argmax(areas))]]
        images.append({
            "id": image_id, "file_name": file_name, "text_input": pair.phrase, "height": size, "width": size,
            "is_instance_exhaustive": 1, "is_pixel_exhaustive": 1,
            "specificity": pair.concept.specificity, "negative_type": pair.negative,
            "exemplar_boxes_xyxy": [] if pair.exemplar_box is None else [_round(pair.exemplar_box, 2)],
            "exemplar_annotation_ids": exemplar_ids,
        })
    objects = []
    for obj, box, segmentation in zip(scene.objects, scene.boxes, encoded):
        objects.append({**object_record(obj), "visible_box_xyxy": _round(box, 2), "visible_area": rle.area(segmentation),
                        "segmentation": segmentation})
    return images, annotations, {"file_name": file_name, "height": size, "width": size, "objects": objects}


def write_image_dataset(out_dir: str | Path, num_images: int, seed: int = 0, size: int = 256,
                        config: SceneConfig | None = None, progress: Progress | None = None) -> DatasetSummary:
    """Render `num_images` scenes to OUT/images and their pairs to OUT/synth_images.json."""
    num_images, seed = check_non_negative(num_images, "number of images"), check_non_negative(seed, "seed")
    root, image_dir = prepare_output(out_dir, "images")
    images, annotations, scenes = [], [], []
    indices = range(num_images)
    for index in progress(indices) if progress else indices:
        scene = generate_scene(scene_rng(seed, index), size, config)
        file_name = f"{index:06d}.png"
        save_png(scene.image, image_dir / file_name)
        pair_entries, ann_entries, record = scene_records(scene, file_name, len(images) + 1, len(annotations) + 1)
        images += pair_entries
        annotations += ann_entries
        scenes.append(record)
    info = {"description": "opensam3 synthetic concept world, SA-Co image layout", "version": SYNTH_VERSION,
            "seed": seed, "image_size": size, "num_images": num_images}
    gt_path = root / IMAGE_GT_NAME
    _write_json({"info": info, "images": images, "annotations": annotations,
                 "categories": [{"id": 1, "name": "object"}], "scenes": scenes}, gt_path)
    negatives = sum(1 for entry in images if entry["negative_type"] is not None)
    return DatasetSummary(gt_path, image_dir, num_images, len(images), negatives, len(annotations))


def _masklet_frames(masks: np.ndarray) -> tuple[list, list, list]:
    """Per-frame RLE, xywh pixel box and area of one object's (T, H, W) masks; None when absent."""
    segmentations, boxes, areas = [], [], []
    for mask in masks:
        if not mask.any():
            segmentations.append(None), boxes.append(None), areas.append(None)
            continue
        encoded = rle.encode(mask)
        segmentations.append(encoded)
        boxes.append(rle.to_bbox(encoded))
        areas.append(rle.area(encoded))
    return segmentations, boxes, areas


def clip_records(clip: Clip, video_id: int, video_name: str, category_ids: dict[str, int],
                 masklet_id_start: int, pair_id_start: int) -> tuple[dict, list, list, dict]:
    """The VEval `videos` entry, masklets and video_np_pairs of one clip, and its clip record."""
    size = int(clip.frames.shape[1])
    per_object = [_masklet_frames(clip.masks[:, i]) for i in range(len(clip.objects))]
    masklets, pairs = [], []
    for pair in clip.pairs():
        category_id = category_ids.setdefault(pair.phrase, len(category_ids) + 1)
        for object_id in pair.object_ids:
            segmentations, boxes, areas = per_object[clip.object_index(object_id)]
            masklets.append({
                "id": masklet_id_start + len(masklets), "video_id": video_id, "category_id": category_id,
                "segmentations": segmentations, "bboxes": boxes, "areas": areas, "iscrowd": 0,
                "height": size, "width": size, "noun_phrase": pair.phrase, "object_id": object_id,
            })
        pairs.append({"id": pair_id_start + len(pairs), "video_id": video_id, "category_id": category_id,
                      "noun_phrase": pair.phrase, "num_masklets": len(pair.object_ids),
                      "negative_type": pair.negative})
    file_names = [f"{video_name}/{t:05d}.png" for t in range(clip.num_frames)]
    video = {"id": video_id, "video_name": video_name, "file_names": file_names, "height": size, "width": size,
             "length": clip.num_frames}
    objects = [{**object_record(o), "role": clip.roles[o.object_id],
                "track_xy_angle": [_round(row, 3) for row in clip.tracks[:, i]]}
               for i, o in enumerate(clip.objects)]
    return video, masklets, pairs, {"video_id": video_id, "objects": objects}


def write_video_dataset(out_dir: str | Path, num_videos: int, seed: int = 0, size: int = 256,
                        num_frames: int = 16, config: ClipConfig | None = None,
                        progress: Progress | None = None) -> DatasetSummary:
    """Render `num_videos` clips to OUT/videos/<name>/ and their masklets to OUT/synth_videos.json."""
    num_videos, seed = check_non_negative(num_videos, "number of videos"), check_non_negative(seed, "seed")
    # The explicit frame count wins over the config's, so a config can be reused across lengths.
    config = replace(config or ClipConfig(), num_frames=check_non_negative(num_frames, "number of frames"))
    root, video_dir = prepare_output(out_dir, "videos")
    videos, masklets, pairs, clips = [], [], [], []
    category_ids: dict[str, int] = {}
    indices = range(num_videos)
    for index in progress(indices) if progress else indices:
        clip = generate_clip(clip_rng(seed, index), size, config)
        name = f"synth_{index:06d}"
        (video_dir / name).mkdir(exist_ok=True)
        for t, frame in enumerate(clip.frames):
            save_png(frame, video_dir / name / f"{t:05d}.png")
        video, clip_masklets, clip_pairs, record = clip_records(
            clip, index + 1, name, category_ids, len(masklets) + 1, len(pairs) + 1)
        videos.append(video)
        masklets += clip_masklets
        pairs += clip_pairs
        clips.append(record)
    info = {"description": "opensam3 synthetic concept world, SA-Co/VEval video layout", "version": SYNTH_VERSION,
            "seed": seed, "image_size": size, "num_videos": num_videos, "num_frames": config.num_frames}
    categories = [{"id": cid, "name": phrase} for phrase, cid in category_ids.items()]
    gt_path = root / VIDEO_GT_NAME
    _write_json({"info": info, "videos": videos, "annotations": masklets, "categories": categories,
                 "video_np_pairs": pairs, "clips": clips}, gt_path)
    negatives = sum(1 for p in pairs if p["num_masklets"] == 0)
    return DatasetSummary(gt_path, video_dir, num_videos, len(pairs), negatives, len(masklets))
