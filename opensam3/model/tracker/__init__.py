"""SAM-2-style tracker: prompt encoder + mask decoder (point/box/mask prompts on one image) and the
video memory path (memory encoder, memory attention, memory bank, tracking step)."""

from .config import TrackerHeadsConfig, TrackerMemoryConfig
from .heads import (IMAGE_PATH_PREFIXES, VIDEO_ONLY_PREFIXES, TrackerHeads, TrackerImageEmbedding,
                    load_tracker_heads, tracker_image_state)
from .mask_decoder import DecodedMasks, MaskDecoder
from .memory_attention import MemoryAttention, MemoryTransformer
from .memory_bank import (MemoryBank, MemoryFrame, MemoryPlan, filter_memory_frames, plan_memory,
                          select_closest_cond_frames)
from .memory_encoder import MemoryEncoder
from .multiplex import DEFAULT_BUCKET_SIZE, object_buckets, track_step_in_buckets
from .prompt_encoder import PromptEncoder
from .tracker_memory import TrackerMemory, load_tracker_memory, tracker_memory_state
from .tracking import FrameFeatures, FrameOutput, track_step
from .two_way_transformer import TwoWayTransformer

__all__ = ["TrackerHeadsConfig", "TrackerHeads", "TrackerImageEmbedding", "load_tracker_heads", "tracker_image_state",
           "IMAGE_PATH_PREFIXES", "VIDEO_ONLY_PREFIXES", "DecodedMasks", "MaskDecoder", "PromptEncoder",
           "TwoWayTransformer", "TrackerMemoryConfig", "TrackerMemory", "load_tracker_memory", "tracker_memory_state",
           "MemoryEncoder", "MemoryAttention", "MemoryTransformer", "MemoryBank", "MemoryFrame", "MemoryPlan",
           "filter_memory_frames", "plan_memory", "select_closest_cond_frames", "FrameFeatures", "FrameOutput",
           "track_step", "DEFAULT_BUCKET_SIZE", "object_buckets", "track_step_in_buckets"]
