"""Training: ``fit`` and ``evaluate``, checkpoints that rebuild their model, recipes, a command line.

* :mod:`~vitlib.train.loop`: ``fit(model, train, test, loss_fn=..., forward_kwargs=...)`` with AdamW
  (weight decay skipped for what the model's ``no_weight_decay()`` names), linear warm-up and
  cosine decay (computed from the step number, so there is no scheduler state to lose), gradient
  clipping, and a loss hook ``loss_fn(model, (x, y)) -> (loss, logits)`` (default: cross-entropy
  with label smoothing) so that distillation or NaViT's packing need no copy of the loop.
  Mixed precision on CUDA: bf16 where the GPU computes it natively (compute capability 8.0+), else
  fp16 with a gradient scaler (:func:`vitlib.backends.half_precision`); none
  on CPU by default (bf16 autocast is several times slower than fp32 on CPUs without native bf16).
* :mod:`~vitlib.train.checkpoint`: safetensors files holding the weights, the optimizer's tensors,
  and as JSON metadata the model's class and config, the optimizer's settings and the history.
  ``load_model(path)`` rebuilds the model. Nothing is unpickled; writes are atomic.
* :mod:`~vitlib.train.recipes`: ``RECIPES[mode][family]``, ``train_recipe`` and
  ``train_conditions`` (several recipes over several seeds, for an accuracy difference).
* :mod:`~vitlib.train.cli`: ``python -m vitlib.train --model levit --mode quick``.

Resuming equals continuing: every epoch seeds its own shuffling, augmentation and dropout from
``(seed, epoch)``, so a run resumed from epoch k's checkpoint repeats the uninterrupted run's
losses exactly (on CPU).
"""
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_model, save_checkpoint
from .cli import main
from .loop import (
    CrossEntropy,
    History,
    RandomShift,
    adamw,
    build_optimizer,
    evaluate,
    fit,
    iterate_batches,
    lr_at,
    param_groups,
    resolve_device,
    unwrap,
)
from .recipes import (
    FULL_RECIPE,
    QUICK_RECIPE,
    RECIPES,
    build_model,
    load_recipe_data,
    recipe_for,
    train_conditions,
    train_recipe,
    train_seeds,
)

__all__ = [
    "History",
    "RandomShift",
    "fit",
    "evaluate",
    "lr_at",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "QUICK_RECIPE",
    "build_model",
    "FULL_RECIPE",
    "RECIPES",
    "train_recipe",
    "train_conditions",
    "train_seeds",
    "main",
    "CrossEntropy",
    "adamw",
    "build_optimizer",
    "param_groups",
    "iterate_batches",
    "resolve_device",
    "unwrap",
    "recipe_for",
    "load_recipe_data",
    "CHECKPOINT_FORMAT",
]
