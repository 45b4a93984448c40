"""Chapter 7's study: tiled attention against the plain computation, the kernel sweep, precision,
the CPU's features, the recorded GPU results, and the chapter's diagram and chart."""
from __future__ import annotations

import pytest
import torch

from vitlib import ViT, bench
from vitlib.bench import cpu_features
from vitlib.book import diagrams
from vitlib.book.claims import Measured
from vitlib.book.studies import attention as study
from vitlib.book.widgets import kernel_chart, plot_kernel_sweep

TINY = dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=1, heads=2, dim_head=16, mlp_dim=48)


def _plain(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v


@pytest.mark.parametrize("block", [1, 5, 64, 1000])
def test_tiled_attention_equals_the_plain_computation(block):
    torch.manual_seed(0)
    q = torch.randn(2, 3, 37, 16) * 4  # large scores: the running maximum matters
    k, v = torch.randn(2, 3, 50, 16) * 4, torch.randn(2, 3, 50, 8)
    out = study.tiled_attention(q, k, v, block=block)
    assert out.shape == (2, 3, 37, 8)
    torch.testing.assert_close(out, _plain(q, k, v), atol=1e-5, rtol=1e-4)


def test_tiled_attention_rejects_bad_inputs():
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="block"):
        study.tiled_attention(q, q, q, block=0)
    with pytest.raises(ValueError, match="head size"):
        study.tiled_attention(q, torch.randn(1, 4, 6), q)


def test_scores_bytes_counts_one_matrix_per_head_and_image():
    assert study.scores_bytes(2, 3, 10) == 2 * 3 * 100 * 4
    assert study.scores_bytes(1, 1, 10, torch.bfloat16) == 200


def test_cpu_peak_memory_sees_what_a_call_allocates():
    def alloc():
        a = torch.ones(1 << 20)  # 4 MiB, freed at the end of the call
        b = torch.ones(1 << 18)
        return float((a.sum() + b.sum()).item())

    peak = bench.peak_memory(alloc, "cpu", cpu=True)
    assert 5 * 2**20 <= peak < 8 * 2**20
    assert bench.peak_memory(alloc, "cpu") is None  # only on request


def test_kernel_sweep_times_and_measures_each_kernel():
    sweep = study.kernel_sweep([32, 256], dim=32, heads=2, dim_head=16, backends=("plain", "flash"),
                               min_run_time=0.01, rounds=2)
    assert list(sweep["tokens"]) == [32, 32, 256, 256] and list(sweep["backend"]) == ["plain", "flash"] * 2
    assert (sweep["calls"] >= 5).all() and (sweep["median_ms"] > 0).all()
    big = sweep[sweep["tokens"] == 256].set_index("backend")
    # the plain path holds at least one score matrix; the fused kernel never builds it
    assert big.loc["plain", "peak_mib"] >= big.loc["plain", "scores_mib"]
    assert big.loc["flash", "peak_mib"] < big.loc["plain", "peak_mib"]
    assert isinstance(sweep.attrs["speedups"][256]["flash"], Measured)


def test_kernel_sweep_names_what_does_not_run():
    with pytest.raises(ValueError, match="do not run on cpu"):
        study.kernel_sweep([16], dim=32, heads=2, dim_head=16, backends=("plain", "efficient"))
    with pytest.raises(ValueError, match="precision"):
        study.kernel_sweep([16], precision="fp8")
    with pytest.raises(ValueError, match="at least two"):
        study.kernel_sweep([16], dim=32, heads=2, dim_head=16, backends=("plain",))


def test_backend_speedup_and_precision_comparison_on_a_tiny_vit():
    model = ViT(**TINY).eval()
    x = model.example_input(2)
    times, gain = study.backend_speedup(model, x, ("plain", "flash"), min_run_time=0.01)
    assert len(times["plain"]) >= 5 and len(times["flash"]) >= 5 and gain.value > 0
    before = [p.clone() for p in model.parameters()]
    times, gain = study.backend_speedup(model, x, ("plain", "flash"), train=True, min_run_time=0.01)
    assert len(times["flash"]) >= 5 and gain.value > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # a copy trained
    prec = study.precision_comparison(model, x, ("fp32", "bf16"), min_run_time=0.01).set_index("precision")
    assert prec.loc["fp32", "max_abs_diff"] == 0 and prec.loc["fp32", "top1_same"] == 1
    assert 0 < prec.loc["bf16", "max_abs_diff"] < 0.5  # bfloat16 rounds: close, not equal
    with pytest.raises(ValueError, match="baseline first"):
        study.precision_comparison(model, x, ("fp32", "int4"))
    with pytest.raises(ValueError, match="two backends"):
        study.backend_speedup(model, x, ("plain",))


