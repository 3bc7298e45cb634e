"""Cheap health check of a detector snapshot during training (a minute on one core).

cgF1 stays exactly 0 until presence and query scores both pass 0.5, so it says nothing about an
early run. This prints what moves first, on held-out pairs:
- presence AUC (present vs absent phrases), overall, against easy and hard negatives and by
  phrase length: 0.5 = the image is ignored;
- the best box IoU any query reaches per instance, and the top-scored query's IoU;
- the semantic head's IoU with the phrase's pixels and with all objects' pixels: a head that
  matches "all objects" better than "the phrase" has not bound text to image yet;
- per instance, by how many instances the phrase has (1, 2, 3+): the best mask IoU any query
  reaches, and the mask IoU of the query whose box fits it best. Masks good on single-instance
  phrases but poor on several instances, with good boxes, mean the masks are not yet
  instance-specific (they bleed into the phrase's other instances);
- the spread of the final query states within a pair (mean over channels of their standard
  deviation across queries) next to their spread across pairs: a decoder whose queries all say
  the same thing (within << across) has collapsed, and no query can score its own object.

    python tools/probe_detector.py RUN/model.safetensors --data RUN/data/val/synth_images.json
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import torch
import torch.nn.functional as F

from opensam3.api import load
from opensam3.data import rle
from opensam3.ops.boxes import cxcywh_to_xyxy
from opensam3.train.auxiliary import binary_auc
from opensam3.train.data import SacoDataset
from opensam3.train.losses import paired_giou, resize_masks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return binary_auc(torch.as_tensor(scores), torch.as_tensor(labels))


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / max(int((a | b).sum()), 1))


@torch.no_grad()
def probe(model_path: str, data: str, pairs: int) -> dict:
    model = load(model_path).model.eval()
    dataset = SacoDataset(data, model.config)
    scenes = {s["file_name"]: s for s in json.loads(open(data, encoding="utf-8").read()).get("scenes", [])}
    rows, spreads = [], []
    for start in range(0, min(pairs, len(dataset)), 16):
        indices = list(range(start, min(pairs, len(dataset), start + 16)))
        batch = dataset.batch(indices, random.Random(0))
        features = model.encode_image(batch.pixels).select(batch.image_index)
        text = model.backbone.language_backbone(batch.phrases)
        empty = batch.prompt_boxes[:, :0]
        out, decoded, _ = model.ground(features, text, empty, batch.prompt_labels[:, :0], batch.prompt_padding[:, :0],
                                       all_layers=True)
        hidden = decoded.hidden[-1]  # (B, Q, C)
        spreads.append((hidden.std(1).mean(1), hidden.mean(1)))
        presence, scores = out.presence_logits.sigmoid(), out.logits.sigmoid()
        for row, index in enumerate(indices):
            pair, targets = dataset.pairs[index], batch.target_boxes[row]
            semantic = out.semantic_logits[row, 0] > 0
            record = {"presence": float(presence[row]), "positive": len(targets) > 0,
                      "negative": pair.get("negative_type"), "words": len(str(pair["text_input"]).split())}
            if len(targets):
                boxes = cxcywh_to_xyxy(out.boxes[row])
                ious = torch.stack([paired_giou(boxes, cxcywh_to_xyxy(t[None]).expand_as(boxes))[0] for t in targets])
                record["best_iou"] = float(ious.max(1).values.mean())
                record["top_iou"] = float(ious[:, scores[row].argmax()].max())
                predicted = out.masks[row] > 0  # (Q, m, m)
                truth = resize_masks(batch.target_masks[row], predicted.shape[-2:]) > 0.5  # (T, m, m)
                inter = (truth[:, None] & predicted[None]).flatten(2).sum(-1)
                mask_ious = inter / (truth[:, None] | predicted[None]).flatten(2).sum(-1).clamp(min=1)
                group = min(len(targets), 3)
                record[f"mask_best_{group}"] = float(mask_ious.max(1).values.mean())
                record[f"mask_of_best_box_{group}"] = float(mask_ious.gather(1, ious.argmax(1, keepdim=True)).mean())
                union = batch.target_masks[row].amax(0) > 0.5
                record["semantic_phrase"] = iou(semantic, union)
            scene = scenes.get(pair["file_name"])
            if scene and all("segmentation" in o for o in scene["objects"]) and scene["objects"]:
                masks = torch.stack([torch.from_numpy(rle.decode(o["segmentation"]).astype(np.float32))
                                     for o in scene["objects"]]).amax(0)
                every = F.interpolate(masks[None, None], size=semantic.shape, mode="area")[0, 0] >= 0.5
                record["semantic_all"] = iou(semantic, every)
            rows.append(record)
    labels = np.array([r["positive"] for r in rows])
    presence = np.array([r["presence"] for r in rows])
    report = {"pairs": len(rows), "presence_auc": auc(labels, presence)}
    for kind in ("easy", "hard"):
        keep = np.array([r["positive"] or r["negative"] == kind for r in rows])
        report[f"presence_auc_vs_{kind}"] = auc(labels[keep], presence[keep])
    for words in sorted({r["words"] for r in rows}):
        keep = np.array([r["words"] == words for r in rows])
        report[f"presence_auc_{words}_words"] = auc(labels[keep], presence[keep])
    masks = [f"mask_{kind}_{group}" for kind in ("best", "of_best_box") for group in (1, 2, 3)]
    for key in ("best_iou", "top_iou", "semantic_phrase", "semantic_all", *masks):
        values = [r[key] for r in rows if key in r]
        report[key] = float(np.mean(values)) if values else float("nan")
    report["query_spread_within_pair"] = float(torch.cat([w for w, _ in spreads]).mean())
    report["query_spread_across_pairs"] = float(torch.cat([m for _, m in spreads]).std(0).mean())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True, help="held-out SA-Co JSON (opensam3.synth's adds scene records)")
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for key, value in probe(args.model, args.data, args.pairs).items():
        print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")


if __name__ == "__main__":
    main()
