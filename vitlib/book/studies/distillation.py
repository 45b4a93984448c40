"""Chapter 6's experiments: a convolutional teacher, the same ViT student trained alone and with
soft or hard distillation under one budget, with every image labelled and with few labelled, a
grid over temperature and alpha, and the speed of teacher against student.

Every student of a comparison starts from the same weights (the seed), sees the same batches in the
same order (fit's ``(seed, epoch)`` shuffling) and trains for the same epochs; only the loss
differs. The student is a :class:`~vitlib.models.DistillableViT` in every condition, trained by one
:class:`~vitlib.distill.DistillationLoss`: alone means ``alpha = 0`` (the labels only), and then only
its class head learns and is judged. When the data are not augmented the teacher's logits are
computed once for the whole training set, so a distilled run costs what a run alone costs.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Mapping, Sequence

import numpy as np
import torch

from ...bench import eval_mode, time_interleaved
from ..claims import Measured, seed_difference
from ...data import DataSplit, TensorImageDataset
from ...distill import UNLABELLED, DistillationLoss, agreement
from ...models import DistillableViT, ResNet
from ...models.state import private_rng
from ...train import evaluate, fit

__all__ = ["CONDITIONS", "SETTINGS", "subset", "hide_labels", "train_teacher", "compare_students",
           "accuracy_difference", "relative_accuracy", "against", "summary", "audit_wrappers", "temperature_alpha_grid",
           "speed", "batch_of"]

#: The three ways to train the student: alone (``alpha`` 0: the labels only), soft distillation
#: at the blog post's temperature 3 and alpha 0.5, and hard distillation (DeiT: the teacher's top
#: class as a second label, alpha 0.5).
CONDITIONS: dict[str, dict] = {
    "alone": {"temperature": 1.0, "alpha": 0.0, "hard": False},
    "soft": {"temperature": 3.0, "alpha": 0.5, "hard": False},
    "hard": {"temperature": 1.0, "alpha": 0.5, "hard": True},
}

_FIT = {"weight_decay": 0.05, "warmup_epochs": 1, "label_smoothing": 0.1, "grad_clip": 1.0}

#: The chapter's workload by mode. Quick: the digits at their own 8x8 pixels, a CIFAR-style
#: ResNet teacher, a two-block student on 2x2 patches of 4x4 pixels; full: CIFAR-10 with its
#: augmentation, ResNet-18 (from ImageNet where the network allows) and a six-block student, with
#: epochs that keep its 24 student runs within a free T4's 20 minutes (``make full-rehearsal``).
SETTINGS: dict[str, dict] = {
    "quick": {
        "dataset": {"name": "digits", "image_size": 8},
        "teacher": {"layers": (1, 1, 1), "widths": (16, 32, 64), "block": "basic", "stem": "cifar"},
        "imagenet": False,
        "teacher_fit": {**_FIT, "epochs": 10, "batch_size": 256, "lr": 5e-3},
        "student": {"patch_size": 4, "dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "mlp_dim": 64},
        "fit": {**_FIT, "epochs": 8, "batch_size": 256, "lr": 1e-2},
        "seeds": (0, 1, 2),
        "labelled": 0.1,
        "temperatures": (1.0, 3.0, 10.0),
        "alphas": (0.5, 0.9),
        "speed_batch": 256,
    },
    "full": {
        "dataset": {"name": "cifar10", "image_size": 32},
        "teacher": {"layers": (2, 2, 2, 2), "widths": (64, 128, 256, 512), "block": "basic", "stem": "cifar"},
        "imagenet": True,
        "teacher_fit": {**_FIT, "epochs": 5, "batch_size": 256, "lr": 5e-4},
        "student": {"patch_size": 4, "dim": 192, "depth": 6, "heads": 3, "dim_head": 64, "mlp_dim": 384},
        "fit": {**_FIT, "epochs": 3, "batch_size": 256, "lr": 1e-3, "warmup_epochs": 1},
        "seeds": (0, 1, 2),
        "labelled": 0.1,
        "temperatures": (1.0, 3.0, 10.0),
        "alphas": (0.5, 0.9),
        "speed_batch": 256,
    },
}


def _with(ds, idx: torch.Tensor | None = None, labels: torch.Tensor | None = None):
    """A copy of an in-memory dataset (the digits' tensors, CIFAR-10's uint8 images) restricted to
    ``idx`` and/or with other ``labels``; the images are shared, not copied, when only labels change."""
    if not (hasattr(ds, "images") and hasattr(ds, "labels")):
        raise ValueError(f"needs a data set held in memory (.images and .labels); received {type(ds).__name__}")
    out = copy.copy(ds)
    if idx is not None:
        out.images, out.labels = ds.images[idx], ds.labels[idx]
        if hasattr(ds, "planned_len"):  # the smoke scale's full size, in proportion
            out.planned_len = round(ds.planned_len * len(out.labels) / max(1, len(ds.labels)))
    if labels is not None:
        out.labels = labels
    return out


def _stratified(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    from ...data import stratified_split

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]; received {fraction!r}")
    if fraction == 1.0:
        return torch.arange(len(labels))
    kept, _ = stratified_split(labels.numpy(), 1.0 - fraction, seed)  # floor(fraction * N) kept
    return torch.as_tensor(kept)


def subset(split: DataSplit, fraction: float, seed: int = 0) -> DataSplit:
    """A copy of an in-memory ``split`` keeping a stratified ``fraction`` of the training images
    (every class in proportion) and the whole test set."""
    idx = _stratified(split.train.labels, fraction, seed)
    kept = _with(split.train, idx=idx)
    return DataSplit(f"{split.name} ({len(kept)} training images)", kept, split.test, split.classes,
                     split.image_size, split.channels)


def hide_labels(split: DataSplit, labelled: float, seed: int = 0) -> tuple[DataSplit, DataSplit]:
    """``(every image, few labels)``: the training images with all but a stratified ``labelled``
    share of their labels replaced by :data:`~vitlib.distill.UNLABELLED`, and the labelled images
    alone (to train the teacher on). A student trained alone on the first learns from the labelled
    images only; a distilled one also learns the teacher's view of the others."""
    idx = _stratified(split.train.labels, labelled, seed)
    labels = torch.full_like(split.train.labels, UNLABELLED)
    labels[idx] = split.train.labels[idx]
    every = DataSplit(f"{split.name} ({len(idx)} of {len(labels)} training images labelled)",
                      _with(split.train, labels=labels), split.test, split.classes, split.image_size, split.channels)
    few = DataSplit(f"{split.name} ({len(idx)} labelled training images)", _with(split.train, idx=idx), split.test,
                    split.classes, split.image_size, split.channels)
    return every, few


