"""Chapter 8 (deployment): INT8, ONNX Runtime and the memory a served model takes, measured.

``python -m vitlib.bench export --json FILE`` measures two models, each for what it can show:

* accuracy on the book's quick-mode SimpleViT, trained :data:`TRAIN_EPOCHS` epochs on the bundled
  digits: INT8's accuracy against eager's on the test set (``int8_accuracy_drop_pt``, with the
  uncertainty of a paired difference) and ONNX Runtime's parity and speed-up at batch 1 on a model
  this small, where the interpreter's overhead decides (``ort_speedup_b1_quick``);
* speed and memory on vitlib's ViT-S/16 (:data:`SPEED_PRESET`, random weights: speed does not
  depend on the weights' values): ``int8_speedup_b16``, ``ort_speedup_b1`` and
  ``ort_max_abs_diff``, the weights in float32 and INT8 on disk (``int8_weights_mb_fp32``,
  ``int8_weights_mb_int8``) and the peak memory of a whole process serving each
  (``int8_peak_mb_fp32``, ``int8_peak_mb_int8``, beside ``peak_mb_without_model``, and the model's
  share of each, ``model_mb_fp32`` and ``model_mb_int8``): the "75% less memory" of INT8 holds for
  the weights, not for the process.

Each goal of :data:`GOALS` gets a verdict from :func:`vitlib.book.claims.verdict`. ``--tiny`` trains a
tiny SimpleViT one epoch and measures it alone, in seconds (for the tests).
"""
from __future__ import annotations

import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..claims import Measured, verdict
from ...data import first_images
from ...export import Exported, process_peak_mb, save_artefact, to_int8, to_onnx
from ...models import presets
from ...models.state import private_rng

__all__ = ["SPEED_PRESET", "TRAIN_EPOCHS", "TINY_TRAIN", "GOALS", "paired_drop", "trained_simple_vit",
           "serving_memory", "serving_sweep", "export_suite"]

#: The model the speed and memory figures are measured on.
SPEED_PRESET = "ViT-S/16"
#: Epochs of the quick-mode SimpleViT recipe the accuracy figures are measured on.
TRAIN_EPOCHS = 20
#: ``--tiny``: the SimpleViT's overrides and epochs.
TINY_TRAIN = {"model_overrides": dict(dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32), "epochs": 1}
#: Each goal: the figure, the threshold, whether the figure must be at least (True) or at most it.
GOALS = {"int8_speedup_b16": (1.4, True), "int8_accuracy_drop_pt": (0.5, False),
         "ort_speedup_b1": (1.2, True), "ort_max_abs_diff": (1e-4, False)}


def paired_drop(result: Exported) -> Measured:
    """Eager's accuracy minus the artefact's on the same test images, in percentage points, with
    about 95% bounds from the paired difference: two standard errors, ``2 sqrt(d) / n``, where
    ``d`` test images are classified right by one and wrong by the other; never less than ``3 / n``
    (the rule of three), so that few or no such images do not read as certainty."""
    if result.accuracy is None or result.discordant is None:
        raise ValueError(f"the {result.path} result has no accuracy: measure it with a data set")
    n, d = result.agreement_images, result.discordant
    drop, half = result.accuracy_drop_pt, max(2 * math.sqrt(d), 3) / n * 100
    return Measured(drop, drop - half, drop + half, n, "pt",
                    f"±{half:.2f} pt: two standard errors of a paired difference, at least 3/n; {d} of {n} "
                    "test images right in one and wrong in the other")


def trained_simple_vit(*, tiny: bool, seed: int = 0, device: str = "cpu"):
    """The quick-mode SimpleViT recipe trained :data:`TRAIN_EPOCHS` epochs on the digits (``tiny``:
    :data:`TINY_TRAIN`); returns ``(model in eval mode, data, history)``."""
    from ...train import QUICK_RECIPE, train_recipe

    options = TINY_TRAIN if tiny else {"epochs": TRAIN_EPOCHS}
    model, history, data = train_recipe(QUICK_RECIPE, seed=seed, device=device, progress=False, **options)
    return model.cpu().eval(), data, history


