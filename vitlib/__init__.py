"""vitlib: the models, training, measurement and export code of *Efficient Vision Transformers*."""
from .models import MODELS, CrossViT, LeViT, NaViT, NaViTNested, SimpleViT, ViT

__version__ = "0.1.0"

__all__ = ["ViT", "SimpleViT", "LeViT", "CrossViT", "NaViT", "NaViTNested", "MODELS", "__version__"]
