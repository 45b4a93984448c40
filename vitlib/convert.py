"""vit-pytorch models to vitlib models: same configuration, same weights, same logits.

vit-pytorch does not record its constructor arguments, so :func:`from_vit_pytorch` reads them off
the modules, then maps the weights key by key and loads them with ``strict=True``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import pair, posemb_sincos_2d
from .models import SimpleViT, ViT

__all__ = ["from_vit_pytorch"]


def from_vit_pytorch(model: nn.Module, image_size=None) -> nn.Module:
    """Return the vitlib model equivalent to a vit-pytorch ``ViT`` or ``SimpleViT`` instance.

    ``image_size`` is needed only for a ViT whose patch grid is not square: its learned position
    table tells the number of patches, not the grid's shape. The result is in eval mode if the
    source was.
    """
    kind = f"{type(model).__module__}.{type(model).__name__}"
    converters = {"vit_pytorch.vit.ViT": _convert_vit, "vit_pytorch.simple_vit.SimpleViT": _convert_simple_vit}
    if kind not in converters:
        raise ValueError(f"from_vit_pytorch converts {', '.join(sorted(converters))}; received {kind}")
    out = converters[kind](model, image_size)
    out.train(model.training)
    return out


def _linears(seq: nn.Module) -> list[nn.Linear]:
    return [m for m in seq.modules() if isinstance(m, nn.Linear)]


def _dropouts(seq: nn.Module) -> list[float]:
    return [m.p for m in seq.modules() if isinstance(m, nn.Dropout)]


def _common(model: nn.Module) -> dict:
    """Hyperparameters that ViT and SimpleViT store the same way."""
    ph, pw = model.patch_size
    _, norm_in, proj, _ = model.to_patch_embedding
    patch_dim = norm_in.normalized_shape[0]
    layers = model.transformer.layers
    attn, ff = layers[0]
    inner = attn.to_qkv.out_features // 3
    return dict(
        patch_size=(ph, pw),
        channels=patch_dim // (ph * pw),
        dim=proj.out_features,
        depth=len(layers),
        heads=attn.heads,
        dim_head=inner // attn.heads,
        mlp_dim=_linears(ff)[0].out_features,
    )


def _grid_image_size(grid: tuple[int, int], patch_size: tuple[int, int]):
    (gh, gw), (ph, pw) = grid, patch_size
    return _square_or_pair((gh * ph, gw * pw))


def _check_image_size(image_size, num_patches: int, patch_size: tuple[int, int]) -> tuple[int, int]:
    ih, iw = pair(image_size, "image_size")
    (ph, pw) = patch_size
    if ih % ph or iw % pw or (ih // ph) * (iw // pw) != num_patches:
        raise ValueError(
            f"image_size {(ih, iw)} with patch_size {patch_size} gives {(ih // ph) * (iw // pw)} patches; "
            f"the model's position table holds {num_patches}"
        )
    return ih // ph, iw // pw


def _block_weights(layers, *, project_out_bias: bool) -> dict[str, torch.Tensor]:
    sd = {}
    for i, (attn, ff) in enumerate(layers):
        p = f"transformer.blocks.{i}."
        sd[p + "attn.norm.weight"], sd[p + "attn.norm.bias"] = attn.norm.weight, attn.norm.bias
        sd[p + "attn.to_qkv.weight"] = attn.to_qkv.weight
        out = _linears(attn.to_out)
        if out:
            sd[p + "attn.to_out.weight"] = out[0].weight
            if project_out_bias:
                sd[p + "attn.to_out.bias"] = out[0].bias
        else:  # vit-pytorch drops the projection when heads == 1 and dim_head == dim: identity
            dim = attn.to_qkv.in_features
            sd[p + "attn.to_out.weight"] = torch.eye(dim, dtype=attn.to_qkv.weight.dtype)
            sd[p + "attn.to_out.bias"] = torch.zeros(dim, dtype=attn.to_qkv.weight.dtype)
        norm = ff.net[0]
        fc1, fc2 = _linears(ff)
        sd[p + "ff.norm.weight"], sd[p + "ff.norm.bias"] = norm.weight, norm.bias
        sd[p + "ff.fc1.weight"], sd[p + "ff.fc1.bias"] = fc1.weight, fc1.bias
        sd[p + "ff.fc2.weight"], sd[p + "ff.fc2.bias"] = fc2.weight, fc2.bias
    return sd


def _stem_and_head(model: nn.Module, head: nn.Linear) -> dict[str, torch.Tensor]:
    _, norm_in, proj, norm_out = model.to_patch_embedding
    return {
        "patch_embedding.norm_in.weight": norm_in.weight,
        "patch_embedding.norm_in.bias": norm_in.bias,
        "patch_embedding.proj.weight": proj.weight,
        "patch_embedding.proj.bias": proj.bias,
        "patch_embedding.norm_out.weight": norm_out.weight,
        "patch_embedding.norm_out.bias": norm_out.bias,
        "transformer.norm.weight": model.transformer.norm.weight,
        "transformer.norm.bias": model.transformer.norm.bias,
        "head.weight": head.weight,
        "head.bias": head.bias,
    }


def _convert_vit(model: nn.Module, image_size) -> ViT:
    if model.mlp_head is None:
        raise ValueError("vit-pytorch ViT with num_classes=0 returns tokens, not logits; vitlib's ViT needs num_classes >= 1")
    cfg = _common(model)
    dim = cfg["dim"]
    num_cls = model.cls_token.numel() // dim
    pool = model.pool
    num_patches = model.pos_embedding.numel() // dim - num_cls
    if image_size is None:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(
                f"the position table holds {num_patches} patches, which is not a square grid; "
                "pass image_size=(height, width)"
            )
        grid = (side, side)
    else:
        grid = _check_image_size(image_size, num_patches, cfg["patch_size"])
    ff_drop = _dropouts(model.transformer.layers[0][1])
    out = ViT(
        image_size=_grid_image_size(grid, cfg["patch_size"]),
        num_classes=model.mlp_head.out_features,
        pool=pool,
        dropout=ff_drop[0] if ff_drop else 0.0,
        emb_dropout=model.dropout.p,
        **{**cfg, "patch_size": _square_or_pair(cfg["patch_size"])},
    )
    sd = {**_stem_and_head(model, model.mlp_head), **_block_weights(model.transformer.layers, project_out_bias=True)}
    sd["cls_token"] = model.cls_token.reshape(num_cls, dim)
    sd["pos_embedding"] = model.pos_embedding.reshape(num_patches + num_cls, dim)
    out.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    return out


def _convert_simple_vit(model: nn.Module, image_size) -> SimpleViT:
    cfg = _common(model)
    pe = model.pos_embedding
    num_patches, dim = pe.shape
    # The fixed sin-cos table encodes the grid's shape: find the factorisation that reproduces it.
    candidates = [(h, num_patches // h) for h in range(1, num_patches + 1) if num_patches % h == 0]
    if image_size is not None:
        candidates = [_check_image_size(image_size, num_patches, cfg["patch_size"])]
    grid = next((g for g in candidates if torch.allclose(posemb_sincos_2d(*g, dim), pe.float().cpu(), atol=1e-6)), None)
    if grid is None:
        raise ValueError("the SimpleViT's position table matches no patch grid of its size; was it modified?")
    out = SimpleViT(
        image_size=_grid_image_size(grid, cfg["patch_size"]),
        num_classes=model.linear_head.out_features,
        **{**cfg, "patch_size": _square_or_pair(cfg["patch_size"])},
    )
    sd = {**_stem_and_head(model, model.linear_head), **_block_weights(model.transformer.layers, project_out_bias=False)}
    out.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    return out


def _square_or_pair(size: tuple[int, int]):
    return size[0] if size[0] == size[1] else size
