"""Chapter 9's experiments: training on several processes, launched by torchrun.

* :func:`run_torchrun` launches ``-m vitlib.train`` (or any module) under torchrun from Python,
  with the interpreter that runs the notebook, the notebook's environment (so a ``PYTHONPATH``
  reaches the processes), a stated number of threads per process, and the output as text.
* :func:`measure_steps` runs in every process of ``python -m vitlib.book.studies.scaling`` under
  torchrun. In interleaved rounds it times: a DistributedDataParallel step on each process's
  slice of one global batch; the same step without the gradient all-reduce (``no_sync``: compute
  only); the all-reduce of a gradient-sized buffer alone; and rank 0 training alone on the whole
  global batch with every core (then with one thread) while the others wait. Then the all-reduce
  over a range of buffer sizes. Rank 0 writes it all to JSON with its provenance.
* :func:`step_table`, :func:`speedup` and :func:`communication_share` turn that into the
  chapter's figures; :func:`replica_memory` says what one GPU holds under DDP and under FSDP.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ...compat import ddp_first_bucket_bytes
from ...models.state import private_rng
from ..claims import Measured
from ...train.distributed import part_bounds, session, world

__all__ = ["Launch", "available_cores", "torchrun_command", "run_torchrun", "recipe_model", "measure_steps",
           "load_result", "step_table", "one_device", "speedup", "explain", "communication_share",
           "parameter_count", "gradient_bytes", "replica_memory", "data_parallel_here", "main"]

#: The timed candidates of :func:`measure_steps`, in the order of the table.
CANDIDATES = {
    "ddp": "{p} processes (DDP), {t} each",
    "compute": "{p} processes, no gradient all-reduce",
    "exchange": "gradient all-reduce alone",
    "one": "1 process, {c}",
    "one_thread": "1 process, 1 thread",
}
#: Buffer sizes (float32 values) of the all-reduce sweep: 4 KB to 16 MB.
SWEEP_VALUES = tuple(128 * 8 ** k for k in range(1, 6))


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Launch:
    """A finished torchrun launch: the command as a reader would type it, its exit status, its
    output (stdout and stderr, as text) and its wall-clock time."""

    shown: str
    returncode: int
    output: str
    wall_s: float

    def __str__(self) -> str:
        return f"$ {self.shown}\n{self.output.rstrip()}"


def torchrun_command(processes: int, args: list[str], *, module: str = "vitlib.train") -> list[str]:
    """``torchrun --standalone --nproc_per_node=<processes> -m <module> <args>``, run with this
    interpreter (``python -m torch.distributed.run`` is torchrun). ``--standalone`` starts the
    rendezvous on a free local port, so several jobs on one machine never collide."""
    if processes < 1:
        raise ValueError(f"processes must be positive; received {processes}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", module, *map(str, args)]


def run_torchrun(processes: int, args: list[str], *, module: str = "vitlib.train", threads: int | None = None,
                 timeout_s: float = 600.0) -> Launch:
    """Run :func:`torchrun_command` with this process's environment and ``OMP_NUM_THREADS``
    threads per process (default: the cores shared out, at least one); return the
    :class:`Launch`, or raise RuntimeError with the output's end when the job fails."""
    threads = threads or max(1, available_cores() // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = torchrun_command(processes, args, module=module)
    shown = shlex.join(["torchrun", *command[3:]])
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout_s)
    launch = Launch(f"OMP_NUM_THREADS={threads} {shown}", done.returncode, done.stdout, time.perf_counter() - start)
    if done.returncode != 0:
        raise RuntimeError(f"{shown} exited with status {done.returncode}:\n{done.stdout[-3000:]}")
    return launch


# ---------------------------------------------------------------------------------------------
# timing across processes (run by every process under torchrun)


def recipe_model(recipe: str = "quick", device: torch.device | str = "cpu") -> tuple[nn.Module, tuple[int, int, int]]:
    """The SimpleViT of ``RECIPES[recipe]`` (seeded), on ``device``, and its input shape (C, H, W)."""
    from ...train import RECIPES, build_model

    r = RECIPES[recipe]["simple_vit"]
    channels = 1 if r["dataset"]["name"] == "digits" else 3
    size = r["dataset"]["image_size"]
    shape = SimpleNamespace(image_size=(size, size), channels=channels, num_classes=10)
    config = {k: v for k, v in r["model"].items() if k != "name"}
    with private_rng(0):  # the same weights in every process; the caller's random state kept
        model = build_model("simple_vit", shape, **config)
    return model.to(device), (channels, size, size)


