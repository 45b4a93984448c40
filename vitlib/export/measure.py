"""What every deployment path is judged by, measured the same way for each: :class:`Exported`.

:func:`measure` takes a model, an example batch and what a path built from them (the artefact and
a :class:`Runner` that calls it), and measures, in this process and in this run:

* parity: the largest absolute difference between the artefact's logits and eager's, and how often
  their top-1 classes agree, on the example batch and on a batch of another size (a program that
  only runs the batch it was exported with is not a deployable model);
* latency: eager and the artefact timed interleaved (:func:`vitlib.bench.time_interleaved`, medians
  over at least :data:`vitlib.bench.MIN_CALLS` calls a side, the same thread count), the speed-up
  with its spread (:meth:`vitlib.bench.Measured.ratio`);
* size on disk: the artefact saved into a temporary folder, and the eager model's weights saved as
  safetensors beside it;
* accuracy on a data set, when one is given, of both, with their top-1 agreement over it.

A figure that was not measured (no data set, nothing to save) is None, never a number.
"""
from __future__ import annotations

import gc
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..bench import MIN_CALLS, default_threads, eval_mode, inference_fn, time_interleaved
from ..smoke import serving_on_cpu
from ..bench import Measured
from ..models.state import private_rng

__all__ = ["Exported", "Runner", "measure", "reason", "building", "directory_mb", "weights_mb"]


class Runner:
    """Calls an artefact on a batch and returns torch logits: a module or program under inference
    mode, or an ONNX Runtime session (``session=...``), fed NumPy arrays."""

    def __init__(self, kind: str, target: Any, *, session: bool = False) -> None:
        self.kind, self.target, self.session = kind, target, session
        if session:
            self.input_name = target.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.session:
            if not isinstance(x, torch.Tensor):
                raise ValueError("an ONNX Runtime session takes one batch tensor; received "
                                 f"{type(x).__name__}")
            out = self.target.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
            return torch.from_numpy(out)
        with torch.inference_mode():
            return self.target(x)

    def __repr__(self) -> str:
        return f"Runner({self.kind})"


