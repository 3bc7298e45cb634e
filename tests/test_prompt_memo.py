"""Prompt-independent detector work is done once per image: the fusion encoder's first
self-attention sees only the image, so an encoded image keeps it for all its later prompts.
Reusing it must not change any output."""

import torch

from opensam3.model.detector.fusion import MEMO_FIRST_SELF_ATTENTION


def _ground(model, features, phrases):
    text = model.encode_text(phrases)
    count = len(phrases)
    boxes = torch.zeros(count, 0, 4)
    labels = torch.zeros(count, 0, dtype=torch.bool)
    return model.ground(features, text, boxes, labels, labels.clone())


def _assert_same(a, b, atol):
    for name in ("logits", "boxes", "masks", "presence_logits", "semantic_logits"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=atol, rtol=0, msg=name)


def test_reused_first_layer_gives_the_outputs_of_a_full_pass(tiny_sam, sample_image):
    model = tiny_sam.model
    with torch.inference_mode():
        state = tiny_sam.set_image(sample_image)
        features = state.features
        assert features.memo == {}
        first = _ground(model, features.select([0]), ["a dog"])
        kept = features.memo[MEMO_FIRST_SELF_ATTENTION]
        assert kept.shape[0] == 1
        again = _ground(model, features.select([0]), ["a dog"])
        assert features.memo[MEMO_FIRST_SELF_ATTENTION] is kept  # computed once, not per prompt
        fresh = features.select([0])
        fresh.memo = None  # the plain path: every layer runs in full
        reference = _ground(model, fresh, ["a dog"])
    _assert_same(again, first, atol=0.0)  # run to run: identical
    _assert_same(first, reference, atol=1e-4)  # the acceptance tolerance on fp32 logits


def test_a_batch_of_phrases_shares_the_image_memo(tiny_sam, sample_image):
    model = tiny_sam.model
    with torch.inference_mode():
        state = tiny_sam.set_image(sample_image)
        batch = state.features.select([0, 0])
        assert batch.memo is state.features.memo
        both = _ground(model, batch, ["a dog", "a cat"])
        single = state.features.select([0])
        single.memo = None
        cat = _ground(model, single, ["a cat"])
    torch.testing.assert_close(both.logits[1:], cat.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(both.masks[1:], cat.masks, atol=1e-4, rtol=0)  # fp32 summation order


def test_no_memo_for_distinct_images_or_under_autograd(tiny_sam, sample_image):
    model = tiny_sam.model
    with torch.inference_mode():
        pair = tiny_sam.set_images([sample_image, sample_image[::-1].copy()])
    assert pair[0].features.select([0, 0]).memo is pair[0].features.memo
    joined = model.encode_image(torch.zeros(2, 3, model.config.image_size, model.config.image_size))
    assert joined.memo is None and joined.select([0, 1]).memo is None
    assert joined.select([1, 1]).memo == {}  # one image repeated: a memo of its own
    features = model.encode_image(torch.zeros(1, 3, model.config.image_size, model.config.image_size))
    output = _ground(model, features, ["a dog"])  # gradients on: nothing is kept
    assert output.logits.requires_grad and features.memo == {}
