"""Re-identification of lost masklets in concept video (predictor/video_concept_reid.py): the
motion rules on hand-made masks, and the embedded model keeping an object's id through a full
occlusion where the official rules give it a new one."""

import numpy as np
import pytest
import torch

from opensam3.predictor.video_concept_reid import match_lost, observe, predict, record_motion

SIZE = 64


def disc(cx: float, cy: float, radius: float = 3.0) -> torch.Tensor:
    """(SIZE, SIZE) logits: +1 inside a disc centred at (cx, cy) pixels, -1 outside."""
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    return torch.where((xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2, 1.0, -1.0)


def test_observe_gives_centres_and_areas_in_frame_units():
    masks = torch.stack([disc(16, 48), torch.full((SIZE, SIZE), -1.0)])
    seen = observe(masks)
    assert seen[1] is None
    assert np.allclose(seen[0].center, [16 / SIZE, 48 / SIZE], atol=1e-6)
    assert seen[0].area == pytest.approx((masks[0] > 0).sum().item() / SIZE ** 2)


def test_constant_velocity_prediction_ignores_partly_hidden_views():
    motion = {}
    for frame in range(4):  # 2 pixels a frame to the right
        record_motion(motion, frame, [7], disc(10 + 2 * frame, 32)[None])
    record_motion(motion, 4, [7], disc(19, 32, radius=1.0)[None])  # half hidden: its centre is off
    center, size, speed, gap = predict(motion[7], frame_idx=10)
    assert gap == 7  # from the last fully visible view, frame 3
    assert np.allclose(center * SIZE, [10 + 2 * 10, 32], atol=0.01)
    assert speed * SIZE == pytest.approx(2.0)
    assert size == pytest.approx(np.sqrt(max(o.area for o in motion[7])))


def test_views_no_detection_confirms_count_only_where_they_agree_with_the_motion():
    motion = {}
    for frame in range(3):
        record_motion(motion, frame, [4], disc(10 + 2 * frame, 32)[None])
    record_motion(motion, 3, [4], disc(40, 10)[None], confirmed=[False])  # the tracker drifted elsewhere
    record_motion(motion, 3, [4], disc(16, 32, radius=6)[None], confirmed=[False])  # grew onto a neighbour
    assert [o.frame for o in motion[4]] == [0, 1, 2]
    record_motion(motion, 3, [4], disc(16, 32)[None], confirmed=[False])  # where the motion says
    record_motion(motion, 4, [4], disc(40, 10)[None], confirmed=[True])  # a detection confirms even a jump
    assert [o.frame for o in motion[4]] == [0, 1, 2, 3, 4]
    record_motion(motion, 5, [9], disc(5, 5)[None], confirmed=[False])  # no history: nothing to agree with
    assert 9 not in motion


def test_look_alikes_are_told_apart_by_motion():
    """Two lost masklets crossing paths: each detection goes to the one whose motion reaches it."""
    motion = {}
    for frame in range(3):
        record_motion(motion, frame, [1, 2], torch.stack([disc(10 + 3 * frame, 20), disc(50 - 3 * frame, 44)]))
    # frame 8: masklet 1 predicted at x=34, y=20; masklet 2 at x=26, y=44. Detections listed crosswise.
    detections = torch.stack([disc(26, 44), disc(34, 20), disc(60, 60)])
    found = match_lost(motion, 8, [1, 2], detections, candidates=[0, 1, 2], gate=2.0, max_gap=30)
    assert found == {1: 1, 2: 0}
    # a detection far from every prediction re-activates nothing; nor does one after max_gap
    assert match_lost(motion, 8, [1, 2], detections, candidates=[2], gate=2.0, max_gap=30) == {}
    assert match_lost(motion, 8, [1, 2], detections, candidates=[0, 1], gate=2.0, max_gap=4) == {}
    # a masklet without history (never confirmed by a detection) cannot be re-found
    assert match_lost(motion, 8, [5], detections, candidates=[0, 1], gate=2.0, max_gap=30) == {}


PASSER_CLIP = 15  # of the held-out clips (seed 21) where the official rules give the passer a new id


def test_embedded_model_keeps_the_passers_id_through_a_full_occlusion():
    from opensam3 import load
    from opensam3.eval.occlusion import before_and_after, passer_ids
    from opensam3.predictor.video_concept_rules import ConceptVideoConfig
    from opensam3.synth.clip import clip_stream
    from opensam3.train.memory import EVAL_SEED

    sam = load(None)
    assert sam.model.config.video_reidentify  # the embedded model's default
    stream = clip_stream(EVAL_SEED, size=sam.model.config.image_size)
    for _ in range(PASSER_CLIP):
        next(stream)
    clip = next(stream)
    passer = next(i for i, role in clip.roles.items() if role == "passer")
    assert (~clip.present()[:, passer]).sum() >= 3  # a real, full occlusion

    before, after = before_and_after(clip, passer, passer_ids(sam.video_predictor(), clip, passer))
    found = [obj_id for obj_id in after if obj_id is not None]
    assert before is not None and found and all(obj_id == before for obj_id in found)
    official = sam.video_predictor(config=ConceptVideoConfig())
    before, after = before_and_after(clip, passer, passer_ids(official, clip, passer))
    found = [obj_id for obj_id in after if obj_id is not None]
    assert before is not None and found and any(obj_id != before for obj_id in found)  # a new id
