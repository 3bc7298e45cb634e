"""Denoising queries (opensam3/train/denoise.py): built from the scene records, invisible to the
ordinary queries, and trained with known targets."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from opensam3.api import build_model
from opensam3.ops.boxes import cxcywh_to_xyxy
from opensam3.synth import write_image_dataset
from opensam3.train.auxiliary import AttributeMaps
from opensam3.train.data import SacoDataset, grouped_batch_indices
from opensam3.train.denoise import jitter_boxes, make_denoise_queries
from opensam3.train.losses import paired_giou
from opensam3.train.trainer import Trainer, TrainSettings

from test_train_smoke import MICRO


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_dn")
    write_image_dataset(root / "train", num_images=4, seed=3, size=128)
    return root


def test_queries_cover_every_recorded_object_and_know_the_instances(synth):
    path = synth / "train" / "synth_images.json"
    dataset = SacoDataset(path, MICRO)
    maps = AttributeMaps.from_annotation(path, dataset.mask_size)
    batch = dataset.batch(grouped_batch_indices(dataset.pairs_by_image(), 6, 3, 0, seed=0), random.Random(0))
    queries = make_denoise_queries(batch, maps, torch.Generator().manual_seed(0))
    assert queries.start_boxes.shape == (len(batch), queries.count, 4)
    for pair, row in enumerate(batch.image_index):
        objects = maps.boxes_by_id(batch.file_names[row])
        valid = queries.valid[pair]
        assert int(valid.sum()) == len(objects)
        # exactly the phrase's instances are positive, and each points at its own target
        assert int(queries.positive[pair].sum()) == len(batch.target_ids[pair])
        for slot in torch.nonzero(queries.positive[pair]).flatten().tolist():
            index = int(queries.instance[pair, slot])
            torch.testing.assert_close(queries.target_boxes[pair, slot], batch.target_boxes[pair][index], atol=2e-3, rtol=0)
        # jittered starts stay near their objects
        iou, _ = paired_giou(cxcywh_to_xyxy(queries.start_boxes[pair][valid]), cxcywh_to_xyxy(queries.target_boxes[pair][valid]))
        assert bool((iou > 0.2).all())
    again = make_denoise_queries(batch, maps, torch.Generator().manual_seed(0))
    assert torch.equal(again.start_boxes, queries.start_boxes)  # a pure function of the seed
    moved = jitter_boxes(torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(200, 1), torch.Generator().manual_seed(1))
    assert float((moved[:, 0] - 0.5).abs().max()) <= 0.04 + 1e-6 and float(moved[:, 2].min()) >= 0.12 - 1e-6


def test_ordinary_queries_never_see_the_denoising_ones():
    torch.manual_seed(0)
    model = build_model(MICRO).eval()
    decoder = model.transformer.decoder
    tokens = MICRO.image_size // MICRO.vision.patch_size
    memory = torch.randn(2, tokens * tokens, MICRO.detector.d_model)
    pos = torch.randn_like(memory)
    prompt = torch.randn(2, 5, MICRO.detector.d_model)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    plain = decoder(memory, pos, prompt, padding)
    extra = decoder(memory, pos, prompt, padding, extra_boxes=torch.rand(2, 3, 4) * 0.5 + 0.25)
    queries = MICRO.detector.num_queries
    assert extra.hidden.shape[2] == queries + 3
    torch.testing.assert_close(extra.hidden[:, :, :queries], plain.hidden)
    torch.testing.assert_close(extra.pred_boxes[:, :, :queries], plain.pred_boxes)
    torch.testing.assert_close(extra.presence_logits, plain.presence_logits)
    assert not torch.allclose(extra.hidden[:, :, queries:], extra.hidden[:, :, :3])


def test_trainer_denoising_losses_fall_and_resume_exactly(synth, tmp_path):
    def settings(out, **kw):
        base = dict(config="micro", data=str(synth), out=str(out), steps=4, batch_size=6, lr=2e-3, warmup=1, clip=1.0,
                    pairs_per_image=3, attribute_weight=1.0, log_every=1, save_every=2, eval_every=0, progress=False,
                    denoise=True)
        return TrainSettings(**{**base, **kw})

    torch.manual_seed(0)
    straight = Trainer(settings(tmp_path / "a"), model=build_model(MICRO))
    straight.run()
    assert all(h["dn_giou"] >= 0 and "dn_ce" in h and "dn_attributes" in h for h in straight.history)
    torch.manual_seed(0)
    first = Trainer(settings(tmp_path / "b"), model=build_model(MICRO))
    first.settings.steps = 2  # stopped half-way (same schedule), then resumed
    first.run()
    resumed = Trainer(settings(tmp_path / "b"), model=build_model(MICRO))
    resumed.run()
    for a, b in zip(resumed.history, straight.history[2:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    # many steps on four images: the denoising queries learn their boxes and their phrase scores
    torch.manual_seed(0)
    long = Trainer(settings(tmp_path / "c", steps=40, lr=5e-3, save_every=1000), model=build_model(MICRO))
    long.run()
    for name, drop in (("dn_giou", 0.8), ("dn_ce", 0.9)):
        early, late = [sum(h[name] for h in part) / 5 for part in (long.history[:5], long.history[-5:])]
        assert late < drop * early, name


def test_box_focus_init_makes_queries_look_inside_their_boxes():
    from opensam3.train.init import init_box_attention_focus

    torch.manual_seed(0)
    decoder = init_box_attention_focus(build_model(MICRO)).transformer.decoder
    side = 16
    box = torch.tensor([[[0.5, 0.5, 0.25, 0.25]]])  # covers columns/rows 6..9 of 16
    with torch.no_grad():
        bias = decoder.box_attention_bias(box, (side, side))[0, :, 0].reshape(-1, side, side)  # (heads, H, W)
    inside = bias[:, 6:10, 6:10]
    assert float(inside.max() - inside.min()) < 2.0  # about flat inside (the random units stay)
    # one patch outside costs about 4 on every head, and further out costs more
    assert bool((bias[:, 8, 5] < inside.min(-1).values.min(-1).values - 2.5).all())
    assert bool((bias[:, 8, 0] < bias[:, 8, 5] - 3).all()) and bool((bias[:, 0, 8] < bias[:, 5, 8] - 3).all())
    # PyTorch's default start is nearly flat: every query sees the whole image
    with torch.no_grad():
        plain = build_model(MICRO).transformer.decoder.box_attention_bias(box, (side, side))[0, :, 0]
    assert float(plain.max() - plain.min()) < 2.0
