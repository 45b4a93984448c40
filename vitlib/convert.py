"""vit-pytorch models to vitlib models: same configuration, same weights, same logits.

vit-pytorch does not record its constructor arguments, so :func:`from_vit_pytorch` reads them off
the modules, then maps the weights key by key (BatchNorm running statistics included) and loads
them with ``strict=True``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import pair, posemb_sincos_2d
from .models import CrossViT, DistillableViT, LeViT, NaViT, SimpleViT, ViT
from .models.levit import VIT_PYTORCH_STEM_WIDTHS, relative_offset_indices

__all__ = ["from_vit_pytorch"]


def from_vit_pytorch(model: nn.Module, image_size=None) -> nn.Module:
    """Return the vitlib model equivalent to a vit-pytorch ``ViT``, ``SimpleViT``, ``LeViT``,
    ``CrossViT`` or ``NaViT`` (``vit_pytorch.na_vit``) instance, or to the student of a
    ``DistillWrapper`` (a :class:`~vitlib.models.DistillableViT` holding the wrapper's
    distillation token and head; the teacher is not converted).

    ``image_size`` is needed only for a ViT whose patch grid is not square: its learned position
    table tells the number of patches, not the grid's shape. A LeViT becomes a vitlib
    :class:`~vitlib.models.LeViT` with ``stem_activation=False`` (vit-pytorch's stem has no
    nonlinearity) and vit-pytorch's fixed stem widths. A NaViT keeps vit-pytorch's token-dropout
    count, ``token_dropout_rounding="floor"``. The result is in eval mode if the source was.
    """
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if kind == "vit_pytorch.distill.DistillableViT":
        raise ValueError("vit-pytorch keeps a DistillableViT's distillation token and head in its DistillWrapper: "
                         "pass the wrapper, from_vit_pytorch(distiller), to convert the student with them")
    converters = {
        "vit_pytorch.vit.ViT": _convert_vit,
        "vit_pytorch.simple_vit.SimpleViT": _convert_simple_vit,
        "vit_pytorch.levit.LeViT": _convert_levit,
        "vit_pytorch.cross_vit.CrossViT": _convert_cross_vit,
        "vit_pytorch.na_vit.NaViT": _convert_na_vit,
        "vit_pytorch.distill.DistillWrapper": _convert_distill_wrapper,
    }
    if kind == "vit_pytorch.na_vit_nested_tensor.NaViT":
        raise ValueError(
            "vit_pytorch.na_vit_nested_tensor.NaViT normalises queries and keys with a mean-centred LayerNorm "
            "(its attention pooling always does), which vitlib's RMS query-key norm cannot represent; "
            "from_vit_pytorch converts vit_pytorch.na_vit.NaViT, whose weights also run in vitlib's NaViTNested")
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


def _convert_distill_wrapper(wrapper: nn.Module, image_size) -> DistillableViT:
    student = wrapper.student
    kind = f"{type(student).__module__}.{type(student).__name__}"
    if kind != "vit_pytorch.distill.DistillableViT":
        raise ValueError(f"from_vit_pytorch converts a DistillWrapper around vit_pytorch.distill.DistillableViT; "
                         f"received one around {kind}")
    norm, head = wrapper.distill_mlp
    if not isinstance(norm, nn.Identity):
        raise ValueError("this DistillWrapper was built with mlp_layernorm=True: its distillation head normalises "
                         "tokens the transformer has already normalised, which vitlib's one-Linear head does not")
    vit = _convert_vit(student, image_size)
    out = DistillableViT(**vit.config)
    sd = {**vit.state_dict(), "distill_token": wrapper.distillation_token.reshape(1, -1),
          "distill_head.weight": head.weight, "distill_head.bias": head.bias}
    _load(out, sd)
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


def _load(out: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    out.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)


def _per_stage_value(values: list[int]):
    """vit-pytorch's per-stage argument: one int when all stages agree, else a tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


# ----- LeViT ------------------------------------------------------------------------------------