def batch_of(split_part, n: int) -> torch.Tensor:
    """The first ``n`` images of a data set, as one tensor (normalised, not augmented: test data)."""
    return torch.stack([split_part[i][0] for i in range(min(n, len(split_part)))])


def train_teacher(data: DataSplit, config: Mapping, fit_kwargs: Mapping, *, imagenet: bool = False, seed: int = 0,
                  device: torch.device | str = "cpu", steps_of: int | None = None):
    """A :class:`~vitlib.models.ResNet` built with ``config`` for ``data`` (from torchvision's
    ImageNet weights when ``imagenet``, where the network allows) and trained by
    :func:`~vitlib.train.fit`; returns ``(teacher in eval mode, history)``. ``steps_of``: train for
    as many optimiser steps as ``fit_kwargs``' epochs take on a training set of that size (a
    teacher of a small subset gets the same budget), evaluating only at the end."""
    from ...train.recipes import start_from_imagenet

    with private_rng(seed):  # the same weights for the same seed; the caller's random state untouched
        teacher = ResNet(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes, **config)
        if imagenet:
            start_from_imagenet(teacher)
    opts = dict(fit_kwargs)
    if steps_of is not None:
        opts["epochs"] = max(1, round(opts["epochs"] * math.ceil(steps_of / opts["batch_size"])
                                      / math.ceil(len(data.train) / opts["batch_size"])))
        opts["eval_every"] = opts["epochs"]
    history = fit(teacher, data.train, data.test, device=device, seed=seed, progress=False, **opts)
    return teacher.eval(), history


