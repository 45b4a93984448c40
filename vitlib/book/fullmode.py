"""What each chapter's full mode costs, on a T4 (Colab's free GPU) and on an A100, before anyone runs it.

``make full-rehearsal`` runs every chapter's full mode at the smoke scale (:mod:`vitlib.smoke`),
and the library notes, as it goes, what the planned run would do: every training run's FLOPs
(counted on its first step, forward and backward, times the planned images and epochs), steps and
peak memory at the planned batch; every timing's planned calls, with the FLOPs and the peak memory
of one call (counted and profiled), and for timings that full mode makes on the CPU (deployment,
serving) the seconds one call took on this CPU. :func:`summarise` turns those notes into each
chapter's expected time and peak memory on each GPU of :data:`GPUS`, checks them against a free
T4's budget (:data:`BUDGET_S`, :data:`BUDGET_BYTES`), and lists what a CPU cannot rehearse.

The times are estimates, and say so: FLOPs divided by an assumed share of the GPU's peak
(:data:`GPUS`), a fixed cost per training step for the Python and kernel launches around it, and the
planned seconds of every timing; CPU work at the speed measured here (Colab's host has two
vCPUs, like this machine); compilation (chapter 8's ``torch.compile``) is not counted. The peak
memory is that of the largest single training step or timed call, in float32 (an upper bound
under 16-bit autocast). When ``make gpu-record`` has measured the main recipe's training on a GPU
(``gpu-record.json``), the measured throughput replaces the assumption for that GPU.

``python -m vitlib.book.fullmode cifar10-archive DIR`` writes a CIFAR-10 archive in the real format (the
rehearsal's data set, so that the real reader runs) and prints its MD5;
``python -m vitlib.book.fullmode summarise LEDGER OUT [--record FILE]`` writes the summary.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ..locations import recorded_dir

__all__ = ["GPUS", "BUDGET_S", "BUDGET_BYTES", "estimate", "summarise", "recorded_estimate", "title_line",
           "cifar10_archive"]

#: Full mode's budget on a free Colab T4: 20 minutes and 15 GB (of its 16) per chapter.
BUDGET_S = 20 * 60
BUDGET_BYTES = 15 * 2**30

#: The GPUs estimated for. ``peak``: dense 16-bit tensor-core FLOP/s (float16 on the T4, bfloat16
#: on the A100, as :func:`vitlib.backends.half_precision` picks); ``share``: the share of it assumed
#: for the book's models (small transformers; an assumption until ``make gpu-record`` measures it);
#: ``step_s``: seconds assumed per training step for Python and kernel launches; ``call_s``: per
#: timed call; ``memory``: bytes a chapter may use.
GPUS = {
    "T4": {"name": "NVIDIA T4 (Colab's free GPU)", "peak": 65e12, "share": 0.30, "step_s": 0.015,
           "call_s": 0.002, "memory": 15 * 2**30},
    "A100": {"name": "NVIDIA A100 40 GB", "peak": 312e12, "share": 0.25, "step_s": 0.010, "call_s": 0.001,
             "memory": 40 * 2**30},
}
#: Seconds assumed per chapter for what the notes do not count: starting the kernel, imports,
#: reading CIFAR-10, drawing figures.
FIXED_S = 45.0
#: Seconds per training image for loading and augmenting it on Colab's two host CPUs.
DATA_S_PER_IMAGE = 20e-6


def _timing_s(t: dict, gpu: dict, throughput: float) -> float:
    """Seconds one planned timing takes: each round's warm-up calls, then calls until both its
    minimum count and its minimum seconds are reached."""
    if t.get("on_cpu"):
        call = float(t["call_s"])
    else:
        call = (t.get("flops") or 0) / throughput + gpu["call_s"]
    per_round = max(float(t["min_run_time"]), int(t["min_calls"]) * call)
    rounds = int(t.get("rounds", 1))
    return int(t["warmup"]) * call + per_round + (rounds - 1) * (call + per_round)


def estimate(notes: list[dict], gpu: str, measured: dict | None = None) -> dict:
    """Seconds and peak bytes that the noted work needs on ``gpu`` (a key of :data:`GPUS`):
    ``train_s``, ``timing_s``, ``cpu_s`` (timings made on the CPU), ``total_s``, ``peak_bytes``;
    ``measured``: a :func:`recorded_throughput` for this GPU, which replaces the assumed share."""
    spec = GPUS[gpu]
    throughput = (measured or {}).get("flops_per_s") or spec["peak"] * spec["share"]
    trains = [n for n in notes if n["kind"] == "train"]
    timings = [n for n in notes if n["kind"] == "timing"]
    train_s = sum(n["flops"] / throughput + n["steps"] * spec["step_s"] + n["images"] * DATA_S_PER_IMAGE
                  for n in trains)
    gpu_timing_s = sum(_timing_s(t, spec, throughput) for t in timings if not t.get("on_cpu"))
    cpu_s = sum(_timing_s(t, spec, throughput) for t in timings if t.get("on_cpu"))
    peaks = [n["peak_bytes"] for n in trains + [t for t in timings if not t.get("on_cpu")]
             if n.get("peak_bytes") is not None]
    return {"train_s": train_s, "timing_s": gpu_timing_s, "cpu_s": cpu_s,
            "total_s": FIXED_S + train_s + gpu_timing_s + cpu_s, "peak_bytes": max(peaks, default=0),
            "assumed": not (measured or {}).get("flops_per_s")}


def read_ledger(folder: Path) -> dict[str, list[dict]]:
    """Each chapter's notes (one JSON line each), by chapter."""
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in sorted(Path(folder).glob("*.jsonl"))}


