"""vitlib: the models, training, measurement and export code of *Efficient Vision Transformers*."""
from .models import MODELS, CrossViT, DistillableViT, LeViT, NaViT, NaViTNested, ResNet, SimpleViT, ViT
from .distill import DistillWrapper  # noqa: E402  (after the models it trains)
from .layers import attention_backend

__version__ = "0.1.0"

__all__ = ["ViT", "SimpleViT", "LeViT", "CrossViT", "NaViT", "NaViTNested", "DistillableViT", "DistillWrapper",
           "ResNet", "MODELS", "attention_backend", "__version__"]
