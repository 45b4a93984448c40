"""Time things: one function, a model's inference or training step, several candidates interleaved.

Rules the functions follow, because the book's numbers must be trustworthy:

* timings come from :class:`torch.utils.benchmark.Timer` after warm-up, with ``num_threads`` set
  explicitly (the Timer otherwise runs on one thread), and the figure quoted is the median;
* :func:`time_interleaved` times several candidates round after round in one process, so that a
  noisy neighbour slows them all alike;
* a measurement leaves the model as it found it: inference runs in eval mode and restores the
  model's mode (:func:`eval_mode`); a training step runs on a private copy of the model;
* and it leaves the process's threading as it found it: torch's thread count, and MKL's (its
  dynamic threading and the thread's own count), which ``torch.set_num_threads`` (and so every
  Timer) changes for good (:func:`vitlib.compat.mkl_threading_kept`).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import compat
from ..backends import autocast as amp, synchronise  # noqa: F401  (amp: also the name chapter 7 imports)
from ..models.state import module_modes, restore_modes


def _import_benchmark():
    """:mod:`torch.utils.benchmark`, imported without the warning about CUDA_HOME that its import of
    cpp_extension logs on machines without a CUDA runtime (it concerns compiling extensions, which
    vitlib never does). Only that import's warnings are dropped, by a filter removed afterwards:
    the logger's level and filters stay the process's own."""
    log = logging.getLogger("torch.utils.cpp_extension")

    def quiet(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    log.addFilter(quiet)
    try:
        from torch.utils import benchmark
    finally:
        log.removeFilter(quiet)
    return benchmark


benchmark = _import_benchmark()

__all__ = [
    "MIN_CALLS",
    "Timing",
    "default_threads",
    "eval_mode",
    "outputs",
    "batch_and_device",
    "time_function",
    "time_interleaved",
    "sized_call",
    "inference_fn",
    "train_step_fn",
    "measure_inference",
    "measure_train_step",
    "peak_memory",
]


#: The fewest timed calls a figure rests on: a median and a spread need several measurements.
MIN_CALLS = 5
#: The fewest calls a timed block holds: ``Timer.timeit`` makes two untimed calls before each block,
#: so a smaller block would spend more time untimed than this one's 40%.
MIN_BLOCK = 5


@dataclass
class Timing:
    """Per-call times in seconds from :func:`time_function`; ``median`` is the figure to quote."""

    times: list[float]
    threads: int
    label: str = ""
    batch: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> float:
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]

    @property
    def throughput(self) -> float | None:
        """Items per second at the median, when the batch size is known."""
        return None if self.batch is None else self.batch / self.median

    def summary(self) -> dict:
        """``median_s``, ``iqr_s``, ``runs`` and ``images_per_s``: the figures a suite stores."""
        return {"median_s": self.median, "iqr_s": self.iqr, "runs": len(self.times), "images_per_s": self.throughput}

    def __repr__(self) -> str:
        return (f"Timing({self.label or 'fn'}: median {self.median * 1e3:.3f} ms, IQR {self.iqr * 1e3:.3f} ms, "
                f"{len(self.times)} runs, {self.threads} threads)")


def outputs(out) -> tuple[torch.Tensor, ...]:
    """A model's output as a tuple of logits: one tensor, or both heads of a distillation student
    asked for them (``head="both"``), which train together."""
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def default_threads() -> int:
    """The threads a timing uses when not told: as many as torch uses."""
    return torch.get_num_threads()


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run the block with ``model`` in eval mode, then put it back in the mode it was in: a
    measurement leaves the model as it found it (and never updates BatchNorm statistics), a
    submodule the caller had left in the other mode included (:func:`vitlib.models.state.restore_modes`)."""
    modes = module_modes(model)
    model.eval()
    try:
        yield model
    finally:
        restore_modes(modes)


def batch_and_device(x) -> tuple[int, torch.device]:
    """Batch size and device of a model input: a batch tensor, or a list of images (NaViT)."""
    first = x[0] if isinstance(x, (list, tuple)) else x
    return len(x), first.device


