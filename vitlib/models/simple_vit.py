"""SimpleViT (Beyer et al., 2022, "Better plain ViT baselines for ImageNet-1k").

What it changes against :class:`~vitlib.models.ViT`: fixed 2-D sin-cos positions instead of a
learned table, global average pooling instead of a class token, no dropout, and no bias on the
attention output projection.
"""
from __future__ import annotations

import torch

from ..layers import PatchEmbedding, SinCosPosEmb2d, Transformer
from .base import PatchClassifier, check_num_classes, check_positive, classifier, model_config


class SimpleViT(PatchClassifier):
    """SimpleViT with vit-pytorch's keyword names. Accepts only images of exactly ``image_size``."""

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
        channels: int = 3,
        dim_head: int = 64,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_positive(dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim, channels=channels, dim_head=dim_head)
        self.config = model_config(image_size=image_size, patch_size=patch_size, num_classes=num_classes, dim=dim,
                           depth=depth, heads=heads, mlp_dim=mlp_dim, channels=channels, dim_head=dim_head)
        self.pool = "mean"
        self.patch_embedding = PatchEmbedding(image_size, patch_size, channels, dim, owner="SimpleViT")
        self.image_size, self.channels, self.num_classes = self.patch_embedding.image_size, channels, num_classes
        self.pos_embedding = SinCosPosEmb2d(self.patch_embedding.grid, dim)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, out_bias=False)
        self.num_features = dim
        self.head = classifier(dim, num_classes)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        return self.pos_embedding(self.patch_embedding(img))
