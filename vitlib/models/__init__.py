"""vitlib's models, one file per family. ``MODELS`` maps a short name to each class."""
from .simple_vit import SimpleViT
from .vit import ViT

MODELS = {"vit": ViT, "simple_vit": SimpleViT}

__all__ = ["ViT", "SimpleViT", "MODELS"]