@dataclass
class Exported:
    """An optimised artefact and what was measured about it against the eager model.

    ``artefact`` is what the path produced (a quantised module, an ``ExportedProgram``, an
    ``ONNXProgram``, a ``ScriptModule``, a compiled module); calling the ``Exported`` runs it on a
    batch (``runner``). Times are seconds per call, ``speedup`` is eager's median over the
    artefact's (above 1: faster), with its spread. ``size_mb`` is the saved artefact (None when a
    path saves nothing), ``eager_mb`` the eager model's weights as safetensors. ``max_abs_diff``
    and ``top1_agreement`` compare logits with eager's on ``agreement_images`` images (the
    data set's when given, else the two checked batches). ``build_s`` is the time the path took to
    build the artefact (for ``compile``, the first call, which compiles). ``details`` holds what a
    path adds (INT8: the share of FLOPs in INT8 layers); ``notes`` what it warned about."""

    path: str
    artefact: Any = field(repr=False)
    runner: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    model: str
    batch: int
    threads: int
    build_s: float
    times: dict[str, list[float]] = field(repr=False)
    speedup: Measured
    size_mb: float | None
    eager_mb: float
    max_abs_diff: float
    top1_agreement: float
    agreement_images: int
    accuracy: float | None = None
    eager_accuracy: float | None = None
    #: test images that one of eager and the artefact classifies right and the other wrong
    discordant: int | None = None
    details: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x)

    @property
    def eager_ms(self) -> float:
        return Measured.of_values(self.times["eager"]).value * 1e3

    @property
    def ms(self) -> float:
        return Measured.of_values(self.times[self.path]).value * 1e3

    @property
    def accuracy_drop_pt(self) -> float | None:
        """Eager accuracy minus the artefact's, in percentage points (None without a data set)."""
        if self.accuracy is None or self.eager_accuracy is None:
            return None
        return (self.eager_accuracy - self.accuracy) * 100

    def row(self) -> dict:
        """The figures as one flat dict (a row of a table)."""
        return {"model": self.model, "path": self.path, "works": True, "batch": self.batch,
                "threads": self.threads,
                "eager_ms": self.eager_ms, "ms": self.ms, **self.speedup.to_dict(prefix="speedup"),
                "calls": self.speedup.n,
                "size_mb": self.size_mb, "eager_mb": self.eager_mb, "max_abs_diff": self.max_abs_diff,
                "top1_agreement": self.top1_agreement, "agreement_images": self.agreement_images,
                "accuracy": self.accuracy, "eager_accuracy": self.eager_accuracy, "discordant": self.discordant,
                "build_s": self.build_s,
                **self.details, "reason": None, "notes": "; ".join(self.notes) or None}

    def __str__(self) -> str:
        size = ("nothing saved" if self.size_mb is None
                else f"{self.size_mb:.2f} MB on disk (eager {self.eager_mb:.2f} MB)")
        lines = [f"{self.model} -> {self.path}: {self.ms:.3f} ms against eager {self.eager_ms:.3f} ms at "
                 f"batch {self.batch} ({self.threads} threads), speed-up {self.speedup}",
                 f"  {size}; built in {self.build_s:.1f} s",
                 f"  max |logit difference| {self.max_abs_diff:.2e}, top-1 agreement "
                 f"{self.top1_agreement:.1%} of {self.agreement_images} images"]
        if self.accuracy is not None:
            lines.append(f"  accuracy {self.accuracy:.2%} against eager {self.eager_accuracy:.2%} "
                         f"({-self.accuracy_drop_pt:+.2f} pt)")
        lines += [f"  {key}: {value:.3g}" if isinstance(value, float) else f"  {key}: {value}"
                  for key, value in self.details.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\s*(\w+(Error|Exception)):\s*(.+)$")


def reason(err: BaseException, limit: int = 160) -> str:
    """Why something failed, in one line: the innermost cause of ``err`` (converters wrap the real
    error in their own), as ``Type: message``, its most telling line, at most ``limit`` characters."""
    inner = err
    while inner.__cause__ is not None:
        inner = inner.__cause__
    lines = [_ANSI.sub("", line).strip() for line in str(inner).splitlines()]
    lines = [line for line in lines if line]
    named = [m for m in map(_ERROR_LINE.match, lines) if m]  # an interpreter's "RuntimeError: ..."
    if named:
        text = f"{named[-1].group(1)}: {named[-1].group(3)}"
    else:
        text = f"{type(inner).__name__}: {lines[0] if lines else '(no message)'}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class building:
    """``with building() as b: ...`` times the block (``b.seconds``) and keeps the first line of
    each distinct warning raised in it, with its category (``b.notes``), instead of printing it.

    Inside the block the objects that already exist are left out of Python's cyclic garbage
    collection (:func:`gc.freeze`, undone at the end): capturing a graph makes and drops objects by
    the hundred thousand, and each collection would otherwise scan everything the process holds
    too, the more the longer a notebook has run. A process that froze objects itself is left as
    it is."""

    def __enter__(self) -> "building":
        self._catch = warnings.catch_warnings(record=True)
        self._records = self._catch.__enter__()
        warnings.simplefilter("always")
        self._froze = gc.get_freeze_count() == 0
        if self._froze:
            gc.freeze()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        if self._froze:
            gc.unfreeze()
        self._catch.__exit__(*exc)
        notes = []
        for record in self._records:
            lines = str(record.message).strip().splitlines()
            note = f"{record.category.__name__}: {lines[0].strip() if lines else ''}"
            note = note if len(note) <= 200 else note[:197] + "..."
            if note not in notes:
                notes.append(note)
        self.notes = tuple(notes)


def directory_mb(folder: Path) -> float:
    """Megabytes (2**20 bytes) of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def weights_mb(model: nn.Module) -> float:
    """Megabytes of ``model``'s weights written as a safetensors file."""
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, str(Path(tmp) / "weights.safetensors"))
        return directory_mb(Path(tmp))


def _other_batch(model: nn.Module, x) -> Any:
    """A batch of another size than ``x`` (one more image), from the model's own example input, the
    same every time (drawn on a private stream: the caller's random state stays as it was)."""
    n = len(x) + 1
    device = x[0].device if isinstance(x, list) else x.device
    with private_rng(0, device):
        if hasattr(model, "example_input"):
            return model.example_input(n, device=device)
        return torch.randn(n, *x.shape[1:], device=x.device, dtype=x.dtype)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.argmax(-1) == b.argmax(-1)).sum())


