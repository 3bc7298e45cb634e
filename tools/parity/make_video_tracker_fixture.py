"""Reference outputs of the official interactive video tracker (``Sam3TrackerPredictor``) at a
tiny configuration, end to end: frames -> ViT trunk + tracker neck -> prompts -> propagation.

Run with the reference runner (official sam3==0.1.4 on CPU):
    bash /work/shared/reference/run.sh tools/parity/make_video_tracker_fixture.py [OUT]
Writes tests/fixtures/modules/video_tracker.safetensors (no weights, no frames: the test rebuilds
both from seeds).

Model: ``build_tracker(apply_temporal_disambiguation=True, with_backbone=True)`` (the tracker of
``build_sam3_video_model``) shrunk to the tiny image configuration of tiny_reference.py: 336 px
(24x24 grid, 96x96 low-res masks, 384 px memory-encoder masks), ViT 128-d x 4 blocks, tracker
neck 256-d; memory attention 2 layers with FFN 512; everything else as the official builder.
Weights: backbone keys seeded by their own name (``backbone.vision_backbone.*``, as in the image
model), tracker keys by ``tracker.<key>``. Seeded weights make every object "absent" everywhere
(all masks would be the -1024 placeholder), so the object-score head's last layer is spread (x50)
and shifted (+10.5) on both sides (``weight_override`` metadata; OBJ_W_SCALE / OBJ_B_SHIFT in the
environment), which makes every object present on every frame with distinct masks.

Clip: 6 RGB frames of 224x224 made by ``make_frames`` below (torch generator, seed 7).
Frames are preprocessed as opensam3 does (uint8 antialiased bilinear resize to 336, /255,
(x - 0.5) / 0.5) and handed to the tracker state directly.

Scenario (the ``steps`` metadata lists every recorded step and its keys):
  add.0   object 1: a click on frame 0
  add.1   object 2: a box on frame 0
  prop.0  propagate forward from frame 0 (all frames)
  add.2   object 1: a positive and a negative click on the tracked frame 3 (clear_old_points=False)
  prop.1  propagate forward from frame 3
  prop.2  propagate backward from frame 3, at most 2 more frames
  add.3   object 2: a mask on frame 5
  prop.3  propagate backward from frame 5, at most 2 more frames
  remove  remove object 1 (updated masks of the frames it had prompts on)
  prop.4  propagate forward from frame 0 (object 2 alone)
Recorded per propagated frame: object ids, low-res mask logits (B, 1, 96, 96), object score
logits, video-resolution masks (> 0, bit-packed) as output by the default build (no
non-overlap, no hole filling) and, for prop.0, with the non-overlap constraint applied.
Per add: the new low-res logits of the prompted object and the frame's video-resolution masks.
"""
import cpu_redirect  # noqa: F401  (must come first)
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SAM3_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
sys.path.insert(0, str(REFERENCE))
from seeded import seeded_value  # noqa: E402

import sam3.model_builder as mb  # noqa: E402
from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention  # noqa: E402
from sam3.model.model_misc import TransformerWrapper  # noqa: E402
from sam3.model.position_encoding import PositionEmbeddingSine  # noqa: E402
from sam3.model.vitdet import ViT  # noqa: E402
from sam3.sam.transformer import RoPEAttention  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "fixtures" / "modules" / "video_tracker.safetensors"
RES, PATCH, WIN = 336, 14, 8
GRID = RES // PATCH  # 24
MASK_IN = 16 * GRID  # 384
ATTN_LAYERS, ATTN_FFN = 2, 512
NUM_FRAMES, HEIGHT, WIDTH = 6, 224, 224
OBJ_W_SCALE, OBJ_B_SHIFT = float(os.environ.get("OBJ_W_SCALE", 50.0)), float(os.environ.get("OBJ_B_SHIFT", 10.5))
OBJ_SCORE_OVERRIDE = [("sam_mask_decoder.pred_obj_score_head.layers.2.weight", OBJ_W_SCALE, 0.0),
                      ("sam_mask_decoder.pred_obj_score_head.layers.2.bias", 1.0, OBJ_B_SHIFT)]
VIT = dict(embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.625, window_size=WIN, global_blocks=[1, 3],
           pretrain_img_size=112)


