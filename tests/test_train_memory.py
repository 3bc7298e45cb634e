"""The video-memory training stage: windows of clips, back-propagation through the memory bank,
save / load into the video tracker, held-out tracking evaluation."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import opensam3
from opensam3.api import CONFIG_METADATA_KEY, build_model
from opensam3.checkpoint import save_checkpoint
from opensam3.config import config_to_dict
from opensam3.model.tracker.config import TrackerMemoryConfig
from opensam3.predictor.video_concept_rules import ConceptVideoConfig
from opensam3.train.interactive import InteractiveSettings, train_interactive
from opensam3.train.memory import (ClipCache, MemorySettings, build_clip_cache, evaluate_tracking, fresh_memory,
                                   reappearance_windows, train_memory, window_frames, window_loss)
from test_train_interactive import MICRO, _one_thread  # noqa: F401 (autouse: one CPU thread here too)


@pytest.fixture(scope="module")
def interactive_checkpoint(tmp_path_factory):
    """A micro detector with tracker neck and heads (one interactive step: enough to have them)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("micro_memory")
    save_checkpoint(build_model(MICRO), root / "detector.safetensors",
                    metadata={CONFIG_METADATA_KEY: json.dumps(config_to_dict(MICRO))})
    settings = InteractiveSettings(init=str(root / "detector.safetensors"), out=str(root / "interactive"), steps=1,
                                   time_budget=None, train_scenes=2, clicks=0, progress=False)
    return train_interactive(settings)["out"]


def test_the_memory_config_follows_the_model():
    config = TrackerMemoryConfig.from_model_config(opensam3.config.EMBEDDED)
    assert (config.dim, config.mem_dim, config.attention_ffn, config.embedding_size) == (128, 32, 1024, 16)
    full = TrackerMemoryConfig.from_model_config(opensam3.config.SAM3)
    assert (full.dim, full.mem_dim, full.attention_ffn, full.embedding_size) == (256, 64, 2048, 72)  # official


@pytest.mark.parametrize("prompt", ["mask", "box", "click"])
def test_steps_lower_the_loss_and_train_through_the_memory(interactive_checkpoint, prompt):
    sam = opensam3.load(interactive_checkpoint)
    model, heads = sam.model.float(), sam.tracker.float()
    memory = fresh_memory(TrackerMemoryConfig.from_model_config(model.config))
    cache = build_clip_cache(model, 1, seed=20, num_frames=4)
    assert cache.trunk.shape == (1, 4, 48, 10, 10) and cache.masks[0].shape[:1] == (4,)
    settings = MemorySettings(init="", window=3, mask_prompt_prob=float(prompt == "mask"),
                              box_prob=float(prompt == "box"))
    trunk_before = {k: v.clone() for k, v in model.state_dict().items()}
    model.requires_grad_(False)
    params = list(memory.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3)

    def loss_on_a_fixed_window():
        return window_loss(model, heads, memory, cache, 0, 0, np.random.default_rng(3), settings)

    with torch.no_grad():
        before = float(loss_on_a_fixed_window()["loss"])
    for step in range(10):
        losses = loss_on_a_fixed_window()
        optimizer.zero_grad()
        losses["loss"].backward()
        if step == 0:
            # later frames' losses reach the memory encoder and the memory attention: the memory is used
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in memory.maskmem_backbone.parameters())
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in memory.transformer.parameters())
        optimizer.step()
    with torch.no_grad():
        after = float(loss_on_a_fixed_window()["loss"])
    assert after < 0.8 * before, (before, after)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trunk_before.items())


def test_saved_model_tracks_and_evaluates(interactive_checkpoint, tmp_path):
    settings = MemorySettings(init=str(interactive_checkpoint), out=str(tmp_path / "run"), steps=2, time_budget=None,
                              train_clips=1, clip_frames=4, window=3, log_every=1, progress=False)
    summary = train_memory(settings)
    assert summary["steps"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2] and all(np.isfinite(e["loss"]) for e in log)
    sam = opensam3.load(summary["out"])
    assert sam.memory is not None and sam.tracker is not None
    assert sam.memory.config == TrackerMemoryConfig.from_model_config(sam.model.config)
    for prompt in ("mask", "click"):
        metrics = evaluate_tracking(sam, num_clips=1, prompt=prompt)
        assert metrics["object_frames"] > 0 and 0.0 <= metrics["mean_j"] <= 1.0


def test_a_strided_window_is_the_window_of_a_sparser_clip(interactive_checkpoint):
    sam = opensam3.load(interactive_checkpoint)
    model, heads = sam.model.float(), sam.tracker.float()
    memory = fresh_memory(TrackerMemoryConfig.from_model_config(model.config))
    cache = build_clip_cache(model, 1, seed=20, num_frames=5)
    sparse = ClipCache(cache.trunk[:, 0::2], [cache.masks[0][0::2]], [cache.boxes[0][0::2]])
    settings = MemorySettings(init="", window=3, mask_prompt_prob=1.0)
    with torch.no_grad():
        strided = window_loss(model, heads, memory, cache, 0, 0, np.random.default_rng(3), settings, stride=2)
        plain = window_loss(model, heads, memory, sparse, 0, 0, np.random.default_rng(3), settings)
        consecutive = window_loss(model, heads, memory, cache, 0, 0, np.random.default_rng(3), settings)
    torch.testing.assert_close(strided["loss"], plain["loss"], atol=1e-6, rtol=0)
    assert abs(float(strided["loss"]) - float(consecutive["loss"])) > 1e-3


