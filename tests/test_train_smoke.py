"""End-to-end training on a tiny synthetic SA-Co folder: gradients, loss decrease, resume, export."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import opensam3
from opensam3.api import build_model
from opensam3.config import DetectorConfig, Sam3Config, TextConfig, VisionConfig, get_config
from opensam3.data import rle
from opensam3.errors import InvalidInputError
from opensam3.train.data import SacoDataset
from opensam3.train.model_io import export_model
from opensam3.train.trainer import MODEL_FILE, STATE_FILE, Trainer, TrainSettings

# Same architecture, minimal sizes: 56 px input, 4x4 patch grid, 16x16 masks.
MICRO = Sam3Config(
    name="micro",
    vision=VisionConfig(image_size=56, embed_dim=32, depth=2, num_heads=2, window_size=2, global_blocks=(1,),
                        pretrain_image_size=56, neck_dim=32, tracker_neck=False),
    text=TextConfig(width=32, layers=1, heads=2),
    detector=DetectorConfig(d_model=32, num_heads=2, fusion_layers=1, fusion_ffn=64, decoder_layers=2,
                            decoder_ffn=64, num_queries=8, geometry_layers=1, geometry_ffn=64, scoring_hidden=64),
)

# Parameters no training loss can reach: the pixel decoder's last stage (the official head
# keeps one more upsampling stage than there are pyramid levels), the coarsest FPN level (the
# official scalp=1 drops it), the text projection (only the official contrastive pretraining
# head used it) and the point-prompt projections (the detector is trained with box prompts).
EXPECTED_UNUSED = ("segmentation_head.pixel_decoder.conv_layers.2.", "segmentation_head.pixel_decoder.norms.2.",
                   "backbone.vision_backbone.convs.3.", "backbone.language_backbone.encoder.text_projection",
                   "geometry_encoder.points_")


COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}


def make_dataset(root: Path, num_images: int = 6, size: int = 64, seed: int = 0) -> Path:
    """Colored rectangles and circles on grey; one pair per (image, color) incl. absent colors."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": []}
    for index in range(num_images):
        canvas = np.full((size, size, 3), 128, dtype=np.uint8)
        shapes = []
        for color in rng.choice(list(COLORS), size=2, replace=False):
            for _ in range(int(rng.integers(1, 3))):
                mask = np.zeros((size, size), dtype=bool)
                w, h = rng.integers(10, 24, size=2)
                x, y = rng.integers(0, size - w), rng.integers(0, size - h)
                if rng.random() < 0.5:
                    mask[y:y + h, x:x + w] = True
                else:
                    yy, xx = np.mgrid[:size, :size]
                    mask = (yy - y - h / 2) ** 2 + (xx - x - h / 2) ** 2 < (h / 2) ** 2
                mask &= ~np.any([m for _, m in shapes], axis=0) if shapes else True
                if mask.sum() < 8:
                    continue
                canvas[mask] = COLORS[color]
                shapes.append((color, mask))
        name = f"img{index}.png"
        Image.fromarray(canvas).save(root / "images" / name)
        splits["train" if index < num_images - 2 else "val"].append((name, shapes))
    for split, items in splits.items():
        images, annotations = [], []
        for name, shapes in items:
            for color in COLORS:
                pair_id = len(images) + 1
                images.append({"id": pair_id, "file_name": name, "text_input": f"{color} shape", "height": size,
                               "width": size, "is_instance_exhaustive": 1})
                for shape_color, mask in shapes:
                    if shape_color == color:
                        x, y, w, h = rle.to_bbox(rle.encode(mask))
                        annotations.append({"id": len(annotations) + 1, "image_id": pair_id, "category_id": 1,
                                            "bbox": [x / size, y / size, w / size, h / size], "iscrowd": 0,
                                            "segmentation": rle.encode(mask), "area": int(mask.sum())})
        payload = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
        (root / f"{split}.json").write_text(json.dumps(payload, default=_json_default))
    return root


