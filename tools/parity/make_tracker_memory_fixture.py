"""Reference outputs of the official video tracker's memory path at a tiny configuration:
memory encoder, memory attention, memory-bank assembly and whole ``track_step`` sequences.

Run with the reference runner (official sam3==0.1.4 on CPU):
    bash /work/shared/reference/run.sh tools/parity/make_tracker_memory_fixture.py [OUT]
Writes tests/fixtures/modules/tracker_memory.safetensors (no weights: both sides rebuild them
with the seeded rule keyed by the checkpoint names ``tracker.<key>``).

Tiny configuration: ``build_tracker`` with image_size 224 (16x16 feature grid, 64x64 low-res
masks, 256-pixel memory-encoder mask input), memory attention 2 layers with FFN 512, everything
else as the official builder (d=256, memory 64-d, 7 memory frames, 4 conditioning frames in
attention, 16 object pointers). No image backbone: frame features are seeded random tensors,
made by ``frame_features`` / ``bank_entry`` below (the test rebuilds them the same way).

Cases (``cases`` metadata):
  memenc.*   ``_encode_new_memory`` on 2 objects (one with a negative object score), soft
             (sigmoid) and hard (from points) masks
  attn.*     ``transformer.encoder`` on 2 objects: 2 memory frames + 2 object pointers
  bank.*     ``_prepare_memory_conditioned_features`` on synthetic memory banks (first 32
             channels of the result): forward, memory selection, reverse, > 4 conditioning
             frames, initial conditioning frame
  select.*   ``select_closest_cond_frames`` / ``frame_filter`` on synthetic frame sets
  track_sel  2 objects, mask prompt on frame 0 (object 1 empty), frames 1-5 tracked with
             memory selection and bf16 memory storage (as the video predictor does)
  track_pts  1 object, a click on frame 0, frames 1-3 tracked, fp32 memories (plain
             ``track_step``)
  track_fix  track_pts, then two positive clicks on the tracked frame 2 with its previous logits
             (becomes a conditioning frame), then frame 3 again
"""
import cpu_redirect  # noqa: F401  (must come first)
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SAM3_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
sys.path.insert(0, str(REFERENCE))
from seeded import seeded_value  # noqa: E402

import sam3.model_builder as mb  # noqa: E402
from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention  # noqa: E402
from sam3.model.model_misc import TransformerWrapper  # noqa: E402
from sam3.model.position_encoding import PositionEmbeddingSine  # noqa: E402
from sam3.model.sam3_tracker_utils import select_closest_cond_frames  # noqa: E402
from sam3.sam.transformer import RoPEAttention  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "fixtures" / "modules" / "tracker_memory.safetensors"
IMAGE_SIZE, STRIDE = 224, 14
GRID = IMAGE_SIZE // STRIDE  # 16
MASK_IN = 16 * GRID  # memory-encoder mask size (1152 at full size)
ATTN_LAYERS, ATTN_FFN = 2, 512
OBJ_W_SCALE, OBJ_B_SHIFT = float(os.environ.get("OBJ_W_SCALE", 50.0)), float(os.environ.get("OBJ_B_SHIFT", 2.6))
PREFIX = "tracker."
# Seeded weights give every frame the same small negative object score (no object anywhere, so
# every mask is the -1024 placeholder). The object-score head's last layer is therefore spread
# and re-centred, on both sides, so that frames and objects differ: (key, scale, shift).
OBJ_SCORE_OVERRIDE = [("sam_mask_decoder.pred_obj_score_head.layers.2.weight", OBJ_W_SCALE, 0.0),
                      ("sam_mask_decoder.pred_obj_score_head.layers.2.bias", 1.0, OBJ_B_SHIFT)]


# ---- input recipes (the test rebuilds the same tensors) ----
def frame_features(t, batch):
    """(level2 (B,256,e,e), s1 (B,64,2e,2e), s0 (B,32,4e,4e)): tracker-neck lowest level and the
    two already-projected high-res levels of frame t (the same for every object)."""
    g = torch.Generator().manual_seed(2000 + t)
    level2 = torch.randn(1, 256, GRID, GRID, generator=g)
    s1 = torch.randn(1, 64, 2 * GRID, 2 * GRID, generator=g)
    s0 = torch.randn(1, 32, 4 * GRID, 4 * GRID, generator=g)
    return [x.expand(batch, -1, -1, -1) for x in (level2, s1, s0)]


