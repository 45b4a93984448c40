"""Models by name: the configurations of the papers, with the papers' own figures beside them.

``create("ViT-B/16")`` builds ViT-Base with 16-pixel patches at 224 px for 1,000 classes;
``create("levit-128s", num_classes=10)`` overrides any keyword. Names are case-insensitive.
Configurations use vit-pytorch's keyword names. Each :class:`Preset` carries the parameters
(millions), multiply-adds (billions, at its image size) and ImageNet-1k top-1 accuracy that its
paper reports, where the paper reports them, so that chapters can print them beside what they
count; ``source`` says where each figure comes from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from torch import nn

from .cross_vit import PAPER_LG_SCALE

__all__ = ["Preset", "PRESETS", "get", "create", "build_meta", "config", "names", "HEADS_MEANING", "sizing_config",
           "resolve_config"]


@dataclass(frozen=True)
class Preset:
    """A named configuration of one model family (``family`` is a key of
    :data:`vitlib.models.MODELS`) and what its paper reports about it."""

    name: str
    family: str
    config: Mapping = field(repr=False)
    paper_params_m: float | None = None
    paper_gmacs: float | None = None
    paper_top1: float | None = None
    source: str = ""

    def create(self, **overrides) -> nn.Module:
        """Build the model; ``overrides`` replace keywords of the configuration (:func:`config`)."""
        from . import MODELS

        return MODELS[self.family](**_merged(self.config, overrides))


def _merged(base: Mapping, overrides: Mapping) -> dict:
    """``base`` with ``overrides``. A size given for a branch (``lg_image_size=224``) replaces the
    base's scale for it (``lg_image_scale``), which would otherwise contradict it."""
    merged = {**base, **overrides}
    for key, value in overrides.items():
        scale = key.removesuffix("_image_size") + "_image_scale"
        if key.endswith("_image_size") and value is not None and scale not in overrides:
            merged.pop(scale, None)
    return merged


