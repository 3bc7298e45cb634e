"""Image-grouped batches and the auxiliary dense losses (the embedded recipe's training aids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from opensam3.api import build_model
from opensam3.data import rle
from opensam3.errors import InvalidInputError
from opensam3.synth import write_image_dataset
from opensam3.train.auxiliary import (AttributeHeads, AttributeMaps, ObjectPhraseAlignment, SceneObjects,
                                      binary_auc, phrase_object_targets)
from opensam3.train.data import SacoDataset, grouped_batch_indices
from opensam3.train.trainer import LOG_FILE, MODEL_FILE, STATE_FILE, Trainer, TrainSettings

from test_train_smoke import MICRO


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_image_dataset(root / "train", num_images=4, seed=3, size=128)
    return root


def _settings(out: Path, data: Path, **kw) -> TrainSettings:
    base = dict(config="micro", data=str(data), out=str(out), steps=6, batch_size=6, lr=2e-3, warmup=1, clip=1.0,
                pairs_per_image=3, attribute_weight=1.0, alignment_weight=1.0, log_every=1, save_every=1000, eval_every=0, progress=False)
    return TrainSettings(**{**base, **kw})


def test_grouped_batches_ask_each_image_several_phrases(synth):
    dataset = SacoDataset(synth / "train" / "synth_images.json", MICRO)
    groups = dataset.pairs_by_image()
    image_of = {i: g for g, group in enumerate(groups) for i in group}
    for step in range(5):
        indices = grouped_batch_indices(groups, 6, 3, step, seed=0)
        assert indices == grouped_batch_indices(groups, 6, 3, step, seed=0)  # a pure function of the step
        assert len(indices) == 6 and len(set(indices)) == 6
        images = [image_of[i] for i in indices]
        assert all(images.count(g) <= 3 for g in set(images)) and len(set(images)) >= 2
        batch = dataset.batch(indices, __import__("random").Random(step))
        assert batch.pixels.shape[0] == len(set(images))  # each image encoded once
        assert [batch.file_names[r] for r in batch.image_index] == [dataset.pairs[i]["file_name"] for i in indices]


def test_attribute_maps_follow_the_scene_records(synth):
    path = synth / "train" / "synth_images.json"
    maps = AttributeMaps.from_annotation(path, mask_size=32)
    scenes = json.loads(path.read_text())["scenes"]
    objects = [o for s in scenes for o in s["objects"]]
    assert maps.vocabulary["shape"] == sorted({o["shape"] for o in objects})
    scene = scenes[0]
    target = maps(scene["file_name"])
    for key, soft in target.items():
        assert soft.shape == (len(maps.vocabulary[key]) + 1, 32, 32)
        torch.testing.assert_close(soft.sum(0), torch.ones(32, 32), atol=2e-3, rtol=0)  # a distribution per pixel (fp16)
    # the largest object's class dominates the pixels at its mask's centre
    obj = max(scene["objects"], key=lambda o: o["visible_area"])
    mask = torch.from_numpy(rle.decode(obj["segmentation"]).astype("float32"))
    small = torch.nn.functional.interpolate(mask[None, None], size=(32, 32), mode="area")[0, 0]
    y, x = divmod(int(small.argmax()), 32)
    assert int(target["color"][:, y, x].argmax()) == maps.vocabulary["color"].index(obj["color"]) + 1
    # a dataset without scene records gets no attribute loss
    plain = json.loads(path.read_text())
    plain.pop("scenes")
    (synth / "plain.json").write_text(json.dumps(plain))
    assert AttributeMaps.from_annotation(synth / "plain.json", 32) is None


def kept_objects(scene: dict, size: int) -> list[dict]:
    """The scene's objects covering at least half a cell of a size x size level."""
    return [o for o in scene["objects"] if rle.decode(o["segmentation"]).sum() * (size / scene["width"]) ** 2 >= 0.5]


