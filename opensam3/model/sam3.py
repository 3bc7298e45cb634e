"""The SAM 3 image model (the detector): image + prompt -> scored queries with boxes and masks.

Submodule names mirror the official ``Sam3Image`` so its checkpoint (``detector.*``) loads with a
prefix strip. The work is split the way it is reused:

    encode_image(pixels)   once per image (≈ all of the cost)
    encode_text(phrases)   once per phrase (cached)
    ground(...)            once per prompt: geometry encoder, fusion encoder, decoder, heads
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..config import Sam3Config
from ..errors import InvalidInputError
from .detector.decoder import DetrDecoder
from .detector.fusion import FusionEncoder
from .detector.geometry import GeometryEncoder
from .detector.mask_head import SegmentationHead
from .detector.scoring import DotProductScoring
from .text.encoder import TextEncoder, TextFeatures
from .vision.neck import DualFPNNeck


class ImageFeatures:
    """Backbone output for a batch of images.

    fpn / fpn_pos: detector feature levels, highest resolution first, without the coarsest
        (official ``scalp=1``): (B, 256, 4h, 4w), (B, 256, 2h, 2w), (B, 256, h, w).
    tracker_fpn / tracker_pos: the tracker neck's levels (same layout) or None. Only point/box
        prompts need them, so when ``trunk`` and ``tracker_neck`` are given they are computed on
        first use from the kept ViT output instead of with every image.
    """

    def __init__(self, fpn: list[torch.Tensor], fpn_pos: list[torch.Tensor],
                 tracker_fpn: list[torch.Tensor] | None = None, tracker_pos: list[torch.Tensor] | None = None,
                 trunk: torch.Tensor | None = None,
                 tracker_neck: Callable[[torch.Tensor], tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None):
        self.fpn = fpn
        self.fpn_pos = fpn_pos
        self._tracker = (tracker_fpn, tracker_pos) if tracker_fpn is not None else None
        self._trunk = trunk
        self._tracker_neck = tracker_neck
        # results of prompt-independent detector work on this image, kept for its later prompts;
        # only a batch of one image (or of one image repeated, which shares the dict) has one
        self.memo: dict[str, torch.Tensor] | None = {} if self.batch_size == 1 else None

    def _tracker_levels(self) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        if self._tracker is None and self._tracker_neck is not None:
            with torch.inference_mode(torch.is_inference(self._trunk)):
                self._tracker = self._tracker_neck(self._trunk)
            self._trunk = None  # no longer needed
        return self._tracker

    @property
    def tracker_fpn(self) -> list[torch.Tensor] | None:
        levels = self._tracker_levels()
        return None if levels is None else levels[0]

    @property
    def tracker_pos(self) -> list[torch.Tensor] | None:
        levels = self._tracker_levels()
        return None if levels is None else levels[1]

    @property
    def batch_size(self) -> int:
        return self.fpn[0].shape[0]

    def select(self, index: list[int]) -> "ImageFeatures":
        """Rows ``index`` of the batch; one repeated row (several prompts on one image) is a view."""
        index = list(index)
        if len(set(index)) == 1:
            row = index[0]

            def pick(levels):
                return None if levels is None else [
                    level[row:row + 1].expand(len(index), *level.shape[1:]) for level in levels]
        else:
            rows = torch.as_tensor(index, dtype=torch.long, device=self.fpn[0].device)

            def pick(levels):
                return None if levels is None else [level.index_select(0, rows) for level in levels]

        if self._tracker is not None:
            selected = ImageFeatures(pick(self.fpn), pick(self.fpn_pos), *map(pick, self._tracker))
        else:
            trunk = None if self._trunk is None else pick([self._trunk])[0]
            selected = ImageFeatures(pick(self.fpn), pick(self.fpn_pos), trunk=trunk, tracker_neck=self._tracker_neck)
        if len(set(index)) == 1:
            selected.memo = self.memo if self.batch_size == 1 else {}
        return selected


@dataclass
class GroundingOutput:
    """Raw detector outputs for a batch of prompts (final decoder layer).

    logits: (B, Q) query logits; boxes: (B, Q, 4) cxcywh in [0, 1]; masks: (B, Q, 4h, 4w) mask
    logits; presence_logits: (B,); semantic_logits: (B, 1, 4h, 4w).
    """

    logits: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor
    presence_logits: torch.Tensor
    semantic_logits: torch.Tensor

    def scores(self) -> torch.Tensor:
        """(B, Q) sigmoid(query logit) x sigmoid(presence logit): the official final score."""
        return self.logits.float().sigmoid() * self.presence_logits.float().sigmoid()[:, None]


class _Backbone(nn.Module):
    """Holds the vision and language backbones under their official names."""

    def __init__(self, config: Sam3Config):
        super().__init__()
        self.vision_backbone = DualFPNNeck(config.vision)
        self.language_backbone = TextEncoder(config.text, d_model=config.detector.d_model)


class _Transformer(nn.Module):
    def __init__(self, config: Sam3Config):
        super().__init__()
        self.encoder = FusionEncoder(config.detector)
        self.decoder = DetrDecoder(config.detector, config.vision.image_size, config.vision.patch_size)


class Sam3ImageModel(nn.Module):
    def __init__(self, config: Sam3Config):
        super().__init__()
        self.config = config
        self.backbone = _Backbone(config)
        self.geometry_encoder = GeometryEncoder(config.detector)
        self.transformer = _Transformer(config)
        self.dot_prod_scoring = DotProductScoring(config.detector)
        self.segmentation_head = SegmentationHead(config.detector)
        # official-compatible point/box path (compat.build_sam3_image_model(enable_inst_interactivity=True));
        # a plain attribute, so the image model's state dict keeps the official detector layout
        self.inst_interactive_predictor = None

    # -- per image -------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        """(B, 3, S, S) normalised images -> features of every level the heads use."""
        neck = self.backbone.vision_backbone
        trunk = neck.trunk(pixels)
        # the coarsest pyramid level (scale 0.5) is unused by both heads (official scalp=1)
        used = self.config.vision.used_levels
        fpn, fpn_pos = neck.detector_levels(trunk, used)
        if not neck.has_tracker_levels:
            return ImageFeatures(fpn, fpn_pos)
        return ImageFeatures(fpn, fpn_pos, trunk=trunk, tracker_neck=partial(neck.tracker_levels, count=used))

    # -- per phrase ------------------------------------------------------------------------
    def encode_text(self, phrases: list[str]) -> TextFeatures:
        """Encode phrases; each distinct phrase is encoded once and kept (LRU) by the encoder."""
        return self.backbone.language_backbone.encode_cached(phrases)

    def clear_text_cache(self) -> None:
        self.backbone.language_backbone.clear_cache()

    def train(self, mode: bool = True) -> "Sam3ImageModel":
        # cached encodings would go stale as soon as weights change
        self.clear_text_cache()
        return super().train(mode)

    # -- per prompt ------------------------------------------------------------------------
    def encode_prompt(self, features: ImageFeatures, text: TextFeatures, boxes: torch.Tensor,
                      box_labels: torch.Tensor, box_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens (B, P, C) = text tokens then geometry tokens, and their padding mask."""
        tokens, pos, size = self._image_tokens(features)
        geo, geo_padding = self.geometry_encoder(boxes, box_labels, box_padding, tokens, pos, size)
        prompt = torch.cat((text.features.to(geo.dtype), geo), dim=1)
        padding = torch.cat((text.padding_mask, geo_padding), dim=1)
        return prompt, padding

    @staticmethod
    def _image_tokens(features: ImageFeatures) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        level, pos = features.fpn[-1], features.fpn_pos[-1]
        size = (level.shape[-2], level.shape[-1])
        return level.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2).to(level.dtype), size

    def ground(self, features: ImageFeatures, text: TextFeatures, boxes: torch.Tensor,
               box_labels: torch.Tensor, box_padding: torch.Tensor, all_layers: bool = False, dac: bool = False,
               extra_boxes: torch.Tensor | None = None):
        """Run the detector for B prompts on B images (rows of ``features``, ``text``, ``boxes``).

        ``dac=True`` (training only) adds the decoder's one-to-many query copy: every query
        output then has 2Q rows, the one-to-one queries first (see ``DetrDecoder``).

        ``extra_boxes`` (training only): (B, D, 4) starting boxes of D denoising queries, whose
        rows come last in every query output (see ``DetrDecoder``).

        boxes: (B, N, 4) normalised cxcywh exemplars (N may be 0); box_labels: (B, N) bool,
        True = positive; box_padding: (B, N) bool, True = no box in this slot.
        """
        prompt, padding = self.encode_prompt(features, text, boxes, box_labels, box_padding)
        tokens, pos, size = self._image_tokens(features)
        memory = self.transformer.encoder(tokens, pos, prompt, padding, size, image_memo=features.memo)
        decoded = self.transformer.decoder(memory, pos, prompt, padding, size, dac=dac, extra_boxes=extra_boxes)
        logits = self.dot_prod_scoring(decoded.hidden, prompt, padding)
        masks, semantic = self.segmentation_head(features.fpn, decoded.hidden[-1], memory, prompt, padding)
        final_logits = logits[-1, ..., 0]
        if self.config.query_logit_offset:  # a calibrated small model's shift; all_layers logits stay raw
            final_logits = final_logits + self.config.query_logit_offset
        output = GroundingOutput(
            logits=final_logits,
            boxes=decoded.pred_boxes[-1],
            masks=masks,
            presence_logits=decoded.presence_logits[-1, :, 0],
            semantic_logits=semantic,
        )
        if all_layers:
            return output, decoded, logits
        return output

    def predict_inst(self, inference_state: dict, point_coords=None, point_labels=None, box=None, mask_input=None,
                     multimask_output: bool = True, return_logits: bool = False):
        """The official ``Sam3Image.predict_inst``: one object from points/box/mask on an image set
        by ``Sam3Processor.set_image``. Returns numpy (masks (K, H, W), iou_scores (K,), low_res (K, L, L))."""
        if self.inst_interactive_predictor is None:
            raise InvalidInputError("build the model with enable_inst_interactivity=True (and tracker weights) "
                                    "to use predict_inst")
        if "image_state" not in inference_state:
            raise InvalidInputError("call Sam3Processor.set_image before predict_inst")
        masks, ious, low_res = self.inst_interactive_predictor.predict(
            inference_state["image_state"], point_coords, point_labels, box, mask_input, multimask_output, return_logits)
        return masks.numpy(), ious.numpy(), low_res.numpy()
