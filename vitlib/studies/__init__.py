"""The chapters' experiments, one module per chapter, built on :mod:`vitlib.bench`,
:mod:`vitlib.models` and :mod:`vitlib.train`.

* :mod:`~vitlib.studies.anatomy` (chapter 1): the ``anatomy`` suite, ViT against SimpleViT;
* :mod:`~vitlib.studies.lightweight` (chapter 2): sizing a SimpleViT one knob at a time, a base
  and a variant compared interleaved, a profiled training step, several seeds, and the ``train``
  suite (time to accuracy);
* :mod:`~vitlib.studies.levit` (chapter 3): the stem as an affine map, the stem's share of the
  FLOPs, attention scores per stage as the image grows, the paper's LeViTs counted;
* :mod:`~vitlib.studies.crossvit` (chapter 4): a CrossViT's parts and their growth with the
  image, the paper's CrossViTs counted against the paper's table, the fine and the coarse
  single-scale ViT, a ViT of equal FLOPs trained under the same recipe;
* :mod:`~vitlib.studies.navit` (chapter 5): the mixed-resolution workload, packing, token dropout
  and the ``navit`` suite;
* :mod:`~vitlib.studies.attention` (chapter 7): attention kernels against the plain path as tokens
  grow, in time and memory; float32 against bfloat16 and float16; the recorded GPU results;
* :mod:`~vitlib.studies.distillation` (chapter 6): a teacher, the same student alone and distilled
  with every image labelled and with few, temperature and alpha, teacher against student speed;
* :mod:`~vitlib.studies.deployment` (chapter 8): INT8 and ONNX Runtime against eager, accuracy,
  speed and the memory of a served model, the ``export`` suite;
* :mod:`~vitlib.studies.deployment` (chapter 8): INT8 and ONNX Runtime against eager, the memory of
  a serving process, latency and throughput against batch size and threads, the ``export`` suite;
* :mod:`~vitlib.studies.scaling` (chapter 9): training on several processes under torchrun;
* :mod:`~vitlib.studies.gpu` and :mod:`~vitlib.studies.gpu_record`: the ``gpu`` and ``gpu-record``
  suites, the book's GPU figures (``make gpu-bench``, ``make gpu-record``);
* :mod:`~vitlib.studies.synthesis` (chapter 10): every model under one budget, the deployment paths
  on top, the claims gathered from every chapter, claim C15 and a decision guide.

Importing this package registers every suite with :func:`vitlib.bench.register_suite`.
"""
from . import (anatomy, attention, crossvit, deployment, distillation, gpu_record, inference, levit, lightweight,
               navit, scaling)

__all__ = ["anatomy", "attention", "crossvit", "deployment", "distillation", "gpu_record", "levit", "lightweight",
           "navit", "scaling"]