def _convert_levit(model: nn.Module, image_size) -> LeViT:
    convs = list(model.conv_embedding)
    if len(convs) != 4 or not all(isinstance(c, nn.Conv2d) for c in convs):
        raise ValueError("expected vit-pytorch LeViT's stem of four Conv2d layers; received a modified conv_embedding")
    widths = tuple(c.out_channels for c in convs[:3])
    if widths != VIT_PYTORCH_STEM_WIDTHS:
        raise ValueError(f"expected vit-pytorch's stem widths {VIT_PYTORCH_STEM_WIDTHS}; received {widths}")
    backbone = list(model.backbone)
    stage_mods = backbone[0::2]
    if any(len(t.layers) == 0 for t in stage_mods):
        raise ValueError("vitlib's LeViT needs depth >= 1 in every stage; the source has a stage with depth 0")
    first_attn = stage_mods[0].layers[0][0]
    fmap = math.isqrt(first_attn.pos_bias.num_embeddings)
    if image_size is not None and pair(image_size, "image_size") != (fmap * 16, fmap * 16):
        raise ValueError(f"the LeViT's first stage works on a {fmap}x{fmap} map, i.e. image_size={fmap * 16}; "
                         f"received image_size={image_size!r}")
    dims, depths, heads = [], [], []
    for t in stage_mods:
        attn, _ = t.layers[0]
        dims.append(attn.to_q[0].in_channels)
        depths.append(len(t.layers))
        heads.append(attn.heads)
    dim_key = first_attn.to_q[0].out_channels // first_attn.heads
    dim_value = first_attn.to_v[0].out_channels // first_attn.heads
    first_ff = stage_mods[0].layers[0][1].net[0]
    distill = model.distill_head if isinstance(model.distill_head, nn.Linear) else None
    out = LeViT(
        image_size=fmap * 16,
        num_classes=model.mlp_head.out_features,
        dim=_per_stage_value(dims),
        depth=_per_stage_value(depths),
        heads=_per_stage_value(heads),
        mlp_mult=first_ff.out_channels // first_ff.in_channels,
        stages=len(stage_mods),
        dim_key=dim_key,
        dim_value=dim_value,
        dropout=first_attn.dropout.p,
        num_distill_classes=distill.out_features if distill is not None else None,
        stem_activation=False,
        stem_widths=VIT_PYTORCH_STEM_WIDTHS,
        channels=convs[0].in_channels,
    )
    sd: dict[str, torch.Tensor] = {}
    for i, conv in enumerate(convs):
        sd[f"stem.{i}.weight"], sd[f"stem.{i}.bias"] = conv.weight, conv.bias
    for s, (src, dst) in enumerate(zip(backbone, out.backbone)):
        for j, ((attn, ff), block) in enumerate(zip(src.layers, dst.blocks)):
            p = f"backbone.{s}.blocks.{j}."
            for name in ("to_q", "to_k", "to_v", "to_out"):
                for key, value in getattr(attn, name).state_dict(keep_vars=True).items():
                    sd[f"{p}attn.{name}.{key}"] = value
            expected = relative_offset_indices(block.attn.fmap_size, block.attn.stride)
            if not torch.equal(attn.pos_indices.cpu(), expected):
                raise ValueError(f"backbone.{s}.layers.{j}: vit-pytorch's offset indices differ from vitlib's")
            # vit-pytorch adds pos_bias / scale to the scaled scores (a table of shape (offsets,
            # heads)); vitlib adds its (heads, offsets) table as it is, like the paper
            sd[p + "attn.attention_biases"] = attn.pos_bias.weight.t() / attn.scale
            fc1, fc2 = ff.net[0], ff.net[3]
            sd[p + "ff.fc1.weight"], sd[p + "ff.fc1.bias"] = fc1.weight, fc1.bias
            sd[p + "ff.fc2.weight"], sd[p + "ff.fc2.bias"] = fc2.weight, fc2.bias
    sd["head.weight"], sd["head.bias"] = model.mlp_head.weight, model.mlp_head.bias
    if distill is not None:
        sd["distill_head.weight"], sd["distill_head.bias"] = distill.weight, distill.bias
    _load(out, sd)
    return out


# ----- CrossViT ---------------------------------------------------------------------------------