def test_cpu_features_reads_the_flags(tmp_path):
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    without = tmp_path / "b"
    without.write_text("flags\t\t: fpu avx2 f16c\n")
    a, b = cpu_features(with_bf16), cpu_features(without)
    assert a["bf16_instructions"] is True and a["fp16_instructions"] is False and a["model"] == "Some CPU"
    assert b["bf16_instructions"] is False and b["model"] is None
    assert cpu_features(tmp_path / "missing")["bf16_instructions"] is None
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimdhp bf16 sve\n")
    assert cpu_features(arm)["bf16_instructions"] is True and cpu_features(arm)["fp16_instructions"]


def test_precision_formats_match_the_ieee_and_brain_layouts():
    f = study.precision_formats().set_index("format")
    assert (f.loc["fp32", "exponent"], f.loc["fp32", "mantissa"]) == (8, 23)
    assert (f.loc["bf16", "exponent"], f.loc["bf16", "mantissa"]) == (8, 7)
    assert (f.loc["fp16", "exponent"], f.loc["fp16", "mantissa"]) == (5, 10)
    assert f.loc["fp16", "max"] == 65504


def _recorded():
    row = dict(batch=8, iqr_ms=0.1, runs=5, images_per_s=1.0)
    return {
        "attention": [
            {**row, "tokens": 197, "backend": "plain", "precision": "bf16", "mode": "inference",
             "median_ms": 2.0, "peak_mem_mb": 10.0, "vs_plain": {"value": 1.0, "low": 1.0, "high": 1.0, "n": 5}},
            {**row, "tokens": 197, "backend": "flash", "precision": "bf16", "mode": "inference",
             "median_ms": 1.0, "peak_mem_mb": 2.0, "vs_plain": {"value": 2.0, "low": 1.8, "high": 2.2, "n": 5}},
        ],
        "models": [
            {**row, "model": "ViT-B/16", "mode": "inference", "precision": p, "compiled": c, "median_ms": ms,
             "peak_mem_mb": 100.0} for p, c, ms in (("fp32", False, 9.0), ("bf16", False, 3.0), ("bf16", True, 1.0))
        ],
    }


def test_recorded_gpu_results_become_tables():
    att = study.recorded_attention(_recorded())
    assert list(att["backend"]) == ["flash", "plain"] and att.loc[0, "vs_plain"] == 2.0
    assert (att.loc[0, "vs_plain_low"], att.loc[0, "vs_plain_high"]) == (1.8, 2.2)
    models = study.recorded_precision(_recorded())
    assert len(models) == 1 and models.loc[0, "speedup"] == pytest.approx(3.0)  # eager only
    assert models.loc[0, "half"] == "bf16"
    t4 = _recorded()
    for r in t4["models"]:
        r["precision"] = r["precision"].replace("bf16", "fp16")  # a T4 measures float16
    assert study.recorded_precision(t4).loc[0, "half"] == "fp16"
    assert study.recorded_attention(None) is None and study.recorded_precision({}) is None


def test_tiling_diagram_and_kernel_chart():
    fig = diagrams.attention_tiling(tokens=6, block=4, tile=1)
    assert len(fig.axes[0].patches) >= 2 * 36
    with pytest.raises(ValueError, match="tile"):
        diagrams.attention_tiling(tokens=6, block=4, tile=2)
    sweep = study.kernel_sweep([16, 64], dim=32, heads=2, dim_head=16, min_run_time=0.01, rounds=1)
    chart = kernel_chart(sweep)
    assert chart.values[None] == [16, 64]
    assert "One attention layer at 16 tokens" in chart.figure.layout.title.text
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    plot_kernel_sweep(axes, sweep)
    assert len(axes[0].lines) >= 2 and len(axes[1].lines) == 3
    plt.close("all")
    with pytest.raises(ValueError, match="at least two"):
        kernel_chart(sweep[sweep["tokens"] == 16])