def _student(data: DataSplit, config: Mapping, seed: int) -> DistillableViT:
    with private_rng(seed):
        return DistillableViT(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes,
                              **config)


def _teacher_loss(teacher, data: DataSplit, fit_kwargs: Mapping, device) -> DistillationLoss:
    loss = DistillationLoss(teacher.to(device), label_smoothing=fit_kwargs.get("label_smoothing", 0.0))
    if fit_kwargs.get("augment") is None and isinstance(data.train, TensorImageDataset):
        loss.precompute(data.train)  # unaugmented data: one teacher pass for every epoch
    return loss


def _train(data, loss: DistillationLoss, config, condition: Mapping, fit_kwargs, seed, device):
    """One student; returns ``(model, history, head it is judged by, training seconds)``."""
    student = _student(data, config, seed)
    loss.temperature, loss.alpha, loss.hard = condition["temperature"], condition["alpha"], condition["hard"]
    head = "class" if loss.alpha == 0 else student.eval_head  # alone: only the class head learns
    loss.forward_kwargs = {"head": "class"} if loss.alpha == 0 else {}
    opts = {**fit_kwargs, "loss_fn": loss, "forward_kwargs": {"head": head}}
    t0 = time.perf_counter()
    history = fit(student, data.train, data.test, device=device, seed=seed, progress=False, **opts)
    return student.eval(), history, head, time.perf_counter() - t0


def compare_students(data: DataSplit, teacher: torch.nn.Module, student_config: Mapping, fit_kwargs: Mapping, *,
                     conditions: Mapping[str, Mapping] = CONDITIONS, seeds: Sequence[int] = (0, 1, 2),
                     device: torch.device | str = "cpu"):
    """Train the student under each of ``conditions`` for each seed (interleaved: seed by seed)
    and return a table, one row per run: ``condition``, ``seed``, ``accuracy`` (of the head the
    condition is judged by: the class head alone, DeiT's mean of both heads when distilled), for
    distilled students also ``class head`` and ``distillation head`` accuracy, ``agreement``
    with the teacher on the test set, and ``training s``. ``.attrs["histories"]`` maps
    ``(condition, seed)`` to each run's :class:`~vitlib.train.History`."""
    import pandas as pd

    loss = _teacher_loss(teacher, data, fit_kwargs, device)
    rows, histories = [], {}
    for seed in seeds:
        for name, condition in conditions.items():
            model, history, head, seconds = _train(data, loss, student_config, condition, fit_kwargs, seed, device)
            row = {"condition": name, "seed": seed, "accuracy": history.final["test_acc"]}
            if condition["alpha"] > 0:
                for label, h in (("class head", "class"), ("distillation head", "distill")):
                    row[label] = evaluate(model, data.test, forward_kwargs={"head": h})["accuracy"]
            row["agreement"] = agreement(model, teacher, data.test, forward_kwargs={"head": head})
            row["training s"] = seconds
            rows.append(row)
            histories[(name, seed)] = history
    table = pd.DataFrame(rows)
    table.attrs.update(histories=histories, test_size=len(data.test), data=data.name)
    return table


def accuracy_difference(results, other: str, base: str = "alone") -> Measured:
    """Accuracy of condition ``other`` minus ``base`` in percentage points, paired by seed, with
    its uncertainty (:func:`vitlib.book.claims.seed_difference`)."""
    return seed_difference(results, other, base)


def relative_accuracy(results, condition: str, teacher_accuracy: float) -> Measured:
    """The student's accuracy as a percentage of the teacher's (mean over seeds), with about 95%
    bounds: two standard errors of the ratio, from the binomial errors of both accuracies on
    this test set (the seeds share the test set, so they do not divide the student's error)."""
    accs = results.loc[results["condition"] == condition, "accuracy"]
    n = results.attrs["test_size"]
    a, t = float(accs.mean()), float(teacher_accuracy)
    value = 100 * a / t
    relative_var = (1 - a) / (a * n) + (1 - t) / (t * n)  # of a / t, to first order
    half = 2 * value * math.sqrt(relative_var)
    return Measured(value, value - half, value + half, len(accs), "%",
                    f"±{half:.1f} points: 2 standard errors of the ratio, {n} test images, "
                    f"{len(accs)} seed{'s' if len(accs) != 1 else ''}")