def _attention_weights(attn: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """vit-pytorch cross_vit Attention (``to_q``, ``to_kv``) to :class:`vitlib.layers.Attention`:
    ``to_qkv``'s rows are the query rows then the key and value rows."""
    out = _linears(attn.to_out)[0]
    return {
        prefix + "norm.weight": attn.norm.weight,
        prefix + "norm.bias": attn.norm.bias,
        prefix + "to_qkv.weight": torch.cat((attn.to_q.weight, attn.to_kv.weight), dim=0),
        prefix + "to_out.weight": out.weight,
        prefix + "to_out.bias": out.bias,
    }


def _encoder_weights(enc: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    sd = {prefix + "norm.weight": enc.norm.weight, prefix + "norm.bias": enc.norm.bias}
    for i, (attn, ff) in enumerate(enc.layers):
        p = f"{prefix}blocks.{i}."
        sd.update(_attention_weights(attn, p + "attn."))
        norm, fc1, fc2 = ff.net[0], ff.net[1], ff.net[4]
        sd[p + "ff.norm.weight"], sd[p + "ff.norm.bias"] = norm.weight, norm.bias
        sd[p + "ff.fc1.weight"], sd[p + "ff.fc1.bias"] = fc1.weight, fc1.bias
        sd[p + "ff.fc2.weight"], sd[p + "ff.fc2.bias"] = fc2.weight, fc2.bias
    return sd


def _embedder(emb: nn.Module, prefix: str) -> tuple[dict[str, torch.Tensor], int, int, int]:
    """Weights, patch size, channels and number of patches of a vit-pytorch ImageEmbedder."""
    rearrange, norm_in, proj, norm_out = emb.to_patch_embedding
    patch = rearrange.axes_lengths["p1"]
    channels = norm_in.normalized_shape[0] // (patch * patch)
    dim = proj.out_features
    num_patches = emb.pos_embedding.numel() // dim - 1
    sd = {
        prefix + "patch_embedding.norm_in.weight": norm_in.weight,
        prefix + "patch_embedding.norm_in.bias": norm_in.bias,
        prefix + "patch_embedding.proj.weight": proj.weight,
        prefix + "patch_embedding.proj.bias": proj.bias,
        prefix + "patch_embedding.norm_out.weight": norm_out.weight,
        prefix + "patch_embedding.norm_out.bias": norm_out.bias,
        prefix + "cls_token": emb.cls_token.reshape(1, dim),
        prefix + "pos_embedding": emb.pos_embedding.reshape(num_patches + 1, dim),
    }
    return sd, patch, channels, num_patches


def _convert_cross_vit(model: nn.Module, image_size) -> CrossViT:
    sd_sm, sm_patch, channels, sm_n = _embedder(model.sm_image_embedder, "sm_embedding.")
    sd_lg, lg_patch, _, _ = _embedder(model.lg_image_embedder, "lg_embedding.")
    side = math.isqrt(sm_n) * sm_patch
    if image_size is not None and pair(image_size, "image_size") != (side, side):
        raise ValueError(f"the CrossViT's position tables fit image_size={side}; received image_size={image_size!r}")
    layers = model.multi_scale_encoder.layers
    sm_enc, lg_enc, cross = layers[0]

    def enc_cfg(enc):
        attn, ff = enc.layers[0]
        return dict(depth=len(enc.layers), heads=attn.heads, mlp_dim=ff.net[1].out_features,
                    dim_head=attn.to_q.out_features // attn.heads)

    sm_cfg, lg_cfg = enc_cfg(sm_enc), enc_cfg(lg_enc)
    cross_attn = cross.layers[0][0].fn
    sm_head_norm, sm_head_fc = model.sm_mlp_head
    lg_head_norm, lg_head_fc = model.lg_mlp_head
    out = CrossViT(
        image_size=side,
        num_classes=sm_head_fc.out_features,
        sm_dim=sm_head_fc.in_features,
        lg_dim=lg_head_fc.in_features,
        sm_patch_size=sm_patch,
        lg_patch_size=lg_patch,
        **{f"sm_enc_{k}": v for k, v in sm_cfg.items()},
        **{f"lg_enc_{k}": v for k, v in lg_cfg.items()},
        cross_attn_depth=len(cross.layers),
        cross_attn_heads=cross_attn.heads,
        cross_attn_dim_head=cross_attn.to_q.out_features // cross_attn.heads,
        depth=len(layers),
        dropout=cross_attn.dropout.p,
        emb_dropout=model.sm_image_embedder.dropout.p,
        channels=channels,
    )
    sd = {**sd_sm, **sd_lg}
    for i, (sm_enc, lg_enc, cross) in enumerate(layers):
        p = f"layers.{i}."
        sd.update(_encoder_weights(sm_enc, p + "sm_encoder."))
        sd.update(_encoder_weights(lg_enc, p + "lg_encoder."))
        for j, (sm_attend_lg, lg_attend_sm) in enumerate(cross.layers):
            for name, wrap in (("sm_attend_lg", sm_attend_lg), ("lg_attend_sm", lg_attend_sm)):
                q = f"{p}{name}.{j}."
                sd.update(_attention_weights(wrap.fn, q + "attn."))
                for proj in ("project_in", "project_out"):
                    layer = getattr(wrap, proj)
                    if isinstance(layer, nn.Linear):
                        sd[f"{q}{proj}.weight"], sd[f"{q}{proj}.bias"] = layer.weight, layer.bias
    for name, (norm, fc) in (("sm_head", (sm_head_norm, sm_head_fc)), ("lg_head", (lg_head_norm, lg_head_fc))):
        sd[f"{name}.norm.weight"], sd[f"{name}.norm.bias"] = norm.weight, norm.bias
        sd[f"{name}.fc.weight"], sd[f"{name}.fc.bias"] = fc.weight, fc.bias
    _load(out, sd)
    return out


# ----- NaViT ------------------------------------------------------------------------------------


def _norm_weights(norm: nn.Module, prefix: str, perm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """vit-pytorch NaViT's bias-free LayerNorm (``gamma`` and a zero ``beta`` buffer) to nn.LayerNorm."""
    weight, bias = norm.gamma, norm.beta
    if perm is not None:
        weight, bias = weight[perm], bias[perm]
    return {prefix + "weight": weight, prefix + "bias": bias}


def _na_vit_attention(attn: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """``to_q`` and ``to_kv`` stack into ``to_qkv``. vit-pytorch does not scale the logits after its
    RMS query-key norm; vitlib divides them by ``sqrt(dim_head)``, so each gain grows by
    ``dim_head ** 0.25`` (query gain times key gain: ``sqrt(dim_head)``)."""
    heads, dim_head = attn.heads, attn.to_q.out_features // attn.heads
    gain = dim_head**0.25
    return {
        **_norm_weights(attn.norm, prefix + "norm."),
        prefix + "to_qkv.weight": torch.cat((attn.to_q.weight, attn.to_kv.weight), dim=0),
        prefix + "q_norm.weight": attn.q_norm.gamma.reshape(heads, dim_head) * gain,
        prefix + "k_norm.weight": attn.k_norm.gamma.reshape(heads, dim_head) * gain,
        prefix + "to_out.weight": attn.to_out[0].weight,
    }


def _convert_na_vit(model: nn.Module, image_size) -> NaViT:
    norm_in, proj, _ = model.to_patch_embedding
    p, c = model.patch_size, model.channels
    dim = proj.out_features
    grid = (model.pos_embed_height.shape[0], model.pos_embed_width.shape[0])
    if image_size is not None and pair(image_size, "image_size") != (grid[0] * p, grid[1] * p):
        raise ValueError(f"the NaViT's position tables fit image_size={(grid[0] * p, grid[1] * p)}; "
                         f"received image_size={image_size!r}")
    layers = model.transformer.layers
    attn, ff = layers[0]
    calc = model.calc_token_dropout
    if calc is not None and getattr(calc, "__module__", None) == "vit_pytorch.na_vit" and calc.__name__ == "<lambda>":
        calc = float(calc(0, 0))  # vit-pytorch wraps a constant rate in a lambda: keep the number
    out = NaViT(
        image_size=_square_or_pair((grid[0] * p, grid[1] * p)),
        patch_size=p,
        num_classes=model.mlp_head[1].out_features,
        dim=dim,
        depth=len(layers),
        heads=attn.heads,
        mlp_dim=ff[1].out_features,
        channels=c,
        dim_head=attn.to_q.out_features // attn.heads,
        dropout=attn.dropout_p,
        emb_dropout=model.dropout.p,
        token_dropout_prob=calc,
        token_dropout_rounding="floor",  # vit-pytorch truncates the kept share
    )
    # vit-pytorch flattens a patch as (c p1 p2), vitlib as (p1 p2 c): permute the first norm and the projection
    perm = torch.arange(c * p * p).view(c, p, p).permute(1, 2, 0).reshape(-1)
    sd = {
        **_norm_weights(norm_in, "patch_embedding.norm_in.", perm),
        "patch_embedding.proj.weight": proj.weight[:, perm],
        "patch_embedding.proj.bias": proj.bias,
        **_norm_weights(model.to_patch_embedding[2], "patch_embedding.norm_out."),
        "pos_embedding.height": model.pos_embed_height,
        "pos_embedding.width": model.pos_embed_width,
        **_norm_weights(model.transformer.norm, "transformer.norm."),
        "attn_pool_queries": model.attn_pool_queries,
        **_na_vit_attention(model.attn_pool, "attn_pool."),
        **_norm_weights(model.mlp_head[0], "norm."),
        "head.weight": model.mlp_head[1].weight,
    }
    for i, (attn, ff) in enumerate(layers):
        q = f"transformer.blocks.{i}."
        sd.update(_na_vit_attention(attn, q + "attn."))
        sd.update(_norm_weights(ff[0], q + "ff.norm."))
        sd[q + "ff.fc1.weight"], sd[q + "ff.fc1.bias"] = ff[1].weight, ff[1].bias
        sd[q + "ff.fc2.weight"], sd[q + "ff.fc2.bias"] = ff[4].weight, ff[4].bias
    _load(out, sd)
    return out
