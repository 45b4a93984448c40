"""The deployment paths, one function each, every one returning an :class:`~vitlib.export.Exported`:
the artefact and what was measured about it against the eager model (:func:`~vitlib.export.measure`).

* :func:`to_int8`: dynamic INT8 quantisation (``torch.ao``) of the linear layers, after folding
  BatchNorm and rewriting 1x1 convolutions as linear layers so that LeViT's compute is reached too
  (``convs=False``: the linear layers as they are, what vit-pytorch's LeViT gets: its head);
* :func:`to_export`: ``torch.export`` with a dynamic batch dimension (an ``ExportedProgram``);
* :func:`to_onnx`: the torch.export-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``),
  run with ONNX Runtime on the CPU;
* :func:`to_torchscript`: ``torch.jit.trace``, a deprecated path (torch.export succeeds it), kept to
  measure what it still gives;
* :func:`to_compile`: ``torch.compile``; the first call, which compiles, is reported apart
  (``build_s`` and ``details["compile_s"]``) from the run time.

A model that a path cannot take raises :class:`PathError`, whose message names the model, the path
and why (the underlying error, shortened by :func:`~vitlib.export.reason`). :func:`export` runs a
path by name.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
from torch import nn

from ..bench import eval_mode
from ..models.state import private_rng
from .artefacts import SUFFIXES, onnx_session, save_artefact
from .int8 import int8_flop_share, prepare_int8, quantize_int8, quantized_layers
from .measure import Exported, Runner, building, measure, reason

__all__ = ["PATHS", "PathError", "to_int8", "to_export", "to_onnx", "to_torchscript", "to_compile", "export"]

#: Every path by name, in the order of the support matrix's columns.
PATHS: tuple[str, ...] = ("int8", "export", "onnx", "torchscript", "compile")
_FUNCTIONS: dict[str, Callable[..., Exported]] = {}
#: What every path function passes on to :func:`~vitlib.export.measure`.
_MEASURING = ("rounds", "min_run_time", "num_threads", "batch_size")

TORCHSCRIPT_NOTE = "deprecated path: torch.jit warns that TorchScript is deprecated; torch.export is its successor"


class PathError(RuntimeError):
    """A model cannot take a deployment path: ``model``, ``path`` and ``why`` (one line)."""

    def __init__(self, model: str, path: str, why: str) -> None:
        super().__init__(f"{model} cannot take the {path} path: {why}")
        self.model, self.path, self.why = model, path, why


class _CallersError(TypeError):
    """An argument of the wrong kind: the caller's mistake, raised as it is, never as a PathError."""


def _path(name: str):
    """Register a path function; give it a default example input, refuse keywords that neither it
    nor :func:`~vitlib.export.measure` takes, and turn any failure of the model on the path into a
    :class:`PathError`."""

    def register(fn):
        own = [p for p, v in inspect.signature(fn).parameters.items() if v.kind is v.KEYWORD_ONLY]
        known = sorted({*own, *_MEASURING})

        @functools.wraps(fn)
        def run(model: nn.Module, x=None, **kwargs) -> Exported:
            if not isinstance(model, nn.Module):
                raise TypeError(f"{fn.__name__} expects an nn.Module; received {type(model).__name__}")
            if x is None:
                if not hasattr(model, "example_input"):
                    raise ValueError(f"{fn.__name__} needs an example batch x for a {type(model).__name__}")
                with private_rng(0, getattr(model, "device", None)):  # the caller's random state kept
                    x = model.example_input(1)
            unknown = sorted(set(kwargs) - set(known))
            if unknown:  # the caller's mistake, not the path's
                raise TypeError(f"{fn.__name__} takes the keywords {known}; received {unknown}")
            try:
                return fn(model, x, **kwargs)
            except _CallersError:
                raise
            except Exception as err:
                raise PathError(type(model).__name__, name, reason(err)) from err

        _FUNCTIONS[name] = run
        return run

    return register


def _dynamic_batch(x) -> tuple[tuple, tuple | None]:
    """The example to export with and torch.export's spec of its dynamic batch dimension. A batch
    of one image is doubled: torch.export takes a size of 1 for a constant. Anything but one batch
    tensor (NaViT's list of images) is exported as it is, without a spec."""
    if not isinstance(x, torch.Tensor):
        return (x,), None
    return ((torch.cat([x, x]) if len(x) == 1 else x),), ({0: torch.export.Dim("batch", min=1)},)


def _saver(path: str, artefact):
    return lambda folder: save_artefact(path, artefact, folder / f"artefact{SUFFIXES[path]}")