def against(measured: Mapping[str, Measured], threshold: float, unit: str = "") -> str:
    """Where each condition's range lies against ``threshold``, in words: the reason beside a
    verdict over several conditions."""
    words = []
    for condition, m in measured.items():
        where = "above" if m.low >= threshold else "below" if m.high < threshold else "on both sides of"
        words.append(f"{condition}, the range lies {where} {threshold:g}{unit}")
    return "; ".join(words)


def summary(results):
    """One row per condition (a styled table; ``.data`` is the DataFrame): accuracy (mean over
    seeds, %), its range over seeds, agreement with the teacher (%), the median training time, and
    the gain over training alone with its uncertainty."""
    import pandas as pd

    rows = []
    for name, group in results.groupby("condition", sort=False):
        rows.append({
            "condition": name,
            "seeds": len(group),
            "test accuracy %": 100 * group["accuracy"].mean(),
            "range over seeds (pt)": 100 * (group["accuracy"].max() - group["accuracy"].min()),
            "agreement with teacher %": 100 * group["agreement"].mean(),
            "training s (median)": group["training s"].median(),
            "gain over alone": "" if name == "alone" else str(accuracy_difference(results, name)),
        })
    table = pd.DataFrame(rows).set_index("condition")
    return table.style.format({c: "{:.1f}" for c in table.columns if c not in ("seeds", "gain over alone")})


def audit_wrappers(data: DataSplit, teacher_config: Mapping, student_config: Mapping, *, seed: int = 0):
    """What a distillation wrapper does to its teacher, vitlib's against vit-pytorch's (when it is
    installed), on one batch of ``data``: each wrapper is put in training mode and computes one
    loss. A table, one column per library."""
    import pandas as pd

    from ...distill import DistillWrapper

    with private_rng(seed):  # seeded weights and draws; the caller's random state untouched
        teacher = ResNet(image_size=data.image_size, channels=data.channels, num_classes=data.num_classes,
                         **teacher_config)
        n = min(32, len(data.train))
        x = torch.stack([data.train[i][0] for i in range(n)])
        y = torch.stack([data.train[i][1] for i in range(n)])
        ours = DistillWrapper(student=_student(data, student_config, seed), teacher=copy.deepcopy(teacher),
                              temperature=3.0, alpha=0.5)
        columns = {"vitlib": _audit(ours, ours.teacher, ours.student, x, y)}
        try:
            from vit_pytorch.distill import DistillableViT as TheirStudent
            from vit_pytorch.distill import DistillWrapper as TheirWrapper
        except ImportError:
            pass
        else:
            cfg = dict(student_config)
            theirs_student = TheirStudent(image_size=data.image_size, channels=data.channels,
                                          num_classes=data.num_classes, **cfg)
            theirs = TheirWrapper(student=theirs_student, teacher=copy.deepcopy(teacher), temperature=3.0, alpha=0.5)
            columns["vit-pytorch"] = _audit(theirs, theirs.teacher, theirs_student, x, y)
    return pd.DataFrame(columns)


def _audit(wrapper, teacher, student, x, y) -> dict:
    wrapper.train()
    in_eval = not teacher.training
    before = [b.clone() for b in teacher.buffers() if b.is_floating_point()]
    wrapper(x, y).backward()
    drift = any(not torch.equal(a, b) for a, b in zip(before, (b for b in teacher.buffers() if b.is_floating_point())))
    mine = {id(p) for p in teacher.parameters()}
    return {
        "teacher in eval mode after wrapper.train()": "yes" if in_eval else "no",
        "teacher's batch-norm statistics moved by one loss": "yes" if drift else "no",
        "teacher's weights among wrapper.parameters()": sum(p.numel() for p in wrapper.parameters() if id(p) in mine),
        "distillation token saved with the student": "yes" if any("distill" in k for k in student.state_dict())
        else "no",
    }