def test_reappearance_windows_find_objects_that_vanish_and_return():
    masks = torch.zeros(8, 3, 10, 10, dtype=torch.bool)
    masks[:, 0, :5, :5] = True          # always visible
    masks[:, 1, 5:, 5:] = True          # visible on frames 0-1 and 5-7, hidden on 2-4
    masks[2:5, 1] = False
    masks[:3, 2, :2, :2] = True         # leaves for good after frame 2 (4 px: too small to prompt)
    cache = ClipCache(torch.zeros(1, 8, 1, 1, 1), [masks], [np.zeros((8, 3, 4))])
    # the hidden object must show on the window's first frame and again before its end
    assert reappearance_windows(cache, window=6) == [(0, 0, 1), (0, 1, 1)]
    assert reappearance_windows(cache, window=5) == [(0, 1, 1)]
    assert reappearance_windows(cache, window=4) == []
    # every other frame: frames 1, 3, 5, 7 (hidden on 3, back on 5) and 0, 2, 4, 6 (back on 6)
    assert reappearance_windows(cache, window=4, max_stride=2) == [(0, 0, 2), (0, 1, 2)]
    assert window_frames(1, 4, 2) == [1, 3, 5, 7]


def test_a_further_interactive_run_keeps_the_video_memory(interactive_checkpoint, tmp_path):
    settings = MemorySettings(init=str(interactive_checkpoint), out=str(tmp_path / "memory"), steps=1,
                              time_budget=None, train_clips=1, clip_frames=4, window=3, progress=False)
    with_memory = train_memory(settings)["out"]
    again = InteractiveSettings(init=with_memory, out=str(tmp_path / "again"), steps=1, time_budget=None,
                                train_scenes=2, clicks=0, progress=False)
    summary = train_interactive(again)
    assert summary["memory_kept"]
    before, after = opensam3.load(with_memory).memory.state_dict(), opensam3.load(summary["out"]).memory.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_frame_loss_weights_objects():
    from types import SimpleNamespace

    from opensam3.train.memory import _frame_loss

    gen = torch.Generator().manual_seed(0)
    out = SimpleNamespace(masks=torch.randn(3, 4, 8, 8, generator=gen), iou_scores=torch.rand(3, 4, generator=gen),
                          object_score_logits=torch.randn(3, 1, generator=gen))
    target = torch.rand(3, 16, 16, generator=gen) > 0.5
    visible = torch.tensor([True, True, False])
    settings = MemorySettings(init="")
    plain = _frame_loss(out, target, visible, True, settings)
    same = _frame_loss(out, target, visible, True, settings, torch.ones(3))
    assert torch.allclose(plain[0], same[0])
    # a zero weight removes an object from every term: the same as leaving it out
    only_second = _frame_loss(out, target, visible, True, settings, torch.tensor([0.0, 1.0, 0.0]))
    pick = SimpleNamespace(masks=out.masks[1:2], iou_scores=out.iou_scores[1:2],
                           object_score_logits=out.object_score_logits[1:2])
    alone = _frame_loss(pick, target[1:2], visible[1:2], True, settings)
    assert torch.allclose(only_second[0], alone[0])
    heavier = _frame_loss(out, target, visible, True, settings, torch.tensor([1.0, 1.0, 5.0]))
    assert not torch.allclose(heavier[0], plain[0])


def test_needs_tracker_heads(tmp_path):
    path = tmp_path / "detector.safetensors"
    save_checkpoint(build_model(MICRO), path, metadata={CONFIG_METADATA_KEY: json.dumps(config_to_dict(MICRO))})
    with pytest.raises(opensam3.errors.CheckpointError, match="train-interactive"):
        train_memory(MemorySettings(init=str(path), out=str(tmp_path / "run"), progress=False))


def test_video_dataset_predictions_evaluate(interactive_checkpoint, tmp_path):
    # a model with a (briefly trained) memory answers every video-phrase pair of a synthetic VEval
    # set through the session protocol, and the evaluator scores the masklets
    from opensam3.eval import evaluate_videos
    from opensam3.eval.predict_video import predict_video_dataset
    from opensam3.synth import write_video_dataset

    settings = MemorySettings(init=str(interactive_checkpoint), out=str(tmp_path / "run"), steps=1, time_budget=None,
                              train_clips=1, clip_frames=4, window=3, progress=False)
    sam = opensam3.load(train_memory(settings)["out"])
    summary = write_video_dataset(tmp_path / "data", num_videos=1, seed=21, size=140, num_frames=4)
    # an untrained detector scores low: keep every detection so that masklets exist
    keep_all = dataclasses.replace(ConceptVideoConfig.without_heuristics(), score_threshold_detection=0.0,
                                   new_det_thresh=0.0)
    predictions = predict_video_dataset(sam, summary.gt_path, summary.media_dir, config=keep_all)
    assert predictions, "a zero threshold must keep some detections"
    for masklet in predictions:
        assert len(masklet["segmentations"]) == 4 and 0.0 <= masklet["score"] <= 1.0
        assert any(s is not None for s in masklet["segmentations"])
    results = evaluate_videos(summary.gt_path, predictions)["dataset_results"]
    for key in ("video_mask_demo_cgf1_micro_50_95", "video_mask_all_phrase_HOTA"):
        assert np.isfinite(results[key]), key
