"""Build the official fusion encoder, DETR decoder and dot-product scorer at the tiny fixture
size with seeded weights, run them on seeded random inputs (batch 2) and save inputs + outputs
to tests/fixtures/modules/detector.safetensors.

Run with the reference runner:  bash /work/shared/reference/run.sh tools/parity/make_detector_fixture.py
Weights are not stored: the test rebuilds them from the seeded rule (keys prefixed with the
image-model names ``transformer.encoder.``, ``transformer.decoder.``, ``dot_prod_scoring.``).
"""
import cpu_redirect  # noqa: F401  (must come first)
import importlib.util
import json
import pathlib
import types

import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
# load the seeded rule by path: importing the opensam3 package would pull in the whole model
_spec = importlib.util.spec_from_file_location("opensam3_seeded", ROOT / "opensam3/seeded.py")
_seeded = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_seeded)
seeded_value = _seeded.seeded_value

import sam3.model_builder as mb  # noqa: E402
from sam3.model.model_misc import inverse_sigmoid  # noqa: E402
from sam3.model.sam3_image import Sam3Image  # noqa: E402

RES, PATCH = 336, 14
FEAT = RES // PATCH  # 24
BATCH, PROMPT_LEN, DIM = 2, 7, 256
# the tiny fixture shrinks the layer counts and the decoder (FFN, queries); the fusion encoder
# keeps the builder's FFN width
TINY = dict(fusion_layers=2, decoder_layers=2, decoder_ffn=512, num_queries=20)
OUT = ROOT / "tests/fixtures/modules/detector.safetensors"
PREFIXES = {"encoder": "transformer.encoder.", "decoder": "transformer.decoder.", "scoring": "dot_prod_scoring."}


def build_encoder() -> nn.Module:
    encoder = mb._create_transformer_encoder()
    encoder.layers = encoder.layers[: TINY["fusion_layers"]]
    encoder.num_layers = TINY["fusion_layers"]
    return encoder


def build_decoder() -> nn.Module:
    layer = mb.TransformerDecoderLayer(
        activation="relu", d_model=DIM, dim_feedforward=TINY["decoder_ffn"], dropout=0.0,
        cross_attention=mb.MultiheadAttention(num_heads=8, dropout=0.0, embed_dim=DIM),
        n_heads=8, use_text_cross_attention=True)
    return mb.TransformerDecoder(
        layer=layer, num_layers=TINY["decoder_layers"], num_queries=TINY["num_queries"], return_intermediate=True,
        box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log", d_model=DIM, frozen=False,
        interaction_layer=None, dac_use_selfatt_ln=True, resolution=RES, stride=PATCH,
        use_act_checkpoint=False, presence_token=True)


def seed(module: nn.Module, prefix: str) -> None:
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not tensor.is_complex():
                tensor.copy_(seeded_value(prefix + name, tensor.shape))


def shapes(module: nn.Module) -> dict:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


CODE_SCALE = 16.0


def to_codes(x: torch.Tensor) -> torch.Tensor:
    """Inputs are snapped to multiples of 1/16 in [-127/16, 127/16] and stored as int8 codes,
    a quarter of the fp32 size, so the fixture stays small while its inputs are exact."""
    return (x * CODE_SCALE).round().clamp(-127, 127).to(torch.int8)