def make_frames():
    """(T, H, W, 3) uint8: smooth random colour fields with two bright squares that move."""
    g = torch.Generator().manual_seed(7)
    coarse = torch.randint(0, 256, (NUM_FRAMES, 3, 14, 14), generator=g).float()
    frames = F.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)
    for t in range(NUM_FRAMES):
        frames[t, :, 80:140, 40 + 6 * t:100 + 6 * t] = torch.tensor([250.0, 240.0, 30.0])[:, None, None]
        frames[t, :, 60 + 4 * t:120 + 4 * t, 140:190] = torch.tensor([20.0, 60.0, 245.0])[:, None, None]
    return frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def preprocess(frames):
    """opensam3.data.image_io.preprocess: uint8 resize (antialiased bilinear), /255, (x - .5) / .5."""
    chw = frames.permute(0, 3, 1, 2)
    resized = torch.cat([F.interpolate(chw[i:i + 1], size=(RES, RES), mode="bilinear", align_corners=False,
                                       antialias=True) for i in range(chw.shape[0])])
    return (resized.float() / 255.0 - 0.5) / 0.5


def vit(compile_mode=None):
    return ViT(img_size=RES, pretrain_img_size=VIT["pretrain_img_size"], patch_size=PATCH, embed_dim=VIT["embed_dim"],
               depth=VIT["depth"], num_heads=VIT["num_heads"], mlp_ratio=VIT["mlp_ratio"], norm_layer="LayerNorm",
               drop_path_rate=0.0, qkv_bias=True, use_abs_pos=True, tile_abs_pos=True,
               global_att_blocks=tuple(VIT["global_blocks"]), rel_pos_blocks=(), use_rope=True, use_interp_rope=True,
               window_size=WIN, pretrain_use_cls_token=True, retain_cls_token=False, ln_pre=True, ln_post=False,
               return_interm_layers=False, bias_patch_embed=False, compile_mode=None)


def pos(precompute_resolution=None):
    return PositionEmbeddingSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000,
                                 precompute_resolution=RES if precompute_resolution else None)


def tiny_maskmem_backbone():
    enc = _orig_maskmem()
    enc.mask_downsampler.interpol_size = [MASK_IN, MASK_IN]
    enc.position_encoding = PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000,
                                                  precompute_resolution=RES)
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
mb._create_vit_backbone = vit
mb._create_position_encoding = pos
mb._create_tracker_maskmem_backbone = tiny_maskmem_backbone
mb._create_tracker_transformer = tiny_transformer
mb.Sam3TrackerPredictor = lambda **kw: _Tracker(**{**kw, "image_size": RES})


def build():
    torch.manual_seed(0)
    tracker = mb.build_tracker(apply_temporal_disambiguation=True, with_backbone=True)
    with torch.no_grad():
        for name, p in tracker.state_dict().items():
            if p.is_floating_point() and not p.is_complex():
                key = name if name.startswith("backbone.") else "tracker." + name
                p.copy_(seeded_value(key, p.shape))
        for name, scale, shift in OBJ_SCORE_OVERRIDE:
            tracker.state_dict()[name].mul_(scale).add_(shift)
    for m in tracker.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return tracker.eval()


def packbits(mask):
    """(N, 1, H, W) bool -> uint8 bit-packed along the flattened pixels (numpy packbits, big-endian)."""
    return torch.from_numpy(np.packbits(mask.reshape(mask.shape[0], -1).numpy().astype(np.uint8), axis=1))