def bank_entry(t, batch):
    """Synthetic stored memory of frame t: (maskmem_features (B,64,e,e), obj_ptr (B,256))."""
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(batch, 64, GRID, GRID, generator=g), torch.randn(batch, 256, generator=g)


def tiny_maskmem_backbone():
    enc = _orig_maskmem()
    enc.mask_downsampler.interpol_size = [MASK_IN, MASK_IN]
    enc.position_encoding = PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000,
                                                  precompute_resolution=IMAGE_SIZE)
    return enc


def tiny_transformer():
    self_attention = RoPEAttention(embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, rope_theta=10000.0,
                                   feat_sizes=[GRID, GRID], use_fa3=False, use_rope_real=False)
    cross_attention = RoPEAttention(embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=64,
                                    rope_theta=10000.0, feat_sizes=[GRID, GRID], rope_k_repeat=True, use_fa3=False,
                                    use_rope_real=False)
    layer = TransformerDecoderLayerv2(cross_attention_first=False, activation="relu", dim_feedforward=ATTN_FFN,
                                      dropout=0.1, pos_enc_at_attn=False, pre_norm=True, self_attention=self_attention,
                                      d_model=256, pos_enc_at_cross_attn_keys=True,
                                      pos_enc_at_cross_attn_queries=False, cross_attention=cross_attention)
    encoder = TransformerEncoderCrossAttention(remove_cross_attention_layers=[], batch_first=True, d_model=256,
                                               frozen=False, pos_enc_at_input=True, layer=layer,
                                               num_layers=ATTN_LAYERS, use_act_checkpoint=False)
    return TransformerWrapper(encoder=encoder, decoder=None, d_model=256)


_orig_maskmem = mb._create_tracker_maskmem_backbone
_Tracker = mb.Sam3TrackerPredictor
mb._create_tracker_maskmem_backbone = tiny_maskmem_backbone
mb._create_tracker_transformer = tiny_transformer
mb.Sam3TrackerPredictor = lambda **kw: _Tracker(**{**kw, "image_size": IMAGE_SIZE})


def build(use_memory_selection):
    torch.manual_seed(0)
    tracker = mb.build_tracker(apply_temporal_disambiguation=use_memory_selection)
    with torch.no_grad():
        for name, p in tracker.state_dict().items():
            if p.is_floating_point() and not p.is_complex():
                p.copy_(seeded_value(PREFIX + name, p.shape))
        for name, scale, shift in OBJ_SCORE_OVERRIDE:
            tracker.state_dict()[name].mul_(scale).add_(shift)
    for m in tracker.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return tracker.eval()


def vision_lists(levels):
    """Frame levels -> the (HW)BC lists track_step takes (features, pos, sizes); low-res level last."""
    level2, s1, s0 = levels
    pos_enc = PositionEmbeddingSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000)
    maps = [s0, s1, level2]
    feats = [x.flatten(2).permute(2, 0, 1) for x in maps]
    pos = [pos_enc(x).flatten(2).permute(2, 0, 1) for x in maps]
    return feats, pos, [(x.shape[-2], x.shape[-1]) for x in maps]


def run_memenc(tracker, tensors):
    levels = frame_features(0, 2)
    feats, _, sizes = vision_lists(levels)
    g = torch.Generator().manual_seed(3000)
    logits = 4.0 * torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    scores = torch.tensor([[3.0], [-2.0]])
    for name, from_pts in (("soft", False), ("hard", True)):
        feat, pos = tracker._encode_new_memory(image=None, current_vision_feats=feats, feat_sizes=sizes,
                                               pred_masks_high_res=logits, object_score_logits=scores,
                                               is_mask_from_pts=from_pts)
        tensors[f"memenc.{name}.features"] = feat
        tensors["memenc.pos"] = pos[-1][:1]
    return {"frame": 0, "batch": 2, "object_score_logits": scores.tolist(),
            "mask_logits": "4 * randn(2,1,224,224) from Generator(3000)"}


