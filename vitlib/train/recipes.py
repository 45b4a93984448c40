"""Recipes: a data set, a model configuration and training settings per family and mode.

``RECIPES[mode][family]`` for ``mode`` in ``"quick"`` (CPU: the bundled digits, small models) and
``"full"`` (a GPU: CIFAR-10, larger models), ``family`` a key of :data:`vitlib.models.MODELS`
(ViT trains with the SimpleViT recipe). A recipe is plain data (JSON-able):

* ``dataset``: ``name`` and ``image_size`` for :func:`vitlib.data.load_dataset`, and for NaViT
  ``mixed_scales``: each image is resized to one of these fractions of ``image_size`` (rounded to
  whole patches) by :func:`vitlib.data.mixed_resolution`;
* ``model``: ``name`` and the constructor's keywords (image size, channels and classes come from
  the data);
* ``fit``: keywords of :func:`vitlib.train.fit`, plus ``shift`` (:class:`RandomShift` pixels for
  in-memory data);
* optionally ``weights``: ``"imagenet"`` starts a ResNet teacher from torchvision's ImageNet
  weights (full mode; without a network it says so and starts from scratch), and ``distill``: the
  temperature, ``alpha`` and ``hard`` of :func:`vitlib.distill.train_student`.

:func:`train_recipe` trains one and returns ``(model, history, data)``; :func:`train_conditions`
trains several over several seeds and returns the table a chapter's verdicts read.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import nn

from ..data import DataSplit, TensorImageDataset, load_dataset, mixed_resolution
from ..models.state import private_rng
from .loop import RandomShift, fit

# The quick-mode recipe the book and `python -m vitlib.bench train` use: SimpleViT on the digits,
# upsampled to 16x16 and cut into 4x4 patches (16 tokens), trained from in-memory tensors.
QUICK_RECIPE = {
    "dataset": {"name": "digits", "image_size": 16},
    "model": {"name": "simple_vit", "patch_size": 4, "dim": 64, "depth": 4, "heads": 4, "dim_head": 16,
              "mlp_dim": 128},
    "fit": {"epochs": 40, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.05, "warmup_epochs": 2,
            "label_smoothing": 0.1, "grad_clip": 1.0, "shift": 1},
}


# Full mode (a GPU): CIFAR-10 at 32x32 with per-sample crop-and-flip augmentation.
FULL_RECIPE = {
    "dataset": {"name": "cifar10", "image_size": 32},
    "model": {"name": "simple_vit", "patch_size": 4, "dim": 384, "depth": 6, "heads": 8, "dim_head": 48,
              "mlp_dim": 768},
    "fit": {"epochs": 30, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 3,
            "label_smoothing": 0.1, "grad_clip": 1.0},
}

# NaViT packs each batch's images into sequences no longer than the batch's longest image (None:
# NaViT's own rule), so attention never spans the whole batch as one sequence. These are NaViT's
# defaults too (a flat list given without them packs the same way); spelled out, they stay the
# recipe's whatever the defaults become.
NAVIT_FORWARD = {"group_images": True, "group_max_seq_len": None}


# Distillation (vitlib.distill): the blog post's soft distillation at temperature 3, half the loss
# from the teacher.
DISTILL = {"temperature": 3.0, "alpha": 0.5, "hard": False}

# The other families, trained with the same optimiser settings so that chapters compare models
# under one budget. LeViT's stem divides the image by 16, so it sees the digits at 32 pixels (CIFAR-10
# at 64): a 2x2 map at 32 px would leave nothing for its stages. ViT uses the SimpleViT recipe.
# NaViT sees each image at half, three quarters or all of the recipe's size (digits: 8, 12 or 16 px).
RECIPES: dict[str, dict[str, dict]] = {
    "quick": {
        "simple_vit": QUICK_RECIPE,
        "levit": {
            "dataset": {"name": "digits", "image_size": 32},
            "model": {"name": "levit", "dim": (64, 96, 128), "depth": 2, "heads": (2, 3, 4), "mlp_mult": 2,
                      "dim_key": 16, "dim_value": 32},
            "fit": {**QUICK_RECIPE["fit"], "shift": 2},
        },
        "cross_vit": {
            "dataset": {"name": "digits", "image_size": 16},
            "model": {"name": "cross_vit", "sm_dim": 32, "sm_patch_size": 2, "sm_enc_depth": 1, "sm_enc_heads": 2,
                      "sm_enc_mlp_dim": 64, "sm_enc_dim_head": 16, "lg_dim": 64, "lg_patch_size": 4,
                      "lg_enc_depth": 2, "lg_enc_heads": 4, "lg_enc_mlp_dim": 128, "lg_enc_dim_head": 16,
                      "cross_attn_depth": 1, "cross_attn_heads": 4, "cross_attn_dim_head": 16, "depth": 2,
                      "dropout": 0.0, "emb_dropout": 0.0},
            "fit": QUICK_RECIPE["fit"],
        },
        # the teacher: a small CIFAR-style ResNet (a 3x3 stem at stride 1, three stages of one block)
        "resnet": {
            "dataset": {"name": "digits", "image_size": 16},
            "model": {"name": "resnet", "layers": (1, 1, 1), "widths": (16, 32, 64), "block": "basic", "stem": "cifar"},
            "fit": {**QUICK_RECIPE["fit"], "epochs": 15},
        },
        "distillable_vit": {
            "dataset": QUICK_RECIPE["dataset"],
            "model": {**QUICK_RECIPE["model"], "name": "distillable_vit"},
            "fit": QUICK_RECIPE["fit"],
            "distill": DISTILL,
        },
        "navit": {
            "dataset": {"name": "digits", "image_size": 16, "mixed_scales": (0.5, 0.75, 1.0)},
            "model": {"name": "navit", "patch_size": 4, "dim": 64, "depth": 4, "heads": 4, "dim_head": 16,
                      "mlp_dim": 128, "token_dropout_prob": None},
            "fit": {**QUICK_RECIPE["fit"], "shift": 0, "forward_kwargs": NAVIT_FORWARD},
        },
    },
    "full": {
        "simple_vit": FULL_RECIPE,
        # ResNet-18 with a stem for 32-pixel images, fine-tuned from ImageNet where the network allows
        "resnet": {
            "dataset": {"name": "cifar10", "image_size": 32},
            "model": {"name": "resnet", "layers": (2, 2, 2, 2), "widths": (64, 128, 256, 512), "block": "basic",
                      "stem": "cifar"},
            "weights": "imagenet",
            "fit": {**FULL_RECIPE["fit"], "epochs": 15, "lr": 5e-4, "warmup_epochs": 1},
        },
        "distillable_vit": {
            "dataset": FULL_RECIPE["dataset"],
            "model": {**FULL_RECIPE["model"], "name": "distillable_vit"},
            "fit": FULL_RECIPE["fit"],
            "distill": DISTILL,
        },
        "levit": {
            "dataset": {"name": "cifar10", "image_size": 64},
            "model": {"name": "levit", "dim": (128, 256, 384), "depth": (2, 3, 4), "heads": (4, 6, 8),
                      "mlp_mult": 2, "dim_key": 16, "dim_value": 32},
            "fit": FULL_RECIPE["fit"],
        },
        "cross_vit": {
            "dataset": {"name": "cifar10", "image_size": 32},
            "model": {"name": "cross_vit", "sm_dim": 192, "sm_patch_size": 2, "sm_enc_depth": 1, "sm_enc_heads": 4,
                      "sm_enc_mlp_dim": 384, "sm_enc_dim_head": 48, "lg_dim": 384, "lg_patch_size": 4,
                      "lg_enc_depth": 3, "lg_enc_heads": 8, "lg_enc_mlp_dim": 768, "lg_enc_dim_head": 48,
                      "cross_attn_depth": 1, "cross_attn_heads": 8, "cross_attn_dim_head": 48, "depth": 2,
                      "dropout": 0.0, "emb_dropout": 0.0},
            "fit": FULL_RECIPE["fit"],
        },
        "navit": {
            "dataset": {"name": "cifar10", "image_size": 32, "mixed_scales": (0.5, 0.75, 1.0)},
            "model": {"name": "navit", "patch_size": 4, "dim": 384, "depth": 6, "heads": 8, "dim_head": 48,
                      "mlp_dim": 768, "token_dropout_prob": None},
            "fit": {**FULL_RECIPE["fit"], "forward_kwargs": NAVIT_FORWARD},
        },
    },
}


def default_mode(device: torch.device | str = "cpu", env: dict | None = None) -> str:
    """The recipes' mode where none is named: ``$VITLIB_MODE`` when set (as in the book), else
    ``"full"`` on a CUDA device and ``"quick"`` anywhere else (as ``python -m vitlib.train`` chooses)."""
    env = os.environ if env is None else env
    forced = env.get("VITLIB_MODE", "").strip().lower()
    if forced and forced not in RECIPES:
        raise ValueError(f"VITLIB_MODE must be one of {sorted(RECIPES)}; received {env['VITLIB_MODE']!r}")
    return forced or ("full" if torch.device(device).type == "cuda" else "quick")


def recipe_for(family: str, mode: str = "quick") -> dict:
    """``RECIPES[mode][family]``; a family without its own recipe (ViT) takes SimpleViT's."""
    if mode not in RECIPES:
        raise ValueError(f"mode must be one of {sorted(RECIPES)}; received {mode!r}")
    return RECIPES[mode].get(family, RECIPES[mode]["simple_vit"])