def _json_default(value):
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def settings(tmp: Path, data: Path, **kw) -> TrainSettings:
    base = dict(config="micro", data=str(data), out=str(tmp), steps=12, batch_size=4, lr=2e-3, warmup=2, clip=1.0,
                exemplar_prob=0.5, log_every=1, save_every=1000, eval_every=0, eval_pairs=0, progress=False)
    base.update(kw)
    return TrainSettings(**base)


def trainer(tmp: Path, data: Path, **kw) -> Trainer:
    torch.manual_seed(0)
    return Trainer(settings(tmp, data, **kw), model=build_model(MICRO))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("shapes"))


def test_dataset_batch(data):
    dataset = SacoDataset(data / "train.json", MICRO, exemplar_prob=1.0)
    batch = dataset.batch(list(range(6)), __import__("random").Random(0))
    # pairs 0-5 ask three phrases of each of two images: each image is encoded once
    assert batch.pixels.shape == (2, 3, 56, 56) and batch.image_index == [0, 0, 0, 1, 1, 1]
    assert batch.file_names == [dataset.pairs[0]["file_name"], dataset.pairs[3]["file_name"]]
    assert any(t.shape[0] == 0 for t in batch.target_boxes)  # negatives present
    for boxes, masks in zip(batch.target_boxes, batch.target_masks):
        assert masks.shape[1:] == (16, 16) and masks.shape[0] == boxes.shape[0]
        assert ((boxes >= 0) & (boxes <= 1)).all()
    # exemplars only on positive pairs
    assert torch.equal(~batch.prompt_padding.all(dim=1), batch.presence)


def test_every_trainable_parameter_gets_a_finite_gradient(data, tmp_path):
    run = trainer(tmp_path, data)
    loss, _ = run.compute_loss(run.next_batch())
    loss.backward()
    missing, bad = [], []
    for name, param in run.model.named_parameters():
        if param.grad is None or not param.grad.abs().sum() > 0:
            missing.append(name)
        elif not torch.isfinite(param.grad).all():
            bad.append(name)
    assert not bad
    assert sorted(n for n in missing if not n.startswith(EXPECTED_UNUSED)) == []
    assert all(any(n.startswith(p) for n in missing) for p in EXPECTED_UNUSED)


def test_loss_goes_down_resume_is_exact_and_export_loads(data, tmp_path):
    full = trainer(tmp_path / "full", data)
    full.run()
    losses = [h["loss"] for h in full.history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])

    half = trainer(tmp_path / "half", data, steps=12)
    half.settings.steps = 6
    half.run()
    assert (tmp_path / "half" / STATE_FILE).is_file()
    resumed = trainer(tmp_path / "half", data, steps=12)
    assert resumed.step == 6
    resumed.run()
    assert [h["loss"] for h in half.history + resumed.history] == pytest.approx(losses, rel=1e-6, abs=1e-7)

    loaded = opensam3.load(tmp_path / "full" / MODEL_FILE)
    assert loaded.model.config == MICRO
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)


def test_held_out_eval_reports_cgf1_family(data, tmp_path):
    run = trainer(tmp_path, data, steps=1)
    metrics = run.evaluate()
    assert set(metrics) == {"cgF1", "IL_MCC", "pmF1"}
    assert all(isinstance(v, float) for v in metrics.values())
    # inference-mode caches filled during evaluation must not break the next training step
    assert np.isfinite(run.train_step()["loss"]) and run.model.training


def test_fp16_export_loads_as_float32(data, tmp_path):
    model = build_model(MICRO)
    export_model(model, tmp_path / "m.safetensors", torch.float16)
    loaded = opensam3.load(tmp_path / "m.safetensors")
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_bad_inputs_name_what_to_fix(tmp_path, data):
    with pytest.raises(InvalidInputError, match="not found"):
        Trainer(settings(tmp_path, tmp_path / "nope"), model=build_model(MICRO))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="train.json"):
        Trainer(settings(tmp_path, tmp_path / "empty"), model=build_model(MICRO))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        SacoDataset(broken, MICRO)
    with pytest.raises(ValueError, match="unknown model config"):
        get_config("nonesuch")


