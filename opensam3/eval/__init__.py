"""SA-Co evaluation, numerically identical to the official SAM 3 evaluators.

    from opensam3.eval import evaluate_images, evaluate_videos
    evaluate_images(["gold_a.json", "gold_b.json", "gold_c.json"], "pred.json")   # oracle
    evaluate_videos("veval_gt.json", "veval_pred.json")
"""

from opensam3.eval.api import evaluate_images, evaluate_videos
from opensam3.eval.errors import EvalInputError
from opensam3.eval.image_eval import evaluate_image_cgf1, evaluate_image_map
from opensam3.eval.jf import j_and_f
from opensam3.eval.video_eval import evaluate_video

__all__ = ["EvalInputError", "evaluate_image_cgf1", "evaluate_image_map", "evaluate_images", "evaluate_video",
           "evaluate_videos", "j_and_f"]
