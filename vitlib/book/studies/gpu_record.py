"""``make gpu-record``: what the chapters show of a GPU, measured on one in at most 10 minutes, and
committed to ``book/results/gpu-record.json`` (it ships with vitlib, so Colab shows it too).

1. The ``gpu`` suite (:mod:`vitlib.book.studies.gpu`): every family eager and compiled, float32 and the
   GPU's own 16-bit autocast, and the attention sweep, within that suite's budget.
2. The main full-mode recipe (:data:`vitlib.train.FULL_RECIPE`: SimpleViT at width 384, CIFAR-10 at
   32 pixels, batches of 256) trained as ``fit`` trains it:

   * its throughput, from :data:`THROUGHPUT_EPOCHS` epochs on CIFAR-10-shaped data (CIFAR-10 itself
     when it is in the data folder; else an archive generated in its real format, since a lent GPU
     machine reaches no network and throughput does not depend on the pixels): images per second
     in the last epoch, and the FLOP/s that makes (FLOPs of one step, forward and backward, counted).
     :mod:`vitlib.book.fullmode` uses it in place of its assumed share of the GPU's peak;
   * its accuracy on real images that need no download: the bundled digits at 32 pixels, after
     :data:`ACCURACY_EPOCHS` epochs, with the test set's two-standard-error range.

``python -m vitlib.bench gpu-record --json book/results/gpu-record.json``; on a CPU, or with
``--tiny``, every part runs at a tiny setting in seconds (the tests run it so).
"""
from __future__ import annotations

import math
import tempfile
import time

import torch

from ...models.state import private_rng
from .gpu import gpu_suite

__all__ = ["THROUGHPUT_EPOCHS", "ACCURACY_EPOCHS", "gpu_record_suite", "recipe_throughput"]

THROUGHPUT_EPOCHS = 2
ACCURACY_EPOCHS = 30


def _cifar_shaped():
    """CIFAR-10 from the data folder, or one generated in its real format."""
    import os

    from ...data import cifar10
    from ..fullmode import cifar10_archive
    from ...locations import data_root

    try:
        return cifar10(data_root(), download=False), "CIFAR-10"
    except FileNotFoundError:
        folder = tempfile.mkdtemp(prefix="vitlib-cifar-shaped-")
        md5 = cifar10_archive(folder)
        old = os.environ.get("VITLIB_TEST_CIFAR10_MD5")
        os.environ["VITLIB_TEST_CIFAR10_MD5"] = md5
        try:
            data = cifar10(folder)
        finally:
            if old is None:
                os.environ.pop("VITLIB_TEST_CIFAR10_MD5")
            else:
                os.environ["VITLIB_TEST_CIFAR10_MD5"] = old
        return data, "CIFAR-10-shaped data generated in the real format (no network)"


def recipe_throughput(device: torch.device, *, tiny: bool = False, seed: int = 0) -> dict:
    """The main full-mode recipe's training throughput on ``device`` (see the module's doc)."""
    from torch.utils.data import Subset
    from torch.utils.flop_counter import FlopCounterMode

    from ...train import FULL_RECIPE, fit
    from ...train.recipes import build_model

    data, source = _cifar_shaped()
    train = Subset(data.train, range(512)) if tiny else data.train
    fit_opts = {k: v for k, v in FULL_RECIPE["fit"].items() if k not in ("shift", "epochs")}
    config = {k: v for k, v in FULL_RECIPE["model"].items() if k != "name"}
    if tiny:
        config.update(dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64)
        fit_opts["batch_size"] = 64
    with private_rng(seed):  # the same weights for the same seed; the caller's random state kept
        model = build_model(FULL_RECIPE["model"]["name"], data, **config)
    x = torch.stack([data.train[i][0] for i in range(fit_opts["batch_size"])])
    with FlopCounterMode(display=False) as counter:
        model(x).float().logsumexp(-1).sum().backward()
    model.zero_grad(set_to_none=True)
    flops_per_image = counter.get_total_flops() / len(x)
    history = fit(model, train, None, epochs=THROUGHPUT_EPOCHS, device=device, seed=seed, progress=False,
                  **fit_opts)
    last = history[-1]
    steps = math.ceil(len(train) / fit_opts["batch_size"])
    return {"recipe": "FULL_RECIPE", "data": source, "images": len(train), "epochs": THROUGHPUT_EPOCHS,
            "batch": fit_opts["batch_size"], "images_per_s": last["images_per_s"],
            "step_s": last["train_s"] / steps, "flops_per_image": flops_per_image,
            "flops_per_s": last["images_per_s"] * flops_per_image,
            "epoch_s": [h["train_s"] for h in history]}


def recipe_accuracy(device: torch.device, *, tiny: bool = False, seed: int = 0) -> dict:
    """The main full-mode recipe's model trained on the bundled digits at 32 pixels: test accuracy
    with the test set's two-standard-error range."""
    from ...data import load_dataset
    from ...train import FULL_RECIPE, fit
    from ...train.recipes import build_model

    data = load_dataset("digits", image_size=32)
    config = {k: v for k, v in FULL_RECIPE["model"].items() if k != "name"}
    fit_opts = {k: v for k, v in FULL_RECIPE["fit"].items() if k not in ("shift", "epochs")}
    epochs = 2 if tiny else ACCURACY_EPOCHS
    if tiny:
        config.update(dim=32, depth=1, heads=2, dim_head=16, mlp_dim=64)
    with private_rng(seed):
        model = build_model(FULL_RECIPE["model"]["name"], data, **config)
    start = time.perf_counter()
    history = fit(model, data.train, data.test, epochs=epochs, device=device, seed=seed, progress=False,
                  **fit_opts)
    acc, n = history[-1]["test_acc"], len(data.test)
    half = 2 * math.sqrt(max(acc * (1 - acc), 1.0 / n) / n)
    return {"data": data.name, "image_size": 32, "epochs": epochs, "test_images": n, "accuracy": acc,
            "accuracy_low": max(0.0, acc - half), "accuracy_high": min(1.0, acc + half),
            "wall_s": time.perf_counter() - start}


def gpu_record_suite(args) -> dict:
    """The ``gpu`` suite and the main recipe's training (see :mod:`vitlib.book.studies.gpu_record`)."""
    start = time.monotonic()
    device = torch.device(args.device)
    tiny = bool(getattr(args, "tiny", False)) or device.type != "cuda"
    figures = gpu_suite(args)
    print("\ntraining the main full-mode recipe (throughput, then accuracy on the digits)")
    training = recipe_throughput(device, tiny=tiny, seed=args.seed)
    accuracy = recipe_accuracy(device, tiny=tiny, seed=args.seed)
    print(f"  {training['images_per_s']:,.0f} images/s, {training['flops_per_s'] / 1e12:.1f} TFLOP/s "
          f"({training['data']}); digits at 32 px after {accuracy['epochs']} epochs: "
          f"{accuracy['accuracy']:.1%} [{accuracy['accuracy_low']:.1%}-{accuracy['accuracy_high']:.1%}]")
    return {**figures, "training": training, "accuracy": accuracy, "record_wall_s": time.monotonic() - start}
