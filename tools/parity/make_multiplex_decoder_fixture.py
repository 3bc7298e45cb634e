"""Reference outputs of SAM 3.1's ``MultiplexMaskDecoder`` (official GitHub main) at a tiny size.

The released sam3==0.1.4 predates SAM 3.1, so the official decoder file is not in the reference
venv. Fetch ``sam3/model/multiplex_mask_decoder.py`` of facebookresearch/sam3 (commit 1beb583 or
later) into a folder and pass it; the rest (``sam3.sam.transformer.TwoWayTransformer``,
``sam3.sam.common.LayerNorm2d``) comes from 0.1.4:
    OFFICIAL_SRC=DIR bash /work/shared/reference/run.sh tools/parity/make_multiplex_decoder_fixture.py [OUT]
Writes tests/fixtures/modules/multiplex_decoder.safetensors (no weights: both sides rebuild them
with the seeded rule keyed by ``tracker.model.sam_mask_decoder.<key>``).

Tiny configuration, release flags otherwise (notes section 2.1): d 32, 4 slots, 3 masks per slot
and no single-mask token (multimask_outputs_only), two-way transformer depth 2 / 2 heads / MLP 64,
IoU head hidden 32 (no sigmoid), MLP object-score head, high-res features, pointer tokens from
all multimask tokens. The three per-slot token tables are scaled by 20 after seeding (``weight_override``
metadata). Inputs: 2 buckets of an 8x8 feature grid with seeded random image,
position, projected high-res levels and per-slot embeddings.
"""
import cpu_redirect  # noqa: F401  (must come first)
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SAM3_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
sys.path.insert(0, str(REFERENCE))
from seeded import seeded_value  # noqa: E402

from sam3.sam.transformer import TwoWayTransformer  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "fixtures" / "modules" / "multiplex_decoder.safetensors"
SOURCE = Path(os.environ["OFFICIAL_SRC"]) / "multiplex_mask_decoder.py"
PREFIX = "tracker.model.sam_mask_decoder."
DIM, SLOTS, PER_SLOT, GRID, BUCKETS = 32, 4, 3, 8, 2
# Seeded 0.05-scale token tables barely separate the slots after the transformer's norms (IoU
# predictions of two slots differ by ~5e-5); scaled up, a slot mix-up cannot hide in the tolerance.
OVERRIDES = [(PREFIX + name, 20.0, 0.0) for name in ("obj_score_token.weight", "iou_token.weight", "mask_tokens.weight")]


def official_decoder():
    spec = importlib.util.spec_from_file_location("official_multiplex_mask_decoder", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MultiplexMaskDecoder(
        transformer_dim=DIM, multiplex_count=SLOTS, num_multimask_outputs=PER_SLOT,
        transformer=TwoWayTransformer(depth=2, embedding_dim=DIM, mlp_dim=64, num_heads=2),
        iou_head_depth=3, iou_head_hidden_dim=32, use_high_res_features=True, iou_prediction_use_sigmoid=False,
        pred_obj_scores=True, pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
        multimask_outputs_only=True)


def main() -> None:
    decoder = official_decoder().eval()
    with torch.no_grad():
        for key, value in decoder.state_dict().items():
            value.copy_(seeded_value(PREFIX + key, value.shape))
        for key, scale, shift in OVERRIDES:
            decoder.state_dict()[key[len(PREFIX):]].mul_(scale).add_(shift)
    gen = torch.Generator().manual_seed(31)
    inputs = {
        "image": torch.randn(BUCKETS, DIM, GRID, GRID, generator=gen),
        "image_pe": torch.randn(1, DIM, GRID, GRID, generator=gen),
        "feat_s0": torch.randn(BUCKETS, DIM // 8, 4 * GRID, 4 * GRID, generator=gen),
        "feat_s1": torch.randn(BUCKETS, DIM // 4, 2 * GRID, 2 * GRID, generator=gen),
        "slot_embed": torch.randn(BUCKETS, SLOTS, DIM, generator=gen),
    }
    with torch.no_grad():
        out = decoder(inputs["image"], inputs["image_pe"], multimask_output=True,
                      high_res_features=[inputs["feat_s0"], inputs["feat_s1"]],
                      extra_per_object_embeddings=inputs["slot_embed"])
    tensors = {f"in.{k}": v.contiguous() for k, v in inputs.items()}
    tensors.update({f"out.{k}": v.contiguous() for k, v in out.items()})
    shapes = {k: list(v.shape) for k, v in decoder.state_dict().items()}
    config = dict(dim=DIM, slots=SLOTS, masks_per_slot=PER_SLOT, grid=GRID, decoder_depth=2, decoder_heads=2,
                  decoder_mlp_dim=64, iou_head_hidden=32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"config": json.dumps(config), "state_dict_shapes": json.dumps(shapes),
                                           "prefix": PREFIX, "weight_override": json.dumps(OVERRIDES), "source": "facebookresearch/sam3 multiplex_mask_decoder.py @ 1beb583"})
    print(f"wrote {OUT}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()))


if __name__ == "__main__":
    main()
