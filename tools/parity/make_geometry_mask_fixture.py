"""Reference outputs of the official geometry encoder, segmentation head and RoI Align.

Run with the reference runner (official sam3 code, torchvision shim):
    bash /work/shared/reference/run.sh tools/parity/make_geometry_mask_fixture.py [OUT]
Builds ``geometry_encoder`` and ``segmentation_head`` as the official builder does, at the tiny
fixture size (geometry encoder cut to 1 layer, as tiny_reference.py does), fills them with the
seeded weight rule under their image-model names, and runs them on seeded inputs on a 24x24
grid, batch 2. Large inputs (image tokens, FPN maps) are not stored: they are rebuilt from the
seeded rule with the ``input.*`` keys below, and probes of them are stored to check that.
"""
import cpu_redirect  # noqa: F401  (must come first)

import json
import os
import sys

import torch
from safetensors.torch import save_file
from torchvision.ops import roi_align as shim_roi_align

import sam3.model_builder as mb
from sam3.model.geometry_encoders import Prompt

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)
from opensam3.seeded import seeded_value  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/fixtures/modules/geometry_mask.safetensors")
GRID, BATCH, DIM, QUERIES, GEO_LAYERS = 24, 2, 256, 6, 1


def seeded_input(key: str, shape) -> torch.Tensor:
    """Unit-variance input rebuilt from the weight rule (which draws 0.05 * randn)."""
    return seeded_value(key, shape) * 20.0


# (key, shape) of the large inputs; the test rebuilds them with seeded_input
REBUILT = {
    "input.geo.image_tokens": (BATCH, GRID * GRID, DIM),
    "input.geo.image_pos": (BATCH, GRID * GRID, DIM),
    "input.seg.fpn0": (BATCH, DIM, 4 * GRID, 4 * GRID),
    "input.seg.fpn1": (BATCH, DIM, 2 * GRID, 2 * GRID),
    "input.seg.fpn2": (BATCH, DIM, GRID, GRID),
    "input.seg.encoded_image": (BATCH, GRID * GRID, DIM),
    "input.seg.hs": (2, BATCH, QUERIES, DIM),
    "input.seg.prompt": (BATCH, 7, DIM),
}


def seed(module: torch.nn.Module, prefix: str) -> None:
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not tensor.is_complex():
                tensor.copy_(seeded_value(prefix + name, tensor.shape))