def _vit(dim: int, depth: int, heads: int, patch: int = 16, image: int = 224) -> dict:
    return dict(image_size=image, patch_size=patch, num_classes=1000, dim=dim, depth=depth, heads=heads,
                dim_head=dim // heads, mlp_dim=4 * dim)


def _levit(dim, depth, heads, dim_key) -> dict:
    # value size 2 * key size as in the paper's blocks; MLP ratio 2
    return dict(image_size=224, num_classes=1000, dim=dim, depth=depth, heads=heads, mlp_mult=2, dim_key=dim_key,
                dim_value=2 * dim_key)


def _crossvit(sm_dim: int, lg_dim: int, heads: int, lg_depth: int, mlp_ratio: int) -> dict:
    # The paper's sizes: 240-pixel images, whose 12-pixel patches the small-patch branch sees as they
    # are (400 patches) and the large-patch branch 16-pixel patches of a 224-pixel copy (196 patches).
    # The copy is a fixed fraction of the image (cross_vit.scaled_size), so a preset built at another
    # image_size keeps the paper's ratio: image_size=480 gives the large-patch branch 448 pixels.
    # One head size serves both cross-attentions here (the paper's large-to-small one works at the
    # small branch's width), which adds 1-3% to the multiply-adds.
    return dict(image_size=240, lg_image_scale=PAPER_LG_SCALE, num_classes=1000, sm_dim=sm_dim, lg_dim=lg_dim,
                sm_patch_size=12, lg_patch_size=16, sm_enc_depth=1, lg_enc_depth=lg_depth, sm_enc_heads=heads,
                lg_enc_heads=heads, sm_enc_dim_head=sm_dim // heads, lg_enc_dim_head=lg_dim // heads,
                sm_enc_mlp_dim=mlp_ratio * sm_dim, lg_enc_mlp_dim=mlp_ratio * lg_dim, cross_attn_depth=1,
                cross_attn_heads=heads, cross_attn_dim_head=lg_dim // heads, depth=3, dropout=0.0, emb_dropout=0.0)


def _resnet(layers, block: str) -> dict:
    return dict(image_size=224, num_classes=1000, layers=layers, widths=(64, 128, 256, 512), block=block,
                stem="imagenet")


_VIT_SRC = ("parameters: ViT (Dosovitskiy et al., 2021) Table 1 for Base and Large, DeiT (Touvron et al., 2021) "
            "Table 1 for Tiny and Small; top-1 (ImageNet-1k only): DeiT; multiply-adds: the figures "
            "later papers' comparison tables and timm quote for these configurations")
_LEVIT_SRC = "LeViT (Graham et al., 2021), Table 3 (top-1 with distillation, 1000 epochs)"
_CROSSVIT_SRC = ("CrossViT (Chen et al., 2021), Table 3: the models with a linear patch embedding (the rows "
                 "without a dagger; CrossViT-9\u2020, with three convolutions instead, reaches 77.1%)")
_DEIT_SRC = ("DeiT (Touvron et al., 2021), distilled models with a RegNetY-16GF teacher, 300 epochs "
             "(facebookresearch/deit model zoo); here the distillation token has no position embedding "
             "(vit-pytorch's layout)")
_RESNET_SRC = "torchvision's ImageNet weights (IMAGENET1K_V1): parameters, GFLOPS (multiply-adds) and acc@1"
_SIMPLE_SRC = "Better plain ViT baselines (Beyer et al., 2022): the ViT-S/16 configuration; no size figures given"

_TABLE = [
    Preset("ViT-Ti/16", "vit", _vit(192, 12, 3), 5.0, 1.3, 72.2, _VIT_SRC),
    Preset("ViT-S/16", "vit", _vit(384, 12, 6), 22.0, 4.6, 79.8, _VIT_SRC),
    Preset("ViT-B/16", "vit", _vit(768, 12, 12), 86.0, 17.6, 81.8, _VIT_SRC),
    Preset("ViT-L/16", "vit", _vit(1024, 24, 16), 307.0, None, None, _VIT_SRC),
    Preset("DeiT-Ti/16-distilled", "distillable_vit", _vit(192, 12, 3), 6.0, None, 74.5, _DEIT_SRC),
    Preset("DeiT-S/16-distilled", "distillable_vit", _vit(384, 12, 6), 22.0, None, 81.2, _DEIT_SRC),
    Preset("DeiT-B/16-distilled", "distillable_vit", _vit(768, 12, 12), 87.0, None, 83.4, _DEIT_SRC),
    Preset("ResNet-18", "resnet", _resnet((2, 2, 2, 2), "basic"), 11.69, 1.814, 69.758, _RESNET_SRC),
    Preset("ResNet-34", "resnet", _resnet((3, 4, 6, 3), "basic"), 21.80, 3.664, 73.314, _RESNET_SRC),
    Preset("ResNet-50", "resnet", _resnet((3, 4, 6, 3), "bottleneck"), 25.56, 4.089, 76.13, _RESNET_SRC),
    Preset("SimpleViT-S/16", "simple_vit", _vit(384, 12, 6), None, None, None, _SIMPLE_SRC),
    Preset("LeViT-128S", "levit", _levit((128, 256, 384), (2, 3, 4), (4, 6, 8), 16), 7.8, 0.305, 76.6, _LEVIT_SRC),
    Preset("LeViT-128", "levit", _levit((128, 256, 384), (4, 4, 4), (4, 8, 12), 16), 9.2, 0.406, 78.6, _LEVIT_SRC),
    Preset("LeViT-192", "levit", _levit((192, 288, 384), (4, 4, 4), (3, 5, 6), 32), 11.0, 0.658, 80.0, _LEVIT_SRC),
    Preset("LeViT-256", "levit", _levit((256, 384, 512), (4, 4, 4), (4, 6, 8), 32), 18.9, 1.120, 81.6, _LEVIT_SRC),
    Preset("LeViT-384", "levit", _levit((384, 512, 768), (4, 4, 4), (6, 9, 12), 32), 39.1, 2.353, 82.6, _LEVIT_SRC),
    Preset("CrossViT-Ti", "cross_vit", _crossvit(96, 192, 3, 4, 4), 6.9, 1.6, 73.4, _CROSSVIT_SRC),
    Preset("CrossViT-S", "cross_vit", _crossvit(192, 384, 6, 4, 4), 26.7, 5.6, 81.0, _CROSSVIT_SRC),
    Preset("CrossViT-B", "cross_vit", _crossvit(384, 768, 12, 4, 4), 104.7, 21.2, 82.2, _CROSSVIT_SRC),
    Preset("CrossViT-9", "cross_vit", _crossvit(128, 256, 4, 3, 3), 8.6, 1.8, 73.9, _CROSSVIT_SRC),
    Preset("CrossViT-15", "cross_vit", _crossvit(192, 384, 6, 5, 3), 27.4, 5.8, 81.5, _CROSSVIT_SRC),
    Preset("CrossViT-18", "cross_vit", _crossvit(224, 448, 7, 6, 3), 43.3, 9.0, 82.5, _CROSSVIT_SRC),
]

#: Every preset by its canonical name (e.g. ``"ViT-B/16"``), in table order.
PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _TABLE})
_BY_KEY = {p.name.lower(): p for p in _TABLE}