@_path("int8")
def to_int8(model: nn.Module, x=None, *, convs: bool = True, data=None, **measuring) -> Exported:
    """Dynamic INT8 quantisation of ``model`` (CPU) measured against it on ``x`` (default: the
    model's example input of one image). ``convs`` first folds BatchNorm and rewrites 1x1
    convolutions as linear layers (:func:`~vitlib.export.int8.prepare_int8`). ``details`` gives
    ``int8_layers`` and ``int8_flop_share``, the share of the matrix-product FLOPs that run in INT8.
    ``data`` (a test set) adds accuracy; ``measuring`` goes to :func:`~vitlib.export.measure`."""
    with building() as b:
        prepared = prepare_int8(model, convs)
        quantized = quantize_int8(prepared)
    # the share is the same for any batch size: counted on the first image
    details = {"convs": convs, "int8_layers": len(quantized_layers(quantized)),
               "int8_flop_share": int8_flop_share(prepared, x[:1])}
    return measure("int8", model, x, quantized, Runner("int8", quantized), build_s=b.seconds,
                   save=_saver("int8", quantized), data=data, details=details, notes=b.notes,
                   **measuring)


@_path("export")
def to_export(model: nn.Module, x=None, *, data=None, **measuring) -> Exported:
    """``torch.export.export`` of ``model`` with a dynamic batch dimension; the artefact is the
    ``ExportedProgram`` (saved as ``.pt2``), run through ``program.module()``."""
    with eval_mode(model), building() as b:
        example, dynamic = _dynamic_batch(x)
        program = torch.export.export(model, example, dynamic_shapes=dynamic)
    return measure("export", model, x, program, Runner("export", program.module()), build_s=b.seconds,
                   save=_saver("export", program), data=data, notes=b.notes, **measuring)


@_path("onnx")
def to_onnx(model: nn.Module, x=None, *, program=None, data=None, num_threads: int | None = None,
            **measuring) -> Exported:
    """ONNX export with the torch.export-based exporter (``dynamo=True``, dynamic batch), run by an
    ONNX Runtime CPU session on ``num_threads`` threads (the same number eager is timed with). The
    artefact is the ``ONNXProgram``; ``details["opset"]`` its opset. ``program``, an
    ``ExportedProgram`` of ``model`` with a dynamic batch (:func:`to_export`'s artefact), is
    converted as it is instead of capturing the model a second time; ``build_s`` is then the
    conversion alone (``details["from_program"]``)."""
    if program is not None and not isinstance(program, torch.export.ExportedProgram):
        raise _CallersError("program must be a torch.export.ExportedProgram (to_export's artefact); "
                            f"received {type(program).__name__}")
    with eval_mode(model), building() as b:
        example, dynamic = _dynamic_batch(x)
        if program is None:
            onnx_program = torch.onnx.export(model, example, dynamo=True, dynamic_shapes=dynamic, verbose=False)
        else:
            onnx_program = torch.onnx.export(program, example, dynamo=True, verbose=False)
        session = onnx_session(onnx_program.model_proto.SerializeToString(), num_threads)
    opset = next((o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return measure("onnx", model, x, onnx_program, Runner("onnx", session, session=True), build_s=b.seconds,
                   save=_saver("onnx", onnx_program), data=data, num_threads=num_threads,
                   details={"opset": opset, "from_program": program is not None}, notes=b.notes, **measuring)


@_path("torchscript")
def to_torchscript(model: nn.Module, x=None, *, data=None, **measuring) -> Exported:
    """``torch.jit.trace`` of ``model`` on ``x``: a deprecated path (its notes say so), measured for
    what it still gives. Tracing records one run, so the check on a batch of another size matters."""
    with eval_mode(model), torch.no_grad(), building() as b:
        script = torch.jit.trace(model, (x,), check_trace=False)  # measure() checks it, on two batches
    return measure("torchscript", model, x, script, Runner("torchscript", script), build_s=b.seconds,
                   save=_saver("torchscript", script), data=data, notes=(TORCHSCRIPT_NOTE, *b.notes),
                   **measuring)


@_path("compile")
def to_compile(model: nn.Module, x=None, *, backend: str = "inductor", mode: str | None = None, data=None,
               **measuring) -> Exported:
    """``torch.compile(model, backend=backend, mode=mode)``. Compiling happens on the first call:
    its time is ``build_s`` (and ``details["compile_s"]``), apart from the timed calls that follow.
    Parity is checked on ``x`` alone (another shape would compile again); nothing is saved."""
    compiled = torch.compile(model, backend=backend, mode=mode)
    with eval_mode(model), building() as b, torch.inference_mode():
        compiled(x)
    details = {"backend": backend, "mode": mode, "compile_s": b.seconds}
    return measure("compile", model, x, compiled, Runner("compile", compiled), build_s=b.seconds, data=data,
                   check_batch=False, details=details, notes=b.notes, **measuring)


def export(model: nn.Module, path: str, x=None, **kwargs) -> Exported:
    """Run the path named ``path`` (one of :data:`PATHS`) on ``model``; ``kwargs`` go to its function."""
    if path not in _FUNCTIONS:
        raise ValueError(f"path must be one of {list(PATHS)}; received {path!r}")
    return _FUNCTIONS[path](model, x, **kwargs)