def from_codes(codes: torch.Tensor) -> torch.Tensor:
    return codes.float() / CODE_SCALE


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    encoder, decoder, scoring = build_encoder(), build_decoder(), mb._create_dot_product_scoring()
    for name, module in (("encoder", encoder), ("decoder", decoder), ("scoring", scoring)):
        seed(module, PREFIXES[name])
        module.eval()

    gen = torch.Generator().manual_seed(1234)
    image_codes = to_codes(torch.randn(BATCH, FEAT * FEAT, DIM, generator=gen))
    pos_codes = to_codes(torch.randn(BATCH, FEAT * FEAT, DIM, generator=gen))
    prompt = torch.randn(BATCH, PROMPT_LEN, DIM, generator=gen)
    image, image_pos = from_codes(image_codes), from_codes(pos_codes)
    # element 0: 5 text tokens then text padding; element 1: 3 text tokens, 2 text padding,
    # then 2 geometry tokens (text and geometry prompts are concatenated, padding in between)
    prompt_mask = torch.tensor([[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0, 0]], dtype=torch.bool)

    # official layouts: sequence-first (L, B, C)
    image_sf, pos_sf, prompt_sf = image.transpose(0, 1), image_pos.transpose(0, 1), prompt.transpose(0, 1)
    enc = encoder(src=[image_sf.clone()], src_key_padding_mask=None, src_pos=[pos_sf.clone()], prompt=prompt_sf,
                  prompt_pos=torch.zeros_like(prompt_sf), prompt_key_padding_mask=prompt_mask,
                  feat_sizes=[(FEAT, FEAT)])
    memory_sf = enc["memory"]  # (HW, B, C)
    assert torch.equal(enc["pos_embed"], pos_sf) and enc["padding_mask"] is None
    assert torch.equal(enc["memory_text"], prompt_sf)

    # The decoder reads the encoder output snapped to the int8 grid (stored as codes); the
    # encoder output itself is checked at full precision on every 4th token (each token
    # depends on all others through self-attention, so this still checks the whole encoder).
    memory_codes = to_codes(memory_sf.transpose(0, 1))
    memory_in_sf = from_codes(memory_codes).transpose(0, 1)
    print("encoder output range", memory_sf.min().item(), memory_sf.max().item())
    tgt = decoder.query_embed.weight.unsqueeze(1).repeat(1, BATCH, 1)
    hs, ref_boxes, presence, presence_feats = decoder(
        tgt=tgt, memory=memory_in_sf, memory_key_padding_mask=None, pos=enc["pos_embed"], reference_boxes=None,
        level_start_index=enc["level_start_index"], spatial_shapes=enc["spatial_shapes"],
        valid_ratios=enc["valid_ratios"], tgt_mask=None, memory_text=prompt_sf, text_attention_mask=prompt_mask,
        apply_dac=False)
    hs = hs.transpose(1, 2)  # (L, B, Q, C), as Sam3Image._run_decoder does
    ref_boxes = ref_boxes.transpose(1, 2)
    presence = presence.transpose(1, 2)  # (L, B, 1)

    logits = scoring(hs, prompt_sf, prompt_mask)
    pred_boxes = (inverse_sigmoid(ref_boxes) + decoder.bbox_embed(hs)).sigmoid()
    # cross-check against the image model's own head code (it keeps the last layer at eval)
    fake = types.SimpleNamespace(transformer=types.SimpleNamespace(decoder=decoder), training=False,
                                 use_dot_prod_scoring=True, dot_prod_scoring=scoring,
                                 instance_dot_prod_scoring=None, supervise_joint_box_scores=False)
    out = {}
    Sam3Image._update_scores_and_boxes(fake, out, hs, ref_boxes, prompt_sf, prompt_mask, dec_presence_out=presence)
    assert torch.equal(out["pred_boxes"], pred_boxes[-1]) and torch.equal(out["pred_logits"], logits[-1])
    assert torch.equal(out["presence_logit_dec"], presence[-1])

    tensors = {
        "input.image_tokens_codes": image_codes,
        "input.image_pos_codes": pos_codes,
        "input.prompt": prompt,
        "input.prompt_padding_mask": prompt_mask.to(torch.uint8),
        "input.decoder_memory_codes": memory_codes,
        "out.encoder.memory_every4": memory_sf.transpose(0, 1)[:, ::4],
        "out.decoder.hidden": hs,
        "out.decoder.ref_boxes": ref_boxes,
        "out.decoder.presence_logits": presence,
        "out.decoder.presence_features": presence_feats.transpose(0, 1),
        "out.pred_boxes": pred_boxes,
        "out.pred_logits": logits,
    }
    meta = {
        "config": json.dumps({**TINY, "fusion_ffn": 2048, "resolution": RES, "patch_size": PATCH, "d_model": DIM}),
        "state_dict_shapes": json.dumps({name: shapes(m) for name, m in
                                         (("encoder", encoder), ("decoder", decoder), ("scoring", scoring))}),
        "seed_prefixes": json.dumps(PREFIXES),
        "layouts": "batch-first; *_codes are int8, value = code / 16; mask uint8 1=padding; "
                   "out.encoder.memory_every4 = encoder output tokens [:, ::4]; the decoder reads "
                   "input.decoder_memory_codes (encoder output snapped to the code grid) with input.image_pos",
        "code_scale": str(CODE_SCALE),
        "reference": "sam3==0.1.4 (PyPI) TransformerEncoderFusion / TransformerDecoder / DotProductScoring, "
                     "eval, CPU fp32",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(OUT), metadata=meta)
    print("saved", OUT, {k: tuple(v.shape) for k, v in tensors.items()})
    print("presence", presence.flatten().tolist())
    print("logits range", logits.min().item(), logits.max().item(), "boxes range", pred_boxes.min().item(),
          pred_boxes.max().item())


if __name__ == "__main__":
    main()