def test_object_heads_pool_each_object_with_its_own_labels(synth):
    path = synth / "train" / "synth_images.json"
    maps = AttributeMaps.from_annotation(path, mask_size=32)
    scene = json.loads(path.read_text())["scenes"][1]
    record = maps.objects(scene["file_name"], 16)
    masks, labels = record.masks, record.labels
    kept = kept_objects(scene, 16)
    assert record.ids == [o["object_id"] for o in kept]
    assert masks.shape == (len(kept), 16, 16) and labels.shape == (len(kept), 4)
    for (mask, label), obj in zip(zip(masks, labels), kept):
        assert [maps.vocabulary[k][int(i)] for k, i in zip(maps.vocabulary, label)] == [str(obj[k]) for k in maps.vocabulary]
        area = obj["visible_area"] * (16 / scene["width"]) ** 2
        assert abs(float(mask.float().sum()) - area) < 0.02 * area + 0.05  # area-resized visible mask
    assert maps.objects("missing.png", 16) is None
    # a level whose pixels carry the object's shape index lets the pooled heads fit the shapes
    heads = AttributeHeads(8, maps.num_classes())
    level = torch.zeros(1, 8, 16, 16)
    for mask, label in zip(masks.float(), labels):
        level[0, int(label[0]) % 8] += mask
    level.requires_grad_(True)
    first = heads.object_loss(level, [record])
    first.backward()
    assert level.grad.abs().sum() > 0  # the loss reaches the image features
    optimiser = torch.optim.Adam(heads.pooled.parameters(), 1e-2)
    for _ in range(60):
        optimiser.zero_grad()
        loss = heads.object_loss(level.detach(), [record])
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.5 * float(first.detach())
    assert float(heads.object_loss(level.detach(), [SceneObjects(masks[:0], labels[:0], [])])) == 0.0  # no objects