def temperature_alpha_grid(data: DataSplit, teacher: torch.nn.Module, student_config: Mapping,
                           fit_kwargs: Mapping, *, temperatures: Sequence[float], alphas: Sequence[float],
                           seed: int = 0, device: torch.device | str = "cpu", reuse=None):
    """Soft distillation at every ``(temperature, alpha)``, one seed each, and the student alone
    (``alpha`` 0, the same at every temperature): a table with ``temperature``, ``alpha``,
    ``accuracy`` and ``agreement`` with the teacher. ``reuse``: a :func:`compare_students` table
    of the same data, teacher, student and budget, whose runs of this seed under the same
    settings are taken instead of trained again."""
    import pandas as pd

    done = {}
    if reuse is not None:
        for _, row in reuse[reuse["seed"] == seed].iterrows():
            c = CONDITIONS.get(row["condition"])
            if c is not None and not c["hard"]:
                key = (c["temperature"] if c["alpha"] else 1.0, c["alpha"])
                done[key] = {"accuracy": row["accuracy"], "agreement": row["agreement"]}
    loss = _teacher_loss(teacher, data, fit_kwargs, device)
    settings = [(1.0, 0.0)] + [(t, a) for t in temperatures for a in alphas]
    rows = []
    for t, a in settings:
        result = done.get((t, a))
        if result is None:
            model, history, head, _ = _train(data, loss, student_config, {"temperature": t, "alpha": a, "hard": False},
                                             fit_kwargs, seed, device)
            result = {"accuracy": history.final["test_acc"],
                      "agreement": agreement(model, teacher, data.test, forward_kwargs={"head": head})}
        rows += [{"temperature": tt, "alpha": a, **result} for tt in (temperatures if a == 0 else (t,))]
    table = pd.DataFrame(rows).sort_values(["temperature", "alpha"]).reset_index(drop=True)
    table.attrs.update(test_size=len(data.test), seed=seed, data=data.name)
    return table


def speed(teacher: torch.nn.Module, student: torch.nn.Module, x: torch.Tensor, *, rounds: int = 5,
          min_run_time: float = 0.1, num_threads: int | None = None) -> dict:
    """Inference time of teacher and student on batch ``x``, interleaved round by round
    (:func:`vitlib.bench.time_interleaved`), in eval and inference mode: each one's per-call
    times (at least ``rounds`` a side), and the student's speed-up over the teacher as a
    :class:`~vitlib.book.claims.Measured` ratio (medians, spread from the interquartile ranges)."""
    def call(model):
        def run():
            with torch.inference_mode():
                model(x)
        return run

    import pandas as pd

    from ...bench import count_flops, count_parameters

    with eval_mode(teacher), eval_mode(student):
        times = time_interleaved({"teacher": call(teacher), "student": call(student)}, rounds=rounds,
                                 min_run_time=min_run_time, num_threads=num_threads, device=x.device)
    table = pd.DataFrame({name: {"parameters": count_parameters(model),
                                 "GFLOPs per image": count_flops(model, x[:1]) / 1e9,
                                 "ms per batch (median)": 1e3 * float(np.median(times[name])),
                                 "IQR ms": 1e3 * float(np.subtract(*np.percentile(times[name], [75, 25]))),
                                 "timed calls": len(times[name])}
                          for name, model in (("teacher", teacher), ("student", student))}).T
    table.index.name = "model"
    styled = table.style.format({"parameters": "{:,.0f}", "GFLOPs per image": "{:.4f}",
                                 "ms per batch (median)": "{:.2f}", "IQR ms": "{:.2f}", "timed calls": "{:.0f}"})
    threads = num_threads or torch.get_num_threads()
    where = f"batch {len(x)}, {threads} thread{'s' if threads > 1 else ''}, {x.device}"
    return {"times": times, "speedup": Measured.ratio(times["teacher"], times["student"]), "batch": len(x),
            "threads": threads, "where": where, "table": styled}
