"""DistillableViT: a ViT with a distillation token and a distillation head of its own (DeiT,
Touvron et al., 2021, "Training data-efficient image transformers & distillation through attention").

The distillation token is one more learned token in the sequence. It attends to the patches and
the class token like any other, and a second linear head reads it out; during training that head
learns to predict the teacher's output while the class head learns the labels
(:mod:`vitlib.distill` holds the losses). At inference DeiT averages the two heads.

Unlike vit-pytorch, where the token and its head live in ``DistillWrapper``, here they belong to
the student: they move with ``.to()``, live in its ``state_dict`` and its checkpoints, and count as
"positions + tokens" and "head" in :meth:`~vitlib.models.VisionModel.components`. Placement
follows vit-pytorch, so that its weights convert (:func:`vitlib.convert.from_vit_pytorch`): the
token is appended after the patches, with no position embedding of its own (DeiT puts it second,
with one; the difference is one row of ``dim`` parameters).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import check_head, classifier, select_head
from .vit import ViT

__all__ = ["DistillableViT"]


class DistillableViT(ViT):
    """ViT with a distillation token and head, with vit-pytorch's keyword names.

    The forward pass returns, in training and eval mode alike, what ``eval_head`` says: ``"mean"``
    of the class head's and the distillation head's logits (DeiT's inference, the default),
    ``"class"`` or ``"distill"`` alone, or ``"both"`` as a pair ``(logits, distill_logits)``. So
    ``pred = model(img)`` is one ``(batch, classes)`` tensor, as with vit-pytorch's student after
    distillation; ``forward(img, head=...)`` asks for any of these, and distillation
    (:class:`~vitlib.distill.DistillationLoss`, each head trained on its own target) asks for
    ``head="both"``. :meth:`to_vit` gives a plain :class:`~vitlib.models.ViT` with the same
    weights, for tools that know only ViTs.
    """

    token_params = ("cls_token", "pos_embedding", "distill_token")
    head_names = ("head", "distill_head")
    classifier_names = ("head", "distill_head")

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
        eval_head: str = "mean",
    ) -> None:
        check_head(eval_head, "eval_head")
        super().__init__(image_size=image_size, patch_size=patch_size, num_classes=num_classes, dim=dim, depth=depth,
                         heads=heads, mlp_dim=mlp_dim, pool=pool, channels=channels, dim_head=dim_head,
                         dropout=dropout, emb_dropout=emb_dropout)
        self.config = {**self.config, "eval_head": eval_head}
        self.patch_embedding.owner = type(self).__name__
        self.eval_head = eval_head
        self.dim = dim
        self.distill_token = nn.Parameter(torch.randn(1, dim).mul_(0.02))
        self.distill_head = classifier(dim, num_classes)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """Class token, patches with positions, then the distillation token (no position)."""
        x = self.patch_embedding(img)
        b = x.shape[0]
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1) + self.pos_embedding
        x = torch.cat((x, self.distill_token.expand(b, -1, -1)), dim=1)
        return self.dropout(x)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False, *, head: str | None = None):
        """Pool the class token (or the mean of the others) into the class head and read the
        distillation token (the last) with the distillation head; ``head`` as in :meth:`forward`.
        ``pre_logits=True`` (or a model of ``num_classes=0``) gives the mean of the two vectors
        the heads read, ``(b, dim)``: DeiT's (and timm's) pre-logits."""
        check_head(head)
        rest, distill = tokens[:, :-1], tokens[:, -1]
        x = rest[:, 0] if self.pool == "cls" else rest.mean(dim=1)
        if pre_logits or self.num_classes == 0:
            return (x + distill) / 2
        return select_head(self.head(x), self.distill_head(distill), head, self.eval_head)

    def pool_features(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_head(tokens, pre_logits=True)

    def forward(self, img: torch.Tensor, head: str | None = None):
        """Logits of images ``(b, c, h, w)``: ``head`` is one of
        :data:`~vitlib.models.base.HEADS`; None means ``eval_head``, in either mode."""
        return self.forward_head(self.forward_features(img), head=head)

    def parts(self) -> dict[str, list[str]]:
        return {**super().parts(), "head": list(self.head_names)}

    def to_vit(self) -> ViT:
        """A plain :class:`~vitlib.models.ViT` with this model's configuration and a copy of its
        weights, less the distillation token and head, on the same device, dtype and mode.

        Its logits are those of the class head computed *without* the distillation token in the
        sequence, which the student never saw in training: measure its accuracy before using it
        in place of the student (as vit-pytorch's ``to_vit`` does, it trades that for a model any
        ViT tool reads)."""
        config = {k: v for k, v in self.config.items() if k != "eval_head"}
        with torch.device(self.device):
            vit = ViT(**config).to(self.dtype)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(("distill_token", "distill_head."))}
        vit.load_state_dict(state, strict=True)  # copies
        return vit.train(self.training)
