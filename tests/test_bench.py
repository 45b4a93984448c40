import pytest
import torch
from torch import nn

from vitlib import SimpleViT, ViT
from vitlib import bench
from vitlib.layers import Attention, attention_backend

CFG = dict(image_size=16, patch_size=4, num_classes=10, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64)


def test_count_parameters_matches_manual_sum_and_excludes_buffers():
    model = SimpleViT(**CFG)
    assert bench.count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert sum(bench.parameters_by_component(model).values()) == bench.count_parameters(model)
    model.head.weight.requires_grad_(False)
    assert bench.count_parameters(model, trainable_only=True) == bench.count_parameters(model) - 10 * 32


def test_attention_flops_counted_for_the_fused_cpu_kernel():
    layer = Attention(dim=32, heads=2, dim_head=16)
    x = torch.randn(3, 20, 32)
    fused = bench.count_flops(layer, x)
    with attention_backend("plain"):
        plain = bench.count_flops(layer, x)
    # q k^T and attn v: 2 * (2 * b * h * n * n * d); projections: 2 * b * n * (32 * 96 + 32 * 32)
    scores = 4 * 3 * 2 * 20 * 20 * 16
    projections = 2 * 3 * 20 * (32 * 96 + 32 * 32)
    assert fused == plain == scores + projections


def test_backward_flops_agree_between_fused_and_plain():
    model = ViT(**CFG)
    x = torch.randn(2, 3, 16, 16)
    fused = bench.count_flops(model, x, backward=True)
    with attention_backend("plain"):
        assert bench.count_flops(model, x, backward=True) == fused
    assert fused == pytest.approx(3 * bench.count_flops(model, x), rel=0.05)


def test_flops_by_component_matches_formulas_and_meta_device():
    model = ViT(**CFG)
    x = torch.randn(1, 3, 16, 16)
    split = bench.flops_by_component(model, x)
    n, d, depth = 17, 32, 2
    assert split["attention (scores)"] == depth * 4 * 2 * n * n * 16
    assert split["attention (projections)"] == depth * 2 * n * (d * 3 * 32 + 32 * d)
    assert split["mlp"] == depth * 2 * n * (2 * d * 64)
    assert split["patch embedding"] == 2 * 16 * 48 * d
    assert split["head"] == 2 * d * 10
    assert split["other"] == 0
    with torch.device("meta"):
        meta_model = ViT(**CFG)
    assert bench.flops_by_component(meta_model, torch.empty(1, 3, 16, 16, device="meta")) == split


def test_time_function_sets_threads_and_returns_positive_times():
    t = bench.time_function(lambda: torch.randn(64, 64) @ torch.randn(64, 64), num_threads=1, min_run_time=0.05,
                            batch=4)
    assert t.threads == 1 and len(t.times) >= 1 and min(t.times) > 0
    assert t.throughput == pytest.approx(4 / t.median)


class Recorder(nn.Module):
    def __init__(self, name, log):
        super().__init__()
        self.name, self.log = name, log
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        self.log.append(self.name)
        return self.lin(x)


def test_compare_interleaves_models_and_reports_ratios():
    log = []
    a, b = Recorder("a", log), Recorder("b", log)
    x = torch.randn(2, 4)
    df = bench.compare({"a": (a, x), "b": (b, x)}, rounds=3, min_run_time=0.01, flops=False)
    # the timed calls come in alternating runs: a..., b..., a..., b..., a..., b...
    runs = [log[0]]
    for name in log[1:]:
        if name != runs[-1]:
            runs.append(name)
    assert runs[:6] == ["a", "b", "a", "b", "a", "b"]
    assert df.loc["a", "time_ratio"] == 1.0
    assert df.loc["b", "speedup"] == pytest.approx(1 / df.loc["b", "time_ratio"])
    assert set(df.columns) >= {"params", "median_ms", "iqr_ms", "images_per_s", "time_ratio"}


def test_compare_rejects_bad_arguments():
    with pytest.raises(ValueError, match="received 'eval'"):
        bench.compare({"a": (nn.Linear(2, 2), torch.randn(1, 2))}, mode="eval")
    with pytest.raises(ValueError, match="received 'c'"):
        bench.compare({"a": (nn.Linear(2, 2), torch.randn(1, 2))}, baseline="c")


