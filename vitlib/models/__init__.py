"""vitlib's models, one file per family. ``MODELS`` maps a short name to each class;
:mod:`vitlib.models.presets` builds the papers' models by name."""
from . import presets
from .base import VisionModel
from .cross_vit import CrossViT
from .distill import DistillableViT
from .levit import LeViT
from .na_vit import NaViT, NaViTNested
from .resnet import ResNet
from .simple_vit import SimpleViT
from .vit import ViT

MODELS = {"vit": ViT, "simple_vit": SimpleViT, "levit": LeViT, "cross_vit": CrossViT, "navit": NaViT,
          "distillable_vit": DistillableViT, "resnet": ResNet}

__all__ = ["VisionModel", "ViT", "SimpleViT", "LeViT", "CrossViT", "NaViT", "NaViTNested", "DistillableViT", "ResNet",
           "MODELS", "presets"]