def serving_memory(model: torch.nn.Module, quantized: Exported, batch: int, threads: int | None) -> dict:
    """The weights of ``model`` on disk in float32 (a vitlib checkpoint) and INT8 (``quantized``'s
    artefact), and the peak memory of a fresh process serving each at ``batch`` images
    (:func:`vitlib.export.process_peak_mb`), the two processes at once. ``peak_mb_without_model``
    is the float32 process once its libraries are loaded, before it loads the model;
    ``model_mb_fp32`` and ``model_mb_int8`` are each process's peak minus its own memory before
    loading (``before_loading_mb_fp32``, ``before_loading_mb_int8``: each has imported what its
    loader needs): the model's share, weights and activations."""
    from ...train import save_checkpoint

    shape = (batch, model.channels, *model.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = save_checkpoint(Path(tmp) / "fp32.safetensors", model)
        int8 = save_artefact("int8", quantized.artefact, Path(tmp) / "int8.safetensors")
        files = {"fp32": fp32, "int8": int8}
        with ThreadPoolExecutor(len(files)) as pool:  # two fresh processes at once
            futures = {key: pool.submit(process_peak_mb, file, shape, threads) for key, file in files.items()}
            peaks = {key: future.result() for key, future in futures.items()}
        return {"int8_weights_mb_fp32": fp32.stat().st_size / 2**20,
                "int8_weights_mb_int8": int8.stat().st_size / 2**20,
                "peak_mb_without_model": peaks["fp32"]["before_loading_mb"],
                "int8_peak_mb_fp32": peaks["fp32"]["peak_mb"], "int8_peak_mb_int8": peaks["int8"]["peak_mb"],
                **{f"model_mb_{key}": p["peak_mb"] - p["before_loading_mb"] for key, p in peaks.items()},
                **{f"before_loading_mb_{key}": p["before_loading_mb"] for key, p in peaks.items()},
                "peak_batch": batch,
                "peak_after_loading": peaks["fp32"]["after_loading"]}


def serving_sweep(model: torch.nn.Module, quantized: Exported, onnx: Exported, batches, threads=(1, 2), *,
                  rounds: int = 2, min_run_time: float = 0.1, seed: int = 0):
    """Latency and throughput of ``model`` served three ways, eager, INT8 (``quantized``, from
    :func:`vitlib.export.to_int8`) and ONNX Runtime (``onnx``, from :func:`vitlib.export.to_onnx`),
    at each batch size and thread count: the three timed interleaved at each setting (ONNX Runtime
    in a session of that many threads). One row per (threads, batch, path): ``median_ms``,
    ``iqr_ms``, ``calls``, ``images_per_s`` and ``speedup`` (a :class:`~vitlib.book.claims.Measured`
    over eager at that setting)."""
    import pandas as pd

    from ...bench import inference_fn, time_interleaved
    from ...bench.timing import eval_mode
    from ...smoke import serving_on_cpu
    from ...export import Runner, onnx_session

    if quantized.path != "int8" or onnx.path != "onnx":
        raise ValueError(f"expected the results of to_int8 and to_onnx; received {quantized.path!r} and "
                         f"{onnx.path!r}")
    batches, threads = [int(b) for b in batches], [int(t) for t in threads]
    if not batches or min(batches) < 1 or not threads or min(threads) < 1:
        raise ValueError(f"batch sizes and thread counts must be positive; received {batches} and {threads}")
    proto = onnx.artefact.model_proto.SerializeToString()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with eval_mode(model):
        for t in threads:
            session = Runner("onnx", onnx_session(proto, t), session=True)
            for b in batches:
                x = torch.randn(b, model.channels, *model.image_size, generator=generator)
                fns = {"eager": inference_fn(model, x), "int8": (lambda x=x: quantized.runner(x)),
                       "onnx": (lambda x=x: session(x))}
                with serving_on_cpu():
                    times = time_interleaved(fns, rounds=rounds, min_run_time=min_run_time, num_threads=t,
                                             warmup=1)
                for path, ts in times.items():
                    m = Measured.of_values(ts)
                    rows.append({"threads": t, "batch": b, "path": path, "median_ms": m.value * 1e3,
                                 "iqr_ms": (m.high - m.low) * 1e3, "calls": m.n, "images_per_s": b / m.value,
                                 "speedup": Measured.ratio(times["eager"], ts)})
    return pd.DataFrame(rows)


def export_suite(args) -> dict:
    """INT8 and ONNX Runtime against eager: accuracy on a trained quick-mode SimpleViT, speed and
    memory on ViT-S/16, a verdict on each goal of :data:`GOALS`. Seeded by ``args.seed``; the caller's
    random state is left as it was."""
    with private_rng(args.seed):
        return _export_suite(args)


def _export_suite(args) -> dict:
    tiny = bool(getattr(args, "tiny", False))
    threads = args.threads
    timing = dict(rounds=args.rounds, min_run_time=args.min_run_time, num_threads=threads)
    print("training the quick-mode SimpleViT on the digits"
          + (" (tiny)" if tiny else f" ({TRAIN_EPOCHS} epochs)"))
    small, data, history = trained_simple_vit(tiny=tiny, seed=args.seed)
    results = {
        "int8 (SimpleViT, b16)": to_int8(small, first_images(data.test, 16)[0], data=data.test, **timing),
        "onnx (SimpleViT, b1)": to_onnx(small, first_images(data.test, 1)[0], data=data.test, **timing),
    }
    int8_small, ort_small = results.values()
    int8_speed, ort_speed = int8_small, ort_small
    speed_name, speed = "the tiny SimpleViT" if tiny else SPEED_PRESET, small
    if not tiny:  # the tiny setting times the trained model alone
        print(f"measuring {SPEED_PRESET} (random weights)")
        speed = presets.create(SPEED_PRESET).eval()
        int8_speed = to_int8(speed, speed.example_input(16), **timing)
        ort_speed = to_onnx(speed, speed.example_input(1), **timing)
        results.update({f"int8 ({SPEED_PRESET}, b16)": int8_speed, f"onnx ({SPEED_PRESET}, b1)": ort_speed})
    for name, result in results.items():
        print(f"\n{name}\n{result}")
    print(f"\nmeasuring the peak memory of processes serving {speed_name} in float32 and in INT8")
    memory = serving_memory(speed, int8_speed, int8_speed.batch, threads)
    measured = {"int8_speedup_b16": int8_speed.speedup, "int8_accuracy_drop_pt": paired_drop(int8_small),
                "ort_speedup_b1": ort_speed.speedup,
                "ort_max_abs_diff": Measured.exact(ort_speed.max_abs_diff)}
    goals = {}
    for key, (threshold, at_least) in GOALS.items():
        goals[key] = {"goal": f"{'at least' if at_least else 'at most'} {threshold:g}",
                      "verdict": verdict(measured[key], threshold, at_least=at_least),
                      **measured[key].to_dict()}
    figures = {
        "tiny": tiny, "threads": int8_speed.threads, "accuracy_model": {
            "model": "SimpleViT", "recipe": "quick", "epochs": len(history), "dataset": data.name,
            "test_images": len(data.test), "eager_accuracy": int8_small.eager_accuracy},
        "speed_model": {"model": speed_name, "weights": "trained" if tiny else "random",
                        "config": speed.config},
        **{key: m.to_dict() for key, m in measured.items()},
        "int8_accuracy": int8_small.accuracy, "int8_top1_agreement": int8_small.top1_agreement,
        "int8_flop_share": int8_speed.details["int8_flop_share"],
        "ort_speedup_b1_quick": ort_small.speedup.to_dict(), "ort_max_abs_diff_quick": ort_small.max_abs_diff,
        **memory, "goals": goals, "results": {name: r.row() for name, r in results.items()},
    }
    _print_goals(goals, measured, memory)
    return figures


def _print_goals(goals: dict, measured: dict, memory: dict) -> None:
    print("\ngoals")
    for key, goal in goals.items():
        print(f"  {key}: {goal['verdict']} (goal: {goal['goal']})\n      measured {measured[key]}")
    saved = memory["int8_weights_mb_int8"] / memory["int8_weights_mb_fp32"] - 1
    peak = memory["int8_peak_mb_int8"] / memory["int8_peak_mb_fp32"] - 1
    print(f"\nweights on disk: {memory['int8_weights_mb_fp32']:.2f} MB float32, "
          f"{memory['int8_weights_mb_int8']:.2f} MB INT8 ({saved:+.0%})")
    print(f"peak memory of a process serving batch {memory['peak_batch']}: "
          f"{memory['int8_peak_mb_fp32']:.0f} MB float32, {memory['int8_peak_mb_int8']:.0f} MB INT8 "
          f"({peak:+.0%}); {memory['peak_mb_without_model']:.0f} MB before loading a model; the model's "
          f"share {memory['model_mb_fp32']:.0f} MB float32, {memory['model_mb_int8']:.0f} MB INT8")