def _synchronised(fn: Callable[[], object], device: torch.device | str | None) -> Callable[[], None]:
    if device is not None and torch.device(device).type == "cuda":
        def run():
            fn()
            synchronise(device)
        return run
    return fn


def time_function(
    fn: Callable[[], object],
    *,
    num_threads: int | None = None,
    min_run_time: float = 0.5,
    warmup: int = 3,
    device: torch.device | str | None = None,
    label: str = "",
    batch: int | None = None,
    min_calls: int = MIN_CALLS,
    long_call: bool | None = None,
) -> Timing:
    """Time ``fn()`` with :class:`torch.utils.benchmark.Timer` after ``warmup`` calls.

    ``num_threads`` defaults to :func:`torch.get_num_threads` (the Timer's own default is one
    thread). Timings go on until there are at least ``min_calls`` of them and they add up to
    ``min_run_time`` seconds. A short call is timed in blocks (``Timer.timeit``), each figure the
    mean call of its block; the block size comes from the last warm-up call, so that ``min_calls``
    blocks fill ``min_run_time``. (``Timer.blocked_autorange`` would first size its blocks by
    running ever larger ones, untimed: three times ``min_run_time`` and more for a call of a few
    milliseconds.) A call too long for blocks of :data:`MIN_BLOCK` calls is timed call by call.
    CUDA work is synchronised inside each call.

    ``long_call=True`` says that a call lasts ``min_run_time`` or more, which
    :func:`time_interleaved` knows after its first round: such a call needs no warm-up call to
    size blocks, and is timed ``min_calls`` times.
    """
    if min_calls < 1:
        raise ValueError(f"min_calls must be at least 1; received {min_calls}")
    from .. import smoke

    threads = num_threads or default_threads()
    run = _synchronised(fn, device)
    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=threads, label=label)
    if smoke.active():  # full mode's code at the smoke scale: one call, counted and timed
        with _torch_threads(threads):
            seconds = smoke.note_timing(run, warmup=warmup, min_calls=min_calls, min_run_time=min_run_time,
                                        scale=getattr(fn, "smoke_scale", 1.0), one=getattr(fn, "smoke_one", None))
        return Timing(times=[seconds], threads=threads, label=label, batch=batch)
    with _torch_threads(threads):  # warm-up and timed calls alike
        last = None  # seconds of the last warm-up call
        for i in range(warmup):
            if i == warmup - 1:
                last = _one_call(run)
            else:
                run()
        number = 1
        if not long_call:
            if last is None:  # no warm-up: one untimed call sizes the blocks
                last = _one_call(run)
            number = int(min_run_time / (min_calls * max(last, 1e-9)))
        times, spent = [], 0.0
        while len(times) < min_calls or spent < min_run_time:
            if number >= MIN_BLOCK:
                times.append(timer.timeit(number).mean)
                spent += times[-1] * number
            else:
                times.append(_one_call(run))
                spent += times[-1]
    return Timing(times=times, threads=threads, label=label, batch=batch)


