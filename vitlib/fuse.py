"""Inference-time fusion: fold each BatchNorm into the convolution or linear layer before it.

In eval mode a BatchNorm is a fixed per-channel affine map
``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``. When it directly follows a
``Conv2d`` or ``Linear`` (``z = W x + b``), the two compose into one layer with
``W' = s W`` and ``b' = s (b - running_mean) + beta`` where ``s = gamma / sqrt(running_var + eps)``
(per output channel). The fused model computes the same function with one layer fewer per pair:
that is how LeViT's many BatchNorms cost nothing at inference.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fuse_batchnorm", "fold_batchnorm"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def fold_batchnorm(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Module:
    """A new ``Conv2d`` / ``Linear`` equal to ``bn(layer(x))`` for a BatchNorm in eval mode.

    The folding is computed in float64 and cast back to the layer's dtype.
    """
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"can fold a BatchNorm into a Conv2d or a Linear; received {type(layer).__name__}")
    out_features = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if bn.num_features != out_features:
        raise ValueError(
            f"the BatchNorm normalises {bn.num_features} channels but the {type(layer).__name__} "
            f"before it produces {out_features}"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    dtype = layer.weight.dtype
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)

    fused = copy.deepcopy(layer)
    if fused.bias is None:
        fused.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=layer.weight.device))
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    fused.weight.copy_((layer.weight.double() * scale.reshape(shape)).to(dtype))
    fused.bias.copy_(((bias - mean) * scale + beta).to(dtype))
    return fused


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(bn, _BATCHNORMS) or bn.running_mean is None:
        return False
    if isinstance(layer, nn.Conv2d):
        return isinstance(bn, nn.BatchNorm2d) and bn.num_features == layer.out_channels
    if isinstance(layer, nn.Linear):
        return isinstance(bn, nn.BatchNorm1d) and bn.num_features == layer.out_features
    return False


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` (in eval mode) with every foldable BatchNorm folded away.

    "Follows" means the next module in an ``nn.Sequential``: a ``Conv2d`` then a ``BatchNorm2d``,
    or a ``Linear`` then a ``BatchNorm1d``, with matching channel counts. The layer is replaced by
    the fused one and the BatchNorm by ``nn.Identity``, so module indices (and the names of
    everything else) are kept. BatchNorms elsewhere, or without running statistics, stay as they
    are. The model must be in eval mode (``model.eval()``): training-mode BatchNorm normalises
    with the batch's statistics, which no fixed layer can reproduce. ``model`` is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_batchnorm expects an nn.Module; received {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            "fuse_batchnorm expects a model in eval mode (call model.eval() first); received one in "
            f"training mode ({len(training)} module(s) training, e.g. {training[0]!r})"
        )
    fused = copy.deepcopy(model)
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            layer, bn = seq[i], seq[i + 1]
            if _foldable(layer, bn):
                seq[i], seq[i + 1] = fold_batchnorm(layer, bn), nn.Identity()
    return fused.eval()