def test_train_step_does_not_touch_the_callers_model():
    model = SimpleViT(**CFG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bench.measure_train_step(model, torch.randn(2, 3, 16, 16), min_run_time=0.01, warmup=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_step_uses_the_training_loops_adamw(monkeypatch):
    from vitlib.train import loop

    built = []

    def recording(params, **kwargs):
        built.append(params)
        return original(params, **kwargs)

    original = loop.adamw
    monkeypatch.setattr(loop, "adamw", recording)
    step = bench.train_step_fn(SimpleViT(**CFG), torch.randn(2, 3, 16, 16))
    step()


    def closed_over(fn):  # what a closure holds, through the closures it holds
        for cell in fn.__closure__ or ():
            yield cell.cell_contents
            if callable(cell.cell_contents) and getattr(cell.cell_contents, "__closure__", None):
                yield from closed_over(cell.cell_contents)

    opt = next(c for c in closed_over(step) if isinstance(c, torch.optim.Optimizer))
    assert built and opt.defaults["fused"]


def test_peak_memory_is_none_on_cpu():
    assert bench.peak_memory(lambda: torch.ones(10), "cpu") is None


def test_scaling_sweep_tokens_grow_quadratically_in_scores():
    df = bench.scaling_sweep(SimpleViT, {k: v for k, v in CFG.items() if k != "image_size"},
                             [dict(image_size=8), dict(image_size=16)], batch=2, rounds=1, min_run_time=0.01)
    assert list(df["tokens"]) == [4, 16]
    assert df["attention (scores)"][1] == 16 * df["attention (scores)"][0]
    assert df["mlp"][1] == 4 * df["mlp"][0]
    assert (df["median_ms"] > 0).all()


def test_sequence_length_is_recorded_from_the_attention():
    assert bench.sequence_length(ViT(**CFG), torch.randn(1, 3, 16, 16)) == 17  # 16 patches and a class token
    assert bench.sequence_length(SimpleViT(**CFG), torch.randn(1, 3, 16, 16)) == 16
    with pytest.raises(ValueError, match="computed no attention"):
        bench.sequence_length(SimpleViT(**CFG).transformer.blocks[0].ff, torch.randn(1, 4, 32))


def test_eval_mode_restores_a_submodule_left_in_another_mode():
    model = ViT(**CFG).train()
    model.transformer.eval()  # e.g. a frozen, evaluated backbone under a training head
    bench.count_flops(model, torch.randn(1, 3, 16, 16))
    assert model.training and model.head.training and not model.transformer.training
    assert not any(m.training for m in model.transformer.modules())


def test_train_step_checks_the_labels_against_the_model():
    model = SimpleViT(**CFG)
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"labels must be 2 class indices in \[0, 10\).*received 2 labels in \[0, 12\]"):
        bench.train_step_fn(model, x, torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="received 3 labels"):
        bench.measure_train_step(model, x, torch.tensor([0, 1, 2]))


def test_suites_register_by_name_once():
    suites = bench.load_suites()
    assert {"anatomy", "train", "navit"} <= set(suites)
    assert bench.register_suite("anatomy")(suites["anatomy"]) is suites["anatomy"]  # the same function again

    def anatomy(args):
        return {}

    with pytest.raises(ValueError, match="suite 'anatomy' is already registered by vitlib.book.studies.anatomy"):
        bench.register_suite("anatomy")(anatomy)
    with pytest.raises(ValueError, match="non-empty string"):
        bench.register_suite("")


def test_speedup_rests_on_the_per_call_times_of_the_comparison():
    from vitlib.book.claims import Measured

    small = ViT(image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=1, dim_head=16, mlp_dim=16)
    large = ViT(image_size=16, patch_size=4, num_classes=3, dim=64, depth=4, heads=2, dim_head=32, mlp_dim=256)
    x = torch.randn(8, 3, 16, 16)
    df = bench.compare({"large": (large, x), "small": (small, x)}, rounds=2, min_run_time=0.02, warmup=1,
                       flops=False)
    m = bench.speedup(df, "small")
    assert isinstance(m, Measured) and m.low <= m.value <= m.high
    assert m.value == pytest.approx(df.loc["small", "speedup"])
    assert m.n == min(len(t) for t in df.attrs["times"].values()) >= 2
    with pytest.raises(ValueError, match="no candidate 'tiny'"):
        bench.speedup(df, "tiny")


def test_short_calls_are_timed_in_blocks_sized_from_the_warm_up():
    import time

    calls = []

    def short():
        calls.append(1)
        time.sleep(0.001)

    t = bench.time_function(short, min_run_time=0.05, warmup=1)
    assert len(t.times) >= bench.MIN_CALLS and min(t.times) >= 0.001
    # min_run_time of timed calls (at most 2 ms each); with them, two untimed calls a block and
    # the warm-up, but no untimed runs to size the blocks (Timer.blocked_autorange would make
    # 1 + 10 + 100 calls before its first block)
    assert 0.05 / 0.002 <= len(calls) <= 2 * 0.05 / 0.001, len(calls)


def test_timing_runs_every_call_on_its_threads_then_gives_mkl_its_threading_back(monkeypatch):
    import time

    from vitlib import compat

    if torch.backends.mkl.is_available():  # where torch has MKL, the library exports the functions
        assert compat.mkl_threading() is not None
    resets, seen, threads = [], set(), torch.get_num_threads()
    real = compat.set_mkl_threading
    monkeypatch.setattr(compat, "set_mkl_threading",
                        lambda state: (resets.append(torch.get_num_threads()), real(state)))
    other = 1 if threads > 1 else 2

    def short():  # timed in blocks, after its warm-up calls
        seen.add(torch.get_num_threads())
        time.sleep(0.001)

    def long():  # timed call by call
        seen.add(torch.get_num_threads())
        time.sleep(0.01)

    bench.time_function(short, min_run_time=0.02, warmup=3, num_threads=other)
    bench.time_function(long, min_run_time=0.001, warmup=2, num_threads=other)
    assert seen == {other}  # warm-up calls too, not only the timed ones
    assert resets == [threads, threads]  # once after each timing, torch's count back first
    monkeypatch.undo()
    assert torch.ones(2, 2).matmul(torch.ones(2, 2)).sum() == 8  # and torch still works


def test_a_long_call_is_still_timed_at_least_min_calls_times():
    import time

    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)  # longer than min_run_time: one block alone would hold one figure

    t = bench.time_function(slow, min_run_time=0.001, warmup=0)
    assert len(t.times) >= bench.MIN_CALLS and t.iqr >= 0
    times = bench.time_interleaved({"a": slow, "b": slow}, rounds=2, min_run_time=0.001, warmup=0)
    assert all(len(v) >= bench.MIN_CALLS for v in times.values()), {k: len(v) for k, v in times.items()}
    # a long call is timed call by call: no untimed call sizes blocks, later rounds need no warm-up
    calls.clear()
    t = bench.time_function(slow, min_run_time=0.001, warmup=1)
    assert len(calls) == 1 + bench.MIN_CALLS == 1 + len(t.times)
    calls.clear()
    times = bench.time_interleaved({"a": slow}, rounds=2, min_run_time=0.001, warmup=1)
    assert len(calls) == 1 + len(times["a"]) == 1 + 2 * 3
    with pytest.raises(ValueError, match="min_calls must be at least 1; received 0"):
        bench.time_function(slow, min_calls=0)
    with pytest.raises(ValueError, match="rounds must be at least 1; received 0"):
        bench.time_interleaved({"a": slow}, rounds=0)