def no_dropout(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def geometry_cases():
    """name -> (boxes (B,N,4), box_labels (B,N), box_pad (B,N), points (B,P,2) | None, ...)."""
    t = torch.tensor
    cases = {}
    cases["text_only"] = (torch.zeros(BATCH, 0, 4), torch.zeros(BATCH, 0, dtype=torch.long),
                          torch.zeros(BATCH, 0, dtype=torch.bool), None, None, None)
    cases["one_box"] = (t([[[0.4, 0.5, 0.3, 0.4]], [[0.7, 0.3, 0.2, 0.5]]]), t([[1], [1]]),
                        t([[False], [False]]), None, None, None)
    cases["pos_neg_padded"] = (t([[[0.4, 0.5, 0.3, 0.4], [0.8, 0.2, 0.2, 0.2]],
                                  [[0.3, 0.6, 0.25, 0.3], [0.5, 0.5, 0.4, 0.4]]]),
                               t([[1, 0], [1, 1]]), t([[False, False], [False, True]]), None, None, None)
    cases["outside_tiny"] = (t([[[0.95, 0.05, 0.3, 0.3], [0.02, 0.98, 0.1, 0.1]],
                                [[0.5, 0.5, 0.01, 0.01], [-0.05, 0.9, 0.2, 0.4]]]),
                             t([[1, 0], [0, 1]]), t([[False, False], [False, False]]), None, None, None)
    cases["points_boxes"] = (t([[[0.6, 0.4, 0.5, 0.3]], [[0.2, 0.2, 0.1, 0.1]]]), t([[1], [1]]),
                             t([[False], [True]]),
                             t([[[0.1, 0.2], [0.5, 0.5], [0.99, 0.01]], [[0.3, 0.7], [0.8, 0.6], [0.0, 0.0]]]),
                             t([[1, 0, 1], [0, 1, 1]]), t([[False, False, False], [False, False, True]]))
    cases["points_only"] = (None, None, None, t([[[0.25, 0.75]], [[0.6, 0.1]]]), t([[1], [0]]),
                            t([[False], [False]]))
    return cases


def seq_first(x):
    return None if x is None else x.transpose(0, 1).contiguous()


def run_geometry(tensors: dict) -> dict:
    geo = mb._create_geometry_encoder()
    geo.encode = geo.encode[:GEO_LAYERS]
    geo.num_layers = GEO_LAYERS
    seed(geo, "geometry_encoder.")
    no_dropout(geo)
    geo.eval()
    image = seeded_input("input.geo.image_tokens", REBUILT["input.geo.image_tokens"])
    pos = seeded_input("input.geo.image_pos", REBUILT["input.geo.image_pos"])
    for name, (boxes, labels, pad, points, point_labels, point_pad) in geometry_cases().items():
        prompt = Prompt(box_embeddings=seq_first(boxes), box_mask=pad, box_labels=seq_first(labels),
                        point_embeddings=seq_first(points), point_mask=point_pad,
                        point_labels=seq_first(point_labels))
        out, mask = geo(geo_prompt=prompt, img_feats=[image.transpose(0, 1)], img_sizes=[(GRID, GRID)],
                        img_pos_embeds=[pos.transpose(0, 1)])
        prefix = f"geo.{name}"
        for key, value in (("boxes", boxes), ("box_labels", labels), ("box_pad", pad), ("points", points),
                           ("point_labels", point_labels), ("point_pad", point_pad)):
            if value is not None:
                tensors[f"{prefix}.in.{key}"] = value.contiguous()
        tensors[f"{prefix}.out.tokens"] = out.transpose(0, 1).contiguous()
        tensors[f"{prefix}.out.pad"] = mask.contiguous()
        print(name, tuple(out.shape), mask.tolist())
    return {k: list(v.shape) for k, v in geo.state_dict().items()}


def run_segmentation(tensors: dict) -> dict:
    head = mb._create_segmentation_head()
    seed(head, "segmentation_head.")
    no_dropout(head)
    head.eval()
    fpn = [seeded_input(f"input.seg.fpn{i}", REBUILT[f"input.seg.fpn{i}"]) for i in range(3)]
    encoded = seeded_input("input.seg.encoded_image", REBUILT["input.seg.encoded_image"])
    hs = seeded_input("input.seg.hs", REBUILT["input.seg.hs"])
    prompt = seeded_input("input.seg.prompt", REBUILT["input.seg.prompt"])
    prompt_pad = torch.zeros(BATCH, 7, dtype=torch.bool)
    prompt_pad[1, 4:] = True
    out = head(backbone_feats=fpn, obj_queries=hs, image_ids=torch.arange(BATCH),
               encoder_hidden_states=encoded.transpose(0, 1), prompt=prompt.transpose(0, 1),
               prompt_mask=prompt_pad)
    tensors["seg.in.prompt_pad"] = prompt_pad
    tensors["seg.out.masks"] = out["pred_masks"].contiguous()
    tensors["seg.out.semantic"] = out["semantic_seg"].contiguous()
    print("seg", tuple(out["pred_masks"].shape), tuple(out["semantic_seg"].shape))
    return {k: list(v.shape) for k, v in head.state_dict().items()}


ROI_CONFIGS = [  # (output_size, spatial_scale, sampling_ratio, aligned); the first is the detector's
    (7, 1.0, -1, False),
    ((3, 5), 0.5, 0, True),
    (7, 1.0, 2, False),
    ((4, 4), 2.0, -1, True),
]


def run_roi_align(tensors: dict) -> list:
    features = seeded_input("input.roi.features", (2, 4, 11, 13))
    rois = torch.tensor([
        [0, 1.0, 2.0, 9.0, 8.0],
        [1, -3.0, -2.0, 5.0, 4.0],     # partly outside (top-left)
        [0, 10.0, 7.0, 16.0, 14.0],    # partly outside (bottom-right)
        [1, 4.2, 5.1, 4.3, 5.15],      # tiny
        [0, 0.0, 0.0, 13.0, 11.0],     # whole map
        [1, -20.0, -20.0, -15.0, -12.0],  # fully outside
        [0, 2.5, 0.5, 12.9, 3.5],      # wide
        [1, 6.0, 6.0, 6.0, 6.0],       # degenerate
    ])
    tensors["roi.in.rois"] = rois
    for index, (size, scale, ratio, aligned) in enumerate(ROI_CONFIGS):
        tensors[f"roi.out.{index}"] = shim_roi_align(features, rois, size, scale, ratio, aligned).contiguous()
    return [[s if isinstance(s, int) else list(s), scale, ratio, aligned] for s, scale, ratio, aligned in ROI_CONFIGS]


def probe(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1)
    return torch.cat((flat[:16], flat[-16:], flat.sum()[None].float()))


@torch.no_grad()
def main():
    torch.manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    geo_shapes = run_geometry(tensors)
    seg_shapes = run_segmentation(tensors)
    roi_configs = run_roi_align(tensors)
    for key, shape in REBUILT.items():
        tensors[f"probe.{key}"] = probe(seeded_input(key, shape))
    meta = {
        "geometry_state_dict_shapes": json.dumps(geo_shapes),
        "segmentation_state_dict_shapes": json.dumps(seg_shapes),
        "rebuilt_inputs": json.dumps({k: list(v) for k, v in REBUILT.items()}),
        "input_rule": "seeded_value(key, shape) * 20 (opensam3.seeded)",
        "weight_rule": "seeded_value('geometry_encoder.' / 'segmentation_head.' + name, shape)",
        "roi_configs": json.dumps(roi_configs),
        "geometry_layers": str(GEO_LAYERS),
        "reference": "sam3==0.1.4 (PyPI) SequenceGeometryEncoder / UniversalSegmentationHead from "
                     "model_builder, torchvision shim roi_align; CPU fp32",
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
    print("saved", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
