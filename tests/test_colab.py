"""What a reader in Colab gets: requirements that keep Colab's packages, an installed copy that behaves
like a checkout, a precision a T4 runs, charts that render there, and full mode's smoke scale and
cost estimates (``make colab-check`` and ``make full-rehearsal`` run the chapters themselves)."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
import types
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from vitlib import backends, locations, smoke
from vitlib.train import loop

ROOT = Path(__file__).resolve().parents[1]


def _colab_script():
    spec = importlib.util.spec_from_file_location("colab_check", ROOT / ".ci" / "colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# requirements -------------------------------------------------------------------------------------


def test_every_requirement_admits_the_version_colab_ships():
    colab = _colab_script()
    pins = colab.read_freeze()
    assert pins["ipywidgets"] == "7.7.1" and pins["torch"].startswith("2.")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    checked = []
    for line in project["project"]["dependencies"]:
        req = Requirement(line)
        shipped = pins.get(colab.canonical(req.name))
        if shipped is None:
            continue  # Colab lacks it (onnx, onnxruntime): installed beside, changing nothing
        version = Version(shipped.split("+")[0])
        assert req.specifier.contains(version, prereleases=True), f"{line} refuses Colab's {req.name} {shipped}"
        checked.append(req.name)
    assert {"torch", "ipywidgets", "plotly", "numpy"} <= set(checked)


def test_constraints_keep_this_machines_torch_and_colabs_everything_else():
    colab = _colab_script()
    pins = {"torch": "2.11.0+cu128", "nvidia-cublas-cu12": "12.8", "triton": "3.5", "ipywidgets": "7.7.1",
            "numpy": "2.1.3"}
    assert colab.constraints(pins) == ["ipywidgets==7.7.1", "numpy==2.1.3"]
    assert "# Colab's GPU runtime as it ships" in colab.FREEZE.read_text().splitlines()[0]
    assert re.search(r"\(\d{4}-\d{2}-\d{2}", colab.FREEZE.read_text().splitlines()[1]), "the freeze is dated"


def test_the_package_list_names_every_subpackage_and_ships_the_record():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vitlib").rglob("__init__.py")}
    assert found <= listed, f"not packaged: {sorted(found - listed)}"
    assert project["tool"]["setuptools"]["package-dir"]["vitlib.recorded"] == "book/results"


# an installed copy ----------------------------------------------------------------------------


def test_data_go_to_vitlib_data_the_checkout_or_the_users_cache(monkeypatch, tmp_path):
    assert locations.data_root({"VITLIB_DATA": str(tmp_path)}) == tmp_path
    assert locations.data_root({}) == ROOT / "data"  # this checkout
    monkeypatch.setattr(locations, "checkout", lambda: None)  # an installed copy
    assert locations.data_root({"HOME": "/home/r"}) == Path("/home/r/.cache/vitlib")
    assert locations.data_root({"XDG_CACHE_HOME": "/c", "HOME": "/home/r"}) == Path("/c/vitlib")
    assert "site-packages" not in str(locations.data_root({"HOME": "/home/r"}))
    assert locations.recorded_dir() == Path(locations.__file__).parent / "recorded"


def test_an_installed_copy_reports_the_commit_pip_installed(monkeypatch):
    from importlib import metadata

    import vitlib.bench.provenance  # noqa: F401  (the module, not the function bench exports)

    prov = sys.modules["vitlib.bench.provenance"]

    class Dist:
        def read_text(self, name):
            assert name == "direct_url.json"
            return json.dumps({"url": "https://github.com/x/y", "vcs_info": {"vcs": "git", "commit_id": "abc123"}})

    monkeypatch.setattr(locations, "checkout", lambda: None)
    monkeypatch.setattr(metadata, "distribution", lambda name: Dist())
    assert prov._git_commit() == "abc123"


def test_recorded_results_are_read_from_the_shipped_record(monkeypatch, tmp_path):
    from vitlib.book import results

    (tmp_path / "chapters").mkdir()
    results.record("03_levit", mode="quick", device="cpu", claims=[{"id": "C4", "measured": "m", "verdict": "holds"}],
                   directory=tmp_path / "chapters")
    (tmp_path / "gpu-record.json").write_text('{"provenance": {"device": "cuda"}}')
    monkeypatch.setattr(locations, "recorded_dir", lambda: tmp_path)
    assert list(results.load_recorded()) == ["03_levit"]
    assert results.recorded_gpu_results("gpu-record")["provenance"]["device"] == "cuda"
    assert results.recorded_gpu_results("gpu-bench") is None


# precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("capability,dtype,scaler", [((7, 5), torch.float16, True), ((7, 0), torch.float16, True),
                                                     ((8, 0), torch.bfloat16, False),
                                                     ((9, 0), torch.bfloat16, False)])
def test_automatic_precision_is_bfloat16_only_where_the_gpu_runs_it(monkeypatch, capability, dtype, scaler):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # a T4 says True, emulated
    cuda = torch.device("cuda")
    assert backends.half_precision(cuda) is dtype
    assert loop._amp(cuda, "auto") == (dtype, scaler)
    assert loop._amp(torch.device("cpu"), "auto") == (None, False)
    with pytest.warns(UserWarning, match="CUDA is not available") if not torch.cuda.is_available() else nullcontext():
        ctx = backends.autocast(cuda, backends.half_precision(cuda))  # the one autocast, timing's and training's
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype is dtype and ctx.device == "cuda"


def test_one_autocast_and_one_synchronise_for_timing_and_training(monkeypatch):
    from vitlib.bench import timing

    assert timing.amp is backends.autocast  # the name chapter 7 imports
    assert isinstance(backends.autocast("cpu", None), nullcontext)
    with backends.autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    for device in (None, "cpu", torch.device("cpu"), "cuda:0"):
        backends.synchronise(device)
    assert waited == ["cuda:0"]
    timing._synchronised(lambda: None, "cuda")()  # a timed call waits for its GPU work
    assert waited == ["cuda:0", "cuda"]


def test_the_gpu_suite_measures_the_gpus_own_half_precision(monkeypatch):
    from vitlib.book.studies import gpu

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert gpu.half_name(torch.device("cuda")) == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert gpu.half_name(torch.device("cuda")) == "bf16"


# charts in Colab ----------------------------------------------------------------------------


def test_static_charts_use_plotlys_own_html_in_colab(monkeypatch):
    import plotly.graph_objects as go

    from vitlib.book.viz import static_chart

    chart = static_chart({1: [go.Bar(x=[1], y=[2])], 2: [go.Bar(x=[1], y=[3])]}, slider="s")
    monkeypatch.delenv("VITLIB_BOOK_BUILD", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    html = chart._repr_html_()
    assert "https://cdn.plot.ly/" in html and "_static/" not in html and "data-content_root" not in html
    assert '"sliders"' in html  # the controls travel with the figure
    monkeypatch.setenv("VITLIB_BOOK_BUILD", "1")
    assert "_static/" in chart._repr_html_()  # the built book serves its own plotly.js


# the smoke scale and the ledger ---------------------------------------------------------------


@pytest.fixture
def ledger(monkeypatch, tmp_path):
    monkeypatch.setenv("VITLIB_SMOKE", "1")
    monkeypatch.setenv("VITLIB_LEDGER", str(tmp_path))
    monkeypatch.setenv("VITLIB_CHAPTER", "99_test")
    yield tmp_path


def test_fit_at_the_smoke_scale_runs_a_few_steps_and_notes_the_planned_run(ledger, one_thread):
    from vitlib import SimpleViT
    from vitlib.data import TensorImageDataset

    torch.manual_seed(0)
    train = TensorImageDataset(torch.randn(200, 1, 8, 8), torch.randint(0, 3, (200,)))
    test = TensorImageDataset(torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,)))
    model = SimpleViT(image_size=8, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=32, channels=1)
    history = loop.fit(model, train, test, epochs=30, batch_size=64, progress=False)
    assert len(history) == smoke.EPOCHS and "test_acc" in history[-1]
    assert history[0]["train_acc"] is not None
    notes = [json.loads(line) for line in (ledger / "99_test.jsonl").read_text().splitlines()]
    train_notes = [n for n in notes if n["kind"] == "train"]
    assert len(train_notes) == 1
    n = train_notes[0]
    assert n["images"] == 200 * 30 and n["steps"] == 30 * 4 and n["batch"] == 64
    assert n["flops"] > 200 * 30 * 3 * 2 * sum(p.numel() for p in model.parameters()) * 0.2
    assert n["peak_bytes"] >= 4 * n["param_bytes"]


def test_a_timing_at_the_smoke_scale_is_one_call_and_notes_its_planned_calls(ledger):
    from vitlib.bench import time_function, time_interleaved
    from vitlib.smoke import serving_on_cpu

    calls = []
    x = torch.randn(64, 64)
    timing = time_function(lambda: calls.append(x @ x), min_run_time=2.0, warmup=3)
    assert len(timing.times) == 1 and len(calls) == 1  # one call, counted, profiled and timed
    with serving_on_cpu():
        times = time_interleaved({"a": lambda: x @ x, "b": lambda: x + x}, rounds=3, min_run_time=0.5)
    assert {k: len(v) for k, v in times.items()} == {"a": 1, "b": 1}
    notes = [json.loads(line) for line in (ledger / "99_test.jsonl").read_text().splitlines()]
    first, a, b = notes
    assert first["min_run_time"] == 2.0 and first["warmup"] == 3 and not first["on_cpu"]
    assert first["flops"] == 2 * 64 ** 3 and first["call_s"] > 0
    assert a["rounds"] == 3 and a["on_cpu"] and a["min_calls"] == 2 and b["flops"] == 0


def test_estimates_add_training_timings_and_cpu_work_and_flag_what_does_not_fit(tmp_path):
    from vitlib.book import fullmode

    t4 = fullmode.GPUS["T4"]
    rate = t4["peak"] * t4["share"]
    notes = [{"kind": "train", "flops": rate * 100, "images": 1000, "steps": 10, "peak_bytes": 2**30},
             {"kind": "timing", "rounds": 2, "warmup": 3, "min_calls": 3, "min_run_time": 0.5, "on_cpu": False,
              "flops": 0, "call_s": 9.0, "peak_bytes": 2 * 2**30},
             {"kind": "timing", "rounds": 1, "warmup": 1, "min_calls": 5, "min_run_time": 0.1, "on_cpu": True,
              "flops": 1e9, "call_s": 2.0, "peak_bytes": 99 * 2**30},
             {"kind": "skipped", "what": "NCCL", "why": "needs GPUs"}]
    e = fullmode.estimate(notes, "T4")
    assert e["train_s"] == pytest.approx(100 + 10 * t4["step_s"] + 1000 * fullmode.DATA_S_PER_IMAGE)
    call = t4["call_s"]
    assert e["timing_s"] == pytest.approx(3 * call + 0.5 + call + 0.5)
    assert e["cpu_s"] == pytest.approx(2.0 + 5 * 2.0)  # at this CPU's speed: 1 warm-up, 5 calls
    assert e["peak_bytes"] == 2 * 2**30  # CPU work takes no GPU memory
    assert e["total_s"] == pytest.approx(fullmode.FIXED_S + e["train_s"] + e["timing_s"] + e["cpu_s"])
    (tmp_path / "01_a.jsonl").write_text("\n".join(json.dumps(n) for n in notes))
    (tmp_path / "02_b.jsonl").write_text(json.dumps({**notes[0], "flops": rate * 2 * fullmode.BUDGET_S}))
    summary = fullmode.summarise(tmp_path, measured={})
    assert summary["chapters"]["01_a"]["fits"] and not summary["chapters"]["02_b"]["fits"]
    assert summary["chapters"]["01_a"]["not_rehearsed"] == ["NCCL: needs GPUs"]
    faster = fullmode.estimate(notes, "T4", {"flops_per_s": rate * 10})
    assert faster["train_s"] < e["train_s"] and not faster["assumed"]


@pytest.mark.slow
def test_the_generated_cifar10_archive_is_read_by_the_real_reader(tmp_path, monkeypatch):
    from vitlib.book import fullmode
    from vitlib.data import cifar10

    md5 = fullmode.cifar10_archive(tmp_path)
    assert fullmode.cifar10_archive(tmp_path) == md5  # kept
    with pytest.raises(RuntimeError, match="MD5 mismatch"):
        cifar10(tmp_path)  # CIFAR-10's own checksum refuses it
    monkeypatch.setenv("VITLIB_TEST_CIFAR10_MD5", md5)
    monkeypatch.setenv("VITLIB_SMOKE", "1")
    data = cifar10(tmp_path)
    assert (len(data.train), len(data.test)) == (smoke.TRAIN_IMAGES, smoke.TEST_IMAGES)
    assert (data.train.planned_len, data.test.planned_len) == (50_000, 10_000)
    assert data.classes[0] == "airplane" and data.train[0][0].shape == (3, 32, 32)


def test_timed_calls_at_the_smoke_scale_run_two_images_and_extrapolate_memory(ledger):
    from vitlib import ViT
    from vitlib.bench import inference_fn, time_function, train_step_fn

    model = ViT(image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=64).eval()
    x = torch.randn(32, 3, 16, 16)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    infer = inference_fn(model, x)
    assert infer.smoke_scale == 16 and len(infer()) == 2 and len(infer.smoke_one()) == 1
    time_function(infer, min_run_time=0.5)
    time_function(train_step_fn(model, x), min_run_time=0.5)
    assert set(seen) <= {1, 2}  # nothing ran the planned batch of 32
    a, b = [json.loads(line) for line in (ledger / "99_test.jsonl").read_text().splitlines()]
    assert a["scale"] == b["scale"] == 16
    params = sum(p.numel() * 4 for p in model.parameters())
    assert b["peak_bytes"] > params  # a training step holds gradients at least


def test_memory_at_the_planned_batch_is_extrapolated_from_one_and_two_images(ledger, monkeypatch):

    calls = []

    def fake_peak(fn, device, cpu=False):
        calls.append(fn)
        fn()
        return 200 if fn is one else 300  # bytes: one image, two images

    def run():
        pass

    def one():
        pass

    import vitlib.bench.timing as timing

    monkeypatch.setattr(timing, "peak_memory", fake_peak)
    smoke.note_timing(run, warmup=1, min_calls=5, min_run_time=0.1, scale=4.0, one=one)
    smoke.note_timing(run, warmup=1, min_calls=5, min_run_time=0.1, scale=1.0, one=None)
    a, b = [json.loads(line) for line in (ledger / "99_test.jsonl").read_text().splitlines()]
    assert a["peak_bytes"] == 200 + 100 * 7  # 8 images: the fixed 100 once, 100 per image
    assert b["peak_bytes"] == 300 and calls[1] is one and len(calls) == 3


# live controls --------------------------------------------------------------------------------


def test_live_explorers_draw_with_matplotlib_and_core_widgets_only():
    """Inside a live Output widget plotly fails in Colab ("Plotly is not defined"); the explorers
    draw with matplotlib and build only widgets that ipywidgets 7 and 8 both have."""
    import ast

    import ipywidgets

    import vitlib.book.widgets as widgets

    both = {"IntSlider", "FloatSlider", "Dropdown", "SelectMultiple", "SelectionSlider", "Checkbox",
            "ToggleButtons", "HTML", "Label", "Output", "HBox", "VBox", "Layout", "interactive_output"}
    explorers = 0
    for path in Path(widgets.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            source = ast.get_source_segment(path.read_text(), fn)
            if "interactive_output" not in source and "Output(" not in source:
                continue
            explorers += 1
            assert "plotly" not in source and "go." not in source, f"{path.name}:{fn.name} draws plotly live"
            used = {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name) and n.value.id in ("w", "widgets")}
            assert used <= both, f"{path.name}:{fn.name} uses {sorted(used - both)}"
    assert explorers >= 9
    assert all(hasattr(ipywidgets, name) for name in both)
