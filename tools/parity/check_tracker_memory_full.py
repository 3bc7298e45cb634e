"""Full-size spot check of the tracker memory path against the official code (no fixture written).

Run with the reference runner:
    bash /work/shared/reference/run.sh tools/parity/check_tracker_memory_full.py
Builds the official ``build_tracker`` tracker (full size, seeded by the checkpoint names
``tracker.<key>``) and ours (opensam3 imported from this checkout), then on seeded 72x72 features
compares: the memory encoder on 1008-px mask logits (upsampled to 1152 inside), memory
conditioning of frame 8 over a synthetic bank (1 prompted frame + 7 tracked frames, pointers),
and a mask-prompted first frame followed by two tracked frames. Prints the max abs errors.
"""
import cpu_redirect  # noqa: F401  (must come first)
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SAM3_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
sys.path.insert(0, str(REFERENCE))
sys.path.insert(0, str(REPO))
from seeded import seeded_value  # noqa: E402

import sam3.model_builder as mb  # noqa: E402
from sam3.model.position_encoding import PositionEmbeddingSine  # noqa: E402

from opensam3.model.tracker import (FrameFeatures, MemoryBank, MemoryFrame, TrackerHeads, TrackerMemory,  # noqa: E402
                                    track_step)
from opensam3.seeded import seed_module  # noqa: E402

E = 72


def features(t):
    g = torch.Generator().manual_seed(5000 + t)
    return (torch.randn(1, 256, E, E, generator=g), torch.randn(1, 64, 2 * E, 2 * E, generator=g),
            torch.randn(1, 32, 4 * E, 4 * E, generator=g))


def lists(level2, s1, s0):
    pos = PositionEmbeddingSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000)
    maps = [s0, s1, level2]
    return ([x.flatten(2).permute(2, 0, 1) for x in maps], [pos(x).flatten(2).permute(2, 0, 1) for x in maps],
            [(x.shape[-2], x.shape[-1]) for x in maps])


def main():
    torch.set_num_threads(1)
    tracker = mb.build_tracker(apply_temporal_disambiguation=False)
    with torch.no_grad():
        for name, p in tracker.state_dict().items():
            if p.is_floating_point() and not p.is_complex():
                p.copy_(seeded_value("tracker." + name, p.shape))
        for m in tracker.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    tracker.eval()
    heads, memory = TrackerHeads().eval(), TrackerMemory().eval()
    seed_module(heads, prefix="tracker.")
    seed_module(memory, prefix="tracker.")
    err = {}
    with torch.inference_mode():
        level2, s1, s0 = features(0)
        feats, pos, sizes = lists(level2, s1, s0)
        logits = 4 * torch.randn(1, 1, 1008, 1008, generator=torch.Generator().manual_seed(6000))
        score = torch.tensor([[1.0]])
        ref, ref_pos = tracker._encode_new_memory(None, feats, sizes, logits, score, is_mask_from_pts=False)
        ours, ours_pos = memory.encode(level2, logits, score, from_points=False)
        err["memory encoder"] = (ours - ref).abs().max().item()
        err["memory pos"] = (ours_pos - ref_pos[0]).abs().max().item()

        bank_ref = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        bank = MemoryBank()
        for t in range(8):
            g = torch.Generator().manual_seed(7000 + t)
            f, p = torch.randn(1, 64, E, E, generator=g), torch.randn(1, 256, generator=g)
            key = "cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"
            bank_ref[key][t] = {"maskmem_features": f, "maskmem_pos_enc": [ref_pos[0]], "obj_ptr": p}
            bank.add(t, MemoryFrame(f, ref_pos[0], p, score), is_cond=t == 0)
        level2, s1, s0 = features(8)
        feats, pos, sizes = lists(level2, s1, s0)
        ref = tracker._prepare_memory_conditioned_features(8, False, feats[-1:], pos[-1:], sizes[-1:], bank_ref, 30)
        ours = memory.condition(level2, 8, bank, 30)
        err["memory conditioning"] = (ours - ref).abs().max().item()

        mask = torch.zeros(1, 1, 1152, 1152)
        mask[..., 300:700, 200:650] = 1
        bank_ref = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        bank = MemoryBank()
        for t in range(3):
            level2, s1, s0 = features(20 + t)
            feats, pos, sizes = lists(level2, s1, s0)
            ref = tracker.track_step(t, t == 0, feats, pos, sizes, None, None, mask if t == 0 else None, bank_ref,
                                     10, run_mem_encoder=True)
            bank_ref["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = ref
            out = track_step(heads, memory, FrameFeatures(level2, (s0, s1)), t, bank, 10, t == 0,
                             mask_input=mask if t == 0 else None)
            bank.add(t, out.memory(), is_cond=t == 0)
            err[f"track frame {t} masks"] = (out.low_res_masks - ref["pred_masks"]).abs().max().item()
            err[f"track frame {t} obj_ptr"] = (out.obj_ptr - ref["obj_ptr"]).abs().max().item()
            err[f"track frame {t} object score"] = (out.object_score_logits
                                                    - ref["object_score_logits"]).abs().max().item()
            print(f"frame {t}: official object score {ref['object_score_logits'].item():.4f}, "
                  f"mask area {(ref['pred_masks'] > 0).float().mean().item():.3f}")
    for k, v in err.items():
        print(f"{k}: {v:.3g}")


if __name__ == "__main__":
    main()
