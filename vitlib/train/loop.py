"""The training loop: ``fit`` and ``evaluate``, the default loss, the optimiser and the schedule.

``fit`` trains whatever a loss function defines. A loss is any callable
``loss_fn(model, batch) -> (loss, logits)`` with ``batch = (x, y)`` (``x`` a tensor, or a list of
images for NaViT); ``logits`` are what training accuracy is counted from. The default,
:class:`CrossEntropy`, is cross-entropy with label smoothing on ``model(x, **forward_kwargs)``.
A loss that needs modules of its own (a frozen teacher for distillation) is an ``nn.Module``:
``fit`` moves it to the device, never puts its parameters in the optimiser, and never changes its
train/eval mode.

The same ``fit`` trains on several processes (launched by torchrun, inside
:func:`vitlib.train.distributed.session`). Every process draws the same order of global batches
from ``(seed, epoch)`` and trains a DistributedDataParallel replica on its slice of each
(:func:`iterate_batches`); the optimiser, the weight-decay groups and the checkpoints look at
:func:`unwrap`'s module, the forward pass goes through the wrapper, and the gradients that reach
the optimiser are those of the whole global batch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..backends import autocast, half_precision
from ..data import ImageListDataset, TensorImageDataset
from ..models.state import module_modes, private_rng, restore_modes
from .batches import Inputs, ShardedBatches, global_batch_sizes, iterate_batches  # noqa: F401  (re-exported)
from .distributed import World, all_sum, part_bounds, world

#: ``loss_fn(model, (x, y)) -> (loss, logits)``.
LossFn = Callable[[nn.Module, tuple], tuple]


class History(list):
    """One record (dict) per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``test_loss``,
    ``test_acc``, ``lr``, ``train_s`` (the epoch's training steps), ``epoch_s`` (with its evaluation),
    ``wall_s``, ``images_per_s``. ``.frame()`` gives a DataFrame."""

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
# devices, wrapped models, precision


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a (Distributed)DataParallel wrapper, else ``model``: what owns the
    ``config``, the parameter names and ``no_weight_decay()``."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def _available_devices() -> list[str]:
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: torch.device | str | None, model: nn.Module | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`, checked to exist on this machine (else ValueError
    naming it and the devices there are); ``None`` means the device of ``model``'s parameters."""
    if device is None:
        first = next(model.parameters(), None) if model is not None else None
        return first.device if first is not None else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda'; received {device!r} "
                         f"(available here: {', '.join(_available_devices())})") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
            raise ValueError(f"device {str(device)!r} was requested, but CUDA is not available on this machine "
                             f"({why}); available: {', '.join(_available_devices())}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} was requested, but this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s); available: {', '.join(_available_devices())}")
    elif dev.type == "mps" and "mps" not in _available_devices():
        raise ValueError(f"device {str(device)!r} was requested, but MPS is not available on this machine; "
                         f"available: {', '.join(_available_devices())}")
    return dev


def _amp(device: torch.device, amp: str) -> tuple[torch.dtype | None, bool]:
    """Return (autocast dtype or None, whether to use a gradient scaler)."""
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'none'; received {amp!r}")
    if amp == "auto":
        if device.type != "cuda":
            return None, False
        amp = "bf16" if half_precision(device) == torch.bfloat16 else "fp16"
    if amp == "none":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# optimiser


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: ``weight_decay`` for most weights, none for those the model names in
    ``no_weight_decay()`` (every vitlib model says which), or, for a model without that method,
    none for parameters of fewer than two dimensions (biases, norm gains)."""
    core = unwrap(model)
    named = [(name, p) for name, p in core.named_parameters() if p.requires_grad]
    ask = getattr(core, "no_weight_decay", None)
    if callable(ask):
        skip = set(ask())
        unknown = skip - {name for name, _ in core.named_parameters()}
        if unknown:
            raise ValueError(f"{type(core).__name__}.no_weight_decay() names parameters it does not have: "
                             f"{sorted(unknown)}")
    else:
        skip = {name for name, p in named if p.ndim < 2}
    decay = [p for name, p in named if name not in skip]
    no_decay = [p for name, p in named if name in skip]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """:class:`torch.optim.AdamW` over ``params`` (tensors or parameter groups), with its fused
    kernel when every parameter is floating point on a CPU or a CUDA device. On a CPU, AdamW's
    default loops over the tensors one by one, several times slower than the fused kernel: for a
    ViT-B/16 the optimiser step would cost about as much as forward and backward together."""
    params = [{**g, "params": _tensors(g["params"])} if isinstance(g, dict) else g for g in _tensors(params)]
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def _tensors(params) -> list:
    """A list of what ``params`` holds (one tensor, or an iterable that may be a generator)."""
    return [params] if isinstance(params, torch.Tensor) else list(params)


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (:func:`adamw`) over ``model``'s trainable parameters only, grouped by
    :func:`param_groups`."""
    return adamw(param_groups(model, weight_decay), lr=lr)


