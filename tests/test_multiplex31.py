"""SAM 3.1 multiplex tracker modules: checkpoint layout, slot bookkeeping, per-slot behaviour."""

import pytest
import torch

from opensam3.model.tracker.multiplex31 import (EMPTY, RETIRED, TINY_MULTIPLEX, DecoupledMemoryAttention,
                                                MultiplexTracker, MultiplexTrackerConfig, PointerMemory,
                                                SlotAssignment, SpatialMemory, memory_encoder_input, propagate,
                                                slot_embeddings, spatial_tpos_row)
from opensam3.model.tracker.tracking import FrameFeatures

CFG = TINY_MULTIPLEX
M, C, E = CFG.multiplex_count, CFG.dim, CFG.embedding_size


def make_tracker(seed: int = 0) -> MultiplexTracker:
    """Tiny tracker with every parameter perturbed, so zero-initialised per-slot tables matter."""
    torch.manual_seed(seed)
    tracker = MultiplexTracker(CFG).eval()
    with torch.no_grad():
        for param in tracker.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return tracker


def make_features(tracker: MultiplexTracker, seed: int = 1, dtype: torch.dtype = torch.float32) -> FrameFeatures:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(1, C, E, E, generator=gen).to(dtype)
    level0 = torch.randn(1, C, 4 * E, 4 * E, generator=gen).to(dtype)
    level1 = torch.randn(1, C, 2 * E, 2 * E, generator=gen).to(dtype)
    with torch.no_grad():
        high_res = tracker.sam_mask_decoder.project_high_res(level0, level1)
    return FrameFeatures(image, high_res)


def make_memories(tracker: MultiplexTracker, slots: SlotAssignment, dtype: torch.dtype = torch.float32):
    """Two stored frames (spatial memory + pointers) of the state, made by the tracker itself."""
    spatial, pointers = [], []
    for back, seed in ((2, 5), (1, 6)):
        feats = make_features(tracker, seed, dtype)
        gen = torch.Generator().manual_seed(seed)
        logits = 4 * torch.randn(slots.num_objects, 1, CFG.image_size, CFG.image_size, generator=gen)
        scores = torch.randn(slots.num_objects, 1, generator=gen)
        memory, _ = tracker.encode_memory(feats.image, logits, scores, slots)
        pos = tracker.maskmem_backbone.position_encoding(feats.image).to(dtype)
        spatial.append(SpatialMemory(memory, feats.image, pos, spatial_tpos_row(back, False, CFG.num_maskmem)))
        ptr = torch.randn(slots.num_objects, C, generator=gen).to(dtype)
        pointers.append(PointerMemory(slots.mux(ptr), back))
    return spatial, pointers


# ---- checkpoint layout (full size, meta device: no memory, no compute) ----

def test_full_size_state_dict_matches_official_layout():
    with torch.device("meta"):
        state = MultiplexTracker(MultiplexTrackerConfig()).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert sum(k.startswith("sam_mask_decoder.") for k in shapes) == 125
    assert sum(k.startswith("transformer.encoder.") for k in shapes) == 122
    assert sum(k.startswith("maskmem_backbone.") for k in shapes) == 38
    expected = {
        "sam_mask_decoder.obj_score_token.weight": (16, 256), "sam_mask_decoder.iou_token.weight": (16, 256),
        "sam_mask_decoder.mask_tokens.weight": (48, 256), "output_valid_embed": (16, 256),
        "output_invalid_embed": (16, 256), "no_obj_embed_spatial": (16, 256), "maskmem_tpos_enc": (7, 1, 1, 256),
        "image_pe_layer.positional_encoding_gaussian_matrix": (2, 128), "no_obj_ptr_linear.weight": (256, 256),
        "obj_ptr_tpos_proj.weight": (256, 256), "obj_ptr_proj.layers.2.weight": (256, 256),
        "sam_mask_decoder.iou_prediction_head.layers.2.weight": (3, 256),
        "sam_mask_decoder.pred_obj_score_head.layers.2.weight": (1, 256),
        "sam_mask_decoder.output_hypernetworks_mlps.2.layers.2.weight": (32, 256),
        "sam_mask_decoder.output_upscaling.0.weight": (256, 64, 2, 2),
        "sam_mask_decoder.conv_s0.weight": (32, 256, 1, 1), "sam_mask_decoder.conv_s1.weight": (64, 256, 1, 1),
        "maskmem_backbone.mask_downsampler.encoder.0.weight": (16, 32, 3, 3),
        "maskmem_backbone.mask_downsampler.encoder.3.weight": (64, 16, 3, 3),
        "maskmem_backbone.mask_downsampler.encoder.6.weight": (256, 64, 3, 3),
        "maskmem_backbone.mask_downsampler.encoder.9.weight": (1024, 256, 3, 3),
        "maskmem_backbone.mask_downsampler.encoder.10.weight": (1024,),
        "maskmem_backbone.mask_downsampler.encoder.12.weight": (256, 1024, 1, 1),
        "maskmem_backbone.pix_feat_proj.weight": (256, 256, 1, 1),
        "maskmem_backbone.fuser.layers.1.dwconv.weight": (256, 1, 7, 7),
        "maskmem_backbone.fuser.layers.1.pwconv1.weight": (1024, 256), "maskmem_backbone.fuser.layers.1.gamma": (256,),
        "transformer.encoder.layers.3.linear1.weight": (2048, 256), "transformer.encoder.norm.weight": (256,),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    for name in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "cross_attn_q_proj",
                 "cross_attn_k_proj", "cross_attn_v_proj", "cross_attn_out_proj", "image_cross_attn_q_proj",
                 "image_cross_attn_k_proj"):
        for i in range(4):
            assert shapes[f"transformer.encoder.layers.{i}.{name}.weight"] == (256, 256)
            assert shapes[f"transformer.encoder.layers.{i}.{name}.bias"] == (256,)
    assert not any(k.startswith(("maskmem_backbone.out_proj", "sam_mask_decoder.image_pe")) for k in shapes)
    # + 3 per-slot tables, maskmem_tpos_enc, image_pe_layer, obj_ptr_proj (6), no_obj_ptr_linear, obj_ptr_tpos_proj
    assert len(shapes) == 125 + 122 + 38 + 3 + 1 + 1 + 6 + 2 + 2


