"""Generate the video-evaluation agreement fixtures with the official evaluators.

Run: bash /work/shared/reference/run.sh tools/parity/make_eval_fixture_video.py
Writes tests/fixtures/eval/video_random.json (random SA-Co/VEval GT + predictions and what the
official sam3 0.1.4 evaluators report: class mAP, phrase AP, phrase HOTA, cgF1 family) and
tests/fixtures/eval/video_toy_official_0_1_4.json (the same evaluators on the toy files).
"""
import cpu_redirect  # noqa: F401  (must be first)

import contextlib
import copy
import io
import json
import os
import tempfile

import numpy as np
import pycocotools.mask as mask_utils
from sam3.eval.saco_veval_evaluators import (VideoCGF1Evaluator, VideoPhraseApEvaluator,
                                             VideoPhraseHotaEvaluator, YTVISPredFileEvaluator)
from sam3.eval.ytvis_eval import VideoDemoF1Eval  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures", "eval")
rng = np.random.default_rng(7)
H, W, T = 20, 24, 6


def blob():
    m = np.zeros((H, W), dtype=np.uint8)
    y, x = rng.integers(0, H - 6), rng.integers(0, W - 6)
    m[y:y + rng.integers(5, 12), x:x + rng.integers(5, 14)] = 1
    return m


def drift(m):
    return np.roll(m, (int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))


def encode(m):
    r = mask_utils.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode()
    return r


def masklet(base, presence):
    segs, boxes, areas = [], [], []
    m = base
    for t in range(T):
        m = drift(m)
        if presence[t] and m.sum() > 0:
            r = mask_utils.encode(np.asfortranarray(m))
            segs.append(encode(m)); boxes.append([float(v) for v in mask_utils.toBbox(r)]); areas.append(int(m.sum()))
        else:
            segs.append(None); boxes.append(None); areas.append(None)
    return segs, boxes, areas


def make_random():
    videos = [{"id": v, "video_name": f"v{v}", "file_names": [f"v{v}/{t:05d}.jpg" for t in range(T)],
               "height": H, "width": W, "length": T} for v in range(1, 5)]
    categories = [{"id": c, "name": f"phrase {c}"} for c in range(1, 6)]
    anns, preds, np_pairs = [], [], []
    ann_id = 1
    for v in videos:
        for c in categories:
            n = int(rng.choice([0, 0, 1, 2, 3]))
            np_pairs.append({"video_id": v["id"], "category_id": c["id"], "noun_phrase": c["name"], "num_masklets": n})
            for _ in range(n):
                base = blob()
                presence = rng.random(T) < 0.8
                segs, boxes, areas = masklet(base, presence)
                if all(s is None for s in segs):
                    continue
                anns.append({"id": ann_id, "video_id": v["id"], "category_id": c["id"], "segmentations": segs,
                             "bboxes": boxes, "areas": areas, "iscrowd": 0, "height": H, "width": W})
                ann_id += 1
                if rng.random() < 0.8:
                    pres = presence if rng.random() < 0.6 else rng.random(T) < 0.7
                    ps, pb, pa = masklet(drift(base) if rng.random() < 0.8 else blob(), pres)
                    preds.append({"video_id": v["id"], "category_id": c["id"], "segmentations": ps, "bboxes": pb,
                                  "areas": pa, "score": float(rng.choice([0.5, rng.random(), 0.9]))})
            for _ in range(int(rng.choice([0, 0, 1]))):
                ps, pb, pa = masklet(blob(), rng.random(T) < 0.6)
                preds.append({"video_id": v["id"], "category_id": c["id"], "segmentations": ps, "bboxes": pb,
                              "areas": pa, "score": float(rng.random())})
    # Predictions must not be empty in every frame (the official box IoU asserts on that).
    preds = [p for p in preds if any(b is not None for b in p["bboxes"])]
    gt = {"info": {}, "videos": videos, "annotations": anns, "categories": categories, "video_np_pairs": np_pairs}
    return gt, preds


def run_official(gt, preds):
    tmp = tempfile.mkdtemp()
    gt_path, pred_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "pred.json")
    json.dump(gt, open(gt_path, "w")); json.dump(preds, open(pred_path, "w"))
    dataset, per_pair = {}, {}
    for evaluator in (YTVISPredFileEvaluator(gt_path), VideoPhraseApEvaluator(gt_path),
                      VideoPhraseHotaEvaluator(gt_path), VideoCGF1Evaluator(gt_path)):
        with contextlib.redirect_stdout(io.StringIO()):
            d, v = evaluator.evaluate(pred_path)
        dataset.update({k: float(x) for k, x in d.items()})
        for key, r in v.items():
            per_pair.setdefault(f"{key[0]},{key[1]}", {}).update(r)
    return {"dataset_results": dataset, "video_np_results": per_pair}


if __name__ == "__main__":
    gt, preds = make_random()
    official = run_official(copy.deepcopy(gt), copy.deepcopy(preds))
    out = os.path.join(FIXTURES, "video_random.json")
    json.dump({"ground_truth": gt, "predictions": preds, "official": official}, open(out, "w"))
    print("wrote", out, os.path.getsize(out))
    toy = os.path.join(FIXTURES, "toy")
    official_toy = run_official(json.load(open(os.path.join(toy, "toy_saco_veval_sav_test_gt.json"))),
                                json.load(open(os.path.join(toy, "toy_saco_veval_sav_test_pred.json"))))
    out = os.path.join(FIXTURES, "video_toy_official_0_1_4.json")
    json.dump(official_toy, open(out, "w"), indent=1)
    print("wrote", out)