def run_attn(tracker, tensors):
    levels = frame_features(1, 2)
    feats, pos, sizes = vision_lists(levels)
    g = torch.Generator().manual_seed(4000)
    prompt = torch.randn(2 * GRID * GRID + 8, 2, 64, generator=g)
    prompt_pos = torch.randn(2 * GRID * GRID + 8, 2, 64, generator=g)
    out = tracker.transformer.encoder(src=feats[-1:], src_key_padding_mask=[None], src_pos=pos[-1:], prompt=prompt,
                                      prompt_pos=prompt_pos, prompt_key_padding_mask=None, feat_sizes=sizes[-1:],
                                      num_obj_ptr_tokens=8)["memory"]
    tensors["attn.out"] = out.permute(1, 2, 0).reshape(2, 256, GRID, GRID)[:, :128].contiguous()
    return {"frame": 1, "batch": 2, "num_obj_ptr_tokens": 8, "stored": "first 128 channels, (B,C,e,e)",
            "prompt": "randn(520,2,64) then prompt_pos randn(520,2,64) from Generator(4000)"}


def bank_dict(tracker, frames, cond, scores, batch):
    pos = tracker.maskmem_backbone.position_encoding(torch.zeros(batch, 64, GRID, GRID))
    out = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    for t in frames:
        feat, ptr = bank_entry(t, batch)
        entry = {"maskmem_features": feat, "maskmem_pos_enc": [pos], "obj_ptr": ptr}
        if t in scores:
            entry["eff_iou_score"] = torch.tensor(scores[t])
        out["cond_frame_outputs" if t in cond else "non_cond_frame_outputs"][t] = entry
    return out


BANK_CASES = {
    "forward": dict(frame=9, frames=list(range(9)), cond=[0, 5], reverse=False, num_frames=12, select=False),
    "select": dict(frame=9, frames=list(range(9)), cond=[0], reverse=False, num_frames=12, select=True,
                   scores={1: 0.5, 2: 0.005, 3: 0.3, 4: 0.0, 5: 0.2, 6: 0.02, 7: 0.01, 8: 0.4}),
    "select_short": dict(frame=3, frames=[0, 1, 2], cond=[0], reverse=False, num_frames=12, select=True,
                         scores={1: 0.5, 2: 0.0}),
    "reverse": dict(frame=2, frames=[3, 4, 5, 6, 7], cond=[6], reverse=True, num_frames=8, select=False),
    "many_cond": dict(frame=7, frames=[0, 2, 4, 5, 6, 10, 11], cond=[0, 2, 4, 5, 6, 10], reverse=False,
                      num_frames=12, select=False),
    "long": dict(frame=20, frames=list(range(20)), cond=[0], reverse=False, num_frames=30, select=False),
    "init": dict(frame=0, frames=[], cond=[], reverse=False, num_frames=5, select=False, init=True),
}


def run_bank(trackers, tensors):
    cases = {}
    for name, case in BANK_CASES.items():
        tracker = trackers[case["select"]]
        batch = 2
        levels = frame_features(50 + case["frame"], batch)
        feats, pos, sizes = vision_lists(levels)
        bank = bank_dict(tracker, case["frames"], set(case["cond"]), case.get("scores", {}), batch)
        out = tracker._prepare_memory_conditioned_features(
            frame_idx=case["frame"], is_init_cond_frame=case.get("init", False), current_vision_feats=feats[-1:],
            current_vision_pos_embeds=pos[-1:], feat_sizes=sizes[-1:], output_dict=bank,
            num_frames=case["num_frames"], track_in_reverse=case["reverse"])
        tensors[f"bank.{name}"] = out[:, :32].contiguous()
        cases[name] = {**case, "features": f"frame_features(50 + {case['frame']}, 2)",
                       "entries": "bank_entry(t, 2)", "stored": "first 32 channels"}
    return cases