def _accuracy(model: nn.Module, runner: Callable, dataset,
              batch_size: int) -> tuple[float, float, int, int, float]:
    """Eager accuracy, the artefact's, how many of the data set's images they agree on, how many
    one gets right and the other wrong, and the largest logit difference over the data set."""
    from ..train import iterate_batches

    right_eager = right = agree = discordant = n = 0
    diff = 0.0
    with torch.inference_mode():
        for x, y in iterate_batches(dataset, batch_size, shuffle=False, device="cpu"):
            a, b = model(x), runner(x)
            hit_a, hit_b = a.argmax(-1) == y, b.argmax(-1) == y
            right_eager += int(hit_a.sum())
            right += int(hit_b.sum())
            discordant += int((hit_a != hit_b).sum())
            agree += _agreement(a, b)
            diff = max(diff, float((a.float() - b.float()).abs().max()))
            n += len(y)
    if n == 0:
        raise ValueError("the data set given for accuracy is empty")
    return right_eager / n, right / n, agree, discordant, diff


def measure(path: str, model: nn.Module, x, artefact: Any, runner: Callable, *, build_s: float,
            save: Callable[[Path], None] | None = None, data=None, check_batch: bool = True,
            rounds: int = 3, min_run_time: float = 0.3, num_threads: int | None = None,
            details: dict | None = None, notes: tuple[str, ...] = (), batch_size: int = 256) -> Exported:
    """Measure what a path built (see the module docstring) and return it as an :class:`Exported`.

    ``runner(batch)`` returns the artefact's logits; ``save(folder)`` writes the artefact into a
    folder (None: the path saves nothing); ``data`` is a dataset of ``(image, label)`` (or a
    :class:`~vitlib.data.DataSplit`, whose test set is used) for accuracy; ``check_batch=False``
    checks parity on ``x`` alone (a compiled module recompiles for each new shape). ``rounds``,
    ``min_run_time`` and ``num_threads`` go to :func:`~vitlib.bench.time_interleaved`."""
    threads = num_threads or default_threads()
    batches = [x, _other_batch(model, x)] if check_batch else [x]
    diff, agree, images = 0.0, 0, 0
    with eval_mode(model), torch.inference_mode():
        for batch in batches:
            try:
                out = runner(batch)
            except Exception as err:
                raise RuntimeError(f"the {path} artefact fails on a batch of {len(batch)} (built with "
                                   f"{len(x)}): {reason(err)}") from None  # the reason says it all
            ref = model(batch)
            if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise RuntimeError(f"the {path} artefact returns {shape} where eager returns "
                                   f"{tuple(ref.shape)}")
            diff = max(diff, float((out.float() - ref.float()).abs().max()))
            agree, images = agree + _agreement(out, ref), images + len(batch)
        fns = {"eager": inference_fn(model, x), path: lambda: runner(x)}
        with serving_on_cpu():  # deployment paths run on the CPU in every mode
            times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=threads,
                                     warmup=1, min_calls=MIN_CALLS)
    size_mb = None
    if save is not None:
        with tempfile.TemporaryDirectory() as tmp, building() as saving:
            save(Path(tmp))
            size_mb = directory_mb(Path(tmp))
        notes = (*notes, *(note for note in saving.notes if note not in notes))
    accuracy = eager_accuracy = discordant = None
    if data is not None:
        dataset = getattr(data, "test", data)
        with eval_mode(model):
            eager_accuracy, accuracy, agree, discordant, data_diff = _accuracy(model, runner, dataset,
                                                                              batch_size)
        images, diff = len(dataset), max(diff, data_diff)
    return Exported(path=path, artefact=artefact, runner=runner, model=type(model).__name__, batch=len(x),
                    threads=threads, build_s=build_s, times=times,
                    speedup=Measured.ratio(times["eager"], times[path]), size_mb=size_mb,
                    eager_mb=weights_mb(model), max_abs_diff=diff, top1_agreement=agree / images,
                    agreement_images=images, accuracy=accuracy, eager_accuracy=eager_accuracy, discordant=discordant,
                    details=dict(details or {}), notes=tuple(notes))
