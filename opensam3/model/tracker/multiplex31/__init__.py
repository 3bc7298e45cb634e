"""SAM 3.1 "Object Multiplex" tracker: learned per-slot modules that track up to
``multiplex_count`` objects per bucket in one pass (see docs/sam31_multiplex_notes.md).

Unlike ``tracker/multiplex.py`` (execution-level bucketing of SAM 3's per-object tracker, same
results as one object per pass), these modules have their own weights (the SAM 3.1 checkpoint)
and objects sharing a bucket influence each other.
"""

from .config import TINY_MULTIPLEX, MultiplexTrackerConfig
from .interactive import InteractiveHead
from .mask_decoder import MultiplexDecoded, MultiplexMaskDecoder, slot_embeddings
from .memory_attention import DecoupledMemoryAttention, DecoupledMemoryLayer, DecoupledMemoryTransformer
from .memory_encoder import add_absent_slots, memory_encoder_input
from .slots import EMPTY, RETIRED, SlotAssignment
from .step import (MultiplexTracker, PointerMemory, PropagationOutput, SpatialMemory, propagate,
                   spatial_tpos_row)

__all__ = ["MultiplexTrackerConfig", "TINY_MULTIPLEX", "InteractiveHead", "MultiplexDecoded", "MultiplexMaskDecoder", "slot_embeddings",
           "DecoupledMemoryAttention", "DecoupledMemoryLayer", "DecoupledMemoryTransformer",
           "add_absent_slots", "memory_encoder_input", "EMPTY", "RETIRED", "SlotAssignment",
           "MultiplexTracker", "PointerMemory", "PropagationOutput", "SpatialMemory", "propagate", "spatial_tpos_row"]