def run_select(trackers):
    """Official frame pickers on synthetic frame sets: the expected lists go to metadata."""
    out = {"closest_cond": [], "frame_filter": []}
    for frame, conds, limit, keep_first in [(10, [0, 3, 8, 12, 15, 20], 4, False), (10, [0, 3, 8, 12, 15, 20], 4, True),
                                            (2, [5, 6, 7, 9], 2, False), (7, [1, 2], 4, False),
                                            (9, [0, 4, 9, 11, 30], 3, False), (25, [0, 3, 8, 12], 2, True)]:
        sel, unsel = select_closest_cond_frames(frame, {t: t for t in conds}, limit, keep_first_cond_frame=keep_first)
        out["closest_cond"].append({"frame": frame, "cond": conds, "limit": limit, "keep_first": keep_first,
                                    "selected": list(sel), "unselected": list(unsel)})
    tracker = trackers[True]
    scores = {t: (0.0 if t % 3 == 0 else 0.1 * (t % 5)) for t in range(40)}
    for frame, reverse, num_frames, r in [(0, False, 40, 1), (5, False, 40, 1), (30, False, 40, 1), (30, False, 10, 1),
                                          (12, True, 40, 1), (39, True, 40, 1), (20, False, 40, 2), (25, True, 40, 3)]:
        bank = {"non_cond_frame_outputs": {t: {"eff_iou_score": torch.tensor(s)} for t, s in scores.items()
                                           if t != 17}}
        picked = tracker.frame_filter(bank, reverse, frame, num_frames, r)
        out["frame_filter"].append({"frame": frame, "reverse": reverse, "num_frames": num_frames, "stride": r,
                                    "picked": picked})
    out["frame_filter_scores"] = {"rule": "t % 3 == 0 -> 0.0 else 0.1 * (t % 5); frame 17 absent", "frames": 40}
    return out


def record(tensors, prefix, t, out):
    tensors[f"{prefix}.{t}.pred_masks"] = out["pred_masks"].float()
    tensors[f"{prefix}.{t}.obj_ptr"] = out["obj_ptr"]
    tensors[f"{prefix}.{t}.object_score_logits"] = out["object_score_logits"]


def compact(out, store_bf16):
    """What the predictor keeps per frame (bf16 memories, as Sam3TrackerPredictor stores them)."""
    keep = dict(out)
    if store_bf16:
        keep["maskmem_features"] = out["maskmem_features"].to(torch.bfloat16)
    return keep