def _step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return run


def _timed(fn, threads: int, calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls (after the Timer's two warm-up calls), with
    ``threads`` torch threads; CUDA work is synchronised by the Timer."""
    from torch.utils import benchmark

    return benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads).timeit(calls).times[0]


def measure_steps(*, recipe: str = "quick", global_batch: int = 64, rounds: int = 5, calls: int = 3,
                  sweep_rounds: int = 3, alone_threads: int | None = None,
                  device: torch.device | str = "cpu") -> dict | None:
    """Time training steps on every process of the group (see the module's docstring); return
    the figures on rank 0 and None elsewhere. Rank 0 alone runs with ``alone_threads`` threads
    (default: every core). Inputs are random images of the recipe's shape: a step's time does
    not depend on the pixels."""
    import torch.distributed as dist

    from ...bench import provenance

    w = world()
    if w.size < 2:
        raise ValueError(f"measure_steps compares processes; run it under torchrun with 2 or more; received {w.size}")
    if global_batch % w.size:
        raise ValueError(f"global_batch must divide by the {w.size} processes; received {global_batch}")
    device = torch.device(device)
    cores = available_cores()
    threads = torch.get_num_threads()  # what torchrun's OMP_NUM_THREADS gave this process
    alone = alone_threads or max(cores, threads)
    model, shape = recipe_model(recipe, device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(global_batch, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (global_batch,), generator=gen).to(device)
    a, b = part_bounds(global_batch, w.rank, w.size)
    solo = None
    if w.main:
        import copy

        solo = copy.deepcopy(model)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ddp = _step(net, torch.optim.AdamW(model.parameters()), x[a:b], y[a:b])

    def compute():
        with net.no_sync():
            ddp()

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    grads = torch.zeros(params, device=device)

    def exchange():
        dist.all_reduce(grads)

    one = _step(solo, torch.optim.AdamW(solo.parameters()), x, y) if solo is not None else None
    times: dict[str, list[float]] = {key: [] for key in CANDIDATES}
    for _ in range(rounds):  # every candidate once per round: a slow spell hits them all alike
        for key, fn in (("ddp", ddp), ("compute", compute), ("exchange", exchange)):
            dist.barrier()
            times[key].append(_timed(fn, threads, calls))
        dist.barrier()
        if w.main:  # the other processes wait at the barrier
            times["one"].append(_timed(one, alone, calls))
            times["one_thread"].append(_timed(one, 1, calls))
        dist.barrier()
    sweep = {n: [] for n in SWEEP_VALUES}
    for _ in range(sweep_rounds):
        for n in SWEEP_VALUES:
            buf = torch.zeros(n, device=device)
            dist.barrier()
            sweep[n].append(_timed(lambda: dist.all_reduce(buf), threads, calls))
    seen = [None] * w.size
    dist.all_gather_object(seen, {"rank": w.rank, "threads": threads, "compute": times["compute"]})
    if not w.main:
        return None
    return {
        "processes": w.size, "backend": dist.get_backend(), "device": str(device), "cores": cores,
        "threads_per_process": [s["threads"] for s in seen], "one_process_threads": alone,
        "recipe": recipe, "global_batch": global_batch, "per_process_batch": global_batch // w.size,
        "parameters": params, "gradient_bytes": 4 * params, "rounds": rounds, "calls_per_round": calls,
        "times": times, "compute_per_process": [s["compute"] for s in seen],
        "sweep": {"bytes": [4 * n for n in sweep], "seconds": list(sweep.values())},
        "provenance": provenance(device, threads),
    }


# ---------------------------------------------------------------------------------------------
# figures for the chapter


def _label(key: str, result: dict) -> str:
    def threads(n: int) -> str:
        return f"{n} thread{'s' if n > 1 else ''}"

    return CANDIDATES[key].format(p=result["processes"], t=threads(result["threads_per_process"][0]),
                                  c=threads(result["one_process_threads"]))


def step_table(result: dict):
    """One row per candidate: median milliseconds per step (or per all-reduce), the
    interquartile range over rounds, and images per second of the global batch."""
    import pandas as pd

    rows = []
    for key, times in result["times"].items():
        m = Measured.of_values(times)
        images = None if key == "exchange" else result["global_batch"] / m.value
        rows.append({"what ran": _label(key, result), "ms (median)": m.value * 1e3, "IQR ms": (m.high - m.low) * 1e3,
                     "images/s": images, "rounds": len(times)})
    return pd.DataFrame(rows).set_index("what ran")


def one_device(result: dict) -> str:
    """The candidate that is one process on one device: one thread (one core) on a CPU, the
    single process on a GPU."""
    return "one_thread" if result["device"].startswith("cpu") else "one"


def speedup(result: dict, baseline: str | None = None, other: str = "ddp") -> Measured:
    """Images per second of ``other`` (default the DDP step; ``"compute"``: the same without the
    all-reduce) over ``baseline`` (default :func:`one_device`; ``"one"``: one process with every
    core), from the per-round times measured interleaved."""
    return Measured.ratio(result["times"][baseline or one_device(result)], result["times"][other])


def load_result(path: str | Path) -> dict:
    """The figures that ``python -m vitlib.book.studies.scaling --json path`` wrote."""
    return json.loads(Path(path).read_text())


def _median(result: dict, key: str) -> float:
    return statistics.median(result["times"][key])


#: DDP's first gradient bucket (``torch.distributed._DEFAULT_FIRST_BUCKET_BYTES``): gradients that fit in it
#: are all-reduced in one piece, after the backward pass.
FIRST_BUCKET_BYTES = ddp_first_bucket_bytes()


def explain(result: dict) -> str:
    """Markdown: what the processes bought, and where the rest of a linear speed-up went, in the
    figures of ``result`` (every number in it was measured in that run)."""
    n, cpu = result["processes"], result["device"].startswith("cpu")
    device = "core" if cpu else "GPU"
    base = _median(result, one_device(result))
    compute, ddp, exchange = (_median(result, k) for k in ("compute", "ddp", "exchange"))
    slowest = statistics.median(max(r) for r in zip(*result["compute_per_process"]))
    all_cores, over_one = speedup(result, baseline="one"), speedup(result)
    against_all = (f", and **{all_cores}** as many as one process with all {result['cores']} cores"
                   + (" (no measurable difference)" if all_cores.low <= 1 <= all_cores.high else ""))
    text = [f"{n} processes trained **{over_one}** as many images per second as one process on one "
            f"{device}" + (against_all if cpu else "")
            + f"; linear would be {n}x. " + ("Where the rest went:\n" if over_one.value < 0.9 * n else "Where it went:\n")]
    shrink = speedup(result, other="compute").value
    text.append(
        (f"- **The compute per process does not shrink {n}-fold.** " if shrink < 0.9 * n else
         f"- **The compute per process shrinks {shrink:.2f}-fold.** ")
        + f"Each process computed its {result['per_process_batch']} images in {compute * 1e3:.1f} ms (all at "
        f"once, without the all-reduce; the slower process {slowest * 1e3:.1f} ms), against {base * 1e3:.1f} ms "
        f"for all {result['global_batch']} on one {device} alone: {shrink:.2f}x"
        + (f", not {n}x. Small matrix products run far below peak, and every replica repeats the whole optimiser "
           "step and the per-call overhead" + (", while the processes share the machine's memory bandwidth (and "
                                               "its cores with anything else running on it)." if cpu else ".")
           if shrink < 0.9 * n else "."))
    waited = ddp - slowest
    one_bucket = result["gradient_bytes"] <= FIRST_BUCKET_BYTES
    text.append(
        f"- **Communication adds about {communication_share(result):.0%} of a step** (medians). A DDP step took "
        f"{ddp * 1e3:.1f} ms against {compute * 1e3:.1f} ms without the all-reduce; the all-reduce of the "
        f"{result['gradient_bytes'] / 1e6:.2f} MB of gradients alone took {exchange * 1e3:.1f} ms "
        f"({result['backend']}{', over loopback TCP' if result['backend'] == 'gloo' else ''}). "
        + (f"The gradients fit in DDP's first bucket ({FIRST_BUCKET_BYTES / 2**20:.0f} MiB), so their all-reduce "
           "starts only when the backward pass has ended: nothing overlaps." if one_bucket else
           "DDP all-reduces each bucket of gradients as soon as the backward pass has filled it, so part of the "
           "exchange can overlap the rest of the backward pass.") + (
            f" The step took {waited * 1e3:.1f} ms longer than the slower process's compute, more than the "
            "all-reduce itself: the processes wait for each other at every all-reduce, and DDP copies the "
            "gradients into buckets and back." if waited > 2 * exchange else ""))
    if cpu:
        threads, gain = result["threads_per_process"][0], speedup(result, "one_thread", "one").value
        if gain >= 1.05:
            why = "A second thread in one process already takes part of what a second process could add."
        elif gain > 0.95:
            why = "The model is too small for its work to split well over threads."
        else:
            why = ("Threads that wait for each other (OpenMP spins while it waits) lose their cores to other work "
                   "on a busy machine; single-threaded processes never wait for each other inside a step.")
        text.append(f"- **Threads.** Each DDP process ran {threads} thread{'s' if threads > 1 else ''}; one "
                    f"process with {result['one_process_threads']} threads ran {gain:.2f}x as fast as with one "
                    f"thread. {why}")
    return "\n".join(text)


def communication_share(result: dict) -> float:
    """The share of a DDP step's median time that the gradient all-reduce adds:
    ``1 - median(no all-reduce) / median(DDP step)``."""
    return 1.0 - speedup(result, baseline="compute").value


def parameter_count(name: str) -> int:
    """Parameters of the preset ``name``, counted on the meta device (nothing allocated)."""
    from ...models import presets

    with torch.device("meta"):
        model = presets.create(name)
    return sum(p.numel() for p in model.parameters())


def gradient_bytes(name: str) -> int:
    """Bytes of the preset's float32 gradients: what DDP all-reduces every step."""
    return 4 * parameter_count(name)


def replica_memory(names: list[str], gpus: int = 8):
    """For each preset: parameters (exact, counted on the meta device) and the bytes of fp32
    weights, gradients and AdamW's two moments (16 bytes a parameter) that one GPU holds under
    DDP (all of them) and under FSDP sharded over ``gpus`` GPUs (a ``1/gpus`` share). Activations
    come on top and depend on the batch."""
    import pandas as pd

    rows = []
    for name in names:
        n = parameter_count(name)
        rows.append({"model": name, "parameters (M)": n / 1e6, "DDP: GB per GPU": 16 * n / 1e9,
                     f"FSDP over {gpus} GPUs: GB per GPU": 16 * n / gpus / 1e9})
    return pd.DataFrame(rows).set_index("model")


def data_parallel_here(model: nn.Module, x: torch.Tensor) -> dict:
    """What ``nn.DataParallel`` does on this machine: the GPUs it would split each batch over, and
    whether its output is the wrapped model's own (with no GPU it only calls the model)."""
    dp = nn.DataParallel(model)
    with torch.no_grad():
        same = torch.equal(dp(x), model(x))
    return {"cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "device_ids": list(dp.device_ids), "output_is_the_model_s": same}


def main(argv: list[str] | None = None) -> int:
    """``python -m vitlib.book.studies.scaling --json FILE [-- TRAIN ARGS]`` under torchrun: first,
    with ``--`` and arguments after it, ``python -m vitlib.train TRAIN ARGS`` in the same
    processes (one start-up of the processes for both), then :func:`measure_steps`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    own, train_args = argv[:cut], argv[cut + 1:] if cut < len(argv) else None
    p = argparse.ArgumentParser(prog="python -m vitlib.book.studies.scaling", description=main.__doc__)
    p.add_argument("--json", type=Path, required=True, help="where rank 0 writes the figures")
    p.add_argument("--recipe", choices=["quick", "full"], default="quick", help="the SimpleViT of this recipe")
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--sweep-rounds", type=int, default=3)
    p.add_argument("--alone-threads", type=int, default=None, help="rank 0 alone (default: every core)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(own)
    with session(args.device, timeout_s=300) as device:
        if train_args is not None:
            from ...train import main as train

            train(train_args)  # inside this process group: it uses it and leaves it open
        result = measure_steps(recipe=args.recipe, global_batch=args.global_batch, rounds=args.rounds,
                               calls=args.calls, sweep_rounds=args.sweep_rounds,
                               alone_threads=args.alone_threads, device=device)
    if result is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"rank 0 timed the steps and wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
