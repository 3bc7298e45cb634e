"""Benchmark: image cgF1 + mAP on 5,000 random image-phrase pairs (target: well under a minute).

Run: .venv/bin/python benchmarks/bench_eval.py [--pairs 5000] [--size 480 640]
"""

import argparse
import time

import numpy as np

from opensam3.data import rle
from opensam3.eval import evaluate_image_cgf1, evaluate_image_map


def random_dataset(num_pairs: int, height: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []

    def box_rle():
        mask = np.zeros((height, width), bool)
        y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
        mask[y:y + rng.integers(20, 120), x:x + rng.integers(20, 160)] = True
        return mask

    for pair in range(1, num_pairs + 1):
        images.append({"id": pair, "file_name": f"{pair}.jpg", "text_input": "x", "height": height, "width": width,
                       "is_instance_exhaustive": 1})
        for _ in range(int(rng.integers(0, 4))):
            mask = box_rle()
            seg = rle.encode(mask)
            anns.append({"id": len(anns) + 1, "image_id": pair, "category_id": 1, "segmentation": seg,
                         "bbox": rle.to_bbox(seg), "area": float(mask.sum()), "iscrowd": 0})
            if rng.random() < 0.8:
                moved = np.roll(mask, int(rng.integers(-8, 9)), axis=1)
                preds.append({"image_id": pair, "category_id": 1, "segmentation": rle.encode(moved),
                              "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 2))):
            preds.append({"image_id": pair, "category_id": 1, "segmentation": rle.encode(box_rle()),
                          "score": float(rng.random())})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    return gt, preds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640))
    args = parser.parse_args()
    gt, preds = random_dataset(args.pairs, *args.size)
    print(f"{args.pairs} pairs, {len(gt['annotations'])} truths, {len(preds)} predictions, {args.size[0]}x{args.size[1]}")
    start = time.perf_counter()
    cgf1 = evaluate_image_cgf1([gt], preds, "segm")
    middle = time.perf_counter()
    evaluate_image_map(gt, preds, "segm")
    end = time.perf_counter()
    print(f"cgF1 family: {middle - start:.1f} s (cgF1 = {cgf1['cgF1_eval_segm_cgF1']:.4f})")
    print(f"COCO mAP:    {end - middle:.1f} s")
    print(f"total:       {end - start:.1f} s")


if __name__ == "__main__":
    main()
