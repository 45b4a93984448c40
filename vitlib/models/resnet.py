"""ResNet (He et al., 2016, "Deep residual learning for image recognition"): the convolutional
teacher of the distillation chapter, built from torchvision's residual blocks.

A ViT student learns from a CNN teacher what it lacks on small data sets: the CNN's bias towards
local, translation-invariant features (DeiT found a convolutional teacher better than a
transformer one). The teacher must suit the images it sees:

* ``stem="cifar"`` (for images of 16 to 64 pixels): one 3x3 convolution at stride 1, no max-pool,
  as in He et al.'s CIFAR-10 networks, so that a 16-pixel image is not reduced to 4 pixels
  before the first residual stage;
* ``stem="imagenet"``: torchvision's 7x7 convolution at stride 2 and a max-pool (for 224 pixels).

``layers`` (blocks per stage, torchvision's name) and ``widths`` (channels per stage) size it;
each stage after the first halves the map. Module names are torchvision's (``conv1``, ``bn1``,
``layer1``..., ``fc``), so that :meth:`ResNet.load_imagenet_weights` loads torchvision's ImageNet
weights key by key into the configurations that have them (ResNet-18/34/50/101/152). The weights
are never fetched by the constructor: a checkpoint rebuilds the network from its config and loads
its own weights.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import VisionModel, check_num_classes, check_positive, classifier, model_config

__all__ = ["ResNet", "IMAGENET_ARCHS", "imagenet_arch"]

BLOCKS = ("basic", "bottleneck")  # torchvision's BasicBlock and Bottleneck
STEMS = ("cifar", "imagenet")
IMAGENET_WIDTHS = (64, 128, 256, 512)
#: torchvision's ImageNet networks as ``(layers, block)``: the configurations with ImageNet weights.
IMAGENET_ARCHS = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
    "resnet152": ((3, 8, 36, 3), "bottleneck"),
}


def imagenet_arch(layers, widths, block: str) -> str | None:
    """The torchvision network (``"resnet18"``...) with these stages, or None."""
    if tuple(widths) != IMAGENET_WIDTHS:
        return None
    return next((name for name, (l, b) in IMAGENET_ARCHS.items() if l == tuple(layers) and b == block), None)


def _stage(cls, inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    """torchvision's ``_make_layer`` (a projection shortcut where the shape changes); returns the
    stage and its output channels."""
    from torchvision.models.resnet import conv1x1

    out_planes = planes * cls.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
    blocks_ = [cls(inplanes, planes, stride, downsample)] + [cls(out_planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*blocks_), out_planes


class ResNet(VisionModel):
    """A ResNet sized for the data, from torchvision's ``BasicBlock`` or ``Bottleneck``.

    ``ResNet(image_size=16, num_classes=10, channels=1, layers=(1, 1, 1), widths=(16, 32, 64))``
    is a small CIFAR-style network; ``layers=(2, 2, 2, 2), widths=(64, 128, 256, 512),
    stem="imagenet"`` is torchvision's ``resnet18``. The model accepts only images of exactly
    ``image_size`` (an int or ``(height, width)``), like every vitlib model.
    """

    head_names = ("fc",)
    classifier_names = ("fc",)

    def __init__(
        self,
        *,
        image_size,
        num_classes: int,
        channels: int = 3,
        layers=(3, 3, 3),
        widths=(16, 32, 64),
        block: str = "basic",
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        from ..layers import pair

        check_num_classes(num_classes)
        check_positive(channels=channels)
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}; received {block!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}; received {stem!r}")
        layers, widths = tuple(layers), tuple(widths)
        if not layers or len(layers) != len(widths):
            raise ValueError(f"layers and widths need one value per stage; received layers={layers!r} and "
                             f"widths={widths!r}")
        check_positive(**{f"layers[{i}]": v for i, v in enumerate(layers)},
                       **{f"widths[{i}]": v for i, v in enumerate(widths)})
        self.image_size = pair(image_size, "image_size")
        self.channels, self.num_classes = channels, num_classes
        self.config = model_config(image_size=image_size, num_classes=num_classes, channels=channels, layers=layers,
                                   widths=widths, block=block, stem=stem)
        from torchvision.models.resnet import BasicBlock, Bottleneck  # imported when a ResNet is built

        cls = BasicBlock if block == "basic" else Bottleneck
        planes = widths[0] if stem == "cifar" else 64
        if stem == "cifar":
            self.conv1 = nn.Conv2d(channels, planes, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(channels, planes, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.stages = len(layers)
        for i, (n, width) in enumerate(zip(layers, widths)):
            stage, planes = _stage(cls, planes, width, n, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[-1] * cls.expansion
        self.fc = classifier(self.num_features, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """Images ``(b, c, H, W)`` to the last stage's feature map."""
        self.check_input(img)
        x = self.maxpool(self.relu(self.bn1(self.conv1(img))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def pool_features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Global average pooling: ``(b, channels, h, w) -> (b, channels)``, what ``fc`` reads."""
        return torch.flatten(self.avgpool(fmap), 1)

    def parts(self) -> dict[str, list[str]]:
        """The stem, each residual stage, the classifier."""
        return {"stem": ["conv1", "bn1"], **{f"stage {i + 1}": [f"layer{i + 1}"] for i in range(self.stages)},
                "head": ["fc"]}

    def components(self) -> dict[str, str]:
        """The stem counts as the patch embedding (it turns pixels into features), the classifier
        as the head; everything else (convolutions, batch norms) is "other"."""
        return {"conv1": "patch embedding", "bn1": "patch embedding", **super().components()}

    @property
    def imagenet_arch(self) -> str | None:
        """The torchvision network with this configuration's stages (``"resnet18"``...), or None."""
        c = self.config
        return imagenet_arch(c["layers"], c["widths"], c["block"])

    def load_imagenet_weights(self, weights: str = "DEFAULT", progress: bool = False) -> list[str]:
        """Load torchvision's ImageNet weights (downloaded once into torch's cache) and return the
        names of the tensors left as they were: the classifier (``fc``, for this model's classes)
        and, with the CIFAR stem or a channel count other than 3, ``conv1``, whose shapes differ.

        Raises ValueError for a configuration without ImageNet weights, and RuntimeError, naming
        the file and the reason, when the weights cannot be fetched (no network)."""
        arch = self.imagenet_arch
        if arch is None:
            raise ValueError(f"torchvision has ImageNet weights for {sorted(IMAGENET_ARCHS)} (widths "
                             f"{IMAGENET_WIDTHS}); received a ResNet with layers={self.config['layers']}, "
                             f"widths={self.config['widths']}, block={self.config['block']!r}")
        from torchvision.models import get_model_weights

        chosen = get_model_weights(arch)[weights] if weights != "DEFAULT" else get_model_weights(arch).DEFAULT
        try:
            source = chosen.get_state_dict(progress=progress)
        except Exception as err:  # URLError, timeouts, a corrupt file: name it, do not guess
            raise RuntimeError(f"could not fetch torchvision's {arch} ImageNet weights ({chosen.url}): "
                               f"{type(err).__name__}: {err}") from err
        own = self.state_dict()
        loaded = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(loaded, strict=False)
        return sorted(set(own) - set(loaded))