def test_split_subfolders_are_found(data, tmp_path):
    from opensam3.train.data import find_images_dir, find_split

    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "synth_images.json").write_text((data / f"{split}.json").read_text())
        (tmp_path / split / "images").symlink_to(data / "images")
    found = find_split(tmp_path, "train")
    assert found == tmp_path / "train" / "synth_images.json"
    assert find_images_dir(found) == tmp_path / "train" / "images"
    assert find_split(tmp_path, "val") == tmp_path / "val" / "synth_images.json"


def test_cli_parser_wires_run_train(tmp_path):
    import argparse

    from opensam3.train.cli import add_train_parser, run_train

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", "tiny", "--data", str(tmp_path / "missing"), "--steps", "3"])
    assert args.func is run_train and args.steps == 3
    with pytest.raises(InvalidInputError, match="missing"):
        args.func(args)
    args = parser.parse_args(["train", "--config", "nonesuch", "--data", str(tmp_path)])
    with pytest.raises(InvalidInputError, match="known configs"):
        args.func(args)
    args = parser.parse_args(["train", "--config", "tiny", "--data", str(tmp_path), "--dac", "--official-init"])
    assert args.dac is True and args.official_init is True
    args = parser.parse_args(["train", "--config", "tiny", "--data", str(tmp_path)])
    assert args.dac is None and args.official_init is False  # None: the recipe's (off) DAC setting


def test_loss_weights_merge_recipe_then_command_line(tmp_path):
    from opensam3.train.cli import parse_loss_weights
    from opensam3.train.losses import LossWeights
    from opensam3.train.trainer import settings_for

    default = LossWeights()
    recipe = settings_for("embedded").loss_weights
    assert (recipe.mask, recipe.dice) == (6 * default.mask, 6 * default.dice) and recipe.ce == default.ce
    given = settings_for("embedded", loss_weights=parse_loss_weights(["dice=5", "giou=1.5"])).loss_weights
    assert (given.mask, given.dice, given.giou, given.ce) == (recipe.mask, 5.0, 1.5, default.ce)
    assert settings_for("tiny", loss_weights=parse_loss_weights(None)).loss_weights == default
    for bad, message in (("mask", "NAME=VALUE"), ("colour=2", "NAME one of"), ("mask=lots", "not a number"),
                         ("mask=-1", ">= 0"), ("dice=nan", "finite"), ("dice=inf", "finite")):
        with pytest.raises(InvalidInputError, match=message):
            parse_loss_weights([bad])


def test_dac_query_copy_leaves_the_one_to_one_queries_unchanged_and_is_trained(data, tmp_path):
    """SAM 3's one-to-many (DAC) query copy (TrainSettings.dac): it must not change the
    one-to-one queries (inference uses only them) and must get its own one-to-many losses."""
    run = trainer(tmp_path, data, dac=True)
    model, batch = run.model, run.next_batch()
    queries = MICRO.detector.num_queries
    with torch.no_grad():
        features = model.encode_image(batch.pixels).select(batch.image_index)
        text = model.backbone.language_backbone(batch.phrases)
        prompts = (batch.prompt_boxes, batch.prompt_labels, batch.prompt_padding)
        plain, plain_dec, plain_logits = model.ground(features, text, *prompts, all_layers=True)
        dac, dac_dec, dac_logits = model.ground(features, text, *prompts, all_layers=True, dac=True)
    assert dac_logits.shape[2] == 2 * queries and dac.masks.shape[1] == 2 * queries
    torch.testing.assert_close(dac_logits[:, :, :queries], plain_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dac_dec.pred_boxes[:, :, :queries], plain_dec.pred_boxes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dac.masks[:, :queries], plain.masks, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dac_dec.presence_logits, plain_dec.presence_logits, rtol=1e-5, atol=1e-5)
    # the copy skips self-attention, so it differs from the one-to-one queries
    assert not torch.allclose(dac_logits[:, :, queries:], plain_logits, atol=1e-4)
    _, log = run.compute_loss(batch)
    assert {"ce_o2m", "bbox_o2m", "giou_o2m", "mask_o2m", "dice_o2m"} <= set(log)
    assert "presence_o2m" not in log and "semantic_o2m" not in log


