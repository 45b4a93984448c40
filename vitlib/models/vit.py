"""ViT (Dosovitskiy et al., 2021): learned positions, a class token, dropout."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import PatchEmbedding, Transformer
from .base import PatchClassifier, check_num_classes, check_positive, check_probability, classifier, model_config


class ViT(PatchClassifier):
    """Vision Transformer with vit-pytorch's keyword names.

    ``pool="cls"`` prepends a learned class token and classifies it; ``pool="mean"`` (no class
    token) averages the patch tokens. ``image_size`` and ``patch_size`` take an int or a
    ``(height, width)`` pair. The model accepts only images of exactly ``image_size``.
    """

    token_params = ("cls_token", "pos_embedding")

    def __init__(
        self,
        *,
        image_size,
        patch_size,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        pool: str = "cls",
        channels: int = 3,
        dim_head: int = 64,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' (class token) or 'mean' (mean pooling); received {pool!r}")
        check_num_classes(num_classes)
        check_positive(dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim, channels=channels, dim_head=dim_head)
        check_probability(dropout=dropout, emb_dropout=emb_dropout)
        self.config = model_config(image_size=image_size, patch_size=patch_size, num_classes=num_classes, dim=dim,
                           depth=depth, heads=heads, mlp_dim=mlp_dim, pool=pool, channels=channels,
                           dim_head=dim_head, dropout=dropout, emb_dropout=emb_dropout)
        self.pool = pool
        self.patch_embedding = PatchEmbedding(image_size, patch_size, channels, dim, owner="ViT")
        self.image_size, self.channels, self.num_classes = self.patch_embedding.image_size, channels, num_classes
        num_cls = 1 if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.randn(num_cls, dim).mul_(0.02))
        self.pos_embedding = nn.Parameter(torch.randn(self.patch_embedding.num_patches + num_cls, dim).mul_(0.02))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout)
        self.num_features = dim
        self.head = classifier(dim, num_classes)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embedding
        return self.dropout(x)
