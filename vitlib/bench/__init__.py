"""Measure models: parameters, FLOPs, latency, throughput and peak memory, and compare them fairly.

* :mod:`~vitlib.bench.timing`: :class:`Timing`, :func:`time_function`, :func:`time_interleaved`,
  :func:`measure_inference`, :func:`measure_train_step`, :func:`peak_memory`, :func:`eval_mode`;
* :mod:`~vitlib.bench.counting`: parameters and FLOPs (in all and by component), attention
  entries, per-part tables (:func:`part_table`);
* :mod:`~vitlib.bench.comparison`: several candidates timed interleaved into one table
  (:func:`compare`, :func:`scaling_sweep`, :func:`block_time_split`);
* :mod:`~vitlib.bench.measured`: :class:`Measured`, a value with its range (a ratio of timings, an
  accuracy difference, a count);
* :mod:`~vitlib.bench.profiling`: where a call's time goes, by operator and by kind of work
  (:func:`time_by_kind`);
* :mod:`~vitlib.bench.provenance`: device, versions, date and commit of a measurement;
* :mod:`~vitlib.bench.cli`: ``python -m vitlib.bench SUITE --json FILE`` and the registry of suites
  (:func:`register_suite`), which the chapters' studies (:mod:`vitlib.book.studies`) fill.

Measuring code asks the model what it is (``components()``, ``parts()``, ``example_input()``); it
knows nothing about any one chapter.
"""
from .cli import SUITES, load_suites, main, register_suite
from .comparison import block_time_split, compare, format_table, scaling_sweep, speedup
from .counting import (
    COMPONENTS,
    attention_entries,
    count_flops,
    count_parameters,
    flops_by_component,
    meta_parts,
    part_table,
    parameters_by_component,
    sequence_length,
)
from .measured import Measured
from .profiling import operator_times, time_by_kind
from .provenance import cpu_features, device_name, provenance
from .timing import (
    MIN_CALLS,
    Timing,
    batch_and_device,
    default_threads,
    eval_mode,
    inference_fn,
    measure_inference,
    measure_train_step,
    peak_memory,
    time_function,
    time_interleaved,
    train_step_fn,
)

__all__ = [
    "count_parameters",
    "parameters_by_component",
    "count_flops",
    "flops_by_component",
    "attention_entries",
    "sequence_length",
    "meta_parts",
    "part_table",
    "COMPONENTS",
    "MIN_CALLS",
    "Measured",
    "Timing",
    "time_function",
    "time_interleaved",
    "eval_mode",
    "batch_and_device",
    "default_threads",
    "inference_fn",
    "train_step_fn",
    "measure_inference",
    "measure_train_step",
    "peak_memory",
    "operator_times",
    "time_by_kind",
    "compare",
    "speedup",
    "scaling_sweep",
    "block_time_split",
    "format_table",
    "provenance",
    "device_name",
    "cpu_features",
    "SUITES",
    "register_suite",
    "load_suites",
    "main",
]
