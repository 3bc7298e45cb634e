"""Reference outputs of the official SAM 3 video predictor (``Sam3VideoPredictor`` over
``Sam3VideoInferenceWithInstanceInteractivity``, as ``build_sam3_video_model`` makes it) at a tiny
configuration: text prompt -> detection + tracking through a short clip, then a click on a later
frame and the partial re-propagation it triggers.

Run with the reference runner (official sam3==0.1.4 on CPU):
    bash /work/shared/reference/run.sh tools/parity/make_video_concept_fixture.py [OUT]
Writes tests/fixtures/modules/video_concept.safetensors (no weights, no frames: the test rebuilds
both from seeds).

Model: the detector of tiny_reference.py (336 px, ViT 128-d x 4, text 128-d x 2, fusion/decoder
2 layers, 20 queries, geometry 1 layer) with the tracker neck, and the tracker of
make_video_tracker_fixture.py (memory attention 2 layers, FFN 512, 384 px memory masks); the
video heuristics are the official defaults of ``build_sam3_video_model`` (only ``image_size`` is
the tiny one). Weights: every key of the video model seeded by its own name with the
``detector.`` prefix stripped (so detector keys are the image-model keys of tiny_reference.py)
and ``tracker.`` kept. Overrides (``weight_override`` metadata, value * scale + shift):
  - the tracker's object-score head (as in the video tracker fixture) so objects are present;
  - the presence head's last bias, so the concept is "present";
  - the scoring projection ``dot_prod_scoring.hs_proj`` spread, so a few queries score above
    the new-track threshold 0.7 while the rest stay below 0.5.

Clip: make_frames() of make_video_tracker_fixture.py with 7 frames. Frames are preprocessed as
opensam3 does and written over the session's image batch.

Scenario (SCENARIO below; the ``steps`` metadata lists every request and what it returned):
  add.text    add_prompt: text on frame 2 (detections start masklets)
  prop.0      propagate_in_video both ways (full: detection + tracking, hot-start buffer,
              re-conditioning on frame 0)
  add.new     add_prompt: a click adding obj_id 100 on frame 4
  add.refine  add_prompt: a positive and a negative click refining the detected object 0 on
              frame 3 (drops its detector-made conditioning frames nearby)
  prop.1      propagate_in_video both ways (partial: the clicked objects only)
  remove      remove_object 100
  prop.2      propagate_in_video forward from frame 1, 3 more frames (fetch: stored results)
and, in a second session (SCENARIO_BOX):
  box.add     add_prompt: one exemplar box (normalised xywh, no text) on frame 1
  box.prop    propagate_in_video both ways (new detections only on the prompted frame)
Recorded per output: out_obj_ids, out_probs, out_boxes_xywh, out_binary_masks (bit-packed).
"""
import cpu_redirect  # noqa: F401  (must come first)
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SAM3_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
sys.path.insert(0, str(REFERENCE))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeded import seeded_value  # noqa: E402

import sam3.model_builder as mb  # noqa: E402
import sam3.model.sam3_video_base as video_base  # noqa: E402
import sam3.model.sam3_video_inference as video_inference  # noqa: E402
import make_video_tracker_fixture as vt  # noqa: E402  (patches the tracker builders)
import tiny_reference as tr  # noqa: E402  (patches the detector builders)

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "fixtures" / "modules" / "video_concept.safetensors"
BPE = str(REFERENCE.parent / "data" / "bpe_simple_vocab_16e6.txt.gz")
NUM_FRAMES = int(os.environ.get("NUM_FRAMES", "7"))
HS_SCALE = float(os.environ.get("HS_SCALE", "8.0"))
PRESENCE_SHIFT = float(os.environ.get("PRESENCE_SHIFT", "8.0"))
TEXT = os.environ.get("TEXT", "a yellow square")
WEIGHT_OVERRIDE = [
    ("tracker.sam_mask_decoder.pred_obj_score_head.layers.2.weight", vt.OBJ_W_SCALE, 0.0),
    ("tracker.sam_mask_decoder.pred_obj_score_head.layers.2.bias", 1.0, vt.OBJ_B_SHIFT),
    ("detector.transformer.decoder.presence_token_head.layers.2.bias", 1.0, PRESENCE_SHIFT),
    ("detector.dot_prod_scoring.hs_proj.weight", HS_SCALE, 0.0),
]
vt.NUM_FRAMES = NUM_FRAMES
mb._create_text_encoder = tr.text
_Video = mb.Sam3VideoInferenceWithInstanceInteractivity
mb.Sam3VideoInferenceWithInstanceInteractivity = lambda **kw: _Video(**{**kw, "image_size": vt.RES})


