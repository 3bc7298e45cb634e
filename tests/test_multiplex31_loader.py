"""Loading SAM 3.1 checkpoints: the three-pyramid backbone (``sam3.1`` config), the official
``detector.*`` / ``tracker.model.*`` layout, and ``opensam3.load_multiplex_tracker``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import opensam3
from opensam3.config import SAM3_1, TINY
from opensam3.errors import CheckpointError
from opensam3.model.sam3 import Sam3ImageModel
from opensam3.model.tracker.multiplex31 import InteractiveHead, MultiplexTracker, MultiplexTrackerConfig
from opensam3.predictor.video_multiplex31 import Multiplex31VideoTracker
from opensam3.seeded import seed_module
from test_video_multiplex31 import CONFIG, seeded_heads

TINY_31 = TINY.replace(name="tiny-3.1", vision=dataclasses.replace(
    TINY.vision, scale_factors=(4.0, 2.0, 1.0), unused_levels=0, tracker_neck=False, multiplex_necks=True))
TRACKER = CONFIG  # the tracker test's tiny multiplex sizes (336 px, width 256, 4 slots)


def official_layout(model, interactive, tracker) -> dict[str, torch.Tensor]:
    state = {f"detector.{k}": v for k, v in model.state_dict().items()}
    for part in (interactive, tracker):
        state.update({f"tracker.model.{k}": v for k, v in part.state_dict().items()})
    return state


def test_full_size_layout_has_the_released_tensor_count():
    with torch.device("meta"):
        model, tracker_config = Sam3ImageModel(SAM3_1), MultiplexTrackerConfig()
        state = official_layout(model, InteractiveHead(tracker_config), MultiplexTracker(tracker_config))
    neck = [k for k in state if k.startswith("detector.backbone.vision_backbone.") and "convs" in k]
    assert {k.split(".")[3] for k in neck} == {"convs", "interactive_convs", "propagation_convs"}
    assert not any(".convs.3." in k for k in neck)  # no 0.5x level
    shape = tuple(state["detector.backbone.vision_backbone.interactive_convs.0.dconv_2x2_0.weight"].shape)
    assert shape == (1024, 512, 2, 2)
    # + the ViT's 32 recomputed RoPE tables (one per block) that official files also store:
    # 1623 tensors, the count stated for sam3.1_multiplex.pt (docs/sam31_multiplex_notes.md)
    assert len(state) + SAM3_1.vision.depth == 1623
    assert SAM3_1.vision.used_levels == 3 and opensam3.get_config("sam3.1") == SAM3_1


def seeded_sam31_parts() -> tuple:
    """(image model, interactive head, multiplex tracker) of a tiny SAM 3.1, seeded weights."""
    torch.manual_seed(0)
    model = Sam3ImageModel(TINY_31).eval()
    seed_module(model, prefix="detector.")
    return (model, *seeded_heads(TRACKER))


@pytest.fixture(scope="module")
def parts():
    return seeded_sam31_parts()


@pytest.fixture(scope="module")
def checkpoint(parts, tmp_path_factory):
    path = tmp_path_factory.mktemp("sam31") / "sam3.1_multiplex.pt"
    torch.save({"model": official_layout(*parts)}, path)
    return path


def run(tracker: Multiplex31VideoTracker, frames: np.ndarray) -> list[torch.Tensor]:
    state = tracker.init_state(frames)
    first = tracker.add_new_points_or_box(state, 0, 1, box=[20, 10, 70, 60])
    tracker.add_new_points_or_box(state, 0, 2, points=[[100, 70]], labels=[1])
    return [first.masks] + [out.masks for out in tracker.propagate_in_video(state)]


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (3, 96, 128, 3)).astype(np.uint8)


@torch.inference_mode()
def test_loaded_tracker_equals_the_modules_it_was_saved_from(parts, checkpoint, frames):
    loaded = opensam3.load_multiplex_tracker(checkpoint, config=TINY_31, tracker_config=TRACKER)
    for ours, theirs in zip(loaded.image_model.state_dict().values(), parts[0].state_dict().values()):
        assert torch.equal(ours, theirs)
    assert all(torch.equal(v, parts[2].state_dict()[k]) for k, v in loaded.tracker.state_dict().items())
    assert all(torch.equal(v, parts[1].state_dict()[k]) for k, v in loaded.interactive.state_dict().items())
    direct = Multiplex31VideoTracker(*parts)
    for a, b in zip(run(loaded, frames), run(direct, frames)):
        assert torch.equal(a, b)


def test_a_converted_file_loads_the_same(parts, checkpoint, tmp_path):
    from opensam3.checkpoint import convert_checkpoint

    convert_checkpoint(checkpoint, tmp_path / "sam3.1.safetensors")
    loaded = opensam3.load_multiplex_tracker(tmp_path / "sam3.1.safetensors", config=TINY_31, tracker_config=TRACKER)
    assert all(torch.equal(v, parts[2].state_dict()[k]) for k, v in loaded.tracker.state_dict().items())
    assert all(torch.equal(v, parts[1].state_dict()[k]) for k, v in loaded.interactive.state_dict().items())


@torch.inference_mode()
def test_each_head_reads_its_own_neck(parts, frames):
    model, interactive, tracker = parts
    before = run(Multiplex31VideoTracker(model, interactive, tracker), frames)
    altered = Sam3ImageModel(TINY_31).eval()
    altered.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in altered.backbone.vision_backbone.propagation_convs.parameters():
            p.mul_(-1.0)
    after = run(Multiplex31VideoTracker(altered, interactive, tracker), frames)
    assert torch.equal(before[0], after[0])  # the prompted frame: interactive neck only
    assert any(not torch.equal(a, b) for a, b in zip(before[1:], after[1:]))  # tracked frames: propagation neck


def test_clear_errors_for_the_wrong_checkpoint(parts, checkpoint, tmp_path):
    model, interactive, tracker = parts
    sam3_style = {f"detector.{k}": v for k, v in model.state_dict().items()}
    sam3_style.update({f"tracker.{k}": v for k, v in tracker.state_dict().items()})
    torch.save({"model": sam3_style}, tmp_path / "sam3.pt")
    with pytest.raises(CheckpointError, match="load_video_tracker"):
        opensam3.load_multiplex_tracker(tmp_path / "sam3.pt", config=TINY_31, tracker_config=TRACKER)
    broken = official_layout(*parts)
    del broken["tracker.model.output_valid_embed"]
    torch.save({"model": broken}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="output_valid_embed"):
        opensam3.load_multiplex_tracker(tmp_path / "broken.pt", config=TINY_31, tracker_config=TRACKER)
    with pytest.raises(CheckpointError, match="multiplex_necks"):
        opensam3.load_multiplex_tracker(checkpoint, config=TINY, tracker_config=TRACKER)
    with pytest.raises(CheckpointError, match="load_multiplex_tracker"):
        opensam3.load_video_tracker(checkpoint, config=TINY_31)
    # the detector of a SAM 3.1 file serves concept prompts through opensam3.load
    sam = opensam3.load(checkpoint, config=TINY_31)
    assert sam.model.config.vision.multiplex_necks
    found = sam.segment(np.zeros((64, 80, 3), np.uint8), text="a cat")
    assert tuple(found.masks.shape[1:]) == (64, 80) and len(found.scores) == found.masks.shape[0]


@torch.inference_mode()
def test_clicks_on_an_image_use_the_interactive_head_and_neck(parts, checkpoint, frames):
    # opensam3.load on a SAM 3.1 file: its interactive head (SAM 3's click / box head under other
    # names) on its interactive pyramid, the same decoding as the multiplex tracker's prompts
    sam = opensam3.load(checkpoint, config=TINY_31)
    assert sam.tracker is not None and sam.memory is None
    state = sam.set_image(frames[0])
    result = sam.predict(state, points=[[100, 70]], point_labels=[1], multimask_output=True)
    best = int(result.iou_scores.argmax())
    tracker = Multiplex31VideoTracker(*parts)
    video_state = tracker.init_state(frames)
    tracker.add_new_points_or_box(video_state, 0, 1, points=[[100, 70]], labels=[1])
    expected = video_state.groups[0].prompts[1].low_res[0, 0]
    torch.testing.assert_close(result.low_res_logits[best], expected, atol=1e-4, rtol=0)
    with pytest.raises(opensam3.InvalidInputError, match="load_multiplex_tracker"):
        sam.video_tracker()


def test_track_command_and_builders_use_the_multiplex_tracker(tmp_path, frames):
    """``opensam3 track`` on a SAM 3.1 file: each group of clicks (a new object, an object added
    on a later frame, a correction) goes to the multiplex tracker; --text is a clear error."""
    import json

    from safetensors.torch import save_file

    from opensam3.api import CONFIG_METADATA_KEY
    from opensam3.config import config_to_dict
    from opensam3.data.rle import decode
    from opensam3.data.video_io import VideoWriter
    from opensam3.predictor.track_cli import run_track
    from test_video_session import _track_args

    # the release tracker sizes at this image model's resolution and width (what the loader assumes)
    release = dataclasses.replace(MultiplexTrackerConfig(), image_size=TINY_31.image_size,
                                  backbone_stride=TINY_31.vision.patch_size, dim=TINY_31.vision.neck_dim)
    torch.manual_seed(0)
    model = Sam3ImageModel(TINY_31).eval()
    seed_module(model, prefix="detector.")
    path = tmp_path / "sam3.1_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in official_layout(model, *seeded_heads(release)).items()}, str(path),
              metadata={CONFIG_METADATA_KEY: json.dumps(config_to_dict(TINY_31))})
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=5) as writer:
        for frame in frames:
            writer.write(frame)
    out = tmp_path / "out"
    args = _track_args(str(clip), "--point", "100,70", "--point", "30,20", "--point", "90,60:neg",
                       "--frame", "0", "--frame", "1", "--frame", "2", "--obj-id", "1", "--obj-id", "2",
                       "--obj-id", "1", "--checkpoint", str(path), "--out", str(out), "--quiet", "--no-video")
    assert run_track(args) == 0
    records = [json.loads((out / "frames" / f"{t:05d}.json").read_text()) for t in range(3)]
    seen = {obj["obj_id"] for record in records for obj in record["objects"]}
    assert seen == {1, 2}
    for record in records:
        for obj in record["objects"]:
            assert decode(obj["segmentation"]).sum() == obj["area"] > 0 and 0 <= obj["score"] <= 1
    # --text: the concept pipeline on the multiplex tracker, through the session protocol, clicks included
    text_out = tmp_path / "text"
    assert run_track(_track_args(str(clip), "--text", "a cat", "--point", "100,70", "--frame", "1", "--obj-id", "50",
                                 "--checkpoint", str(path), "--out", str(text_out), "--quiet", "--no-video")) == 0
    records = [json.loads(p.read_text()) for p in sorted((text_out / "frames").glob("*.json"))]
    assert len(records) == len(frames)
    assert 50 in {obj["obj_id"] for record in records for obj in record["objects"]}  # the clicked object
    # the official builders hand a SAM 3.1 file to the concept pipeline on its multiplex tracker
    from opensam3.predictor.video_concept_multiplex31 import ConceptMultiplex31Predictor
    for build in (opensam3.build_sam3_video_predictor, opensam3.build_sam3_multiplex_video_predictor):
        assert isinstance(build(path).model, ConceptMultiplex31Predictor)
