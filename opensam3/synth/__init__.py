"""A procedural concept world for training and testing SAM 3 without real data.

Scenes of shapes (10 shapes x 10 colours x 3 sizes x 3 patterns) on textured, noisy
backgrounds with distractors, overlapping with bounded occlusion; noun phrases at several
specificities with exhaustive instance masks, hard and easy negatives and exemplar boxes;
short clips where objects move, pass behind each other, enter and leave. Deterministic from a
seed. In memory:

    rng = np.random.default_rng(0)
    scene = generate_scene(rng, 256)      # scene.image, scene.objects, scene.masks
    pairs = scene.pairs()                 # phrase, masks, boxes, exemplar_box, negative
    clip = generate_clip(rng, 256)        # clip.frames, clip.masks (T, N, H, W), clip.pairs()
    for scene in scene_stream(seed=0):    # endless; the same scenes write_image_dataset writes
        ...

On disk (SA-Co image / VEval video JSON; see opensam3.synth.dataset):

    write_image_dataset("out", num_images=1000, seed=0)
    write_video_dataset("out", num_videos=20, seed=0, num_frames=16)
"""

from opensam3.synth.clip import Clip, ClipConfig, ClipPair, clip_rng, clip_stream, generate_clip
from opensam3.synth.dataset import DatasetSummary, write_image_dataset, write_video_dataset
from opensam3.synth.phrases import Concept, PhraseQuery
from opensam3.synth.scene import Pair, Scene, SceneConfig, generate_scene, scene_rng, scene_stream
from opensam3.synth.world import COLORS, PATTERNS, SHAPES, SIZES, SceneObject, SynthConfigError

__all__ = [
    "COLORS", "Clip", "ClipConfig", "ClipPair", "Concept", "DatasetSummary", "PATTERNS", "Pair", "PhraseQuery",
    "SHAPES", "SIZES", "Scene", "SceneConfig", "SceneObject", "SynthConfigError", "clip_rng", "clip_stream",
    "generate_clip", "generate_scene", "scene_rng", "scene_stream", "write_image_dataset", "write_video_dataset",
]