def test_no_labels_are_named_in_a_value_error():
    """An empty label tensor: the message says what was expected and what came, rather than the
    message itself failing (the smallest of no labels)."""
    model = SimpleViT(**CFG)
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"labels must be 2 class indices in \[0, 10\) .*; received 0 labels$"):
        bench.train_step_fn(model, x, torch.tensor([], dtype=torch.long))


def test_the_commit_is_read_from_the_checkouts_own_repository_only(tmp_path, monkeypatch):
    """A checkout that is no git repository of its own (an unpacked archive inside another project's
    repository) reports pip's commit, else none; never the commit of the repository around it."""
    import json
    import os
    import subprocess
    import sys
    from importlib import metadata

    import vitlib.bench.provenance  # noqa: F401  (the module, not the function bench exports)
    from vitlib import locations

    prov = sys.modules["vitlib.bench.provenance"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(where, *args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=where,
                              env=env, check=True, capture_output=True, text=True).stdout.strip()

    def committed(where):
        git(where, "init", "-q")
        git(where, "add", ".")
        git(where, "commit", "-q", "-m", "one")
        return git(where, "rev-parse", "HEAD")

    outer = tmp_path / "project"
    source = outer / "vitlib-0.1.0"
    (source / "book").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nname = 'vitlib'\n")
    outer_commit = committed(outer)

    class Dist:
        def read_text(self, name):
            return json.dumps({"url": "https://github.com/x/y", "vcs_info": {"vcs": "git", "commit_id": "abc123"}})

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(locations, "checkout", lambda: source)
    monkeypatch.setattr(metadata, "distribution", not_installed)
    assert prov._git_commit() == "unknown"  # not outer_commit
    monkeypatch.setattr(metadata, "distribution", lambda name: Dist())
    assert prov._git_commit() == "abc123"
    own = committed(source)  # now a repository of its own: its commit
    assert prov._git_commit() == own and own != outer_commit


def test_time_by_kind_sums_each_operator_into_its_kind_of_work():
    x, w = torch.randn(64, 128), torch.randn(128, 128)

    def work():
        y = torch.nn.functional.layer_norm(x @ w, (128,))
        return torch.nn.functional.gelu(y).t().contiguous()

    split = bench.time_by_kind(work, calls=2)
    kinds = split["kinds"]
    assert list(kinds)[:2] == ["matrix products", "attention kernel"] and list(kinds)[-1] == "other"
    for kind in ("matrix products", "layer norm", "GELU", "copies and reshapes"):
        assert kinds[kind]["share"] > 0 and kinds[kind]["ops"], kind
    assert kinds["attention kernel"]["share"] == kinds["convolution"]["share"] == 0
    assert sum(k["share"] for k in kinds.values()) == pytest.approx(1.0)
    assert sum(k["ms"] for k in kinds.values()) == pytest.approx(split["total_ms"])
    rows, calls = bench.operator_times(work, calls=2)
    assert calls == 2 and any(r["op"] == "aten::mm" and r["calls"] == 1 for r in rows)
    assert not any(r["op"].startswith(("autograd::", "profiler::")) for r in rows)
    with pytest.raises(ValueError, match="calls must be at least 1; received 0"):
        bench.operator_times(work, calls=0)