def main():
    torch.set_num_threads(1)
    tracker = build()
    frames = make_frames()
    tensors, steps = {}, []
    with torch.inference_mode():
        state = tracker.init_state(video_height=HEIGHT, video_width=WIDTH, num_frames=NUM_FRAMES)
        state["images"] = preprocess(frames)

        def rel(xy):
            return torch.tensor(xy, dtype=torch.float32) / torch.tensor([WIDTH, HEIGHT], dtype=torch.float32)

        def record_add(name, frame_idx, obj_id, out, kind, prompt):
            _, obj_ids, _, video_res = out
            obj_idx = state["obj_id_to_idx"][obj_id]
            temp = state["temp_output_dict_per_obj"][obj_idx]["cond_frame_outputs"][frame_idx]
            if temp["pred_masks"] is not None:
                tensors[f"{name}.low_res"] = temp["pred_masks"].float().contiguous()
            tensors[f"{name}.video_masks"] = packbits(video_res > 0)
            steps.append({"name": name, "kind": kind, "frame": frame_idx, "obj_id": obj_id, "obj_ids": list(obj_ids),
                          **prompt})

        def record_prop(name, start, max_frames, reverse, nonoverlap=False):
            frames_seen = []
            for t, obj_ids, low_res, video_res, scores in tracker.propagate_in_video(
                    state, start_frame_idx=start, max_frame_num_to_track=max_frames, reverse=reverse,
                    tqdm_disable=True, propagate_preflight=True):
                frames_seen.append({"frame": t, "obj_ids": list(obj_ids)})
                tensors[f"{name}.{t}.low_res"] = low_res.float().contiguous()
                tensors[f"{name}.{t}.scores"] = scores.float().contiguous()
                tensors[f"{name}.{t}.video_masks"] = packbits(video_res > 0)
                if nonoverlap:
                    tensors[f"{name}.{t}.video_masks_nonoverlap"] = packbits(
                        tracker._apply_non_overlapping_constraints(video_res) > 0)
            steps.append({"name": name, "kind": "propagate", "start": start, "max_frames": max_frames,
                          "reverse": reverse, "frames": frames_seen})

        pts = [[84.0, 112.0]]
        out = tracker.add_new_points_or_box(state, 0, 1, points=rel(pts), labels=torch.tensor([1], dtype=torch.int32))
        record_add("add.0", 0, 1, out, "points", {"points": pts, "labels": [1], "clear_old_points": True})
        box = [112.0, 56.0, 196.0, 168.0]
        out = tracker.add_new_points_or_box(state, 0, 2, box=rel([box[:2], box[2:]]).reshape(-1))
        record_add("add.1", 0, 2, out, "box", {"box": box})
        record_prop("prop.0", 0, None, False, nonoverlap=True)

        pts = [[140.0, 112.0], [56.0, 168.0]]
        out = tracker.add_new_points_or_box(state, 3, 1, points=rel(pts),
                                            labels=torch.tensor([1, 0], dtype=torch.int32), clear_old_points=False)
        record_add("add.2", 3, 1, out, "points", {"points": pts, "labels": [1, 0], "clear_old_points": False})
        record_prop("prop.1", 3, None, False)
        record_prop("prop.2", 3, 2, True)

        yy, xx = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
        mask = ((xx - 160.0) / 40.0) ** 2 + ((yy - 120.0) / 55.0) ** 2 <= 1.0
        tensors["add.3.mask_input"] = packbits(mask[None, None])
        out = tracker.add_new_mask(state, 5, 2, mask)
        record_add("add.3", 5, 2, out, "mask",
                   {"mask": "ellipse centre (160, 120) radii (40, 55), see add.3.mask_input"})
        record_prop("prop.3", 5, 2, True)

        obj_ids, updated = tracker.remove_object(state, 1)
        for t, video_res in updated:
            tensors[f"remove.{t}.video_masks"] = packbits(video_res > 0)
        steps.append({"name": "remove", "kind": "remove", "obj_id": 1, "obj_ids": list(obj_ids),
                      "updated_frames": [t for t, _ in updated]})
        record_prop("prop.4", 0, None, False)

    meta = {
        "config": json.dumps({"image_size": RES, "patch_size": PATCH, "grid": GRID, "mask_in": MASK_IN,
                              "attention_layers": ATTN_LAYERS, "attention_ffn": ATTN_FFN, "vit": VIT,
                              "use_memory_selection": True, "num_frames": NUM_FRAMES, "height": HEIGHT,
                              "width": WIDTH}),
        "steps": json.dumps(steps),
        "weight_rule": "backbone.* keys: seeded_value(key); other tracker keys: seeded_value('tracker.' + key); "
                       "then weight_override: value * scale + shift",
        "weight_override": json.dumps(OBJ_SCORE_OVERRIDE),
        "frames": "make_frames(): torch Generator(7), see the generator script",
        "frames_sum": str(int(frames.long().sum())),
        "reference": "sam3==0.1.4 (PyPI), Sam3TrackerPredictor from build_tracker(True, with_backbone=True), tiny, "
                     "CPU fp32",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    print("saved", OUT, len(tensors), "tensors", round(total / 1e6, 2), "MB")
    for step in steps:
        print(json.dumps(step)[:300])
    for k in sorted(tensors):
        if k.endswith(".scores"):
            print(k, [round(v, 3) for v in tensors[k].flatten().tolist()],
                  (tensors[k.replace("scores", "low_res")] > 0).float().mean((1, 2, 3)).tolist())


if __name__ == "__main__":
    main()