def test_init_from_scratch_is_the_official_initialisation():
    from opensam3.train.init import init_from_scratch

    torch.manual_seed(0)
    model = init_from_scratch(build_model(MICRO))
    decoder = model.transformer.decoder
    assert not decoder.bbox_embed.layers[-1].weight.any() and not decoder.bbox_embed.layers[-1].bias.any()
    trunk = model.backbone.vision_backbone.trunk
    assert 0.01 < float(trunk.pos_embed.detach().std()) < 0.03
    assert float(trunk.blocks[0].mlp.fc1.weight.detach().std()) == pytest.approx(0.02, rel=0.2)
    with torch.no_grad():
        features = model.encode_image(torch.zeros(1, 3, 56, 56))
        text = model.backbone.language_backbone(["red circle"])
        _, decoded, _ = model.ground(features, text, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool),
                                     torch.zeros(1, 0, dtype=torch.bool), all_layers=True)
    # every query's first box is its reference box (DETR box refinement starts from the anchors)
    torch.testing.assert_close(decoded.pred_boxes[0, 0], decoder.reference_points.weight.sigmoid())


def test_resume_ignores_inference_settings_but_refuses_other_sizes(data, tmp_path):
    from opensam3.config import architecture_differences

    first = trainer(tmp_path, data, steps=2)
    first.run()
    # a new default NMS threshold does not touch the weights: the state still resumes
    torch.manual_seed(0)
    again = Trainer(settings(tmp_path, data, steps=3), model=build_model(MICRO.replace(nms_iou=0.4)))
    assert again.step == 2
    wider = MICRO.replace(detector=DetectorConfig(**{**MICRO.detector.__dict__, "num_queries": 12}))
    assert architecture_differences(MICRO, wider) == ["detector.num_queries"]
    assert architecture_differences(MICRO, MICRO.replace(nms_iou=0.4, name="other")) == []
    with pytest.raises(InvalidInputError, match="detector.num_queries"):
        Trainer(settings(tmp_path, data, steps=3), model=build_model(wider))


def test_frozen_trunk_keeps_the_trunk_and_reuses_its_outputs(data, tmp_path):
    run = trainer(tmp_path, data, freeze_trunk=True, steps=4)
    trunk = run.model.backbone.vision_backbone.trunk
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    batch = run.next_batch()
    expected = run.model.encode_image(batch.pixels.contiguous(memory_format=torch.channels_last))
    cached = run._encode(batch, torch.device("cpu"))[0]
    assert sorted(run._trunk_maps) == sorted(set(batch.file_names))
    for ours, theirs in zip(cached.fpn, expected.fpn):  # the same features as the full encoder gives
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    for _ in range(4):
        run.train_step()
    after = run.model.state_dict()
    trunk_keys = {"backbone.vision_backbone.trunk." + k for k in trunk.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in trunk_keys)
    changed = [k for k in after if k not in trunk_keys and not torch.equal(before[k], after[k])]
    assert any(k.startswith("backbone.vision_backbone.convs.") for k in changed)
    assert any(k.startswith("transformer.decoder.") or ".decoder." in k for k in changed)
    assert not any(p.requires_grad for p in trunk.parameters())


def test_init_from_a_file_keeps_its_recorded_config(data, tmp_path):
    """A model saved with its tracker neck (as the shipped embedded one is) fine-tunes as is: the
    recorded config wins over the named one when only the tracker neck differs."""
    from opensam3.train.model_io import load_init_model

    with_neck = MICRO.replace(vision=dataclasses.replace(MICRO.vision, tracker_neck=True), query_logit_offset=0.75)
    torch.manual_seed(0)
    path = tmp_path / "with_neck.safetensors"
    export_model(build_model(with_neck), path)
    model = load_init_model(str(path), MICRO)
    assert model.config == with_neck and model.backbone.vision_backbone.sam2_convs is not None
    other = MICRO.replace(detector=dataclasses.replace(MICRO.detector, num_queries=4))
    with pytest.raises(opensam3.CheckpointError):
        load_init_model(str(path), other)  # another architecture: read as the named config, and refused


