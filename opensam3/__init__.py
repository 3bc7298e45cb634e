"""opensam3: SAM 3 (Segment Anything with Concepts) as practical Python software.

    import opensam3
    model = opensam3.load("sam3.pt")
    result = model.segment("photo.jpg", text="a player in white")

    tracker = opensam3.load_video_tracker("sam3.pt")      # points / boxes / masks through a video
    state = tracker.init_state("clip.mp4")
    tracker.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[210, 350]], labels=[1])
    for frame in tracker.propagate_in_video(state): ...

    tracker = opensam3.load_multiplex_tracker("sam3.1_multiplex.pt")  # SAM 3.1: 16 objects a pass
"""

from .api import Sam3, build_model, load
from .compat import Sam3Processor, build_sam3_image_model
from .config import SAM3, SAM3_1, TINY, Sam3Config, get_config
from .errors import CheckpointError, InvalidInputError, OpenSam3Error
from .data.video_io import open_video
from .device import keep_large_blocks_in_heap
from .predictor.results import Segmentation
from .predictor.video_build import build_video_tracker, load_multiplex_tracker, load_video_tracker
from .predictor.video_multiplex31 import Multiplex31VideoTracker
from .predictor.video_session import Sam3VideoPredictor, build_sam3_multiplex_video_predictor, build_sam3_video_predictor
from .predictor.video_tracker import VideoTracker

__version__ = "0.1.0"

# large per-frame tensors reuse heap pages instead of page-faulting afresh (see the function)
keep_large_blocks_in_heap()

__all__ = [
    "CheckpointError", "InvalidInputError", "Multiplex31VideoTracker", "OpenSam3Error", "SAM3", "SAM3_1", "Sam3",
    "Sam3Config", "Sam3Processor",
    "Sam3VideoPredictor", "build_sam3_multiplex_video_predictor", "build_sam3_video_predictor",
    "Segmentation", "TINY", "VideoTracker", "build_model", "build_sam3_image_model", "build_video_tracker",
    "get_config", "load", "load_multiplex_tracker", "load_video_tracker", "open_video",
]
