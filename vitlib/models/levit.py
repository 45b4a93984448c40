"""LeViT (Graham et al., 2021, "LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference").

What it changes against :class:`~vitlib.models.ViT`:

* a convolutional stem, four 3x3 stride-2 convolutions (each followed by BatchNorm, with Hardswish
  between them) that turns the image into a feature map 16 times smaller, instead of patches;
* tokens stay a 2-D feature map ``(batch, channels, height, width)``; projections are 1x1
  convolutions followed by BatchNorm (no LayerNorm), which fold into the convolutions at inference
  (:meth:`LeViT.fuse`);
* no position embedding: each attention layer learns one bias per head and per relative offset
  ``(|dy|, |dx|)`` between query and key, added to the attention scores;
* three stages separated by *shrinking attention*: queries from every other position (a stride-2
  1x1 convolution), keys and values from all, so the map halves and the channels grow;
* average pooling, a classifier and (optionally) a distillation head.

The keyword names are vit-pytorch's, and the layout follows its modules so that its weights map
onto these key by key (:func:`vitlib.convert.from_vit_pytorch`). vit-pytorch's stem has no
nonlinearity or BatchNorm between its convolutions, so it collapses into one affine map;
``stem_activation=False`` reproduces that stem for conversion, the default follows the paper.
The stem's widths are the paper's, ``D/8, D/4, D/2`` for a first stage of width ``D`` (timm's
too); vit-pytorch fixes them at 32, 64, 128, which for LeViT-128S (``D = 128``) quadruples the
first convolutions' output channels; ``stem_widths=(32, 64, 128)`` builds that stem.
Kept from vit-pytorch (and so unlike the paper): GELU rather than Hardswish before the attention's
output projection, no BatchNorm in the MLP, and the attention value size ``dim_value`` is the same
in every layer. The paper's models by name: :func:`vitlib.models.presets.create`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..fuse import fuse_batchnorm
from ..layers import attention, pair
from .base import (VisionModel, check_head, check_num_classes, check_positive, check_probability, classifier,
                   model_config, select_head)

__all__ = ["LeViT", "LeViTAttention", "LeViTFeedForward", "LeViTBlock", "LeViTStage", "relative_offset_indices",
           "paper_stem_widths", "VIT_PYTORCH_STEM_WIDTHS"]

#: vit-pytorch's fixed stem widths, for converting its checkpoints.
VIT_PYTORCH_STEM_WIDTHS = (32, 64, 128)
STEM_STRIDE = 16  # four stride-2 convolutions


def paper_stem_widths(dim: int) -> tuple[int, int, int]:
    """The paper's stem widths for a first stage of width ``dim``: ``dim/8, dim/4, dim/2``."""
    return (max(1, dim // 8), max(1, dim // 4), max(1, dim // 2))


def relative_offset_indices(size: tuple[int, int], stride: int = 1) -> torch.Tensor:
    """Index of the offset ``(|dy|, |dx|)`` between every query and key: ``|dy| * width + |dx|``.

    Keys lie on the ``size = (height, width)`` grid, queries on the same grid subsampled by
    ``stride`` (from position 0). Returns a ``(queries, keys)`` long tensor with values in
    ``[0, height * width)``, queries and keys in row-major order.
    """
    h, w = size
    ky, kx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    qy, qx = torch.meshgrid(torch.arange(0, h, stride), torch.arange(0, w, stride), indexing="ij")
    dy = (qy.reshape(-1, 1) - ky.reshape(1, -1)).abs()
    dx = (qx.reshape(-1, 1) - kx.reshape(1, -1)).abs()
    return dy * w + dx


def _conv_bn(dim_in: int, dim_out: int, stride: int = 1) -> nn.Sequential:
    """1x1 convolution without bias, then BatchNorm (the pair folds into one convolution)."""
    return nn.Sequential(nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False), nn.BatchNorm2d(dim_out))


class LeViTAttention(nn.Module):
    """Multi-head attention on a feature map with a learned bias per relative offset.

    ``q``, ``k`` and ``v`` are 1x1 convolutions with BatchNorm; ``downsample=True`` takes the
    queries at stride 2 (shrinking attention), so the output map is ``ceil(h / 2) x ceil(w / 2)``.
    The scores are ``q k^T / sqrt(dim_key) + B[h, offset(i, j)]`` where ``B = attention_biases`` is
    a ``(heads, height * width)`` parameter indexed by ``attention_bias_idxs`` (see
    :func:`relative_offset_indices`). ``fused`` selects SDPA (default) or the plain path.
    """

    component = "attention"
    no_decay_params = ("attention_biases",)  # one bias per head and offset: a position table

    def __init__(
        self,
        dim: int,
        fmap_size: tuple[int, int],
        heads: int = 8,
        dim_key: int = 32,
        dim_value: int = 64,
        dropout: float = 0.0,
        dim_out: int | None = None,
        downsample: bool = False,
        fused: bool = True,
    ) -> None:
        super().__init__()
        dim_out = dim if dim_out is None else dim_out
        self.heads, self.dim_key, self.dim_value = heads, dim_key, dim_value
        self.fmap_size = tuple(fmap_size)
        self.stride = 2 if downsample else 1
        self.attn_dropout = dropout
        self.fused = fused
        self.to_q = _conv_bn(dim, heads * dim_key, stride=self.stride)
        self.to_k = _conv_bn(dim, heads * dim_key)
        self.to_v = _conv_bn(dim, heads * dim_value)
        out_bn = nn.BatchNorm2d(dim_out)
        if not downsample:  # a residual branch starts as zero, so each block starts as the identity
            nn.init.zeros_(out_bn.weight)
        self.to_out = nn.Sequential(nn.GELU(), nn.Conv2d(heads * dim_value, dim_out, 1), out_bn, nn.Dropout(dropout))
        h, w = self.fmap_size
        self.attention_biases = nn.Parameter(torch.zeros(heads, h * w))
        self.register_buffer("attention_bias_idxs", relative_offset_indices(self.fmap_size, self.stride), persistent=False)

    def attention_bias(self) -> torch.Tensor:
        """The ``(heads, queries, keys)`` bias added to the scores."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q = self.to_q(x)
        qh, qw = q.shape[-2:]
        # (b, h * d, y, x) -> (b, h, y * x, d)
        q = q.reshape(b, self.heads, self.dim_key, qh * qw).transpose(-1, -2)
        k = self.to_k(x).reshape(b, self.heads, self.dim_key, -1).transpose(-1, -2)
        v = self.to_v(x).reshape(b, self.heads, self.dim_value, -1).transpose(-1, -2)
        p = self.attn_dropout if self.training else 0.0
        bias = self.attention_bias().to(q.dtype)
        out, _ = attention(q, k, v, dropout_p=p, fused=self.fused, bias=bias)
        out = out.transpose(-1, -2).reshape(b, self.heads * self.dim_value, qh, qw)
        return self.to_out(out)


class LeViTFeedForward(nn.Module):
    """``fc2(hardswish(fc1(x)))`` with 1x1 convolutions, hidden width ``dim * mult``."""

    component = "mlp"

    def __init__(self, dim: int, mult: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, dim * mult, 1)
        self.act = nn.Hardswish()
        self.fc2 = nn.Conv2d(dim * mult, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class LeViTBlock(nn.Module):
    """Attention then MLP, each with a residual connection; a shrinking block has none around its
    attention, whose output has another shape than its input."""

    def __init__(self, dim, fmap_size, heads, dim_key, dim_value, mlp_mult, dropout=0.0, dim_out=None,
                 downsample=False) -> None:
        super().__init__()
        dim_out = dim if dim_out is None else dim_out
        self.residual = not downsample and dim == dim_out
        self.attn = LeViTAttention(dim, fmap_size, heads, dim_key, dim_value, dropout, dim_out, downsample)
        self.ff = LeViTFeedForward(dim_out, mlp_mult, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(x) + x if self.residual else self.attn(x)
        return self.ff(x) + x


class LeViTStage(nn.Module):
    """A sequence of :class:`LeViTBlock` on one feature-map size (or one shrinking block)."""

    def __init__(self, depth, dim, fmap_size, heads, dim_key, dim_value, mlp_mult, dropout=0.0, dim_out=None,
                 downsample=False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [LeViTBlock(dim, fmap_size, heads, dim_key, dim_value, mlp_mult, dropout, dim_out, downsample)
             for _ in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _per_stage(value, stages: int, name: str) -> tuple[int, ...]:
    """``4 -> (4, 4, 4)``; a shorter tuple is padded with its last value, as vit-pytorch does."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * stages
    if isinstance(value, (tuple, list)) and 1 <= len(value) <= stages:
        return tuple(value) + (value[-1],) * (stages - len(value))
    raise ValueError(
        f"{name} must be an int or a tuple of at most stages={stages} ints (one per stage); received {value!r}"
    )


class LeViT(VisionModel):
    """LeViT with vit-pytorch's keyword names.

    ``dim``, ``depth`` and ``heads`` take an int (the same for every stage) or one value per stage.
    ``image_size`` (an int or ``(height, width)``) must be divisible by 16, the stem's stride; the
    model accepts only images of exactly that size. With ``num_distill_classes`` the model has a
    second, distillation head, trained against a teacher's predictions (DeiT-style; see
    :mod:`vitlib.distill`, which asks for ``head="both"``): the forward pass returns, in training
    and eval mode alike, what ``eval_head`` says: ``"mean"`` of the two heads (the paper's
    inference, the default when both heads have the same classes), ``"class"`` or ``"distill"``
    alone, or ``"both"`` as a pair ``(logits, distill_logits)`` (vit-pytorch's behaviour, the
    default when the class counts differ). ``forward(img, head=...)`` asks for any of these.
    Without a distillation head the forward pass returns the logits. ``stem_activation=False`` builds
    vit-pytorch's stem (four biased convolutions, nothing between them); ``stem_widths`` the three
    inner widths of the stem (default: the paper's, see the module docstring).
    """

    head_names = ("head", "distill_head")
    classifier_names = ("head", "distill_head")

    def __init__(
        self,
        *,
        image_size,
        num_classes: int,
        dim,
        depth,
        heads,
        mlp_mult: int,
        stages: int = 3,
        dim_key: int = 32,
        dim_value: int = 64,
        dropout: float = 0.0,
        num_distill_classes: int | None = None,
        stem_activation: bool = True,
        stem_widths: tuple[int, int, int] | None = None,
        channels: int = 3,
        eval_head: str | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_positive(mlp_mult=mlp_mult, stages=stages, dim_key=dim_key, dim_value=dim_value, channels=channels)
        if num_distill_classes is not None and num_classes == 0:  # reset_classifier(0): no classes, no heads
            check_num_classes(num_distill_classes, "num_distill_classes")
        elif num_distill_classes is not None:
            check_positive(num_distill_classes=num_distill_classes)
        check_probability(dropout=dropout)
        has_distill = num_distill_classes is not None
        check_head(eval_head, "eval_head", equal_classes=num_distill_classes == num_classes, has_distill=has_distill)
        dims = _per_stage(dim, stages, "dim")
        depths = _per_stage(depth, stages, "depth")
        stage_heads = _per_stage(heads, stages, "heads")
        for name, values in (("dim", dims), ("depth", depths), ("heads", stage_heads)):
            check_positive(**{f"{name}[{i}]": v for i, v in enumerate(values)})
        if stem_widths is not None:
            if not isinstance(stem_widths, (tuple, list)) or len(stem_widths) != 3:
                raise ValueError(f"stem_widths must be three ints (the stem's inner widths); received {stem_widths!r}")
            check_positive(**{f"stem_widths[{i}]": v for i, v in enumerate(stem_widths)})
            stem_widths = tuple(stem_widths)
        self.image_size = pair(image_size, "image_size")
        ih, iw = self.image_size
        if ih % STEM_STRIDE or iw % STEM_STRIDE:
            raise ValueError(
                f"LeViT's convolutional stem reduces the image 16 times, so image_size must be divisible by 16; "
                f"received {ih}x{iw} (remainders {ih % STEM_STRIDE} and {iw % STEM_STRIDE})"
            )
        self.config = model_config(image_size=image_size, num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                           mlp_mult=mlp_mult, stages=stages, dim_key=dim_key, dim_value=dim_value, dropout=dropout,
                           num_distill_classes=num_distill_classes, stem_activation=stem_activation,
                           stem_widths=stem_widths, channels=channels, eval_head=eval_head)
        self.channels, self.num_classes = channels, num_classes
        self.stem_widths = stem_widths or paper_stem_widths(dims[0])
        self.stem = self._stem(channels, self.stem_widths, dims[0], stem_activation)

        fmap = (ih // STEM_STRIDE, iw // STEM_STRIDE)
        layers = []
        for i, (d, n, h) in enumerate(zip(dims, depths, stage_heads)):
            layers.append(LeViTStage(n, d, fmap, h, dim_key, dim_value, mlp_mult, dropout))
            if i < stages - 1:  # shrinking attention: twice the heads, the next stage's width, half the map
                layers.append(LeViTStage(1, d, fmap, 2 * h, dim_key, dim_value, 2, dim_out=dims[i + 1], downsample=True))
                fmap = (math.ceil(fmap[0] / 2), math.ceil(fmap[1] / 2))
        self.backbone = nn.Sequential(*layers)
        self.fmap_size = fmap
        self.num_features = dims[-1]
        self.head = classifier(dims[-1], num_classes)
        self.distill_head = classifier(dims[-1], num_distill_classes) if has_distill else None
        self.eval_head = eval_head or ("mean" if num_distill_classes == num_classes else "both")

    @staticmethod
    def _stem(channels: int, inner: tuple[int, int, int], dim: int, activation: bool) -> nn.Sequential:
        widths = (channels, *inner, dim)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=not activation))
            if activation:
                layers.append(nn.BatchNorm2d(b))
                if i < len(widths) - 2:
                    layers.append(nn.Hardswish())
        return nn.Sequential(*layers)

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` to the last stage's feature map ``(b, dim, h, w)``."""
        self.check_input(img)
        return self.backbone(self.stem(img))

    def pool_features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Average pooling: ``(b, dim, h, w) -> (b, dim)``, what both heads read."""
        return fmap.mean(dim=(-2, -1))

    def forward_head(self, fmap: torch.Tensor, pre_logits: bool = False, *, head: str | None = None):
        """Average-pool and classify; ``head`` as in :meth:`forward`; ``pre_logits=True`` (or a
        model of ``num_classes=0``) gives the pooled vector ``(b, dim)``."""
        has_distill = self.distill_head is not None
        check_head(head, equal_classes=self.config["num_distill_classes"] == self.num_classes, has_distill=has_distill)
        x = self.pool_features(fmap)
        if pre_logits or self.num_classes == 0:
            return x
        logits = self.head(x)
        return select_head(logits, self.distill_head(x), head, self.eval_head) if has_distill else logits

    def forward(self, img: torch.Tensor, head: str | None = None):
        """Logits of images ``(b, c, H, W)``. With a distillation head, ``head`` (one of
        :data:`~vitlib.models.base.HEADS`) chooses the output; None means ``eval_head``, in
        either mode."""
        return self.forward_head(self.forward_features(img), head=head)

    def reset_classifier(self, num_classes: int) -> None:
        """As every model's (:meth:`VisionModel.reset_classifier`); a distillation head is reset to
        ``num_classes`` too (as timm's LeViT does), so that the two heads' mean is defined."""
        super().reset_classifier(num_classes)
        if self.distill_head is not None:
            self.config = {**self.config, "num_distill_classes": num_classes}
            self.eval_head = self.config["eval_head"] or "mean"

    def parts(self) -> dict[str, list[str]]:
        """The stem, each stage, each shrinking attention between stages and the head(s), in order."""
        out = {"stem": ["stem"]}
        stage = 1
        for i, part in enumerate(self.backbone):
            if part.blocks[0].attn.stride == 2:
                out[f"shrink {stage}->{stage + 1}"] = [f"backbone.{i}"]
                stage += 1
            else:
                out[f"stage {stage}"] = [f"backbone.{i}"]
        out["head"] = [name for name in self.head_names if getattr(self, name) is not None]
        return out

    def components(self) -> dict[str, str]:
        """As every model's, with the convolutional stem as LeViT's patch embedding."""
        return {"stem": "patch embedding", **super().components()}

    def fuse(self) -> "LeViT":
        """A copy for inference with every BatchNorm folded into the convolution before it
        (see :func:`vitlib.fuse.fuse_batchnorm`); the model must be in eval mode."""
        return fuse_batchnorm(self)
