"""vitlib.compat: each private torch API (and MKL) that vitlib uses works on the torch installed, and
each fallback does what it says."""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitlib import backends, bench, compat

needs_mkl = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this torch has no MKL")


@pytest.fixture
def fresh_warnings(monkeypatch):
    """compat's warn-once memory, empty for the test, and warnings recorded whatever the filters."""
    monkeypatch.setattr(compat, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


# ----- compiling ---------------------------------------------------------------------------------


def test_disable_dynamo_keeps_a_function_out_of_torch_compile():
    seen = []

    def body(x):
        seen.append(torch.compiler.is_compiling())
        return x + 1

    kept_out = compat.disable_dynamo(body)
    torch.testing.assert_close(torch.compile(lambda x: kept_out(x * 2) - 1, backend="eager")(torch.ones(3)),
                               torch.full((3,), 2.0))
    assert seen == [False]  # ran eagerly, outside the compiled graph
    seen.clear()
    torch.compile(lambda x: body(x * 3) - 1, backend="eager")(torch.ones(3))
    assert seen == [True]  # the control: without it, dynamo traces the function


@pytest.mark.slow
def test_the_lazy_form_does_not_import_the_compiler_when_it_decorates():
    if not hasattr(torch, "_disable_dynamo"):
        assert compat.disable_dynamo is torch.compiler.disable  # the public fallback
        return
    code = ("import sys, torch, vitlib.models.na_vit\n"
            "assert 'torch._dynamo' not in sys.modules, 'NaViT imported the compiler'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


# ----- oneDNN's linear layer -----------------------------------------------------------------------


def test_onednn_linear_agrees_with_f_linear():
    if not torch.backends.mkldnn.is_available():
        assert not compat.onednn_linear_works()
        return
    assert compat.onednn_linear_works()
    op = compat.onednn_linear_op()
    x, w, b, r = torch.randn(4, 17, 64), torch.randn(96, 64), torch.randn(96), torch.randn(4, 17, 96)
    with torch.no_grad():
        y = F.linear(x, w, b)
        torch.testing.assert_close(op(x, w, b, "none", [], ""), y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(op(x, w, b, "gelu", [], "none"), F.gelu(y), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(op.binary(x, r, w, b, "add"), r + y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(op(x, w, None, "none", [], ""), F.linear(x, w), atol=1e-5, rtol=1e-5)


def test_the_onednn_probe_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    assert compat._check_onednn_linear(op) == compat.onednn_linear_works()
    torch.testing.assert_close(torch.rand(3), expected)


def test_probes_report_each_feature():
    found = compat.probes()
    assert all(isinstance(v, bool) for v in found.values())
    assert found["onednn linear"] == compat.onednn_linear_works()
    assert found["mkl threading"] == (compat.mkl_threading() is not None)
    assert found["lazy disable_dynamo"] == hasattr(torch, "_disable_dynamo")


def test_a_wrong_onednn_kernel_is_refused_and_linear_keeps_nn_linear(monkeypatch):
    class Wrong:
        def __call__(self, x, w, b, *args):
            return F.linear(x, w, b) + 1

        def binary(self, x, other, w, b, *args):
            return other + F.linear(x, w, b)

    assert not compat._check_onednn_linear(Wrong())
    assert not compat._check_onednn_linear(object())  # no such kernel at all
    calls = []
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(a))
    monkeypatch.setattr(compat, "onednn_linear_works", lambda: False)
    monkeypatch.setattr(backends, "ONEDNN_MIN_MACS", 0)
    layer, x = nn.Linear(8, 6), torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(backends.linear(x, layer), layer(x))
    assert calls == []


# ----- who watches the operators ---------------------------------------------------------------


def test_operators_watched_sees_function_and_dispatch_modes(monkeypatch):
    from torch.overrides import TorchFunctionMode
    from torch.utils.flop_counter import FlopCounterMode

    class Passing(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x = torch.randn(2, 3)
    assert not compat.operators_watched(x)
    with Passing():
        assert compat.operators_watched(x)
    with FlopCounterMode(display=False):
        assert compat.operators_watched(x)
    assert not compat.operators_watched(x)
    monkeypatch.setattr(compat, "_current_dispatch_mode", lambda: None)  # this torch cannot tell
    assert compat.operators_watched(x)


def test_forward_hooks_active_sees_every_kind_of_hook():
    layer = nn.Linear(2, 2)
    assert not compat.forward_hooks_active(layer)
    for register in (layer.register_forward_hook, nn.modules.module.register_module_forward_hook):
        handle = register(lambda m, a, out: None)
        assert compat.forward_hooks_active(layer)
        handle.remove()
        assert not compat.forward_hooks_active(layer)
    for register in (layer.register_forward_pre_hook, nn.modules.module.register_module_forward_pre_hook):
        handle = register(lambda m, a: None)
        assert compat.forward_hooks_active(layer)
        handle.remove()
    assert compat.forward_hooks_active(object())  # nowhere to look: hooked, to be safe


def test_cpu_flash_attention_ops_are_what_sdpa_runs_on_a_cpu():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func.overloadpacket)
            return func(*args, **(kwargs or {}))

    forward, backward = compat.cpu_flash_attention_ops()
    assert forward is not None and backward is not None
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    with Record() as seen:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    assert {forward, backward} <= seen.ops

    class Attend(nn.Module):
        def forward(self, x):
            return F.scaled_dot_product_attention(x, x, x)

    # q k^T and attn v, 2 FLOPs a multiply-add, 2 heads of 16 tokens by 8 channels
    assert bench.count_flops(Attend(), torch.randn(1, 2, 16, 8)) == 2 * 2 * (2 * 16 * 16 * 8)


# ----- quantised tensors -----------------------------------------------------------------------


@pytest.mark.parametrize("build", [compat.per_tensor_quantized, compat._quantized_public],
                         ids=["torch's builder", "public fallback"])
@pytest.mark.parametrize("dtype,low,high,zero", [(torch.int8, -128, 128, 3), (torch.uint8, 0, 256, 128)])
def test_a_quantised_tensor_round_trips(build, dtype, low, high, zero):
    ints = torch.randint(low, high, (6, 10), dtype=dtype)
    ints[0, :2] = torch.tensor([low, high - 1], dtype=dtype)  # both extremes
    q = build(ints, 0.0371, zero)
    assert q.is_quantized and q.qscheme() == torch.per_tensor_affine
    assert torch.equal(q.int_repr(), ints)
    assert q.q_scale() == pytest.approx(0.0371, rel=1e-12) and q.q_zero_point() == zero
    torch.testing.assert_close(q.dequantize(), (ints.float() - zero) * 0.0371)


def test_the_fallback_refuses_integers_it_cannot_quantise():
    with pytest.raises(ValueError, match="int8 or uint8"):
        compat._quantized_public(torch.zeros(3, dtype=torch.int32), 0.1, 0)


# ----- the profiler's memory records -----------------------------------------------------------


def test_profiler_memory_events_see_an_allocation_of_known_size():
    from torch.profiler import ProfilerActivity, profile

    size = 4 << 20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = torch.ones(size // 4)
        del a
    events = compat.profiler_memory_events(prof)
    sizes = [n for _, n in events]
    assert size in sizes and -size in sizes
    assert sizes.index(size) < sizes.index(-size)  # in time order
    peak = bench.peak_memory(lambda: torch.ones(size // 4).sum(), "cpu", cpu=True)
    assert size <= peak < size + (1 << 20)


def test_without_memory_records_peak_memory_is_none_and_warns_once(fresh_warnings, monkeypatch):
    assert compat.profiler_memory_events(object()) is None
    assert compat.profiler_memory_events(object()) is None
    assert len([w for w in fresh_warnings if "memory records" in str(w.message)]) == 1
    monkeypatch.setattr(compat, "profiler_memory_events", lambda prof: None)
    assert bench.peak_memory(lambda: torch.ones(8), "cpu", cpu=True) is None


# ----- modules held outside their owner ---------------------------------------------------------


def test_a_teacher_outside_the_submodules_follows_to(fresh_warnings):
    from vitlib.distill import DistillationLoss

    assert compat.conversions_reach_apply()
    teacher = nn.Linear(4, 3)
    loss = DistillationLoss(teacher)
    assert loss.to(torch.float64) is loss
    assert teacher.weight.dtype == torch.float64 and teacher.bias.dtype == torch.float64
    assert not any(p is teacher.weight for p in loss.parameters())
    assert not any("teacher" in key for key in loss.state_dict())
    assert not [w for w in fresh_warnings if "_apply" in str(w.message)]


def test_where_conversions_skip_apply_the_helper_warns_once(fresh_warnings, monkeypatch):
    monkeypatch.setattr(compat, "conversions_reach_apply", lambda: False)
    layer = nn.Linear(2, 2)
    compat.apply_conversion(layer, lambda t: t.double())
    compat.apply_conversion(layer, lambda t: t.float())
    assert layer.weight.dtype == torch.float32
    assert len([w for w in fresh_warnings if "_apply" in str(w.message)]) == 1


def test_ddp_first_bucket_bytes(monkeypatch):
    import torch.distributed as dist

    if hasattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES"):
        assert compat.ddp_first_bucket_bytes() == dist._DEFAULT_FIRST_BUCKET_BYTES
        monkeypatch.delattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES")
    assert compat.ddp_first_bucket_bytes() == 2**20


# ----- MKL's threading ---------------------------------------------------------------------------


@pytest.fixture
def mkl_state():
    """MKL's threading before the test, back after it."""
    before = compat.mkl_threading()
    yield before
    compat._mkl.cache_clear()
    compat.set_mkl_threading(before)


@needs_mkl
def test_mkl_threading_reads_what_torch_sets(mkl_state):
    assert mkl_state is not None  # torch has MKL: its functions are found
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert compat.mkl_threading() == compat.MklThreading(dynamic=False, local_threads=2)
    finally:
        torch.set_num_threads(before)
    compat.set_mkl_threading(compat.MklThreading(dynamic=True, local_threads=0))
    assert compat.mkl_threading() == compat.MklThreading(dynamic=True, local_threads=0)


@needs_mkl
@pytest.mark.parametrize("dynamic,local", [(False, 1), (True, 0), (True, 3)])
def test_a_timing_leaves_mkl_threading_as_it_found_it(mkl_state, dynamic, local):
    chosen = compat.MklThreading(dynamic=dynamic, local_threads=local)
    compat.set_mkl_threading(chosen)
    assert compat.mkl_threading() == chosen
    a = torch.randn(64, 64)
    bench.time_function(lambda: a @ a, min_run_time=0.01, warmup=1, num_threads=2)
    assert compat.mkl_threading() == chosen


@needs_mkl
def test_mkl_is_looked_up_once(mkl_state, monkeypatch):
    import ctypes

    opened = []
    real = ctypes.CDLL
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: (opened.append(a[0]), real(*a, **k))[1])
    compat._mkl.cache_clear()
    assert compat.mkl_threading() is not None
    first = len(opened)
    assert first >= 1
    for _ in range(3):
        compat.mkl_threading()
    assert len(opened) == first


def test_where_mkl_cannot_be_found_a_timing_warns_once_and_still_runs(mkl_state, monkeypatch, fresh_warnings):
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: True)
    monkeypatch.setattr(compat, "_mkl_candidates", lambda: [("/nonexistent/libnothing.so", 0)])
    compat._mkl.cache_clear()
    for _ in range(2):
        t = bench.time_function(lambda: torch.ones(4).sum(), min_run_time=0.005, warmup=1, num_threads=1)
        assert len(t.times) >= bench.MIN_CALLS
    assert compat.mkl_threading() is None
    assert len([w for w in fresh_warnings if "MKL" in str(w.message)]) == 1