def test_auxiliary_losses_train_resume_and_stay_out_of_the_export(synth, tmp_path):
    torch.manual_seed(0)
    run = Trainer(_settings(tmp_path, synth), model=build_model(MICRO))
    # the data records its objects: phrases are aligned per object, not per pixel
    assert run.attribute_heads is not None and run.object_alignment is not None and run.alignment is None
    run.settings.steps = 3
    run.run()
    assert all(h["attributes"] > 0 and h["alignment"] >= 0 and h["query_attributes"] >= 0 for h in run.history)
    # matched queries classify their objects; objects big enough for the micro level are aligned
    assert any(h["query_attributes"] > 0 for h in run.history) and any(h["alignment"] > 0 for h in run.history)
    with safe_open(str(tmp_path / MODEL_FILE), "pt") as handle:
        exported = list(handle.keys())
    assert len(exported) == len(build_model(MICRO).state_dict())  # the heads are not exported
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert all(state[k] is not None for k in ("attribute_heads", "object_alignment", "query_heads"))
    # resume: the heads come back, and the next steps repeat an uninterrupted run's losses
    resumed = Trainer(_settings(tmp_path, synth), model=build_model(MICRO))
    for name in ("attribute_heads", "object_alignment", "query_heads"):
        head, saved = getattr(resumed, name), getattr(run, name)
        for key, value in saved.state_dict().items():
            torch.testing.assert_close(head.state_dict()[key], value)
    resumed.run()
    torch.manual_seed(0)
    straight = Trainer(_settings(tmp_path / "straight", synth), model=build_model(MICRO))
    straight.run()
    for a, b in zip(resumed.history, straight.history[3:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    # many steps on four images: both auxiliary losses fall
    torch.manual_seed(0)
    long = Trainer(_settings(tmp_path / "long", synth, steps=40, lr=5e-3), model=build_model(MICRO))
    long.run()
    for name, drop in (("attributes", 0.8), ("query_attributes", 0.95)):
        first, last = [sum(h[name] for h in part) / 5 for part in (long.history[:5], long.history[-5:])]
        assert last < drop * first, name


def test_object_alignment_learns_which_objects_a_phrase_names(synth):
    dataset = SacoDataset(synth / "train" / "synth_images.json", MICRO)
    scene = json.loads((synth / "train" / "synth_images.json").read_text())["scenes"][0]
    asked = dataset.phrases_of(scene["file_name"])
    pairs = [p for p in dataset.pairs if p["file_name"] == scene["file_name"]]
    assert [text for text, _ in asked] == [p["text_input"] for p in pairs]
    for (text, ids), pair in zip(asked, pairs):  # the instances' object ids, none for a negative
        assert ids == {a["object_id"] for a in dataset.by_pair.get(pair["id"], [])}
    assert dataset.phrases_of("missing.png") == []
    ids = [o["object_id"] for o in scene["objects"]]
    targets = phrase_object_targets(asked, ids)
    assert targets.shape == (len(asked), len(ids)) and targets.any() and not targets.all()
    # objects whose features carry their id and phrases carrying their instances' ids: the
    # head learns the pairing (AUC 1) and its loss reaches both sides
    torch.manual_seed(0)
    objects = torch.eye(16)[: len(ids)].requires_grad_(True)
    phrases = (targets.float() @ torch.eye(16)[: len(ids)]).requires_grad_(True)
    head = ObjectPhraseAlignment(16)
    first = head.loss([objects], [phrases], [targets])
    first.backward()
    assert objects.grad.abs().sum() > 0 and phrases.grad.abs().sum() > 0
    optimiser = torch.optim.Adam(head.parameters(), 1e-2)
    for _ in range(100):
        optimiser.zero_grad()
        loss = head.loss([objects.detach()], [phrases.detach()], [targets])
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.5 * float(first.detach())
    assert binary_auc(head.logits(objects, phrases), targets) == 1.0
    assert float(head.loss([objects[:0]], [phrases], [targets[:, :0]]).detach()) == 0.0  # no objects, no loss
    assert binary_auc(torch.tensor([0.9, 0.1, 0.5]), torch.tensor([True, False, False])) == 1.0
    assert binary_auc(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == 0.5


def test_probe_reports_presence_auc_and_semantic_binding(synth, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from probe_detector import auc, probe

    assert auc(np.array([True, True, False]), np.array([0.9, 0.8, 0.1])) == 1.0
    assert auc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5
    torch.manual_seed(0)
    run = Trainer(_settings(tmp_path, synth, steps=1), model=build_model(MICRO))
    run.run()
    report = probe(str(tmp_path / MODEL_FILE), str(synth / "train" / "synth_images.json"), pairs=20)
    assert report["pairs"] == 20
    for key in ("presence_auc", "best_iou", "top_iou", "semantic_phrase", "semantic_all"):
        assert 0.0 <= report[key] <= 1.0, key
    # an untrained decoder's queries differ (no collapse yet)
    assert report["query_spread_within_pair"] > 0.05 and report["query_spread_across_pairs"] > 0
    assert report["best_iou"] >= report["top_iou"]  # the best query is at least the top-scored one


def test_encoder_pretraining_leaves_the_detector_untouched(synth, tmp_path):
    torch.manual_seed(0)
    held_out = synth / "train" / "synth_images.json"
    run = Trainer(_settings(tmp_path, synth, steps=6, pretrain_steps=3, val=str(held_out), eval_every=2),
                  model=build_model(MICRO))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.settings.steps = 3
    run.run()
    after = run.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("backbone.vision_backbone.trunk") for k in changed)
    assert any(k.startswith("backbone.language_backbone") for k in changed)
    assert not any(k.startswith(("transformer.", "segmentation_head.", "dot_prod_scoring.")) for k in changed)
    assert all("presence" not in h and h["alignment"] > 0 for h in run.history)
    # the periodic evaluation of the pre-training stage is the per-object attribute accuracy
    logged = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    accuracy = [r for r in logged if "val_shape_acc" in r]
    assert [r["step"] for r in accuracy] == [2]
    assert all(0.0 <= accuracy[0][f"val_{k}_acc"] <= 1.0 for k in ("shape", "color", "size", "pattern"))
    assert 0.0 <= accuracy[0]["val_align_auc"] <= 1.0  # held-out object-phrase alignment
    assert set(run.evaluate_attributes()) == set(accuracy[0]) - {"step"}
    # the detector stage starts with its own warm-up
    lrs = [run.scheduler.lr_lambdas[0](step) for step in range(6)]
    assert lrs[3] == lrs[0] and lrs[2] < lrs[3]
    with pytest.raises(InvalidInputError, match="alignment-weight"):
        Trainer(_settings(tmp_path / "x", synth, pretrain_steps=2, attribute_weight=0.0, alignment_weight=0.0),
                model=build_model(MICRO))
