"""Points/boxes through the public API (Sam3.predict), the compat predict_inst and `opensam3 click`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import opensam3
from opensam3.cli import main as cli_main
from opensam3.data import rle
from opensam3.errors import InvalidInputError


@pytest.fixture(scope="module")
def sam(tiny_interactive_checkpoint):
    return opensam3.load(tiny_interactive_checkpoint)


def test_tracker_weights_round_trip(sam, tiny_interactive_checkpoint):
    assert sam.tracker is not None and sam.model.config.vision.tracker_neck
    again = opensam3.load(tiny_interactive_checkpoint)
    for key, value in again.tracker.state_dict().items():
        assert torch.equal(value, sam.tracker.state_dict()[key]), key


def test_predict_shapes_and_refinement(sam, sample_image):
    state = sam.set_image(sample_image)
    masks, scores, low_res = sam.predict(state, points=[[60, 40]], point_labels=[1])
    assert masks.shape == (3, 90, 130) and masks.dtype == torch.bool
    assert scores.shape == (3,) and low_res.shape[0] == 3
    best = int(scores.argmax())
    refined = sam.predict(state, points=[[60, 40], [10, 10]], point_labels=[1, 0],
                          mask_input=low_res[best][None], multimask_output=False)
    assert refined.masks.shape == (1, 90, 130)
    boxed = sam.predict(state, box=[20, 10, 100, 80])
    assert boxed.masks.shape == (3, 90, 130)
    # concept prompts reuse the same encoded image
    assert len(sam.segment(state, text="a dog", threshold=0.0)) == opensam3.TINY.detector.num_queries


def test_predict_errors(sam, tiny_sam, sample_image):
    state = sam.set_image(sample_image)
    with pytest.raises(InvalidInputError):
        sam.predict(state, points=[[500, 10]], point_labels=[1])
    with pytest.raises(InvalidInputError):
        sam.predict(state, points=[[5, 10]], point_labels=[2])
    with pytest.raises(InvalidInputError):
        sam.predict(state, points=[[5, 10], [6, 6]], point_labels=[1])
    with pytest.raises(InvalidInputError):
        sam.predict(state)
    with pytest.raises(InvalidInputError, match="no tracker weights"):
        tiny_sam.predict(sample_image, points=[[5, 5]], point_labels=[1])


def test_compat_predict_inst_matches_predict(sam, sample_image):
    model = sam.model
    model.inst_interactive_predictor = sam.interactive
    try:
        processor = opensam3.Sam3Processor(model, resolution=model.config.image_size)
        state = processor.set_image(Image.fromarray(sample_image))
        masks, ious, low = model.predict_inst(state, point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]))
        ours = sam.predict(sample_image, points=[[60, 40]], point_labels=[1])
        assert isinstance(masks, np.ndarray) and masks.shape == (3, 90, 130)
        assert np.allclose(ious, ours.iou_scores.numpy(), atol=1e-6)
        assert np.allclose(low, ours.low_res_logits.numpy(), atol=1e-5)
    finally:
        model.inst_interactive_predictor = None


def test_click_cli(tmp_path, capsys, tiny_interactive_checkpoint):
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(image)
    code = cli_main(["click", str(image), "--point", "40,30", "--point", "5,5:neg", "--box", "10,10,80,60",
                     "--checkpoint", str(tiny_interactive_checkpoint), "--out", str(tmp_path / "out")])
    assert code == 0
    assert Image.open(tmp_path / "out" / "scene_click.png").size == (90, 70)
    record = json.loads((tmp_path / "out" / "scene_click.json").read_text())
    assert len(record["masks"]) == 3 and sum(m["best"] for m in record["masks"]) == 1
    assert record["point_labels"] == [1, 0]
    for flag in ("--zoom", "--no-zoom"):  # the second look at small objects, forced on / off
        assert cli_main(["click", str(image), "--point", "40,30", flag, "--checkpoint", str(tiny_interactive_checkpoint),
                         "--out", str(tmp_path / flag)]) == 0
        assert len(json.loads((tmp_path / flag / "scene_click.json").read_text())["masks"]) == 3
    # --box-clip keeps the mask inside the box (the tiny seeded heads spill out of it)
    masks = {}
    for flag in ("--box-clip", "--no-box-clip"):
        assert cli_main(["click", str(image), "--box", "30,20,60,50", "--single", flag, "--checkpoint",
                         str(tiny_interactive_checkpoint), "--out", str(tmp_path / flag)]) == 0
        record = json.loads((tmp_path / flag / "scene_click.json").read_text())
        masks[flag] = rle.decode(record["masks"][0]["segmentation"]).astype(bool)
    outside = np.ones((70, 90), dtype=bool)
    outside[20:50, 30:60] = False
    assert not masks["--box-clip"][outside].any() and masks["--no-box-clip"][outside].any()
    assert np.array_equal(masks["--box-clip"][~outside], masks["--no-box-clip"][~outside])
    assert cli_main(["click", str(image), "--checkpoint", str(tiny_interactive_checkpoint)]) == 2
    assert "at least one --point" in capsys.readouterr().err
    assert cli_main(["click", str(image), "--point", "400,30", "--checkpoint", str(tiny_interactive_checkpoint)]) == 2
    assert "outside" in capsys.readouterr().err


def test_bfloat16_model_takes_points(tiny_interactive_checkpoint, sample_image):
    # the prompt encoder gets float32 coordinates; a bf16 model must still take them
    fast = opensam3.load(tiny_interactive_checkpoint, dtype=torch.bfloat16)
    exact = opensam3.load(tiny_interactive_checkpoint)
    masks, scores, _ = fast.predict(sample_image, points=[[60, 40]], point_labels=[1])
    reference, _, _ = exact.predict(sample_image, points=[[60, 40]], point_labels=[1])
    assert masks.shape == reference.shape and torch.isfinite(scores).all()
    agreement = (masks == reference).float().mean().item()
    assert agreement > 0.9, f"bf16 masks agree with fp32 on only {agreement:.1%} of pixels"


def test_save_keeps_the_video_memory_weights(tmp_path):
    import dataclasses

    from opensam3 import TINY, build_model
    from opensam3.model.tracker import TrackerHeads, TrackerHeadsConfig, TrackerMemory, TrackerMemoryConfig
    from opensam3.seeded import seed_module

    config = dataclasses.replace(TINY, vision=dataclasses.replace(TINY.vision, tracker_neck=True))
    model = build_model(config)
    seed_module(model)
    heads, memory = TrackerHeads(TrackerHeadsConfig.from_model_config(config)), TrackerMemory(
        TrackerMemoryConfig.from_model_config(config))
    seed_module(heads, prefix="tracker.")
    seed_module(memory, prefix="tracker.")
    path = tmp_path / "with_memory.safetensors"
    opensam3.Sam3(model, tracker=heads, memory=memory).save(path)
    loaded = opensam3.load(path)
    assert loaded.memory is not None
    for key, value in memory.state_dict().items():
        assert torch.equal(loaded.memory.state_dict()[key], value), key
    assert loaded.video_tracker().memory is loaded.memory
    without = opensam3.Sam3(model, tracker=heads)
    with pytest.raises(InvalidInputError, match="no tracker memory weights"):
        without.video_tracker()


def test_concept_masks_refined_from_their_boxes(tiny_interactive_checkpoint, tiny_checkpoint, sample_image):
    # refine_masks: each detection's mask is the click / box head's answer to the detection's box
    plain = opensam3.load(tiny_interactive_checkpoint, confidence_threshold=0.0)
    refined = opensam3.load(tiny_interactive_checkpoint, confidence_threshold=0.0, refine_masks=True)
    assert not plain.refine_masks  # the tiny (official-style) config keeps the detector's masks
    state = refined.set_image(sample_image)
    before, after = plain.segment(state, text="cat"), refined.segment(state, text="cat")
    assert len(after) == len(before) > 0
    assert torch.equal(after.boxes, before.boxes) and torch.equal(after.scores, before.scores)
    checked = 0
    for box, mask in zip(after.boxes, after.masks):
        inside = torch.minimum(box.clamp(min=0), torch.tensor([130.0, 90.0, 130.0, 90.0]))
        if inside[2] - inside[0] >= 1 and inside[3] - inside[1] >= 1:
            assert torch.equal(mask, refined.predict(state, box=inside.tolist(), multimask_output=False).masks[0])
            checked += 1
    assert checked > 0 and not torch.equal(after.masks, before.masks)
    with pytest.raises(InvalidInputError, match="refine_masks"):
        opensam3.load(tiny_checkpoint, refine_masks=True)  # no tracker weights
    assert not opensam3.load(tiny_checkpoint).refine_masks
