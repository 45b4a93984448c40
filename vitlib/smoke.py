"""The smoke scale: full mode's code paths on a CPU in minutes, so that they are proven without a GPU.

``VITLIB_SMOKE=1`` (``make full-rehearsal`` sets it, with ``VITLIB_MODE=full``) changes how often
things run, never which code runs:

* every training loop (:func:`vitlib.train.fit`) runs at most :data:`EPOCHS` epochs of at most
  :data:`STEPS` steps, with batches of at most :data:`BATCH` images (the learning-rate schedule
  still spans the planned epochs);
* every timing (:func:`vitlib.bench.time_function`) is one call, counted and timed, and
  interleaved timings run one round; the calls that :func:`vitlib.bench.inference_fn` and
  :func:`vitlib.bench.train_step_fn` build take the first :data:`TIMED_BATCH` images of their batch;
* every data set a chapter loads in full (CIFAR-10) keeps its first :data:`TRAIN_IMAGES` training
  and :data:`TEST_IMAGES` test images.

Nothing measured at this scale means anything; the setup line says so.

While it runs, the rehearsal also notes what full mode would do (:func:`note`): each training
run's planned images, steps and FLOPs (:func:`note_training`), each timing's planned calls with the
FLOPs and seconds of one (:func:`note_timing`), the peak memory of each at its planned batch
(profiled on the CPU at one and two images and extrapolated), and the code paths that only a GPU
runs (:func:`skipped`). ``VITLIB_LEDGER`` names the folder where each chapter's notes go (one JSON
line each); :mod:`vitlib.book.fullmode` turns them into the time and memory each chapter's full mode
needs on a T4 and on an A100.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from pathlib import Path
from typing import Callable

__all__ = ["SMOKE_ENV", "LEDGER_ENV", "EPOCHS", "STEPS", "BATCH", "TIMED_BATCH", "TRAIN_IMAGES", "TEST_IMAGES", "active",
           "note", "note_training", "note_timing", "planned_rounds", "serving_on_cpu", "skipped", "chapter"]

SMOKE_ENV = "VITLIB_SMOKE"
LEDGER_ENV = "VITLIB_LEDGER"
EPOCHS = 2
STEPS = 2
BATCH = 16
TIMED_BATCH = 2
TRAIN_IMAGES = 256
TEST_IMAGES = 128

CHAPTER_ENV = "VITLIB_CHAPTER"


def active(env: dict | None = None) -> bool:
    """True at the smoke scale (``VITLIB_SMOKE`` set to anything but ``0``)."""
    env = os.environ if env is None else env
    return env.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def chapter(name: str | None = None) -> str:
    """The chapter whose notes :func:`note` writes: set by :func:`vitlib.book.setup`, and kept in
    ``VITLIB_CHAPTER`` so that the processes a chapter starts (torchrun's) note for it too."""
    if name:
        os.environ[CHAPTER_ENV] = name
    return os.environ.get(CHAPTER_ENV, "unnamed")


def note(kind: str, **figures) -> None:
    """Add one line to the ledger of the running chapter (only at the smoke scale, with
    ``VITLIB_LEDGER`` set): ``kind`` is ``"train"``, ``"timing"`` or ``"skipped"``."""
    folder = os.environ.get(LEDGER_ENV)
    if not folder or not active():
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / f"{chapter()}.jsonl", "a") as f:
        f.write(json.dumps({"kind": kind, **figures}, default=str) + "\n")


def skipped(what: str, why: str) -> None:
    """Note a code path that the rehearsal cannot run on a CPU (it needs a GPU): the rehearsal
    lists it as not rehearsed."""
    note("skipped", what=what, why=why)


