"""Model configurations.

Every size of SAM 3 runs through the same code; a config only changes widths, depths and
counts. ``sam3`` is the official full-size model, ``tiny`` the configuration of the reference
fixture in ``tests/fixtures/tiny_reference.safetensors``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 1008
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.625
    window_size: int = 24
    global_blocks: tuple[int, ...] = (7, 15, 23, 31)
    # absolute position embedding learned at this resolution (plus a cls slot), tiled up
    pretrain_image_size: int = 336
    rope_theta: float = 10000.0
    # FPN neck
    neck_dim: int = 256
    scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    # coarsest levels built but never read (the official image model drops SAM 3's 0.5x level)
    unused_levels: int = 1
    # the second (tracker) neck; the official checkpoint always carries it
    tracker_neck: bool = True
    # SAM 3.1's two tracker necks instead: ``interactive_convs`` (prompted frames) and
    # ``propagation_convs`` (the multiplex tracker), next to the detector's ``convs``
    multiplex_necks: bool = False

    @property
    def used_levels(self) -> int:
        """Pyramid levels the detector and the trackers read (finest first)."""
        return len(self.scale_factors) - self.unused_levels

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    context_length: int = 32
    vocab_size: int = 49408
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class DetectorConfig:
    d_model: int = 256
    num_heads: int = 8
    fusion_layers: int = 6
    fusion_ffn: int = 2048
    decoder_layers: int = 6
    decoder_ffn: int = 2048
    num_queries: int = 200
    geometry_layers: int = 3
    geometry_ffn: int = 2048
    scoring_hidden: int = 2048
    mask_upsampling_stages: int = 3


@dataclass(frozen=True)
class Sam3Config:
    name: str = "sam3"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    # image normalisation: (x / 255 - mean) / std, the same value for every channel
    pixel_mean: float = 0.5
    pixel_std: float = 0.5
    # Image predictions: drop a detection whose mask (low-res logits > 0) overlaps a higher-scoring
    # one of the same prompt above this IoU. None = off, as the official image processor.
    nms_iou: float | None = None
    # Added to every query's classification logit at inference (the score is then
    # sigmoid(logit + offset) x presence). 0 for the official configs; a small model's calibration
    # sets it (train/calibrate.py). Training losses see the raw logits.
    query_logit_offset: float = 0.0
    # Click / box predictions fill holes up to this many low-res mask pixels. None = the official
    # predict_inst rule (256 of a 288 x 288 mask, scaled to the model's mask size); a world whose
    # objects have real holes (the synthetic rings) sets 0.
    interactive_hole_area: float | None = None
    # Click / box predictions on small objects look again on a window cut around them, the window
    # this many times the object's box side (predictor/zoom.py). None = off, as the official code.
    interactive_zoom: float | None = None
    # Click / box predictions without a mask_input decode each candidate once more with its own
    # logits as the mask input (predictor/interactive.py). False = off, as the official code.
    interactive_feedback: bool = False
    # A box prompt bounds its mask: pixels whose centres lie outside the box are background.
    # False = off, as the official code (its masks may spill out of the box).
    interactive_box_clip: bool = False
    # Concept detections' masks re-drawn by the click / box head from each detection's box (and
    # zoom, as set above). False = the detector's own masks, as the official code.
    refine_masks: bool = False
    # Concept video: a lost masklet is re-activated by a detection where its motion puts it,
    # keeping its id through a full occlusion (predictor/video_concept_reid.py). False = the
    # official behaviour (the object comes back under a new id).
    video_reidentify: bool = False

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    def replace(self, **changes) -> "Sam3Config":
        return dataclasses.replace(self, **changes)


SAM3 = Sam3Config()

# SAM 3.1 (``sam3.1_multiplex.pt``): SAM 3's detector and trunk on a three-pyramid neck with levels
# 4x, 2x, 1x only (official Sam3TriViTDetNeck); the tracker is the multiplex one
# (opensam3.load_multiplex_tracker).
SAM3_1 = Sam3Config(
    name="sam3.1",
    vision=dataclasses.replace(VisionConfig(), scale_factors=(4.0, 2.0, 1.0), unused_levels=0, tracker_neck=False,
                               multiplex_necks=True),
)

TINY = Sam3Config(
    name="tiny",
    vision=VisionConfig(
        image_size=336,
        embed_dim=128,
        depth=4,
        num_heads=4,
        window_size=8,
        global_blocks=(1, 3),
        pretrain_image_size=112,
        tracker_neck=False,
    ),
    text=TextConfig(width=128, layers=2, heads=4),
    # the fixture's builder shrank depths, the decoder FFN and the query count only
    detector=DetectorConfig(
        fusion_layers=2,
        decoder_layers=2,
        decoder_ffn=512,
        num_queries=20,
        geometry_layers=1,
    ),
)

# The embedded model: same architecture and code paths, sized to train from scratch on a
# 2-core CPU in about two hours. 224 px (a 16x16 patch grid, 64x64 masks); windowed ViT blocks
# with two global ones; d_model 128 everywhere. The text width is 128 because the 49408-entry
# token table dominates the file size (49408 x 128 x 4 bytes = 25 MB in fp32). The detector is
# trained with this config; the shipped file (fp16, 36 MB) adds the tracker neck, heads and video
# memory (train-interactive, train-memory), so its metadata config has tracker_neck=True.
EMBEDDED = Sam3Config(
    name="embedded",
    vision=VisionConfig(
        image_size=224,
        embed_dim=192,
        depth=6,
        num_heads=3,
        mlp_ratio=4.0,
        window_size=8,
        global_blocks=(2, 5),
        pretrain_image_size=224,
        neck_dim=128,
        tracker_neck=False,
    ),
    text=TextConfig(width=128, layers=2, heads=2),
    detector=DetectorConfig(
        d_model=128,
        num_heads=4,
        fusion_layers=2,
        fusion_ffn=512,
        decoder_layers=3,
        decoder_ffn=512,
        num_queries=32,
        geometry_layers=1,
        geometry_ffn=512,
        scoring_hidden=512,
    ),
    # Mask NMS at IoU 0.3: a small DETR trained for two hours still answers one object with several
    # queries. Chosen on the calibration split (seed 2, 800 pairs) with the calibrated model of
    # 2026-11-29: cgF1 x100 10.13 without, 13.84 at 0.5, 14.09 at 0.3, 14.10 at 0.2 and 0.1 (the
    # official video detector suppresses at 0.1); pmF1 0.191 -> 0.265, IL_MCC unchanged.
    nms_iou=0.3,
    # Synthetic rings have real holes, which the official hole filling (12.6 low-res pixels at this
    # mask size) closes: on 60 held-out scenes (2026-11-30) one-click IoU >= 0.8 went 57.9% -> 59.5%
    # without it (rings 26% -> 39%), tight boxes >= 0.85 51.6% -> 52.0%.
    interactive_hole_area=0.0,
    # A 20 px object covers about two of the 16 x 16 tokens. Window = 3 x the object's side. First
    # chosen on 80 scenes of seed 12345 (2026-11-30, model trained on whole scenes: margins 3.0 /
    # 3.5 / 4 / 5 gave clicks 72.5 / 73.3 / 72.5 / 70.7%, boxes 78.5 / 77.2 / 76.2 / 72.3%, none
    # 63.5 / 61.4%: 3.5); the model trained on zoom windows as well prefers 3 (same scenes, with
    # feedback and box clipping: 2.5 / 3 / 3.5 / 4 gave clicks 85.0 / 85.2 / 83.7 / 81.9%, boxes
    # 87.6 / 87.1 / 87.1 / 85.8%).
    interactive_zoom=3.0,
    # Chosen on the same 80 scenes (2026-11-30, the model trained on zoom windows; zoom 3.5): one
    # click IoU >= 0.8 78.2% -> 82.4% with each candidate decoded again from its own logits; tight
    # boxes >= 0.85 81.9% -> 85.5% with the mask kept inside the box (feeding back box answers
    # gained nothing: 81.9% -> 81.6%).
    interactive_feedback=True,
    interactive_box_clip=True,
    # The click / box head draws better masks than this small detector's mask head: on the 1200
    # held-out pairs (2026-11-30, the T3 model) re-drawing each detection's mask from its box
    # (zoom on) took pmF1 0.541 -> 0.613 and cgF1 25.73 -> 29.17 (0.584 / 27.79 without zoom).
    refine_masks=True,
    # Measured on 20 held-out clips (seed 21, 120 video-phrase pairs; 2026-12-02, the D18/D19
    # average): video cgF1 16.9 -> 18.8, pHOTA 50.2 -> 50.6 (AssA 0.734 -> 0.743), mAP 0.300 -> 0.319.
    video_reidentify=True,
)

CONFIGS: dict[str, Sam3Config] = {"sam3": SAM3, "sam3.1": SAM3_1, "tiny": TINY, "embedded": EMBEDDED}


def get_config(name: str) -> Sam3Config:
    try:
        return CONFIGS[name]
    except KeyError:
        known = ", ".join(sorted(CONFIGS))
        raise ValueError(f"unknown model config {name!r}; known configs: {known}") from None


def config_to_dict(config: Sam3Config) -> dict:
    return dataclasses.asdict(config)


# Settings that filter outputs but do not shape the weights: a checkpoint or a training state
# stays valid when they change.
INFERENCE_FIELDS = ("nms_iou", "query_logit_offset", "interactive_hole_area", "interactive_zoom", "interactive_feedback",
                    "interactive_box_clip", "refine_masks", "video_reidentify")


def architecture_differences(a: Sam3Config, b: Sam3Config) -> list[str]:
    """Dotted names of the fields in which two configs differ, inference settings and the name aside."""
    def flat(config: Sam3Config) -> dict:
        values = {}
        for key, value in config_to_dict(config).items():
            if isinstance(value, dict):
                values.update({f"{key}.{k}": v for k, v in value.items()})
            elif key not in INFERENCE_FIELDS and key != "name":
                values[key] = value
        return values

    left, right = flat(a), flat(b)
    return sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))


def config_from_dict(data: dict) -> Sam3Config:
    """Inverse of :func:`config_to_dict` (JSON lists become tuples again)."""
    parts = {"vision": VisionConfig, "text": TextConfig, "detector": DetectorConfig}

    def tuples(values: dict) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

    top = {k: v for k, v in data.items() if k not in parts}
    nested = {k: cls(**tuples(data[k])) for k, cls in parts.items() if k in data}
    return Sam3Config(**tuples(top), **nested)