# ---- slots ----

def test_slots_fill_in_order_and_valid_mask():
    slots = SlotAssignment.sequential(5, 4)
    assert slots.buckets == [[0, 1, 2, 3], [4, EMPTY, EMPTY, EMPTY]]
    assert slots.valid_mask().tolist() == [[True] * 4, [True, False, False, False]]
    assert slots.location(4) == (1, 0)


def test_slots_refill_padding_never_retired():
    slots = SlotAssignment.sequential(5, 4)
    kept = slots.remove_objects([1])
    assert kept == [0, 1]
    assert slots.buckets == [[0, RETIRED, 1, 2], [3, EMPTY, EMPTY, EMPTY]]
    assert slots.add_objects(3) == [4, 5, 6]
    assert slots.buckets == [[0, RETIRED, 1, 2], [3, 4, 5, 6]]
    with pytest.raises(ValueError):
        slots.add_objects(1)
    assert slots.add_objects(1, allow_new_buckets=True) == [7]
    assert slots.buckets[2] == [7, EMPTY, EMPTY, EMPTY]
    assert slots.remove_objects([0, 1, 2]) == [1, 2]  # bucket 0 held only removed objects now
    assert slots.buckets == [[0, 1, 2, 3], [4, EMPTY, EMPTY, EMPTY]]