@contextlib.contextmanager
def _torch_threads(threads: int):
    """torch on ``threads`` threads for the block; then the count it had, and MKL's threading as it
    was (:func:`vitlib.compat.mkl_threading_kept`), back. (The Timer sets and resets the same count
    around each block of its own; setting it also gives MKL a fixed count, dynamic threading off,
    for the rest of the process: MKL would then run even the tiny matrix products of a quick-mode
    model on every thread.)"""
    before = torch.get_num_threads()
    with compat.mkl_threading_kept():
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _one_call(run: Callable[[], object]) -> float:
    """Seconds one ``run()`` takes, on the threads :func:`time_function` set. (``Timer.timeit(number=1)``
    would first make two untimed calls of its own, three times the work of a long call.)"""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_interleaved(
    fns: Mapping,
    *,
    rounds: int = 3,
    min_run_time: float = 0.3,
    num_threads: int | None = None,
    warmup: int = 3,
    device: torch.device | str | None = None,
    progress: str | None = None,
    min_calls: int = MIN_CALLS,
) -> dict:
    """Time every ``fns[key]()`` in turn, for ``rounds`` rounds, and return each key's per-call
    times (at least ``min_calls`` of them, spread over the rounds). Interleaving means a slow
    spell of a shared machine hits every candidate alike. ``warmup`` calls precede each
    candidate's first timing, and one call each later timing, except for a long call (one that
    lasts ``min_run_time`` or more, see :func:`time_function`), which is timed straight away in
    later rounds; ``progress`` is a progress-bar title."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1; received {rounds}")
    from .. import smoke

    if smoke.active():  # the smoke scale: one round, each timing noting all the planned rounds
        with smoke.planned_rounds(rounds):
            return {key: time_function(fn, num_threads=num_threads, min_run_time=min_run_time, warmup=warmup,
                                       device=device, min_calls=-(-min_calls // rounds)).times
                    for key, fn in fns.items()}
    per_round = -(-min_calls // rounds)  # ceil: every round adds its share of the minimum
    times: dict = {key: [] for key in fns}
    steps: Iterable = [(r, key) for r in range(rounds) for key in fns]
    if progress:
        from ..progress import progress as tqdm  # none while the book builds

        steps = tqdm(list(steps), desc=progress, leave=False)
    long: dict = {}  # key -> whether its calls last min_run_time or more, from its first round
    for r, key in steps:
        is_long = long.get(key)
        t = time_function(fns[key], num_threads=num_threads, min_run_time=min_run_time,
                          warmup=warmup if r == 0 else 0 if is_long else 1, device=device,
                          min_calls=per_round, long_call=is_long)
        long[key] = statistics.median(t.times) >= min_run_time
        times[key].extend(t.times)
    return times


def inference_fn(model: nn.Module, x, *, amp_dtype: torch.dtype | None = None,
                 **forward_kwargs) -> Callable[[], object]:
    """``model(x, **forward_kwargs)`` under inference mode (and autocast to ``amp_dtype``, if
    given); the caller puts the model in eval mode (:func:`eval_mode`)."""
    device = batch_and_device(x)[1]

    def call(x):
        with torch.inference_mode(), amp(device, amp_dtype):
            return model(x, **forward_kwargs)

    return sized_call(call, x)


def sized_call(call: Callable, x, y=None) -> Callable[[], object]:
    """``lambda: call(x)`` (``call(x, y)`` with labels), the form every timed call of a batch takes
    (:func:`inference_fn`, :func:`train_step_fn`, the studies' own); at the smoke scale, on the first
    :data:`vitlib.smoke.TIMED_BATCH` images of ``x``, with ``smoke_scale`` (the planned batch over
    the batch that runs) and ``smoke_one`` (the call on one image, which with the two-image call
    separates what grows with the batch from what does not, for the memory the ledger notes)."""
    from .. import smoke

    args = (x,) if y is None else (x, y)
    if not smoke.active() or len(x) <= smoke.TIMED_BATCH:
        return lambda: call(*args)
    n = len(x)

    def first(k):
        return tuple(a[:k] for a in args)

    run = (lambda a: (lambda: call(*a)))(first(smoke.TIMED_BATCH))
    run.smoke_scale, run.smoke_batch = n / smoke.TIMED_BATCH, n
    run.smoke_one = (lambda a: (lambda: call(*a)))(first(1))
    return run


def train_step_fn(model: nn.Module, x, y: torch.Tensor | None = None, lr: float = 1e-4, *,
                  amp_dtype: torch.dtype | None = None, compile_with: str | None = None,
                  **forward_kwargs) -> Callable[[], None]:
    """One optimisation step (forward, cross-entropy, backward, AdamW as the training loop builds
    it: :func:`vitlib.train.loop.adamw`) on a private copy of ``model``.

    ``x`` is a batch tensor, or a list of images for models that take one (NaViT); ``forward_kwargs``
    go to every forward call (NaViT's packing). Without ``y``, random labels are drawn; labels must
    lie in ``[0, num_classes)``. ``amp_dtype`` runs the forward pass under autocast to that dtype
    (the loss in float32); ``compile_with`` names a :func:`torch.compile` backend for the copy."""
    from ..train.loop import adamw  # the training loop's AdamW: fused where it can be

    model = copy.deepcopy(model).train()
    forward = model if compile_with is None else torch.compile(model, backend=compile_with)
    opt = adamw(model.parameters(), lr=lr)
    with torch.no_grad():  # in eval mode: batch norm cannot normalise a batch of one in training mode
        num_classes = model.eval()(x[:1], **forward_kwargs).shape[-1]
    model.train()
    if y is None:
        y = torch.randint(0, num_classes, (len(x),), device=batch_and_device(x)[1])
    elif len(y) != len(x) or (len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes)):
        span = f" in [{int(y.min())}, {int(y.max())}]" if len(y) else ""  # no range to name for no labels
        raise ValueError(f"labels must be {len(x)} class indices in [0, {num_classes}) (the model's "
                         f"num_classes); received {len(y)} labels{span}")

    device = batch_and_device(x)[1]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with amp(device, amp_dtype):
            out = outputs(forward(x, **forward_kwargs))
        sum(F.cross_entropy(o.float(), y) for o in out).backward()
        opt.step()

    return sized_call(step, x, y)


def measure_inference(model: nn.Module, x, **kwargs) -> Timing:
    """Median latency of ``model(x)`` in eval and inference mode; ``.throughput`` is images/s.
    ``kwargs`` go to :func:`time_function`."""
    batch, device = batch_and_device(x)
    kwargs.setdefault("device", device)
    with eval_mode(model):
        return time_function(inference_fn(model, x), batch=batch, **kwargs)


def measure_train_step(model: nn.Module, x, y: torch.Tensor | None = None, **kwargs) -> Timing:
    """Median time of one training step (forward, loss, backward, AdamW step) on a copy of ``model``.
    ``kwargs`` go to :func:`time_function`."""
    batch, device = batch_and_device(x)
    kwargs.setdefault("device", device)
    return time_function(train_step_fn(model, x, y), batch=batch, **kwargs)


def peak_memory(fn: Callable[[], object], device: torch.device | str, *, cpu: bool = False) -> int | None:
    """Peak memory allocated by ``fn()`` in bytes, above what was allocated before.

    On CUDA, from the caching allocator's statistics. On CPU PyTorch's allocator keeps no peak
    statistic, and the process's resident size measures the allocator and the interpreter as much
    as the model, so this returns None, unless ``cpu=True``: then ``fn()`` runs once under
    :mod:`torch.profiler` with memory profiling, and the peak is the running sum of the bytes that
    the allocator handed out and took back during the call (every tensor, also a kernel's scratch
    buffers; not what libraries allocate outside PyTorch).
    """
    device = torch.device(device)
    from .. import smoke

    if smoke.active() and device.type != "cuda" and not cpu:
        smoke.skipped("peak GPU memory", "CUDA's allocator statistics exist on a GPU only")
    if device.type == "cpu" and cpu:
        return _cpu_peak_memory(fn)
    if device.type != "cuda":
        return None
    synchronise(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronise(device)
    return torch.cuda.max_memory_allocated(device) - before


@contextlib.contextmanager
def _quiet_native_stderr():
    """The profiler's native library logs its start and stop on file descriptor 2, below Python;
    send that descriptor to /dev/null for the block."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no descriptor 2 to borrow: leave it be
        yield
        return
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _cpu_peak_memory(fn: Callable[[], object]) -> int | None:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = compat.profiler_memory_events(prof)
    if events is None:  # this torch's profiler keeps them to itself (warned)
        return None
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak
