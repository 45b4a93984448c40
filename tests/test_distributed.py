"""Data-parallel training on two CPU processes (gloo): the same weights as one process on the same
global batches, resuming under several processes, and a job that ends when one process raises.

The processes are forked from the test process (vitlib is already imported, so they start at once)
and given the environment torchrun would give them.
"""
import json
import multiprocessing
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch

from vitlib import ViT
from vitlib.data import TensorImageDataset, digits
from vitlib.train import CrossEntropy, RandomShift, evaluate, fit, load_checkpoint
from vitlib.train.distributed import World, part_bounds, session, world
from vitlib.train.loop import ShardedBatches, global_batch_sizes, iterate_batches

PROCESSES = 2
# 245 images in global batches of 64: three full batches (32 per process) and one of 53, split 26/27,
# so the uneven last batch's weighting is tested too
FIT = dict(epochs=2, batch_size=64, lr=3e-3, warmup_epochs=1, label_smoothing=0.1, grad_clip=0.5,
           augment=RandomShift(1), seed=5, progress=False)


@pytest.fixture(scope="module")
def small():
    d = digits(image_size=8)
    train = TensorImageDataset(d.train.images[:245], d.train.labels[:245])
    test = TensorImageDataset(d.test.images[:101], d.test.labels[:101])
    return train, test


def tiny_vit() -> ViT:
    torch.manual_seed(0)
    return ViT(image_size=8, patch_size=4, num_classes=10, channels=1, dim=16, depth=1, heads=2, dim_head=8,
               mlp_dim=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, port: int) -> dict:
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(PROCESSES),
            "LOCAL_WORLD_SIZE": str(PROCESSES), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def launch(target, *args) -> list:
    """Fork one process per rank running ``target(*args)`` with torchrun's environment."""
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_child, args=(rank, port, target, args), daemon=True) for rank in range(PROCESSES)]
    for p in procs:
        p.start()
    return procs


def _child(rank: int, port: int, target, args) -> None:
    torch.set_num_threads(1)  # one core each; also keeps OpenMP out of the forked child
    os.environ.update(torchrun_env(rank, port))
    target(*args)


def join_all(procs, timeout_s: float) -> tuple[float, list[int]]:
    """Wait for the processes up to ``timeout_s`` in all; kill those still running. Returns the
    seconds waited and the pids that had to be killed."""
    start = time.monotonic()
    for p in procs:
        p.join(max(0.1, timeout_s - (time.monotonic() - start)))
    took = time.monotonic() - start
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return took, hung


def _train_twice(train, test, out_dir, resume_from) -> None:
    """Each rank: train from scratch, then resume from a one-process checkpoint of epoch 1."""
    with session("cpu", timeout_s=60):
        w = world()
        assert w.size == PROCESSES
        history = fit(tiny_vit(), train, test, checkpoint=f"{out_dir}/scratch.safetensors", **FIT)
        Path(f"{out_dir}/history-{w.rank}.json").write_text(json.dumps(list(history)))
        resumed = tiny_vit()
        fit(resumed, train, test, resume=resume_from, checkpoint=f"{out_dir}/resumed.safetensors", **FIT)


def _weights(path) -> dict:
    model = tiny_vit()
    load_checkpoint(path, model=model)
    return model.state_dict()


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(tmp_path, small, one_thread):
    train, test = small
    single = tiny_vit()

    def keep_epoch_one(record):
        if record["epoch"] == 1:
            shutil.copy(tmp_path / "single.safetensors", tmp_path / "epoch1.safetensors")

    reference = fit(single, train, test, checkpoint=tmp_path / "single.safetensors", callback=keep_epoch_one, **FIT)
    procs = launch(_train_twice, train, test, str(tmp_path), str(tmp_path / "epoch1.safetensors"))
    join_all(procs, 120)
    assert [p.exitcode for p in procs] == [0, 0]
    expected = single.state_dict()
    start = tiny_vit().state_dict()
    assert all(not torch.equal(expected[k], start[k]) for k in expected if k.endswith("weight"))  # it trained
    for run in ("scratch", "resumed"):
        got = _weights(tmp_path / f"{run}.safetensors")
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=2e-5, msg=f"{run}: {name}")
    histories = [json.loads((tmp_path / f"history-{r}.json").read_text()) for r in range(PROCESSES)]
    figures = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
    same = [[{k: r[k] for k in figures} for r in h] for h in histories]
    assert same[0] == same[1]  # every process returns the global figures (times are its own)
    for got, want in zip(histories[0], reference):
        assert got["test_acc"] == want["test_acc"] and got["train_acc"] == want["train_acc"]
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-5)
    assert reference[-1]["test_acc"] == evaluate(single, test)["accuracy"]


class Boom(RuntimeError):
    pass


