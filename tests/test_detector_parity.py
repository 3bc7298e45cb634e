"""Parity of the detector transformer (fusion encoder, DETR decoder, dot-product scoring) with
the official sam3==0.1.4 modules, from tests/fixtures/modules/detector.safetensors
(made by tools/parity/make_detector_fixture.py)."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors import safe_open

from opensam3.config import SAM3, TINY
from opensam3.model.detector.decoder import DetrDecoder
from opensam3.model.detector.fusion import FusionEncoder
from opensam3.model.detector.scoring import DotProductScoring
from opensam3.seeded import seed_module

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "modules" / "detector.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURE), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _decode(codes: torch.Tensor, meta: dict[str, str]) -> torch.Tensor:
    return codes.float() / float(meta["code_scale"])


def _inputs(fixture):
    t, meta = fixture
    return dict(
        image=_decode(t["input.image_tokens_codes"], meta),
        pos=_decode(t["input.image_pos_codes"], meta),
        prompt=t["input.prompt"],
        mask=t["input.prompt_padding_mask"].bool(),
        memory=_decode(t["input.decoder_memory_codes"], meta),
    )


def _built(fixture):
    _, meta = fixture
    prefixes = json.loads(meta["seed_prefixes"])
    cfg = TINY.detector
    modules = {
        "encoder": FusionEncoder(cfg),
        "decoder": DetrDecoder(cfg, TINY.vision.image_size, TINY.vision.patch_size),
        "scoring": DotProductScoring(cfg),
    }
    for name, module in modules.items():
        seed_module(module, prefix=prefixes[name])
        module.eval()
    return modules


def _assert_close(name: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    err = (ours.float() - ref.float()).abs().max().item()
    assert err <= TOL, f"{name}: max abs error {err:.3g} > {TOL}"


def test_state_dict_keys_match_official(fixture):
    _, meta = fixture
    official = json.loads(meta["state_dict_shapes"])
    for name, module in _built(fixture).items():
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert ours == official[name], name


def test_full_size_keys_match_checkpoint_manifest():
    manifest = json.loads((FIXTURES / "sam3_checkpoint_manifest.json").read_text())
    manifest = manifest.get("model", manifest)
    cfg = SAM3.detector
    with torch.device("meta"):
        modules = {
            "detector.transformer.encoder.": FusionEncoder(cfg),
            "detector.transformer.decoder.": DetrDecoder(cfg, SAM3.vision.image_size, SAM3.vision.patch_size),
            "detector.dot_prod_scoring.": DotProductScoring(cfg),
        }
    for prefix, module in modules.items():
        expected = {k[len(prefix):]: list(v["shape"]) for k, v in manifest.items() if k.startswith(prefix)}
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert ours == expected, prefix


@torch.no_grad()
def test_fusion_encoder(fixture):
    t, _ = fixture
    x = _inputs(fixture)
    memory = _built(fixture)["encoder"](x["image"], x["pos"], x["prompt"], x["mask"], (24, 24))
    assert memory.shape == (2, 576, 256)
    _assert_close("encoder memory", memory[:, ::4], t["out.encoder.memory_every4"])


@torch.no_grad()
def test_decoder_and_scoring(fixture):
    t, _ = fixture
    x = _inputs(fixture)
    modules = _built(fixture)
    decoder = modules["decoder"]
    out = decoder(x["memory"], x["pos"], x["prompt"], x["mask"], (24, 24))
    _assert_close("hidden", out.hidden, t["out.decoder.hidden"])
    _assert_close("ref_boxes", out.ref_boxes, t["out.decoder.ref_boxes"])
    _assert_close("presence_logits", out.presence_logits, t["out.decoder.presence_logits"])
    _assert_close("presence_features", out.presence_features, t["out.decoder.presence_features"])
    _assert_close("pred_boxes", out.pred_boxes, t["out.pred_boxes"])
    _assert_close("predict_boxes", decoder.predict_boxes(out.hidden, out.ref_boxes), t["out.pred_boxes"])
    logits = modules["scoring"](out.hidden, x["prompt"], x["mask"])
    _assert_close("pred_logits", logits, t["out.pred_logits"])
    # scoring alone, on the official hidden states
    logits = modules["scoring"](t["out.decoder.hidden"], x["prompt"], x["mask"])
    _assert_close("pred_logits (official hidden)", logits, t["out.pred_logits"])


def test_box_bias_matches_direct_formula():
    """The separable, written-in-place bias equals the plain (B, Q, H, W, heads) construction."""
    torch.manual_seed(0)
    decoder = DetrDecoder(TINY.detector, 336, 14)
    seed_module(decoder, prefix="transformer.decoder.")
    boxes = torch.rand(2, 5, 4) * 0.5 + 0.25
    bias = decoder.box_attention_bias(boxes, (6, 7), leading_rows=1)
    assert bias.shape == (2, 8, 6, 42)
    assert torch.equal(bias[:, :, 0], torch.zeros_like(bias[:, :, 0]))
    x0, y0, x1, y1 = (boxes[..., 0] - boxes[..., 2] / 2, boxes[..., 1] - boxes[..., 3] / 2,
                      boxes[..., 0] + boxes[..., 2] / 2, boxes[..., 1] + boxes[..., 3] / 2)
    rows, cols = torch.arange(6) / 6, torch.arange(7) / 7

    def log_scale(d: torch.Tensor) -> torch.Tensor:
        return torch.sign(d * 8) * torch.log2((d * 8).abs() + 1) / 3

    dy = log_scale(torch.stack((rows[None, None] - y0[..., None], rows[None, None] - y1[..., None]), -1))
    dx = log_scale(torch.stack((cols[None, None] - x0[..., None], cols[None, None] - x1[..., None]), -1))
    direct = decoder.boxRPB_embed_y(dy)[:, :, :, None] + decoder.boxRPB_embed_x(dx)[:, :, None]
    direct = direct.flatten(2, 3).permute(0, 3, 1, 2)
    assert (bias[:, :, 1:] - direct).abs().max().item() < 1e-6
    with torch.no_grad():
        assert torch.equal(decoder.box_attention_bias(boxes, (6, 7), leading_rows=1), bias)
