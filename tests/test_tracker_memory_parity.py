"""Parity of the video tracker's memory path (memory encoder, memory attention, memory-bank
assembly, whole tracking steps) with the official ``sam3`` tracker at a tiny configuration.

Fixture: tests/fixtures/modules/tracker_memory.safetensors, made by
tools/parity/make_tracker_memory_fixture.py (its docstring lists the cases). Frame features and
synthetic memories are not stored: ``frame_features`` / ``bank_entry`` rebuild them exactly as the
generator made them (same torch generator seeds and call order).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from opensam3.model.tracker import (FrameFeatures, MemoryBank, MemoryFrame, TrackerHeads, TrackerHeadsConfig,
                                    TrackerMemory, TrackerMemoryConfig, filter_memory_frames, load_tracker_heads,
                                    load_tracker_memory, select_closest_cond_frames, track_step,
                                    tracker_image_state, tracker_memory_state)
from opensam3.seeded import apply_weight_overrides, seed_module, seeded_value

FIXTURE = Path(__file__).parent / "fixtures" / "modules" / "tracker_memory.safetensors"
MANIFEST = Path(__file__).parent / "fixtures" / "sam3_checkpoint_manifest.json"
TOLERANCE = 1e-4
PREFIX = "tracker."
GRID, IMAGE_SIZE = 16, 224


def frame_features(t: int, batch: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2000 + t)
    level2 = torch.randn(1, 256, GRID, GRID, generator=g)
    s1 = torch.randn(1, 64, 2 * GRID, 2 * GRID, generator=g)
    s0 = torch.randn(1, 32, 4 * GRID, 4 * GRID, generator=g)
    return [x.expand(batch, -1, -1, -1) for x in (level2, s1, s0)]


def bank_entry(t: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(batch, 64, GRID, GRID, generator=g), torch.randn(batch, 256, generator=g)


@pytest.fixture(scope="module")
def fixture():
    with safe_open(str(FIXTURE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def _config(meta: dict, selection: bool) -> TrackerMemoryConfig:
    config = json.loads(meta["config"])
    return TrackerMemoryConfig(image_size=config["image_size"], attention_layers=config["attention_layers"],
                               attention_ffn=config["attention_ffn"], use_memory_selection=selection)


@pytest.fixture(scope="module")
def models(fixture):
    torch.set_num_threads(1)
    meta = fixture[1]
    heads = TrackerHeads(TrackerHeadsConfig(image_size=IMAGE_SIZE)).eval()
    seed_module(heads, prefix=PREFIX)
    apply_weight_overrides({"": heads}, meta["weight_override"])
    memories = {}
    for selection in (False, True):
        memory = TrackerMemory(_config(meta, selection)).eval()
        seed_module(memory, prefix=PREFIX)
        memories[selection] = memory
    return heads, memories


def _err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert tuple(ours.shape) == tuple(theirs.shape), (tuple(ours.shape), tuple(theirs.shape))
    return (ours.float() - theirs.float()).abs().max().item()


def test_state_dict_matches_official_keys(fixture, models):
    official = json.loads(fixture[1]["tracker_state_dict_shapes"])
    heads, memories = models
    ours = {k: list(v.shape) for k, v in heads.state_dict().items()}
    ours.update({k: list(v.shape) for k, v in memories[False].state_dict().items()})
    assert ours == official
    zeros = {k: torch.zeros(1) for k in official}
    assert set(tracker_image_state(zeros)) | set(tracker_memory_state(zeros)) == set(official)
    assert not set(tracker_image_state(zeros)) & set(tracker_memory_state(zeros))


def test_loaders_split_one_tracker_state(fixture, models):
    """Both loaders take the whole ``tracker.*`` dict (prefix stripped) and keep their own keys."""
    meta = fixture[1]
    official = json.loads(meta["tracker_state_dict_shapes"])
    state = {k: seeded_value(PREFIX + k, shape) for k, shape in official.items()}
    memory = load_tracker_memory(state, _config(meta, False))
    heads = load_tracker_heads(state, TrackerHeadsConfig(image_size=IMAGE_SIZE))
    for module in (memory, heads):
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[key]), key
    assert not memory.training


def test_full_size_layout_matches_manifest():
    manifest = json.loads(MANIFEST.read_text())
    manifest = manifest.get("model", manifest)
    official = {k[len(PREFIX):]: v["shape"] for k, v in manifest.items()
                if k.startswith(PREFIX) and not k.endswith("freqs_cis")}
    with torch.device("meta"):
        heads, memory = TrackerHeads(), TrackerMemory()
    ours = {k: list(v.shape) for k, v in heads.state_dict().items()}
    ours.update({k: list(v.shape) for k, v in memory.state_dict().items()})
    assert ours == official


@torch.inference_mode()
def test_memory_encoder(fixture, models):
    tensors, meta = fixture
    _, memories = models
    memory = memories[False]
    image = frame_features(0, 2)[0]
    logits = 4.0 * torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(3000))
    scores = torch.tensor(json.loads(meta["cases"])["memenc"]["object_score_logits"])
    for name, from_points in (("soft", False), ("hard", True)):
        features, pos = memory.encode(image, logits, scores, from_points)
        assert _err(features, tensors[f"memenc.{name}.features"]) <= TOLERANCE
        assert _err(pos[:1], tensors["memenc.pos"]) <= TOLERANCE


@torch.inference_mode()
def test_memory_attention(fixture, models):
    tensors, _ = fixture
    memory = models[1][False]
    image = frame_features(1, 2)[0]
    g = torch.Generator().manual_seed(4000)
    prompt = torch.randn(2 * GRID * GRID + 8, 2, 64, generator=g).transpose(0, 1)
    prompt_pos = torch.randn(2 * GRID * GRID + 8, 2, 64, generator=g).transpose(0, 1)
    out = memory.attend(image, prompt, prompt_pos, num_ptr_tokens=8)
    assert _err(out[:, :128], tensors["attn.out"]) <= TOLERANCE


def _bank(memory: TrackerMemory, case: dict, batch: int) -> MemoryBank:
    pos = memory.maskmem_backbone.position_encoding(torch.zeros(batch, 64, GRID, GRID))
    bank = MemoryBank()
    scores = {int(k): v for k, v in case.get("scores", {}).items()}
    for t in case["frames"]:
        features, ptr = bank_entry(t, batch)
        frame = MemoryFrame(features, pos, ptr, torch.zeros(batch, 1), scores.get(t))
        bank.add(t, frame, is_cond=t in case["cond"])
    return bank


@pytest.mark.parametrize("name", ["forward", "select", "select_short", "reverse", "many_cond", "long", "init"])
@torch.inference_mode()
def test_memory_conditioning(fixture, models, name):
    tensors, meta = fixture
    heads, memories = models
    case = json.loads(meta["cases"])["bank"][name]
    memory = memories[case["select"]]
    image = frame_features(50 + case["frame"], 2)[0]
    if case.get("init"):
        out = image + heads.no_mem_embed.reshape(1, -1, 1, 1)
    else:
        out = memory.condition(image, case["frame"], _bank(memory, case, 2), case["num_frames"], case["reverse"])
    assert _err(out[:, :32], tensors[f"bank.{name}"]) <= TOLERANCE


def test_frame_selection_rules(fixture):
    cases = json.loads(fixture[1]["cases"])["select"]
    for case in cases["closest_cond"]:
        cond = {t: t for t in case["cond"]}
        selected, unselected = select_closest_cond_frames(case["frame"], cond, case["limit"], case["keep_first"])
        assert list(selected) == case["selected"], case
        assert list(unselected) == case["unselected"], case
    scores = {t: (0.0 if t % 3 == 0 else 0.1 * (t % 5)) for t in range(40) if t != 17}
    for case in cases["frame_filter"]:
        picked = filter_memory_frames(scores, case["frame"], case["reverse"], case["num_frames"], case["stride"],
                                      max_pointers=16, threshold=0.01)
        assert picked == case["picked"], case


def _run_track(fixture, models, prefix: str, selection: bool, first_prompt: dict, store_dtype):
    tensors, meta = fixture
    heads, memories = models
    memory = memories[selection]
    case = json.loads(meta["cases"])[prefix]
    batch, num_frames = case["batch"], case["num_frames"]
    bank = MemoryBank()
    errors = {}
    for t in range(num_frames):
        level2, s1, s0 = frame_features(100 + t, batch)
        features = FrameFeatures(level2, (s0, s1))
        out = track_step(heads, memory, features, t, bank, num_frames, is_init_cond_frame=(t == 0),
                         **(first_prompt if t == 0 else {}))
        errors[t] = max(_err(out.low_res_masks, tensors[f"{prefix}.{t}.pred_masks"]),
                        _err(out.obj_ptr, tensors[f"{prefix}.{t}.obj_ptr"]),
                        _err(out.object_score_logits, tensors[f"{prefix}.{t}.object_score_logits"]))
        if f"{prefix}.{t}.eff_iou_score" in tensors:
            errors[t] = max(errors[t], _err(out.score.reshape(1), tensors[f"{prefix}.{t}.eff_iou_score"]))
        bank.add(t, out.memory(store_dtype), is_cond=(t == 0))
    return errors


@torch.inference_mode()
def test_track_mask_prompt_with_memory_selection(fixture, models):
    """The video predictor's path: detector masks as prompts, memory selection, bf16 memories."""
    masks = fixture[0]["track_sel.mask_input"].float()[:, None]
    errors = _run_track(fixture, models, "track_sel", True, {"mask_input": masks}, torch.bfloat16)
    assert max(errors.values()) <= TOLERANCE, errors


