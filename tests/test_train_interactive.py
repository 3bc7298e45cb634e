"""The interactive (tracker) training stage: prompts, losses, save / load, evaluation."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import opensam3
from opensam3.api import CONFIG_METADATA_KEY, build_model
from opensam3.checkpoint import save_checkpoint
from opensam3.config import EMBEDDED, SAM3, DetectorConfig, Sam3Config, TextConfig, VisionConfig, config_to_dict
from opensam3.model.tracker.config import TrackerHeadsConfig
from opensam3.predictor.zoom import ZoomRule
from opensam3.train.interactive import (InteractiveSettings, build_cache, interactive_loss, load_for_interactive,
                                        train_interactive, trainable_modules)
from opensam3.train.interactive_eval import evaluate_interactive
from opensam3.synth.render import mask_boxes
from opensam3.train.zoom_views import zoomed_view
from opensam3.train.interactive_prompts import (corrective_clicks, distance_to_boundary, farthest_interior_point,
                                                jittered_box)

# a detector small enough to train a few steps in seconds (140 px: a 10 x 10 patch grid)
MICRO = Sam3Config(
    name="micro",
    vision=VisionConfig(image_size=140, embed_dim=48, depth=2, num_heads=2, mlp_ratio=2.0, window_size=5,
                        global_blocks=(1,), pretrain_image_size=140, neck_dim=32, tracker_neck=False),
    text=TextConfig(width=32, layers=1, heads=2),
    detector=DetectorConfig(d_model=32, num_heads=2, fusion_layers=1, fusion_ffn=64, decoder_layers=1,
                            decoder_ffn=64, num_queries=4, geometry_layers=1, geometry_ffn=64, scoring_hidden=64),
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("micro") / "detector.safetensors"
    save_checkpoint(build_model(MICRO), path, metadata={CONFIG_METADATA_KEY: json.dumps(config_to_dict(MICRO))})
    return path


def test_head_sizes_follow_the_neck():
    official = TrackerHeadsConfig.from_model_config(SAM3)
    assert (official.dim, official.transformer_mlp_dim, official.iou_head_hidden) == (256, 2048, 256)
    assert official == TrackerHeadsConfig()  # the official checkpoint's heads
    embedded = TrackerHeadsConfig.from_model_config(EMBEDDED)
    assert (embedded.dim, embedded.transformer_mlp_dim, embedded.iou_head_hidden) == (128, 1024, 128)
    assert (embedded.image_size, embedded.low_res_size) == (224, 64)


def test_farthest_point_and_distance():
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:15, 10:21] = True  # an 11 x 11 square centred on row 9, column 15
    assert farthest_interior_point(mask) == (15, 9)
    distance = distance_to_boundary(mask)
    assert distance[0, 0] == 0 and distance[4, 10] == 1.0 and distance[9, 15] == 6.0
    mask[4:15, 10:25] = True  # wider: a tie along the centre row goes to its first pixel
    assert farthest_interior_point(mask) == (15, 9)
    touching = np.zeros((10, 10), dtype=bool)
    touching[:, :3] = True  # the image border counts as boundary
    assert farthest_interior_point(touching)[0] == 1
    assert farthest_interior_point(np.zeros((5, 5), dtype=bool)) is None


def test_jittered_box_stays_valid():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0, x1, y1 = jittered_box([2, 3, 40, 30], rng, size=48)
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48


def test_corrective_clicks_land_in_the_error_region():
    target = torch.zeros(64, 20, 20, dtype=torch.bool)
    target[:, 5:15, 5:15] = True
    pred = target.clone()
    pred[:32, 5:15, 5:10] = False   # first half: misses (false negatives) only
    pred[32:, 0:3, 0:20] = True     # second half: spurious pixels (false positives) only
    xy, labels = corrective_clicks(pred, target, torch.Generator().manual_seed(0))
    x, y = xy[:, 0].long(), xy[:, 1].long()
    rows = torch.arange(64)
    assert (labels[:32] == 1).all() and (labels[32:] == 0).all()
    assert (target[rows, y, x] & ~pred[rows, y, x])[:32].all()   # positive clicks on false negatives
    assert (pred[rows, y, x] & ~target[rows, y, x])[32:].all()   # negative clicks on false positives
    # mixed errors: every click is on an error pixel, labelled by the ground truth there
    mixed = target.clone()
    mixed[:, 5:15, 5:8] = False
    mixed[:, 0:2, :] = True
    xy, labels = corrective_clicks(mixed, target, torch.Generator().manual_seed(1))
    x, y = xy[:, 0].long(), xy[:, 1].long()
    assert (mixed[rows, y, x] != target[rows, y, x]).all()
    assert torch.equal(labels.bool(), target[rows, y, x])
    assert set(labels.tolist()) == {0, 1}
    # no error: a positive click inside the object
    xy, labels = corrective_clicks(target[:2], target[:2])
    assert (labels == 1).all() and target[0, int(xy[0, 1]), int(xy[0, 0])]


def test_a_few_steps_lower_the_loss(detector_checkpoint):
    settings = InteractiveSettings(init=str(detector_checkpoint), clicks=1, lr=3e-3, warmup=0, progress=False)
    model, heads = load_for_interactive(settings.init)
    neck = model.backbone.vision_backbone
    # the tracker neck starts as a copy of the detector neck
    assert torch.equal(neck.sam2_convs[0].conv_1x1.weight, neck.convs[0].conv_1x1.weight)
    cache = build_cache(model, 2, seed=10)
    assert cache.trunk.shape == (2, 48, 10, 10) and cache.masks[0].shape[-1] == 140
    trunk_before = {k: v.clone() for k, v in neck.trunk.state_dict().items()}
    trainable = trainable_modules(model, heads)
    trainable.train()
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=settings.lr)

    def loss_on_fixed_prompts():
        return interactive_loss(model, heads, cache, [0, 1], np.random.default_rng(5),
                                torch.Generator().manual_seed(5), settings)

    with torch.no_grad():
        before = float(loss_on_fixed_prompts()["loss"])
    for _ in range(12):
        loss = loss_on_fixed_prompts()["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss_on_fixed_prompts()["loss"])
    assert after < 0.8 * before
    # the trunk (and the detector) is frozen
    assert all(torch.equal(v, neck.trunk.state_dict()[k]) for k, v in trunk_before.items())
    assert all(p.grad is None for p in neck.trunk.parameters())


def test_saved_model_loads_and_predicts(detector_checkpoint, tmp_path):
    settings = InteractiveSettings(init=str(detector_checkpoint), out=str(tmp_path / "run"), steps=3,
                                   time_budget=None, train_scenes=3, clicks=1, log_every=1, progress=False)
    summary = train_interactive(settings)
    assert summary["steps"] == 3
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3] and all(np.isfinite(e["loss"]) for e in log)
    sam = opensam3.load(summary["out"])
    assert sam.tracker is not None and sam.model.config.vision.tracker_neck
    assert sam.tracker.config == TrackerHeadsConfig.from_model_config(sam.model.config)
    image = np.random.default_rng(0).integers(0, 256, size=(90, 130, 3), dtype=np.uint8)
    state = sam.set_image(image)
    result = sam.predict(state, points=[[60, 40]], point_labels=[1])
    assert result.masks.shape == (3, 90, 130) and result.masks.dtype == torch.bool
    assert result.low_res_logits.shape == (3, 40, 40)
    result = sam.predict(state, box=[10, 10, 80, 70], mask_input=result.low_res_logits[:1], multimask_output=False)
    assert result.masks.shape == (1, 90, 130)
    # the trained tracker neck, not the detector's copy, is what was saved
    neck = sam.model.backbone.vision_backbone
    assert not torch.equal(neck.sam2_convs[2].conv_3x3.weight, neck.convs[2].conv_3x3.weight)
    metrics = evaluate_interactive(sam, num_scenes=2)
    assert metrics["objects"] > 0 and 0.0 <= metrics["point_success"] <= 1.0 and 0.0 <= metrics["box_miou"] <= 1.0


def test_continuing_from_a_combined_model_keeps_its_tracker(detector_checkpoint, tmp_path):
    settings = InteractiveSettings(init=str(detector_checkpoint), out=str(tmp_path / "a"), steps=1,
                                   time_budget=None, train_scenes=2, clicks=0, progress=False)
    first = train_interactive(settings)
    model, heads = load_for_interactive(first["out"])
    saved = opensam3.load(first["out"])
    assert torch.equal(heads.no_mem_embed, saved.tracker.no_mem_embed)
    assert torch.equal(model.backbone.vision_backbone.sam2_convs[0].conv_3x3.weight,
                       saved.model.backbone.vision_backbone.sam2_convs[0].conv_3x3.weight)
    assert dataclasses.asdict(model.config) == dataclasses.asdict(saved.model.config)
    # a warm start: the detector from one file, the tracker neck and heads from an earlier run
    model, heads = load_for_interactive(detector_checkpoint, tracker_from=first["out"])
    assert torch.equal(heads.no_mem_embed, saved.tracker.no_mem_embed)
    neck = model.backbone.vision_backbone
    assert torch.equal(neck.sam2_convs[0].conv_3x3.weight, saved.model.backbone.vision_backbone.sam2_convs[0].conv_3x3.weight)
    with pytest.raises(opensam3.errors.CheckpointError):
        load_for_interactive(detector_checkpoint, tracker_from=detector_checkpoint)


def test_training_the_trunk_moves_it_and_pulls_it_back_to_the_frozen_output(detector_checkpoint):
    settings = InteractiveSettings(init=str(detector_checkpoint), clicks=0, lr=3e-3, warmup=0, progress=False,
                                   trunk_lr_scale=1.0, trunk_keep_weight=1.0)
    model, heads = load_for_interactive(settings.init)
    cache = build_cache(model, 2, seed=10, keep_pixels=True)
    assert cache.pixels.shape == (2, 3, 140, 140) and cache.pixels.dtype == torch.float16
    trunk = model.backbone.vision_backbone.trunk
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    trainable = trainable_modules(model, heads, train_trunk=True)
    trainable.train()
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=settings.lr)
    first = None
    for _ in range(3):
        out = interactive_loss(model, heads, cache, [0, 1], np.random.default_rng(5), torch.Generator().manual_seed(5),
                               settings)
        # the keep term starts at the fp16 rounding of the cached output (the trunk is unchanged)
        first = out["trunk_keep"].item() if first is None else first
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert first < 1e-5 and out["trunk_keep"].item() > first
    assert any(not torch.equal(v, trunk.state_dict()[k]) for k, v in before.items())
    # the keep term alone pulls a moved trunk back towards the frozen output
    keep_only = dataclasses.replace(settings, focal_weight=0.0, dice_weight=0.0, iou_weight=0.0, trunk_keep_weight=1.0)
    optimizer = torch.optim.SGD(trunk.parameters(), lr=0.05)
    start = interactive_loss(model, heads, cache, [0, 1], np.random.default_rng(5),
                             torch.Generator().manual_seed(5), keep_only)["trunk_keep"].item()
    for _ in range(5):
        out = interactive_loss(model, heads, cache, [0, 1], np.random.default_rng(5), torch.Generator().manual_seed(5),
                               keep_only)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert out["trunk_keep"].item() < start


def _two_object_scene():
    image = np.random.default_rng(0).integers(0, 255, size=(200, 200, 3), dtype=np.uint8)
    masks = np.zeros((2, 200, 200), dtype=bool)
    masks[0, 20:190, 20:190] = True    # too large to zoom on
    masks[1, 50:60, 100:110] = True    # 10 px: a window of 0.43 x 200 = 86 px
    masks[0] &= ~masks[1]
    return image, masks


def test_zoomed_view_cuts_the_predictors_window_around_a_small_object():
    image, masks = _two_object_scene()
    pixels, view = zoomed_view(image, masks, np.random.default_rng(1), 172, margins=(3.0, 3.0), jitter=0.0)
    # the window the predictor would cut: 86 px square centred on the small object
    window = ZoomRule(3.0).window(masks[1], np.zeros((0, 2)))
    assert window == (62, 12, 86)
    rows, cols = window.slices()
    assert np.array_equal(pixels, image[rows, cols])
    # both objects are visible in it, resized 2x: the small one is now 20 px across
    assert view.shape == (2, 172, 172)
    assert mask_boxes(view.numpy())[1].tolist() == [76.0, 76.0, 96.0, 96.0]
    assert abs(int(view[1].sum()) - 400) <= 40
    # only the large object: nothing to zoom on
    assert zoomed_view(image, masks[:1], np.random.default_rng(1), 172) is None


def test_zoomed_view_jitter_keeps_the_window_inside_the_image():
    image, masks = _two_object_scene()
    rng = np.random.default_rng(2)
    for _ in range(20):
        pixels, view = zoomed_view(image, masks, rng, 100, margins=(2.5, 4.5), jitter=0.3)
        assert pixels.shape[0] == pixels.shape[1] >= 86 and view[-1].any()


def test_cache_with_zoom_views_holds_larger_objects(detector_checkpoint):
    model, _ = load_for_interactive(str(detector_checkpoint))
    scenes = build_cache(model, 6, seed=10)
    zoomed = build_cache(model, 6, seed=10, zoom_share=1.0)
    assert zoomed.trunk.shape == scenes.trunk.shape
    for masks, boxes, centers in zip(zoomed.masks, zoomed.boxes, zoomed.centers):
        assert masks.shape[-2:] == (140, 140) and masks.flatten(1).any(1).all()
        assert np.array_equal(boxes, mask_boxes(masks.numpy()))
        assert all(masks[k, int(y), int(x)] for k, (x, y) in enumerate(centers))
    area = lambda cache: np.mean([float(m.flatten(1).sum(1).float().mean()) for m in cache.masks])
    assert area(zoomed) > 1.5 * area(scenes)