def test_frozen_trunk_cache_stays_within_its_budget(data, tmp_path, monkeypatch):
    from opensam3.train import trainer as trainer_module

    run = trainer(tmp_path, data, freeze_trunk=True)
    batch = run.next_batch()
    one = run.model.backbone.vision_backbone.trunk(batch.pixels[:1]).numel() * 4
    monkeypatch.setattr(trainer_module, "TRUNK_CACHE_BYTES", one)   # room for one image's map
    first = run._encode(batch, torch.device("cpu"))[0]
    assert len(run._trunk_maps) == 1 and run._trunk_bytes == one
    again = run._encode(batch, torch.device("cpu"))[0]            # cached or recomputed: the same
    for a, b in zip(first.fpn, again.fpn):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_tracker_anchor_holds_the_tracker_neck_while_the_trunk_trains(data, tmp_path):
    """Training the trunk moves what the click / box head reads; the anchor loss keeps the tracker
    neck's output near the start (the neck learns to undo the trunk's change) while the trunk and
    the detector still learn."""
    import copy

    with_neck = MICRO.replace(vision=dataclasses.replace(MICRO.vision, tracker_neck=True))

    def train(weight: float):
        torch.manual_seed(0)
        model = build_model(with_neck)
        start = copy.deepcopy(model)
        run = Trainer(settings(tmp_path / f"w{weight}", data, steps=10, lr=5e-3, tracker_anchor=weight), model=model)
        logs = [run.train_step() for _ in range(10)]
        return start, run, logs

    def tracker_drift(start, run) -> float:
        batch = run.next_batch()
        with torch.inference_mode():
            before = start.encode_image(batch.pixels).tracker_fpn
            after = run.model.encode_image(batch.pixels).tracker_fpn
        return float(sum((a - b).pow(2).mean() / b.pow(2).mean() for a, b in zip(after, before)) / len(before))

    def trunk_moved(start, run) -> bool:
        old, new = start.backbone.vision_backbone.trunk.state_dict(), run.model.backbone.vision_backbone.trunk.state_dict()
        return any(not torch.equal(old[k], new[k]) for k in old)

    free_start, free, free_logs = train(0.0)
    held_start, held, logs = train(50.0)
    assert trunk_moved(free_start, free) and trunk_moved(held_start, held)
    assert all(log["tracker_anchor"] > 0 for log in logs[1:]) and not any("tracker_anchor" in log for log in free_logs)
    drift_free, drift_held = tracker_drift(free_start, free), tracker_drift(held_start, held)
    assert drift_held < 0.3 * drift_free, (drift_held, drift_free)
    assert logs[-1]["loss"] < logs[0]["loss"]

    # held where another file has it (the model the heads were trained with), not where --init has it
    anchor_file = tmp_path / "heads_model.safetensors"
    export_model(held_start, anchor_file)
    torch.manual_seed(1)
    other = Trainer(settings(tmp_path / "from", data, tracker_anchor=1.0, tracker_anchor_from=str(anchor_file)),
                    model=build_model(with_neck))
    for name, value in other.anchor.trunk.state_dict().items():
        assert torch.equal(value, held_start.backbone.vision_backbone.trunk.state_dict()[name]), name
    with pytest.raises(InvalidInputError, match="--tracker-anchor WEIGHT"):
        Trainer(settings(tmp_path / "nowt", data, tracker_anchor_from=str(anchor_file)), model=build_model(with_neck))
    with pytest.raises(InvalidInputError, match="--freeze-trunk"):
        Trainer(settings(tmp_path / "both", data, freeze_trunk=True, tracker_anchor=1.0), model=build_model(with_neck))
    with pytest.raises(InvalidInputError, match="needs a model that has one"):
        Trainer(settings(tmp_path / "none", data, tracker_anchor=1.0), model=build_model(MICRO))


