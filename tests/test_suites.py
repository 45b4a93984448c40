"""The bench suites (``python -m vitlib.bench SUITE --json FILE``): each runs at a tiny setting and
writes the same keys as before the measuring code became a package (bench) apart from the
chapters' studies (studies). The expected keys were read from the suites' JSON files as written by
the single-module ``vitlib/bench.py``."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitlib import bench
from vitlib import train as vtrain

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch", "2", "--rounds", "1", "--min-run-time", "0.01", "--threads", "1"]
PROVENANCE = {"provenance." + k for k in ("commit", "cuda", "date", "device", "device_name", "python", "threads",
                                          "torch", "torchvision", "vitlib")} | {"provenance", "suite"}
CONFIG = {"config"} | {"config." + k for k in ("depth", "dim", "dim_head", "heads", "mlp_dim", "num_classes",
                                              "patch_size")}
COMPARE_ROW = ("gflops", "images_per_s", "iqr_ms", "median_ms", "model", "params", "peak_mem_mb", "speedup",
               "time_ratio")
TIMING = ("images_per_s", "iqr_s", "median_s", "runs")
NAVITS = ("navit (token dropout 0)", "navit (token dropout 0.5)")
CANDIDATES = (*NAVITS, "vit padded", "vit-pytorch navit")

KEYS = {
    "anatomy": PROVENANCE | CONFIG | {"config.image_size", "batch", "inference", "train", "params", "params.SimpleViT",
                                      "params.ViT", "simple_vit_inference_speedup", "simple_vit_train_speedup"}
    | {f"{mode}[].{k}" for mode in ("inference", "train") for k in COMPARE_ROW},
    "navit": PROVENANCE | CONFIG | {
        "device", "dropout50_step_speedup", "images", "packed_vs_padded", "packing", "padding_fraction_greedy",
        "padding_fraction_ours", "rounds", "sizes", "threads", "vit_pytorch_packed_vs_padded", "vit_pytorch_skipped",
        "group_max_seq_len", "timings", "tokens"}
    | {f"packing[].{k}" for k in ("max_len", "padding_greedy", "padding_ours", "sequences_greedy", "sequences_ours")}
    | {f"group_max_seq_len.{c}" for c in (*NAVITS, "vit-pytorch navit")}
    | {f"tokens.{c}" for c in CANDIDATES} | {f"timings.{c}" for c in CANDIDATES}
    | {f"timings.{c}.{k}" for c in CANDIDATES for k in TIMING},
    # recipe and model_config echo the training package's data: only their presence is the suite's
    "train": PROVENANCE | {"accuracy", "dataset", "model", "model_config", "recipe", "seed", "test_images",
                           "time_to_0.98_s", "train_images", "train_wall_s", "wall_s"},
}


def key_paths(value, prefix: str = "", depth: int | None = None) -> set[str]:
    """Dotted paths of every key in nested dicts (``[]`` for list items), down to ``depth`` levels."""
    out = set()
    if depth == 0:
        return out
    deeper = None if depth is None else depth - 1
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            out |= {path} | key_paths(item, path, deeper)
    elif isinstance(value, list):
        for item in value:
            out |= key_paths(item, prefix + "[]", depth)
    return out


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_key_paths():
    assert key_paths({"a": [{"b": 1}, {"c": {"d": 2}}], "e": 3}) == {"a", "a[].b", "a[].c", "a[].c.d", "e"}
    assert key_paths({"a": {"b": {"c": 1}}}, depth=2) == {"a", "a.b"}


@pytest.mark.slow
def test_anatomy_suite_from_the_command_line(tmp_path):
    out = tmp_path / "sub" / "anatomy.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "vitlib.bench", "anatomy", "--json", str(out), *TINY], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert key_paths(data) == KEYS["anatomy"]
    assert data["suite"] == "anatomy"
    assert data["params"]["ViT"] > data["params"]["SimpleViT"] > 0
    assert data["simple_vit_inference_speedup"] > 0
    assert data["provenance"]["threads"] == 1
    assert "SimpleViT" in run.stdout and f"wrote {out}" in run.stdout


@pytest.mark.slow
def test_navit_suite(tmp_path, capsys, restore_threads):
    out = tmp_path / "navit.json"
    assert bench.main(["navit", "--json", str(out), *TINY]) == 0
    data = json.loads(out.read_text())
    assert key_paths(data) == KEYS["navit"]
    for key in ("packed_vs_padded", "dropout50_step_speedup", "vit_pytorch_packed_vs_padded",
                "padding_fraction_ours", "padding_fraction_greedy"):
        assert isinstance(data[key], float), key
    assert data["padding_fraction_ours"] <= data["padding_fraction_greedy"]
    assert {"median_s", "iqr_s", "images_per_s"} <= set(data["timings"]["vit padded"])
    assert data["provenance"]["threads"] == 1
    assert "packed_vs_padded" in capsys.readouterr().out


def test_train_suite(tmp_path, monkeypatch, restore_threads):
    monkeypatch.setitem(vtrain.QUICK_RECIPE["fit"], "epochs", 1)
    out = tmp_path / "train.json"
    assert bench.main(["train", "--json", str(out), "--threads", "1"]) == 0
    figures = json.loads(out.read_text())
    assert key_paths(figures, depth=1) | {p for p in key_paths(figures) if p.startswith("provenance")} == KEYS["train"]
    assert figures["model"] == "SimpleViT" and figures["dataset"] == "digits"
    assert 0.0 <= figures["accuracy"] <= 1.0 and figures["wall_s"] > 0
    assert not math.isnan(figures["accuracy"])
    assert figures["recipe"]["fit"]["epochs"] == 1 and figures["model_config"]["dim"] == 64


def test_an_unknown_suite_is_named(capsys):
    with pytest.raises(SystemExit):
        bench.main(["sizes"])
    assert "invalid choice: 'sizes' (choose from" in capsys.readouterr().err