@torch.inference_mode()
def test_track_click_prompt(fixture, models):
    prompt = {"coords": torch.tensor([[[120.0, 90.0]]]), "labels": torch.tensor([[1]])}
    errors = _run_track(fixture, models, "track_pts", False, prompt, None)
    assert max(errors.values()) <= TOLERANCE, errors


@torch.inference_mode()
def test_track_correction_click(fixture, models):
    """Two clicks (single-mask output) on an already tracked frame, refined from its previous
    logits, turn it into a conditioning frame; the next frame then reads two prompted frames."""
    tensors, _ = fixture
    heads, memories = models
    memory = memories[False]
    bank, outs = MemoryBank(), {}

    def step(t, **prompt):
        level2, s1, s0 = frame_features(100 + t, 1)
        return track_step(heads, memory, FrameFeatures(level2, (s0, s1)), t, bank, 4, **prompt)

    bank.add(0, step(0, is_init_cond_frame=True, coords=torch.tensor([[[120.0, 90.0]]]),
                     labels=torch.tensor([[1]])).memory(), is_cond=True)
    for t in (1, 2, 3):
        outs[t] = step(t, is_init_cond_frame=False)
        bank.add(t, outs[t].memory(), is_cond=False)
    fixed = step(2, is_init_cond_frame=False, coords=torch.tensor([[[60.0, 150.0], [120.0, 90.0]]]),
                 labels=torch.tensor([[1, 1]]), prev_mask_logits=outs[2].low_res_masks)
    bank.add(2, fixed.memory(), is_cond=True)
    again = step(3, is_init_cond_frame=False)
    for t, out in ((2, fixed), (3, again)):
        assert _err(out.low_res_masks, tensors[f"track_fix.{t}.pred_masks"]) <= TOLERANCE
        assert _err(out.obj_ptr, tensors[f"track_fix.{t}.obj_ptr"]) <= TOLERANCE
        assert _err(out.object_score_logits, tensors[f"track_fix.{t}.object_score_logits"]) <= TOLERANCE