def test_slots_prefer_new_buckets_leaves_padding():
    slots = SlotAssignment.sequential(2, 4)
    slots.add_objects(1, allow_new_buckets=True, prefer_new_buckets=True)
    assert slots.buckets == [[0, 1, EMPTY, EMPTY], [2, EMPTY, EMPTY, EMPTY]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_mux_demux_exact_round_trip(dtype):
    slots = SlotAssignment.sequential(6, 4)
    slots.remove_objects([2])
    x = torch.randn(slots.num_objects, 3, 5, dtype=torch.float64).mul(1e3).to(dtype)
    muxed = slots.mux(x)
    assert muxed.shape == (2, 4, 3, 5)
    assert torch.equal(slots.demux(muxed), x)
    valid = slots.valid_mask()
    assert torch.equal(muxed[~valid], torch.zeros_like(muxed[~valid]))
    y = torch.randn(2, 4, 3, 5, dtype=torch.float64).to(dtype)
    assert torch.equal(slots.mux(slots.demux(y)), y * valid[..., None, None])
    with pytest.raises(ValueError):
        slots.mux(x[:-1])


# ---- mask decoder ----

def _decode(tracker, image, valid):
    decoder = tracker.sam_mask_decoder
    high_res = make_features(tracker).high_res
    embed = slot_embeddings(valid, tracker.output_valid_embed, tracker.output_invalid_embed)
    return decoder(image, tracker.dense_pe(), high_res, embed)


@torch.no_grad()
def test_decoder_shapes_slot_identity_and_occupancy_matter():
    tracker = make_tracker()
    image = torch.randn(2, C, E, E)
    valid = torch.tensor([[True, True, False, False], [True, False, False, False]])
    out = _decode(tracker, image, valid)
    assert out.masks.shape == (2, M, 3, 4 * E, 4 * E)
    assert out.ious.shape == (2, M, 3) and out.object_score_logits.shape == (2, M, 1)
    assert out.tokens.shape == (2, M, 3, C)
    # distinct learned tokens per slot: slots 0 and 1 of the same bucket see the same inputs
    assert (out.masks[0, 0] - out.masks[0, 1]).abs().max() > 1e-3
    # occupancy of another slot changes slot 0's outputs (valid/invalid embeddings are used)
    other = _decode(tracker, image, torch.tensor([[True, True, True, False], [True, False, False, False]]))
    assert (other.masks[0, 0] - out.masks[0, 0]).abs().max() > 1e-4
    # buckets are batch elements: bucket 1 is untouched by bucket 0's occupancy and image
    assert torch.allclose(other.masks[1], out.masks[1], atol=1e-5)
    alone = _decode(tracker, image[1:], valid[1:])
    assert torch.allclose(alone.masks[0], out.masks[1], atol=1e-5)
    assert torch.allclose(alone.ious[0], out.ious[1], atol=1e-5)


# ---- memory encoder ----

@torch.no_grad()
def test_memory_encoder_input_channels():
    slots = SlotAssignment.sequential(3, M)
    logits = torch.randn(3, 1, 6, 6)
    packed = memory_encoder_input(logits, torch.tensor([False, True, False]), slots, CFG)
    assert packed.shape == (1, 2 * M, 6, 6)
    assert torch.allclose(packed[0, :3], 2 * torch.sigmoid(logits[:, 0]) - 1)
    assert torch.equal(packed[0, M:M + 3, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert not packed[0, 3].any() and not packed[0, M + 3].any()  # the empty slot


@torch.no_grad()
def test_memory_encoder_input_places_objects_in_their_buckets_slots():
    # objects out of order across two buckets, with empty and retired slots between them
    slots = SlotAssignment([[2, EMPTY, 0, 1], [EMPTY, 3, RETIRED, EMPTY]], M)
    logits = torch.randn(4, 1, 5, 7)
    conditioning = torch.tensor([True, False, False, True])
    packed = memory_encoder_input(logits, conditioning, slots, CFG)
    assert packed.shape == (2, 2 * M, 5, 7)
    expected = torch.zeros(2, 2 * M, 5, 7)
    for bucket, objects in enumerate(slots.buckets):
        for slot, index in enumerate(objects):
            if index >= 0:
                expected[bucket, slot] = 2 * torch.sigmoid(logits[index, 0]) - 1
                expected[bucket, M + slot] = 1.0 if conditioning[index] else 0.0
    assert torch.allclose(packed, expected, atol=1e-6)


@torch.no_grad()
def test_memory_absent_and_empty_slots_add_their_vector_and_flags_matter():
    tracker = make_tracker()
    slots = SlotAssignment.sequential(2, M)  # slots 2, 3 empty
    image = make_features(tracker).image
    logits = 3 * torch.randn(2, 1, CFG.image_size, CFG.image_size)
    scores = torch.tensor([[2.0], [-1.0]])  # object 0 present, object 1 absent
    table = tracker.no_obj_embed_spatial
    full, _ = tracker.encode_memory(image, logits, scores, slots)
    with torch.no_grad():
        saved = table.clone()
        table.zero_()
        bare, _ = tracker.encode_memory(image, logits, scores, slots)
        table.copy_(saved)
    expected = (table[1] + table[2] + table[3])[None, :, None, None]
    assert torch.allclose(full - bare, expected.expand_as(full), atol=1e-5)
    flagged, pos = tracker.encode_memory(image, logits, scores, slots, torch.tensor([True, False]))
    assert pos.shape == (1, C, E, E)
    assert (flagged - full).abs().max() > 1e-4


# ---- memory attention ----

@torch.no_grad()
def test_pointer_tokens_are_not_rotated():
    torch.manual_seed(3)
    attention = DecoupledMemoryAttention(CFG).eval()
    hw, frames, pointers, nb = E * E, 2, 6, 2
    image, image_pos = torch.randn(1, hw, C), torch.randn(1, hw, C)
    memory_image, memory_image_pos = torch.randn(1, frames * hw, C), torch.randn(1, frames * hw, C)
    memory, pointer_pos = torch.randn(nb, frames * hw + pointers, C), torch.randn(pointers, C)

    def run(mem, mem_image, mem_image_pos, ptr_pos):
        return attention(image, image_pos, mem_image, mem_image_pos, mem, ptr_pos, nb)

    base = run(memory, memory_image, memory_image_pos, pointer_pos)
    perm = torch.randperm(pointers)
    spatial = frames * hw
    shuffled = torch.cat((memory[:, :spatial], memory[:, spatial:][:, perm]), dim=1)
    assert torch.allclose(run(shuffled, memory_image, memory_image_pos, pointer_pos[perm]), base, atol=1e-5)
    # control: spatial tokens are rotated by grid position, so moving them within a frame (with
    # everything they carry) matters; whole frames may trade places (same table for every frame)
    frames_swapped = torch.cat((torch.arange(hw, spatial), torch.arange(hw)))
    swapped = torch.cat((memory[:, frames_swapped], memory[:, spatial:]), dim=1)
    again = run(swapped, memory_image[:, frames_swapped], memory_image_pos[:, frames_swapped], pointer_pos)
    assert torch.allclose(again, base, atol=1e-5)
    swap = torch.cat((torch.arange(hw).roll(1), torch.arange(hw, spatial)))
    moved = torch.cat((memory[:, swap], memory[:, spatial:]), dim=1)
    assert (run(moved, memory_image[:, swap], memory_image_pos[:, swap], pointer_pos) - base).abs().max() > 1e-4


def test_spatial_tpos_rows():
    assert [spatial_tpos_row(d, False, 7) for d in range(1, 7)] == [0, 1, 2, 3, 4, 5]
    assert [spatial_tpos_row(d, True, 7) for d in (0, 1, 6, 7, -2)] == [6, 5, 0, 6, 6]


# ---- one propagation step ----

def step_inputs(tracker: MultiplexTracker, dtype: torch.dtype = torch.float32):
    """5 objects in 2 buckets (3 padding slots), a frame and two memory frames."""
    slots = SlotAssignment.sequential(5, M)
    spatial, pointers = make_memories(tracker, slots, dtype)
    return make_features(tracker, dtype=dtype), slots, spatial, pointers


@torch.no_grad()
def test_step_absent_objects_get_no_object_logits():
    tracker = make_tracker()
    features, slots, spatial, pointers = step_inputs(tracker)
    first = propagate(tracker, features, slots, spatial, pointers, num_frames=10)
    # move the score threshold between the objects' scores so both cases occur
    scores = first.object_score_logits.flatten().sort().values
    tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias -= (scores[2] + scores[3]) / 2
    out = propagate(tracker, features, slots, spatial, pointers, num_frames=10)
    absent = out.object_score_logits[:, 0] <= 0
    assert 0 < int(absent.sum()) < 5
    assert bool((out.multimasks[absent] == CFG.no_object_logit).all())
    assert bool((out.multimasks[~absent] != CFG.no_object_logit).any(dim=(1, 2, 3)).all())
    assert out.low_res_masks.shape == (5, 1, 4 * E, 4 * E) and out.high_res_masks.shape == (5, 1, 112, 112)
    assert out.obj_ptr.shape == (5, C) and out.memory_features.shape == (2, C, E, E)
    best = out.ious.argmax(-1)
    assert torch.equal(out.low_res_masks[:, 0], out.multimasks[torch.arange(5), best])


@torch.no_grad()
def test_step_deterministic_and_memory_changes_result():
    tracker = make_tracker()
    features, slots, spatial, pointers = step_inputs(tracker)
    a = propagate(tracker, features, slots, spatial, pointers, num_frames=10)
    b = propagate(tracker, features, slots, spatial, pointers, num_frames=10)
    assert torch.equal(a.multimasks, b.multimasks) and torch.equal(a.obj_ptr, b.obj_ptr)
    assert torch.equal(a.memory_features, b.memory_features)
    fewer = propagate(tracker, features, slots, spatial[:1], pointers[:1], num_frames=10)
    assert (fewer.multimasks - a.multimasks).abs().max() > 1e-4
    # without spatial memories the raw frame is decoded (official fallback)
    raw = tracker.condition(features, slots.num_buckets, [], pointers, num_frames=10)
    assert torch.equal(raw, features.image.expand(2, -1, -1, -1))


@torch.no_grad()
def test_step_bf16_close_to_fp32():
    tracker = make_tracker()
    ref = propagate(tracker, *step_inputs(tracker), num_frames=10)
    tracker = tracker.to(torch.bfloat16)
    features, slots, spatial, pointers = step_inputs(tracker, torch.bfloat16)
    out = propagate(tracker, features, slots, spatial, pointers, num_frames=10)
    assert out.obj_ptr.dtype == torch.bfloat16 and out.multimasks.dtype == torch.float32

    def rel(a, b):
        return float((a.float() - b).norm() / b.norm())

    assert torch.equal(out.object_score_logits > 0, ref.object_score_logits > 0)
    assert rel(out.multimasks, ref.multimasks) < 0.1
    assert float((out.multimasks > 0).eq(ref.multimasks > 0).float().mean()) > 0.95
    assert rel(out.ious, ref.ious) < 0.1 and rel(out.obj_ptr, ref.obj_ptr) < 0.1
    # the memory encoder on the same masks (best-of-3 may legitimately flip between dtypes)
    memory, _ = tracker.encode_memory(features.image, ref.high_res_masks, ref.object_score_logits, slots)
    assert memory.dtype == torch.bfloat16 and rel(memory, ref.memory_features) < 0.05
