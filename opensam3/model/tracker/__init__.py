"""SAM-2-style tracker heads (prompt encoder, mask decoder) for point/box/mask prompts."""

from .config import TrackerHeadsConfig
from .heads import (IMAGE_PATH_PREFIXES, VIDEO_ONLY_PREFIXES, TrackerHeads, TrackerImageEmbedding,
                    load_tracker_heads, tracker_image_state)
from .mask_decoder import DecodedMasks, MaskDecoder
from .prompt_encoder import PromptEncoder
from .two_way_transformer import TwoWayTransformer

__all__ = ["TrackerHeadsConfig", "TrackerHeads", "TrackerImageEmbedding", "load_tracker_heads", "tracker_image_state",
           "IMAGE_PATH_PREFIXES", "VIDEO_ONLY_PREFIXES", "DecodedMasks", "MaskDecoder", "PromptEncoder",
           "TwoWayTransformer"]