def mixed_sizes(image_size: tuple[int, int], scales, patch_size) -> list[tuple[int, int]]:
    """The sizes ``scale * image_size`` for each of ``scales``, rounded to whole patches (at least
    one), largest last, without repeats."""
    from ..layers import pair

    (h, w), (ph, pw) = pair(image_size, "image_size"), pair(patch_size, "patch_size")
    if not scales or any(not 0.0 < float(s) <= 1.0 for s in scales):
        raise ValueError(f"mixed_scales must be fractions in (0, 1]; received {scales!r}")
    sizes = {(max(ph, round(h * s / ph) * ph), max(pw, round(w * s / pw) * pw)) for s in scales}
    return sorted(sizes)


def load_recipe_data(recipe: dict, *, seed: int = 0, **load_kwargs) -> DataSplit:
    """The data of ``recipe`` (keywords go to :func:`~vitlib.data.load_dataset`), resized to mixed
    resolutions (drawn with ``seed``) when the recipe has ``mixed_scales``."""
    spec = recipe["dataset"]
    data = load_dataset(spec["name"], image_size=spec.get("image_size"), **load_kwargs)
    scales = spec.get("mixed_scales")
    if scales:
        sizes = mixed_sizes(data.image_size, scales, recipe["model"].get("patch_size", 1))
        data = mixed_resolution(data, sizes, seed=seed)
    return data


def build_model(name: str, data, **config) -> nn.Module:
    """A model from :data:`vitlib.models.MODELS` sized for ``data`` (image size, channels, classes)."""
    from ..models import MODELS

    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; received {name!r}")
    return MODELS[name](image_size=data.image_size, channels=data.channels, num_classes=data.num_classes, **config)


def start_from_imagenet(model: nn.Module) -> bool:
    """Load torchvision's ImageNet weights into a ResNet and say so; without them (no network),
    say why and go on from scratch. Returns whether the weights were loaded."""
    try:
        left = model.load_imagenet_weights()
    except RuntimeError as err:
        print(f"ImageNet weights unavailable, so the ResNet trains from scratch: {err}")
        return False
    print(f"started from torchvision's ImageNet {model.imagenet_arch} weights (new: {', '.join(left)})")
    return True


def train_recipe(recipe: dict | None = None, *, model_name: str | None = None, model_overrides: dict | None = None,
                 seed: int = 0, device: torch.device | str = "cpu", progress: bool = True, data=None,
                 **fit_overrides):
    """Train a recipe (default :data:`QUICK_RECIPE`), optionally with another model of the same
    size, and return ``(model, history, data)``. ``data`` reuses an already loaded DataSplit;
    ``fit_overrides`` replace the recipe's ``fit`` keywords (and may add any other of
    :func:`~vitlib.train.fit`'s: ``checkpoint``, ``resume``, ``amp``, ``loss_fn``...)."""
    r = recipe or QUICK_RECIPE
    if data is None:
        data = load_recipe_data(r, seed=seed)
    config = {k: v for k, v in r["model"].items() if k != "name"}
    config.update(model_overrides or {})
    with private_rng(seed):  # the same weights for the same seed; the caller's random state untouched
        model = build_model(model_name or r["model"]["name"], data, **config)
        if r.get("weights") == "imagenet" and not model_name:
            start_from_imagenet(model)
    opts = {k: v for k, v in r["fit"].items() if k != "shift"}
    opts.update(fit_overrides)
    shift = r["fit"].get("shift", 0)
    if "augment" not in opts:
        opts["augment"] = RandomShift(shift) if shift and isinstance(data.train, TensorImageDataset) else None
    history = fit(model, data.train, data.test, device=device, seed=seed, progress=progress, **opts)
    return model, history, data


