"""Geometry (exemplar) prompt encoder: boxes and points -> prompt tokens for the detector.

Each box becomes one token: a linear map of its (cx, cy, w, h), plus a projection of the
image features RoI-aligned inside it (7x7, pooled by a 7x7 convolution), plus a projection of
the sine encoding of its centre and size, plus a label embedding (negative / positive). Points
are encoded the same way with a bilinear sample of the features at the point. The tokens are
packed as ``[valid points, valid boxes, cls, padding]`` per batch element, projected and
normalised, refined by a few pre-norm transformer layers that cross-attend to the image, and
normalised again. The cls token makes the sequence non-empty even without any box (text-only
prompts give exactly one valid token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opensam3.config import DetectorConfig
from opensam3.model.detector.encoder_layer import PreNormEncoderLayer
from opensam3.model.position import SinePositionEncoding
from opensam3.ops.boxes import cxcywh_to_xyxy
from opensam3.ops.roi_align import roi_align

ROI_SIZE = 7


def append_packed(
    seq: torch.Tensor, seq_pad: torch.Tensor, extra: torch.Tensor, extra_pad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate two right-padded token sequences so the valid tokens stay contiguous.

    seq (B, L1, C) with seq_pad (B, L1), extra (B, L2, C) with extra_pad (B, L2); True = pad,
    padding must be trailing. The tokens of ``extra`` are written right after the valid tokens
    of ``seq`` (their own padding included); positions past that keep ``seq``'s padding tokens
    or zeros. Returns (B, L1 + L2, C) tokens and their (B, L1 + L2) padding mask.
    This is the official packing rule, so even the padded slots hold the same values.
    """
    batch, len1, channels = seq.shape
    len2 = extra.shape[1]
    valid1 = (~seq_pad).sum(dim=1)
    total = valid1 + (~extra_pad).sum(dim=1)
    out = extra.new_zeros((batch, len1 + len2, channels))
    out[:, :len1] = seq
    index = torch.arange(len2, device=extra.device)[None, :] + valid1[:, None]
    out = out.scatter(1, index[..., None].expand(-1, -1, channels), extra)
    pad = torch.arange(len1 + len2, device=extra.device)[None, :] >= total[:, None]
    return out, pad