def recorded_throughput() -> dict[str, dict]:
    """By GPU key of :data:`GPUS`: the training throughput ``make gpu-record`` measured there
    (``flops_per_s``, with the record's provenance), when it has."""
    from .results import recorded_gpu_results

    record = recorded_gpu_results("gpu-record") or {}
    found = {}
    for key in GPUS:
        run = record.get("training", {})
        if key.lower() in str(record.get("provenance", {}).get("device_name", "")).lower() and run.get("flops_per_s"):
            found[key] = {"flops_per_s": run["flops_per_s"], "provenance": record.get("provenance")}
    return found


def summarise(ledger: Path, *, measured: dict[str, dict] | None = None) -> dict:
    """Every chapter's estimate on every GPU of :data:`GPUS`, its training runs and timings, what
    was not rehearsed, and whether it fits a free T4 (``fits``)."""
    measured = recorded_throughput() if measured is None else measured
    chapters = {}
    for chapter, notes in read_ledger(ledger).items():
        gpus = {gpu: estimate(notes, gpu, measured.get(gpu)) for gpu in GPUS}
        t4 = gpus["T4"]
        trains = [n for n in notes if n["kind"] == "train"]
        chapters[chapter] = {
            "gpus": gpus,
            "train_runs": len(trains), "train_flops": sum(n["flops"] for n in trains),
            "timings": sum(1 for n in notes if n["kind"] == "timing"),
            "not_rehearsed": sorted({f"{n['what']}: {n['why']}" for n in notes if n["kind"] == "skipped"}),
            "fits": t4["total_s"] <= BUDGET_S and t4["peak_bytes"] <= BUDGET_BYTES,
        }
    return {"budget_s": BUDGET_S, "budget_bytes": BUDGET_BYTES, "gpus": GPUS, "fixed_s": FIXED_S,
            "chapters": chapters}


def recorded_estimate(chapter: str) -> dict | None:
    """``chapter``'s entry of the recorded ``full-mode.json`` (``make full-rehearsal RECORD=1``)."""
    from .results import recorded_gpu_results

    return ((recorded_gpu_results("full-mode") or {}).get("chapters") or {}).get(chapter)


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min"


def title_line(chapter: str) -> str | None:
    """What a chapter says under its title about its full mode: the expected minutes on a T4 and
    an A100, the GPU memory of its largest step, and how both were obtained; None when nothing is
    recorded."""
    entry = recorded_estimate(chapter)
    if not entry:
        return None
    t4, a100 = entry["gpus"]["T4"], entry["gpus"]["A100"]
    from .results import recorded_gpu_results

    cpu = ((recorded_gpu_results("full-mode") or {}).get("provenance") or {}).get("device_name", "unnamed")
    basis = []
    for key, est in (("T4", t4), ("A100", a100)):
        spec = GPUS[key]
        basis.append(f"an assumed {spec['share']:.0%} of a{'n' if key[0] == 'A' else ''} {key}'s "
                     f"{spec['peak'] / 1e12:.0f} TFLOP/s" if est.get("assumed", True) else
                     f"the throughput `make gpu-record` measured on a{'n' if key[0] == 'A' else ''} {key}")
    return (f"Full mode (a GPU, as in Colab): about {_minutes(t4['total_s'])} on a T4 and "
            f"{_minutes(a100['total_s'])} on an A100; its largest training step or timed call needs "
            f"at most {max(0.1, t4['peak_bytes'] / 2**30):.1f} GiB of GPU memory (in float32). "
            f"Estimated by `make full-rehearsal`, not measured: the FLOPs it counts at "
            f"{' and '.join(basis)}"
            + (f", its CPU work (deployment, serving) at the speed of the CPU that rehearsed it ({cpu})"
               if t4.get("cpu_s") else "") + ", plus fixed costs.")