def run_track(tracker, tensors, prefix, batch, num_frames, first_prompt, store_bf16):
    bank = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    for t in range(num_frames):
        feats, pos, sizes = vision_lists(frame_features(100 + t, batch))
        kwargs = {}
        if t == 0:
            kwargs = first_prompt
        out = tracker.track_step(frame_idx=t, is_init_cond_frame=(t == 0), current_vision_feats=feats,
                                 current_vision_pos_embeds=pos, feat_sizes=sizes, image=None,
                                 point_inputs=kwargs.get("point_inputs"), mask_inputs=kwargs.get("mask_inputs"),
                                 output_dict=bank, num_frames=num_frames, run_mem_encoder=True)
        record(tensors, prefix, t, out)
        if "eff_iou_score" in out:
            tensors[f"{prefix}.{t}.eff_iou_score"] = out["eff_iou_score"].reshape(1)
        bank["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = compact(out, store_bf16)
    return {"batch": batch, "num_frames": num_frames, "features": "frame_features(100 + t, batch)",
            "bf16_memory": store_bf16}


def run_correction(tracker, tensors, points):
    """track_pts again, then a corrective click on the tracked frame 2 together with its previous
    logits (the interactive video path): frame 2 becomes a conditioning frame; frame 3 is re-tracked."""
    bank = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    num_frames, outs = 4, {}

    def step(t, point_inputs=None, prev=None, init=False):
        feats, pos, sizes = vision_lists(frame_features(100 + t, 1))
        return tracker.track_step(frame_idx=t, is_init_cond_frame=init, current_vision_feats=feats,
                                  current_vision_pos_embeds=pos, feat_sizes=sizes, image=None,
                                  point_inputs=point_inputs, mask_inputs=None, output_dict=bank,
                                  num_frames=num_frames, run_mem_encoder=True, prev_sam_mask_logits=prev)

    bank["cond_frame_outputs"][0] = step(0, points, init=True)
    for t in (1, 2, 3):
        outs[t] = bank["non_cond_frame_outputs"][t] = step(t)
    fix = {"point_coords": torch.tensor([[[60.0, 150.0], [120.0, 90.0]]]),
           "point_labels": torch.tensor([[1, 1]], dtype=torch.int32)}
    out = step(2, fix, prev=outs[2]["pred_masks"])
    bank["non_cond_frame_outputs"].pop(2)
    bank["cond_frame_outputs"][2] = out
    record(tensors, "track_fix", 2, out)
    record(tensors, "track_fix", 3, step(3))
    return {"batch": 1, "num_frames": num_frames, "first": "as track_pts, frames 0-3",
            "correction": "frame 2: clicks (60, 150), (120, 90) label 1 (single mask) + prev_sam_mask_logits = "
                          "its tracked pred_masks; stored as a conditioning frame; then frame 3 re-tracked"}


def main():
    torch.set_num_threads(1)
    trackers = {False: build(False), True: build(True)}
    tensors, cases = {}, {}
    with torch.inference_mode():
        cases["memenc"] = run_memenc(trackers[False], tensors)
        cases["attn"] = run_attn(trackers[False], tensors)
        cases["bank"] = run_bank(trackers, tensors)
        cases["select"] = run_select(trackers)

        masks = torch.zeros(2, 1, MASK_IN, MASK_IN)
        masks[0, 0, 60:170, 40:150] = 1.0
        tensors["track_sel.mask_input"] = masks[:, 0].to(torch.uint8)
        cases["track_sel"] = run_track(trackers[True], tensors, "track_sel", 2, 6, {"mask_inputs": masks}, True)
        cases["track_sel"]["prompt"] = "frame 0 mask_inputs (2,1,256,256) = track_sel.mask_input"

        points = {"point_coords": torch.tensor([[[120.0, 90.0]]]),
                  "point_labels": torch.tensor([[1]], dtype=torch.int32)}
        cases["track_pts"] = run_track(trackers[False], tensors, "track_pts", 1, 4, {"point_inputs": points}, False)
        cases["track_pts"]["prompt"] = "frame 0 click (120, 90) label 1"
        cases["track_fix"] = run_correction(trackers[False], tensors, points)

    tracker = trackers[False]
    shapes = {k: list(v.shape) for k, v in tracker.state_dict().items() if v.is_floating_point() and not v.is_complex()}
    meta = {
        "config": json.dumps({"image_size": IMAGE_SIZE, "backbone_stride": STRIDE, "grid": GRID, "mask_in": MASK_IN,
                              "attention_layers": ATTN_LAYERS, "attention_ffn": ATTN_FFN}),
        "tracker_state_dict_shapes": json.dumps(shapes),
        "cases": json.dumps(cases),
        "weight_rule": "seeded_value('tracker.' + key, shape) on the tracker's own state-dict keys, "
                       "then weight_override: value * scale + shift",
        "weight_override": json.dumps(OBJ_SCORE_OVERRIDE),
        "reference": "sam3==0.1.4 (PyPI), Sam3TrackerPredictor from build_tracker (tiny), CPU fp32",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    print("saved", OUT, len(tensors), "tensors", total / 1e6, "MB")
    for prefix in ("track_sel", "track_pts"):
        for t in range(6):
            key = f"{prefix}.{t}.object_score_logits"
            if key in tensors:
                print(prefix, t, tensors[key].flatten().tolist(), tensors.get(f"{prefix}.{t}.eff_iou_score"),
                      (tensors[f"{prefix}.{t}.pred_masks"] > 0).float().mean().item())
    print(json.dumps(cases["select"])[:1500])


if __name__ == "__main__":
    main()