# ---------------------------------------------------------------------------------------------
# losses


class CrossEntropy(nn.Module):
    """``fit``'s default loss: cross-entropy (with ``label_smoothing``) of ``model(x, **forward_kwargs)``.

    A loss that adds terms (e.g. distillation against a teacher held as a submodule) can subclass
    it and call :meth:`logits` for the model's forward pass with the same keyword arguments.
    """

    def __init__(self, label_smoothing: float = 0.0, forward_kwargs: dict | None = None) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); received {label_smoothing!r}")
        self.label_smoothing = label_smoothing
        self.forward_kwargs = dict(forward_kwargs or {})

    def logits(self, model: nn.Module, x: Inputs):
        return model(x, **self.forward_kwargs)

    def forward(self, model: nn.Module, batch: tuple[Inputs, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = _checked_logits(self.logits(model, x), model, y, "CrossEntropy")
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), logits

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, forward_kwargs={self.forward_kwargs}"


def _checked_logits(logits, model: nn.Module, y: torch.Tensor, where: str) -> torch.Tensor:
    if isinstance(logits, (tuple, list)):
        raise ValueError(f"{where} needs logits (batch, classes); {type(unwrap(model)).__name__} returned a "
                         f"{type(logits).__name__} of {len(logits)} in {'training' if model.training else 'eval'} "
                         "mode (a model with two heads must return one tensor in eval mode, and a loss_fn "
                         "returns (loss, logits of one head))")
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != len(y):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{where} needs logits of shape ({len(y)}, classes); received {shape}")
    return logits


# ---------------------------------------------------------------------------------------------
# evaluate and fit


def _part(dataset: Dataset, rank: int, size: int) -> Dataset:
    """The ``rank``-th of ``size`` consecutive parts of ``dataset`` (in-memory data stay in memory)."""
    a, b = part_bounds(len(dataset), rank, size)
    if isinstance(dataset, TensorImageDataset):
        return TensorImageDataset(dataset.images[a:b], dataset.labels[a:b])
    if isinstance(dataset, ImageListDataset):
        return ImageListDataset(dataset.images[a:b], dataset.labels[a:b])
    return torch.utils.data.Subset(dataset, range(a, b))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 512, device: torch.device | str | None = None,
             amp: str = "auto", forward_kwargs: dict | None = None, loss_fn: LossFn | None = None,
             progress: bool = False, across_processes: bool = False) -> dict:
    """Mean loss and top-1 accuracy (0-1) of ``model`` on ``dataset``, in eval mode (the model's
    mode is restored afterwards).

    The loss is ``loss_fn(model, (x, y)) -> (loss, logits)`` averaged over the images (the same
    hook as :func:`fit`'s), by default plain cross-entropy of ``model(x, **forward_kwargs)``.

    With ``across_processes=True`` inside a process group, which every process must then call,
    each process evaluates one consecutive part of ``dataset`` and the sums are all-reduced: every
    process returns the figures of the whole data set, as one process would. A wrapped model is
    evaluated through :func:`unwrap` (a DistributedDataParallel forward would wait for the others).
    """
    model = unwrap(model)
    device = resolve_device(device, model)
    dtype, _ = _amp(device, amp)
    if loss_fn is None:
        loss_fn = CrossEntropy(0.0, forward_kwargs)
    elif not callable(loss_fn):
        raise TypeError("loss_fn must be a callable (model, batch) -> (loss, logits); received "
                        f"{type(loss_fn).__name__}")
    elif forward_kwargs:
        raise ValueError("evaluate takes forward_kwargs or a loss_fn (which makes its own forward pass); "
                         "received both")
    w = world() if across_processes else World()
    part = _part(dataset, w.rank, w.size) if w.size > 1 else dataset
    modes = module_modes(model)  # each module's, a submodule the caller left in eval mode included
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    batches = iterate_batches(part, batch_size, shuffle=False, device=device)
    if progress and w.main:
        from ..progress import progress as tqdm  # none while the book builds

        batches = tqdm(batches, total=math.ceil(len(part) / batch_size), desc="evaluating", unit="batch")
    try:
        for x, y in batches:
            with autocast(device, dtype):
                out = loss_fn(model, (x, y))
            if not isinstance(out, tuple) or len(out) != 2:
                raise TypeError(f"loss_fn(model, batch) must return (loss, logits); received {type(out).__name__}")
            loss, logits = out[0], _checked_logits(out[1], model, y, "evaluate")
            loss_sum += loss.float().item() * len(y)
            correct += (logits.argmax(-1) == y).sum().item()
            n += len(y)
    finally:
        restore_modes(modes)
    if w.size > 1:
        loss_sum, correct, n = all_sum([loss_sum, correct, n], device)
        correct, n = round(correct), round(n)
    if n == 0:
        raise ValueError("evaluate received an empty dataset")
    return {"loss": loss_sum / n, "accuracy": correct / n, "n": n}