def note_training(train_step, batch, model, train, test, *, epochs, batch_size, eval_every, device):
    """:func:`vitlib.train.fit`'s first step at the smoke scale: ``train_step(*batch)`` run once
    under the FLOP counter (and, on a CPU, the memory profiler), and a note of what the planned
    run would do. Its FLOPs: this step's per image (forward and backward) times the planned images
    and epochs, each evaluation a third of that per image. Its peak memory at the planned batch:
    weights, gradients and AdamW's two states, plus this step's activations scaled to the planned
    batch (in float32: an upper bound under 16-bit autocast). Returns the step's result."""
    from torch.utils.flop_counter import FlopCounterMode

    from .bench.timing import peak_memory

    result, n = {}, len(batch[1])

    def counted():
        with FlopCounterMode(display=False) as counter:
            result["out"] = train_step(*batch)
        result["flops"] = counter.get_total_flops()

    peak = peak_memory(counted, "cpu", cpu=True) if device.type == "cpu" else None
    if "out" not in result:  # not on a CPU: counted without the memory profile
        counted()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = None if peak is None else max(0, peak - 3 * params)  # less gradients, AdamW states
    planned_train = getattr(train, "planned_len", len(train))
    planned_test = 0 if test is None else getattr(test, "planned_len", len(test))
    evals = 0 if test is None else len({e for e in range(1, epochs + 1) if e % eval_every == 0 or e == epochs})
    per_image = result["flops"] / n
    note("train", model=type(model).__name__, flops=per_image * (planned_train * epochs + planned_test * evals / 3),
         images=planned_train * epochs, steps=epochs * -(-planned_train // batch_size), batch=batch_size,
         param_bytes=params, peak_bytes=None if activations is None else 4 * params + activations * batch_size / n)
    return result["out"]


#: How many rounds :func:`vitlib.bench.time_interleaved` plans for the timing being made (the
#: ledger counts them all; one round runs).
_PLANNED_ROUNDS: contextvars.ContextVar[int] = contextvars.ContextVar("vitlib_planned_rounds", default=1)
#: Set by :func:`serving_on_cpu`: timings that full mode makes on the CPU, whatever the device.
_ON_CPU: contextvars.ContextVar[bool] = contextvars.ContextVar("vitlib_on_cpu", default=False)


@contextlib.contextmanager
def serving_on_cpu():
    """Marks the timings inside the block as ones that full mode, too, makes on the CPU (dynamic
    INT8, ONNX Runtime, serving): the smoke scale's ledger then counts their calls at the speed it
    measured on this CPU rather than at a GPU's."""
    token = _ON_CPU.set(True)
    try:
        yield
    finally:
        _ON_CPU.reset(token)


@contextlib.contextmanager
def planned_rounds(rounds: int):
    """The timings inside the block are one round of ``rounds`` that full mode makes."""
    token = _PLANNED_ROUNDS.set(rounds)
    try:
        yield
    finally:
        _PLANNED_ROUNDS.reset(token)


def note_timing(run: Callable[[], None], *, warmup: int, min_calls: int, min_run_time: float,
                scale: float, one: Callable[[], object] | None) -> float:
    """The smoke scale's one timed call, and a note of what the planned timing would do. The call
    runs with its seconds measured, its FLOPs counted (both times ``scale``, the planned batch over
    the batch that runs) and its peak CPU memory profiled. With ``one`` (the same call on one image,
    run once before, so that the timed call finds a training step's optimiser state made), the
    memory at the planned batch is extrapolated from the two: what does not grow with the batch (a
    step's gradients), plus what does, times the batch. Returns the call's seconds."""
    from torch.utils.flop_counter import FlopCounterMode

    from .bench.timing import peak_memory

    def runs(fn) -> bool:  # one image cannot always run: batch norm in training mode
        try:
            fn()
            return True
        except (ValueError, RuntimeError):
            return False

    one = one if one is not None and scale > 1 and runs(one) else None
    figures: dict = {}

    def counted():
        try:
            with FlopCounterMode(display=False) as counter:
                start = time.perf_counter()
                run()
                figures["call_s"] = time.perf_counter() - start
            figures["flops"] = counter.get_total_flops() * scale
        except Exception:  # noqa: BLE001  (a path the counter cannot see through: time it plainly)
            start = time.perf_counter()
            run()
            figures["call_s"], figures["flops"] = time.perf_counter() - start, None

    two = peak_memory(counted, "cpu", cpu=True)
    peak = two * scale  # an upper bound
    if one is not None:
        single = peak_memory(one, "cpu", cpu=True)
        per_image = max(0.0, (two - single) / (TIMED_BATCH - 1))
        peak = single + per_image * (scale * TIMED_BATCH - 1)
    note("timing", rounds=_PLANNED_ROUNDS.get(), warmup=warmup, min_calls=min_calls,
         min_run_time=min_run_time, on_cpu=_ON_CPU.get(), peak_bytes=peak,
         call_s=figures["call_s"] * scale, flops=figures["flops"], scale=scale)
    return figures["call_s"]
