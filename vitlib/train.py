"""Training: ``fit`` and ``evaluate``, checkpoints that rebuild their model, and a command line.

* AdamW with linear warm-up and cosine decay (computed from the step number, so there is no
  scheduler state to lose), label smoothing, gradient clipping.
* Mixed precision on CUDA: bf16 where the GPU supports it, else fp16 with a gradient scaler. None
  on CPU by default: bf16 autocast is several times slower than fp32 on CPUs without native bf16.
* Checkpoints are safetensors files: the weights, the optimizer's tensors, and as JSON metadata the
  model's class and config, the optimizer's settings and the history. ``load_model(path)`` rebuilds
  the model. Nothing is unpickled. Files are written to a temporary name and renamed, so a crash
  never leaves a half-written checkpoint.
* Resuming equals continuing: every epoch seeds its own shuffling, augmentation and dropout from
  ``(seed, epoch)``, so a run resumed from epoch k's checkpoint repeats the uninterrupted run's
  losses exactly (on CPU).

Command line: ``python -m vitlib.train --model simple_vit --dataset digits --epochs 30``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .data import ImageListDataset, TensorImageDataset, make_loader

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
    "main",
]

CHECKPOINT_FORMAT = "vitlib-checkpoint-1"


class History(list):
    """One record (dict) per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``test_loss``,
    ``test_acc``, ``lr``, ``epoch_s``, ``wall_s``, ``images_per_s``. ``.frame()`` gives a DataFrame."""

    def frame(self):
        import pandas as pd

        return pd.DataFrame(list(self))

    @property
    def final(self) -> dict:
        if not self:
            raise ValueError("the history is empty: no epoch has run")
        return self[-1]


class RandomShift:
    """Batch augmentation for in-memory images: shift each image by up to ``max_shift`` pixels
    in each direction (reflection at the borders). Runs as one gather on the batch's device."""

    def __init__(self, max_shift: int = 1) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0; received {max_shift}")
        self.max_shift = max_shift

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = self.max_shift
        if s == 0:
            return x
        b, c, h, w = x.shape
        padded = F.pad(x, (s, s, s, s), mode="reflect")
        dy = torch.randint(0, 2 * s + 1, (b, 1), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * s + 1, (b, 1), generator=generator).to(x.device)
        rows = (dy + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * s)
        out = padded.gather(2, rows)
        cols = (dx + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
        return out.gather(3, cols)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------------------------
# batches


def _batches(dataset: Dataset, batch_size: int, *, shuffle: bool, device: torch.device,
             generator: torch.Generator | None, cache: dict) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(dataset, TensorImageDataset):
        key = id(dataset)
        if key not in cache:  # move once, then batch by indexing
            cache[key] = (dataset.images.to(device), dataset.labels.to(device))
        images, labels = cache[key]
        n = len(labels)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield images[idx], labels[idx]
    elif isinstance(dataset, ImageListDataset):  # images of different sizes: a batch is a list
        key = id(dataset)
        if key not in cache:
            cache[key] = ([img.to(device) for img in dataset.images], dataset.labels.to(device))
        images, labels = cache[key]
        n = len(labels)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield [images[j] for j in idx.tolist()], labels[idx.to(device)]
    else:
        loader = make_loader(dataset, batch_size, shuffle=shuffle, device=device, generator=generator)
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _num_batches(dataset: Dataset, batch_size: int) -> int:
    return math.ceil(len(dataset) / batch_size)


# ---------------------------------------------------------------------------------------------
# precision


def _amp(device: torch.device, amp: str) -> tuple[torch.dtype | None, bool]:
    """Return (autocast dtype or None, whether to use a gradient scaler)."""
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'none'; received {amp!r}")
    if amp == "auto":
        if device.type != "cuda":
            return None, False
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "none":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, position tables and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "pos_embedding" in name or "token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# evaluate and fit


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 512, device: torch.device | str | None = None,
             amp: str = "auto") -> dict:
    """Mean cross-entropy and top-1 accuracy (0-1) of ``model`` on ``dataset``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype, _ = _amp(device, amp)
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in _batches(dataset, batch_size, shuffle=False, device=device, generator=None, cache={}):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        n += len(y)
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate received an empty dataset")
    return {"loss": loss_sum / n, "accuracy": correct / n, "n": n}


def fit(
    model: nn.Module,
    train: Dataset,
    test: Dataset | None = None,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    min_lr: float = 0.0,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.1,
    grad_clip: float | None = 1.0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    amp: str = "auto",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
    eval_every: int = 1,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> History:
    """Train ``model`` on ``train`` for ``epochs`` epochs and return the history.

    ``augment(batch, generator)`` transforms each training batch (for in-memory data, e.g.
    :class:`RandomShift`; datasets that augment per sample need none). ``checkpoint`` is written
    after every epoch; ``resume`` continues from such a file (the model must have the same
    configuration, e.g. from :func:`load_model`). ``test`` is evaluated every ``eval_every``
    epochs and after the last. ``callback(record)`` runs after each epoch (and its checkpoint).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive; received epochs={epochs}, batch_size={batch_size}")
    if len(train) == 0:
        raise ValueError("fit received an empty training set")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    dtype, use_scaler = _amp(device, amp)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    steps_per_epoch = _num_batches(train, batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    history, start_epoch, wall_offset = History(), 0, 0.0
    if resume is not None:
        state = load_checkpoint(resume, model=model, optimizer=optimizer, scaler=scaler, map_location=device)
        history = History(state.get("history", []))
        start_epoch = int(state["epoch"])
        wall_offset = history[-1]["wall_s"] if history else 0.0
        if state.get("epochs") not in (None, epochs):
            raise ValueError(f"the checkpoint was made for epochs={state['epochs']}; received epochs={epochs} "
                             "(the learning-rate schedule depends on it)")
    cache: dict = {}
    bar = None
    if progress:
        from .book import progress as tqdm  # a widget in Jupyter, none while the book builds

        bar = tqdm(total=epochs, initial=start_epoch, desc=f"training {type(model).__name__}", unit="epoch")
    t_start = time.perf_counter()
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        t_epoch = time.perf_counter()
        torch.manual_seed(seed * 100_003 + epoch)  # dropout and anything else on the global RNG
        gen = torch.Generator().manual_seed(seed * 100_019 + epoch)  # shuffling and augmentation
        model.train()
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for x, y in _batches(train, batch_size, shuffle=True, device=device, generator=gen, cache=cache):
            current_lr = lr_at(step, total_steps, warmup_steps, lr, min_lr)
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            if augment is not None:
                x = augment(x, gen)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach() * len(y)  # no host sync inside the loop
            correct += (logits.detach().argmax(-1) == y).sum()
            seen += len(y)
            step += 1
        train_s = time.perf_counter() - t_epoch
        record = {"epoch": epoch + 1, "train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen,
                  "lr": current_lr}
        if test is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            result = evaluate(model, test, device=device, amp=amp)
            record.update(test_loss=result["loss"], test_acc=result["accuracy"])
        record.update(epoch_s=time.perf_counter() - t_epoch, images_per_s=seen / train_s,
                      wall_s=wall_offset + time.perf_counter() - t_start)
        history.append(record)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer=optimizer, scaler=scaler,
                            state={"epoch": epoch + 1, "epochs": epochs, "seed": seed, "history": list(history)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("train_loss", "test_acc") if k in record})
        if callback is not None:
            callback(record)
    if bar is not None:
        bar.close()
    return history


# ---------------------------------------------------------------------------------------------
# checkpoints


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def _config_json(model: nn.Module, config: dict) -> str:
    try:
        return json.dumps(_jsonable(config))
    except TypeError as err:  # e.g. NaViT's token_dropout_prob given as a function
        raise ValueError(f"save_checkpoint stores the model's configuration as JSON, and {type(model).__name__}'s "
                         f"cannot be ({err}); received config {config!r}") from err


def save_checkpoint(path: str | Path, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None,
                    scaler: torch.amp.GradScaler | None = None, state: dict | None = None) -> Path:
    """Write model weights (and optimizer tensors) to a safetensors file, atomically.

    The model must carry a ``config`` dict (every vitlib model does) so that :func:`load_model`
    can rebuild it; optimizer settings, scaler state and ``state`` go into the file's metadata as
    JSON.
    """
    from safetensors.torch import save_file

    path = Path(path)
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"save_checkpoint needs a vitlib model with a .config; received {type(model).__name__}")
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "model_config": _config_json(model, config),
        "state": json.dumps(_jsonable(state or {})),
    }
    if optimizer is not None:
        opt = optimizer.state_dict()
        settings = {"param_groups": opt["param_groups"], "state": {}}
        for pid, pstate in opt["state"].items():
            settings["state"][str(pid)] = {}
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{pid}/{key}"] = value.detach().cpu().contiguous()
                else:
                    settings["state"][str(pid)][key] = value
        meta["optimizer"] = json.dumps(_jsonable(settings))
    if scaler is not None and scaler.is_enabled():
        meta["scaler"] = json.dumps(_jsonable(scaler.state_dict()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _read(path: str | Path, map_location) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with safe_open(str(path), framework="pt", device=str(map_location)) as f:
        meta = f.metadata() or {}
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a vitlib checkpoint (format {meta.get('format')!r}, "
                             f"expected {CHECKPOINT_FORMAT!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def load_checkpoint(path: str | Path, *, model: nn.Module | None = None, optimizer=None, scaler=None,
                    map_location: torch.device | str = "cpu") -> dict:
    """Load what :func:`save_checkpoint` wrote into the given objects; return the saved ``state``
    with ``model_class`` and ``model_config`` added."""
    tensors, meta = _read(path, map_location)
    if model is not None:
        if type(model).__name__ != meta["model_class"]:
            raise ValueError(f"{path} holds a {meta['model_class']}; received a {type(model).__name__}")
        prefix = "model/"
        model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"{path} holds no optimizer state")
        settings = json.loads(meta["optimizer"])
        state = {}
        for pid, pstate in settings["state"].items():
            state[int(pid)] = dict(pstate)
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, pid, name = key.split("/", 2)
                state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": settings["param_groups"]})
    if scaler is not None and "scaler" in meta:
        scaler.load_state_dict(json.loads(meta["scaler"]))
    out = json.loads(meta.get("state", "{}"))
    out.update(model_class=meta["model_class"], model_config=json.loads(meta["model_config"]))
    return out


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model saved in ``path`` from its class and config, load its weights, eval mode."""
    from .models import MODELS, NaViT, NaViTNested

    tensors, meta = _read(path, "cpu")
    classes = {cls.__name__: cls for cls in (*MODELS.values(), NaViT, NaViTNested)}
    name = meta["model_class"]
    if name not in classes:
        raise ValueError(f"{path} holds a {name}; vitlib knows {sorted(classes)}")
    model = classes[name](**json.loads(meta["model_config"]))
    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# the book's quick recipe and the command line

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


# The other families, trained with the same optimiser settings so that chapters compare models
# under one budget. LeViT's stem divides the image by 16, so it sees the digits at 32 pixels (CIFAR-10
# at 64): a 2x2 map at 32 px would leave nothing for its stages. ViT uses the SimpleViT recipe.
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
    },
    "full": {
        "simple_vit": FULL_RECIPE,
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
    },
}


def build_model(name: str, data, **config) -> nn.Module:
    """A model from :data:`vitlib.models.MODELS` sized for ``data`` (image size, channels, classes)."""
    from .models import MODELS

    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}; received {name!r}")
    return MODELS[name](image_size=data.image_size, channels=data.channels, num_classes=data.num_classes, **config)


def train_recipe(recipe: dict | None = None, *, model_name: str | None = None, model_overrides: dict | None = None,
                 seed: int = 0, device: torch.device | str = "cpu", progress: bool = True, data=None,
                 **fit_overrides):
    """Train a recipe (default :data:`QUICK_RECIPE`), optionally with another model of the same
    size, and return ``(model, history, data)``. ``data`` reuses an already loaded DataSplit."""
    from .data import TensorImageDataset, load_dataset

    r = recipe or QUICK_RECIPE
    if data is None:
        data = load_dataset(r["dataset"]["name"], image_size=r["dataset"]["image_size"])
    torch.manual_seed(seed)
    config = {k: v for k, v in r["model"].items() if k != "name"}
    config.update(model_overrides or {})
    model = build_model(model_name or r["model"]["name"], data, **config)
    opts = {k: v for k, v in r["fit"].items() if k != "shift"}
    opts.update(fit_overrides)
    shift = r["fit"].get("shift", 0)
    augment = RandomShift(shift) if shift and isinstance(data.train, TensorImageDataset) else None
    history = fit(model, data.train, data.test, augment=augment, device=device, seed=seed, progress=progress, **opts)
    return model, history, data


_CLI_MODEL_KEYS = ("patch_size", "dim", "depth", "heads", "dim_head", "mlp_dim")


def main(argv: list[str] | None = None) -> int:
    from .data import load_dataset
    from .models import MODELS

    r = QUICK_RECIPE
    p = argparse.ArgumentParser(prog="python -m vitlib.train", description="Train a vitlib model.")
    p.add_argument("--model", default=r["model"]["name"], choices=sorted(MODELS))
    p.add_argument("--dataset", default=r["dataset"]["name"], help="digits, cifar10 or an image folder path")
    p.add_argument("--image-size", type=int, default=None,
                   help="default: the data set's (digits: the model's quick recipe, 16 px, LeViT 32 px)")
    for key in _CLI_MODEL_KEYS:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                       help=f"ViT / SimpleViT (default: the quick recipe's {r['model'][key]})")
    f = r["fit"]
    p.add_argument("--epochs", type=int, default=f["epochs"])
    p.add_argument("--batch-size", type=int, default=f["batch_size"])
    p.add_argument("--lr", type=float, default=f["lr"])
    p.add_argument("--weight-decay", type=float, default=f["weight_decay"])
    p.add_argument("--warmup-epochs", type=float, default=f["warmup_epochs"])
    p.add_argument("--label-smoothing", type=float, default=f["label_smoothing"])
    p.add_argument("--shift", type=int, default=None,
                   help="random shift augmentation in pixels (in-memory data; default: the model's quick recipe)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, help="write a checkpoint here after every epoch")
    p.add_argument("--resume", type=Path, help="continue from this checkpoint")
    p.add_argument("--history", type=Path, help="write the history to this JSON file")
    args = p.parse_args(argv)

    recipe = RECIPES["quick"].get(args.model, r)  # ViT trains with the SimpleViT recipe
    config = {k: v for k, v in recipe["model"].items() if k != "name"}
    for key in _CLI_MODEL_KEYS:
        value = getattr(args, key)
        if value is None:
            continue
        if key not in config:
            p.error(f"--{key.replace('_', '-')} applies to vit and simple_vit; {args.model} is configured by "
                    f"vitlib.train.RECIPES ({config})")
        config[key] = value
    image_size = args.image_size or (recipe["dataset"]["image_size"] if args.dataset == "digits" else None)
    data = load_dataset(args.dataset, image_size=image_size)
    torch.manual_seed(args.seed)
    model = build_model(args.model, data, **config)
    shift = args.shift if args.shift is not None else recipe["fit"].get("shift", 0)
    print(f"{data}\n{type(model).__name__} {model.config}")
    history = fit(model, data.train, data.test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                  label_smoothing=args.label_smoothing,
                  augment=RandomShift(shift) if shift and isinstance(data.train, TensorImageDataset) else None,
                  device=args.device, amp=args.amp, seed=args.seed, checkpoint=args.checkpoint, resume=args.resume)
    last = history.final
    print(f"epoch {last['epoch']}: test accuracy {last.get('test_acc', float('nan')):.4f}, "
          f"train loss {last['train_loss']:.4f}, {last['wall_s']:.1f} s")
    if args.history:
        args.history.write_text(json.dumps(list(history), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from vitlib.train import main as _main

    sys.exit(_main())
