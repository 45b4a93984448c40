"""vitlib: the models, training, measurement and export code of *Efficient Vision Transformers*.

``import vitlib`` loads the models and the attention switch only: the training stack
(:mod:`vitlib.train`, and :class:`DistillWrapper`, which trains with it) loads when first used,
and the book's runtime (:mod:`vitlib.book`: the chapters' studies, widgets, claims and charts)
only when a chapter imports it.
"""
from .layers import attention_backend
from .models import MODELS, CrossViT, DistillableViT, LeViT, NaViT, NaViTNested, ResNet, SimpleViT, ViT

__version__ = "0.1.0"

__all__ = ["ViT", "SimpleViT", "LeViT", "CrossViT", "NaViT", "NaViTNested", "DistillableViT", "DistillWrapper",
           "ResNet", "MODELS", "attention_backend", "__version__"]


def __getattr__(name: str):
    if name == "DistillWrapper":  # on first use: it brings the training loop's loss with it
        from .distill import DistillWrapper

        return DistillWrapper
    raise AttributeError(f"module 'vitlib' has no attribute {name!r}")