class GeometryEncoder(nn.Module):
    """Encodes box (and point) prompts into detector prompt tokens.

    State dict keys equal the official ``geometry_encoder.*`` keys.
    """

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        dim = cfg.d_model
        self.dim = dim
        self.pos_enc = SinePositionEncoding(dim)
        # labels: 0 negative, 1 positive (shared by points and boxes)
        self.label_embed = nn.Embedding(2, dim)
        self.cls_embed = nn.Embedding(1, dim)
        self.points_direct_project = nn.Linear(2, dim)
        self.points_pool_project = nn.Linear(dim, dim)
        self.points_pos_enc_project = nn.Linear(dim, dim)
        self.boxes_direct_project = nn.Linear(4, dim)
        self.boxes_pool_project = nn.Conv2d(dim, dim, ROI_SIZE)
        self.boxes_pos_enc_project = nn.Linear(dim + 2, dim)
        self.final_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.img_pre_norm = nn.LayerNorm(dim)
        self.encode = nn.ModuleList(
            PreNormEncoderLayer(dim, cfg.num_heads, cfg.geometry_ffn, pos_in_cross_keys=True)
            for _ in range(cfg.geometry_layers)
        )
        self.encode_norm = nn.LayerNorm(dim)

    def _encode_points(
        self, points: torch.Tensor, labels: torch.Tensor, image_map: torch.Tensor | None
    ) -> torch.Tensor:
        dtype = self.points_direct_project.weight.dtype
        embeds = self.points_direct_project(points.to(dtype))
        if image_map is not None:
            # sample in float32: low-precision coordinates would move points by a sizeable
            # fraction of a cell
            grid = (points.float() * 2 - 1)[:, :, None, :]  # (B, N, 1, xy) in [-1, 1]
            sampled = F.grid_sample(image_map.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            embeds = embeds + self.points_pool_project(sampled[..., 0].transpose(1, 2).to(dtype))
        # points put the x encoding first (boxes put y first)
        enc_x, enc_y = self.pos_enc.encode_xy(points[..., 0], points[..., 1])
        embeds = embeds + self.points_pos_enc_project(torch.cat((enc_x, enc_y), dim=-1).to(dtype))
        return embeds + self.label_embed(labels.long())

    def _encode_boxes(
        self, boxes: torch.Tensor, labels: torch.Tensor, image_map: torch.Tensor | None
    ) -> torch.Tensor:
        batch, num_boxes, _ = boxes.shape
        dtype = self.boxes_direct_project.weight.dtype
        embeds = self.boxes_direct_project(boxes.to(dtype))
        if image_map is not None:
            height, width = image_map.shape[-2:]
            scale = boxes.new_tensor([width, height, width, height], dtype=torch.float32)
            xyxy = cxcywh_to_xyxy(boxes.float()) * scale
            rois = torch.cat(
                (torch.arange(batch, device=boxes.device, dtype=torch.float32).repeat_interleave(num_boxes)[:, None],
                 xyxy.reshape(-1, 4)),
                dim=1,
            )
            # pooled in float32 (as torchvision's autocast rule does), projected in the weights' dtype
            pooled = roi_align(image_map.float(), rois, ROI_SIZE, spatial_scale=1.0, sampling_ratio=-1, aligned=False)
            # kept a convolution (not the equivalent linear map of the flattened window): its
            # summation order matches the official one, which the detector's peaked attention needs
            pooled = self.boxes_pool_project(pooled.to(dtype))
            embeds = embeds + pooled.view(batch, num_boxes, self.dim)
        cx, cy, w, h = boxes.unbind(-1)
        embeds = embeds + self.boxes_pos_enc_project(self.pos_enc.encode_boxes(cx, cy, w, h).to(dtype))
        return embeds + self.label_embed(labels.long())

    def forward(
        self,
        boxes: torch.Tensor | None,
        box_labels: torch.Tensor | None,
        box_padding_mask: torch.Tensor | None,
        image_tokens: torch.Tensor,
        image_pos: torch.Tensor,
        feat_size: tuple[int, int],
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        point_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode geometric prompts (batch-first).

        boxes: (B, N, 4) normalised (cx, cy, w, h); N may be 0, or None for no boxes.
        box_labels: (B, N) bool/int, 1 = positive, 0 = negative (None: all positive).
        box_padding_mask: (B, N) bool, True = padding; padding must be trailing (None: none).
        image_tokens: (B, H*W, C) image features of the detector level (row-major grid).
        image_pos: (B, H*W, C) their sine position encoding.
        feat_size: (H, W) of that grid.
        points: (B, P, 2) normalised (x, y), with point_labels / point_padding_mask (B, P) like
            the boxes'; optional.
        Returns tokens (B, P + N + 1, C) laid out ``[points, boxes, cls, padding]`` per batch
        element, and their padding mask (B, P + N + 1), True = pad. Only unpadded tokens are
        meaningful; with no points/boxes the result is the single cls token.
        """
        batch, _, channels = image_tokens.shape
        device = image_tokens.device
        height, width = feat_size
        if boxes is None:
            boxes = torch.zeros((batch, 0, 4), device=device)
        if points is None:
            points = torch.zeros((batch, 0, 2), device=device)
        box_labels = torch.ones(boxes.shape[:2], dtype=torch.long, device=device) if box_labels is None else box_labels
        point_labels = torch.ones(points.shape[:2], dtype=torch.long, device=device) if point_labels is None else point_labels
        box_pad = torch.zeros(boxes.shape[:2], dtype=torch.bool, device=device) if box_padding_mask is None else box_padding_mask
        point_pad = torch.zeros(points.shape[:2], dtype=torch.bool, device=device) if point_padding_mask is None else point_padding_mask

        image_map = None
        if boxes.shape[1] or points.shape[1]:
            # pooling reads layer-normalised features; cross-attention reads the raw ones
            image_map = self.img_pre_norm(image_tokens).transpose(1, 2).reshape(batch, channels, height, width)
        point_embeds = self._encode_points(points, point_labels, image_map if points.shape[1] else None)
        box_embeds = self._encode_boxes(boxes, box_labels, image_map if boxes.shape[1] else None)
        tokens, pad = append_packed(point_embeds, point_pad.bool(), box_embeds, box_pad.bool())
        cls = self.cls_embed.weight[None].expand(batch, 1, channels).to(tokens.dtype)
        tokens, pad = append_packed(tokens, pad, cls, torch.zeros((batch, 1), dtype=torch.bool, device=device))

        tokens = self.norm(self.final_proj(tokens))
        for layer in self.encode:
            tokens = layer(tokens, image_tokens, padding_mask=pad, memory_pos=image_pos)
        return self.encode_norm(tokens), pad