SCENARIO = [
    ("add.text", {"type": "add_prompt", "frame_index": 2, "text": TEXT}),
    ("prop.0", {"type": "propagate_in_video", "propagation_direction": "both"}),
    ("add.new", {"type": "add_prompt", "frame_index": 4, "points": [[0.7, 0.45]], "point_labels": [1],
                 "obj_id": 100}),
    ("add.refine", {"type": "add_prompt", "frame_index": 3, "points": [[0.3, 0.45], [0.8, 0.8]],
                    "point_labels": [1, 0], "obj_id": 0}),
    ("prop.1", {"type": "propagate_in_video", "propagation_direction": "both"}),
    ("remove", {"type": "remove_object", "obj_id": 100}),
    ("prop.2", {"type": "propagate_in_video", "propagation_direction": "forward", "start_frame_index": 1,
                "max_frame_num_to_track": 3}),
]

# a second session: one exemplar box (no text) on frame 1
SCENARIO_BOX = [
    ("box.add", {"type": "add_prompt", "frame_index": 1, "bounding_boxes": [[0.18, 0.36, 0.27, 0.27]],
                 "bounding_box_labels": [1]}),
    ("box.prop", {"type": "propagate_in_video", "propagation_direction": "both"}),
]


def _fp32_tracker_features(forward):
    """The official video detector hands the tracker its neck features cast to bf16 (an explicit
    cast; on a GPU everything then runs under a process-wide bf16 autocast, which does nothing on
    CPU). Keep the bf16 rounding, run the rest in fp32."""

    def wrapped(*args, **kwargs):
        out, backbone_out = forward(*args, **kwargs)
        out = {k: (v.float() if k.startswith("tracker_backbone_fpn_") else v) for k, v in out.items()}
        return out, backbone_out

    return wrapped


def _skip_empty(fill):
    """The reference's CPU connected-components fallback fails on an empty batch (no new
    detections on a frame); an empty batch has nothing to fill anyway."""

    def wrapped(mask, *args, **kwargs):
        return mask if mask.shape[0] == 0 else fill(mask, *args, **kwargs)

    return wrapped


video_base.fill_holes_in_mask_scores = _skip_empty(video_base.fill_holes_in_mask_scores)
video_inference.fill_holes_in_mask_scores = _skip_empty(video_inference.fill_holes_in_mask_scores)


def _fp32_memory(forward):
    """Stored memories are bf16 (explicit cast); on a GPU the process-wide autocast mixes them
    with fp32 weights, on CPU they are upcast here (as concatenation with the fp32 object
    pointers already does whenever there are pointers)."""

    def up(x):
        if torch.is_tensor(x) and x.dtype == torch.bfloat16:
            return x.float()
        if isinstance(x, (list, tuple)):
            return type(x)(up(v) for v in x)
        return x

    def wrapped(*args, **kwargs):
        return forward(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})

    return wrapped


def seed_key(name):
    return name.removeprefix("detector.")


def build():
    torch.manual_seed(0)
    model = mb.build_sam3_video_model(checkpoint_path=None, load_from_HF=False, bpe_path=BPE, device="cpu")
    with torch.no_grad():
        state = model.state_dict()
        for name, p in state.items():
            if p.is_floating_point() and not p.is_complex():
                p.copy_(seeded_value(seed_key(name), p.shape))
        for name, scale, shift in WEIGHT_OVERRIDE:
            state[name].mul_(scale).add_(shift)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    model.tracker.transformer.encoder.forward = _fp32_memory(model.tracker.transformer.encoder.forward)
    model.detector.forward_video_grounding_multigpu = _fp32_tracker_features(
        model.detector.forward_video_grounding_multigpu)
    return model.eval()