class FailingLoss(CrossEntropy):
    """Cross-entropy that raises on rank 1 at its third step, while rank 0 waits in the all-reduce."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, model, batch):
        self.calls += 1
        if world().rank == 1 and self.calls == 3:
            raise Boom("rank 1 fails at step 3")
        return super().forward(model, batch)


def _train_and_fail(train, pid_dir) -> None:
    with session("cpu", timeout_s=15):
        Path(f"{pid_dir}/{world().rank}.pid").write_text(str(os.getpid()))
        fit(tiny_vit(), train, epochs=3, batch_size=64, loss_fn=FailingLoss(), progress=False)


def test_a_failing_process_ends_the_job_within_seconds(tmp_path, small, one_thread):
    train, _ = small
    procs = launch(_train_and_fail, train, str(tmp_path))
    took, hung = join_all(procs, 30)
    assert not hung, f"processes {hung} still running {took:.0f} s after the start"
    assert procs[1].exitcode == 1 and procs[0].exitcode != 0  # rank 0 learns of it, does not hang
    assert took < 15, f"the job took {took:.1f} s to end (the group's timeout is 15 s)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.pid", "1.pid"]


def test_global_batches_are_sliced_alike_on_every_process():
    assert global_batch_sizes(245, 64, 2) == [64, 64, 64, 53]
    assert global_batch_sizes(129, 64, 2) == [64, 64]  # a last batch of one image cannot be split in two
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    parts = [list(ShardedBatches(245, 64, shuffle=True, generator=gen(), rank=r, processes=2)) for r in (0, 1)]
    whole = list(ShardedBatches(245, 64, shuffle=True, generator=gen()))
    assert [a + b for a, b in zip(*parts)] == whole
    assert [len(b) for b in parts[0]] == [32, 32, 32, 26] and [len(b) for b in parts[1]] == [32, 32, 32, 27]
    assert part_bounds(10, 2, 3) == (6, 10) and str(World(1, 2)) == "process 1 of 2"


def test_sharded_in_memory_batches_are_augmented_as_one_process_would(small):
    train, _ = small
    kw = dict(shuffle=True, device=torch.device("cpu"), augment=RandomShift(1))
    whole = list(iterate_batches(train, 64, generator=torch.Generator().manual_seed(2), **kw))
    parts = [list(iterate_batches(train, 64, generator=torch.Generator().manual_seed(2), shard=(r, 2), **kw))
             for r in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_fit_refuses_a_global_batch_the_processes_do_not_divide(small, monkeypatch):
    from vitlib.train import loop

    monkeypatch.setattr(loop, "world", lambda: World(0, 3))
    with pytest.raises(ValueError, match="received batch_size=64, which 3 does not divide"):
        fit(tiny_vit(), small[0], epochs=1, batch_size=64, progress=False)


def test_session_outside_torchrun_is_one_process():
    with session("cpu", env={}) as device:
        assert device == torch.device("cpu") and world() == World()
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        with session("cpu", timeout_s=0, env={}):
            pass


def _cli(argv) -> None:
    from vitlib.train import main

    raise SystemExit(main(argv))


@pytest.mark.slow
def test_the_command_line_trains_on_two_processes_and_rank_0_reports(tmp_path, capfd, one_thread):
    ckpt, hist = tmp_path / "cli.safetensors", tmp_path / "h.json"
    argv = ["--model", "vit", "--image-size", "8", "--patch-size", "4", "--dim", "16", "--depth", "1",
            "--epochs", "1", "--checkpoint", str(ckpt), "--history", str(hist)]
    procs = launch(_cli, argv)
    join_all(procs, 120)
    out = capfd.readouterr().out
    assert [p.exitcode for p in procs] == [0, 0]
    assert out.count("DataSplit(digits") == 1 and out.count("epoch 1: train loss") == 1  # rank 0 only
    assert "2 processes, cpu, 32 of each global batch of 64 per process" in out
    assert json.loads(hist.read_text())[0]["epoch"] == 1 and ckpt.exists()
    procs = launch(_cli, [*argv[:-4], "--batch-size", "63"])
    join_all(procs, 60)
    assert [p.exitcode for p in procs] == [2, 2]
    assert "received 63, which 2 does not divide" in capfd.readouterr().err


def _measure(path) -> None:
    from vitlib.book.studies import scaling

    # one thread alone too: OpenMP threads hang in a forked child (torchrun does not fork)
    scaling.main(["--json", str(path), "--rounds", "1", "--calls", "1", "--sweep-rounds", "1",
                  "--global-batch", "8", "--alone-threads", "1", "--", "--model", "vit", "--image-size", "8",
                  "--patch-size", "4", "--dim", "16", "--depth", "1", "--epochs", "1"])


@pytest.mark.slow
def test_the_scaling_study_trains_then_times_every_candidate_on_two_processes(tmp_path, capfd, one_thread):
    from vitlib.book.studies import scaling

    procs = launch(_measure, tmp_path / "steps.json")
    join_all(procs, 120)
    assert [p.exitcode for p in procs] == [0, 0]
    out = capfd.readouterr().out
    assert out.index("epoch 1: test accuracy") < out.index("rank 0 timed the steps")  # vitlib.train ran first
    result = scaling.load_result(tmp_path / "steps.json")
    assert result["processes"] == 2 and result["backend"] == "gloo" and result["threads_per_process"] == [1, 1]
    assert set(result["times"]) == set(scaling.CANDIDATES)
    assert all(t > 0 for times in result["times"].values() for t in times)
    model, _ = scaling.recipe_model("quick")
    assert result["gradient_bytes"] == 4 * sum(p.numel() for p in model.parameters())
    assert len(result["sweep"]["bytes"]) == len(result["sweep"]["seconds"]) == len(scaling.SWEEP_VALUES)
    table = scaling.step_table(result)
    assert list(table.index)[0] == "2 processes (DDP), 1 thread each" and table["rounds"].tolist() == [1] * 5
    ddp = result["times"]["ddp"][0]
    assert table.iloc[0]["images/s"] == pytest.approx(8 / ddp)
    assert scaling.speedup(result, "one_thread").value == pytest.approx(result["times"]["one_thread"][0] / ddp)
    explained = scaling.explain(result)
    assert f"{result['global_batch'] // 2} images" in explained
    # a gradient smaller than DDP's first bucket is all-reduced in one piece, after the backward pass
    assert result["gradient_bytes"] < scaling.FIRST_BUCKET_BYTES and "nothing overlaps" in explained