def _drift(summary: dict, recorded: dict | None) -> list[str]:
    """The chapters whose T4 estimate differs from the recorded one by more than a fifth (or that
    the record lacks)."""
    if recorded is None:
        return list(summary["chapters"])
    off = []
    for chapter, entry in summary["chapters"].items():
        old = (recorded.get("chapters", {}).get(chapter) or {}).get("gpus", {}).get("T4", {}).get("total_s")
        new = entry["gpus"]["T4"]["total_s"]
        if not old or abs(new - old) > 0.2 * old:
            off.append(chapter)
    return off


def _print(summary: dict) -> None:
    print(f"{'chapter':32s} {'T4 min':>7s} {'A100 min':>8s} {'peak GB':>8s}  fits a free T4")
    for chapter, entry in summary["chapters"].items():
        t4, a100 = entry["gpus"]["T4"], entry["gpus"]["A100"]
        print(f"{chapter:32s} {t4['total_s'] / 60:7.1f} {a100['total_s'] / 60:8.1f} "
              f"{t4['peak_bytes'] / 2**30:8.2f}  {'yes' if entry['fits'] else 'NO'}")
        for item in entry["not_rehearsed"]:
            print(f"    not rehearsed (needs a GPU): {item}")


# ------------------------------------------------------------------------------------------------
# a CIFAR-10 archive in the real format


def cifar10_archive(folder: str | Path, seed: int = 0) -> str:
    """Write ``cifar-10-python.tar.gz`` into ``folder`` in CIFAR-10's real format (five training
    batches of 10,000 images, a test batch, ``batches.meta``; pickled dictionaries of uint8 rows,
    pickled with protocol 4 where the original's Python 2 wrote byte strings),
    with images drawn at random around a colour per class, and return its MD5 (for
    ``VITLIB_TEST_CIFAR10_MD5``). An existing archive is kept."""
    import io
    import pickle
    import tarfile

    import numpy as np

    folder = Path(folder)
    archive = folder / "cifar-10-python.tar.gz"
    if not archive.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, size=(10, 3072), dtype=np.uint8)
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

        def batch(label: str, n: int) -> bytes:
            labels = rng.integers(0, 10, size=n)
            noise = rng.integers(0, 32, size=(n, 3072), dtype=np.uint8)
            data = (base[labels] // 2 + noise).astype(np.uint8)
            return pickle.dumps({"batch_label": label, "labels": labels.tolist(), "data": data,
                                 "filenames": [f"image_{i}.png" for i in range(n)]}, protocol=4)

        files = {f"data_batch_{i}": batch(f"training batch {i} of 5", 10_000) for i in range(1, 6)}
        files["test_batch"] = batch("testing batch 1 of 1", 10_000)
        files["batches.meta"] = pickle.dumps({"label_names": names, "num_cases_per_batch": 10_000,
                                              "num_vis": 3072}, protocol=4)
        tmp = archive.with_suffix(".tmp")
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
            for name, raw in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        tmp.rename(archive)
    return hashlib.md5(archive.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cifar10-archive", help="write a CIFAR-10 archive in the real format; print its MD5")
    p.add_argument("folder")
    p = sub.add_parser("summarise", help="each chapter's full-mode time and memory from the rehearsal's notes")
    p.add_argument("ledger")
    p.add_argument("out")
    p.add_argument("--record", help="also write the summary here (book/results/full-mode.json)")
    args = parser.parse_args(argv)
    if args.command == "cifar10-archive":
        print(cifar10_archive(args.folder))
        return
    from ..bench.provenance import provenance

    summary = {**summarise(Path(args.ledger)), "provenance": provenance("cpu")}
    text = json.dumps(summary, indent=1) + "\n"
    Path(args.out).write_text(text)
    if args.record:
        Path(args.record).write_text(text)
    _print(summary)
    drift = None if args.record else _drift(summary, json.loads((recorded_dir() / "full-mode.json").read_text())
                                            if (recorded_dir() / "full-mode.json").is_file() else None)
    if drift:
        print(f"the recorded estimates (book/results/full-mode.json) are off by more than a fifth for "
              f"{drift}: refresh them with `make full-rehearsal RECORD=1`")
    late = [c for c, e in summary["chapters"].items() if not e["fits"]]
    if late:
        sys.exit(f"full mode does not fit a free T4 ({BUDGET_S // 60} min, {BUDGET_BYTES / 2**30:.0f} GB): {late}")


if __name__ == "__main__":
    main()
