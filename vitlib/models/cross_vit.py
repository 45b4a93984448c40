"""CrossViT (Chen et al., 2021, "CrossViT: Cross-Attention Multi-Scale Vision Transformer").

Two ViT branches see the same image cut into small and large patches (the paper's models: 12-pixel
patches of a 240-pixel image, and 16-pixel patches of the same image resized to 224). After each
round of per-branch self-attention, the class token of each branch attends to the other branch's patch
tokens (and to itself): cross-attention with one query per branch, so exchanging information costs
time linear, not quadratic, in the number of tokens. Each branch classifies its class token and the
logits are summed.

Every attention here, self and cross, is the shared :class:`~vitlib.layers.Attention`: the encoders
are :class:`~vitlib.layers.Transformer` and the cross-attention calls ``Attention(cls,
context=patches, kv_include_self=True)``. Keyword names and layout follow vit-pytorch so that its
weights convert (:func:`vitlib.convert.from_vit_pytorch`).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Attention, PatchEmbedding, Transformer, pair
from .base import VisionModel, check_num_classes, check_positive, check_probability, classifier, model_config

__all__ = ["CrossViT", "ClassTokenEmbedding", "CrossBlock", "MultiScaleLayer", "PAPER_LG_SCALE", "scaled_size"]

# The paper's large-patch branch sees a 224-pixel copy of the 240-pixel image (timm's img_scale).
PAPER_LG_SCALE = 224 / 240


def scaled_size(image_size, scale: float, patch_size, name: str = "image_scale") -> tuple[int, int]:
    """The size a branch sees when it sees the image scaled by ``scale``: each side of
    ``image_size`` times ``scale``, rounded to the nearest whole number of ``patch_size`` patches
    (at least one; halves round up). This is the one rule for a branch that follows the image:
    ``scaled_size(240, 224 / 240, 16) == (224, 224)`` (the paper's), and at 480 pixels
    ``(448, 448)``; at 96 pixels, 89.6 / 16 = 5.6 patches round to 6, ``(96, 96)``."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise ValueError(f"{name} must be a positive number; received {scale!r}")
    (ih, iw), (ph, pw) = pair(image_size, "image_size"), pair(patch_size, "patch_size")
    rows = max(1, math.floor(ih * scale / ph + 0.5))  # whole patches, halves rounded up
    cols = max(1, math.floor(iw * scale / pw + 0.5))
    return rows * ph, cols * pw


class ClassTokenEmbedding(nn.Module):
    """Patches to tokens, a class token prepended, learned positions added, then dropout."""

    token_params = ("cls_token", "pos_embedding")

    def __init__(self, image_size, patch_size, channels: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.patch_embedding = PatchEmbedding(image_size, patch_size, channels, dim, owner="CrossViT")
        self.cls_token = nn.Parameter(torch.randn(1, dim).mul_(0.02))
        self.pos_embedding = nn.Parameter(torch.randn(self.patch_embedding.num_patches + 1, dim).mul_(0.02))
        self.dropout = nn.Dropout(dropout)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return self.dropout(torch.cat((cls, x), dim=1) + self.pos_embedding)


class CrossBlock(nn.Module):
    """One branch's class token attends to the other branch's patch tokens and to itself.

    The class token is projected to the other branch's width (``project_in``, identity when the
    widths agree), attends there with a shared :class:`~vitlib.layers.Attention`, and is projected
    back (``project_out``). The caller adds the residual.
    """

    component = "attention"  # the projections in and out belong to the cross-attention

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        same = dim == context_dim
        self.project_in = nn.Identity() if same else nn.Linear(dim, context_dim)
        self.attn = Attention(context_dim, heads, dim_head, dropout)
        self.project_out = nn.Identity() if same else nn.Linear(context_dim, dim)

    def forward(self, cls: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.attn(self.project_in(cls), context=context, kv_include_self=True))


class MultiScaleLayer(nn.Module):
    """Both encoders, then ``cross_attn_depth`` rounds of class-token cross-attention."""

    def __init__(self, sm_dim, lg_dim, sm_enc, lg_enc, cross_depth, cross_heads, cross_dim_head, dropout) -> None:
        super().__init__()
        self.sm_encoder = Transformer(sm_dim, dropout=dropout, **sm_enc)
        self.lg_encoder = Transformer(lg_dim, dropout=dropout, **lg_enc)
        self.sm_attend_lg = nn.ModuleList(
            [CrossBlock(sm_dim, lg_dim, cross_heads, cross_dim_head, dropout) for _ in range(cross_depth)]
        )
        self.lg_attend_sm = nn.ModuleList(
            [CrossBlock(lg_dim, sm_dim, cross_heads, cross_dim_head, dropout) for _ in range(cross_depth)]
        )

    def forward(self, sm: torch.Tensor, lg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sm, lg = self.sm_encoder(sm), self.lg_encoder(lg)
        sm_cls, sm_patches = sm[:, :1], sm[:, 1:]
        lg_cls, lg_patches = lg[:, :1], lg[:, 1:]
        for sm_block, lg_block in zip(self.sm_attend_lg, self.lg_attend_sm):
            sm_cls = sm_cls + sm_block(sm_cls, lg_patches)
            lg_cls = lg_cls + lg_block(lg_cls, sm_patches)
        return torch.cat((sm_cls, sm_patches), dim=1), torch.cat((lg_cls, lg_patches), dim=1)


def _head(dim: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(norm=nn.LayerNorm(dim), fc=classifier(dim, num_classes)))


class CrossViT(VisionModel):
    """CrossViT with vit-pytorch's keyword names.

    ``image_size`` (an int or ``(height, width)``) is the size of the images the model accepts, and
    only that size. Each branch sees the image at its own size, ``sm_image_size`` and
    ``lg_image_size`` (default None: ``image_size``, vit-pytorch's layout), or a size that follows
    the image, ``sm_image_scale`` / ``lg_image_scale`` times ``image_size`` rounded to whole patches
    (:func:`scaled_size`; give a branch a size or a scale, not both); a branch whose size differs
    from ``image_size`` sees the input resized, bicubic as in the paper's code (and timm's), which
    costs no multiply-adds that :func:`vitlib.bench.count_flops` counts. The paper's models take
    240-pixel images, cut into 12-pixel patches as they are (400 patches) and into 16-pixel patches
    of a 224-pixel copy (196 patches): ``image_size=240, lg_image_scale=224 / 240`` (the presets,
    so that a preset built at another ``image_size`` keeps the paper's ratio), or
    ``lg_image_size=224``. Each branch's size must be divisible by its patch size. Returns the sum
    of the two branches' logits. The paper's models by name: :func:`vitlib.models.presets.create`.
    :meth:`forward_features` gives both branches' tokens as a pair; the pre-logits are both
    branches' normalised class tokens, concatenated (``num_features = sm_dim + lg_dim``, as in timm).
    """

    head_names = ("sm_head", "lg_head")
    classifier_names = ("sm_head.fc", "lg_head.fc")

    def __init__(
        self,
        *,
        image_size,
        num_classes: int,
        sm_dim: int,
        lg_dim: int,
        sm_patch_size=12,
        sm_enc_depth: int = 1,
        sm_enc_heads: int = 8,
        sm_enc_mlp_dim: int = 2048,
        sm_enc_dim_head: int = 64,
        lg_patch_size=16,
        lg_enc_depth: int = 4,
        lg_enc_heads: int = 8,
        lg_enc_mlp_dim: int = 2048,
        lg_enc_dim_head: int = 64,
        cross_attn_depth: int = 2,
        cross_attn_heads: int = 8,
        cross_attn_dim_head: int = 64,
        depth: int = 3,
        dropout: float = 0.1,
        emb_dropout: float = 0.1,
        channels: int = 3,
        sm_image_size=None,
        lg_image_size=None,
        sm_image_scale: float | None = None,
        lg_image_scale: float | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_positive(sm_dim=sm_dim, lg_dim=lg_dim, sm_enc_depth=sm_enc_depth,
                       sm_enc_heads=sm_enc_heads, sm_enc_mlp_dim=sm_enc_mlp_dim, sm_enc_dim_head=sm_enc_dim_head,
                       lg_enc_depth=lg_enc_depth, lg_enc_heads=lg_enc_heads, lg_enc_mlp_dim=lg_enc_mlp_dim,
                       lg_enc_dim_head=lg_enc_dim_head, cross_attn_depth=cross_attn_depth,
                       cross_attn_heads=cross_attn_heads, cross_attn_dim_head=cross_attn_dim_head, depth=depth,
                       channels=channels)
        check_probability(dropout=dropout, emb_dropout=emb_dropout)
        self.image_size = pair(image_size, "image_size")
        sizes = {}  # each branch's image size, validated against its patch size
        for branch, size, scale, ps in (("sm", sm_image_size, sm_image_scale, sm_patch_size),
                                        ("lg", lg_image_size, lg_image_scale, lg_patch_size)):
            ph, pw = pair(ps, f"{branch}_patch_size")
            if scale is not None:
                if size is not None:
                    raise ValueError(f"give {branch}_image_size or {branch}_image_scale, not both; received "
                                     f"{branch}_image_size={size!r} and {branch}_image_scale={scale!r}")
                size = scaled_size(image_size, scale, ps, f"{branch}_image_scale")
            size_name = "image_size" if size is None else f"{branch}_image_size"
            ih, iw = pair(image_size if size is None else size, size_name)
            if ih % ph or iw % pw:
                raise ValueError(
                    f"{size_name} {ih}x{iw} must be divisible by {branch}_patch_size {ph}x{pw}; "
                    f"received remainders {ih % ph} (height) and {iw % pw} (width)"
                )
            sizes[branch] = (ih, iw)
        self.sm_image_size, self.lg_image_size = sizes["sm"], sizes["lg"]
        # per-branch sizes and scales enter the config only when given: vit-pytorch's configs stay as they were
        branch_sizes = {k: v for k, v in (("sm_image_size", sm_image_size), ("lg_image_size", lg_image_size),
                                          ("sm_image_scale", sm_image_scale), ("lg_image_scale", lg_image_scale))
                        if v is not None}
        self.config = model_config(
            image_size=image_size, num_classes=num_classes, sm_dim=sm_dim, lg_dim=lg_dim, sm_patch_size=sm_patch_size,
            sm_enc_depth=sm_enc_depth, sm_enc_heads=sm_enc_heads, sm_enc_mlp_dim=sm_enc_mlp_dim,
            sm_enc_dim_head=sm_enc_dim_head, lg_patch_size=lg_patch_size, lg_enc_depth=lg_enc_depth,
            lg_enc_heads=lg_enc_heads, lg_enc_mlp_dim=lg_enc_mlp_dim, lg_enc_dim_head=lg_enc_dim_head,
            cross_attn_depth=cross_attn_depth, cross_attn_heads=cross_attn_heads,
            cross_attn_dim_head=cross_attn_dim_head, depth=depth, dropout=dropout, emb_dropout=emb_dropout,
            channels=channels, **branch_sizes,
        )
        self.channels, self.num_classes = channels, num_classes
        self.sm_embedding = ClassTokenEmbedding(sizes["sm"], sm_patch_size, channels, sm_dim, emb_dropout)
        self.lg_embedding = ClassTokenEmbedding(sizes["lg"], lg_patch_size, channels, lg_dim, emb_dropout)
        sm_enc = dict(depth=sm_enc_depth, heads=sm_enc_heads, mlp_dim=sm_enc_mlp_dim, dim_head=sm_enc_dim_head)
        lg_enc = dict(depth=lg_enc_depth, heads=lg_enc_heads, mlp_dim=lg_enc_mlp_dim, dim_head=lg_enc_dim_head)
        self.layers = nn.ModuleList(
            [MultiScaleLayer(sm_dim, lg_dim, sm_enc, lg_enc, cross_attn_depth, cross_attn_heads, cross_attn_dim_head,
                             dropout) for _ in range(depth)]
        )
        self.num_features = sm_dim + lg_dim
        self.sm_head = _head(sm_dim, num_classes)
        self.lg_head = _head(lg_dim, num_classes)

    def forward_features(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images to the two branches' tokens, ``(b, 1 + sm_patches, sm_dim)`` and ``(b, 1 + lg_patches, lg_dim)``."""
        self.check_input(img)  # before any resizing, which would hide a wrong size
        sm = self.sm_embedding(self.resize(img, self.sm_image_size))
        lg = self.lg_embedding(self.resize(img, self.lg_image_size))
        for layer in self.layers:
            sm, lg = layer(sm, lg)
        return sm, lg

    def resize(self, img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``img`` resized to ``size`` (bicubic, as in the paper's code), or ``img`` itself when it has
        that size."""
        if tuple(img.shape[-2:]) == size:
            return img
        return F.interpolate(img, size=size, mode="bicubic", align_corners=False)

    def _class_tokens(self, tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Each branch's class token, from :meth:`forward_features`' pair."""
        if not (isinstance(tokens, (tuple, list)) and len(tokens) == 2
                and all(isinstance(t, torch.Tensor) and t.ndim == 3 for t in tokens)):
            got = type(tokens).__name__
            got += f" of shape {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else ""
            raise ValueError("CrossViT's head expects forward_features' output, a pair (small-patch tokens, "
                             f"large-patch tokens) of (batch, tokens, dim) tensors; received a {got}")
        sm, lg = tokens
        return sm[:, 0], lg[:, 0]

    def pool_features(self, tokens) -> torch.Tensor:
        """Both branches' normalised class tokens, concatenated: ``(b, sm_dim + lg_dim)``."""
        sm, lg = self._class_tokens(tokens)
        return torch.cat((self.sm_head.norm(sm), self.lg_head.norm(lg)), dim=-1)

    def forward_head(self, tokens, pre_logits: bool = False) -> torch.Tensor:
        """The sum of the two branches' logits (each head: LayerNorm, then its classifier ``fc``),
        or with ``pre_logits=True`` (or a model of ``num_classes=0``) :meth:`pool_features`."""
        if pre_logits or self.num_classes == 0:
            return self.pool_features(tokens)
        sm, lg = self._class_tokens(tokens)
        return self.sm_head(sm) + self.lg_head(lg)

    def classifier_widths(self) -> dict[str, int]:
        return {"sm_head.fc": self.config["sm_dim"], "lg_head.fc": self.config["lg_dim"]}

    def parts(self) -> dict[str, list[str]]:
        """The small-patch branch (embedding, encoders, head), the large-patch branch, and the
        class-token cross-attention between them."""
        layers = range(len(self.layers))
        cross = self.config["cross_attn_depth"]
        return {
            "small-patch branch": ["sm_embedding", *(f"layers.{i}.sm_encoder" for i in layers), "sm_head"],
            "large-patch branch": ["lg_embedding", *(f"layers.{i}.lg_encoder" for i in layers), "lg_head"],
            "cross-attention": [f"layers.{i}.{side}.{j}" for i in layers for side in ("sm_attend_lg", "lg_attend_sm")
                                for j in range(cross)],
        }