def random_masks(g, count, size):
    """(count, size, size) mask logits: a rectangle of +/-5 per mask (ties to the grid), plus noise."""
    masks = torch.full((count, size, size), -5.0)
    for i in range(count):
        x0, y0 = torch.randint(0, size - 4, (2,), generator=g).tolist()
        w, h = torch.randint(3, size // 2, (2,), generator=g).tolist()
        masks[i, y0:y0 + h, x0:x0 + w] = 5.0
    return masks + torch.randn(masks.shape, generator=g)


def record_rules(model, tensors):
    """The heuristics on synthetic inputs (the clip above has a single detection per frame):
    mask NMS, association (same and different mask sizes), hot-start over 20 frames, suppression
    by recent occlusion, and the output post-processing."""
    from sam3.perflib.nms import nms_masks

    g = torch.Generator().manual_seed(11)
    rules = {"nms": [], "assoc": [], "hotstart": [], "occlusion": [], "post": []}
    for case in range(4):
        masks = random_masks(g, 12, 32)
        probs = torch.rand(12, generator=g)
        keep = nms_masks(pred_probs=probs, pred_masks=masks, prob_threshold=0.5, iou_threshold=0.1)
        tensors[f"rules.nms.{case}.masks"], tensors[f"rules.nms.{case}.probs"] = masks, probs
        rules["nms"].append(keep.tolist())
    for case, (det_size, trk_size) in enumerate([(32, 32), (16, 32), (32, 16), (32, 32)]):
        det = random_masks(g, 6, det_size)
        trk = random_masks(g, 5 if case < 3 else 0, trk_size)
        scores = torch.rand(6, generator=g).numpy() * 0.5 + 0.5
        trk_ids = np.arange(10, 10 + trk.shape[0], dtype=np.int64)
        out = model._associate_det_trk(det_masks=det, det_scores_np=scores, trk_masks=trk, trk_obj_ids=trk_ids)
        tensors[f"rules.assoc.{case}.det"], tensors[f"rules.assoc.{case}.trk"] = det, trk
        tensors[f"rules.assoc.{case}.scores"] = torch.from_numpy(scores)
        rules["assoc"].append({"new_det": out[0].tolist(), "unmatched": out[1].tolist(),
                               "det_to_trk": {str(k): v.tolist() for k, v in out[2].items()},
                               "trk_to_det": {str(k): int(v) for k, v in out[3].items()}, "empty": out[4].tolist()})
    for reverse in (False, True):
        metadata = model._initialize_metadata()
        rank0 = metadata["rank0_metadata"]
        trk_ids = np.arange(6, dtype=np.int64)
        model._process_hotstart(frame_idx=19 if reverse else 0, num_frames=20, reverse=reverse,
                                det_to_matched_trk_obj_ids={}, new_det_obj_ids=trk_ids,
                                empty_trk_obj_ids=np.zeros(0, np.int64), unmatched_trk_obj_ids=np.zeros(0, np.int64),
                                rank0_metadata=rank0, tracker_metadata=metadata)
        frames = range(19, -1, -1) if reverse else range(20)
        for step, frame in enumerate(frames):
            det = random_masks(g, 4, 16)
            trk = random_masks(g, len(trk_ids), 16)
            trk[torch.rand(len(trk_ids), generator=g) < 0.3] = -5.0  # some masklets empty
            scores = torch.rand(4, generator=g).numpy()
            assoc = model._associate_det_trk(det_masks=det, det_scores_np=scores, trk_masks=trk, trk_obj_ids=trk_ids)
            new_ids = 100 + 10 * step + np.arange(len(assoc[0]), dtype=np.int64)
            removed, rank0 = model._process_hotstart(
                frame_idx=frame, num_frames=20, reverse=reverse, det_to_matched_trk_obj_ids=assoc[2],
                new_det_obj_ids=new_ids, empty_trk_obj_ids=assoc[4], unmatched_trk_obj_ids=assoc[1],
                rank0_metadata=rank0, tracker_metadata=metadata)
            tensors[f"rules.hotstart.{int(reverse)}.{step}.det"] = det
            tensors[f"rules.hotstart.{int(reverse)}.{step}.trk"] = trk
            tensors[f"rules.hotstart.{int(reverse)}.{step}.scores"] = torch.from_numpy(scores)
            rules["hotstart"].append({"reverse": reverse, "step": step, "frame": frame,
                                      "removed": sorted(int(i) for i in removed),
                                      "keep_alive": {str(k): int(v) for k, v in rank0["trk_keep_alive"].items()}})
    prev = {"obj_ids_all_gpu": np.arange(5, dtype=np.int64), "obj_id_to_last_occluded": {}}
    for step in range(6):
        masks = random_masks(g, 5, 16)
        masks[1] = masks[0] + 0.5  # a near duplicate
        if step % 2:
            masks[2] = -5.0
        new = {}
        tensors[f"rules.occlusion.{step}.masks"] = masks.clone()
        out = model._suppress_overlapping_based_on_recent_occlusion(step, masks, prev, new, {4} if step == 3 else set(),
                                                                    reverse=False)
        tensors[f"rules.occlusion.{step}.out"] = out.clone()
        rules["occlusion"].append({str(int(k)): int(v.item()) for k, v in new["obj_id_to_last_occluded"].items()})
        prev = {"obj_ids_all_gpu": prev["obj_ids_all_gpu"], "obj_id_to_last_occluded": new["obj_id_to_last_occluded"]}
    state = {"orig_height": 20, "orig_width": 30}
    for case in range(3):
        ids = [3, 1, 7, 5]
        masks = random_masks(g, 4, 20)[:, :, :20]
        masks = F.interpolate(masks[:, None], size=(20, 30), mode="nearest")[:, 0] > 0
        if case == 1:
            masks[2] = False
        out = {"obj_id_to_mask": {i: masks[k:k + 1] for k, i in enumerate(ids)},
               "obj_id_to_score": {i: 0.5 + 0.1 * k for k, i in enumerate(ids)},
               "obj_id_to_tracker_score": {i: [0.9, 0.3, 0.95, 2.0][k] for k, i in enumerate(ids[:3 if case else 4])}}
        hidden = [7] if case == 2 else None
        result = model._postprocess_output(state, out, suppressed_obj_ids=hidden)
        tensors[f"rules.post.{case}.masks_in"] = masks
        tensors[f"rules.post.{case}.masks"] = torch.from_numpy(result["out_binary_masks"])
        tensors[f"rules.post.{case}.boxes"] = torch.from_numpy(result["out_boxes_xywh"]).float()
        tensors[f"rules.post.{case}.probs"] = torch.from_numpy(result["out_probs"]).float()
        rules["post"].append({"ids": ids, "scores": out["obj_id_to_score"],
                              "tracker_scores": out["obj_id_to_tracker_score"], "hidden": hidden or [],
                              "out_obj_ids": result["out_obj_ids"].tolist()})
    return rules


def packbits(mask):
    return torch.from_numpy(np.packbits(np.asarray(mask).reshape(mask.shape[0], -1).astype(np.uint8), axis=1))


def main():
    torch.set_num_threads(1)
    model = build()
    frames = vt.make_frames()
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor

    predictor = Sam3VideoPredictor.__new__(Sam3VideoPredictor)
    predictor.model = model
    predictor.async_loading_frames = False
    predictor.video_loader_type = "cv2"
    Sam3VideoPredictor._ALL_INFERENCE_STATES = {}
    # its debug logging queries CUDA devices
    predictor._get_torch_and_gpu_properties = lambda: ""
    predictor._get_session_stats = lambda: ""
    tensors, steps = {}, []

    def record(name, frame_idx, outputs):
        ids = [int(v) for v in outputs["out_obj_ids"]]
        tensors[f"{name}.{frame_idx}.probs"] = torch.as_tensor(outputs["out_probs"], dtype=torch.float32).reshape(-1)
        tensors[f"{name}.{frame_idx}.boxes_xywh"] = torch.as_tensor(outputs["out_boxes_xywh"],
                                                                    dtype=torch.float32).reshape(-1, 4)
        masks = outputs["out_binary_masks"]
        tensors[f"{name}.{frame_idx}.masks"] = packbits(masks) if len(ids) else torch.zeros(0, 1, dtype=torch.uint8)
        return {"frame": int(frame_idx), "obj_ids": ids,
                "areas": [int(m.sum()) for m in masks], "probs": [round(float(p), 4) for p in outputs["out_probs"]]}

    pil = [Image.fromarray(f.numpy()) for f in frames]
    with torch.inference_mode():
        for session, scenario in enumerate((SCENARIO, SCENARIO_BOX)):
            sid = predictor.handle_request({"type": "start_session", "resource_path": pil})["session_id"]
            state = predictor._ALL_INFERENCE_STATES[sid]["state"]
            state["input_batch"].img_batch = vt.preprocess(frames)
            for name, request in scenario:
                request = {**request, "session_id": sid}
                if request["type"] == "propagate_in_video":
                    seen = [record(name, item["frame_index"], item["outputs"])
                            for item in predictor.handle_stream_request(request)]
                else:
                    out = predictor.handle_request(request)
                    seen = [record(name, out["frame_index"], out["outputs"])] if "outputs" in out else []
                request.pop("session_id")
                steps.append({"name": name, "session": session, "request": request, "frames": seen})
            predictor.handle_request({"type": "close_session", "session_id": sid})
        rules = record_rules(model, tensors)

    meta = {
        "config": json.dumps({"image_size": vt.RES, "attention_layers": vt.ATTN_LAYERS,
                              "attention_ffn": vt.ATTN_FFN, "num_frames": NUM_FRAMES, "height": vt.HEIGHT,
                              "width": vt.WIDTH, "tiny": tr.TINY}),
        "steps": json.dumps(steps),
        "rules": json.dumps(rules),
        "weight_rule": "seeded_value(key without 'detector.' prefix) for every key of the video model "
                       "(tracker keys keep 'tracker.'), then weight_override: value * scale + shift",
        "weight_override": json.dumps(WEIGHT_OVERRIDE),
        "frames": "make_video_tracker_fixture.make_frames() with NUM_FRAMES frames",
        "frames_sum": str(int(frames.long().sum())),
        "reference": "sam3==0.1.4 (PyPI), Sam3VideoPredictor over build_sam3_video_model (tiny), CPU fp32",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    print("saved", OUT, len(tensors), "tensors", round(total / 1e6, 2), "MB")
    for step in steps:
        print(json.dumps(step)[:600])


if __name__ == "__main__":
    main()