def get(name: str) -> Preset:
    """The :class:`Preset` called ``name`` (case-insensitive); a ValueError lists the names."""
    preset = _BY_KEY.get(str(name).strip().lower())
    if preset is None:
        raise ValueError(f"no preset named {name!r}; expected one of {list(PRESETS)}")
    return preset


def config(name: str, **overrides) -> dict:
    """A copy of the preset's keyword arguments with ``overrides`` applied; a branch's size given
    (``lg_image_size=...``) replaces the preset's scale for that branch."""
    return _merged(get(name).config, overrides)


def create(name: str, **overrides) -> nn.Module:
    """Build the preset ``name`` (e.g. ``"vit-b/16"``), with ``overrides`` replacing keywords."""
    return get(name).create(**overrides)


def build_meta(name: str, **overrides) -> nn.Module:
    """:func:`create` on PyTorch's ``meta`` device, in eval mode: the model's shapes without memory
    or arithmetic, for counting parameters and FLOPs at any size."""
    import torch

    with torch.device("meta"):
        return create(name, **overrides).eval()


def names(family: str | None = None) -> list[str]:
    """Canonical names of all presets, or of one family's (``"vit"``, ``"levit"``, ...)."""
    return [p.name for p in _TABLE if family is None or p.family == family]


#: What "heads" means wherever a configuration is resized (:func:`sizing_config`).
HEADS_MEANING = "heads at a fixed inner width: dim_head = dim / heads"


def sizing_config(base: Mapping, **changes) -> dict:
    """``base`` with ``changes``. When ``dim`` or ``heads`` changes and ``dim_head`` is not given,
    ``dim_head`` becomes ``dim // heads`` (:data:`HEADS_MEANING`): more heads split the same
    width, they do not add width. Giving ``dim_head`` explicitly keeps it fixed instead, so the
    inner width ``heads * dim_head`` grows with the heads (the other meaning, named as such).
    Raises ValueError when ``dim`` is not a multiple of ``heads``."""
    cfg = {**base, **changes}
    if ("dim" in changes or "heads" in changes) and "dim_head" not in changes:
        dim, heads = cfg["dim"], cfg["heads"]
        if heads < 1 or dim % heads:
            raise ValueError(f"dim must be a multiple of heads ({HEADS_MEANING}); received dim={dim}, heads={heads}")
        cfg["dim_head"] = dim // heads
    return cfg


def resolve_config(base: str | Mapping, family: str | None = None) -> tuple[str, dict]:
    """``(family, config)`` of a preset name (e.g. ``"SimpleViT-S/16"``) or of a configuration
    dictionary of ``family`` (default ``"simple_vit"``)."""
    if isinstance(base, str):
        preset = get(base)
        return family or preset.family, dict(preset.config)
    if not isinstance(base, Mapping):
        raise TypeError(f"expected a preset name or a configuration dictionary; received {type(base).__name__}")
    from . import MODELS

    family = family or "simple_vit"
    if family not in MODELS:
        raise ValueError(f"family must be one of {sorted(MODELS)}; received {family!r}")
    return family, dict(base)
