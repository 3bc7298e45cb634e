"""Generate the image-evaluation agreement fixture with the official evaluator.

Run: bash /work/shared/reference/run.sh tools/parity/make_eval_fixture_image.py
Writes tests/fixtures/eval/image_random.json: three random SA-Co style GT files (for the
oracle), a prediction list, and what sam3.eval.cgf1_eval.CGF1Evaluator (single GT and oracle)
and pycocotools COCOeval (mAP) report for them, for segm and bbox.
"""
import cpu_redirect  # noqa: F401  (must be first: maps CUDA to CPU in the reference package)

import contextlib
import io
import json
import os
import tempfile

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sam3.eval.cgf1_eval import CGF1Evaluator

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "eval", "image_random.json")
rng = np.random.default_rng(20240605)
H, W = 32, 40


def random_mask():
    m = np.zeros((H, W), dtype=np.uint8)
    y0, x0 = rng.integers(0, H - 6), rng.integers(0, W - 6)
    m[y0:y0 + rng.integers(5, 16), x0:x0 + rng.integers(5, 18)] = 1
    if rng.random() < 0.5:  # a second blob makes the shape non-rectangular
        y1, x1 = rng.integers(0, H - 3), rng.integers(0, W - 3)
        m[y1:y1 + rng.integers(2, 6), x1:x1 + rng.integers(2, 6)] = 1
    return m


def perturb(m):
    out = np.roll(m, (int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
    noise = rng.random(m.shape) < 0.003
    return np.where(noise, 1 - out, out).astype(np.uint8)


def rle(m):
    r = mask_utils.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode()
    return r


def box(m):
    return [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m)))]


NUM_PAIRS = 160
base_masks = {}
images = []
for pair_id in range(1, NUM_PAIRS + 1):
    images.append({"id": pair_id, "file_name": f"img{pair_id % 50}.jpg", "text_input": f"np{pair_id}",
                   "height": H, "width": W, "is_instance_exhaustive": int(rng.random() > 0.08),
                   "is_pixel_exhaustive": 1, "queried_category": "x"})
    n = int(rng.choice([0, 0, 1, 1, 2, 3, 5]))
    base_masks[pair_id] = [random_mask() for _ in range(n)]

gt_files = []
ann_id = 1
for version in range(3):
    anns = []
    version_images = [dict(img) for img in images]
    for img in version_images:
        if version > 0 and rng.random() < 0.05:
            img["is_instance_exhaustive"] = 0
        masks = base_masks[img["id"]]
        if version > 0:  # other annotators: perturbed, sometimes one instance more or less
            masks = [perturb(m) for m in masks]
            if masks and rng.random() < 0.2:
                masks = masks[:-1]
            if rng.random() < 0.1:
                masks = masks + [random_mask()]
        for m in masks:
            anns.append({"id": ann_id, "image_id": img["id"], "category_id": 1, "segmentation": rle(m),
                         "bbox": box(m), "area": float(m.sum()), "iscrowd": int(rng.random() < 0.05)})
            ann_id += 1
    gt_files.append({"info": {}, "images": version_images, "annotations": anns,
                     "categories": [{"id": 1, "name": "object"}]})

preds = []
for img in images:
    for m in base_masks[img["id"]]:
        if rng.random() < 0.85:
            p = perturb(m) if rng.random() < 0.8 else random_mask()
            preds.append({"image_id": img["id"], "category_id": 1, "segmentation": rle(p), "bbox": box(p),
                          "score": float(np.round(rng.random(), 3))})
    for _ in range(int(rng.choice([0, 0, 0, 1, 2]))):
        p = random_mask()
        preds.append({"image_id": img["id"], "category_id": 1, "segmentation": rle(p), "bbox": box(p),
                      "score": float(rng.choice([0.5, 0.49, rng.random()]))})

tmp = tempfile.mkdtemp()
gt_paths = []
for i, g in enumerate(gt_files):
    gt_paths.append(os.path.join(tmp, f"gt{i}.json"))
    json.dump(g, open(gt_paths[-1], "w"))
pred_path = os.path.join(tmp, "pred.json")
json.dump(preds, open(pred_path, "w"))

official = {}
for iou_type in ("segm", "bbox"):
    with contextlib.redirect_stdout(io.StringIO()):
        official[f"cgf1_single_{iou_type}"] = CGF1Evaluator(gt_paths[0], iou_type=iou_type).evaluate(pred_path)
        official[f"cgf1_oracle_{iou_type}"] = CGF1Evaluator(gt_paths, iou_type=iou_type).evaluate(pred_path)
        coco_gt = COCO(gt_paths[0])
        coco_dt = coco_gt.loadRes(json.load(open(pred_path)))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate(); ev.accumulate(); ev.summarize()
        official[f"coco_map_{iou_type}"] = [float(s) for s in ev.stats]

json.dump({"ground_truths": gt_files, "predictions": preds, "official": official}, open(OUT, "w"))
print("wrote", os.path.abspath(OUT), os.path.getsize(OUT), "bytes")
print(json.dumps({k: (v if isinstance(v, list) else {kk: vv for kk, vv in list(v.items())[:3]}) for k, v in official.items()}, indent=1))