def train_conditions(recipes, seeds, *, data, device: torch.device | str = "cpu", rotate: bool = False,
                     progress: bool = False, **fit_overrides):
    """Train each recipe of ``recipes`` (a condition's name mapped to a full recipe, model included)
    once per seed on the same ``data`` (``fit_overrides`` replace the recipes' ``fit`` keywords), run
    by run: seed after seed, every condition in turn; with ``rotate`` the order turns by one each
    seed, so that no condition always runs first or meets the same spell of a shared machine.

    Returns the table :func:`vitlib.book.claims.seed_difference` and :func:`vitlib.book.claims.epoch_speedup`
    read: ``condition``, ``seed``, ``accuracy`` (final test accuracy), ``wall_s`` (the whole run:
    building the model, training, evaluating), ``train_s`` (its training epochs alone),
    ``images_per_s`` (median epoch) and ``order`` (the run's place within its seed), with
    ``attrs``: ``test_size``, ``seeds``, ``histories`` (a History frame per ``(condition, seed)``)
    and ``params`` (per condition)."""
    import time

    import pandas as pd

    names = list(recipes)
    if not seeds:
        raise ValueError("train_conditions needs at least one seed; received none")
    if not names:
        raise ValueError("train_conditions needs at least one condition; received none")
    rows, histories, params = [], {}, {}
    for k, seed in enumerate(seeds):
        turn = k % len(names) if rotate else 0
        for place, name in enumerate(names[turn:] + names[:turn]):
            start = time.perf_counter()
            model, history, _ = train_recipe(dict(recipes[name]), seed=seed, data=data, device=device,
                                             progress=progress, **fit_overrides)
            wall = time.perf_counter() - start
            frame = histories[(name, seed)] = history.frame()
            params[name] = sum(p.numel() for p in model.parameters())
            rows.append({"condition": name, "seed": seed, "accuracy": float(frame["test_acc"].iloc[-1]),
                         "wall_s": wall, "train_s": float(frame["train_s"].sum()),
                         "images_per_s": float(frame["images_per_s"].median()), "order": place})
    table = pd.DataFrame(rows)
    table.attrs.update(test_size=len(data.test), seeds=list(seeds), histories=histories, params=params)
    return table


def train_seeds(recipe: Mapping, models: Mapping[str, tuple[str, Mapping]], seeds: Sequence[int], *, data,
                device: torch.device | str = "cpu", **fit_overrides):
    """Train each of ``models`` (a name mapped to ``(family, overrides)``, e.g.
    ``{"ViT": ("vit", {"dropout": 0.1})}``) with ``recipe``'s sizes and fit once per seed, one
    model after the other: :func:`train_conditions`'s table, which
    :func:`vitlib.book.claims.seed_difference` turns into an accuracy difference."""
    recipes = {name: {**recipe, "model": {**recipe["model"], **overrides, "name": family}}
               for name, (family, overrides) in models.items()}
    return train_conditions(recipes, seeds, data=data, device=device, **fit_overrides)
