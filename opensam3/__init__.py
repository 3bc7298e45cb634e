"""opensam3: SAM 3 (Segment Anything with Concepts) as practical Python software.

    import opensam3
    model = opensam3.load("sam3.pt")
    result = model.segment("photo.jpg", text="a player in white")
"""

from .api import Sam3, build_model, load
from .compat import Sam3Processor, build_sam3_image_model
from .config import SAM3, TINY, Sam3Config, get_config
from .errors import CheckpointError, InvalidInputError, OpenSam3Error
from .predictor.results import Segmentation

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "InvalidInputError", "OpenSam3Error", "SAM3", "Sam3", "Sam3Config", "Sam3Processor",
    "Segmentation", "TINY", "build_model", "build_sam3_image_model", "get_config", "load",
]
