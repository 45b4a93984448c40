"""The chapters' experiments, one module per chapter, built on :mod:`vitlib.bench`,
:mod:`vitlib.models` and :mod:`vitlib.train`.

* :mod:`~vitlib.book.studies.anatomy` (chapter 1): the ``anatomy`` suite, ViT against SimpleViT;
* :mod:`~vitlib.book.studies.lightweight` (chapter 2): sizing a SimpleViT one knob at a time, a base
  and a variant compared interleaved, a profiled training step, several seeds, and the ``train``
  suite (time to accuracy);
* :mod:`~vitlib.book.studies.levit` (chapter 3): the stem as an affine map, the stem's share of the
  FLOPs, attention scores per stage as the image grows, the paper's LeViTs counted;
* :mod:`~vitlib.book.studies.crossvit` (chapter 4): a CrossViT's parts and their growth with the
  image, the paper's CrossViTs counted against the paper's table, the fine and the coarse
  single-scale ViT, a ViT of equal FLOPs trained under the same recipe;
* :mod:`~vitlib.book.studies.navit` and :mod:`~vitlib.book.studies.navit_training` (chapter 5): the
  mixed-resolution workload, packing and token dropout; training steps and runs timed, and the
  ``navit`` suite;
* :mod:`~vitlib.book.studies.attention` (chapter 7): attention kernels against the plain path as tokens
  grow, in time and memory; float32 against bfloat16 and float16; the recorded GPU results;
* :mod:`~vitlib.book.studies.distillation` (chapter 6): a teacher, the same student alone and distilled
  with every image labelled and with few, temperature and alpha, teacher against student speed;
* :mod:`~vitlib.book.studies.deployment` (chapter 8): INT8 and ONNX Runtime against eager, the memory of
  a serving process, latency and throughput against batch size and threads, the ``export`` suite;
* :mod:`~vitlib.book.studies.inference` (chapters 7 and 8): the ``infer`` suite, vitlib against timm and
  vit-pytorch and the matrix products' roofline;
* :mod:`~vitlib.book.studies.scaling` (chapter 9): training on several processes under torchrun;
* :mod:`~vitlib.book.studies.gpu` and :mod:`~vitlib.book.studies.gpu_record`: the ``gpu`` and ``gpu-record``
  suites, the book's GPU figures (``make gpu-bench``, ``make gpu-record``);
* :mod:`~vitlib.book.studies.synthesis` and :mod:`~vitlib.book.studies.choices` (chapter 10): every model
  under one budget and the deployment paths on top; the Pareto front, claim C15 and a decision guide.

Every suite of ``python -m vitlib.bench`` is named in :data:`SUITES`, and registered from there
(:func:`vitlib.bench.register_suite`) when this package is imported.
"""
from ...bench import register_suite
from . import (anatomy, attention, choices, crossvit, deployment, distillation, gpu, gpu_record, inference,
               levit, lightweight, navit, navit_training, scaling, synthesis)

#: The bench suites by name: what ``python -m vitlib.bench NAME`` runs.
SUITES = {
    "anatomy": anatomy.anatomy_suite,
    "train": lightweight.train_suite,
    "navit": navit_training.navit_suite,
    "export": deployment.export_suite,
    "infer": inference.infer_suite,
    "gpu": gpu.gpu_suite,
    "gpu-record": gpu_record.gpu_record_suite,
}
for _name, _suite in SUITES.items():
    register_suite(_name)(_suite)

__all__ = ["SUITES", "anatomy", "attention", "crossvit", "deployment", "distillation", "gpu", "gpu_record",
           "inference", "levit", "lightweight", "navit", "navit_training", "scaling", "synthesis", "choices"]