def test_a_fine_tune_that_keeps_the_tracker_neck_exports_the_inits_tracker_heads(data, tmp_path):
    """With the trunk frozen or the tracker neck held, --init's click / box head is still valid:
    the export carries it unchanged (in the export's dtype), so the result is a complete model.
    A fine-tune that lets the trunk drift freely exports the detector alone."""
    from opensam3.model.tracker.config import TrackerHeadsConfig
    from opensam3.model.tracker.heads import TrackerHeads
    from opensam3.train.model_io import load_init_model

    with_neck = MICRO.replace(vision=dataclasses.replace(MICRO.vision, tracker_neck=True))
    torch.manual_seed(0)
    tracker = TrackerHeads(TrackerHeadsConfig.from_model_config(with_neck))
    combined = tmp_path / "combined.safetensors"
    export_model(build_model(with_neck), combined, tracker=[tracker])
    heads, parameters = tracker.state_dict(), {key for key, _ in tracker.named_parameters()}
    for name, flags in (("frozen", dict(freeze_trunk=True)), ("held", dict(tracker_anchor=1.0)),
                        ("free", {})):
        run = Trainer(settings(tmp_path / name, data, init=str(combined), steps=2, save_dtype="float16", **flags),
                      model=load_init_model(combined, MICRO))
        run.run()
        saved = opensam3.load(run.out / MODEL_FILE)
        if name == "free":
            assert saved.tracker is None
            continue
        assert saved.tracker is not None and saved.model.config.vision.tracker_neck
        for key, value in saved.tracker.state_dict().items():
            expected = heads[key].half().float() if key in parameters else heads[key]  # buffers keep their dtype
            assert torch.equal(value, expected), (name, key)


def test_a_fine_tune_given_the_inits_tracker_parts_reads_init_once(data, tmp_path, monkeypatch):
    """`opensam3 train --init` reads the file once (a full-size sam3.pt is 3.4 GB): load_init gives
    the image model and the tracker parts together, and a Trainer handed both does not read
    --init again, yet exports the same complete model."""
    from opensam3.model.tracker.config import TrackerHeadsConfig
    from opensam3.model.tracker.heads import TrackerHeads
    from opensam3.train import model_io

    with_neck = MICRO.replace(vision=dataclasses.replace(MICRO.vision, tracker_neck=True))
    torch.manual_seed(0)
    tracker = TrackerHeads(TrackerHeadsConfig.from_model_config(with_neck))
    combined = tmp_path / "combined.safetensors"
    export_model(build_model(with_neck), combined, tracker=[tracker])
    init = model_io.load_init(str(combined), MICRO)
    assert init.model.config.vision.tracker_neck and init.tracker is not None
    parts = model_io.tracker_parts(init)
    assert parts == [init.tracker]  # no video memory in this file

    def no_second_read(*args, **kwargs):
        raise AssertionError("--init read a second time")

    monkeypatch.setattr(model_io, "load", no_second_read)
    run = Trainer(settings(tmp_path / "once", data, init=str(combined), steps=2, tracker_anchor=1.0),
                  model=init.model, init_tracker=parts)
    run.run()
    monkeypatch.undo()
    saved = opensam3.load(run.out / MODEL_FILE)
    assert saved.tracker is not None
    for key, value in saved.tracker.state_dict().items():
        assert torch.equal(value, tracker.state_dict()[key]), key


def test_train_cli_reads_init_once_and_exports_a_complete_model(data, tmp_path, monkeypatch):
    """`opensam3 train --config embedded --init SHIPPED --freeze-trunk`: one read of --init, and the
    exported file is the shipped model's kind (detector plus click / box head and video memory)."""
    import argparse

    from opensam3.api import embedded_weights
    from opensam3.train import model_io
    from opensam3.train.cli import add_train_parser

    reads = []
    real_load = model_io.load
    monkeypatch.setattr(model_io, "load", lambda path, *a, **k: reads.append(str(path)) or real_load(path, *a, **k))
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", "embedded", "--init", str(embedded_weights()), "--freeze-trunk",
                              "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1", "--pretrain-steps",
                              "0", "--eval-every", "0", "--no-calibrate", "--no-progress", "--threads", "1"])
    assert args.func(args) == 0
    assert reads == [str(embedded_weights())]
    saved = opensam3.load(tmp_path / "run" / MODEL_FILE)
    assert saved.tracker is not None and saved.memory is not None
