"""Reference outputs of the official interactive (point / box / mask prompt) image path,
``Sam3Image.predict_inst``, at the tiny configuration.

Run with the reference runner (official sam3==0.1.4 on CPU):
    bash /work/shared/reference/run.sh tools/parity/make_tracker_fixture.py [OUT] [BPE]
Writes tests/fixtures/modules/tracker.safetensors (no weights: both sides rebuild them with the
seeded rule keyed by the tiny image model's names; the tracker lives under
``inst_interactive_predictor.model.*`` there, which is ``tracker.*`` in sam3.pt).

The tiny image model of tiny_reference.py, built with enable_inst_interactivity=True (so the
backbone has the tracker neck) and a tracker whose image_size is 336 (24x24 grid, 96x96 low-res
masks). Image: numpy default_rng(3) uint8 120x160. Cases (``cases`` metadata):
  points:      a positive and a negative click, multimask
  box:         a box, single mask (dynamic fallback to the best multimask output)
  refine:      box + a click + mask_input = best low-res logits of ``points``, single mask
  click1:      one click, single mask
  mask_only:   mask_input alone, multimask
"""
import cpu_redirect  # noqa: F401  (must come first)
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SAM3_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
sys.path.insert(0, str(REFERENCE))
import tiny_reference as tr  # noqa: E402  (importing it shrinks the builder's factories)
from seeded import seeded_value  # noqa: E402

import sam3.model_builder as mb  # noqa: E402
from sam3.model.sam3_image_processor import Sam3Processor  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "fixtures" / "modules" / "tracker.safetensors"
BPE = sys.argv[2] if len(sys.argv) > 2 else str(REFERENCE.parent / "data" / "bpe_simple_vocab_16e6.txt.gz")
GRID = tr.RES // tr.PATCH  # 24
TRACKER_PREFIX = "inst_interactive_predictor.model."
IMAGE_SEED, IMAGE_HW = 3, (120, 160)

_Tracker = mb.Sam3TrackerPredictor


def tiny_tracker(**kwargs):
    # build_tracker hardcodes the full-size input; the heads' sizes follow image_size
    return _Tracker(**{**kwargs, "image_size": tr.RES})


mb.Sam3TrackerPredictor = tiny_tracker


def main():
    torch.manual_seed(0)
    model = mb.build_sam3_image_model(bpe_path=BPE, device="cpu", load_from_HF=False, checkpoint_path=None,
                                      enable_inst_interactivity=True)
    model.eval()
    tr.seeded_init(model)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    predictor = model.inst_interactive_predictor
    # the official predictor hardcodes the full-size feature sizes
    predictor._bb_feat_sizes = [(4 * GRID, 4 * GRID), (2 * GRID, 2 * GRID), (GRID, GRID)]

    rng = np.random.default_rng(IMAGE_SEED)
    image = Image.fromarray(rng.integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8))
    proc = Sam3Processor(model, resolution=tr.RES, device="cpu", confidence_threshold=0.0)
    tensors = {"input.image_uint8_hwc": torch.from_numpy(np.asarray(image).copy())}
    with torch.inference_mode():
        state = proc.set_image(image)
        sam2 = state["backbone_out"]["sam2_backbone_out"]
        tensors["out.tracker_fpn.last.ch16"] = sam2["backbone_fpn"][-1][:, :16].contiguous()
        tensors["out.high_res_s1.ch8"] = sam2["backbone_fpn"][1][:, :8].contiguous()

        def run(name, **kwargs):
            masks, ious, low = model.predict_inst(state, **kwargs)
            tensors[f"out.{name}.masks"] = torch.as_tensor(masks).to(torch.uint8)
            tensors[f"out.{name}.ious"] = torch.as_tensor(ious)
            tensors[f"out.{name}.low_res_logits"] = torch.as_tensor(low)
            return masks, ious, low

        cases = {
            "points": dict(point_coords=[[80.0, 60.0], [30.0, 100.0]], point_labels=[1, 0], multimask_output=True),
            "box": dict(box=[30.0, 20.0, 130.0, 100.0], multimask_output=False),
            "click1": dict(point_coords=[[100.0, 70.0]], point_labels=[1], multimask_output=False),
        }
        results = {}
        for name, kw in cases.items():
            args = {k: (np.array(v) if isinstance(v, list) else v) for k, v in kw.items()}
            results[name] = run(name, **args)
        best = int(np.argmax(results["points"][1]))
        mask_input = results["points"][2][best][None]
        cases["refine"] = dict(box=[30.0, 20.0, 130.0, 100.0], point_coords=[[70.0, 50.0]], point_labels=[1],
                               mask_input=f"points.low_res_logits[{best}][None]", multimask_output=False)
        run("refine", box=np.array(cases["refine"]["box"]), point_coords=np.array([[70.0, 50.0]]),
            point_labels=np.array([1]), mask_input=mask_input, multimask_output=False)
        cases["mask_only"] = dict(mask_input=f"points.low_res_logits[{best}][None]", multimask_output=True)
        run("mask_only", mask_input=mask_input, multimask_output=True)

    shapes = {k[len(TRACKER_PREFIX):]: list(v.shape) for k, v in model.state_dict().items()
              if k.startswith(TRACKER_PREFIX) and v.is_floating_point() and not v.is_complex()}
    meta = {
        "config": json.dumps({**tr.TINY, "tracker_image_size": tr.RES, "tracker_prefix": TRACKER_PREFIX}),
        "tracker_state_dict_shapes": json.dumps(shapes),
        "cases": json.dumps(cases),
        "image": f"numpy default_rng({IMAGE_SEED}).integers(0,256,({IMAGE_HW[0]},{IMAGE_HW[1]},3),uint8)",
        "weight_rule": "seeded_value(key, shape) keyed by the tiny image model's names "
                       "(tracker under inst_interactive_predictor.model.)",
        "reference": "sam3==0.1.4 (PyPI), Sam3Image.predict_inst via Sam3Processor.set_image, CPU fp32",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(OUT), metadata=meta)
    print("saved", OUT, {k: tuple(v.shape) for k, v in tensors.items()})
    for name in ["points", "box", "click1", "refine", "mask_only"]:
        print(name, tensors[f"out.{name}.ious"].tolist(), tensors[f"out.{name}.masks"].float().mean().item())


if __name__ == "__main__":
    main()
