"""The ``infer`` suite (vitlib's ViT against vit-pytorch's and timm's) and the ``gpu`` suite
(``make gpu-bench``), each run at its tiny setting on the CPU: the figures' keys, not their values."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitlib import bench

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tiny", "--rounds", "1", "--min-run-time", "0.01", "--threads", "1"]
FIGURE = {"value", "low", "high", "n"}
RATIOS = [f"vitlib_vs_{peer}_{b}" for peer in ("vit_pytorch", "timm") for b in ("b1", "b16")] + [
    "vitlib_vs_vit_pytorch_train_b16", "vitlib_vs_timm_train_b16"]
FIGURES = RATIOS + ["vitlib_roofline_fraction_b1", "vitlib_roofline_fraction_b16"]
PROVENANCE = {"commit", "cuda", "date", "device", "device_name", "python", "threads", "torch", "torchvision",
              "vitlib"}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_infer_suite_writes_every_figure_with_its_spread(tmp_path, capsys, restore_threads):
    pytest.importorskip("timm")
    pytest.importorskip("vit_pytorch")
    out = tmp_path / "infer.json"
    assert bench.main(["infer", "--json", str(out), *TINY]) == 0
    data = json.loads(out.read_text())
    assert data["suite"] == "infer" and data["tiny"] is True and data["skipped"] == {}
    assert set(data["provenance"]) == PROVENANCE
    for name in FIGURES:
        assert set(data[name]) == FIGURE, name
        f = data[name]
        assert 0 < f["low"] <= f["value"] <= f["high"] and f["n"] >= 5, name
    for key in ("b1", "b16"):
        assert {"vitlib", "vit-pytorch", "timm", "gemm (torch.mm)"} <= set(data["inference"][key])
        assert set(data["inference"][key]["vitlib"]) == {"median_ms", "iqr_ms", "runs", "images_per_s"}
        roof = data["roofline"][key]
        assert roof["m"] == data["tokens"] * data["batches"][key] and (roof["k"], roof["n"]) == (32, 64)
        assert roof["gemm"] in roof["gemm_tflop_s"]
    assert set(data["train"]["b16"]) == {"vitlib", "vit-pytorch", "timm"}
    assert set(data["gflops_per_image"]) == {"vitlib", "vit-pytorch", "timm"}
    assert data["peers"]["timm"] and data["peers"]["vit-pytorch"]
    for name in ("vitlib", "vit-pytorch", "timm"):
        split = data["breakdown"][name]
        assert split["total_ms"] > 0 and sum(k["share"] for k in split["kinds"].values()) == pytest.approx(1.0)
        assert split["kinds"]["matrix products"]["share"] > 0 and split["kinds"]["layer norm"]["share"] > 0
    assert data["breakdown"]["timm"]["kinds"]["convolution"]["share"] > 0  # timm embeds patches by convolution
    assert data["breakdown"]["vitlib"]["kinds"]["convolution"]["share"] == 0  # vitlib by a linear layer
    printed = capsys.readouterr().out
    assert "vitlib_vs_timm_b16" in printed and f"wrote {out}" in printed
    assert "where a forward's time goes" in printed


def test_infer_suite_skips_a_peer_that_is_missing(tmp_path, monkeypatch, capsys, restore_threads):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    out = tmp_path / "infer.json"
    assert bench.main(["infer", "--json", str(out), *TINY]) == 0
    data = json.loads(out.read_text())
    assert "timm is not installed" in data["skipped"]["timm"]
    assert "skipping timm: timm is not installed" in capsys.readouterr().out
    for name in FIGURES:
        assert set(data[name]) == FIGURE
        assert (data[name]["value"] is None) == ("timm" in name), name
    assert "timm" not in data["inference"]["b16"]


MODEL_ROW = {"model", "family", "mode", "precision", "compiled", "batch", "median_ms", "iqr_ms", "runs",
             "images_per_s", "peak_mem_mb"}
ATTENTION_ROW = {"tokens", "backend", "precision", "mode", "batch", "vs_plain", "median_ms", "iqr_ms", "runs",
                 "images_per_s", "peak_mem_mb"}


def gpu_bench_command(out: Path) -> list[str]:
    """The command ``make gpu-bench`` runs (read from ``make -n``), on this interpreter, writing ``out``."""
    if shutil.which("make") is None:
        return [sys.executable, "-m", "vitlib.bench", "gpu", "--json", str(out)]
    dry = subprocess.run(["make", "--no-print-directory", "-n", "gpu-bench", f"GPU_BENCH={out}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    line = next(line for line in dry.stdout.splitlines() if "-m vitlib.bench gpu" in line)
    args = shlex.split(line)
    assert re.search(r"python[0-9.]*$", args[0]) and str(out) in args
    return [sys.executable, *args[1:]]


@pytest.mark.slow
def test_make_gpu_bench_runs_its_tiny_setting_on_a_cpu(tmp_path):
    out = tmp_path / "results" / "gpu-bench.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = gpu_bench_command(out) + ["--rounds", "1", "--min-run-time", "0.01", "--threads", "1",
                                    "--batch", "2"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert data["suite"] == "gpu" and data["tiny"] is True and data["device"] == "cpu"
    assert set(data["provenance"]) == PROVENANCE and data["provenance"]["commit"]
    assert {"gpu", "cuda", "cudnn", "compile_backend", "batch", "budget_s", "params", "skipped", "errors",
            "wall_s"} <= set(data)
    assert data["errors"] == [] and data["skipped"] == []
    families = {row["family"] for row in data["models"]}
    assert families == {"vit", "simple_vit", "levit", "cross_vit", "navit", "distillable_vit", "resnet"}
    for row in data["models"]:
        assert MODEL_ROW <= set(row)
    eager = {(r["family"], r["mode"], r["precision"]) for r in data["models"] if not r["compiled"]}
    assert len(eager) == 7 * 2 * 2
    compiled = [r for r in data["models"] if r["compiled"]]
    assert {r["mode"] for r in compiled} == {"inference", "train"}
    assert all(set(r["vs_eager"]) == FIGURE and r["compile_s"] >= 0 for r in compiled)
    backends = {(r["backend"], r["precision"]) for r in data["attention"]}
    assert {("plain", "fp32"), ("plain", "bf16")} <= backends and len(backends) >= 3  # a fused kernel too
    for row in data["attention"]:
        assert set(row) == ATTENTION_ROW and set(row["vs_plain"]) == FIGURE
    assert {r["tokens"] for r in data["attention"]} == {17, 65}
    assert "attention layer" in run.stdout


@pytest.mark.slow
def test_make_gpu_record_runs_its_tiny_setting_on_a_cpu(tmp_path):
    out = tmp_path / "results" / "gpu-record.json"
    dry = subprocess.run(["make", "--no-print-directory", "-n", "gpu-record", f"GPU_RECORD={out}",
                          f"GPU_PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.replace("\\\n", " ").splitlines()  # the recipe's continued lines as one
    line = next(line for line in lines if "-m vitlib.bench gpu-record" in line)
    assert "PYTHONPATH=" in line  # vitlib from the checkout, on the machine's own python
    args = [a for a in shlex.split(line) if "=" not in a or a.startswith("--")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "VITLIB_DATA": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = args + ["--rounds", "1", "--min-run-time", "0.01", "--threads", "1", "--batch", "2"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["suite"] == "gpu-record" and data["tiny"] is True and data["models"] and data["attention"]
    training, accuracy = data["training"], data["accuracy"]
    assert training["images_per_s"] > 0 and training["flops_per_s"] == pytest.approx(
        training["images_per_s"] * training["flops_per_image"])
    assert training["flops_per_image"] > 0 and len(training["epoch_s"]) == 2
    assert "generated in the real format" in training["data"]
    assert accuracy["data"] == "digits" and accuracy["accuracy_low"] <= accuracy["accuracy"] <= accuracy["accuracy_high"]
    assert data["provenance"]["device"] == "cpu" and "TFLOP/s" in run.stdout