def _data_parallel(model: nn.Module, device: torch.device, w: World) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several processes (once)."""
    if w.size == 1 or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


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
    loss_fn: LossFn | None = None,
    forward_kwargs: dict | None = None,
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

    AdamW (weight-decay groups from :func:`param_groups`) with linear warm-up and cosine decay,
    gradient clipping, mixed precision on CUDA. ``loss_fn(model, (x, y)) -> (loss, logits)`` is
    what is minimised (default: :class:`CrossEntropy` with ``label_smoothing`` and
    ``forward_kwargs``); only ``model``'s parameters are optimised, and a loss that is an
    ``nn.Module`` is moved to ``device``. ``forward_kwargs`` also go to every forward pass of the
    evaluation (e.g. NaViT's ``group_images=True``); a custom ``loss_fn`` makes its own forward
    pass and takes its own keyword arguments.

    ``augment(batch, generator)`` transforms each training batch (for in-memory data, e.g.
    :class:`RandomShift`; datasets that augment per sample need none). ``checkpoint`` is written
    after every epoch; ``resume`` continues from such a file (the model must have the same
    configuration, e.g. from :func:`~vitlib.train.load_model`). ``test`` is evaluated every
    ``eval_every`` epochs and after the last. ``callback(record)`` runs after each epoch (and its
    checkpoint). ``seed`` fixes the batches' order, the augmentation and what the training steps
    draw from torch's global generators (dropout), on a stream of fit's own: the same seed trains
    the same way, and the caller's random state is left as it was.

    Inside a process group of several processes (torchrun and
    :func:`~vitlib.train.distributed.session`) every process calls ``fit`` alike and the model
    trains data-parallel: a DistributedDataParallel replica per process, each on its slice of
    every global batch of ``batch_size`` images (which must divide by the number of processes),
    so the gradients that reach the optimiser (and the clipping) are those of the global batch's
    mean loss (for a ``loss_fn`` that, like every loss here, averages over its batch), and the
    weights follow those of one process on the same batches. The global batch
    and the learning rate stay what they are in one process. Evaluation is split across the
    processes and summed; the returned history (global figures) is the same on every process;
    progress, checkpoints and ``callback`` happen on rank 0 only. Dropout draws differ per
    process. BatchNorm normalises with each process's slice (on GPUs, convert the model with
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` for global-batch statistics).
    """
    from .. import smoke
    from .checkpoint import load_checkpoint, save_checkpoint

    planned_batch = batch_size
    if smoke.active():  # full mode's code at the smoke scale: small batches, a few steps
        batch_size = min(batch_size, smoke.BATCH)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive; received epochs={epochs}, batch_size={batch_size}")
    if len(train) == 0:
        raise ValueError("fit received an empty training set")
    w = world()
    if batch_size % w.size:
        raise ValueError(f"batch_size is the global batch, split evenly over the {w.size} processes; received "
                         f"batch_size={batch_size}, which {w.size} does not divide (try "
                         f"{max(w.size, batch_size // w.size * w.size)})")
    device = resolve_device(device, model)
    if w.size > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # this process's GPU
    dtype, use_scaler = _amp(device, amp)
    if smoke.active() and device.type != "cuda":
        smoke.skipped("training under autocast", "float16 or bfloat16 with a gradient scaler runs on CUDA only")
    if loss_fn is None:
        loss_fn = CrossEntropy(label_smoothing, forward_kwargs)
    elif not callable(loss_fn):
        raise TypeError("loss_fn must be a callable (model, batch) -> (loss, logits); received "
                        f"{type(loss_fn).__name__}")
    model.to(device)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)  # e.g. a teacher's weights; its mode is the loss's own business
    optimizer = build_optimizer(model, lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    batch_sizes = global_batch_sizes(len(train), batch_size, w.size)
    steps_per_epoch = len(batch_sizes)
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
    params = [p for group in optimizer.param_groups for p in group["params"]]
    net = _data_parallel(model, device, w)  # broadcasts rank 0's weights and buffers
    cache: dict = {}
    bar = None
    if progress and w.main:
        from ..progress import progress as tqdm  # none while the book builds

        bar = tqdm(total=epochs, initial=start_epoch, desc=f"training {type(unwrap(model)).__name__}", unit="epoch")
    t_start = time.perf_counter()
    step = start_epoch * steps_per_epoch
    last = min(epochs, start_epoch + smoke.EPOCHS) if smoke.active() else epochs

    def train_step(x, y, global_n):
        with autocast(device, dtype):
            out = loss_fn(net, (x, y))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"loss_fn(model, batch) must return (loss, logits); received {type(out).__name__}")
        loss, logits = out[0], _checked_logits(out[1], net, y, "fit")
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients; weighting each by its share of the global
        # batch makes that average the gradient of the global batch's mean loss (the weight
        # is 1 unless the last batch splits unevenly)
        share = len(y) * w.size / global_n
        scaler.scale(loss * share if share != 1 else loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return loss, logits

    for epoch in range(start_epoch, last):
        t_epoch = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_019 + epoch)  # shuffling and augmentation: shared
        net.train()
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        batches = iterate_batches(train, batch_size, shuffle=True, device=device, generator=gen, cache=cache,
                                  augment=augment, shard=(w.rank, w.size))
        # dropout and anything else on the global RNG: a stream per process and epoch, the caller's
        # random state left as it was
        with private_rng(seed * 100_003 + epoch + 1_000_003 * w.rank, device):
            for k, ((x, y), global_n) in enumerate(zip(batches, batch_sizes)):
                if smoke.active() and k == smoke.STEPS:
                    break
                current_lr = lr_at(step, total_steps, warmup_steps, lr, min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = current_lr
                if smoke.active() and w.main and step == start_epoch * steps_per_epoch:  # what full mode would do
                    loss, logits = smoke.note_training(train_step, (x, y, global_n), model, train, test,
                                                       epochs=epochs, batch_size=planned_batch,
                                                       eval_every=eval_every, device=device)
                else:
                    loss, logits = train_step(x, y, global_n)
                loss_sum += loss.detach() * len(y)  # no host sync inside the loop
                correct += (logits.detach().argmax(-1) == y).sum()
                seen += len(y)
                step += 1
        loss_total, correct_total, seen = all_sum([loss_sum.item(), correct.item(), seen], device)
        train_s = time.perf_counter() - t_epoch
        record = {"epoch": epoch + 1, "train_loss": loss_total / seen, "train_acc": correct_total / seen,
                  "lr": current_lr}
        if test is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == last):
            result = evaluate(model, test, device=device, amp=amp, forward_kwargs=forward_kwargs,
                              across_processes=True)
            record.update(test_loss=result["loss"], test_acc=result["accuracy"])
        record.update(train_s=train_s, epoch_s=time.perf_counter() - t_epoch, images_per_s=seen / train_s,
                      wall_s=wall_offset + time.perf_counter() - t_start)
        history.append(record)
        if checkpoint is not None and w.main:
            save_checkpoint(checkpoint, model, optimizer=optimizer, scaler=scaler,
                            state={"epoch": epoch + 1, "epochs": epochs, "seed": seed, "history": list(history)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("train_loss", "test_acc") if k in record})
        if callback is not None and w.main:
            callback(record)
    if bar is not None:
        bar.close()
    return history
