"""Deployment: quantisation, export, ONNX Runtime, compile, each measured against the eager model.

One function per path, each returning an :class:`Exported`, the artefact together with what was
measured in this run (latency against eager, interleaved, with its spread; size on disk; largest
absolute logit difference; top-1 agreement; accuracy when a data set is given):

* :func:`to_int8`: dynamic INT8 quantisation (``torch.ao``) of the linear layers; BatchNorm folded
  and 1x1 convolutions rewritten as linear layers first, so LeViT's compute runs in INT8 too;
* :func:`to_export`: ``torch.export`` with a dynamic batch dimension;
* :func:`to_onnx`: ONNX through the torch.export-based exporter, run with ONNX Runtime;
* :func:`to_torchscript`: ``torch.jit.trace``, the deprecated path;
* :func:`to_compile`: ``torch.compile``, its compile time apart from its run time.

:func:`export` runs a path by name (:data:`PATHS`); a model a path cannot take raises
:class:`PathError` with the reason. :func:`support_matrix` runs every path on every model of the
book (:func:`book_models`) and :func:`matrix_table` renders it. :func:`save_artefact` and :func:`load`
write and read artefacts, each with its own loader (nothing is unpickled);
:func:`process_peak_mb` measures the memory of a process serving one. The command line:
``python -m vitlib.export CHECKPOINT --to int8|onnx|export|torchscript OUT`` (:mod:`~vitlib.export.cli`).
"""
from .artefacts import SUFFIXES, load, onnx_session, process_peak_mb, save_artefact
from .int8 import int8_flop_share, load_int8, prepare_int8, quantize_int8, save_int8
from .matrix import book_models, matrix_table, support_matrix
from .measure import Exported, Runner, measure, reason
from .paths import PATHS, PathError, export, to_compile, to_export, to_int8, to_onnx, to_torchscript

__all__ = [
    "Exported",
    "Runner",
    "PATHS",
    "PathError",
    "SUFFIXES",
    "to_int8",
    "to_export",
    "to_onnx",
    "to_torchscript",
    "to_compile",
    "export",
    "measure",
    "reason",
    "book_models",
    "support_matrix",
    "matrix_table",
    "save_artefact",
    "load",
    "onnx_session",
    "process_peak_mb",
    "prepare_int8",
    "quantize_int8",
    "int8_flop_share",
    "save_int8",
    "load_int8",
]
