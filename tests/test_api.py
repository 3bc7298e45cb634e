"""The opensam3.load API: typed results, batching, caching, saving, determinism."""

import numpy as np
import torch
from PIL import Image

import opensam3
from opensam3.data.rle import decode as decode_mask


def test_load_roundtrip_reads_config_from_metadata(tiny_checkpoint, tiny_sam, sample_image):
    loaded = opensam3.load(tiny_checkpoint, confidence_threshold=0.0)
    assert loaded.model.config == opensam3.TINY
    original = tiny_sam.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, original[key]), key
    a = tiny_sam.segment(sample_image, text="a red dog")
    b = loaded.segment(sample_image, text="a red dog")
    # same weights; separately allocated tensors may round differently in the last bit
    assert torch.allclose(a.scores, b.scores, atol=1e-6)


def test_segment_result_types_and_shapes(tiny_sam, sample_image):
    result = tiny_sam.segment(sample_image, text="a red dog", threshold=0.0)
    n = len(result)
    assert n == opensam3.TINY.detector.num_queries  # threshold 0 keeps every query
    assert result.masks.dtype == torch.bool and result.masks.shape == (n, 90, 130)
    assert result.boxes.shape == (n, 4) and result.scores.shape == (n,)
    assert torch.all(result.scores[:-1] >= result.scores[1:]), "scores are sorted high to low"
    assert (result.boxes[:, 2] >= result.boxes[:, 0]).all()
    assert 0.0 <= result.presence <= 1.0


def test_threshold_filters(tiny_sam, sample_image):
    everything = tiny_sam.segment(sample_image, text="a red dog", threshold=0.0)
    cut = float(everything.scores[len(everything) // 2])
    kept = tiny_sam.segment(sample_image, text="a red dog", threshold=cut)
    assert len(kept) == int((everything.scores > cut).sum())


def test_several_phrases_batch_equals_single_runs(tiny_sam, sample_image):
    state = tiny_sam.set_image(sample_image)
    batched = tiny_sam.segment(state, text=["a red dog", "a cat", "a tall person in blue"])
    for phrase, result in zip(["a red dog", "a cat", "a tall person in blue"], batched):
        single = tiny_sam.segment(state, text=phrase)
        assert result.prompt == phrase
        assert torch.allclose(result.scores, single.scores, atol=1e-5)


def test_image_list_is_one_batch_equal_to_singles(tiny_sam, sample_image):
    other = np.ascontiguousarray(sample_image[::-1])
    results = tiny_sam.segment([sample_image, Image.fromarray(other)], text="a red dog")
    assert len(results) == 2 and results[1].masks.shape[1:] == (90, 130)
    single = tiny_sam.segment(other, text="a red dog")
    assert torch.allclose(results[1].scores, single.scores, atol=1e-4)


def test_exemplar_boxes_change_the_answer(tiny_sam, sample_image):
    state = tiny_sam.set_image(sample_image)
    text_only = tiny_sam.segment(state, text="a red dog")
    with_box = tiny_sam.segment(state, text="a red dog", boxes=[[10, 10, 60, 50]], box_labels=[1])
    boxes_only = tiny_sam.segment(state, boxes=[[10, 10, 60, 50]])
    assert not torch.allclose(text_only.scores, with_box.scores)
    assert len(boxes_only) > 0 and boxes_only.prompt == "object"


def test_coco_rle_round_trip(tiny_sam, sample_image):
    result = tiny_sam.segment(sample_image, text="a red dog", threshold=0.0)
    records = result.to_coco_rle()
    assert len(records) == len(result)
    for record, mask in zip(records[:5], result.masks[:5]):
        assert record["segmentation"]["size"] == [90, 130]
        assert np.array_equal(decode_mask(record["segmentation"]), mask.numpy())
        assert len(record["bbox"]) == 4


def test_overlay_draws_on_a_copy(tiny_sam, sample_image):
    before = sample_image.copy()
    result = tiny_sam.segment(sample_image, text="a red dog", threshold=0.0)
    picture = result.overlay()
    assert picture.size == (130, 90)
    assert np.array_equal(sample_image, before)
    assert not np.array_equal(np.asarray(picture), sample_image)


def test_same_prompt_same_output(tiny_sam, sample_image):
    a = tiny_sam.segment(sample_image, text="a red dog")
    b = tiny_sam.segment(sample_image, text="a red dog")
    assert torch.equal(a.scores, b.scores) and torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)


def test_text_cache_encodes_each_phrase_once(tiny_sam, monkeypatch):
    model = tiny_sam.model
    model.clear_text_cache()
    encoder = model.backbone.language_backbone
    seen = []
    original = encoder.forward

    def counting(texts, device=None):
        seen.append(list(texts))
        return original(texts, device=device)

    monkeypatch.setattr(encoder, "forward", counting)
    first = model.encode_text(["a red dog", "a cat", "a red dog"])
    second = model.encode_text(["a cat"])
    assert seen == [["a red dog", "a cat"]]
    assert torch.equal(first.features[1], second.features[0])
    assert torch.equal(first.features[0], first.features[2])
    assert encoder.cache_info()["entries"] == 2


def test_bfloat16_runs_and_stays_close(tiny_checkpoint, sample_image):
    exact = opensam3.load(tiny_checkpoint, confidence_threshold=0.0)
    fast = opensam3.load(tiny_checkpoint, dtype=torch.bfloat16, confidence_threshold=0.0)
    assert next(fast.model.parameters()).dtype == torch.bfloat16
    a = exact.segment(sample_image, text="a red dog")
    b = fast.segment(sample_image, text="a red dog")
    assert b.masks.shape == a.masks.shape and b.scores.dtype == torch.float32
    assert abs(a.presence - b.presence) < 0.05


def test_read_only_image_arrays_give_no_warning(tiny_sam, sample_image):
    """np.asarray(PIL image) is read-only; segmenting it must not make torch warn about that."""
    import warnings

    frozen = sample_image.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = tiny_sam.segment(tiny_sam.set_image(frozen), text="a cat")
    assert result.masks.shape[-2:] == frozen.shape[:2]

